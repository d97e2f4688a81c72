"""Experiment 1, needle in a haystack: does a Doc-to-LoRA trained on 32-256-token haystacks find
the needle in haystacks up to 8,192 tokens, with chunking?

Held-out haystacks (another seed than training) at each length, 10 depth bins covered evenly.
Methods: Doc-to-LoRA at the training chunk length (many chunks) and at 1,024-token chunks (the
paper's evaluation setting); the base model with the haystack in its prompt; the base model
without it. Score: exact match of the answer's first line (spaces, commas and a final period
dropped) with the magic number.

Run (about 25 minutes on 2 CPU cores):
  .venv/bin/python -m experiments.niah.run --hypernetwork lora_hyper/pretrained/d2l_gemma3_270m --name niah_stage3
Writes experiments/results/NAME.{json,md,png} (default niah); with chunk gates, also their values.
Its scores are the library evaluator's metrics; a chunk-length sweep of the same scores from one gin
file: `lora-hyper eval --gin_file gin_configs/niah_chunk_sweep.gin`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from lora_hyper import qa
from lora_hyper.data import niah
from lora_hyper.evaluation import metrics
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model, decoding

SAMPLING = decoding.SamplingConfig(max_new_tokens=12)
TRAIN_MAX_TOKENS = 256  # experiments/niah/train.gin: haystacks of 32-256 tokens


# The scores are the library's (`lora_hyper.evaluation.metrics`, what `lora-hyper eval` reports):
# the answer's first line, spaces and commas dropped and a final period removed, against the number.
normalise = metrics.normalise
digit_hits = metrics.digit_hits


def exact_match(answers: list[str], records: list[dict]) -> float:
  return sum(metrics.exact_match(a, r["answer"]) for a, r in zip(answers, records)) / len(records)


def digit_accuracy(answers: list[str], records: list[dict]) -> float:
  """Share of the magic numbers' digits given at their position: partial credit exact match lacks."""
  return sum(metrics.digit_accuracy(a, r["answer"]) for a, r in zip(answers, records)) / len(records)


def digit_accuracy_by_position(answers: list[str], records: list[dict]) -> list[float]:
  """Per position in the number (first digit first): the share of needles whose digit there is given."""
  width = max(len(r["answer"]) for r in records)
  hits, counts = [0] * width, [0] * width
  for answer, record in zip(answers, records):
    for i, hit in enumerate(digit_hits(answer, record["answer"])):
      hits[i] += hit
      counts[i] += 1
  return [h / c for h, c in zip(hits, counts)]


def score(row: dict, method: str, answers: list[str], records: list[dict]) -> None:
  """The metrics of one method's answers into the row."""
  row["exact_match"][method] = exact_match(answers, records)
  row["digit_accuracy"][method] = digit_accuracy(answers, records)
  row["digit_by_position"][method] = digit_accuracy_by_position(answers, records)


def chunked_config(base, hyper, records, chunk_len: int):
  """The hypernetwork's config with this chunk length and room for the longest haystack."""
  longest = max(len(base.tokenizer.encode(r["document"], add_bos=False)) for r in records)
  return hyper.config.replace(chunk_len=chunk_len, max_chunks=max(1, math.ceil(longest / (chunk_len - 1))))


def doc_to_lora_answers(base, hyper, records, chunk_len: int, batch: int) -> tuple[list[str], float]:
  """Answers with each haystack's adapter, and the median seconds of one `internalize`."""
  config = chunked_config(base, hyper, records, chunk_len)
  answers = []
  for start in range(0, len(records), batch):
    group = records[start:start + batch]
    adapters = doc_to_lora.internalize(hyper.variables, base.params, [r["document"] for r in group],
                                       config=config, tokenizer=base.tokenizer)
    answers += qa.answer(base, [r["query"] for r in group], adapter=adapters, sampling=SAMPLING)
  one = lambda record: jax.block_until_ready(doc_to_lora.internalize(
      hyper.variables, base.params, record["document"], config=config, tokenizer=base.tokenizer))
  one(records[0])  # compiles for a single document
  times = []
  for record in records[:3]:  # time single documents, as a user would
    start = time.perf_counter()
    one(record)
    times.append(time.perf_counter() - start)
  return answers, sorted(times)[len(times) // 2]


def needle_chunks(base, chunks: doc_to_lora.Chunks) -> np.ndarray:
  """[N, K] True where the chunk's text holds (the start of) the needle."""
  holds = np.zeros(chunks.mask.shape[:2], bool)
  for i, k in zip(*np.nonzero(chunks.mask.any(axis=-1))):
    holds[i, k] = "magic" in base.tokenizer.decode([int(t) for t in chunks.tokens[i, k][chunks.mask[i, k]]])
  return holds


def gate_summary(base, hyper, records, chunk_len: int, batch: int) -> dict[str, float]:
  """With `chunk_gate`: the mean gate (over layers) of the chunks holding the needle and of the others,
  and the share of the others' (chunk, layer) blocks kept (not 0, which only `chunk_gate_cut` makes)."""
  config = chunked_config(base, hyper, records, chunk_len)
  needle, other, other_kept = [], [], []
  for start in range(0, len(records), batch):
    ids = [base.tokenizer.encode(r["document"], add_bos=False) for r in records[start:start + batch]]
    chunks = doc_to_lora.chunk_documents(ids, config=config)
    gates = doc_to_lora.chunk_gates(hyper.variables, base.params, jnp.asarray(chunks.tokens),
                                    jnp.asarray(chunks.mask), config=config)
    gates = [jax.device_get(g) for g in gates.values()]  # each [N, K, L]
    per_chunk = sum(g.mean(axis=-1) for g in gates) / len(gates)  # [N, K]
    kept = sum((g > 0).mean(axis=-1) for g in gates) / len(gates)
    holds = needle_chunks(base, chunks)
    others = chunks.mask.any(axis=-1) & ~holds
    needle += per_chunk[holds].tolist()
    other += per_chunk[others].tolist()
    other_kept += kept[others].tolist()
  mean = lambda x: float(np.mean(x)) if x else float("nan")
  return {"needle_chunk": mean(needle), "other_chunks": mean(other),
          "other_chunks_max": float(np.max(other)) if other else float("nan"), "other_kept": mean(other_kept)}


def in_context_answers(base, records) -> list[str]:
  """One prompt at a time: the haystack in the prompt, then the question."""
  return [qa.answer(base, [r["query"]], context=r["document"], sampling=SAMPLING)[0] for r in records]


def recentred(base, hyper, num_haystacks: int, count_tokens):
  """`hyper` with its code centre recomputed from its params on training haystacks (seed 0)."""
  source = niah.NiahSource(num_haystacks, length=(32, TRAIN_MAX_TOKENS), seed=0, count_tokens=count_tokens,
                           digits=(4, 4))
  chunks = doc_to_lora.chunk_documents([base.tokenizer.encode(source[i]["document"], add_bos=False)
                                        for i in range(num_haystacks)], config=hyper.config)
  variables = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hyper.variables)
  variables = doc_to_lora.recompute_center(variables, base.params, jnp.asarray(chunks.tokens),
                                           jnp.asarray(chunks.mask), config=hyper.config)
  return dataclasses.replace(hyper, variables=variables)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hypernetwork", default=None, help="saved Doc-to-LoRA folder (default: the shipped one)")
  parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096, 8192])
  parser.add_argument("--per-length", type=int, default=20, help="haystacks per length (2 per depth bin)")
  parser.add_argument("--chunk-lens", type=int, nargs="+", default=[128, 1024])
  parser.add_argument("--seed", type=int, default=1, help="haystack seed (training used 0)")
  parser.add_argument("--digits", type=int, nargs=2, default=[4, 4], help="needle digit count range, as trained")
  parser.add_argument("--training-log", nargs="+", default=None, metavar="WORKDIR/logs/metrics.jsonl",
                      help="also plot the training run's loss (results/NAME_training.{json,png}); "
                           "several files: the run's stages, in order")
  parser.add_argument("--name", default="niah", help="results/NAME.{json,md,png}")
  parser.add_argument("--recenter", type=int, default=0, metavar="N",
                      help="first recompute the code centre on N training haystacks (32-256 tokens, seed 0)")
  parser.add_argument("--no-base", action="store_true",
                      help="Doc-to-LoRA only (e.g. a chunk-length sweep): skip the base model with and without the haystack")
  parser.add_argument("--chunk-gate-cut", choices=("on", "off"), default=None,
                      help="evaluate with DocToLoraConfig.experimental.chunk_gate_cut switched on or off "
                           "(default: as saved)")
  args = parser.parse_args()
  if args.training_log:
    common.training_curve(args.training_log, f"{args.name}_training")

  base = base_model.load_base_model()
  hyper = saved.load_hypernetwork(args.hypernetwork or saved.shipped("doc_to_lora", "needle"), base)
  if args.chunk_gate_cut:
    cut = {"chunk_gate_cut": args.chunk_gate_cut == "on"}
    hyper = dataclasses.replace(hyper, config=hyper.config.replace(experimental=cut))
  count_tokens = lambda text: len(base.tokenizer.encode(text, add_bos=False))
  if args.recenter:
    hyper = recentred(base, hyper, args.recenter, count_tokens)
  methods = [f"d2l_chunk{c}" for c in args.chunk_lens] + ([] if args.no_base else ["base_in_context",
                                                                                    "base_no_context"])
  rows = []
  for length in args.lengths:
    source = niah.NiahSource(args.per_length, length=length, seed=args.seed, count_tokens=count_tokens,
                             digits=tuple(args.digits))
    records = [source[i] for i in range(args.per_length)]
    row = {"length": length, "mean_tokens": sum(r["length"] for r in records) / len(records),
           "exact_match": {}, "digit_accuracy": {}, "digit_by_position": {}, "internalize_s": {},
           "examples": {}}
    for chunk_len in args.chunk_lens:
      answers, seconds = doc_to_lora_answers(base, hyper, records, chunk_len, batch=max(1, 4096 // length))
      score(row, f"d2l_chunk{chunk_len}", answers, records)
      row["internalize_s"][f"d2l_chunk{chunk_len}"] = seconds
      row["examples"][f"d2l_chunk{chunk_len}"] = answers[:3]
      if hyper.config.experimental.chunk_gate:
        row.setdefault("gates", {})[f"d2l_chunk{chunk_len}"] = gate_summary(base, hyper, records, chunk_len,
                                                                            batch=max(1, 4096 // length))
    if not args.no_base:
      answers = in_context_answers(base, records)
      score(row, "base_in_context", answers, records)
      row["examples"]["base_in_context"] = answers[:3]
      bare = qa.answer(base, [niah.QUERY], sampling=SAMPLING)[0]  # the same prompt for every record
      score(row, "base_no_context", [bare] * len(records), records)
      row["examples"]["base_no_context"] = [bare]
    row["examples"]["reference"] = [r["answer"] for r in records[:3]]
    rows.append(row)
    print(f"[niah] {length:5d} tokens: " + "  ".join(f"{m}={row['exact_match'][m]:.2f}" for m in methods),
          flush=True)

  result = {"hypernetwork": hyper.describe(), "chunk_gate_cut": hyper.config.experimental.chunk_gate_cut,
            "recentred_on": args.recenter, "per_length": args.per_length, "seed": args.seed,
            "digits": args.digits,
            "train_max_tokens": TRAIN_MAX_TOKENS, "methods": methods, "rows": rows}
  common.write_json(args.name, result)
  table = common.markdown_table(
      ["haystack tokens", *methods, *(f"internalize s ({m})" for m in methods if m.startswith("d2l"))],
      [[r["length"], *(r["exact_match"][m] for m in methods),
        *(r["internalize_s"][m] for m in methods if m.startswith("d2l"))] for r in rows])
  digits = common.markdown_table(["haystack tokens", *methods],
                                 [[r["length"], *(r["digit_accuracy"][m] for m in methods)] for r in rows])
  by_position = common.markdown_table(
      ["haystack tokens", *methods],
      [[r["length"], *(common.slashed(r["digit_by_position"][m]) for m in methods)] for r in rows])
  gates = ""
  if hyper.config.experimental.chunk_gate:
    gated = [m for m in methods if m.startswith("d2l")]
    gates = "\n\nChunk gates (mean over layers; 1 at init): the needle's chunk / the other chunks' mean / their " \
            "largest / the share of the other chunks' layer blocks kept (below 1 only with chunk_gate_cut):\n\n" \
            + common.markdown_table(
                ["haystack tokens", *gated],
                [[r["length"], *(" / ".join(f"{r['gates'][m][key]:.3f}" for key in
                                            ("needle_chunk", "other_chunks", "other_chunks_max", "other_kept"))
                                 for m in gated)]
                 for r in rows])
  common.write_markdown(args.name, "Needle in a haystack: exact match by haystack length",
                        f"{args.per_length} held-out haystacks per length (seed {args.seed}); trained on "
                        f"32-{TRAIN_MAX_TOKENS} tokens."
                        + (f" Code centre recomputed on {args.recenter} training haystacks." if args.recenter else "")
                        + f"\n\n{table}\nDigits right at their position (partial "
                        f"credit):\n\n{digits}\n\nBy position in the number, first digit first:\n\n{by_position}{gates}")
  plot(rows, methods, args.name)


def plot(rows: list[dict], methods: list[str], name: str) -> None:
  plt = common.pyplot()

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  lengths = [r["length"] for r in rows]
  for ax, metric in zip(axes, ("exact_match", "digit_accuracy")):
    for method in methods:
      ax.plot(lengths, [r[metric][method] for r in rows], marker="o", label=method)
    ax.axvline(TRAIN_MAX_TOKENS, color="grey", linestyle=":", label="longest training haystack")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("haystack tokens")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(-0.02, 1.02)
  axes[0].set_title("Needle in a haystack, Gemma 3 270M")
  axes[1].legend(fontsize=8)
  common.save_figure(fig, name)


if __name__ == "__main__":
  main()
