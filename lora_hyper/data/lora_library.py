"""A library of task LoRAs as a grain source: Text-to-LoRA reconstruction's training data.

The folder holds one saved adapter per task (`FOLDER/<category>__<member>/adapter.safetensors`,
written by `experiments/t2l/oracles.py`); record i pairs task i // D with its description
i % D, so every description of a task reconstructs the same target:
  {'task_id', 'description', 'target_a_<module>', 'target_b_<module>'}  ([L, r, d] float32)
With `zscore`, every record also carries the library's per-element mean and standard deviation
over its tasks (`target_mean_<a|b>_<module>`, `target_std_<a|b>_<module>`), and reconstruction
compares z-scored factors.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lora_hyper.adapters import io
from lora_hyper.baselines.task_loras import task_dirname
from lora_hyper.data.tasks import Task


@dataclasses.dataclass(frozen=True)
class TaskLoraLibrary:
  folder: str
  tasks: tuple[Task, ...]
  descriptions: str = "train"  # 'train' | 'test' | 'all' (see Task.split_descriptions)
  zscore: bool = False

  def __post_init__(self):
    object.__setattr__(self, "tasks", tuple(self.tasks))
    if not self.tasks:
      raise ValueError("TaskLoraLibrary needs at least one task")
    missing = [t.task_id for t in self.tasks if not (Path(self.folder) / task_dirname(t.task_id)).is_dir()]
    if missing:
      raise FileNotFoundError(f"the task LoRA library {self.folder!r} has no adapter for {len(missing)} task(s), "
                              f"e.g. {missing[:3]}; train them with experiments/t2l/oracles.py")
    targets, infos = [], []
    for task in self.tasks:
      adapter, info = io.load_adapter(Path(self.folder) / task_dirname(task.task_id))
      targets.append({f"target_{f}_{m}": np.asarray(ab[f], np.float32)
                      for m, ab in adapter.weights.items() for f in ("a", "b")})
      infos.append((info.modules, info.rank, info.scaling))
    if len(set(infos)) != 1:
      raise ValueError(f"the task LoRAs in {self.folder!r} differ in modules, rank or scaling: {sorted(set(infos))}")
    object.__setattr__(self, "_targets", tuple(targets))
    object.__setattr__(self, "_stats", _zscore_stats(targets) if self.zscore else {})
    object.__setattr__(self, "modules", infos[0][0])
    object.__setattr__(self, "rank", infos[0][1])
    object.__setattr__(self, "scaling", infos[0][2])
    object.__setattr__(self, "_descriptions", tuple(t.split_descriptions(self.descriptions) for t in self.tasks))

  @property
  def descriptions_per_task(self) -> int:
    return min(len(d) for d in self._descriptions)

  def __len__(self) -> int:
    return len(self.tasks) * self.descriptions_per_task

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    task, description = divmod(index, self.descriptions_per_task)
    return {"task_id": self.tasks[task].task_id, "description": self._descriptions[task][description],
            **self._targets[task], **self._stats}


def _zscore_stats(targets: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Per-element mean and std over the tasks; an element equal in every task gets std 1 (its error
  then counts unscaled instead of divided by zero)."""
  stats = {}
  for key in targets[0]:
    stacked = np.stack([t[key] for t in targets])
    std = stacked.std(axis=0)
    suffix = key.removeprefix("target_")
    stats[f"target_mean_{suffix}"] = stacked.mean(axis=0)
    stats[f"target_std_{suffix}"] = np.where(std > 1e-8, std, 1.0).astype(np.float32)
  return stats


def check_matches(library: TaskLoraLibrary, modules: Sequence[str], rank: int, scaling: float) -> None:
  """Reconstruction compares factors directly: the library must use the hypernetwork's parametrisation."""
  if tuple(library.modules) != tuple(modules) or library.rank != rank or not np.isclose(library.scaling, scaling):
    raise ValueError(f"the task LoRAs in {library.folder!r} (modules {library.modules}, rank {library.rank}, "
                     f"scaling {library.scaling:.4g}) do not match the hypernetwork (modules {tuple(modules)}, "
                     f"rank {rank}, scaling {scaling:.4g})")
