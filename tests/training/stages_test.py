"""Multi-stage training as data (lora_hyper.train_study): stages chain through their saved
hypernetworks, a saved stage is skipped, a stopped one resumes, and bad configs stop before any step."""

import subprocess
import sys
from pathlib import Path

import gin
import pytest

from lora_hyper import configurables  # noqa: F401  (registers the gin names)
from lora_hyper.hypernetworks import saved
from lora_hyper.training import stages

from fakes import qa_records, tiny_base
from study_plan import study_plan

ROOT = Path(__file__).parents[2]

# Three stages on a tiny model, the NIAH study's shape: the architecture in stage 1 only, later
# stages switch a component on and restate nothing else.
TINY_STUDY = """
lora_hyper.train_study.stages = {'s1': None, 's2': 's1', 's3': 's2'}
lora_hyper.train.objective = 'd2l_kl'
lora_hyper.train.global_batch_size = 8
lora_hyper.train.save_every = 1
lora_hyper.train.log_every = 1
lora_hyper.train.mesh_shape = (2, 1, 1)
lora_hyper.train.optimizer = @lora_hyper.OptimizerConfig()
lora_hyper.OptimizerConfig.learning_rate = 3e-3
lora_hyper.OptimizerConfig.warmup_steps = 1
lora_hyper.train.doc_shapes = @lora_hyper.DocExampleShapes()
lora_hyper.DocExampleShapes.num_chunks = 2
lora_hyper.DocExampleShapes.student_len = 48
lora_hyper.DocExampleShapes.teacher_len = 72
lora_hyper.DocExampleShapes.answer_len = 4

s1/lora_hyper.train.hypernetwork = 'd2l_tiny'
s1/lora_hyper.train.hyper_overrides = {'chunk_len': 16, 'max_chunks': 2,
                                       'experimental': {'normalize_features': True, 'center_momentum': 0.9}}
s1/lora_hyper.train.steps = 1
s2/lora_hyper.train.hyper_overrides = {'experimental': {'chunk_gate': True}}
s2/lora_hyper.train.steps = 2
s3/lora_hyper.train.hyper_overrides = {'experimental': {'chunk_gate_cut': True}}
s3/lora_hyper.train.steps = 1
s3/lora_hyper.OptimizerConfig.learning_rate = 1e-3
"""


@pytest.fixture(name="study")
def _study(tmp_path):
  """Parses TINY_STUDY plus extra bindings, rooted in tmp_path; returns a function that runs it."""
  gin.clear_config()

  def run(*bindings, parse=True):
    if parse:
      gin.clear_config()
      gin.parse_config([TINY_STUDY, f"lora_hyper.train_study.root = '{tmp_path}'", *bindings])
      gin.bind_parameter("lora_hyper.train.data", qa_records(64))
    return stages.train_study(loaded_base=tiny_base())

  yield run
  gin.clear_config()


def test_stages_chain_skip_when_saved_and_resume_where_stopped(tmp_path, study, capsys):
  # First run: s2 stops after one of its two steps (as a kill after its checkpoint would leave it).
  first = study("s2/lora_hyper.train.stop_after = 1")
  assert (first.trained, first.preempted) == (("s1",), "s2")
  assert (tmp_path / "s1" / "hypernetwork" / saved.MANIFEST).is_file()
  assert not (tmp_path / "s2" / "hypernetwork").exists()
  capsys.readouterr()
  # The rerun skips s1, resumes s2 from its checkpoint, and trains s3 from s2's hypernetwork.
  second = study()
  out = capsys.readouterr().out
  assert (second.skipped, second.trained, second.preempted) == (("s1",), ("s2", "s3"), None)
  assert "stage s1" in out and "skipped" in out
  assert f"resumed from step 1 of {tmp_path / 's2'}" in out
  s2 = saved.load_hypernetwork(tmp_path / "s2" / "hypernetwork")
  s3 = saved.load_hypernetwork(tmp_path / "s3" / "hypernetwork")
  s1 = saved.load_hypernetwork(tmp_path / "s1" / "hypernetwork")
  # The architecture came from each saved folder; each stage's overrides only switched one thing on.
  assert not s1.config.experimental.chunk_gate
  assert s2.config.experimental.chunk_gate and not s2.config.experimental.chunk_gate_cut
  assert s3.config.experimental.chunk_gate_cut and s3.config.experimental.center_momentum == 0.9
  assert s3.config.chunk_len == 16 and s3.config.perceiver == s1.config.perceiver
  # Each stage's schedule spans its own steps (total_steps unbound), and its config.gin is operative.
  assert "s3/OptimizerConfig.learning_rate = 0.001" in s3.gin_config.replace("lora_hyper.", "")
  # A third run has nothing left to do.
  third = study()
  assert (third.trained, third.skipped) == ((), ("s1", "s2", "s3"))


def test_only_trains_the_stages_it_names(tmp_path, study):
  first = study("lora_hyper.train_study.only = ['s1']")
  assert (first.trained, first.skipped, first.left_out) == (("s1",), (), ("s2", "s3"))
  assert not (tmp_path / "s2").exists()
  # s3 starts from s2: with both named, s2 trains first, from the saved s1.
  second = study("lora_hyper.train_study.only = ['s3', 's2']")
  assert (second.trained, second.left_out) == (("s2", "s3"), ("s1",))


@pytest.mark.parametrize("bindings, message", [
    (["lora_hyper.train_study.stages = {'s1': None, 's3': 's2'}"],
     "stage 's3' starts from 's2', which is not an earlier stage"),
    (["lora_hyper.train_study.stages = {'s1': 's2', 's2': None}"], "stage 's1' starts from 's2'"),
    (["lora_hyper.train_study.stages = {'s1': None, 's2': 's1'}"], "'s3' is not a stage"),  # s3's bindings remain
    (["s2/lora_hyper.train.workdir = '/tmp/x'"], "s2/lora_hyper.train.workdir"),
    (["s2/lora_hyper.train.init_from = '/tmp/x'"], "s2/lora_hyper.train.init_from"),
    (["s3/lora_hyper.train.hyper_overrides = {'experimental': {'chunk_gatez': True}}"], "stage 's3'"),
    (["s3/lora_hyper.OptimizerConfig.warmup_steps = 2"], "stage 's3'.*warmup_steps"),
    (["s2/lora_hyper.train.hypernetwork = 'd2l_small'"], "stage 's2'.*does not fit"),
    (["s2/lora_hyper.train.base_model = 'x'"], "s2/lora_hyper.train.base_model"),
    (["s3/lora_hyper.train.init_reshaped = 'widen'"], "stage 's3': lora_hyper.train.init_reshaped must be"),
    (["lora_hyper.train_study.only = ['s4']"], r"only names \['s4'\], not stages"),
    (["lora_hyper.train_study.only = ['s2']"], "stage 's2' starts from 's1', which is not saved"),
    (["lora_hyper.train_study.only = 's1'"], "a list of stage names"),
])
def test_a_bad_stage_stops_before_any_step(tmp_path, study, bindings, message):
  with pytest.raises(stages.StudyError, match=message):
    study(*bindings)
  assert not (tmp_path / "s1").exists()  # nothing trained, not even the first stage


def test_the_niah_study_builds_every_stage_and_names_a_bad_one_from_the_cli():
  """The shipped study's three stages parse and chain (architecture from stage 1 only); the CLI
  reports a stage that starts from a missing one with exit code 2, before loading anything."""
  plan, settings = study_plan(ROOT / "experiments/niah/study.gin")
  assert [settings[s.name]["steps"] for s in plan] == [1400, 400, 200]
  assert [settings[s.name]["hypernetwork"] for s in plan] == ["d2l_compact", None, None]
  run = subprocess.run([sys.executable, "-m", "lora_hyper.cli", "train", "--gin_file", "experiments/niah/study.gin",
                        "--gin_param", "lora_hyper.train_study.stages = {'stage1': None, 'stage3': 'stage2'}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert run.returncode == 2, run.stderr
  assert "stage 'stage3' starts from 'stage2', which is not an earlier stage" in run.stderr
