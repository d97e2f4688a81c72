"""Compiles the train step of every pod config for the TPU topologies its header names, on this
CPU (deviceless, with libtpu: `pip install -e '.[tpu-compile]'`), and records what each chip
would hold against its HBM. Exits 1 if any step does not fit.

  python -m benchmarks.tpu_compile [--write]

A pod config is a gin file whose header has a `# topology` line (the file as shipped) and
`# recipe` lines (gin bindings for other slices); see gin_configs/d2l_gemma2_2b.gin. `--write`
rewrites each file's `# topology` line with its numbers, and the table in benchmarks/README.md.
Writes benchmarks/results/tpu_compile.json.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

# Compile for TPUs, run nothing: JAX's own backend stays the CPU (set before jax is imported).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import gin  # noqa: E402

from benchmarks import common  # noqa: E402
from lora_hyper.training import aot  # noqa: E402

README = Path(__file__).parent / "README.md"
START, END = "<!-- tpu-compile:start -->", "<!-- tpu-compile:end -->"
GiB = aot.GiB
# For the record (`--before`), not failures: the 2B Doc-to-LoRA config as it was before this check
# (one 512-token chunk, a float32 Perceiver over every layer at once), and as shipped but with
# every layer at once.
_D2L = "gin_configs/d2l_gemma2_2b.gin"
BEFORE = [
    ("before: 1 chunk, float32 Perceiver, all layers at once",
     aot.PodPlan(_D2L, "v5e:4x4", "v5e-16", (
         "lora_hyper.train.objective_overrides = {}",
         "lora_hyper.train.hyper_overrides = {'chunk_len': 512, 'max_chunks': 8}",
         "lora_hyper.DocExampleShapes.num_chunks = 1", "lora_hyper.DocExampleShapes.teacher_len = 640"), False)),
    ("as shipped, all layers at once (not iterative)",
     aot.PodPlan(_D2L, "v5e:4x4", "v5e-16", ("lora_hyper.train.objective_overrides = {}",), False)),
]


def _row(plan: aot.PodPlan, settings: dict, memory: aot.StepMemory, seconds: float, label: str) -> dict:
  return {"config": plan.gin_file, "topology": plan.topology, "slice": plan.slice_name,
          "plan": label, "bindings": list(plan.bindings),
          "global_batch_size": settings["global_batch_size"],
          "accumulation_steps": settings["optimizer"].accumulation_steps,
          "mesh": memory.mesh, "argument_bytes": memory.argument_bytes, "output_bytes": memory.output_bytes,
          "alias_bytes": memory.alias_bytes, "temp_bytes": memory.temp_bytes, "code_bytes": memory.code_bytes,
          "peak_bytes": memory.peak_bytes, "usable_bytes": memory.usable_bytes, "fits": memory.fits,
          "compiled": memory.compiled,  # False: refused, so no cost analysis (null rather than NaN: strict JSON)
          "flops_per_chip": memory.flops if memory.compiled else None,
          "bytes_accessed_per_chip": memory.bytes_accessed if memory.compiled else None,
          "step_seconds_roofline": memory.step_seconds() if memory.compiled else None,
          "replicated_over_100MB": [list(x) for x in memory.replicated], "largest_values": [list(x) for x in memory.largest],
          "largest_values_at_global_batch": memory.largest_at_batch or settings["global_batch_size"],
          "compile_seconds": round(seconds, 1)}


def table(rows: list[dict]) -> str:
  lines = ["| config | topology | plan | batch x accumulation | mesh (data, fsdp, tensor) | per chip: arguments + temporaries (GiB) | peak / usable HBM (GiB) | fits | step >= (roofline) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    mesh = ", ".join(str(r["mesh"][k]) for k in ("data", "fsdp", "tensor"))
    step = f"{r['step_seconds_roofline']:.3f} s" if r["step_seconds_roofline"] is not None else "-"
    lines.append(f"| {Path(r['config']).name} | {r['topology']} ({r['slice']}) | {r['plan']} | "
                 f"{r['global_batch_size']} x {r['accumulation_steps']} | {mesh} | "
                 f"{r['argument_bytes'] / GiB:.2f} + {r['temp_bytes'] / GiB:.2f} | "
                 f"{r['peak_bytes'] / GiB:.2f} / {r['usable_bytes'] / GiB:.2f} | {'yes' if r['fits'] else '**no**'} | "
                 f"{step} |")
  replicated = sorted({(Path(r["config"]).name, name, size) for r in rows for name, size in r["replicated_over_100MB"]})
  lines.append("")
  lines.append("Arrays over 100 MB held whole by every chip: " + (
      "; ".join(f"{config} {name} ({size / 1e6:.0f} MB)" for config, name, size in replicated) or "none") + ".")
  return "\n".join(lines)


def write_readme(rows: list[dict]) -> None:
  text = README.read_text()
  start, end = text.index(START) + len(START), text.index(END)
  README.write_text(text[:start] + "\n\n" + table(rows) + "\n\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--configs", nargs="*", default=sorted(glob.glob("gin_configs/*.gin")),
                      help="gin files to check (those without a '# topology' line are skipped)")
  parser.add_argument("--architecture", default="gemma2_2b",
                      help="the base model of configs that leave it to the user (model/config.py PRESETS)")
  parser.add_argument("--write", action="store_true", help="rewrite the configs' topology lines and the README table")
  parser.add_argument("--before", action="store_true",
                      help="also compile the 2B Doc-to-LoRA config as it was before this check, for the record")
  args = parser.parse_args(argv)

  plans = [(plan, "as shipped" if plan.shipped else "recipe") for f in args.configs for plan in aot.pod_plans(f)]
  if args.before:
    plans += [(plan, label) for label, plan in BEFORE]
  rows, failed = [], []
  for plan, label in plans:
    start = time.perf_counter()
    settings, memory = aot.check_plan(plan, args.architecture)
    rows.append(_row(plan, settings, memory, time.perf_counter() - start, label))
    print(f"{plan.gin_file} {label}: {memory.describe()}", flush=True)
    if not memory.fits and label in ("as shipped", "recipe"):
      failed.append(f"{plan.gin_file} on {plan.topology}")
    if args.write and plan.shipped and memory.compiled:
      aot.rewrite_topology_line(plan.gin_file, aot.header_line(plan, memory))
  gin.clear_config()
  common.write_result("tpu_compile", {"architecture": args.architecture, "rows": rows})
  if args.write:
    write_readme(rows)
  print(table(rows))
  if failed:
    print(f"does not fit: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
