"""AdamW with warm-up, a decay schedule, gradient clipping and gradient accumulation (optax), and
optionally a learning-rate multiplier and warm-up of its own for named modules."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 4e-5
  end_learning_rate: float = 1e-7
  warmup_steps: int = 0
  # Optimizer updates the schedule spans (after accumulation); decay ends there. None: the run's
  # steps / accumulation_steps (`for_steps`, which the trainer applies), so a stage states its length once.
  total_steps: int | None = None
  schedule: str = "cosine"  # cosine | linear | constant
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  grad_clip_norm: float | None = 1.0
  # Micro-batches summed into one update: the effective batch is this many global batches.
  accumulation_steps: int = 1
  # (module name, learning-rate multiplier, warm-up updates): the params under a module of that name
  # train at multiplier x the schedule, ramped linearly from 0 over the warm-up. A new part of a
  # trained network can start slowly this way while the rest trains at full rate, e.g.
  # (("gates_down", 1.0, 600),) for Doc-to-LoRA's chunk gates switched on in a second stage.
  param_groups: tuple[tuple[str, float, int], ...] = ()

  def __post_init__(self):
    if self.schedule not in ("cosine", "linear", "constant"):
      raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")
    if self.warmup_steps < 0 or (self.total_steps is not None and
                                 (self.total_steps < 1 or self.warmup_steps > self.total_steps)):
      raise ValueError(f"need 0 <= warmup_steps ({self.warmup_steps}) <= total_steps ({self.total_steps})")
    if self.accumulation_steps < 1:
      raise ValueError(f"accumulation_steps must be >= 1, got {self.accumulation_steps}")
    names = [group[0] for group in self.param_groups]
    for group in self.param_groups:
      if len(group) != 3 or not isinstance(group[0], str) or group[1] < 0 or group[2] < 0:
        raise ValueError("each param_groups entry is (module name, multiplier >= 0, warm-up steps >= 0), "
                         f"got {group!r}")
    if len(set(names)) != len(names):
      raise ValueError(f"param_groups names a module twice: {names}")


def for_steps(cfg: OptimizerConfig, steps: int) -> OptimizerConfig:
  """`cfg` with an unset total_steps made the updates of a run of `steps` micro-batches."""
  if cfg.total_steps is not None:
    return cfg
  if steps < 0 or steps % cfg.accumulation_steps:
    raise ValueError(f"OptimizerConfig.total_steps is unset, so it is steps / accumulation_steps, but steps={steps} "
                     f"is not a multiple of accumulation_steps={cfg.accumulation_steps}; bind "
                     "lora_hyper.OptimizerConfig.total_steps or change the steps")
  # A run of no steps (saving a fresh hypernetwork, checking a config) still needs a valid schedule.
  return dataclasses.replace(cfg, total_steps=max(steps // cfg.accumulation_steps, 1))


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  if cfg.total_steps is None:
    raise ValueError("OptimizerConfig.total_steps is unset: resolve it with optimizer.for_steps(cfg, steps)")
  warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps) if cfg.warmup_steps else None
  decay_steps = max(cfg.total_steps - cfg.warmup_steps, 1)
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(cfg.learning_rate, decay_steps, alpha=cfg.end_learning_rate / cfg.learning_rate)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(cfg.learning_rate, cfg.end_learning_rate, decay_steps)
  else:
    decay = optax.constant_schedule(cfg.learning_rate)
  if warmup is None:
    return decay
  return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def _path_names(path) -> set[str]:
  """The module and param names on a leaf's path in a params tree."""
  return {getattr(k, "key", None) for k in path}


def _group_labels(groups: tuple[tuple[str, float, int], ...]):
  """params -> the name of the first group whose module is on each leaf's path, else "rest"."""
  names = [group[0] for group in groups]

  def label(path, _):
    on_path = _path_names(path)
    return next((name for name in names if name in on_path), "rest")

  def labels(params):
    tree = jax.tree_util.tree_map_with_path(label, params)
    unused = set(names) - set(jax.tree.leaves(tree))
    if unused:
      raise ValueError(f"param_groups names modules no parameter is under: {sorted(unused)}")
    return tree

  return labels


def _group_scales(groups: tuple[tuple[str, float, int], ...]) -> optax.GradientTransformation:
  """Scales each group's AdamW update (the schedule's lr times it) by multiplier x min(1, step / warm-up)."""
  def ramp(multiplier, warmup):
    return lambda step: multiplier * (jnp.minimum(1.0, step / warmup) if warmup else 1.0)

  transforms = {name: optax.scale_by_schedule(ramp(multiplier, warmup)) for name, multiplier, warmup in groups}
  return optax.multi_transform({"rest": optax.identity(), **transforms}, _group_labels(groups))


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """clip -> AdamW(schedule) [-> per-group scale]; wrapped in MultiSteps when accumulating gradients."""
  chain = []
  if cfg.grad_clip_norm is not None:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  chain.append(optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay))
  if cfg.param_groups:
    chain.append(_group_scales(cfg.param_groups))
  tx = optax.chain(*chain)
  if cfg.accumulation_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulation_steps)
  return tx
