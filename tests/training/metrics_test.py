"""MetricsLogger: event files TensorBoard can read, metrics.jsonl, tokens/s, console output."""

from __future__ import annotations

import io
import json
import pathlib
import struct
import time

import pytest
from tensorboardX.crc32c import crc32c
from tensorboardX.proto import event_pb2

from lora_hyper.training import distributed, metrics


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_records(path: pathlib.Path) -> list[bytes]:
  """TFRecord framing: u64 length, masked crc32c of it, data, masked crc32c of the data."""
  records, data = [], path.read_bytes()
  offset = 0
  while offset < len(data):
    header = data[offset:offset + 8]
    (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[offset + 8:offset + 12])
    assert header_crc == _masked_crc(header)
    body = data[offset + 12:offset + 12 + length]
    (body_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
    assert body_crc == _masked_crc(body)
    records.append(body)
    offset += 16 + length
  return records


def _read_scalars(logdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} from the single event file in `logdir`."""
  (path,) = logdir.glob("events.out.tfevents.*")
  scalars: dict[str, list[tuple[int, float]]] = {}
  for record in _read_records(path):
    event = event_pb2.Event.FromString(record)
    for value in event.summary.value:
      scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


class _Clock:
  """A settable perf_counter, so tokens/s has exact expected values."""

  def __init__(self):
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


class _Tty(io.StringIO):

  def isatty(self) -> bool:
    return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
  fake = _Clock()
  monkeypatch.setattr(time, "perf_counter", fake)
  return fake


def _log_three_steps(logger: metrics.MetricsLogger, clock: _Clock) -> list[dict[str, float]]:
  recorded = []
  for step, now in ((1, 1.0), (2, 1.5), (3, 2.5)):
    clock.now = now
    recorded.append(logger.log(step, {"loss": 4.0 - step, "learning_rate": 1e-3 * step}, tokens=100))
  return recorded


def test_event_file_and_jsonl(tmp_path: pathlib.Path, clock: _Clock):
  with metrics.MetricsLogger(tmp_path, total_steps=3, stream=io.StringIO()) as logger:
    recorded = _log_three_steps(logger, clock)

  # tokens/s: none on the first call, then 100 tokens over 0.5 s and over 1 s.
  assert [r.get(metrics.TOKENS_PER_S) for r in recorded] == [None, 200.0, 100.0]
  scalars = _read_scalars(tmp_path)
  assert set(scalars) == {"loss", "learning_rate", metrics.TOKENS_PER_S}
  assert scalars["loss"] == [(1, 3.0), (2, 2.0), (3, 1.0)]
  assert [step for step, _ in scalars["learning_rate"]] == [1, 2, 3]
  assert [v for _, v in scalars["learning_rate"]] == pytest.approx([1e-3, 2e-3, 3e-3])
  assert scalars[metrics.TOKENS_PER_S] == [(2, 200.0), (3, 100.0)]

  lines = [json.loads(line) for line in (tmp_path / metrics.JSONL_NAME).read_text().splitlines()]
  assert lines == [
      {"step": 1, "elapsed_s": 1.0, "loss": 3.0, "learning_rate": 1e-3},
      {"step": 2, "elapsed_s": 1.5, "loss": 2.0, "learning_rate": 2e-3, "tokens_per_s": 200.0},
      {"step": 3, "elapsed_s": 2.5, "loss": 1.0, "learning_rate": 3e-3, "tokens_per_s": 100.0},
  ]


def test_resumed_run_appends_to_jsonl(tmp_path: pathlib.Path, clock: _Clock):
  with metrics.MetricsLogger(tmp_path, total_steps=3, stream=io.StringIO()) as logger:
    logger.log(1, {"loss": 1.0})
  with metrics.MetricsLogger(tmp_path, total_steps=3, initial_step=1, stream=io.StringIO()) as logger:
    logger.log(2, {"loss": 0.5})
  steps = [json.loads(line)["step"] for line in (tmp_path / metrics.JSONL_NAME).read_text().splitlines()]
  assert steps == [1, 2]


def test_plain_lines_every_n_steps_when_not_a_tty(tmp_path: pathlib.Path, clock: _Clock):
  stream = io.StringIO()
  with metrics.MetricsLogger(tmp_path, total_steps=3, log_every=2, stream=stream) as logger:
    _log_three_steps(logger, clock)
  # Step 2 by log_every, step 3 because it is the last.
  assert stream.getvalue().splitlines() == [
      "[lora-hyper] step 2/3 loss=2 learning_rate=0.002 tokens_per_s=200",
      "[lora-hyper] step 3/3 loss=1 learning_rate=0.003 tokens_per_s=100",
  ]


def test_progress_bar_on_a_tty(tmp_path: pathlib.Path, clock: _Clock):
  stream = _Tty()
  with metrics.MetricsLogger(tmp_path, total_steps=3, stream=stream) as logger:
    _log_three_steps(logger, clock)
  final = stream.getvalue().split("\r")[-1]
  assert "3/3" in final
  assert "loss=1, lr=0.003, tok/s=100" in final
  assert "[lora-hyper]" not in stream.getvalue()


def test_only_the_main_process_writes(tmp_path: pathlib.Path, clock: _Clock,
                                      monkeypatch: pytest.MonkeyPatch):
  monkeypatch.setattr(distributed, "is_main_process", lambda: False)
  stream = io.StringIO()
  logdir = tmp_path / "run"
  with metrics.MetricsLogger(logdir, total_steps=3, log_every=1, stream=stream) as logger:
    recorded = _log_three_steps(logger, clock)
  assert recorded[-1][metrics.TOKENS_PER_S] == 100.0
  assert not logdir.exists()
  assert stream.getvalue() == ""


def test_a_url_logdir_stays_a_url(monkeypatch: pytest.MonkeyPatch):
  monkeypatch.setattr(distributed, "is_main_process", lambda: False)  # writes nothing: no GCS needed
  with metrics.MetricsLogger("gs://bucket/run/logs", total_steps=1, stream=io.StringIO()) as logger:
    assert str(logger.logdir) == "gs://bucket/run/logs"
  assert metrics.appends_in_place("run/logs") and not metrics.appends_in_place("gs://bucket/run/logs")


def test_where_files_cannot_be_appended_to_the_jsonl_is_rewritten_whole(tmp_path: pathlib.Path, clock: _Clock,
                                                                        monkeypatch: pytest.MonkeyPatch):
  """gs:// objects cannot be appended to: the lines are kept, and the file (with an earlier run's
  lines) is rewritten every log_every steps and at the end."""
  with metrics.MetricsLogger(tmp_path, total_steps=4, stream=io.StringIO()) as logger:
    logger.log(1, {"loss": 1.0})
  monkeypatch.setattr(metrics, "appends_in_place", lambda path: False)
  steps = lambda: [json.loads(line)["step"] for line in (tmp_path / metrics.JSONL_NAME).read_text().splitlines()]
  with metrics.MetricsLogger(tmp_path, total_steps=4, log_every=2, initial_step=1, stream=io.StringIO()) as logger:
    logger.log(2, {"loss": 0.5})
    assert steps() == [1, 2]
    logger.log(3, {"loss": 0.25})
    assert steps() == [1, 2]  # until the next multiple of log_every
  assert steps() == [1, 2, 3]
