"""Multi-stage training as data: `train_study` runs the stages one gin file lists, in order, each
from the saved hypernetwork of the stage it names (what `lora-hyper train --gin_file` runs when the
file binds `lora_hyper.train_study.stages`).

  lora_hyper.train_study.root = 'runs/niah_study'
  lora_hyper.train_study.stages = {'stage1': None, 'stage2': 'stage1', 'stage3': 'stage2'}
  lora_hyper.train.steps = 1400                   # every stage, unless its scope says otherwise
  stage2/lora_hyper.train.steps = 400             # gin scopes: stage2's own bindings
  stage2/lora_hyper.train.hyper_overrides = {'experimental': {'chunk_gate': True}}

Stage NAME trains in ROOT/NAME (its checkpoints: a killed stage resumes there) and saves
ROOT/NAME/hypernetwork; a stage whose saved folder is complete (its manifest, written last, is
there) is skipped, so rerunning a killed study resumes at the right stage. A stage that starts from
another gets `init_from` = that stage's folder and, naming no preset, its architecture (the
trainer's rule), with the stage's `hyper_overrides` on top.

`lora_hyper.train_study.only = ['stage2']` trains those stages and no other (independent rows of a
study, a process or machine each); a stage it names must start from a saved one or another it names.

Every stage's bindings are built (data sources, shapes, optimizer, architecture) before the first
stage trains; a bad one is a `StudyError` naming the stage and the binding.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import flax.linen as nn
import gin
import jax
from flax import traverse_util

from lora_hyper.hypernetworks import kinds, saved
from lora_hyper.model import base_model as base_model_lib
from lora_hyper.training import distributed, optimizer as optimizer_lib, program as program_lib, trainer

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # a gin scope name, and a folder name
OUTPUT = "hypernetwork"  # ROOT/NAME/OUTPUT: a stage's saved hypernetwork
_TRAIN = ("lora_hyper.train", "train")  # how a gin file names trainer.train
_SHARED = ("base_model", "base_dtype")  # one base model, loaded once, for every stage


class StudyError(ValueError):
  """A study's gin configuration is wrong; raised before any stage trains."""


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  start_from: str | None  # the earlier stage whose saved hypernetwork this one starts from
  workdir: Path
  output: Path


def plan(root: str, stages: Mapping[str, str | None]) -> list[Stage]:
  """The stages in order, after checking their names and that each starts from an earlier one."""
  if not isinstance(stages, Mapping) or not stages:
    raise StudyError("lora_hyper.train_study.stages must be a non-empty dict {stage name: the earlier stage it "
                     f"starts from, or None}}, got {stages!r}")
  out: list[Stage] = []
  for name, start_from in stages.items():
    if not isinstance(name, str) or not _NAME.match(name):
      raise StudyError(f"lora_hyper.train_study.stages: stage name {name!r} must be a letter or _ then letters, "
                       "digits or _ (it is a gin scope and a folder)")
    earlier = [s.name for s in out]
    if start_from is not None and start_from not in earlier:
      raise StudyError(f"lora_hyper.train_study.stages: stage {name!r} starts from {start_from!r}, which is not an "
                       f"earlier stage (earlier: {earlier or 'none'})")
    out.append(Stage(name, start_from, Path(root) / name, Path(root) / name / OUTPUT))
  return out


def scoped_bindings() -> list[tuple[str, str, str]]:
  """(scope, configurable, parameter) of every scoped binding gin holds."""
  # gin has no public listing of bindings; _CONFIG maps (scope, selector) to {parameter: value}.
  return [(scope, selector, param) for (scope, selector), params in gin.config._CONFIG.items()  # pylint: disable=protected-access
          for param in params if scope]


def check_scopes(stages: list[Stage], bindings: list[tuple[str, str, str]]) -> None:
  """Every scope is a stage; no stage binds what the study sets (its workdir, a later stage's init_from)."""
  by_name = {s.name: s for s in stages}
  for scope, selector, param in bindings:
    binding = f"{scope}/{selector}.{param}"
    stage = by_name.get(scope)
    if stage is None:
      raise StudyError(f"binding {binding}: {scope!r} is not a stage of lora_hyper.train_study.stages "
                       f"({', '.join(by_name)})")
    if selector in _TRAIN and param == "workdir":
      raise StudyError(f"binding {binding}: the study sets each stage's workdir (ROOT/{scope})")
    if selector in _TRAIN and param == "init_from" and stage.start_from is not None:
      raise StudyError(f"binding {binding}: stage {scope!r} starts from stage {stage.start_from!r}'s hypernetwork; "
                       "drop the binding or the stage's start in lora_hyper.train_study.stages")


def stage_settings(name: str) -> dict[str, Any]:
  """`lora_hyper.train`'s arguments in stage `name`'s scope, references built (data sources, shapes,
  optimizer: their own checks run), defaults for the rest."""
  defaults = {k: p.default for k, p in inspect.signature(trainer.train).parameters.items()}
  try:
    with gin.config_scope(name):
      return {**defaults, **gin.get_bindings(trainer.train)}
  except (TypeError, ValueError) as e:
    raise StudyError(f"stage {name!r}: building its lora_hyper.train bindings failed: {e}") from None


def done(stage: Stage) -> bool:
  """The stage's hypernetwork is saved whole (save_hypernetwork writes the manifest last)."""
  return (stage.output / saved.MANIFEST).is_file()


def variables_fit(previous: Any, config: Any, reshaped: bool = False) -> str | None:
  """Why `config`'s variables cannot start from `previous`'s (init_from's rule: added variables are
  fine, another kind is not, changed shapes only with `reshaped`), or None."""
  if type(previous) is not type(config):
    return f"a {type(config).__name__} cannot start from a {type(previous).__name__}"
  if reshaped:
    return None
  shapes = lambda c: traverse_util.flatten_dict(nn.unbox(kinds.of_config(c).abstract_variables(c)))
  got, want = shapes(previous), shapes(config)
  return saved.shape_mismatch({"/".join(k): v for k, v in got.items()},
                              {"/".join(k): v for k, v in want.items() if k in got})


def check_stage(stage: Stage, settings: dict[str, Any], base: base_model_lib.BaseModel,
                previous: Any) -> Any:
  """The stage's hypernetwork config, after checking its settings; `previous` is the config of the
  stage it starts from (None for a first stage)."""
  where = f"stage {stage.name!r}"
  steps = settings["steps"]
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
    # 0 steps: the stage saves what it starts from under its own settings (a checkpoint of the chain).
    raise StudyError(f"{where}: lora_hyper.train.steps must be a non-negative integer, got {steps!r}")
  if settings["objective"] not in trainer.OBJECTIVES:
    raise StudyError(f"{where}: lora_hyper.train.objective {settings['objective']!r} is not one of "
                     f"{sorted(trainer.OBJECTIVES)}")
  try:
    optimizer_lib.for_steps(settings["optimizer"], steps)
  except ValueError as e:
    raise StudyError(f"{where}: {e}") from None
  try:
    trainer.check_init_reshaped(settings["init_reshaped"])
  except ValueError as e:
    raise StudyError(f"{where}: lora_hyper.train.{e}") from None
  architecture = previous
  if stage.start_from is None and settings["init_from"] is not None:
    try:
      architecture = saved.load_hypernetwork(settings["init_from"], base).config
    except (OSError, ValueError) as e:
      raise StudyError(f"{where}: lora_hyper.train.init_from: {e}") from None
  try:
    _, config = program_lib.hyper_config(base.config, settings["hypernetwork"], settings["hyper_overrides"],
                                         architecture)
  except (TypeError, ValueError) as e:
    raise StudyError(f"{where}: lora_hyper.train.hypernetwork / hyper_overrides: {e}") from None
  if architecture is not None:
    mismatch = variables_fit(architecture, config, settings["init_reshaped"])
    if mismatch:
      raise StudyError(f"{where}: its hypernetwork does not fit the one it starts from ({mismatch}); bind no "
                       "lora_hyper.train.hypernetwork preset in this stage and it takes the saved architecture "
                       "(or lora_hyper.train.init_reshaped = True: params of another shape start from their init; "
                       f"{trainer.WIDEN_RANK!r}: a multiple of the rank starts from the saved function; "
                       f"{trainer.WIDEN_WIDTH!r}: more heads and wider MLPs do)")
  return config


def check_study(stages: list[Stage], settings: Mapping[str, dict[str, Any]], base: base_model_lib.BaseModel) -> None:
  """Each stage's architecture, chained: a saved stage's from its folder, the others' built from bindings."""
  configs: dict[str, Any] = {}
  for stage in stages:
    for key in _SHARED:
      if settings[stage.name][key] != settings[stages[0].name][key]:
        raise StudyError(f"binding {stage.name}/lora_hyper.train.{key}: every stage trains the same base model "
                         f"(stage {stages[0].name!r}: {settings[stages[0].name][key]!r})")
    config = check_stage(stage, settings[stage.name], base, configs.get(stage.start_from))
    configs[stage.name] = saved.load_hypernetwork(stage.output, base).config if done(stage) else config


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    multihost_utils.sync_global_devices(name)


@dataclasses.dataclass(frozen=True)
class StudyResult:
  trained: tuple[str, ...]  # stages this call trained to the end
  skipped: tuple[str, ...]  # stages already saved
  preempted: str | None  # the stage stopped before its steps (a signal, stop_after): rerun to resume; or None
  outputs: dict[str, str]  # stage -> its saved hypernetwork
  left_out: tuple[str, ...] = ()  # stages `only` did not name


def check_only(stages: list[Stage], only: Sequence[str] | None) -> None:
  """`only` names stages of the study, each starting from a saved stage or another one it names."""
  if only is None:
    return
  if isinstance(only, str):
    raise StudyError(f"lora_hyper.train_study.only is a list of stage names, got the string {only!r}")
  by_name = {s.name: s for s in stages}
  unknown = [n for n in only if n not in by_name]
  if unknown:
    raise StudyError(f"lora_hyper.train_study.only names {unknown}, not stages of this study ({list(by_name)})")
  for name in only:
    start = by_name[name].start_from
    if start is not None and start not in only and not done(by_name[start]):
      raise StudyError(f"stage {name!r} starts from {start!r}, which is not saved and not in lora_hyper.train_study.only")


@gin.configurable(module="lora_hyper")
def train_study(root: str = gin.REQUIRED, stages: Mapping[str, str | None] = gin.REQUIRED,
                save_dtype: str = "float32", only: Sequence[str] | None = None,
                loaded_base: base_model_lib.BaseModel | None = None) -> StudyResult:
  """Trains the stages in order (see the module's docstring). `save_dtype` stores every stage's
  hypernetwork (the next stage starts from what is stored: bfloat16 rounds it); `only` names the
  stages to train, None all; `loaded_base` as for `train`."""
  if save_dtype not in saved.DTYPES:
    raise StudyError(f"lora_hyper.train_study.save_dtype must be one of {sorted(saved.DTYPES)}, got {save_dtype!r}")
  plan_ = plan(root, stages)
  check_only(plan_, only)
  check_scopes(plan_, scoped_bindings())
  settings = {s.name: stage_settings(s.name) for s in plan_}
  first = settings[plan_[0].name]
  base = loaded_base or base_model_lib.load_base_model(first["base_model"], dtype=first["base_dtype"], on_host=True)
  check_study(plan_, settings, base)

  trained, skipped, left_out = [], [], []
  outputs = {s.name: str(s.output) for s in plan_}
  for stage in plan_:
    if only is not None and stage.name not in only:
      left_out.append(stage.name)
      continue
    if done(stage):
      print(f"[lora-hyper] stage {stage.name}: {stage.output} is saved; skipped", flush=True)
      skipped.append(stage.name)
      continue
    print(f"[lora-hyper] stage {stage.name}: training in {stage.workdir}"
        + (f" from stage {stage.start_from}" if stage.start_from else ""), flush=True)
    given = {"workdir": str(stage.workdir), "loaded_base": base}
    if stage.start_from is not None:
      given["init_from"] = outputs[stage.start_from]
    with gin.config_scope(stage.name):
      result = trainer.train(**given)
      operative = gin.operative_config_str()
    if result.preempted or result.step < settings[stage.name]["steps"]:  # a signal, or stop_after: not done
      print(f"[lora-hyper] stage {stage.name}: stopped at step {result.step}; rerun to resume it", flush=True)
      return StudyResult(tuple(trained), tuple(skipped), stage.name, outputs, tuple(left_out))
    if distributed.is_main_process():
      saved.save_hypernetwork(stage.output, result.config, result.variables, base=result.base,
                              gin_config=operative, dtype=save_dtype, task_encoder=result.task_encoder)
    _sync(f"study stage {stage.name} saved")  # the next stage reads it on every host
    print(f"[lora-hyper] stage {stage.name}: saved {stage.output}", flush=True)
    trained.append(stage.name)
  return StudyResult(tuple(trained), tuple(skipped), None, outputs, tuple(left_out))
