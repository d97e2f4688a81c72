"""Training under faults: a damaged checkpoint stops with the remedy (or, when asked, the run goes back
to the step before it and finishes as a straight run would), a diverging run names its step and keeps
its checkpoints and a strict-JSON metrics file, a killed save's leftovers go, and a SIGKILL at a
random moment costs nothing but the steps since the last checkpoint."""

import io
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lora_hyper.data import pipeline
from lora_hyper.errors import CheckpointError, NonFiniteLossError
from lora_hyper.training import checkpointing, metrics, trainer
from lora_hyper.training.optimizer import OptimizerConfig

import xla_flags
from training.fakes import qa_records, tiny_base

TINY_RUN = Path(__file__).parents[1] / "training" / "tiny_run.py"
# The tiny run of tests/training/trainer_test.py: the session's compilation cache may already hold its programs.
SHAPES = pipeline.DocExampleShapes(num_chunks=2, student_len=48, teacher_len=72, answer_len=4)
OPT = OptimizerConfig(learning_rate=3e-3, warmup_steps=1, total_steps=6)
OVERRIDES = {"chunk_len": 16, "max_chunks": 2, "experimental": {"normalize_features": True, "center_momentum": 0.9}}


def _train(workdir, **kw):
  args = dict(workdir=str(workdir), data=qa_records(64), objective="d2l_kl", hypernetwork="d2l_tiny",
              hyper_overrides=OVERRIDES, global_batch_size=8, steps=4, optimizer=OPT, doc_shapes=SHAPES,
              save_every=2, log_every=1, loaded_base=tiny_base(), mesh_shape=(2, 1, 1))
  return trainer.train(**{**args, **kw})


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """A 4-step run saved at steps 1 (orbax saves a first step), 2 and 4: (its workdir, its result).
  Tests damage copies of it."""
  workdir = tmp_path_factory.mktemp("straight")
  return workdir, _train(workdir)


def _copy(straight, tmp_path) -> Path:
  return Path(shutil.copytree(straight[0], tmp_path / "run"))


def _data_files(workdir: Path, step: int) -> list[Path]:
  """The array data files of a step's state. All of them: which ones a restore reads (a process's
  own, or the copies orbax merges them into) is orbax's business."""
  files = [p for p in (workdir / "checkpoints" / str(step) / "state").rglob("*") if p.parent.name == "d"]
  assert files
  return files


def _files(workdir: Path) -> dict[str, int]:
  return {str(p.relative_to(workdir)): p.stat().st_size for p in (workdir / "checkpoints").rglob("*") if p.is_file()}


# A failed tensorstore read can leave a callback for orbax's event loop after it closed: its noise, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_truncated_checkpoint_stops_with_the_remedy_and_deletes_nothing(straight, tmp_path):
  workdir = _copy(straight, tmp_path)
  for damaged in _data_files(workdir, 4):
    damaged.write_bytes(damaged.read_bytes()[:damaged.stat().st_size // 2])
  before = _files(workdir)
  with pytest.raises(CheckpointError, match=r"checkpoint step 4 .* cannot be restored[\s\S]*Nothing was deleted; "
                                            r"to resume from step 2, rerun with resume_from_previous=True "
                                            r"\(--resume-from-previous\) or move step 4's folder") as caught:
    _train(workdir)
  assert "TensorStore(" not in str(caught.value) and len(str(caught.value)) < 1000  # the cause, not a spec dump
  assert _files(workdir) == before


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_overwritten_bytes_are_caught_and_resuming_from_the_previous_step_ends_as_the_straight_run(
    straight, tmp_path, capsys):
  workdir = _copy(straight, tmp_path)
  for damaged in _data_files(workdir, 4):
    data = bytearray(damaged.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])  # same size, other bytes
    damaged.write_bytes(bytes(data))
  before = _files(workdir)
  with pytest.raises(CheckpointError, match=r"checkpoint step 4 .* cannot be restored[\s\S]*resume from step 2"):
    _train(workdir)
  assert _files(workdir) == before

  resumed = _train(workdir, resume_from_previous=True)
  out = capsys.readouterr().out
  assert "[lora-hyper] resuming from step 2: step 4 is unreadable (" in out
  assert f"[lora-hyper] resumed from step 2 of {workdir}" in out
  assert resumed.step == 4 and not resumed.preempted
  _assert_same(resumed.variables, straight[1].variables)  # exactly the run that never broke
  assert resumed.metrics["loss"] == straight[1].metrics["loss"]
  # Its save of step 4 replaced the damaged one: a plain rerun restores it.
  again = _train(workdir)
  assert f"[lora-hyper] resumed from step 4 of {workdir}" in capsys.readouterr().out
  _assert_same(again.variables, straight[1].variables)


def test_leftovers_of_an_interrupted_save_are_removed_at_start(straight, tmp_path, capsys):
  workdir = _copy(straight, tmp_path)
  leftover = workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1700000000"
  (leftover / "state").mkdir(parents=True)
  (leftover / "state" / "partial").write_bytes(b"\0" * 100)
  result = _train(workdir)  # nothing left to train: restores step 4
  assert result.step == 4 and not leftover.exists()
  out = capsys.readouterr().out
  assert "[lora-hyper] removed 1 unfinished checkpoint save(s)" in out and leftover.name in out
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == sorted(
      p.name for p in (straight[0] / "checkpoints").iterdir())


def _grain_data():
  return iter(grain.MapDataset.range(100).to_iter_dataset())


def test_arrays_that_differ_from_their_digest_are_refused_and_a_later_save_replaces_them(tmp_path, capsys):
  """Step 4's arrays swapped for step 2's: a checkpoint orbax reads without complaint, with the wrong numbers."""
  mgr = checkpointing.manager(tmp_path, save_every=1, keep=3)
  for step in (2, 4):
    checkpointing.save(mgr, step, {"w": jnp.full(1000, float(step)), "n": jnp.int32(step)}, _grain_data())
  mgr.close()
  shutil.rmtree(tmp_path / "4" / "state")
  shutil.copytree(tmp_path / "2" / "state", tmp_path / "4" / "state")
  target = checkpointing.abstract_like({"w": jnp.zeros(1000), "n": jnp.int32(0)})
  mgr = checkpointing.manager(tmp_path, save_every=1, keep=3)
  with pytest.raises(CheckpointError, match=r"checkpoint step 4 .*: its bytes changed on disk after the save: "
                                            r"\['n'\], \['w'\] differ from the saved digest\nNothing was deleted"):
    checkpointing.restore(mgr, target, _grain_data())
  step, state = checkpointing.restore(mgr, target, _grain_data(), resume_from_previous=True)
  assert step == 2 and float(state["w"][0]) == 2.0
  assert "[lora-hyper] resuming from step 2: step 4 is unreadable (its bytes changed" in capsys.readouterr().out
  # Out of the manager's listing, still on disk: saves after step 2 proceed, and the save of step 4 replaces it.
  assert mgr.all_steps() == [2] and (tmp_path / "4").exists()
  assert checkpointing.save(mgr, 3, state, _grain_data())
  assert checkpointing.save(mgr, 4, {"w": jnp.full(1000, 4.5), "n": jnp.int32(4)}, _grain_data())
  mgr.close()
  step, state = checkpointing.restore(checkpointing.manager(tmp_path, save_every=1, keep=3), target, _grain_data())
  assert step == 4 and float(state["w"][0]) == 4.5


def test_a_state_with_nan_is_never_saved_and_never_restored(tmp_path):
  mgr = checkpointing.manager(tmp_path, save_every=1, keep=3)
  checkpointing.save(mgr, 1, {"w": jnp.ones(3)}, _grain_data())
  with pytest.raises(NonFiniteLossError, match=r"step 2 holds NaN or infinite values in \['w'\]; it was not saved "
                                               r"and checkpoint step 1 is kept"):
    checkpointing.save(mgr, 2, {"w": jnp.array([1.0, jnp.nan, 2.0])}, _grain_data())
  assert mgr.all_steps() == [1]
  # One written by another tool (or before digests were saved) is caught by the finiteness check alone.
  mgr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave({"w": jnp.array([jnp.inf, 0.0, 0.0])}),
                                      data=grain.checkpoint.CheckpointSave(_grain_data())))
  mgr.wait_until_finished()
  with pytest.raises(CheckpointError, match=r"step 3 .*: it holds NaN or infinite values in \['w'\]"):
    checkpointing.restore(mgr, checkpointing.abstract_like({"w": jnp.zeros(3)}), _grain_data())


def _strict_json(line: str):
  def refuse(constant):
    raise ValueError(f"not JSON: {constant}")
  return json.loads(line, parse_constant=refuse)


def test_a_diverging_run_names_the_step_and_keeps_its_checkpoints_and_strict_json_metrics(tmp_path):
  too_high = OptimizerConfig(learning_rate=1e30, warmup_steps=1, total_steps=6)
  with pytest.raises(NonFiniteLossError, match=r"at step (\d+); it was not saved and the last checkpoint, step "
                                               r"\d+ .* is kept[\s\S]*learning rate too high") as caught:
    _train(tmp_path, optimizer=too_high, save_every=1, steps=6)
  failed = int(str(caught.value).split(" at step ")[1].split(";")[0])
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
  assert saved == list(range(max(1, failed - 3), failed))  # every step before it, up to keep_checkpoints=3
  rows = [_strict_json(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == list(range(1, failed + 1))
  assert rows[-1]["loss"] is None or rows[-1]["grad_norm"] is None  # NaN or inf, written as null
  assert "bfloat16 overflow (try compute_dtype='float32')" in str(trainer._diverged("loss became nan", OPT, "bfloat16"))


def test_metrics_lines_stay_strict_json_when_values_are_not_finite(tmp_path):
  stream = io.StringIO()
  with metrics.MetricsLogger(tmp_path, total_steps=2, log_every=1, stream=stream) as logger:
    logger.log(1, {"loss": 1.5, "grad_norm": float("inf")})
    logger.log(2, {"loss": float("nan"), "grad_norm": float("-inf")})
  rows = [_strict_json(line) for line in (tmp_path / metrics.JSONL_NAME).read_text().splitlines()]
  assert [(r["loss"], r["grad_norm"]) for r in rows] == [(1.5, None), (None, None)]
  assert "loss=nan grad_norm=-inf" in stream.getvalue()  # the console still says which


def test_preempted_means_steps_remain_and_the_rerun_ends_as_the_straight_run(straight, tmp_path, monkeypatch):
  calls = itertools.count(1)
  monkeypatch.setattr(trainer, "_agree", lambda flag: next(calls) >= 3)  # a SIGTERM during step 3, then always
  stopped = _train(tmp_path)
  assert (stopped.step, stopped.preempted) == (3, True) and (tmp_path / "checkpoints" / "3").is_dir()
  finished = _train(tmp_path)  # signalled during its last step: done, not preempted
  assert (finished.step, finished.preempted) == (4, False)
  _assert_same(finished.variables, straight[1].variables)


def _run_tiny(workdir, steps, sleep=0.0, save_every=1000, wait=True):
  env = {**os.environ, "XLA_FLAGS": xla_flags.for_devices(2)}
  cmd = [sys.executable, str(TINY_RUN), str(workdir), str(steps), str(sleep), str(save_every)]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  if not wait:
    return proc
  out, err = proc.communicate(timeout=300)
  return proc.returncode, out, err


def _result(out: str) -> dict[str, str]:
  line = next(l for l in out.splitlines() if l.startswith("RESULT"))
  return dict(kv.split("=", 1) for kv in line.split()[1:])


def test_sigkill_at_a_random_moment_then_a_rerun_ends_as_the_straight_run(tmp_path):
  steps, save_every = 8, 2
  rc, out, err = _run_tiny(tmp_path / "straight", steps, save_every=save_every)
  assert rc == 0, err[-3000:]
  straight = _result(out)
  proc = _run_tiny(tmp_path / "killed", steps, sleep=0.3, save_every=save_every, wait=False)
  first = tmp_path / "killed" / "checkpoints" / str(save_every)
  deadline = time.time() + 240
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert first.exists(), proc.communicate()[1][-3000:]
  # Step 2's checkpoint is there; six steps slowed to 0.3 s each, and their saves, remain: the kill lands among them.
  time.sleep(random.Random(0).uniform(0.0, 1.5))
  assert proc.poll() is None, "the run ended before the kill"
  proc.kill()
  proc.communicate()
  rc, out, err = _run_tiny(tmp_path / "killed", steps, save_every=save_every)
  assert "Traceback" not in err, err[-3000:]
  if rc == 0:
    assert "[lora-hyper] resumed from step" in out, out
    assert _result(out) == {**straight, "step": str(steps)}  # the same loss and params, bit for bit
  else:  # allowed, but only as one clear line
    assert rc == 1 and "error: " in err and "checkpoint" in err, err[-3000:]
