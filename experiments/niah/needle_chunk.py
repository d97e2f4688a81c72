"""Why many chunks fail: the same held-out haystacks answered with every chunk's block of the adapter,
and with only the block of the chunk that holds the needle (the others' B zeroed; the bias block
kept). If the second is right where the first is not, the hypernetwork reads the needle fine and
the filler chunks' blocks, summed with it along the rank axis, are what breaks the answer.

Run (a few minutes on 2 CPU cores):
  .venv/bin/python -m experiments.niah.needle_chunk --hypernetwork lora_hyper/pretrained/d2l_gemma3_270m
Writes experiments/results/NAME.{json,md,png} (default niah_needle_chunk).
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.niah import run
from lora_hyper import qa
from lora_hyper.adapters import lora
from lora_hyper.data import niah
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model


def evaluate(base, hyper, records, chunk_len: int) -> dict:
  """Exact match and digits with all chunks and with the needle's chunk only, and B norms per chunk."""
  config = run.chunked_config(base, hyper, records, chunk_len)
  chunks = doc_to_lora.chunk_documents([base.tokenizer.encode(r["document"], add_bos=False) for r in records],
                                       config=config)
  adapter = doc_to_lora.adapter_from_chunks(hyper.variables, base.params, jnp.asarray(chunks.tokens),
                                            jnp.asarray(chunks.mask), config=config)
  holds = run.needle_chunks(base, chunks)
  r, k = config.rank, chunks.tokens.shape[1]
  keep = np.concatenate([np.repeat(holds, r, axis=1), np.ones((len(records), r), bool)], axis=1)  # [N, K*r + r]
  weights = {m: {"a": w["a"], "b": w["b"] * jnp.asarray(keep)[:, None, :, None]} for m, w in adapter.weights.items()}
  only_needle = lora.LoraAdapter(weights, adapter.scaling)
  b = np.asarray(adapter.weights[config.modules[-1]]["b"])  # [N, L, K*r + r, d]
  norms = np.sqrt((b[:, :, :k * r].reshape(len(records), b.shape[1], k, -1) ** 2).sum(axis=(1, 3)))  # [N, K]
  real = chunks.mask.any(axis=-1)
  out = {"chunks_per_haystack": float(real.sum(axis=1).mean()),
         "b_norm_needle_chunk": float(norms[holds].mean()),
         "b_norm_other_chunks": float(norms[real & ~holds].mean()) if (real & ~holds).any() else float("nan")}
  queries = [rec["query"] for rec in records]
  for name, a in (("all_chunks", adapter), ("needle_chunk_only", only_needle)):
    answers = qa.answer(base, queries, adapter=a, sampling=run.SAMPLING)
    out[name] = {"exact_match": run.exact_match(answers, records),
                 "digit_accuracy": run.digit_accuracy(answers, records), "examples": answers[:3]}
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hypernetwork", default=None, help="saved Doc-to-LoRA folder (default: the shipped one)")
  parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
  parser.add_argument("--per-length", type=int, default=20)
  parser.add_argument("--chunk-len", type=int, default=128)
  parser.add_argument("--seed", type=int, default=1, help="haystack seed (the held-out one of experiments.niah.run)")
  parser.add_argument("--name", default="niah_needle_chunk")
  args = parser.parse_args()

  base = base_model.load_base_model()
  hyper = saved.load_hypernetwork(args.hypernetwork or saved.shipped("doc_to_lora", "needle"), base)
  count_tokens = lambda text: len(base.tokenizer.encode(text, add_bos=False))
  rows = []
  for length in args.lengths:
    source = niah.NiahSource(args.per_length, length=length, seed=args.seed, count_tokens=count_tokens, digits=(4, 4))
    row = {"length": length, **evaluate(base, hyper, [source[i] for i in range(args.per_length)], args.chunk_len)}
    rows.append(row)
    print(f"[needle_chunk] {length:5d} tokens: all chunks {row['all_chunks']['exact_match']:.2f}, needle's chunk "
          f"only {row['needle_chunk_only']['exact_match']:.2f}", flush=True)

  common.write_json(args.name, {"hypernetwork": hyper.describe(), "per_length": args.per_length, "seed": args.seed,
                                "chunk_len": args.chunk_len, "rows": rows})
  table = common.markdown_table(
      ["haystack tokens", "chunks", "exact: all chunks", "exact: needle's chunk only", "digits: all chunks",
       "digits: needle's chunk only", "B norm: needle's chunk", "B norm: other chunks"],
      [[r["length"], r["chunks_per_haystack"], r["all_chunks"]["exact_match"], r["needle_chunk_only"]["exact_match"],
        r["all_chunks"]["digit_accuracy"], r["needle_chunk_only"]["digit_accuracy"], r["b_norm_needle_chunk"],
        r["b_norm_other_chunks"]] for r in rows])
  common.write_markdown(args.name, "Needle in a haystack: all chunks against the needle's chunk alone",
                        f"{args.per_length} held-out haystacks per length (seed {args.seed}), {args.chunk_len}-token "
                        f"chunks. B norm: Frobenius norm of a chunk's B block over all layers.\n\n{table}")
  plot(rows, args.name)


def plot(rows: list[dict], name: str) -> None:
  plt = common.pyplot()

  fig, ax = plt.subplots(figsize=(6, 3.5))
  x = np.arange(len(rows))
  for offset, key, label in ((-0.2, "all_chunks", "all chunks"), (0.2, "needle_chunk_only", "needle's chunk only")):
    ax.bar(x + offset, [r[key]["exact_match"] for r in rows], width=0.4, label=label)
  ax.set_xticks(x, [f"{r['length']}\n({r['chunks_per_haystack']:.0f} chunks)" for r in rows])
  ax.set_xlabel("haystack tokens")
  ax.set_ylabel("exact match")
  ax.set_ylim(0, 1.05)
  ax.set_title("Doc-to-LoRA adapters with and without the filler chunks")
  ax.legend(fontsize=8)
  common.save_figure(fig, name)


if __name__ == "__main__":
  main()
