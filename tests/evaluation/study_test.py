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


class GroupScorer:
  """Two groups; the adapter's score depends on the chunk length, the base conditions' do not."""

  def __init__(self):
    self.calls = []

  def __call__(self, config: study.EvalConfig) -> evaluator.Evaluation:
    self.calls.append((config.chunk_len, config.conditions))
    answers = []
    for group in (64, 1024):
      row = {"document": f"d{group}", "query": "q", "reference": "1", "group": group}
      for condition in config.conditions:
        right = condition == "context" or (condition == "adapter" and config.chunk_len * 8 >= group)
        row[condition] = {"answer": "1" if right else "2", "exact_match": float(right)}
      answers.append(row)
    by_group = {str(a["group"]): evaluator.mean_scores([a], config.conditions, ["exact_match"]) for a in answers}
    report = {"scores": evaluator.mean_scores(answers, config.conditions, ["exact_match"]), "by_group": by_group}
    return evaluator.Evaluation(report, answers)


def test_listed_points_make_a_table_per_metric_with_a_row_per_group(tmp_path):
  points = [{"lora_hyper.EvalConfig.chunk_len": 16, "lora_hyper.EvalConfig.conditions": ["adapter"]},
            {"lora_hyper.EvalConfig.chunk_len": 128, "lora_hyper.EvalConfig.conditions": ["adapter"]},
            {"lora_hyper.EvalConfig.conditions": ["context", "base"]}]
  scorer = GroupScorer()
  summary = study.eval_sweep(out=str(tmp_path), points=points, table="by_group", plot_results=True,
                             command="lora-hyper eval", score=scorer)
  assert scorer.calls == [(16, ("adapter",)), (128, ("adapter",)), (None, ("context", "base"))]
  table = (tmp_path / "results.md").read_text().split("\n", 4)[4]
  assert table.splitlines()[:6] == [
      "exact match:", "",
      "| group | chunk_len=16 adapter | chunk_len=128 adapter | context | base |",
      "|---|---|---|---|---|",
      "| 64 | 1.000 | 1.000 | 1.000 | 0.000 |",
      "| 1024 | 0.000 | 1.000 | 1.000 | 0.000 |"]
  assert summary["table"] == "by_group" and (tmp_path / "results.png").stat().st_size > 0
  x_label, lines = study.plot_lines(summary["axes"], summary["rows"], "by_group")
  assert x_label == "group" and lines["chunk_len=16 adapter"] == [(64.0, {"exact_match": 1.0}),
                                                                  (1024.0, {"exact_match": 0.0})]
  rerun = GroupScorer()
  study.eval_sweep(out=str(tmp_path), points=points, table="by_group", plot_results=False, command="x", score=rerun)
  assert rerun.calls == []


@pytest.mark.parametrize("kwargs, message", [
    ({"points": [{"lora_hyper.EvalConfig.chunk_lenn": 16}]}, r"'lora_hyper.EvalConfig.chunk_lenn' is not a gin binding"),
    ({"points": []}, r"points must be a non-empty list"),
    ({"points": [{"lora_hyper.EvalConfig.chunk_len": 16}], "axes": {"lora_hyper.EvalConfig.iterative": [True]}},
     r"axes \(a grid\) or points \(a list\), not both"),
    ({"axes": {}, "table": "wide"}, r"table must be 'by_point' or 'by_group'"),
])
def test_bad_point_lists_stop_before_any_compute(tmp_path, kwargs, message):
  scorer = GroupScorer()
  with pytest.raises(study.ConfigError, match=message):
    study.eval_sweep(out=str(tmp_path), plot_results=False, command="x", score=scorer, **kwargs)
  assert scorer.calls == []


def test_the_recorded_command_names_its_folders_portably(monkeypatch):
  monkeypatch.delenv("WORKDIR", raising=False)
  monkeypatch.setattr("sys.argv", ["/venv/bin/lora-hyper", "eval", "--gin_file", "x.gin",
                                   "--gin_param", "lora_hyper.eval_sweep.out = '/tmp/sweeps/a'"])
  assert study.cli_command() == "lora-hyper eval --gin_file x.gin --gin_param \"lora_hyper.eval_sweep.out = 'WORKDIR/sweeps/a'\""


class KindScorer:
  """Scores as a function of the config's conditions, in two groups, as FictionalData's kinds."""

  def __init__(self):
    self.calls = []

  def __call__(self, config: study.EvalConfig) -> evaluator.Evaluation:
    self.calls.append((config.data.docs, config.conditions))
    answers = [{"document": "d", "query": "q", "reference": "7", "group": group,
                **{c: {"answer": "7", "exact_match": 1.0} for c in config.conditions}}
               for group in ("number", "made-up name")]
    by_group = {a["group"]: evaluator.mean_scores([a], config.conditions, ["exact_match"]) for a in answers}
    return evaluator.Evaluation({"scores": evaluator.mean_scores(answers, config.conditions, ["exact_match"]),
                                 "by_group": by_group}, answers)


POINTS = [{"lora_hyper.FictionalData.docs": 24, "lora_hyper.EvalConfig.conditions": ["adapter", "context"]},
          {"lora_hyper.FictionalData.docs": 2, "lora_hyper.EvalConfig.conditions": ["adapter", "context", "cd_oracle"]}]


def test_listed_points_are_scored_as_listed_and_a_condition_one_lacks_is_a_dash(tmp_path):
  gin.parse_config("lora_hyper.EvalConfig.data = @lora_hyper.FictionalData()")
  scorer = KindScorer()
  summary = study.eval_sweep(out=str(tmp_path), points=POINTS, plot_results=False, command="c", score=scorer)
  assert scorer.calls == [(24, ("adapter", "context")), (2, ("adapter", "context", "cd_oracle"))]
  assert [r["group"] for r in summary["rows"]] == ["number", "made-up name"] * 2
  lines = (tmp_path / "results.md").read_text().splitlines()
  assert lines[4] == ("| docs | conditions | group | adapter exact_match | context exact_match | "
                      "cd_oracle exact_match |")
  assert lines[6].startswith("| 24 | ['adapter', 'context'] | number | 1.000 | 1.000 | - |")
  assert lines[9].endswith("| made-up name | 1.000 | 1.000 | 1.000 |")
  assert study.eval_sweep(out=str(tmp_path), points=POINTS, plot_results=False, command="c", score=scorer)
  assert len(scorer.calls) == 2  # a rerun finds both points written
  gin.parse_config("lora_hyper.EvalConfig.data_parallel = False")  # how points run, not what they score
  assert study.eval_sweep(out=str(tmp_path), points=POINTS, plot_results=False, command="c", score=scorer)
  assert len(scorer.calls) == 2


@pytest.mark.parametrize("points, message", [
    ([], r"points must be a non-empty list"),
    ({"lora_hyper.FictionalData.docs": 2}, r"points must be a non-empty list"),
    ([{"lora_hyper.FictionalData.doc": 2}], r"'lora_hyper.FictionalData.doc' is not a gin binding that exists"),
    ([{"lora_hyper.FictionalData.split": "dev"}], r"at sweep point .*FictionalData.split must be one of"),
])
def test_bad_listed_points_stop_before_any_compute_naming_the_binding(tmp_path, points, message):
  gin.parse_config("lora_hyper.EvalConfig.data = @lora_hyper.FictionalData()")
  scorer = KindScorer()
  with pytest.raises(study.ConfigError, match=message):
    study.eval_sweep(out=str(tmp_path), points=points, plot_results=False, command="c", score=scorer)
  with pytest.raises(study.ConfigError, match="not both"):
    study.eval_sweep(out=str(tmp_path), points=POINTS, axes={"lora_hyper.EvalConfig.chunk_len": [64]},
                     plot_results=False, command="c", score=scorer)
  assert scorer.calls == [] and not tmp_path.joinpath(study.POINTS).exists()


def test_fictional_data_groups_each_question_by_its_answers_kind():
  from lora_hyper.data import fictional  # pylint: disable=import-outside-toplevel
  from lora_hyper.evaluation import data  # pylint: disable=import-outside-toplevel

  held_out = data.FictionalData(docs=2).records("doc_to_lora", len)
  assert held_out == [{**r, "group": fictional.answer_kind(r["answer"])}
                      for d in range(2) for r in fictional.FictionalQA(2, "test").qa_pairs(d)]
  assert {r["group"] for r in held_out} == set(fictional.ANSWER_KINDS)
  validation = data.FictionalData(docs=3, split="train", first_doc=20000, facts_per_doc=1,
                                  by_answer_kind=False).records("doc_to_lora", len)
  assert [r["doc_id"] for r in validation] == ["train-020000", "train-020001", "train-020002"]
  assert "group" not in validation[0]
  with pytest.raises(ValueError, match="needs a doc_to_lora"):
    data.FictionalData().records("text_to_lora", len)
  with pytest.raises(ValueError, match="first_doc"):
    data.FictionalData(first_doc=-1)


def test_first_three_letters_give_a_made_up_name_partial_credit():
  assert metrics.first_3_letters("Staimshou", "Staisshea") == 1.0
  assert metrics.first_3_letters("It is called 'Staisshea'.", "Staisshea") == 1.0
  assert metrics.first_3_letters("Krarl Shou", "Krarsh Bain") == 1.0
  assert metrics.first_3_letters("Bain", "Krarsh Bain") == 0.0  # the reference's first word
  assert metrics.first_3_letters("Droumthou", "Staisshea") == metrics.first_3_letters("", "Staisshea") == 0.0


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


def test_update_times_follow_the_score_tables():
  points = [{"point": {"lora_hyper.EvalConfig.chunk_len": 16},
             "report": {"update_seconds": {"adapter": {"median": 0.012, "first": 3.5, "updates": 4, "compiled": 1},
                                           "cd_oracle": {"median": 41.25, "first": 60.0, "updates": 3, "compiled": 0}}}},
            {"point": {"lora_hyper.EvalConfig.conditions": ["base"]}, "report": {}}]
  lines = study.markdown("t", "cmd", [], [], points=points).splitlines()
  assert lines[-4:] == ["| point and condition | median s | first s | updates | compiled | x adapter |",
                        "|---|---|---|---|---|---|", "| chunk_len=16 adapter | 0.012 | 3.5 | 4 | 1 | 1 |",
                        "| chunk_len=16 cd_oracle | 41.2 | 60 | 3 | 0 | 3438 |"]
  assert "update seconds" not in study.markdown("t", "cmd", [], [], points=points[1:]).lower()
  adapter_alone = {"point": {"lora_hyper.EvalConfig.chunk_len": 8}, "report": {"update_seconds": {
      "adapter": {"median": 0.02, "first": 1.0, "updates": 2, "compiled": 1}}}}
  assert study.markdown("t", "cmd", [], [], points=[points[0], adapter_alone]).splitlines()[-1] == \
      "| chunk_len=8 adapter | 0.02 | 1 | 2 | 1 | 1 |"
  # Nothing compared: no ratio column.
  assert study.markdown("t", "cmd", [], [], points=[adapter_alone]).splitlines()[-2:] == [
      "|---|---|---|---|---|", "| chunk_len=8 adapter | 0.02 | 1 | 2 | 1 |"]
  distilled = points[0]["report"]["update_seconds"]["cd_oracle"]
  untimed_adapter = [{"point": {}, "report": {"update_seconds": {"cd_oracle": distilled}}}, points[0]]
  lines = study.markdown("t", "cmd", [], [], points=untimed_adapter).splitlines()
  assert lines[-3] == "| cd_oracle | 41.2 | 60 | 3 | 0 | - |"


def test_columns_name_folders_by_as_much_as_tells_them_apart():
  points = [{"lora_hyper.EvalConfig.hypernetwork": f"runs/levers/{row}/hypernetwork"} for row in ("a", "b")]
  rows = [{"point": p, "group": "name", "scores": {"adapter": {"contains": float(i)}}} for i, p in enumerate(points)]
  assert study.by_group_columns(rows)[1] == ["hypernetwork=a/hypernetwork adapter", "hypernetwork=b/hypernetwork adapter"]
