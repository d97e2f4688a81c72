"""A study gin file's stages and each stage's lora_hyper.train settings, read without training."""

from pathlib import Path

import gin

from lora_hyper import configurables  # noqa: F401  (registers the gin names)
from lora_hyper.training import stages


def study_plan(path: Path) -> tuple[list[stages.Stage], dict[str, dict]]:
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([str(path)], [])
    plan = stages.plan("/tmp/x", gin.query_parameter("lora_hyper.train_study.stages"))
    stages.check_scopes(plan, stages.scoped_bindings())
    return plan, {s.name: stages.stage_settings(s.name) for s in plan}
  finally:
    gin.clear_config()


def train_study(path: Path, bindings: list[str], base) -> stages.StudyResult:
  """Trains the study gin file `path` with `bindings` on the loaded base model `base`."""
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([str(path)], bindings)
    return stages.train_study(loaded_base=base)
  finally:
    gin.clear_config()
