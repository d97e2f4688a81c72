"""The meta-training step as `train` compiles it, built from the base model's config and a mesh
alone: no weights, no data. `train` runs it; `lora_hyper.training.aot` compiles the same program
for devices this machine lacks (TPU topologies) to read what each chip would hold."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import optax
from jax.sharding import Mesh, NamedSharding

from lora_hyper import sharding
from lora_hyper.hypernetworks import kinds
from lora_hyper.model import transformer
from lora_hyper.model.config import GemmaConfig
from lora_hyper.training import objectives, step as step_lib
from lora_hyper.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer

PyTree = Any

DEFAULT_HYPERNETWORK = "d2l_small"  # a run that names no preset and starts from no saved one

OBJECTIVES = {"d2l_kl": (objectives.DocDistillation, {"loss": "kl"}),
              "d2l_topk": (objectives.DocDistillation, {"loss": "topk"}),
              "d2l_ce": (objectives.DocDistillation, {"loss": "ce"}),
              "t2l_sft": (objectives.TaskSFT, {}),
              "t2l_recon": (objectives.TaskReconstruction, {})}


def make_objective(name: str, hyper: Any, overrides: dict | None = None) -> Any:
  if name not in OBJECTIVES:
    raise ValueError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}")
  cls, defaults = OBJECTIVES[name]
  return cls(hyper, **{**defaults, **(overrides or {})})


@dataclasses.dataclass(frozen=True)
class StepProgram:
  """Everything the jitted step is made of, with the shardings of its inputs on `mesh`."""

  base_config: GemmaConfig  # as the step computes (remat, compute dtype)
  kind: kinds.Kind
  hyper: Any
  objective: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: Mesh
  state_sharding: step_lib.TrainState
  base_sharding: PyTree
  batch_sharding: NamedSharding
  train_step: Callable

  def _fresh_state(self, key: jax.Array) -> step_lib.TrainState:
    return step_lib.create_state(self.kind.init(self.hyper, key), self.tx)

  def init_state(self, key: jax.Array) -> step_lib.TrainState:
    """A fresh state, created already sharded."""
    return jax.jit(self._fresh_state, out_shardings=self.state_sharding)(key)

  def abstract_state(self) -> step_lib.TrainState:
    """The state's shapes and shardings, for restoring or compiling without creating it."""
    return _with_shardings(jax.eval_shape(self._fresh_state, jax.random.key(0)), self.state_sharding)

  def abstract_base_params(self, param_dtype: str) -> PyTree:
    config = self.base_config.replace(param_dtype=param_dtype)
    shapes = jax.eval_shape(lambda k: transformer.init_params(config, k), jax.random.key(0))
    return _with_shardings(shapes, self.base_sharding)

  def jit(self, batch_example: dict) -> Callable:
    """The step jitted with these shardings; `batch_example` gives the batch's keys."""
    return step_lib.jit_train_step(self.train_step, self.mesh, self.state_sharding, self.base_sharding,
                                   batch_example)


def hyper_config(base_config: GemmaConfig, hypernetwork: str | None, hyper_overrides: dict | None,
                 architecture: Any = None) -> tuple[kinds.Kind, Any]:
  """(kind, config) of a preset with overrides, or, with no preset, of `architecture` (a saved
  hypernetwork's config) with the overrides on top; the base is `base_config` either way."""
  if hypernetwork is not None or architecture is None:
    return kinds.from_preset(hypernetwork or DEFAULT_HYPERNETWORK, base_config, hyper_overrides)
  kind = kinds.of_config(architecture)
  try:
    return kind, architecture.replace(base=base_config, **(hyper_overrides or {}))
  except (TypeError, ValueError) as e:
    raise ValueError(f"hyper_overrides {hyper_overrides!r} do not apply to the saved {kind.name} config: {e}") from None


def build(base_config: GemmaConfig, mesh: Mesh, *, hypernetwork: str | None, hyper_overrides: dict | None,
          objective: str, objective_overrides: dict | None, optimizer: OptimizerConfig, remat: bool,
          compute_dtype: str, seed: int, architecture: Any = None) -> StepProgram:
  config = base_config.replace(remat=remat, dtype=compute_dtype)
  kind, hyper = hyper_config(config, hypernetwork, hyper_overrides, architecture)
  objective_fn = make_objective(objective, hyper, objective_overrides)
  tx = make_optimizer(optimizer)
  schedule = learning_rate_schedule(optimizer)
  return StepProgram(
      base_config=config, kind=kind, hyper=hyper, objective=objective_fn, tx=tx, schedule=schedule, mesh=mesh,
      state_sharding=step_lib.state_shardings(kind.abstract_variables(hyper), tx, mesh),
      base_sharding=sharding.logical_sharding(transformer.param_logical_axes(config), mesh),
      batch_sharding=step_lib.batch_sharding(mesh),
      train_step=step_lib.make_train_step(objective_fn, tx, schedule, seed=seed))


def check_batch_splits(global_batch_size: int, mesh: Mesh) -> None:
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  if global_batch_size % data_parallel:
    raise ValueError(f"global_batch_size={global_batch_size} does not split over the mesh's {data_parallel} "
                     f"data-parallel devices (data x fsdp of the mesh {dict(mesh.shape)})")


def _with_shardings(shapes: PyTree, shardings: PyTree) -> PyTree:
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
