"""Compiles the train step of every pod config for the TPU topologies its header names, on this
CPU (deviceless, with libtpu: `pip install -e '.[tpu-compile]'`), and records what each chip
would hold against its HBM. Exits 1 if any step does not fit.

  python -m benchmarks.tpu_compile [--write]
  python -m benchmarks.tpu_compile --only-generation [--write]   # just prepare-data's generation row

A pod config is a gin file whose header has a `# topology` line (the file as shipped) and
`# recipe` lines (gin bindings for other slices); see gin_configs/d2l_gemma2_2b.gin. `--write`
rewrites each file's `# topology` line with its numbers, and the table in benchmarks/README.md.
Writes benchmarks/results/tpu_compile.json. One more row compiles `lora-hyper prepare-data`'s
generation step (`aot.compile_generation_step`) for gemma-2-2b on a v5e-8; `--only-generation`
compiles that row alone and replaces it in the JSON (and, with `--write`, the table).
"""

from __future__ import annotations

import argparse
import glob
import json
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


# prepare-data's generation step: gemma-2-2b answering 8 prompts a chip of the 2B config's teacher
# length (1,088 tokens) with up to 64 new tokens, data-parallel (the model replicated on each chip).
GENERATION = {"architecture": "gemma2_2b", "topology": "v5e:2x4", "slice": "v5e-8", "batch": 64,
              "prompt_len": 1088, "max_new_tokens": 64, "mesh_shape": (-1, 1, 1), "dtype": "bfloat16"}
GENERATION_CONFIG = "prepare-data generation (gemma2_2b)"


def generation_row() -> dict:
  """The generation step's row, in the columns of the train steps' rows."""
  g = GENERATION
  start = time.perf_counter()
  memory = aot.compile_generation_step(aot.base_architecture(None, g["architecture"]),
                                       aot.topology_devices(g["topology"]), g["topology"], batch=g["batch"],
                                       prompt_len=g["prompt_len"], max_new_tokens=g["max_new_tokens"],
                                       mesh_shape=g["mesh_shape"], dtype=g["dtype"])
  print(f"{GENERATION_CONFIG}: {memory.describe()}", flush=True)
  plan = aot.PodPlan(GENERATION_CONFIG, g["topology"], g["slice"], (), False)
  label = f"{g['prompt_len']}-token prompts, {g['max_new_tokens']} new tokens, {g['dtype']}"
  row = _row(plan, {"global_batch_size": g["batch"], "optimizer": _NoAccumulation}, memory,
             time.perf_counter() - start, label)
  # The cost analysis counts a while loop's body once: no step time from it.
  return {**row, "flops_per_chip": None, "bytes_accessed_per_chip": None, "step_seconds_roofline": None}


class _NoAccumulation:
  accumulation_steps = 1


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
  parser.add_argument("--only-generation", action="store_true",
                      help="compile only prepare-data's generation row and replace it in the recorded results")
  parser.add_argument("--before", action="store_true",
                      help="also compile the 2B Doc-to-LoRA config as it was before this check, for the record")
  args = parser.parse_args(argv)

  if args.only_generation:
    # The other rows keep the date and command they were compiled by; this one names its own.
    path = common.RESULTS / "tpu_compile.json"
    recorded = json.loads(path.read_text())
    rows = [r for r in recorded["rows"] if r["config"] != GENERATION_CONFIG]
    rows.append({**generation_row(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": common.command()})
    path.write_text(json.dumps({**recorded, "rows": rows}, indent=2) + "\n")
    if args.write:
      write_readme(rows)
    print(table(rows))
    return 0
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
  rows.append(generation_row())
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
