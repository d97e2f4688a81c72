"""Checkpoints: a damaged latest checkpoint stops with a clear error and deletes nothing."""

import shutil

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper.training import checkpointing


def _data():
  return iter(grain.MapDataset.range(100).to_iter_dataset())


def test_round_trip_restores_state_and_data_position(tmp_path):
  data = _data()
  mgr = checkpointing.manager(tmp_path, save_every=1, keep=2)
  next(data), next(data)
  checkpointing.save(mgr, 2, {"w": jnp.arange(3.0)}, data)
  mgr.close()
  fresh = _data()
  step, state = checkpointing.restore(checkpointing.manager(tmp_path, save_every=1, keep=2),
                                      checkpointing.abstract_like({"w": jnp.zeros(3)}), fresh)
  assert step == 2 and next(fresh) == 2
  np.testing.assert_array_equal(state["w"], [0.0, 1.0, 2.0])


def test_damaged_latest_checkpoint_names_itself_and_the_way_back(tmp_path):
  data = _data()
  mgr = checkpointing.manager(tmp_path, save_every=1, keep=3)
  checkpointing.save(mgr, 2, {"w": jnp.ones(3)}, data)
  checkpointing.save(mgr, 4, {"w": jnp.ones(3)}, data)
  mgr.close()
  shutil.rmtree(tmp_path / "4" / "state")
  for leftover in (tmp_path / "4").iterdir():  # keep the step folder, lose its contents
    if leftover.is_file() and leftover.name != "_CHECKPOINT_METADATA":
      leftover.unlink()
  (tmp_path / "4" / "state").mkdir()
  mgr = checkpointing.manager(tmp_path, save_every=1, keep=3)
  with pytest.raises(ValueError, match=r"checkpoint step 4 .* cannot be restored[\s\S]*resume from step 2"):
    checkpointing.restore(mgr, checkpointing.abstract_like({"w": jnp.zeros(3)}), _data())
  assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4"]  # nothing deleted


def test_gs_workdirs_keep_their_scheme_and_local_ones_become_absolute(tmp_path, monkeypatch):
  """pathlib would turn gs://bucket/run into <cwd>/gs:/bucket/run, a folder local to each host."""
  assert str(checkpointing.checkpoint_dir("gs://bucket/run")) == "gs://bucket/run/checkpoints"
  monkeypatch.chdir(tmp_path)
  assert str(checkpointing.checkpoint_dir("run")) == str(tmp_path / "run" / "checkpoints")
  given = []
  monkeypatch.setattr(checkpointing, "Manager", lambda directory, **kwargs: given.append(directory))
  monkeypatch.setattr(checkpointing, "_remove_unfinished_saves", lambda directory: None)  # it would reach GCS
  checkpointing.manager(checkpointing.checkpoint_dir("gs://bucket/run"), save_every=1, keep=1)
  assert [str(d) for d in given] == ["gs://bucket/run/checkpoints"]


def test_one_process_needs_no_shared_workdir_check(tmp_path):
  checkpointing.check_shared_workdir(tmp_path / "run")
  assert not (tmp_path / "run").exists()
