"""Training loss by kind of answer, for a run on batches of one kind read in the file's order
(`mixed_facts --kind-batches N` with `lora_hyper.train.shuffle = False`): the logged loss of step s
is that of batch s - 1 of the file (from its start again once it runs out), so each step's loss
is one kind's. It shows which kinds the run learns and how fast, which a mixed batch's loss hides.

Run (seconds; experiments/qa/kind_batches.sh runs it after training):
  .venv/bin/python -m experiments.qa.kind_losses --data runs/qa_mixed/kind_batches.jsonl \
    --training-log runs/qa_mixed/mk/logs/metrics.jsonl --batch-size 8 --name qa_kind_batches_training_by_kind
Writes experiments/results/NAME.{json,md,png}.
"""

from __future__ import annotations

import argparse
import statistics

from experiments import common
from experiments.qa import by_fact
from lora_hyper.data import jsonl_source


def batch_kinds(records: list[dict], batch_size: int) -> list[str]:
  """The kind of answer of each whole batch of `records`, in order; a batch of mixed kinds is an error."""
  kinds = []
  for start in range(0, len(records) - batch_size + 1, batch_size):
    batch = {by_fact.answer_kind(r["answer"]) for r in records[start:start + batch_size]}
    if len(batch) != 1:
      raise ValueError(f"records {start}-{start + batch_size - 1} mix kinds {sorted(batch)}: not a file of "
                       f"one-kind batches of {batch_size} (mixed_facts --kind-batches {batch_size})")
    kinds.append(batch.pop())
  return kinds


def losses_by_kind(rows: list[dict], kinds: list[str], window: int) -> dict[str, list[float | None]]:
  """{kind: mean loss of its steps in each `window` of steps}, from logged rows ({'step', 'loss'})."""
  last = max(r["step"] for r in rows)
  windows = (last + window - 1) // window
  seen = {kind: [[] for _ in range(windows)] for kind in dict.fromkeys(kinds)}
  for r in rows:
    step = r["step"]
    seen[kinds[(step - 1) % len(kinds)]][(step - 1) // window].append(r["loss"])
  return {kind: [statistics.fmean(v) if v else None for v in per_window] for kind, per_window in seen.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", required=True, help="the JSON Lines file the run trained on, in order")
  parser.add_argument("--training-log", required=True, metavar="WORKDIR/logs/metrics.jsonl")
  parser.add_argument("--batch-size", type=int, required=True)
  parser.add_argument("--window", type=int, default=100)
  parser.add_argument("--name", required=True)
  args = parser.parse_args()
  kinds = batch_kinds(list(jsonl_source.read_records(args.data)), args.batch_size)
  rows = common.read_metrics(args.training_log)
  if any(r["step"] != i for i, r in enumerate(rows, start=1)):
    raise ValueError(f"{args.training_log} does not hold each step once from 1 (a resumed run logs some twice)")
  by_kind = losses_by_kind(rows, kinds, args.window)
  starts = list(range(0, rows[-1]["step"], args.window))
  common.write_json(args.name, {"data": args.data, "training_log": args.training_log, "batch_size": args.batch_size,
                                "window": args.window, "window_first_steps": [s + 1 for s in starts],
                                "loss_by_kind": by_kind})
  header = ["answer", *[f"steps {s + 1}-{min(s + args.window, rows[-1]['step'])}" for s in starts]]
  table = common.markdown_table(header, [[kind, *["-" if x is None else x for x in losses]]
                                         for kind, losses in by_kind.items()])
  common.write_markdown(args.name, "Training loss by kind of answer",
                        f"Mean training loss (nats per answer token) of the steps whose batch held each kind, "
                        f"per {args.window} steps; `{args.training_log}`, batches of {args.batch_size} from "
                        f"`{args.data}`.\n\n{table}")
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(7, 3.5))
  for kind, losses in by_kind.items():
    ax.plot([s + args.window / 2 for s in starts], losses, marker="o", label=kind)
  ax.set_xlabel("step")
  ax.set_ylabel(f"training loss, mean of {args.window} steps")
  ax.legend()
  common.save_figure(fig, args.name)


if __name__ == "__main__":
  main()
