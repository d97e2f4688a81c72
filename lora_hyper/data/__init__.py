"""Generated, seed-reproducible data as grain random-access sources of plain-dict records.

  NiahSource(num_records, length=(32, 256), seed=0)      needle in a haystack (Doc-to-LoRA)
  FictionalQA(num_docs, split='train', seed=0)            QA over fictional documents (Doc-to-LoRA)
  CodeWordQA(num_records, seed=0)                         the copying drill: made-up code words (Doc-to-LoRA)
  TaskExamples(tasks, seed, num_examples_per_task)        the Text-to-LoRA task library
  TfdsQASource(name, split, data_dir)                     a locally prepared TFDS QA set (optional)
"""

from lora_hyper.data import fictional, niah, tasks, tfds_source
from lora_hyper.data.fictional import FictionalDocument, FictionalQA, generated_queries
from lora_hyper.data.niah import NiahSource, approx_token_count
from lora_hyper.data.tasks import (
    HELD_OUT_TASK_IDS,
    Task,
    TaskExamples,
    all_tasks,
    get_task,
    held_out_tasks,
    train_tasks,
)
from lora_hyper.data.tfds_source import TfdsQASource

__all__ = [
    "HELD_OUT_TASK_IDS",
    "FictionalDocument",
    "FictionalQA",
    "NiahSource",
    "Task",
    "TaskExamples",
    "TfdsQASource",
    "all_tasks",
    "approx_token_count",
    "fictional",
    "generated_queries",
    "get_task",
    "held_out_tasks",
    "niah",
    "tasks",
    "tfds_source",
    "train_tasks",
]
