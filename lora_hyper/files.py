"""File plumbing shared by every cache and save path: where caches live, digests, atomic writes,
JSON manifests."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from lora_hyper.errors import CorruptFileError


def is_url(path: str | os.PathLike) -> bool:
  """Whether `path` names an object behind a URL (gs://bucket/run), not a local file or folder."""
  return "://" in os.fspath(path)


def cache_dir() -> Path:
  """Root of lora-hyper's caches: $LORA_HYPER_CACHE, else ~/.cache/lora_hyper."""
  return Path(os.environ.get("LORA_HYPER_CACHE", Path.home() / ".cache" / "lora_hyper"))


def file_digest(path: str | os.PathLike) -> str:
  """blake2b hex digest of a file's bytes (fast enough to verify a 1 GB cache in about a second)."""
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "blake2b").hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
  """`write(tmp_path)`, then rename into place: a crash never leaves a partial file at `path`."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  os.close(fd)
  try:
    write(tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; caches and saved adapters are meant to be shared.
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json_lines(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
  """One JSON object a line, written whole and renamed into place."""
  text = "".join(json.dumps(r) + "\n" for r in records)
  atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json_file(path: Path, missing: str) -> dict[str, Any]:
  """A JSON file's object; FileNotFoundError(`missing`) when it is absent, CorruptFileError naming the
  file when it is not valid JSON or holds something else than an object."""
  if not path.is_file():
    raise FileNotFoundError(missing)
  try:
    value = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorruptFileError(f"{str(path)!r} is not valid JSON (truncated or overwritten?): {e}") from e
  if not isinstance(value, dict):
    raise CorruptFileError(f"{str(path)!r} holds a JSON {type(value).__name__}, not an object")
  return value
