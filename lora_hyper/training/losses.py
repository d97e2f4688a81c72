"""Meta-training objectives. Logits are float32 [B, P, V] at the P positions a loss reads.

Token losses average over the real (mask=True) tokens of each example first, then over examples,
so every context weighs the same whatever its answer length ("averaged per context").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lora_hyper.adapters.lora import LoraAdapter

Array = jax.Array


def _per_example_mean(values: Array, mask: Array) -> Array:
  mask = mask.astype(values.dtype)
  per_example = jnp.sum(values * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
  return jnp.mean(per_example)


def distillation_kl(student_logits: Array, teacher_logits: Array, mask: Array) -> Array:
  """KL(p_teacher || p_student) over the full vocabulary, per token."""
  teacher_logp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)
  student_logp = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  kl = jnp.sum(jnp.exp(teacher_logp) * (teacher_logp - student_logp), axis=-1)
  return _per_example_mean(kl, mask)


def topk_distillation(student_logits: Array, teacher_topk_logprobs: Array, teacher_topk_ids: Array,
                      mask: Array) -> Array:
  """-sum_k p_teacher(k) log q_student(k) at the teacher's top-k ids (the public D2L code's loss).

  q_student is a full-vocabulary log-softmax; the teacher's probabilities are used as stored
  (not renormalised over the k ids), so the teacher only needs its top-k saved offline.
  """
  student_logp = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(student_logp, teacher_topk_ids, axis=-1)
  loss = -jnp.sum(jnp.exp(teacher_topk_logprobs.astype(jnp.float32)) * picked, axis=-1)
  return _per_example_mean(loss, mask)


def teacher_topk(teacher_logits: Array, k: int) -> tuple[Array, Array]:
  """(log-probs, ids) of the teacher's k most likely tokens, as stored for `topk_distillation`."""
  logp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)
  return jax.lax.top_k(logp, k)


def cross_entropy(logits: Array, targets: Array, mask: Array, label_smoothing: float = 0.0) -> Array:
  """Next-token cross-entropy with optional label smoothing (mass spread uniformly over the vocab).

  Written as (1 - eps) * nll + eps * mean(-log p) so no [B, P, V] one-hot is ever built.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  if label_smoothing:
    nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
  return _per_example_mean(nll, mask)


def factor_penalty(adapter: LoraAdapter, kind: str) -> Array:
  """Mean |w| (l1, Doc-to-LoRA) or mean w^2 (l2, Text-to-LoRA) over the generated A and B."""
  if kind not in ("l1", "l2"):
    raise ValueError(f"penalty kind must be 'l1' or 'l2', got {kind!r}")
  leaves = jax.tree.leaves(dict(adapter.weights))
  fn = jnp.abs if kind == "l1" else jnp.square
  return sum(jnp.mean(fn(w.astype(jnp.float32))) for w in leaves) / len(leaves)


def reconstruction_l1(generated: LoraAdapter, target: LoraAdapter,
                      stats: dict[str, dict[str, tuple[Array, Array]]] | None = None) -> Array:
  """L1 between generated and target factors (Text-to-LoRA reconstruction mode).

  `stats[module][a|b] = (mean, std)` z-scores both sides per element first, so every weight of
  the target library counts alike.
  """
  if set(generated.weights) != set(target.weights):
    raise ValueError(f"generated modules {sorted(generated.weights)} != target modules {sorted(target.weights)}")
  losses = []
  for module, factors in generated.weights.items():
    for name in ("a", "b"):
      gen, tgt = factors[name].astype(jnp.float32), target.weights[module][name].astype(jnp.float32)
      if gen.shape != tgt.shape:
        raise ValueError(f"{module}.{name}: generated {gen.shape} vs target {tgt.shape}")
      if stats is not None:
        mean, std = stats[module][name]
        gen, tgt = (gen - mean) / std, (tgt - mean) / std
      losses.append(jnp.mean(jnp.abs(gen - tgt)))
  return sum(losses) / len(losses)
