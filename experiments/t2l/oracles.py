"""Trains Text-to-LoRA's baselines by plain gradient descent on the task library's training tasks:
one "oracle" LoRA per task (the targets of reconstruction mode) and one multi-task LoRA over all
of them, in the shipped hypernetwork's parametrisation (rank 8 on q and v, rsLoRA scaling).

  .venv/bin/python -m experiments.t2l.oracles --out runs/t2l_loras

writes OUT/oracles/<category>__<member>/adapter.safetensors (one per training task),
OUT/multitask/adapter.safetensors, and the training curves as experiments/results/t2l_oracles.*.
The examples are those the hypernetworks train on (`task_library`, seed 0, 200 per task). Every
oracle starts from the same A (`TaskLoraConfig.shared_init`), so the library's factors differ by
what the tasks taught them, not by their random starts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from experiments import common
from lora_hyper.adapters import io, lora
from lora_hyper.baselines import task_loras
from lora_hyper.data import pipeline, tasks
from lora_hyper.hypernetworks import text_to_lora
from lora_hyper.model import base_model
from lora_hyper.prompts import task_prompt

SHAPES = pipeline.TaskExampleShapes(seq_len=52, answer_len=16)  # as experiments/t2l/sft.gin


def _progress(what: str, total: int, start: float):
  def report(step: int, loss: float) -> None:
    if step == 1 or step % 10 == 0 or step == total:
      print(f"[{what}] step {step}/{total} loss={loss:.4f} ({time.perf_counter() - start:.0f}s)", file=sys.stderr,
            flush=True)

  return report


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="folder for oracles/ and multitask/")
  parser.add_argument("--oracle-steps", type=int, default=48, help="steps of one example of every task each")
  parser.add_argument("--oracle-lr", type=float, default=2e-3)
  parser.add_argument("--multitask-steps", type=int, default=240)
  parser.add_argument("--multitask-batch", type=int, default=8)
  parser.add_argument("--multitask-lr", type=float, default=1e-3)
  args = parser.parse_args(argv)

  base = base_model.load_base_model(None)
  cfg = base.config
  hyper = text_to_lora.t2l_small(cfg)  # the parametrisation reconstruction must match
  train_tasks = tasks.train_tasks()
  source = tasks.TaskExamples(train_tasks, seed=0, num_examples_per_task=200, descriptions="train")

  def to_example(record):
    return pipeline.sft_example(record, base.tokenizer, cfg.bos_id, cfg.eos_id, cfg.pad_id, SHAPES,
                                task_prompt)

  identity = io.base_identity(base)
  results = {"tasks": [t.task_id for t in train_tasks], "shapes": vars(SHAPES)}
  out = Path(args.out)

  oracle_cfg = task_loras.TaskLoraConfig(hyper.modules, hyper.rank, hyper.scaling, steps=args.oracle_steps,
                                         learning_rate=args.oracle_lr, examples_per_task=1, micro_batch=40)
  batches = task_loras.per_task_batches(source, to_example, len(train_tasks), oracle_cfg.examples_per_task)
  oracles = task_loras.train(base.params, cfg, batches, len(train_tasks), oracle_cfg,
                             _progress("oracles", oracle_cfg.steps, time.perf_counter()))
  for i, (task, folder) in enumerate(zip(train_tasks, task_loras.library_paths(str(out / "oracles"),
                                                                                 [t.task_id for t in train_tasks]))):
    io.save_adapter(folder, lora.take(oracles.adapters, i), base=identity,
                    source={"kind": "oracle_lora", "task_id": task.task_id, "steps": oracle_cfg.steps,
                            "learning_rate": oracle_cfg.learning_rate})
  results["oracles"] = {"config": vars(oracle_cfg) | {"modules": list(hyper.modules)}, "seconds": oracles.seconds,
                        "loss": oracles.losses.tolist()}

  multi_cfg = task_loras.TaskLoraConfig(hyper.modules, hyper.rank, hyper.scaling, steps=args.multitask_steps,
                                        learning_rate=args.multitask_lr, micro_batch=args.multitask_batch)
  batches = task_loras.mixed_batches(source, to_example, args.multitask_batch, seed=0)
  multi = task_loras.train(base.params, cfg, batches, 1, multi_cfg,
                           _progress("multitask", multi_cfg.steps, time.perf_counter()))
  io.save_adapter(out / "multitask", lora.take(multi.adapters, 0), base=identity,
                  source={"kind": "multitask_lora", "tasks": len(train_tasks), "steps": multi_cfg.steps})
  results["multitask"] = {"config": vars(multi_cfg) | {"modules": list(hyper.modules)}, "seconds": multi.seconds,
                          "batch": args.multitask_batch, "loss": multi.losses.tolist()}
  common.write_json("t2l_oracles", results)
  _plot(results)
  print(out)


def _plot(results: dict) -> None:
  plt = common.pyplot()

  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for ax, key, title in ((axes[0], "oracles", "per-task LoRAs (all tasks each step)"),
                         (axes[1], "multitask", "multi-task LoRA")):
    ax.plot(range(1, len(results[key]["loss"]) + 1), results[key]["loss"])
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("answer cross-entropy")
  common.save_figure(fig, "t2l_oracles")


if __name__ == "__main__":
  main()
