"""Runs every CPU benchmark one after another, then rewrites benchmarks/README.md's tables.

One at a time because they share this machine's cores: two benchmarks (or a benchmark and a
training run) at once slow each other's contenders unevenly, and PyTorch's spinning OpenMP threads
suffer most. Each script's output goes to benchmarks/results/logs/NAME.log; a failing script is
reported and the others still run (the exit status is 1 then).

Run: python -m benchmarks.run_all [--only NAME ...] [--skip NAME ...]   (about 25 minutes)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import report

# The commands of the README's table, defaults written out.
COMMANDS = {
    "update_latency": "--lengths 255 511 1023 2046 --cd_steps 300 --timed_steps 30 --rounds 2",
    "internalize_scaling": "--lengths 2048 4096 8192 16384 --rounds 3 --label after",
    "memory": "--measured 1024 2048 4096 --rss_length 2048",
    "decode_latency": "--lengths 256 1024 4096 --new_tokens 32 --rounds 5",
    "forward": "--tokens 512 --repeats 5",
    "train_step": "--rounds 4",
    "train_step_parts": "--positions 1024 --rounds 5",
    "mfu": "--rounds 3 --peak_n 4096",
    "per_example_adapters": "--batch 8 --tokens 128 --ranks 16 136 --rounds 4",
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--only", nargs="+", choices=sorted(COMMANDS), default=None, metavar="NAME",
                      help="run just these (" + ", ".join(COMMANDS) + ")")
  parser.add_argument("--skip", nargs="+", choices=sorted(COMMANDS), default=(), metavar="NAME",
                      help="leave these out")
  args = parser.parse_args(argv)
  names = [n for n in COMMANDS if (args.only is None or n in args.only) and n not in args.skip]
  logs = report.RESULTS / "logs"
  logs.mkdir(parents=True, exist_ok=True)
  failed = []
  for name in names:
    command = [sys.executable, "-m", f"benchmarks.{name}", *COMMANDS[name].split()]
    start = time.perf_counter()
    print(f"[run_all] {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    with open(logs / f"{name}.log", "w") as log:
      code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent).returncode
    print(f"[run_all] {name}: exit {code} after {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    if code:
      failed.append(name)
  report.main(["--write"])
  if failed:
    print(f"[run_all] failed: {', '.join(failed)} (see {logs})", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
