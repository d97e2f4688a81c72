"""Question answering records from a JSON Lines file: one {'document', 'query', 'answer'} object a
line (other keys are kept). The way to train Doc-to-LoRA on data made ahead of time, such as the
self-generated pairs of `qa.write_self_generated_pairs`, or on a user's own documents.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

REQUIRED_KEYS = ("document", "query", "answer")


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
  """The file's records in order; a malformed line raises naming its number and what is wrong."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no JSON Lines file at {str(path)!r}")
  with path.open(encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{number} is not valid JSON ({e.msg}); a truncated last line means the file was "
                         "cut off while being written") from None
      if not isinstance(record, dict):
        raise ValueError(f"{path}:{number} holds a {type(record).__name__}, not an object")
      missing = [k for k in REQUIRED_KEYS if not isinstance(record.get(k), str) or not record[k].strip()]
      if missing:
        raise ValueError(f"{path}:{number} has no non-empty string {missing} (every record needs {REQUIRED_KEYS})")
      yield record


@dataclasses.dataclass(frozen=True)
class JsonlQA:
  """A grain random-access source over a JSON Lines file of {'document', 'query', 'answer'}."""

  path: str

  def __post_init__(self):
    records = tuple(read_records(self.path))
    if not records:
      raise ValueError(f"{self.path!r} holds no records")
    object.__setattr__(self, "_records", records)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    return dict(self._records[index])
