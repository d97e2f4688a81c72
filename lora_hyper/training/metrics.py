"""Training metrics: TensorBoard event files, a JSON-lines copy, and console progress.

Only the main process writes anything, so every worker of a pod slice can call `log` alike.
`<logdir>/metrics.jsonl` holds one object per `log` call (`step`, `elapsed_s`, the metrics and
`tokens_per_s`) for plotting without TensorBoard; a NaN or infinite value is written as null, so
every line is strict JSON (the console and TensorBoard still show nan or inf). `logdir` may be a
local folder or a URL (gs://bucket/run/logs). The console gets a tqdm bar when stderr is a
terminal and a plain line every `log_every` steps otherwise (job logs, `nohup`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from types import TracebackType
from typing import Any, Mapping, TextIO

import tqdm
from etils import epath

from lora_hyper import files
from lora_hyper.training import distributed

JSONL_NAME = "metrics.jsonl"
TOKENS_PER_S = "tokens_per_s"
# Metrics shown in the bar's postfix (the full set is in the files); short labels keep it narrow.
_POSTFIX_LABELS = {"loss": "loss", "learning_rate": "lr", TOKENS_PER_S: "tok/s"}


def _format(name: str, value: float) -> str:
  return f"{value:.0f}" if name == TOKENS_PER_S else f"{value:.4g}"


class MetricsLogger:
  """Logs per-step scalars to `logdir`; use as a context manager or call `close()`.

  Args:
    logdir: a folder (created if absent; a local path or a URL such as gs://bucket/run/logs) for the
      event file and `metrics.jsonl`.
    total_steps: the step the run ends at, for the bar and the plain lines.
    log_every: plain console lines are printed every this many steps (and at the last step).
    initial_step: the step a resumed run starts from, so the bar does not restart at 0.
    stream: where progress goes (default: stderr).
  """

  def __init__(self, logdir: str | os.PathLike, total_steps: int, log_every: int = 10,
               initial_step: int = 0, stream: TextIO | None = None):
    if log_every < 1:
      raise ValueError(f"log_every must be >= 1, got {log_every}")
    self.logdir = epath.Path(logdir)
    self.total_steps = total_steps
    self.log_every = log_every
    self._stream = sys.stderr if stream is None else stream
    self._enabled = distributed.is_main_process()
    self._start = time.perf_counter()
    self._last_time: float | None = None  # of the previous `log` call
    self._last_step = initial_step
    self._writer = self._jsonl = self._bar = None
    if self._enabled:
      self._open(initial_step)

  def _open(self, initial_step: int) -> None:
    self.logdir.mkdir(parents=True, exist_ok=True)
    self._writer = _summary_writer_class()(os.fspath(self.logdir))
    self._jsonl = _JsonLines(self.logdir / JSONL_NAME)
    if self._stream.isatty():
      self._bar = tqdm.tqdm(total=self.total_steps, initial=initial_step, file=self._stream,
                            unit="step", dynamic_ncols=True)

  def _tokens_per_s(self, tokens: int | None, now: float) -> float | None:
    """Throughput since the previous call; None on the first call, which has no reference time."""
    last, self._last_time = self._last_time, now
    if tokens is None or last is None or now <= last:
      return None
    return tokens / (now - last)

  def log(self, step: int, metrics: Mapping[str, Any], tokens: int | None = None) -> dict[str, float]:
    """Records `metrics` at `step` (steps completed so far).

    `tokens` counts the tokens processed since the previous call; with the wall time since that
    call it gives `tokens_per_s`. Values may be JAX scalars: `float()` fetches them, which also
    waits for the step, so the wall time measures finished work. Returns what was recorded.
    """
    now = time.perf_counter()
    scalars = {name: float(value) for name, value in metrics.items()}
    rate = self._tokens_per_s(tokens, now)
    if rate is not None:
      scalars[TOKENS_PER_S] = rate
    if self._enabled:
      self._write_files(step, scalars, now - self._start)
      if step % self.log_every == 0 or step == self.total_steps:
        self._jsonl.sync()
      self._show(step, scalars)
    self._last_step = step
    return scalars

  def _write_files(self, step: int, scalars: Mapping[str, float], elapsed_s: float) -> None:
    for name, value in scalars.items():
      self._writer.add_scalar(name, value, step)
    # json.dumps would write bare NaN / Infinity, which strict parsers (and jq) reject.
    finite = {name: value if math.isfinite(value) else None for name, value in scalars.items()}
    record = {"step": step, "elapsed_s": round(elapsed_s, 3), **finite}
    self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")

  def _show(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._bar is not None:
      postfix = {label: _format(name, scalars[name]) for name, label in _POSTFIX_LABELS.items() if name in scalars}
      self._bar.set_postfix(postfix, refresh=False)
      self._bar.update(step - self._last_step)
    elif step % self.log_every == 0 or step == self.total_steps:
      width = len(str(self.total_steps))
      values = " ".join(f"{name}={_format(name, value)}" for name, value in scalars.items())
      print(f"[lora-hyper] step {step:>{width}}/{self.total_steps} {values}", file=self._stream, flush=True)

  def close(self) -> None:
    """Flushes and closes the files; safe to call twice."""
    for resource in (self._bar, self._writer, self._jsonl):
      if resource is not None:
        resource.close()
    self._writer = self._jsonl = self._bar = None
    self._enabled = False

  def __enter__(self) -> MetricsLogger:
    return self

  def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
               tb: TracebackType | None) -> None:
    self.close()


class _JsonLines:
  """metrics.jsonl. A local file is appended to and flushed at every line, so a crashed run keeps
  every line it logged. Object stores (gs://) cannot append: there the lines are kept, and the file
  (with the lines an earlier run wrote) is rewritten whole at each `sync`, as tensorboardX does with
  its event files."""

  def __init__(self, path: epath.Path):
    self.path = path
    self._file = path.open("a", encoding="utf-8") if appends_in_place(path) else None
    self._lines = [] if self._file is not None or not path.exists() else [path.read_text(encoding="utf-8")]
    self._unsynced = False

  def write(self, line: str) -> None:
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
    else:
      self._lines.append(line)
      self._unsynced = True

  def sync(self) -> None:
    if self._unsynced:
      self.path.write_text("".join(self._lines), encoding="utf-8")
      self._unsynced = False

  def close(self) -> None:
    self.sync()
    if self._file is not None:
      self._file.close()


def appends_in_place(path: str | os.PathLike) -> bool:
  """Whether files at `path` can be appended to: local ones, not objects behind a URL (gs://)."""
  return not files.is_url(path)


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported with torch hidden.

  tensorboardX imports torch whenever it is installed (only to accept torch tensors, which we
  never pass); hiding it keeps the library free of torch and saves seconds at start-up.
  """
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX handles
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hide:
      del sys.modules["torch"]
  return SummaryWriter
