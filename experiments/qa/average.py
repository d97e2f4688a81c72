"""The uniform weight average of saved hypernetworks of one config (a "model soup" of one run's
checkpoints): the ends of consecutive stages that train the same weights on the same data lie close
together, and their mean can answer better than any of them.

Run (seconds):
  .venv/bin/python -m experiments.qa.average --out ROOT/average/hypernetwork \\
    ROOT/six_numbers_no_names_6/hypernetwork ROOT/six_numbers_no_names_7/hypernetwork ...
Writes a hypernetwork folder `by_fact --hypernetwork` reads, float32 (the mean of bfloat16 weights is
not a bfloat16 number), with the first input's config.gin.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import jax

from lora_hyper.hypernetworks import saved


def average(hypernetworks: Sequence[saved.SavedHypernetwork]) -> Any:
  """The leafwise mean of the hypernetworks' variables (params and any running statistics); they must
  share kind, config and base model."""
  if not hypernetworks:
    raise ValueError("nothing to average: give at least one hypernetwork")
  first = hypernetworks[0]
  for other in hypernetworks[1:]:
    for what in ("kind", "config", "base"):
      if getattr(other, what) != getattr(first, what):
        raise ValueError(f"{str(other.path)!r} has another {what} than {str(first.path)!r}: only one run's "
                         "hypernetworks can be averaged")
  return jax.tree.map(lambda *leaves: sum(leaves) / len(leaves), *(h.variables for h in hypernetworks))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("hypernetworks", nargs="+", type=Path, help="saved hypernetwork folders")
  parser.add_argument("--out", required=True, type=Path, help="folder for the averaged hypernetwork")
  args = parser.parse_args(argv)
  loaded = [saved.load_hypernetwork(folder) for folder in args.hypernetworks]
  first = loaded[0]
  out = saved.save_hypernetwork(args.out, first.config, average(loaded), base=first.base, gin_config=first.gin_config)
  print(f"averaged {len(loaded)} hypernetworks into {out}")


if __name__ == "__main__":
  main()
