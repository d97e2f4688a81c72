"""Everything a gin file may name, registered in one place (gin binds at the edge, not in the math).

  lora_hyper.train                    the meta-training loop (lora_hyper/training/trainer.py)
  lora_hyper.OptimizerConfig          AdamW, schedule, clipping, accumulation
  lora_hyper.DocExampleShapes / TaskExampleShapes
  lora_hyper.FictionalQA / NiahSource / TfdsQASource / task_library      data sources
"""

from __future__ import annotations

import gin

from lora_hyper.data import fictional, niah, tasks, tfds_source
from lora_hyper.data import pipeline
from lora_hyper.training import trainer  # noqa: F401  (registers lora_hyper.train)
from lora_hyper.training.optimizer import OptimizerConfig

gin.external_configurable(OptimizerConfig, module="lora_hyper")
gin.external_configurable(pipeline.DocExampleShapes, module="lora_hyper")
gin.external_configurable(pipeline.TaskExampleShapes, module="lora_hyper")
gin.external_configurable(fictional.FictionalQA, module="lora_hyper")
gin.external_configurable(niah.NiahSource, module="lora_hyper")
gin.external_configurable(tfds_source.TfdsQASource, module="lora_hyper")


@gin.configurable(module="lora_hyper")
def task_library(split: str = "train", descriptions: str = "train", num_examples_per_task: int = 100,
                 seed: int = 0) -> tasks.TaskExamples:
  """The Text-to-LoRA task library: `split` train (seen tasks), test (held-out tasks) or all."""
  chosen = {"train": tasks.train_tasks, "test": tasks.held_out_tasks, "all": tasks.all_tasks}
  if split not in chosen:
    raise ValueError(f"task_library split must be one of {sorted(chosen)}, got {split!r}")
  return tasks.TaskExamples(chosen[split](), seed, num_examples_per_task, descriptions)
