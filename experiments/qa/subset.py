"""Fictional QA records of chosen kinds of answer, as JSON Lines for `lora_hyper.JsonlQA`: to train
(or validate) on numbers, listed words or made-up names alone, e.g. to ask whether the adapter can
learn to copy a word at all when nothing else is asked.

Run (seconds):
  .venv/bin/python -m experiments.qa.subset --out runs/qa_words.jsonl --docs 20000 --facts-per-doc 1 \
    --kinds 'listed word'
"""

from __future__ import annotations

import argparse

from experiments.qa import by_fact
from lora_hyper import files
from lora_hyper.data import fictional


def records(docs: int, facts_per_doc: int, kinds: set[str], split: str = "train", first: int = 0) -> list[dict]:
  source = fictional.FictionalQA(num_docs=first + docs, split=split, facts_per_doc=facts_per_doc)
  every = (source[i] for i in range(first * facts_per_doc, len(source)))
  return [r for r in every if by_fact.answer_kind(r["answer"]) in kinds]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True)
  parser.add_argument("--docs", type=int, default=20000)
  parser.add_argument("--first-doc", type=int, default=0)
  parser.add_argument("--split", default="train", choices=fictional.SPLITS)
  parser.add_argument("--facts-per-doc", type=int, default=fictional.FACTS_PER_DOC)
  parser.add_argument("--kinds", nargs="+", required=True, choices=by_fact.ANSWER_KINDS)
  args = parser.parse_args()
  kept = records(args.docs, args.facts_per_doc, set(args.kinds), args.split, args.first_doc)
  files.write_json_lines(args.out, kept)
  print(f"{len(kept)} records of {args.kinds} written to {args.out}")


if __name__ == "__main__":
  main()
