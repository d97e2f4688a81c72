"""The failures lora-hyper expects and names: bad or damaged files, training that cannot go on.

The CLI turns these (and ValueError, FileNotFoundError, OSError from the library) into one line on
stderr and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LoraHyperError(Exception):
  """An expected failure whose message says what went wrong and what to do."""


class CorruptFileError(LoraHyperError, ValueError):
  """A file the library reads is truncated, overwritten or holds non-finite values."""


class CheckpointError(LoraHyperError, ValueError):
  """The latest checkpoint of a run cannot be restored; nothing was deleted."""


class NonFiniteLossError(LoraHyperError, FloatingPointError):
  """Training produced a NaN or infinite loss; the last good checkpoint is kept."""
