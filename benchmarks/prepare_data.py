"""Throughput of `lora-hyper prepare-data` with the embedded Gemma 3 270M as query model and base:
records (query + greedy answer + the teacher's top-16) a second on this machine.

Runs `data.prepare.prepare_data` on `--docs` fictional documents x `--queries` queries into a
temporary folder, one shard of `--shard-size` documents at a time, and times every shard: the
first includes compiling, the others are the steady rate (`warm_records_per_second`) from which
the 200 x 4 and 2,000 x 10 estimates are made.

Run: python -m benchmarks.prepare_data [--docs 12] [--queries 4] [--shard-size 4]
Writes benchmarks/results/prepare_data.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from benchmarks import common
from lora_hyper.data import prepare
from lora_hyper.model import base_model


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--docs", type=int, default=12)
  parser.add_argument("--queries", type=int, default=4)
  parser.add_argument("--shard-size", type=int, default=4)
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--query-max-tokens", type=int, default=32)
  parser.add_argument("--answer-max-tokens", type=int, default=32)
  args = parser.parse_args(argv)

  model = base_model.load_base_model(on_host=True)
  config = prepare.PrepareConfig(num_queries=args.queries, shard_size=args.shard_size, batch_size=args.batch_size,
                                 query_max_tokens=args.query_max_tokens, answer_max_tokens=args.answer_max_tokens)
  contexts = prepare.fictional_contexts(args.docs)
  shard_times, last = [], [time.perf_counter()]

  def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    if message.startswith("shard "):
      now = time.perf_counter()
      shard_times.append((now - last[0], int(message.split(": ")[1].split(" ")[0])))
      last[0] = now

  with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    last[0] = start
    result = prepare.prepare_data(out=out, contexts=contexts, base_model=model, query_model=model, config=config,
                                  log=log)
    total = time.perf_counter() - start
  warm = shard_times[1:]
  warm_rate = sum(n for _, n in warm) / sum(t for t, _ in warm) if warm else float("nan")
  tokens = [len(model.tokenizer.encode(c)) for c in contexts]
  common.write_result("prepare_data", {
      "model": model.name, "settings": vars(config), "documents": args.docs,
      "document_tokens_mean": sum(tokens) / len(tokens), "records": result.report["records"],
      "report": result.report, "seconds_total": round(total, 1),
      "shard_seconds": [round(t, 2) for t, _ in shard_times],
      "records_per_second_with_compile": result.report["records"] / total,
      "warm_records_per_second": warm_rate,
      "estimated_minutes_200_docs_x_4": 800 / warm_rate / 60,
      "estimated_hours_2000_docs_x_10": 20000 / warm_rate / 3600,
  })
  return 0


if __name__ == "__main__":
  sys.exit(main())
