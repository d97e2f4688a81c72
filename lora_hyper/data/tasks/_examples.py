"""`TaskExamples`, the task library as a grain random-access source of examples."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import numpy as np

from lora_hyper.data.tasks._catalogue import Task


@dataclasses.dataclass(frozen=True)
class TaskExamples:
  """A grain random-access source of {'task_id', 'category', 'family', 'description', 'input', 'output'}.

  Index i is example i % num_examples_per_task of task i // num_examples_per_task; it depends only
  on (seed, task id, example number), so reordering or subsetting `tasks` keeps each task's examples.
  """

  tasks: tuple[Task, ...]
  seed: int = 0
  num_examples_per_task: int = 100
  descriptions: str = "train"  # which description split to draw from: 'train' | 'test' | 'all'

  def __post_init__(self):
    if self.descriptions not in ("train", "test", "all"):
      raise ValueError(f"descriptions must be 'train', 'test' or 'all', got {self.descriptions!r}")
    object.__setattr__(self, "tasks", tuple(self.tasks))

  def __len__(self) -> int:
    return len(self.tasks) * self.num_examples_per_task

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    task = self.tasks[index // self.num_examples_per_task]
    rng = np.random.default_rng([self.seed, zlib.crc32(task.task_id.encode()), index % self.num_examples_per_task])
    task_input, output = task.example(rng)
    return {"task_id": task.task_id, "category": task.category, "family": task.family,
            "description": str(rng.choice(task.split_descriptions(self.descriptions))), "input": task_input,
            "output": output}
