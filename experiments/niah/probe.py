"""Why the published Doc-to-LoRA design sat at chance on the NIAH run, in four minutes.

Nine one-sentence documents, "The special magic number is D." for D = 1..9, so that documents differ
in a single token; the student is asked the NIAH question and trained with cross-entropy on " D<eos>".
Every method sees the same batches (8 random documents a step) and optimiser (Adam, lr 1e-4, no
clipping); the loss is the mean over the 3 answer tokens, chance (uniform digit) is ln 9 / 3 = 0.73:
  free_adapters: one free rank-8 down-projection adapter per document (no hypernetwork): how easy
    the output side is;
  published: the hypernetwork as published (raw activations, no centring);
  feature_norm: + activations read through the layer's pre-attention RMSNorm;
  feature_norm_centred: + chunk codes centred on the batch mean (with feature_norm, the experimental
    options the NIAH recipes switch on).
A cosine column measures what the heads see at initialisation: the mean pairwise cosine similarity
between documents' pre-head codes (centred ones for the last method).

Run: .venv/bin/python -m experiments.niah.probe   (writes results/niah_probe.{json,md,png})
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from lora_hyper.adapters import lora
from lora_hyper.data import niah, pipeline
from lora_hyper.hypernetworks import doc_to_lora
from lora_hyper.model import base_model, transformer
from lora_hyper.training import losses, objectives

RANK = 8
SHAPES = pipeline.DocExampleShapes(num_chunks=1, student_len=32, teacher_len=None, answer_len=4)
HYPERNETWORKS = {  # DocToLoraConfig.experimental options; all off is the published design
    "published": {},
    "feature_norm": {"normalize_features": True},
    "feature_norm_centred": {"normalize_features": True, "center_momentum": 0.9},
}


def batches(base, config, steps: int, batch: int, seed: int):
  """The same `steps` batches for every method: (digit index per row, stacked examples)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(steps):
    digits = rng.integers(1, 10, batch)
    rows = [pipeline.doc_example({"document": niah.needle(str(d)), "query": niah.QUERY, "answer": str(d)},
                                 base.tokenizer, config, SHAPES) for d in digits]
    out.append((jnp.asarray(digits - 1), {k: jnp.stack([r[k] for r in rows]) for k in rows[0]}))
  return out


def train(loss_fn, params, data, lr: float) -> list[float]:
  """Adam on `loss_fn(params, digits, batch)`; the loss of every step."""
  tx = optax.adam(lr)

  @jax.jit
  def step(params, opt, digits, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, digits, batch)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  opt, curve = tx.init(params), []
  for digits, batch in data:
    params, opt, loss = step(params, opt, digits, batch)
    curve.append(float(loss))
  return curve


def free_adapters_loss(base):
  def loss_fn(table, digits, batch):
    adapter = lora.LoraAdapter({"down": {"a": table["a"][digits], "b": table["b"][digits]}}, 2 * RANK ** 1.5)
    logits = transformer.forward(base.params, batch["student_tokens"], config=base.config, mask=batch["student_mask"],
                                 adapter=adapter, logits_at=batch["student_logits_at"]).logits
    return losses.cross_entropy(logits, batch["targets"], batch["loss_mask"])
  return loss_fn


def code_similarity(variables, base, config) -> float:
  """Mean pairwise cosine between the nine documents' (centred, if so configured) pre-head codes."""
  chunks = doc_to_lora.chunk_documents([base.tokenizer.encode(niah.needle(str(d)), add_bos=False)
                                        for d in range(1, 10)], config=config)
  tokens, mask = jnp.asarray(chunks.tokens[:, 0]), jnp.asarray(chunks.mask[:, 0])
  features = doc_to_lora.encode_context(base.params, tokens, mask, config=config)
  codes = doc_to_lora.chunk_codes(variables, features, mask, config=config)
  if config.experimental.center_momentum is not None:
    codes = codes - codes.mean(axis=0)
  flat = np.asarray(codes, np.float64).reshape(9, -1, codes.shape[-1])
  flat /= np.linalg.norm(flat, axis=-1, keepdims=True)
  cos = np.einsum("ard,brd->abr", flat, flat).mean(-1)
  return float((cos.sum() - 9) / 72)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--lr", type=float, default=1e-4)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  base = base_model.load_base_model()
  rows, curves = [], {}
  for name in ("free_adapters", *HYPERNETWORKS):
    config = doc_to_lora.d2l_compact(base.config, context_encoder="early_exit", chunk_len=16,
                                     experimental=HYPERNETWORKS.get(name, {}))
    data = batches(base, config, args.steps, batch=8, seed=args.seed)
    start = time.perf_counter()
    if name == "free_adapters":
      d_in, d_out = base.config.module_shape("down")
      layers = base.config.num_layers
      a = jax.random.normal(jax.random.key(args.seed), (9, layers, RANK, d_in)) * (2.0 / np.sqrt(d_in * RANK))
      curve = train(free_adapters_loss(base), {"a": a, "b": jnp.zeros((9, layers, RANK, d_out))}, data, args.lr)
      similarity = None
    else:
      objective = objectives.DocDistillation(config, loss="ce", l1_penalty=0.0)
      variables = doc_to_lora.init(config, jax.random.key(args.seed))
      similarity = code_similarity(variables, base, config)
      # Codes are centred on each batch's mean; the running mean is never read here, so not kept.
      loss_fn = lambda p, _, batch: objective({**variables, "params": p}, base.params, batch, jax.random.key(0))[0]
      curve = train(loss_fn, variables["params"], data, args.lr)
    curves[name] = curve
    at = lambda s: float(np.mean(curve[max(0, s - 5):s]))  # mean of the 5 steps up to s
    rows.append({"method": name, "code_cosine_at_init": similarity, "loss_at_10": at(10),
                 "loss_at_25": at(25), f"loss_at_{args.steps}": at(args.steps),
                 "seconds": time.perf_counter() - start})
    print(f"[probe] {name}: " + ", ".join(f"{k}={v:.3f}" for k, v in rows[-1].items()
                                          if isinstance(v, float)), flush=True)

  common.write_json("niah_probe", {"steps": args.steps, "lr": args.lr, "seed": args.seed, "chance": np.log(9) / 3,
                                   "rows": rows, "curves": curves})
  keys = ["code_cosine_at_init", "loss_at_10", "loss_at_25", f"loss_at_{args.steps}"]
  table = common.markdown_table(["method", *keys], [[r["method"], *("-" if r[k] is None else r[k] for k in keys)]
                                                    for r in rows])
  common.write_markdown("niah_probe", "Nine one-token-apart documents: who learns them",
                        f"Adam lr {args.lr}, batch 8, seed {args.seed}; loss = mean over ' D<eos>' "
                        f"(chance {np.log(9) / 3:.2f}), each column the mean of the 5 steps up to it.\n\n{table}")
  plot(curves, np.log(9) / 3)


def plot(curves: dict[str, list[float]], chance: float) -> None:
  plt = common.pyplot()

  fig, ax = plt.subplots(figsize=(7, 3.5))
  for name, curve in curves.items():
    ax.plot(range(1, len(curve) + 1), curve, label=name)
  ax.axhline(chance, color="grey", linestyle=":", label="chance")
  ax.set_xlabel("step")
  ax.set_ylabel("answer loss")
  ax.set_ylim(0, 2.5)
  ax.legend()
  common.save_figure(fig, "niah_probe")


if __name__ == "__main__":
  main()
