"""Everything a gin file may name, registered in one place (gin binds at the edge, not in the math).

  lora_hyper.train                    the meta-training loop (lora_hyper/training/trainer.py)
  lora_hyper.train_study              stages of training in one gin file (lora_hyper/training/stages.py)
  lora_hyper.OptimizerConfig          AdamW, schedule, clipping, accumulation
  lora_hyper.DocExampleShapes / TaskExampleShapes
  lora_hyper.FictionalQA / CodeWordQA / NiahSource / TfdsQASource / JsonlQA / PreparedQA / task_library /
  task_lora_library                   data sources
  lora_hyper.prepare_data / PrepareConfig   `lora-hyper prepare-data` (lora_hyper/data/prepare.py), with its
  lora_hyper.text_contexts / jsonl_contexts / source_contexts / fictional_contexts   contexts
  lora_hyper.eval_sweep / EvalConfig  `lora-hyper eval --gin_file` (lora_hyper/evaluation/study.py), with its
  lora_hyper.BuiltinData / JsonlData / TfdsData / NiahData / FictionalData / HandwrittenData / TaskData /
  DistillConfig                       records and baselines
"""

from __future__ import annotations

import gin

from lora_hyper.data import code_words, fictional, jsonl_source, lora_library, niah, tasks, tfds_source
from lora_hyper.baselines import context_distillation
from lora_hyper.data import pipeline, prepare, prepared
from lora_hyper.evaluation import data as eval_data
from lora_hyper.evaluation import study  # noqa: F401  (registers lora_hyper.eval_sweep)
from lora_hyper.training import trainer  # noqa: F401  (registers lora_hyper.train)
from lora_hyper.training import stages  # noqa: F401  (registers lora_hyper.train_study)
from lora_hyper.training.optimizer import OptimizerConfig

gin.external_configurable(OptimizerConfig, module="lora_hyper")
gin.external_configurable(pipeline.DocExampleShapes, module="lora_hyper")
gin.external_configurable(pipeline.TaskExampleShapes, module="lora_hyper")
gin.external_configurable(fictional.FictionalQA, module="lora_hyper")
gin.external_configurable(code_words.CodeWordQA, module="lora_hyper")
gin.external_configurable(niah.NiahSource, module="lora_hyper")
gin.external_configurable(tfds_source.TfdsQASource, module="lora_hyper")
gin.external_configurable(jsonl_source.JsonlQA, module="lora_hyper")
gin.external_configurable(prepared.PreparedQA, module="lora_hyper")
gin.external_configurable(prepare.PrepareConfig, module="lora_hyper")
gin.external_configurable(study.EvalConfig, module="lora_hyper")
gin.external_configurable(eval_data.BuiltinData, module="lora_hyper")
gin.external_configurable(eval_data.JsonlData, module="lora_hyper")
gin.external_configurable(eval_data.TfdsData, module="lora_hyper")
gin.external_configurable(eval_data.NiahData, module="lora_hyper")
gin.external_configurable(eval_data.FictionalData, module="lora_hyper")
gin.external_configurable(eval_data.HandwrittenData, module="lora_hyper")
gin.external_configurable(eval_data.TaskData, module="lora_hyper")
gin.external_configurable(context_distillation.DistillConfig, module="lora_hyper")


@gin.configurable(module="lora_hyper")
def task_library(split: str = "train", descriptions: str = "train", num_examples_per_task: int = 100,
                 seed: int = 0, num_tasks: int | None = None) -> tasks.TaskExamples:
  """The Text-to-LoRA task library: `split` train (seen tasks), test (held-out tasks) or all.
  `num_tasks` keeps that many tasks spread evenly over the split (scaling studies)."""
  return tasks.TaskExamples(tasks.split_tasks(split, num_tasks), seed, num_examples_per_task, descriptions)


@gin.configurable(module="lora_hyper")
def task_lora_library(folder: str = gin.REQUIRED, split: str = "train", descriptions: str = "train",
                      num_tasks: int | None = None, zscore: bool = False) -> lora_library.TaskLoraLibrary:
  """Saved per-task LoRAs (experiments/t2l/oracles.py) paired with each task's descriptions: the
  reconstruction targets. `num_tasks` as for `task_library`; `zscore` makes reconstruction compare
  factors z-scored per element over the library."""
  return lora_library.TaskLoraLibrary(folder, tasks.split_tasks(split, num_tasks), descriptions, zscore)
