"""The meta-training step: one jitted function, sharded over a mesh by logical-axis rules.

Only the hypernetwork's params are trained: the frozen base params enter as an argument (sharded too)
and never reach the optimizer, and its other variable collections (`stats`, e.g. running means)
are what the objective returns for them. The step's random key is folded from (seed, step), so a
resumed run draws exactly the keys an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lora_hyper import sharding

Array = jax.Array
PyTree = Any
# (variables, base_params, batch, rng) -> (loss, (metrics, stats)): see `lora_hyper.training.objectives`.
Objective = Callable[[PyTree, PyTree, dict, Array], tuple[Array, tuple[dict, PyTree]]]


@flax.struct.dataclass
class TrainState:
  step: Array
  params: PyTree
  opt_state: PyTree
  stats: PyTree  # the variables' other collections: not trained, set by the objective ({} if none)


def create_state(variables: PyTree, tx: optax.GradientTransformation) -> TrainState:
  """The state of Flax `variables` {"params": ..., other collections}: only the params get an optimizer."""
  params = variables["params"]
  stats = {name: value for name, value in variables.items() if name != "params"}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), stats=stats)


def make_train_step(objective: Objective, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    seed: int = 0) -> Callable[[TrainState, PyTree, dict], tuple[TrainState, dict]]:
  """(state, base_params, batch) -> (new state, metrics); pure, ready for `jax.jit`."""

  def train_step(state: TrainState, base_params: PyTree, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    base_params = jax.lax.stop_gradient(base_params)

    def loss_fn(params):
      return objective({"params": params, **state.stats}, base_params, batch, rng)

    (loss, (metrics, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(_optimizer_step(opt_state, state.step))}
    return TrainState(state.step + 1, params, opt_state, {**state.stats, **stats}), metrics

  return train_step


def _optimizer_step(opt_state: PyTree, step: Array) -> Array:
  """Updates applied so far: with gradient accumulation (optax.MultiSteps) fewer than steps."""
  return opt_state.gradient_step if isinstance(opt_state, optax.MultiStepsState) else step


# ----------------------------------------------------------------------------- sharding


def state_shardings(abstract_variables: PyTree, tx: optax.GradientTransformation, mesh: Mesh) -> TrainState:
  """NamedShardings of the whole TrainState from variables boxed with their logical axes: params and
  statistics by those axes, Adam moments like their params (optax maps over the boxes), counters
  replicated."""
  abstract = jax.eval_shape(lambda v: create_state(v, tx), abstract_variables)
  return sharding.logical_sharding(nn.get_partition_spec(abstract), mesh)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches split their leading axis over the data-parallel mesh axes."""
  return sharding.logical_sharding(PartitionSpec("batch"), mesh)


def jit_train_step(train_step, mesh: Mesh, state_sharding: TrainState, base_sharding: PyTree, batch_example: dict):
  """jit with declared in/out shardings; the old state is donated (updated in place)."""
  data = batch_sharding(mesh)
  batch_shardings = jax.tree.map(lambda _: data, batch_example)
  metrics_sharding = sharding.replicated(mesh)
  jitted = jax.jit(train_step, in_shardings=(state_sharding, base_sharding, batch_shardings),
                   out_shardings=(state_sharding, metrics_sharding), donate_argnums=(0,))

  def in_mesh(fn):
    def call(*args):
      with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
        return fn(*args)
    return call

  run = in_mesh(jitted)
  run.jitted = jitted
  run.lower = in_mesh(jitted.lower)  # ahead of time, from arrays or ShapeDtypeStructs with shardings
  return run
