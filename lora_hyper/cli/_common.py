"""What every command shares: messages, input files, output folders, loading models."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from lora_hyper import files

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped early (SIGTERM), rerun the same command to resume
EXIT_CODES = ("exit codes: 0 done, 1 failed (missing or invalid files, wrong base model, ...), 2 bad usage, "
              f"{EXIT_PREEMPTED} preempted (rerun to resume)")


class UsageError(Exception):
  """Bad command-line input, found after parsing (empty text, an unusable --out): exit code 2."""


def log(message: str) -> None:
  print(f"[lora-hyper] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- argument types


def bounded_number(kind, name: str, low: float | None = None, high: float | None = None, low_open: bool = False):
  """An argparse type: a `kind` number within [low, high] ((low, high] with `low_open`), else exit 2."""

  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be a{'n integer' if kind is int else ' number'}, "
                                       f"got {text!r}") from None
    if (not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low))
        or (high is not None and value > high)):
      bounds = f"{'>' if low_open else '>='} {low:g}" if high is None else (
          f"in {'(' if low_open else '['}{low:g}, {high:g}]")
      raise argparse.ArgumentTypeError(f"{name} must be {bounds}, got {text}")
    return value

  return parse


def positive_int(name: str):
  return bounded_number(int, name, 1)


def non_negative_int(name: str):
  return bounded_number(int, name, 0)


# ----------------------------------------------------------------------------- files


def read_text(item: str, what: str) -> tuple[str, str]:
  """(name, text) of a file path, or of stdin for '-': UTF-8 text that is not empty."""
  if item == "-":
    name, text = "<stdin>", sys.stdin.read()
  else:
    path = Path(item)
    if path.is_dir():
      raise IsADirectoryError(f"{what} {item!r} is a folder, not a file")
    if not path.is_file():
      raise FileNotFoundError(f"{what} file {item!r} does not exist")
    try:
      name, text = path.name, path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"{what} file {item!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
  if not text.strip():
    raise UsageError(f"{what} {name} is empty")
  if "\x00" in text:
    raise UsageError(f"{what} {name} holds NUL bytes: it is not a text file")
  return name, text


def check_output(out: str, writes: set[str], overwrite: bool) -> None:
  """Refuses an --out folder before any work: empty names, files, unwritable places, and folders
  holding anything but what this command writes there (replaced in place), unless `overwrite`."""
  if not out.strip():
    raise UsageError("--out is empty: name the folder to write")
  if files.is_url(out):
    raise UsageError(f"--out {out!r} is a URL: name a local folder")
  path = Path(out)
  if path.exists() and not path.is_dir():
    raise UsageError(f"--out {out!r} is a file, not a folder")
  if path.is_dir():
    others = sorted(p.name for p in path.iterdir() if p.name not in writes)
    if others and not overwrite:
      raise UsageError(f"--out {out!r} holds other files ({', '.join(others[:5])}); choose a new folder, or pass "
                       "--overwrite to write into it anyway")
  existing = next(p for p in (path, *path.absolute().parents) if p.exists())
  if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
    raise UsageError(f"--out {out!r} cannot be written: {str(existing)!r} is not a writable folder")


def add_out_arg(parser: argparse.ArgumentParser, what: str, required: bool = True) -> None:
  parser.add_argument("--out", required=required, default=None, metavar="DIR",
                      help=f"folder to write {what} into: a new or empty folder, or one that holds only what this "
                           "command writes (replaced); anything else needs --overwrite")
  parser.add_argument("--overwrite", action="store_true",
                      help="write into --out even if it holds other files (those are left as they are)")


# ----------------------------------------------------------------------------- models


def load_base(source: str | None, dtype: str):
  from lora_hyper.model import base_model

  start = time.perf_counter()
  model = base_model.load_base_model(source, dtype=dtype, log=log)
  log(f"loaded base model {model.name} in {time.perf_counter() - start:.1f}s")
  return model


def hypernetwork_dir(arg: str | None, kind: str) -> str:
  """--hypernetwork: a folder, else the name of a shipped hypernetwork (of `kind` first, then of the other
  kind: eval takes either); none: `kind`'s default. Checked before the (slow) base model loads."""
  from lora_hyper import pretrained
  from lora_hyper.hypernetworks import saved

  if arg is None:
    return str(saved.shipped(kind))
  if Path(arg).exists() or files.is_url(arg):
    return arg
  for shipped_kind in sorted(pretrained.SHIPPED, key=lambda k: k != kind):
    if arg in pretrained.SHIPPED[shipped_kind]:
      return str(saved.shipped(shipped_kind, arg))
  return arg  # loading it says it is missing


def load_hypernetwork(folder: str, kind: str | None, base):
  """The hypernetwork in `folder`, checked against `kind` (None: either) and `base`."""
  from lora_hyper.hypernetworks import saved

  start = time.perf_counter()
  hyper = saved.load_hypernetwork(folder, base)
  if kind is not None and hyper.kind != kind:
    raise ValueError(f"{folder} holds a {hyper.kind} hypernetwork; this command needs a {kind} one")
  log(f"loaded {hyper.kind} hypernetwork {folder} in {time.perf_counter() - start:.1f}s")
  return hyper
