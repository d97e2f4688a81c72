"""eval_sweep without a model: a scorer stands in for the evaluator, so what is tested is the grid,
the checks made before any compute, the point files a killed sweep leaves and what a rerun redoes."""

import json

import gin
import pytest

from lora_hyper import configurables  # noqa: F401  (registers lora_hyper.EvalConfig, eval_sweep)
from lora_hyper.evaluation import evaluator, metrics, study

AXES = {"lora_hyper.EvalConfig.chunk_len": [128, 256, 512], "lora_hyper.EvalConfig.iterative": [False, True]}


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  gin.parse_config("lora_hyper.EvalConfig.metrics = ['exact_match']")
  yield
  gin.clear_config()


class Scorer:
  """Answers as a function of the config; raises (as a kill would stop it) at call number `die_at`."""

  def __init__(self, die_at: int | None = None):
    self.calls, self.die_at = [], die_at

  def __call__(self, config: study.EvalConfig) -> evaluator.Evaluation:
    self.calls.append((config.chunk_len, config.iterative))
    if len(self.calls) == self.die_at:
      raise KeyboardInterrupt
    answer = str(config.chunk_len)
    answers = [{"document": "d", "query": "q", "reference": "256", "group": 64,
                "adapter": {"answer": answer, "exact_match": float(answer == "256")}}]
    report = {"scores": evaluator.mean_scores(answers, ["adapter"], ["exact_match"]),
              "by_group": {"64": evaluator.mean_scores(answers, ["adapter"], ["exact_match"])}}
    return evaluator.Evaluation(report, answers)


def _sweep(out, scorer, axes=AXES):
  return study.eval_sweep(out=str(out), axes=axes, plot_results=False, command="lora-hyper eval --gin_file x.gin",
                          score=scorer)


def _results(out):
  """What the results say, without the times they were made at."""
  summary = json.loads((out / "results.json").read_text())
  table = (out / "results.md").read_text().split("\n", 4)[4]  # after the title and the command line
  return summary["rows"], table, (out / "answers.jsonl").read_text()


def test_metrics_score_needles_as_the_niah_study_does():
  assert metrics.exact_match(" 1,234.\nmore", "1234") == 1.0
  assert metrics.exact_match("12345", "1234") == 0.0
  assert metrics.digit_accuracy("1299", "1234") == 0.5
  assert metrics.digit_accuracy("", "1234") == 0.0
  assert metrics.scores("the red fox", "red fox", ("rouge_l", "contains")) == {"rouge_l": 0.8, "contains": 1.0}
  with pytest.raises(ValueError, match="unknown metric.*'bleu'"):
    metrics.check(("exact_match", "bleu"))


def test_grid_and_point_names():
  points = study.grid(AXES)
  assert len(points) == 6 and points[1] == {"lora_hyper.EvalConfig.chunk_len": 128,
                                            "lora_hyper.EvalConfig.iterative": True}
  assert study.grid({}) == [{}]
  names = {study.point_name(p) for p in points}
  assert len(names) == 6 and study.point_name(points[0]).startswith("chunk_len=128,iterative=False-")
  assert study.point_name({"x.y.hypernetwork": "/a/b c/d2l"}).startswith("hypernetwork=d2l-")


def test_a_killed_sweep_reruns_only_the_points_it_had_not_written(tmp_path):
  killed = Scorer(die_at=4)
  with pytest.raises(KeyboardInterrupt):
    _sweep(tmp_path / "sweep", killed)
  written = sorted(p.name for p in (tmp_path / "sweep" / study.POINTS).glob("*.json"))
  assert len(written) == 3 and not (tmp_path / "sweep" / "results.json").exists()
  before = {n: (tmp_path / "sweep" / study.POINTS / n).read_text() for n in written}

  rerun = Scorer()
  _sweep(tmp_path / "sweep", rerun)
  assert rerun.calls == [(256, True), (512, False), (512, True)]  # the killed point and the two after it
  assert all((tmp_path / "sweep" / study.POINTS / n).read_text() == text for n, text in before.items())
  fresh = Scorer()
  _sweep(tmp_path / "fresh", fresh)
  assert len(fresh.calls) == 6
  assert _results(tmp_path / "sweep") == _results(tmp_path / "fresh")
  rows, table, _ = _results(tmp_path / "fresh")
  assert len(rows) == 6 and "| 256 | True | 64 | 1.000 |" in table

  again = Scorer()
  _sweep(tmp_path / "sweep", again)
  assert again.calls == []  # everything finished: only the results are written again


def test_a_point_written_under_other_settings_stops_the_rerun(tmp_path):
  _sweep(tmp_path, Scorer(), axes={"lora_hyper.EvalConfig.chunk_len": [128]})
  gin.clear_config()
  gin.parse_config("lora_hyper.EvalConfig.metrics = ['digit_accuracy']")
  scorer = Scorer()
  with pytest.raises(study.ConfigError, match=r"written with other settings \(metrics differ\)"):
    _sweep(tmp_path, scorer, axes={"lora_hyper.EvalConfig.chunk_len": [128]})
  assert scorer.calls == []


@pytest.mark.parametrize("axes, message", [
    ({"lora_hyper.EvalConfig.chunk_length": [128]},
     r"sweep axis 'lora_hyper.EvalConfig.chunk_length' is not a gin binding that exists.*doesn.t have a parameter named .chunk_length."),
    ({"lora_hyper.EvalConfg.chunk_len": [128]},
     r"sweep axis 'lora_hyper.EvalConfg.chunk_len' is not a gin binding that exists.*No configurable"),
    ({"lora_hyper.EvalConfig.chunk_len": []}, r"sweep axis 'lora_hyper.EvalConfig.chunk_len' needs a non-empty list"),
    ({"lora_hyper.EvalConfig.chunk_len": [128, 1]}, r"at sweep point .*chunk_len': 1\}: chunk_len must be"),
    ({"lora_hyper.EvalConfig.hypernetwork": ["/nowhere/d2l"]}, r"hypernetwork folder '/nowhere/d2l' does not exist"),
    ({"lora_hyper.EvalConfig.conditions": [["adapter", "oracle"]]}, r"unknown condition\(s\) \['oracle'\]"),
    ({"lora_hyper.EvalConfig.conditions": [["adapter", "lora"]]}, r"lora condition needs lora_hyper.EvalConfig.lora"),
    ({"lora_hyper.EvalConfig.conditions": [["task_lora"]]}, r"task_lora condition needs lora_hyper.EvalConfig.task_loras"),
    ({"lora_hyper.EvalConfig.task_loras": ["/nowhere/oracles"]}, r"task_loras '/nowhere/oracles' does not exist"),
    ({"lora_hyper.EvalConfig.metrics": [["token_accuracy"]], "lora_hyper.EvalConfig.conditions": [["cd_oracle"]]},
     r"cd_oracle score generated answers only, not token_accuracy"),
    ({"lora_hyper.TaskData.shots": [0], "lora_hyper.EvalConfig.conditions": [["few_shot"]]},
     r"few_shot condition needs demonstrations: bind lora_hyper.TaskData.shots"),
    ({"lora_hyper.TaskData.split": ["held_out"]}, r"TaskData: task split must be one of"),
])
def test_bad_sweeps_stop_before_any_compute_naming_the_binding(tmp_path, axes, message):
  gin.parse_config("lora_hyper.EvalConfig.data = @lora_hyper.TaskData()")
  scorer = Scorer()
  with pytest.raises(study.ConfigError, match=message):
    _sweep(tmp_path, scorer, axes=axes)
  assert scorer.calls == [] and not tmp_path.joinpath(study.POINTS).exists()


def test_overall_rows_come_before_the_groups_rows():
  scores = lambda v: {"adapter": {"token_accuracy": v}}
  points = [{"point": {"lora_hyper.EvalConfig.hypernetwork": "/x/t2l"},
             "report": {"scores": scores(0.5), "by_group": {"string/rot_7": scores(0.25), "list/add_5": scores(0.75)}}}]
  assert [r["group"] for r in study.result_rows(points)] == ["string/rot_7", "list/add_5"]
  rows = study.result_rows(points, overall=True)
  assert [(r["group"], r["scores"]) for r in rows] == [(None, scores(0.5)), ("string/rot_7", scores(0.25)),
                                                       ("list/add_5", scores(0.75))]
  table = study.markdown("t", "c", ["lora_hyper.EvalConfig.hypernetwork"], rows)
  overall, by_group = table.split("By group:")
  assert "| hypernetwork | adapter token_accuracy |" in overall and "| t2l | 0.500 |" in overall
  assert "| hypernetwork | group | adapter token_accuracy |" in by_group and "| t2l | list/add_5 | 0.750 |" in by_group


def test_folders_are_named_by_as_many_last_parts_as_tell_them_apart():
  axis = ["lora_hyper/pretrained/t2l_gemma3_270m", "/tmp/recon_8/hypernetwork", "/tmp/recon_24/hypernetwork"]
  assert [study.short(v, axis) for v in axis] == ["t2l_gemma3_270m", "recon_8/hypernetwork", "recon_24/hypernetwork"]
  assert study.short("/tmp/a/b") == "b" and study.short(128, axis) == "128"
