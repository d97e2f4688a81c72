"""What every study writes: results as JSON, a markdown table and a PNG plot under
experiments/results/, each stamped with the command that produced it."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

RESULTS = Path(__file__).parent / "results"


def command() -> str:
  """This run's command line, as run from the repository root."""
  module = Path(sys.argv[0]).with_suffix("").relative_to(Path.cwd()) if Path(sys.argv[0]).is_absolute() else \
      Path(sys.argv[0]).with_suffix("")
  return " ".join([".venv/bin/python -m " + ".".join(module.parts), *map(shlex.quote, sys.argv[1:])])


def write_json(name: str, result: dict[str, Any]) -> Path:
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{name}.json"
  stamped = {"experiment": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command(),
             "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()}, **result}
  path.write_text(json.dumps(stamped, indent=2) + "\n")
  return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def write_markdown(name: str, title: str, body: str) -> Path:
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{name}.md"
  path.write_text(f"# {title}\n\nProduced by `{command()}` on {time.strftime('%Y-%m-%d')}.\n\n{body}")
  return path


def training_curve(metrics_jsonl: str | os.PathLike, name: str, window: int = 50) -> dict[str, Any]:
  """A run's logged loss (`WORKDIR/logs/metrics.jsonl`) as results/{name}.json and .png, with a
  moving mean over `window` logged steps."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
  steps, loss = [r["step"] for r in rows], [r["loss"] for r in rows]
  smooth = [sum(loss[max(0, i - window + 1):i + 1]) / len(loss[max(0, i - window + 1):i + 1])
            for i in range(len(loss))]
  curve = {"source": str(metrics_jsonl), "window": window, "step": steps, "loss": loss, "loss_smoothed": smooth}
  write_json(name, curve)
  fig, ax = plt.subplots(figsize=(7, 3.5))
  ax.plot(steps, loss, alpha=0.3, label="loss")
  ax.plot(steps, smooth, label=f"mean of {window}")
  ax.set_xlabel("step")
  ax.set_ylabel("training loss")
  ax.legend()
  fig.tight_layout()
  fig.savefig(RESULTS / f"{name}.png", dpi=120)
  return curve


if __name__ == "__main__":  # python -m experiments.common WORKDIR/logs/metrics.jsonl NAME
  if len(sys.argv) != 3:
    sys.exit("usage: python -m experiments.common WORKDIR/logs/metrics.jsonl NAME  (plots a training run's loss)")
  training_curve(sys.argv[1], sys.argv[2])
