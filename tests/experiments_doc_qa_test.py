"""experiments/doc_qa: issue 65's lever rows (levers.gin) start from one saved hypernetwork and change
one thing each; on a tiny model every row trains a step (the re-shaped ones from the start's params
where shapes allow), and levers_eval.gin, speed_eval.gin and stacking_eval.gin run through the CLI."""

import numpy as np
import pytest
from flax import traverse_util

from lora_hyper.evaluation import study
from lora_hyper.hypernetworks import saved

from doc_qa_tiny import ROOT, tiny_eval, train_tiny_study
from study_plan import study_plan

LEVERS = ROOT / "experiments/doc_qa/levers.gin"
EVAL = ROOT / "experiments/doc_qa/levers_eval.gin"
ROWS = ["needle", "distill", "latents_32", "rank_16", "per_layer", "rank_16_widened"]


def test_every_row_starts_from_the_needle_hypernetwork_and_changes_one_thing():
  plan, settings = study_plan(LEVERS)
  assert [s.name for s in plan] == ROWS and all(s.start_from is None for s in plan)
  assert {s["init_from"] for s in settings.values()} == {"lora_hyper/pretrained/d2l_gemma3_270m"}
  assert all(s["init_reshaped"] and s["steps"] == 300 and s["hypernetwork"] is None for s in settings.values())
  base = settings["needle"]
  changed = {n: sorted(k for k in s if k != "hyper_overrides" and s[k] != base[k]) for n, s in settings.items()}
  assert changed == {"needle": [], "per_layer": [], "distill": ["doc_shapes", "objective"], "latents_32": [],
                     "rank_16": [], "rank_16_widened": ["init_reshaped"]}
  assert settings["rank_16_widened"]["init_reshaped"] == "widen_rank"
  assert settings["distill"]["doc_shapes"].teacher_len == 128 and settings["distill"]["objective"] == "d2l_kl"
  lever = {n: {k: v for k, v in s["hyper_overrides"].items() if k != "experimental"} for n, s in settings.items()}
  assert lever == {"needle": {}, "per_layer": {"context_encoder": "per_layer_activations"}, "distill": {},
                   "latents_32": {"perceiver": {"num_latents": 32}}, "rank_16": {"rank": 16},
                   "rank_16_widened": {"rank": 16}}
  assert all(s["hyper_overrides"]["experimental"] == {"chunk_gate_cut": False} for s in settings.values())


@pytest.fixture(scope="module")
def tiny_levers(tmp_path_factory):
  """levers.gin on a tiny model, one step a row, from a tiny stand-in of the needle hypernetwork."""
  return train_tiny_study(tmp_path_factory, LEVERS, "levers", "distill/lora_hyper.DocExampleShapes.teacher_len = 512")


def test_every_row_trains_and_keeps_the_starts_params_where_their_shapes_allow(tiny_levers):
  _, folder, start, result = tiny_levers
  assert len(result.trained) == len(ROWS) and result.preempted is None
  flat = lambda folder: {"/".join(k): np.asarray(v) for k, v in
                         traverse_util.flatten_dict(saved.load_hypernetwork(folder).variables).items()}
  started = flat(start)
  for row in ROWS:
    saved_row = saved.load_hypernetwork(folder / "levers" / row / "hypernetwork")
    params = flat(folder / "levers" / row / "hypernetwork")
    kept = [k for k in params if k in started and params[k].shape == started[k].shape]
    assert kept and all(np.all(np.isfinite(v)) for v in params.values()), row
    if row == "per_layer":
      assert saved_row.config.context_encoder == "per_layer_activations"
    if row in ("latents_32", "rank_16", "rank_16_widened"):
      assert any(params[k].shape != started[k].shape for k in params if k in started), row
  for row in ("rank_16", "rank_16_widened"):
    assert saved.load_hypernetwork(folder / "levers" / row / "hypernetwork").config.rank == 16
  assert saved.load_hypernetwork(folder / "levers" / "latents_32" / "hypernetwork").config.perceiver.num_latents == 32


def test_the_levers_eval_scores_every_row_through_the_cli(tiny_levers):
  model_dir, folder, _, _ = tiny_levers
  out = folder / "eval"
  root = folder / "levers"
  points = ([{"lora_hyper.EvalConfig.hypernetwork": str(root / "needle" / "hypernetwork"),
              "lora_hyper.EvalConfig.conditions": ["base", "context"]}]
            + [{"lora_hyper.EvalConfig.hypernetwork": str(root / r / "hypernetwork")}
               for r in ("per_layer", "rank_16")])
  summary = tiny_eval(EVAL, model_dir, out, f"lora_hyper.eval_sweep.points = {points}")
  assert len(summary["points"]) == 3 and all(p["report"]["records"] == 6 for p in summary["points"])
  assert all("adapter" in p["report"]["update_seconds"] for p in summary["points"][1:])
  assert study.TIMES_HEADING in (out / "results.md").read_text()


def test_the_speed_eval_times_distillation_against_the_adapter(tiny_levers):
  model_dir, folder, _, _ = tiny_levers
  needle = folder / "levers" / "needle" / "hypernetwork"
  summary = tiny_eval(ROOT / "experiments/doc_qa/speed_eval.gin", model_dir, folder / "speed",
                      f"lora_hyper.EvalConfig.hypernetwork = '{needle}'",
                      "lora_hyper.EvalConfig.distill = @lora_hyper.DistillConfig()",
                      "lora_hyper.DistillConfig.steps = 2", "lora_hyper.DistillConfig.max_answer_tokens = 2")
  timed = summary["points"][0]["report"]["update_seconds"]
  assert set(timed) == {"adapter", "cd_oracle"} and timed["cd_oracle"]["updates"] == 6  # a distillation per question
  times = (folder / "speed" / "results.md").read_text().split(study.TIMES_HEADING)[1]
  assert "| x adapter |" in times
  ratio = float(times.splitlines()[-1].split("|")[-2])
  assert ratio == pytest.approx(timed["cd_oracle"]["median"] / timed["adapter"]["median"], rel=0.01)


def test_the_stacking_eval_asks_each_stack_of_its_documents(tiny_levers):
  model_dir, folder, _, _ = tiny_levers
  needle = folder / "levers" / "needle" / "hypernetwork"
  summary = tiny_eval(ROOT / "experiments/doc_qa/stacking_eval.gin", model_dir, folder / "stacking",
                      f"lora_hyper.EvalConfig.hypernetwork = '{needle}'",
                      "lora_hyper.eval_sweep.axes = {'lora_hyper.FictionalData.stack': [1, 2]}")
  points = summary["points"]
  assert [p["point"]["lora_hyper.FictionalData.stack"] for p in points] == [1, 2]
  assert all(p["report"]["records"] == 6 for p in points)  # every question of every document, at each size
  assert all(set(p["report"]["update_seconds"]) == {"adapter"} for p in points)
