"""Objectives against explicit numpy formulas and optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lora_hyper.adapters import lora
from lora_hyper.model import config as config_lib
from lora_hyper.training import losses

B, P, V = 3, 5, 11


@pytest.fixture()
def logits():
  ks = jax.random.split(jax.random.key(0), 3)
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
  return jax.random.normal(ks[0], (B, P, V)) * 2, jax.random.normal(ks[1], (B, P, V)) * 2, mask


def _per_context(values, mask):
  return np.mean([values[b][mask[b]].mean() for b in range(B)])


def test_kl_matches_explicit_formula_and_vanishes_on_equal_logits(logits):
  student, teacher, mask = logits
  p = np.asarray(jax.nn.softmax(teacher)); q = np.asarray(jax.nn.softmax(student))
  expected = _per_context((p * (np.log(p) - np.log(q))).sum(-1), np.asarray(mask))
  np.testing.assert_allclose(losses.distillation_kl(student, teacher, mask), expected, rtol=1e-5)
  assert abs(float(losses.distillation_kl(teacher, teacher, mask))) < 1e-6


def test_topk_distillation_with_full_k_is_cross_entropy_to_the_teacher(logits):
  student, teacher, mask = logits
  logp, ids = losses.teacher_topk(teacher, V)
  full = losses.topk_distillation(student, logp, ids, mask)
  kl = losses.distillation_kl(student, teacher, mask)
  p = np.asarray(jax.nn.softmax(teacher))
  entropy = _per_context(-(p * np.log(p)).sum(-1), np.asarray(mask))
  np.testing.assert_allclose(full, kl + entropy, rtol=1e-5)  # H(p, q) = KL + H(p)
  top4 = losses.topk_distillation(student, *losses.teacher_topk(teacher, 4), mask)
  assert 0 < float(top4) < float(full)


def test_cross_entropy_matches_optax_with_and_without_smoothing(logits):
  student, _, mask = logits
  targets = jax.random.randint(jax.random.key(1), (B, P), 0, V)
  for eps in (0.0, 0.1):
    labels = optax.smooth_labels(jax.nn.one_hot(targets, V), eps)
    ref = _per_context(np.asarray(optax.softmax_cross_entropy(student, labels)), np.asarray(mask))
    np.testing.assert_allclose(losses.cross_entropy(student, targets, mask, eps), ref, rtol=1e-5)


def test_masked_tokens_do_not_count(logits):
  student, teacher, mask = logits
  changed = student.at[0, 4].set(100.0)  # position 4 of example 0 is padding
  np.testing.assert_allclose(losses.distillation_kl(changed, teacher, mask),
                             losses.distillation_kl(student, teacher, mask))


def test_penalties_and_reconstruction():
  cfg = config_lib.tiny_gemma3()
  a = lora.random(jax.random.key(2), cfg, ("q", "down"), rank=2, std=0.5)
  b = lora.random(jax.random.key(3), cfg, ("q", "down"), rank=2, std=0.5)
  leaves = jax.tree.leaves(dict(a.weights))
  np.testing.assert_allclose(losses.factor_penalty(a, "l1"), np.mean([np.abs(w).mean() for w in leaves]), rtol=1e-6)
  np.testing.assert_allclose(losses.factor_penalty(a, "l2"), np.mean([(w ** 2).mean() for w in leaves]), rtol=1e-6)
  assert float(losses.reconstruction_l1(a, a)) == 0.0
  diffs = [np.abs(a.weights[m][n] - b.weights[m][n]).mean() for m in ("q", "down") for n in ("a", "b")]
  np.testing.assert_allclose(losses.reconstruction_l1(a, b), np.mean(diffs), rtol=1e-6)
  stats = {m: {n: (jnp.zeros(()), jnp.full((), 2.0)) for n in ("a", "b")} for m in ("q", "down")}
  np.testing.assert_allclose(losses.reconstruction_l1(a, b, stats), np.mean(diffs) / 2, rtol=1e-6)
  with pytest.raises(ValueError, match="penalty kind"):
    losses.factor_penalty(a, "l3")
