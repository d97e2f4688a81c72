"""AdamW with warm-up, a decay schedule, gradient clipping and gradient accumulation (optax)."""

from __future__ import annotations

import dataclasses

import jax
import optax

from lora_hyper.hypernetworks.doc_to_lora import CENTER_EMA, CENTER_WEIGHT

# Running statistics live in the params but are set by the step, not learned: no weight decay.
_NOT_DECAYED = (CENTER_EMA, CENTER_WEIGHT)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 4e-5
  end_learning_rate: float = 1e-7
  warmup_steps: int = 0
  # Optimizer updates the schedule spans (after accumulation); decay ends there.
  total_steps: int = 1000
  schedule: str = "cosine"  # cosine | linear | constant
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  grad_clip_norm: float | None = 1.0
  # Micro-batches summed into one update: the effective batch is this many global batches.
  accumulation_steps: int = 1

  def __post_init__(self):
    if self.schedule not in ("cosine", "linear", "constant"):
      raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")
    if self.warmup_steps < 0 or self.total_steps < 1 or self.warmup_steps > self.total_steps:
      raise ValueError(f"need 0 <= warmup_steps ({self.warmup_steps}) <= total_steps ({self.total_steps})")
    if self.accumulation_steps < 1:
      raise ValueError(f"accumulation_steps must be >= 1, got {self.accumulation_steps}")


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
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


def _decayed(params):
  """True for the params weight decay applies to: all but running statistics."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not any(getattr(k, "key", None) in _NOT_DECAYED for k in path), params)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """clip -> AdamW(schedule); wrapped in MultiSteps when accumulating gradients."""
  chain = []
  if cfg.grad_clip_norm is not None:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  chain.append(optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=_decayed))
  tx = optax.chain(*chain)
  if cfg.accumulation_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulation_steps)
  return tx
