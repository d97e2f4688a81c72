"""File plumbing shared by every cache and save path: where caches live, digests, atomic writes,
JSON manifests, and the portable form of the paths a record holds."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any, Callable

from lora_hyper.errors import CorruptFileError


def is_url(path: str | os.PathLike) -> bool:
  """Whether `path` names an object behind a URL (gs://bucket/run), not a local file or folder."""
  return "://" in os.fspath(path)


REPOSITORY = Path(__file__).resolve().parent.parent  # the folder holding the lora_hyper package
# Folders every machine has: a record may name them as they are.
_SYSTEM = ("bin", "dev", "etc", "lib", "opt", "proc", "sbin", "sys", "usr")
# An absolute path inside text: a slash that does not continue a word, a relative path, a URL or a
# shell expansion ($OUT/x, ${root}/x), then at least two names.
_ABSOLUTE = re.compile(r"(?<![\w.:/~$})\]])/[\w.@+-]+(?:/[\w.@+$-]*)+")


def _below(path: str, root: str) -> str | None:
  """`path` relative to `root` ("." for root itself), or None when it is outside."""
  if root == os.sep:
    return None  # below "/" is everything: no anchor at all
  relative = os.path.relpath(path, root)
  return None if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


def portable_path(path: str | os.PathLike) -> str:
  """`path` as a record (a saved config.gin, a result, a command) names it, the same on every machine:
  - a path inside the repository (the folder holding the lora_hyper package) is relative to it;
  - else one under the folder named by $WORKDIR, when set, is WORKDIR/REST;
  - else one inside the current directory is relative to it;
  - any other absolute path is WORKDIR/ followed by what lies below its scratch root: /tmp or
    /var/tmp, else its first two folders (/data/runs/x/y -> WORKDIR/x/y, /mnt/u/x -> WORKDIR/x);
    a path of two names or fewer keeps its last one.
  A relative path, a URL (gs://...) and a system folder (/usr, /dev, ...) are left as they are."""
  text = os.fspath(path)
  if is_url(text) or not os.path.isabs(text):
    return text
  text = os.path.normpath(text)
  names = Path(text).parts[1:]
  if names and names[0] in _SYSTEM:
    return text
  relative = _below(text, str(REPOSITORY))
  if relative is not None:
    return relative
  workdir = os.environ.get("WORKDIR")
  if workdir and os.path.isabs(workdir):
    relative = _below(text, os.path.normpath(workdir))
    if relative is not None:
      return "WORKDIR" if relative == "." else f"WORKDIR/{relative}"
  relative = _below(text, os.getcwd())
  if relative is not None:
    return relative
  scratch = 1 if names[:1] == ("tmp",) else 2  # /var/tmp is two folders too
  return "/".join(["WORKDIR", *(names[scratch:] or names[-1:])])


def portable_text(text: str) -> str:
  """`text` with every absolute path in it made portable (`portable_path`): a gin config, a command,
  a markdown body. What is not an absolute path (relative paths, URLs, $VAR/x) is left alone."""
  portable = lambda path: portable_path(path) + ("/" if path.endswith("/") else "")  # a folder stays one
  return _ABSOLUTE.sub(lambda m: portable(m.group()), text)


def _shell_quoted(arg: str) -> str:
  """`arg` as a shell reads it back; in double quotes when it holds single quotes only (a gin binding
  `a.b = 'x'`), as a user types it."""
  if "'" in arg and not any(c in arg for c in '"$`\\!'):
    return f'"{arg}"'
  return shlex.quote(arg)


def portable_command(argv: list[str] | tuple[str, ...]) -> str:
  """A command line as a record names it: each argument portable, also the paths inside one
  (`label=/abs/x`, a gin binding `a.b = '/abs/x'`), then shell-quoted."""
  return " ".join(_shell_quoted(portable_text(a)) for a in argv)


def portable_record(value: Any) -> Any:
  """A JSON-like record with `portable_text` applied to every string in it, keys included."""
  if isinstance(value, str):
    return portable_text(value)
  if isinstance(value, dict):
    return {portable_record(k): portable_record(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [portable_record(v) for v in value]
  return value


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
