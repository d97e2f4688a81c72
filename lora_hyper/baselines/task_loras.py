"""LoRAs trained by plain gradient descent on supervised task examples: Text-to-LoRA's per-task
"oracle" adapters (the targets of reconstruction) and its multi-task LoRA baseline.

All T task LoRAs train at once: their factors are stacked [T, L, r, d] and each example gathers
the adapter of its task (`task_index`), so one jitted step updates every task. A task's factors
get gradient only from its own examples and Adam is elementwise, so the tasks train exactly as T
separate runs would; every step holds the same number of examples of every task, so no task's
Adam moments run on without its gradient. The multi-task LoRA is the case T = 1.

A step's batch is cut into micro-batches whose gradients are summed (`micro_batch`), so a step
over a hundred tasks fits in memory.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lora_hyper.adapters import lora
from lora_hyper.baselines import context_distillation
from lora_hyper.model import transformer
from lora_hyper.model.config import GemmaConfig
from lora_hyper.training import losses

Array = jax.Array
PyTree = Any
Example = dict[str, np.ndarray]
SEQUENCE_KEYS = ("student_tokens", "student_mask", "student_logits_at", "targets", "loss_mask")


@dataclasses.dataclass(frozen=True)
class TaskLoraConfig:
  """The LoRAs and their optimisation. `scaling` should be the hypernetwork's (T2L: rsLoRA), so
  reconstruction targets and generated adapters share one parametrisation."""

  modules: tuple[str, ...] = ("q", "v")
  rank: int = 8
  scaling: float = 16.0 / 8 ** 0.5
  steps: int = 48
  learning_rate: float = 2e-3
  examples_per_task: int = 1  # per step and task
  micro_batch: int = 32
  seed: int = 0
  # Every task's LoRA starts from the same A (as separate PEFT runs under one fixed seed do), so the
  # library's factors differ only by what each task taught them: reconstruction then learns that,
  # not T random matrices (with independent starts each A is mostly its own noise).
  shared_init: bool = True

  def __post_init__(self):
    if min(self.steps, self.rank, self.examples_per_task, self.micro_batch) < 1:
      raise ValueError(f"steps, rank, examples_per_task and micro_batch must be >= 1: {self}")


def per_task_batches(source, to_example: Callable[[dict], Example], num_tasks: int, examples_per_task: int,
                     ) -> Iterator[Example]:
  """Step s reads examples s*k .. s*k+k-1 (cycling) of every task of a `TaskExamples`-like source
  (index = task * per_task + example), with `task_index`."""
  per_task = len(source) // num_tasks
  for step in itertools.count():
    rows, owners = [], []
    for t in range(num_tasks):
      for j in range(examples_per_task):
        rows.append(to_example(source[t * per_task + (step * examples_per_task + j) % per_task]))
        owners.append(t)
    yield _stack(rows, owners)


def mixed_batches(source, to_example: Callable[[dict], Example], batch_size: int, seed: int) -> Iterator[Example]:
  """Uniformly random examples of the whole source, for the one shared (multi-task) LoRA."""
  rng = np.random.default_rng(seed)
  while True:
    rows = [to_example(source[int(i)]) for i in rng.integers(0, len(source), batch_size)]
    yield _stack(rows, [0] * batch_size)


def _stack(rows: Sequence[Example], owners: Sequence[int]) -> Example:
  """Examples -> one batch of their sequences, with the index of the adapter each one trains."""
  return {**{k: np.stack([r[k] for r in rows]) for k in SEQUENCE_KEYS}, "task_index": np.asarray(owners, np.int32)}


def _micro_batches(batch: Example, size: int) -> tuple[dict[str, np.ndarray], int]:
  """[N, ...] -> [G, size, ...], padded with loss-free rows; and the real row count N."""
  n = len(batch["task_index"])
  groups = -(-n // size)
  out = {}
  for k, v in batch.items():
    padded = np.concatenate([v, np.repeat(v[:1], groups * size - n, axis=0)])
    if k == "loss_mask":
      padded[n:] = False
    out[k] = padded.reshape(groups, size, *v.shape[1:])
  return out, n


def make_step(base_config: GemmaConfig, scaling: float, tx: optax.GradientTransformation):
  """(weights [T, ...], opt_state, base_params, micro-batches [G, m, ...], rows) -> (weights,
  opt_state, loss): the mean over real rows of each row's answer cross-entropy."""

  def group_loss(weights, base_params, group):
    per_example = jax.tree.map(lambda w: w[group["task_index"]], weights)
    logits = transformer.forward(base_params, group["student_tokens"], config=base_config,
                                 mask=group["student_mask"], adapter=lora.LoraAdapter(per_example, scaling),
                                 logits_at=group["student_logits_at"]).logits
    # Per-row mean over its answer tokens, summed over rows (padding rows have no tokens).
    return losses.cross_entropy(logits, group["targets"], group["loss_mask"]) * group["targets"].shape[0]

  def step(weights, opt_state, base_params, groups, rows):
    def accumulate(total, group):
      loss, grads = jax.value_and_grad(group_loss)(weights, base_params, group)
      return jax.tree.map(jnp.add, total, (loss, grads)), None

    zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, weights))
    (loss, grads), _ = jax.lax.scan(accumulate, zero, groups)
    loss, grads = jax.tree.map(lambda x: x / rows, (loss, grads))
    updates, opt_state = tx.update(grads, opt_state, weights)
    return optax.apply_updates(weights, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


@dataclasses.dataclass(frozen=True)
class TrainedLoras:
  adapters: lora.LoraAdapter  # batched [T, L, r, d]
  losses: np.ndarray  # [steps] the mean loss before each update
  seconds: float


def initial_weights(base_config: GemmaConfig, num_adapters: int, config: TaskLoraConfig) -> dict:
  """PEFT-initialised factors [T, L, r, d]: one start for all (`shared_init`) or one each."""
  keys = jax.random.split(jax.random.key(config.seed), num_adapters)
  if config.shared_init:
    keys = jnp.repeat(keys[:1], num_adapters)  # the first key, so T = 1 starts as before either way
  init = jax.vmap(lambda k: dict(context_distillation.init_adapter(
      k, base_config, config.modules, config.rank, scaling=config.scaling).weights))
  return init(keys)


def train(base_params: PyTree, base_config: GemmaConfig, batches: Iterator[Example], num_adapters: int,
          config: TaskLoraConfig, progress: Callable[[int, float], None] | None = None) -> TrainedLoras:
  """Adam on `num_adapters` fresh LoRAs (PEFT init: the first delta is zero) for `config.steps`."""
  weights = initial_weights(base_config, num_adapters, config)
  tx = optax.adam(config.learning_rate)
  opt_state = tx.init(weights)
  step = make_step(base_config, config.scaling, tx)
  history = []
  start = time.perf_counter()
  for i in range(config.steps):
    groups, rows = _micro_batches(next(batches), config.micro_batch)
    weights, opt_state, loss = step(weights, opt_state, base_params, groups, rows)
    history.append(float(loss))
    if progress is not None:
      progress(i + 1, history[-1])
  return TrainedLoras(lora.LoraAdapter(weights, config.scaling), np.asarray(history), time.perf_counter() - start)


def task_dirname(task_id: str) -> str:
  """A task's folder in a library of saved task LoRAs ("string/rot_7" -> "string__rot_7")."""
  return task_id.replace("/", "__")


def library_paths(folder: str, task_ids: Sequence[str]) -> list[str]:
  return [f"{folder}/{task_dirname(t)}" for t in task_ids]
