"""experiments/qa: the headline chain's study and its evaluation, end to end on a tiny model. Every
one of study.gin's 40 stages runs, each from the one before, the first from a saved hypernetwork as
the real one starts from the shipped needle hypernetwork (the first and last train one step); then eval.gin scores the
last stage through `lora-hyper eval`, per kind of answer. Sizes and steps are overridden by gin
bindings only: the stages, their data and their chain are the files' own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from lora_hyper.adapters import io
from lora_hyper.evaluation import study
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model

import xla_flags
from study_plan import study_plan, train_study
from tiny_model import write_talking_tiny_model

ROOT = Path(__file__).parents[1]
STUDY = ROOT / "experiments/qa/study.gin"
EVAL = ROOT / "experiments/qa/eval.gin"


def test_the_study_chains_forty_stages_from_the_needle_hypernetwork_as_the_scripts_did():
  plan, settings = study_plan(STUDY)
  names = [s.name for s in plan]
  assert len(names) == 40 and names[:8] == ["k", "kc", "kc2", "qc", "qc_two", "six_shuffled", "numbers", "six_no_names"]
  assert all(s.start_from == previous for s, previous in zip(plan[1:], names))  # one chain
  assert names[-1] == "six_numbers_no_names_16"
  # The architecture is named once: the shipped folder's, no preset in any stage.
  assert settings["k"]["init_from"] == "lora_hyper/pretrained/d2l_gemma3_270m"
  assert all(s["hypernetwork"] is None for s in settings.values())
  assert [n for n, s in settings.items() if s["hyper_overrides"]] == ["k"]
  # The scripts' steps and seeds (no_names_cycles.sh: cycle N's stages seeds 2N and 2N + 1).
  assert sum(s["steps"] for s in settings.values()) == 14100
  assert settings["six_numbers_9"]["seed"] == 18 and settings["six_numbers_no_names_9"]["seed"] == 19
  # Each stage's data: the code words, one or two facts of every kind, numbers alone, no names.
  data = {n: s["data"] for n, s in settings.items()}
  assert type(data["kc2"]).__name__ == "CodeWordQA" and data["kc2"].num_records == 20000
  assert (data["qc_two"].facts_per_doc, data["qc_two"].answer_kinds) == (2, None)
  assert (data["numbers"].facts_per_doc, data["numbers"].answer_kinds) == (1, ("number",))
  assert data["six_numbers_16"].answer_kinds == ("number",)
  assert data["six_numbers_no_names_16"].answer_kinds == ("number", "listed word")
  assert (settings["six_no_names"]["global_batch_size"], settings["numbers"]["global_batch_size"]) == (12, 8)
  assert settings["k"]["optimizer"].learning_rate == 3e-4 and settings["six_shuffled"]["optimizer"].learning_rate == 5e-5


def test_a_bad_binding_stops_the_study_from_the_cli_naming_it():
  run = subprocess.run([sys.executable, "-m", "lora_hyper.cli", "train", "--gin_file", str(STUDY),
                        "--gin_param", "six_numbers_7/lora_hyper.FictionalQA.answer_kinds = ('numbers',)"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "XLA_FLAGS": xla_flags.for_devices(1)})
  assert run.returncode == 2, run.stderr
  assert "stage 'six_numbers_7'" in run.stderr and "answer_kinds" in run.stderr, run.stderr
  assert "Traceback" not in run.stderr


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
  """study.gin trained on a tiny model, one step a stage: (model folder, study root, result)."""
  folder = tmp_path_factory.mktemp("qa_study")
  model_dir = write_talking_tiny_model(folder / "model")
  base = base_model.load_base_model(model_dir)
  # The needle hypernetwork's stand-in: chunks long enough for six-fact documents of this
  # character-level tokenizer, chunk gates on (the file's first stage switches their cut off).
  config = doc_to_lora.d2l_tiny(base.config, chunk_len=512, max_chunks=2,
                                experimental={"chunk_gate": True, "chunk_gate_cut": True})
  start = saved.save_hypernetwork(folder / "start", config, doc_to_lora.init(config, jax.random.key(0)),
                                  base=io.base_identity(base))
  plan, _ = study_plan(STUDY)
  bindings = [f"lora_hyper.train_study.root = '{folder / 'study'}'",
              f"k/lora_hyper.train.init_from = '{start}'",
              f"lora_hyper.train.base_model = '{model_dir}'",
              "lora_hyper.train.mesh_shape = (4, 1, 1)",  # splits batches of 8 and 12
              "lora_hyper.FictionalQA.num_docs = 100",
              "lora_hyper.CodeWordQA.num_records = 64",
              "lora_hyper.DocExampleShapes.student_len = 128",
              "lora_hyper.DocExampleShapes.answer_len = 32",
              "lora_hyper.OptimizerConfig.warmup_steps = 1",
              # The first and last stages take a step; the 38 between only build their data and chain
              # (no step: no compile, each of which would cost seconds).
              *(f"{s.name}/lora_hyper.train.steps = {int(s in (plan[0], plan[-1]))}" for s in plan)]
  result = train_study(STUDY, bindings, base)
  return model_dir, folder / "study", result


def test_the_study_trains_every_stage_from_the_one_before(tiny_study):
  _, root, result = tiny_study
  assert len(result.trained) == 40 and result.preempted is None
  last = saved.load_hypernetwork(root / "six_numbers_no_names_16" / "hypernetwork")
  # The start's architecture all along, its gates' cut switched off by the first stage only.
  assert last.config.chunk_len == 512 and last.config.experimental.chunk_gate
  assert not last.config.experimental.chunk_gate_cut
  numbers = saved.load_hypernetwork(root / "six_numbers_16" / "hypernetwork").gin_config
  assert "six_numbers_16/FictionalQA.answer_kinds = ('number',)" in numbers.replace("lora_hyper.", "")


def test_eval_gin_scores_the_last_stage_per_kind_of_answer(tiny_study, tmp_path):
  model_dir, root, _ = tiny_study
  out = tmp_path / "qa_eval"
  params = [f"lora_hyper.eval_sweep.out = '{out}'",
            f"lora_hyper.EvalConfig.hypernetwork = '{root / 'six_numbers_no_names_16' / 'hypernetwork'}'",
            f"lora_hyper.EvalConfig.base_model = '{model_dir}'",
            # Smaller points, the same three: 2 held-out documents, the first with the baselines, 1 validation.
            "lora_hyper.eval_sweep.points = ["
            "{'lora_hyper.FictionalData.split': 'test', 'lora_hyper.FictionalData.first_doc': 0, "
            "'lora_hyper.FictionalData.docs': 2, 'lora_hyper.EvalConfig.conditions': ['adapter', 'base', 'context']}, "
            "{'lora_hyper.FictionalData.split': 'test', 'lora_hyper.FictionalData.first_doc': 0, "
            "'lora_hyper.FictionalData.docs': 1, "
            "'lora_hyper.EvalConfig.conditions': ['adapter', 'base', 'context', 'cd_oracle', 'cd_generated']}, "
            "{'lora_hyper.FictionalData.split': 'train', 'lora_hyper.FictionalData.first_doc': 100, "
            "'lora_hyper.FictionalData.docs': 1, 'lora_hyper.EvalConfig.conditions': ['adapter', 'base', 'context']}]",
            "lora_hyper.FictionalData.facts_per_doc = 3",
            "lora_hyper.EvalConfig.max_new_tokens = 4",
            "lora_hyper.DistillConfig.steps = 1",
            "lora_hyper.DistillConfig.rank = 2",
            "lora_hyper.DistillConfig.max_answer_tokens = 4",
            "lora_hyper.EvalConfig.distill_queries = 1"]
  done = subprocess.run([sys.executable, "-m", "lora_hyper.cli", "eval", "--gin_file", str(EVAL),
                         *(w for p in params for w in ("--gin_param", p))],
                        capture_output=True, text=True, cwd=ROOT, timeout=600,
                        env={**os.environ, "XLA_FLAGS": xla_flags.for_devices(1)})
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads((out / "results.json").read_text())
  held_out, distilled, validation = summary["points"]
  kinds = {"number", "listed word", "made-up name"}
  assert set(held_out["report"]["by_group"]) <= kinds and len(held_out["report"]["by_group"]) >= 2
  assert held_out["report"]["records"] == 6 and validation["report"]["records"] == 3
  assert set(distilled["report"]["scores"]) == {"adapter", "base", "context", "cd_oracle", "cd_generated"}
  assert set(held_out["report"]["scores"]["adapter"]) == {"rouge_l", "contains", "first_3_letters"}
  answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
  assert len(answers) == 6 + 3 + 3 and {a["group"] for a in answers} <= kinds
  table = (out / "results.md").read_text().split("\n\n" + study.TIMES_HEADING)[0].splitlines()
  assert "| cd_oracle rouge_l | cd_oracle contains |" in table[4]
  assert table[-1].startswith("| train | 100 | 1 |")
  assert table[-1].endswith("| - | - | - | - | - | - |")  # validation: no distillation scores
