"""Question answering records from a TFDS dataset already prepared on this machine (e.g. SQuAD).

`tensorflow_datasets` is optional and imported only when a source is built; nothing is ever
downloaded (`download=False`). Reading uses `tfds.data_source`, TFDS's random-access reader, which
needs the dataset prepared in the ArrayRecord format:

  pip install tensorflow-datasets array_record
  tfds build squad --data_dir DIR --file_format=array_record   # once, on a machine with network
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

# Record key -> path of the feature in a TFDS example ('/' descends into nested features).
SQUAD_FIELDS = {"document": "context", "query": "question", "answer": "answers/text"}


def _dataset_dir(data_dir: str | os.PathLike, name: str) -> Path:
  """'squad/v1.1:3.0.0' lives under DATA_DIR/squad."""
  return Path(data_dir) / name.split("/")[0].split(":")[0]


def _prepare_hint(name: str, data_dir: str | os.PathLike) -> str:
  dataset = name.split(":")[0]
  return ("install the optional reader with `pip install tensorflow-datasets array_record` and prepare the data "
          f"once, on a machine with network access: `tfds build {dataset} --data_dir {data_dir} "
          "--file_format=array_record` (this library never downloads)")


def _text(value: Any) -> str:
  """A TFDS text feature as str; of a sequence (SQuAD's reference answers) the first element."""
  if isinstance(value, np.ndarray):
    if value.ndim and not value.size:
      return ""  # an unanswerable question (SQuAD 2.0) has no reference answer
    value = value.item() if value.ndim == 0 else value[0]
  elif isinstance(value, (list, tuple)):
    value = value[0] if value else ""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _feature(example: Mapping[str, Any], path: str) -> Any:
  for key in path.split("/"):
    example = example[key]
  return example


class TfdsQASource:
  """A grain random-access source of {'document', 'query', 'answer'} over a local TFDS split."""

  def __init__(self, name: str, split: str, data_dir: str | os.PathLike,
               fields: Mapping[str, str] = SQUAD_FIELDS):
    dataset_dir = _dataset_dir(data_dir, name)
    if not dataset_dir.is_dir() or not any(dataset_dir.iterdir()):
      raise FileNotFoundError(f"no prepared TFDS dataset {name!r} under {data_dir}: {_prepare_hint(name, data_dir)}")
    try:
      import tensorflow_datasets as tfds  # optional dependency, imported only when needed
    except ImportError as error:
      raise ImportError(f"TfdsQASource needs tensorflow_datasets: {_prepare_hint(name, data_dir)}") from error
    self.fields = dict(fields)
    self._source = tfds.data_source(name, split=split, data_dir=os.fspath(data_dir), download=False)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, str]:
    example = self._source[index]
    return {key: _text(_feature(example, path)) for key, path in self.fields.items()}
