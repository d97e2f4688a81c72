"""experiments.common: training_curve (one run's loss, or the stages of one run end to end), labelled
arguments and logged metrics read back."""

import argparse
import json

import pytest

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


def test_labelled_arguments_keep_their_order_and_reject_a_value_without_a_label(capsys):
  parser = argparse.ArgumentParser()
  assert list(common.labelled(parser, ["b=/x", "a=/y=z"], "--run", "LABEL=DIR").items()) == [("b", "/x"), ("a", "/y=z")]
  with pytest.raises(SystemExit):
    common.labelled(parser, ["b=/x", "/y"], "--run", "LABEL=DIR")
  assert "--run takes LABEL=DIR" in capsys.readouterr().err


def test_read_metrics_skips_blank_lines(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.5}\n')
  assert common.read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]


def test_results_name_their_folders_portably(tmp_path, monkeypatch):
  """The command, the JSON and the markdown of a result: a scratch folder as WORKDIR/..., never as it is here."""
  monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
  monkeypatch.delenv("WORKDIR", raising=False)
  monkeypatch.setattr("sys.argv", ["experiments/qa/by_fact.py", "--hypernetwork", "/work/runs/qa/s1/hypernetwork",
                                   "--run", "k=/tmp/qa/k"])
  command = ".venv/bin/python -m experiments.qa.by_fact --hypernetwork WORKDIR/qa/s1/hypernetwork --run k=WORKDIR/qa/k"
  assert common.command() == command
  written = json.loads(common.write_json("r", {"hypernetwork": {"path": "/tmp/qa/k"}, "runs": ["/tmp/a/b"]}).read_text())
  assert (written["command"], written["hypernetwork"], written["runs"]) == (command, {"path": "WORKDIR/qa/k"},
                                                                           ["WORKDIR/a/b"])
  text = common.write_markdown("r", "R", "scored `/work/scratch/qa/k/hypernetwork`\n").read_text()
  assert f"Produced by `{command}`" in text and "scored `WORKDIR/qa/k/hypernetwork`" in text
