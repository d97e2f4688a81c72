"""experiments/doc_qa/recipe.gin, issue 65's recipe for the shipped general Doc-to-LoRA: two stages,
the first widening the needle hypernetwork to rank 16, on documents of all six kinds of subject; on a
tiny model both stages train a step, and recipe_eval.gin / recipe_test.gin score them through the CLI."""

import pytest

from lora_hyper.data import fictional
from lora_hyper.hypernetworks import saved

from doc_qa_tiny import ROOT, tiny_eval, train_tiny_study
from study_plan import study_plan

RECIPE = ROOT / "experiments/doc_qa/recipe.gin"


def test_the_recipe_widens_the_needle_hypernetwork_then_goes_on_from_it():
  plan, settings = study_plan(RECIPE)
  assert [(s.name, s.start_from) for s in plan] == [("first", None), ("second", "first")]
  first, second = settings["first"], settings["second"]
  assert first["init_from"] == "lora_hyper/pretrained/d2l_gemma3_270m" and first["init_reshaped"] == "widen_rank"
  assert first["hyper_overrides"]["rank"] == 16 and second["hyper_overrides"] == {}  # the saved config carries on
  assert (first["steps"], second["steps"]) == (600, 300) and (first["seed"], second["seed"]) == (0, 1)
  assert first["data"].subject_kinds == tuple(fictional.SUBJECT_KINDS) == second["data"].subject_kinds
  assert first["optimizer"].learning_rate == 2 * second["optimizer"].learning_rate


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
  """recipe.gin on a tiny model, one step a stage, from a tiny stand-in of the needle hypernetwork."""
  model_dir, folder, _, result = train_tiny_study(tmp_path_factory, RECIPE, "recipe", scopes=("first/", "second/"))
  return model_dir, folder, result


def test_both_stages_train_at_rank_16(tiny_recipe):
  _, folder, result = tiny_recipe
  assert len(result.trained) == 2 and result.preempted is None
  for stage in ("first", "second"):
    hyper = saved.load_hypernetwork(folder / "recipe" / stage / "hypernetwork")
    assert hyper.config.rank == 16 and not hyper.config.experimental.chunk_gate_cut, stage


def test_the_validation_eval_scores_both_stages_and_the_test_eval_the_picked_one(tiny_recipe):
  model_dir, folder, _ = tiny_recipe
  root = folder / "recipe"
  points = [{"lora_hyper.EvalConfig.hypernetwork": str(root / "first" / "hypernetwork"),
             "lora_hyper.EvalConfig.conditions": ["base", "context"]}] + [
      {"lora_hyper.EvalConfig.hypernetwork": str(root / s / "hypernetwork")} for s in ("first", "second")]
  summary = tiny_eval(ROOT / "experiments/doc_qa/recipe_eval.gin", model_dir, folder / "validation",
                      f"lora_hyper.eval_sweep.points = {points}", docs=6)
  assert len(summary["points"]) == 3 and all(p["report"]["records"] == 18 for p in summary["points"])
  summary = tiny_eval(ROOT / "experiments/doc_qa/recipe_test.gin", model_dir, folder / "test",
                      f"lora_hyper.EvalConfig.hypernetwork = '{root / 'second' / 'hypernetwork'}'", docs=6)
  [point] = summary["points"]
  assert point["report"]["records"] == 18 and set(point["report"]["scores"]) == {"adapter", "base", "context"}
