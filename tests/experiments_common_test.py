"""experiments.common.training_curve: one run's loss, or the stages of one run end to end."""

import json

from experiments import common


def _log(path, losses):
  path.write_text("".join(json.dumps({"step": i + 1, "loss": x}) + "\n" for i, x in enumerate(losses)))
  return path


def test_stages_are_laid_end_to_end_and_marked(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
  first, second = _log(tmp_path / "a.jsonl", [3.0, 2.0]), _log(tmp_path / "b.jsonl", [1.5, 1.0, 0.5])
  curve = common.training_curve([first, second], "staged", window=2)
  assert curve["step"] == [1, 2, 3, 4, 5] and curve["loss"] == [3.0, 2.0, 1.5, 1.0, 0.5]
  assert curve["stage_starts"] == [0, 2]
  assert curve["loss_smoothed"] == [3.0, 2.5, 1.5, 1.25, 0.75]  # the mean restarts with the second stage
  assert json.loads((tmp_path / "results" / "staged.json").read_text())["step"] == curve["step"]
  assert (tmp_path / "results" / "staged.png").stat().st_size > 0


def test_one_run_keeps_its_own_steps(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
  curve = common.training_curve(_log(tmp_path / "a.jsonl", [2.0, 1.0]), "single")
  assert curve["step"] == [1, 2] and "stage_starts" not in curve and curve["source"].endswith("a.jsonl")
