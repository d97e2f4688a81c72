"""Training runs side by side from their logs: loss and gradient norm.

A run that differs from another in one setting is read here from what the trainer logged
(`WORKDIR/logs/metrics.jsonl`): the loss per 100 steps and the gradient norm (before clipping) over
the last steps. (Until the hypernetwork refactor it also read each lookahead map's spectral norm from
the saved hypernetwork; the lookahead option and those runs are gone, experiments/qa/README.md.)

Run (seconds):
  .venv/bin/python -m experiments.qa.run_logs --name NAME --run 'kc=runs/qa_lookahead/kc' \
    --run 'kc2=runs/qa_lookahead/kc2'
Writes experiments/results/NAME.{json,md,png}.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from experiments import common
from lora_hyper.training import metrics

LAST_STEPS = 200  # the gradient norm's median is over the logged steps in the run's last LAST_STEPS


def read_log(workdir: str) -> dict[str, list[float]]:
  """The logged steps of a run that have a loss: {'step', 'loss', 'grad_norm'}."""
  rows = [r for r in common.read_metrics(Path(workdir) / "logs" / metrics.JSONL_NAME) if "loss" in r]
  return {key: [r[key] for r in rows] for key in ("step", "loss", "grad_norm")}


def summarize(log: dict[str, list[float]]) -> dict:
  """Mean loss per 100 steps and the median gradient norm of the last LAST_STEPS steps."""
  steps, last = np.asarray(log["step"]), max(log["step"])
  per_hundred = {start: statistics.fmean(np.asarray(log["loss"])[(steps > start) & (steps <= start + 100)])
                 for start in range(0, last, 100)}
  late = np.asarray(log["grad_norm"])[steps > last - LAST_STEPS]
  return {"loss_per_100_steps": per_hundred, "grad_norm_median_late": float(np.median(late))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", action="append", required=True, metavar="LABEL=WORKDIR",
                      help="a training workdir (its logs/) and its label (repeat)")
  parser.add_argument("--name", required=True)
  args = parser.parse_args()
  runs = common.labelled(parser, args.run, "--run", metavar="LABEL=WORKDIR")

  logs = {label: read_log(workdir) for label, workdir in runs.items()}
  summaries = {label: summarize(log) for label, log in logs.items()}
  common.write_json(args.name, {"runs": runs, "summaries": summaries, "logs": logs})

  starts = sorted({s for summary in summaries.values() for s in summary["loss_per_100_steps"]})
  header = ["run", *(f"loss, steps {s + 1}-{s + 100}" for s in starts), f"grad norm, median of last {LAST_STEPS} steps"]
  rows = [[label, *(s["loss_per_100_steps"].get(start, "-") for start in starts), s["grad_norm_median_late"]]
          for label, s in summaries.items()]
  common.write_markdown(args.name, "Training runs side by side",
                        f"Mean logged training loss per 100 steps and the gradient norm (before clipping)."
                        f"\n\n{common.markdown_table(header, rows)}")
  plot(logs, args.name)


def plot(logs: dict[str, dict[str, list[float]]], name: str) -> None:
  plt = common.pyplot()

  fig, (loss_ax, norm_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
  for label, log in logs.items():
    loss_ax.plot(log["step"], common.moving_mean(log["loss"], 10), label=label)
    norm_ax.plot(log["step"], log["grad_norm"], label=label)
  loss_ax.set_ylabel("training loss (mean of 10 logged steps)")
  norm_ax.set_ylabel("gradient norm (before clipping)")
  norm_ax.set_yscale("log")
  for ax in (loss_ax, norm_ax):
    ax.set_xlabel("step")
    ax.legend()
  common.save_figure(fig, name)


if __name__ == "__main__":
  main()
