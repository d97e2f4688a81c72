"""The paper's self-generated training pairs for Doc-to-LoRA on the fictional training documents:
template queries about each document, answered by the base model with the document in its prompt,
written as JSON Lines for `lora_hyper.JsonlQA` (train on them with experiments/qa/train.gin and
--gin_param "lora_hyper.train.data = @lora_hyper.JsonlQA()" --gin_param "lora_hyper.JsonlQA.path = 'OUT'").

  .venv/bin/python -m experiments.qa.self_pairs --out runs/qa_pairs.jsonl --documents 2000 --queries 8

Rerunning the same command after an interruption continues after the last finished document.
"""

from __future__ import annotations

import argparse
import sys
import time

from lora_hyper import qa
from lora_hyper.data import fictional
from lora_hyper.model import base_model


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="the JSON Lines file to write (appended to on a rerun)")
  parser.add_argument("--documents", type=int, default=2000, help="training documents, from the first")
  parser.add_argument("--queries", type=int, default=8, help="template queries per document")
  parser.add_argument("--seed", type=int, default=0, help="the FictionalQA seed (as the training config's)")
  args = parser.parse_args(argv)

  model = base_model.load_base_model(None)
  source = fictional.FictionalQA(args.documents, "train", args.seed)
  documents = [source.document(i).text for i in range(args.documents)]
  start = time.perf_counter()

  def progress(done: int, total: int) -> None:
    if done % 10 == 0 or done == total:
      print(f"[self_pairs] {done}/{total} documents ({time.perf_counter() - start:.0f}s)", file=sys.stderr,
            flush=True)

  records = qa.write_self_generated_pairs(model, documents, args.out, args.queries, progress=progress)
  print(f"{args.out}: {records} records")


if __name__ == "__main__":
  main()
