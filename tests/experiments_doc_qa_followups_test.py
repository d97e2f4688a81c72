"""experiments/doc_qa/followups.gin, issue 65's levers tried after the recipe: rows that go on from the
shipped general hypernetwork; on a tiny model each row trains a step and followups_eval.gin scores
them through the CLI, on three-fact and one-fact documents."""

import dataclasses

import pytest

from lora_hyper.data import fictional
from lora_hyper.hypernetworks import saved
from lora_hyper.pretrained import folder as shipped_folder

from doc_qa_tiny import ROOT, tiny_eval, train_tiny_study
from study_plan import study_plan

FOLLOWUPS = ROOT / "experiments/doc_qa/followups.gin"


def test_the_rows_go_on_from_the_shipped_general_hypernetwork_or_from_each_other():
  """Each row's start and settings, as its comment in followups.gin says."""
  plan, settings = study_plan(FOLLOWUPS)
  assert [(s.name, s.start_from) for s in plan] == [("name_drill", None), ("drill_then_mixed", "name_drill"),
                                                    ("drill_600", "name_drill"), ("drill_1200", "drill_600"),
                                                    ("drill_1200_then_mixed", "drill_1200"), ("no_names", None),
                                                    ("word_drill", None), ("continued", None), ("wide", None)]
  drill, mixed, longer = settings["name_drill"], settings["drill_then_mixed"], settings["drill_600"]
  longest, longest_mixed = settings["drill_1200"], settings["drill_1200_then_mixed"]
  assert drill["init_from"] == "lora_hyper/pretrained/d2l_gemma3_270m_general"
  assert (ROOT / drill["init_from"]).resolve() == shipped_folder("doc_to_lora", "general").resolve()
  assert drill["data"].facts_per_doc == 1 and drill["data"].answer_kinds == ("made-up name",)
  assert drill["steps"] == 300 and drill["optimizer"].learning_rate == 2e-4
  # then back to the recipe's documents: three facts, every kind of answer, every kind of subject
  assert mixed["data"].facts_per_doc == 3 and mixed["data"].answer_kinds is None
  assert mixed["data"].subject_kinds == tuple(fictional.SUBJECT_KINDS) and mixed["optimizer"].learning_rate == 1e-4
  # or on with the drill, another shuffle of its documents
  assert longer["data"] == drill["data"] and longer["optimizer"] == drill["optimizer"]
  assert longer["seed"] not in (drill["seed"], mixed["seed"])
  # and on again, twice as long, then back to the recipe's documents as drill_then_mixed went
  assert longest["data"] == drill["data"] and longest["steps"] == 600
  assert longest["optimizer"].learning_rate == drill["optimizer"].learning_rate
  assert longest_mixed["data"] == mixed["data"] and longest_mixed["optimizer"] == mixed["optimizer"]
  # or, from the shipped one, the recipe's documents without their name questions
  no_names = settings["no_names"]
  assert no_names["init_from"] == drill["init_from"] and no_names["optimizer"] == mixed["optimizer"]
  assert no_names["data"] == dataclasses.replace(mixed["data"], answer_kinds=("number", "listed word"))
  # or a drill on one-fact documents whose answer is a number or a listed word
  word_drill = settings["word_drill"]
  assert word_drill["init_from"] == drill["init_from"] and word_drill["optimizer"] == drill["optimizer"]
  assert word_drill["data"] == dataclasses.replace(drill["data"], answer_kinds=("number", "listed word"))
  # the control: the shipped one trained on as the recipe trains it; and the wider Perceiver, on its batches
  continued, wide = settings["continued"], settings["wide"]
  assert continued["init_from"] == drill["init_from"] and continued["init_reshaped"] is False
  assert (continued["data"], continued["optimizer"], continued["steps"]) == (mixed["data"], mixed["optimizer"], 300)
  assert continued["hyper_overrides"] is None  # the shipped architecture
  assert {k: v for k, v in wide.items() if k not in ("hyper_overrides", "init_reshaped")} == \
      {k: v for k, v in continued.items() if k not in ("hyper_overrides", "init_reshaped")}
  assert wide["init_reshaped"] == "widen_width"
  assert wide["hyper_overrides"] == {"perceiver": {"num_heads": 16, "num_kv_heads": 8, "mlp_dim": 2048,
                                                   "input_mlp_factor": 4}, "pre_head_mlp_dim": 1024}
  # rows on the same documents read them in different shuffles (but `wide`, on `continued`'s batches)
  shuffles = [(repr(settings[s.name]["data"]), settings[s.name]["seed"]) for s in plan if s.name != "wide"]
  assert len(set(shuffles)) == len(shuffles)


@pytest.fixture(scope="module")
def tiny_followups(tmp_path_factory):
  """followups.gin on a tiny model, one step a row, from a tiny stand-in of the shipped hypernetwork."""
  model_dir, folder, _, result = train_tiny_study(tmp_path_factory, FOLLOWUPS, "followups",
                                                 scopes=("", "drill_1200/"))
  return model_dir, folder, result


def test_the_rows_train_and_the_eval_scores_them_on_three_fact_and_one_fact_documents(tiny_followups):
  model_dir, folder, result = tiny_followups
  assert len(result.trained) == 9 and result.preempted is None
  wide = saved.load_hypernetwork(folder / "followups" / "wide" / "hypernetwork").config
  assert (wide.perceiver.num_heads, wide.perceiver.mlp_dim, wide.pre_head_mlp_dim) == (16, 2048, 1024)
  assert wide.perceiver.latent_dim == saved.load_hypernetwork(folder / "followups" / "continued" / "hypernetwork"
                                                              ).config.perceiver.latent_dim
  drill, mixed = (str(folder / "followups" / row / "hypernetwork") for row in ("name_drill", "drill_then_mixed"))
  assert saved.load_hypernetwork(mixed).config == saved.load_hypernetwork(drill).config
  one_fact = {"lora_hyper.FictionalData.facts_per_doc": 1, "lora_hyper.FictionalData.first_doc": 20006}
  points = [{"lora_hyper.EvalConfig.hypernetwork": drill, "lora_hyper.EvalConfig.conditions": ["context"]},
            {"lora_hyper.EvalConfig.hypernetwork": drill}, {"lora_hyper.EvalConfig.hypernetwork": mixed},
            {"lora_hyper.EvalConfig.hypernetwork": mixed, **one_fact}]
  summary = tiny_eval(ROOT / "experiments/doc_qa/followups_eval.gin", model_dir, folder / "validation",
                      f"lora_hyper.eval_sweep.points = {points}", docs=6)
  assert [p["report"]["records"] for p in summary["points"]] == [18, 18, 18, 6]
