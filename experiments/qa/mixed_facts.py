"""Fictional QA records from documents of 1 to 6 facts mixed in one file, as JSON Lines for
`lora_hyper.JsonlQA`: the curriculum's stages (one fact, two, six) in one stage instead of in
turn, since each stage of experiments/qa/curriculum.sh erased part of what the last had taught.

Every count of facts gets about the same number of records (so one-fact documents are not outnumbered
sixfold), from its own consecutive range of document indices: a document's subject depends on its
index alone, so sharing indices would repeat a subject with other facts. The ranges end well below
document 20,000, where validation starts (`by_fact --split train --first-doc 20000`).

`--kind-batches N` arranges the records into blocks of N with one kind of answer each (numbers,
listed words or made-up names; the counts of facts still mixed), in shuffled order, for training
with batches of N read in the file's order (`lora_hyper.train.shuffle = False`): the one-kind
stages' batches without their order. A kind's last block, if short, is left out.

Run (seconds):
  .venv/bin/python -m experiments.qa.mixed_facts --out runs/qa_mixed.jsonl --records-per-count 4000 \
    [--kind-batches 8]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from experiments.qa import by_fact, subset
from lora_hyper import files
from lora_hyper.data import fictional

VALIDATION_FIRST_DOC = 20000


def records(records_per_count: int, counts: tuple[int, ...], seed: int = 0) -> list[dict]:
  """About `records_per_count` records for each number of facts per document, in shuffled order."""
  docs = [math.ceil(records_per_count / facts) for facts in counts]
  if sum(docs) > VALIDATION_FIRST_DOC:
    raise ValueError(f"{sum(docs)} training documents would reach the validation ones (from {VALIDATION_FIRST_DOC})")
  firsts = np.cumsum([0, *docs[:-1]])
  mixed = [record for facts, n, first in zip(counts, docs, firsts)
           for record in subset.records(n, facts, set(by_fact.ANSWER_KINDS), first=int(first))]
  order = np.random.default_rng(seed).permutation(len(mixed))
  return [mixed[i] for i in order]


def kind_batches(records: list[dict], batch_size: int, seed: int = 0) -> list[dict]:
  """`records` regrouped into blocks of `batch_size` with one kind of answer each, blocks shuffled."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  blocks = []
  for kind in by_fact.ANSWER_KINDS:
    same = [r for r in records if by_fact.answer_kind(r["answer"]) == kind]
    blocks += [same[i:i + batch_size] for i in range(0, len(same) - batch_size + 1, batch_size)]
  order = np.random.default_rng(seed).permutation(len(blocks))
  return [r for i in order for r in blocks[i]]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True)
  parser.add_argument("--records-per-count", type=int, default=4000)
  parser.add_argument("--facts-per-doc", type=int, nargs="+", default=list(range(1, fictional.FACTS_PER_DOC + 1)))
  parser.add_argument("--kind-batches", type=int, default=None, metavar="N",
                      help="blocks of N records of one kind of answer (train them with shuffle off)")
  args = parser.parse_args()
  kept = records(args.records_per_count, tuple(args.facts_per_doc))
  if args.kind_batches is not None:
    kept = kind_batches(kept, args.kind_batches)
  files.write_json_lines(args.out, kept)
  print(f"{len(kept)} records from documents of {args.facts_per_doc} facts written to {args.out}")


if __name__ == "__main__":
  main()
