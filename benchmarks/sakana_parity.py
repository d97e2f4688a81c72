"""Parity of the imported Doc-to-LoRA with Sakana AI's official code, on a checkpoint their code wrote.

  # 1. the official reference (their code, in its own virtualenv; see that script's docstring):
  SAKANA_VENV/bin/python benchmarks/sakana_official_reference.py --src SAKANA_SRC/src --out SAKANA_REF
  # 2. this comparison (lora-hyper's environment; the reference stays outside the repository):
  python -m benchmarks.sakana_parity --reference SAKANA_REF

Converts REFERENCE/pytorch_model.bin for REFERENCE/base (a tiny random Gemma 2 without a tokenizer)
with `published.import_sakana_d2l`, loads the saved folder as `internalize` does, and compares with
what their code produced: the per-layer context features, every layer's A and B (bias block
included) for a one-chunk and a three-chunk document (chunks split by our `split_document`, which
must equal their `split_too_long_ctx`), and the adapted base model's logits. Writes
benchmarks/results/sakana_parity.json; exits 1 when a tolerance is missed (adapters 1e-4 relative
to their largest entry, logits 1e-3).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from benchmarks import common
from lora_hyper.hypernetworks import doc_to_lora, published, saved
from lora_hyper.model import base_model, transformer

ADAPTER_RTOL, LOGITS_ATOL = 1e-4, 1e-3
REFERENCE_CHUNK_LEN = 32  # the chunk length the reference split document (b) with


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
  return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def compare(reference: Path) -> dict:
  ref = np.load(reference / "reference.npz")
  described = json.loads((reference / "reference.json").read_text())
  base = base_model.load_base_model(reference / "base")
  with tempfile.TemporaryDirectory() as scratch:
    # Their file names a local base folder: the chunk template is named, as a user of a local copy would.
    folder = published.import_sakana_d2l(reference / "pytorch_model.bin", base, Path(scratch) / "d2l",
                                         chat_template="google/gemma-2-2b-it")
    hyper = saved.load_hypernetwork(folder, base)
  config = hyper.config
  ids_a = ref["ctx_ids_a"].tolist()
  features = doc_to_lora.encode_context(base.params, jnp.asarray([ids_a]), jnp.ones((1, len(ids_a)), bool),
                                        config=config)[:, 0]
  mask = ref["ctx_mask_b"].astype(bool)
  their_chunks = [ref["ctx_ids_b_padded"][i][mask[i]].tolist() for i in range(mask.shape[0])]
  our_chunks = doc_to_lora.split_document(ref["ctx_body_b"].tolist(), config.replace(chunk_len=REFERENCE_CHUNK_LEN))
  query = jnp.asarray([ref["query_ids"].tolist()])
  rows = {"features (a)": {"max_abs_error": float(np.abs(np.asarray(features) - ref["features_a"]).max()),
                           "their_max_abs": float(np.abs(ref["features_a"]).max())}}
  for doc, chunks in (("a", [ids_a]), ("b", their_chunks)):
    adapter = doc_to_lora.internalize_chunk_ids(hyper.variables, base.params, [chunks], config=config)
    for factor in ("A", "B"):
      ours = np.asarray(adapter.weights["down"][factor.lower()][0])
      rows[f"{factor} ({doc}, {len(chunks)} chunk(s) + bias block)"] = {
          "relative_error": _relative(ours, ref[f"{factor}_{doc}"]), "shape": list(ours.shape),
          "pass": _relative(ours, ref[f"{factor}_{doc}"]) <= ADAPTER_RTOL}
    logits = np.asarray(transformer.forward(base.params, query, config=base.config, adapter=adapter).logits[0])
    error = float(np.abs(logits - ref[f"logits_{doc}"]).max())
    rows[f"logits with the adapter ({doc})"] = {"max_abs_error": error, "pass": error <= LOGITS_ATOL,
                                               "change_from_base": float(np.abs(ref[f"logits_{doc}"]
                                                                               - ref["logits_base"]).max())}
  base_logits = np.asarray(transformer.forward(base.params, query, config=base.config).logits[0])
  rows["logits of the base model"] = {"max_abs_error": float(np.abs(base_logits - ref["logits_base"]).max())}
  return {"reference": {k: described[k] for k in ("produced_by", "official_code", "versions", "precision")},
          "split_equals_theirs": our_chunks == their_chunks, "chunk_lengths": [len(c) for c in their_chunks],
          "tolerances": {"adapters_relative": ADAPTER_RTOL, "logits_abs": LOGITS_ATOL}, "rows": rows,
          "pass": our_chunks == their_chunks and all(r.get("pass", True) for r in rows.values())}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reference", type=Path, required=True,
                      help="the folder benchmarks/sakana_official_reference.py wrote")
  args = parser.parse_args()
  result = compare(args.reference)
  for name, row in result["rows"].items():
    error = row.get("relative_error", row.get("max_abs_error"))
    print(f"{name:45s} {error:.2e}  {'ok' if row.get('pass', True) else 'FAIL'}")
  print(f"split equals theirs: {result['split_equals_theirs']} {result['chunk_lengths']}")
  common.write_result("sakana_parity", result)
  return 0 if result["pass"] else 1


if __name__ == "__main__":
  sys.exit(main())
