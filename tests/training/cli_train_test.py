"""`lora-hyper train` as a user runs it: gin errors stop before any compute, with exit code 2."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "lora_hyper.cli", *args], capture_output=True, text=True,
                        cwd=ROOT, timeout=120)


def test_misspelt_binding_stops_with_a_clear_error():
  run = _cli("train", "--gin_file", "gin_configs/d2l_270m.gin", "--gin_param", "lora_hyper.train.stepz = 3")
  assert run.returncode == 2
  assert "doesn't have a parameter named 'stepz'" in run.stderr


def test_missing_required_binding_and_file():
  run = _cli("train", "--gin_file", "gin_configs/d2l_270m.gin")
  assert run.returncode != 0 and "workdir" in run.stderr
  run = _cli("train", "--gin_file", "gin_configs/missing.gin")
  assert run.returncode == 2 and "missing.gin" in run.stderr


def test_every_shipped_config_parses():
  """gin_configs/ and the experiments' configs: known names, a known objective, a hypernetwork preset whose
  overrides fit its config, and a schedule that spans the run."""
  import gin

  from lora_hyper import configurables  # noqa: F401
  from lora_hyper.hypernetworks import kinds
  from lora_hyper.model import config as config_lib
  from lora_hyper.training import trainer

  every = sorted([*(ROOT / "gin_configs").glob("*.gin"), *(ROOT / "experiments").glob("**/*.gin")])
  binds = lambda p, name: any(line.startswith(name) for line in p.read_text().splitlines())
  studies = [p for p in every if binds(p, "lora_hyper.train_study.")]  # stages: tests/training/stages_test.py
  paths = [p for p in every if binds(p, "lora_hyper.train.") and p not in studies]  # training configs
  assert {p.name for p in studies} == {"study.gin", "levers.gin", "recipe.gin", "followups.gin"}
  assert {"d2l_270m.gin", "t2l_270m.gin", "train.gin", "sft.gin", "recon.gin"} <= {p.name for p in paths}
  # The others (prepare-data, evaluation sweeps) parse too, with their one required binding given.
  others = {"prepare_data.gin": ["lora_hyper.prepare_data.out = '/tmp/x'"], "niah_chunk_sweep.gin": [],
            "eval.gin": [], "chunk_sweep.gin": [], "handwritten_eval.gin": [], "levers_eval.gin": [], "stacking_eval.gin": [],
            "speed_eval.gin": [], "recipe_eval.gin": [], "recipe_test.gin": [], "followups_eval.gin": [],
            "eval_train.gin": ["lora_hyper.EvalConfig.lora = '/tmp/x'", "lora_hyper.EvalConfig.task_loras = '/tmp/y'"]}
  assert {p.name for p in every if p not in paths + studies} == set(others)
  try:
    for path in every:
      if path not in paths + studies:
        gin.clear_config()
        gin.parse_config_files_and_bindings([str(path)], others[path.name])
    for path in paths:
      gin.clear_config()
      gin.add_config_file_search_path(str(path.parent))
      gin.parse_config_files_and_bindings([str(path)], ["lora_hyper.train.workdir = '/tmp/x'",
                                                        "lora_hyper.train.base_model = 'gemma3-270m'",
                                                        "lora_hyper.task_lora_library.folder = '/tmp/x'",
                                                        "lora_hyper.train.init_from = '/tmp/stage1'"])
      assert gin.query_parameter("lora_hyper.train.objective") in trainer.OBJECTIVES, path
      try:
        overrides = gin.query_parameter("lora_hyper.train.hyper_overrides")
      except ValueError:  # not bound
        overrides = None
      kinds.from_preset(gin.query_parameter("lora_hyper.train.hypernetwork"), config_lib.gemma3_270m(), overrides)
      try:  # train steps count micro-batches, the schedule counts updates (unbound: it spans the run)
        accumulation = gin.query_parameter("lora_hyper.OptimizerConfig.accumulation_steps")
      except ValueError:  # not bound
        accumulation = 1
      try:
        total_steps = gin.query_parameter("lora_hyper.OptimizerConfig.total_steps")
      except ValueError:
        total_steps = None
      assert total_steps is None or total_steps * accumulation == gin.query_parameter("lora_hyper.train.steps"), path
  finally:
    gin.clear_config()
