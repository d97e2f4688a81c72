"""What every study writes: results as JSON, a markdown table and a PNG plot under
experiments/results/, each stamped with the command that produced it."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from lora_hyper import files

RESULTS = Path(__file__).parent / "results"


def command() -> str:
  """This run's command line, as run from the repository root, its paths portable (files.portable_path)."""
  module = Path(sys.argv[0]).with_suffix("").relative_to(Path.cwd()) if Path(sys.argv[0]).is_absolute() else \
      Path(sys.argv[0]).with_suffix("")
  return files.portable_command([".venv/bin/python", "-m", ".".join(module.parts), *sys.argv[1:]])


def write_json(name: str, result: dict[str, Any]) -> Path:
  """results/{name}.json, stamped with the command and machine; every path in it portable."""
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{name}.json"
  stamped = {"experiment": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command(),
             "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
             **files.portable_record(result)}
  path.write_text(json.dumps(stamped, indent=2) + "\n")
  return path


def slashed(values: Sequence[float], decimals: int = 2) -> str:
  """Per-position numbers as one table cell: 1.00 / 0.95 / 0.90."""
  return " / ".join(f"{x:.{decimals}f}" for x in values)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def write_markdown(name: str, title: str, body: str) -> Path:
  """results/{name}.md, stamped with the command; every path in it portable."""
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{name}.md"
  path.write_text(f"# {title}\n\nProduced by `{command()}` on {time.strftime('%Y-%m-%d')}.\n\n"
                  + files.portable_text(body))
  return path


def pyplot():
  """matplotlib.pyplot on the Agg backend: experiments run headless and only write files."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save_figure(fig, name: str) -> Path:
  """Lays out and writes `fig` as results/{name}.png."""
  fig.tight_layout()
  path = RESULTS / f"{name}.png"
  fig.savefig(path, dpi=120)
  return path


def labelled(parser: argparse.ArgumentParser, values: Sequence[str], option: str, metavar: str) -> dict[str, str]:
  """Repeated `option` LABEL=PATH arguments as {label: path}, in order; one without '=' is a usage error."""
  if any("=" not in v for v in values):
    parser.error(f"{option} takes {metavar}")
  return dict(v.split("=", 1) for v in values)


def read_metrics(metrics_jsonl: str | os.PathLike) -> list[dict[str, Any]]:
  """A run's logged rows (`WORKDIR/logs/metrics.jsonl`, one object a `log` call), in order."""
  return [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]


def moving_mean(values: Sequence[float], window: int) -> list[float]:
  """The mean of each value and the up to `window` - 1 before it."""
  return [statistics.fmean(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def training_curve(metrics_jsonl: str | os.PathLike | Sequence[str | os.PathLike], name: str,
                   window: int = 50) -> dict[str, Any]:
  """A run's logged loss (`WORKDIR/logs/metrics.jsonl`) as results/{name}.json and .png, with a
  moving mean over `window` logged steps. Several files are the stages of one run, in order:
  their steps are laid end to end and each new stage is marked."""
  plt = pyplot()

  paths = [metrics_jsonl] if isinstance(metrics_jsonl, (str, os.PathLike)) else list(metrics_jsonl)
  steps, loss, smooth, stage_starts = [], [], [], []
  for path in paths:
    rows = read_metrics(path)
    offset = steps[-1] if steps else 0
    stage_starts.append(offset)
    steps += [offset + r["step"] for r in rows]
    stage_loss = [r["loss"] for r in rows]
    loss += stage_loss
    smooth += moving_mean(stage_loss, window)  # per stage: stages train on different data, their losses do not mix
  source = str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]
  curve = {"source": source, "window": window, "step": steps, "loss": loss, "loss_smoothed": smooth}
  if len(paths) > 1:
    curve["stage_starts"] = stage_starts
  write_json(name, curve)
  fig, ax = plt.subplots(figsize=(7, 3.5))
  ax.plot(steps, loss, alpha=0.3, label="loss")
  ax.plot(steps, smooth, label=f"mean of {window}")
  for start in stage_starts[1:]:
    ax.axvline(start, color="grey", linestyle=":")
  ax.set_xlabel("step" if len(paths) == 1 else "step (stages end to end, dotted: a new stage)")
  ax.set_ylabel("training loss")
  ax.legend()
  save_figure(fig, name)
  return curve


if __name__ == "__main__":  # python -m experiments.common WORKDIR/logs/metrics.jsonl [...] NAME
  if len(sys.argv) < 3:
    sys.exit("usage: python -m experiments.common WORKDIR/logs/metrics.jsonl [MORE_STAGES ...] NAME  "
             "(plots a training run's loss; several files are its stages in order)")
  training_curve(sys.argv[1:-1], sys.argv[-1])
