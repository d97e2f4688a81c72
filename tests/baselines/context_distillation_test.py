"""Gradient context distillation and supervised LoRA fitting on a tiny random Gemma 3."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper.adapters import lora
from lora_hyper.baselines import context_distillation as cd
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer


@pytest.fixture(scope="module")
def tiny():
  cfg = config_lib.tiny_gemma3()
  return cfg, transformer.init_params(cfg, jax.random.key(0))


def _ids(rng, n):
  return [int(t) for t in rng.integers(3, 100, n)]


def test_distillation_lowers_the_kl(tiny):
  cfg, params = tiny
  rng = np.random.default_rng(0)
  settings = cd.DistillConfig(modules=("down", "v"), rank=4, steps=40, learning_rate=1e-2)
  result = cd.distill(params, cfg, _ids(rng, 24), _ids(rng, 6), _ids(rng, 5), settings=settings)
  assert result.losses.shape == (40,)
  assert result.losses[0] > 0
  assert result.losses[-1] < 0.5 * result.losses[0], result.losses
  assert result.adapter.modules == ("v", "down") and result.adapter.rank == 4
  t = result.timings
  assert min(t.compile_s, t.teacher_s, t.steps_s) > 0 and t.answer_s == 0
  assert t.update_s == pytest.approx(t.teacher_s + t.steps_s)


def test_first_loss_is_the_bare_base_models_kl(tiny):
  """B = 0 at init: the first loss is KL(teacher || base model without the context)."""
  cfg, params = tiny
  rng = np.random.default_rng(1)
  context, prompt, answer = _ids(rng, 10), _ids(rng, 4), _ids(rng, 3)
  result = cd.distill(params, cfg, context, prompt, answer, settings=cd.DistillConfig(rank=2, steps=1))

  def logits(prefix):
    tokens = jnp.asarray([[cfg.bos_id, *prefix, *answer]])
    at = jnp.arange(len(prefix), len(prefix) + len(answer))[None]
    return transformer.forward(params, tokens, config=cfg, logits_at=at).logits

  teacher, student = logits(context + prompt), logits(prompt)
  p, q = jax.nn.log_softmax(teacher), jax.nn.log_softmax(student)
  expected = float(jnp.mean(jnp.sum(jnp.exp(p) * (p - q), axis=-1)))
  np.testing.assert_allclose(result.losses[0], expected, rtol=1e-4)


def test_teacher_answers_greedily_when_no_answer_is_given(tiny):
  cfg, params = tiny
  rng = np.random.default_rng(2)
  context, prompt = _ids(rng, 12), _ids(rng, 5)
  settings = cd.DistillConfig(rank=2, steps=2, max_answer_tokens=6)
  result = cd.distill(params, cfg, context, prompt, settings=settings, stop_ids=(-1,))
  tokens = [cfg.bos_id, *context, *prompt]
  for _ in range(6):  # greedy, cache-free reference
    tokens.append(int(jnp.argmax(transformer.forward(params, jnp.asarray([tokens]), config=cfg).logits[0, -1])))
  assert list(result.answer) == tokens[-6:]
  assert result.timings.answer_s > 0


def test_fit_cross_entropy_learns_targets_with_minibatches(tiny):
  cfg, params = tiny
  rng = np.random.default_rng(3)
  tokens = rng.integers(3, 100, (4, 10)).astype(np.int32)
  batch = {"tokens": tokens, "mask": np.ones_like(tokens, bool), "logits_at": np.tile(np.arange(5, 9), (4, 1)),
           "loss_mask": np.ones((4, 4), bool), "targets": tokens[:, 6:10]}
  adapter = cd.init_adapter(jax.random.key(1), cfg, ("down",), 4, scaling=2.0)
  np.testing.assert_array_equal(adapter.weights["down"]["b"], 0.0)
  result = cd.fit(params, cfg, adapter, batch, objective="ce", steps=30, learning_rate=3e-2, batch_size=2)
  assert result.losses[-4:].mean() < 0.7 * result.losses[:4].mean(), result.losses
  # The input adapter is untouched (the step donates copies).
  np.testing.assert_array_equal(adapter.weights["down"]["b"], 0.0)


def test_fit_rejects_bad_inputs(tiny):
  cfg, params = tiny
  adapter = cd.init_adapter(jax.random.key(0), cfg, ("down",), 2, scaling=1.0)
  with pytest.raises(ValueError, match="objective"):
    cd.fit(params, cfg, adapter, {}, objective="mse", steps=1, learning_rate=1e-3)
  with pytest.raises(ValueError, match="teacher_logits"):
    cd.fit(params, cfg, adapter, {"tokens": np.zeros((1, 2))}, objective="kl", steps=1, learning_rate=1e-3)
  with pytest.raises(ValueError, match="batched"):
    batched = lora.zeros(cfg, ("down",), 2, batch=2)
    batch = {k: np.zeros((1, 2), np.int32) for k in ("tokens", "mask", "logits_at", "loss_mask", "targets")}
    cd.fit(params, cfg, batched, batch, objective="ce", steps=1, learning_rate=1e-3)


def test_several_queries_distil_as_each_would_alone(tiny):
  """Prompts of different lengths share one padded batch: the teacher answers each as it would
  alone, and the first loss is the mean of each prompt's own bare-model KL."""
  cfg, params = tiny
  rng = np.random.default_rng(4)
  context, prompts = _ids(rng, 12), [_ids(rng, 3), _ids(rng, 7)]
  settings = cd.DistillConfig(rank=2, steps=1, max_answer_tokens=4)
  together = cd.distill_queries(params, cfg, context, prompts, settings=settings, stop_ids=(-1,))
  alone = [cd.distill(params, cfg, context, p, settings=settings, stop_ids=(-1,)) for p in prompts]
  assert together.answers == tuple(r.answer for r in alone)
  np.testing.assert_allclose(together.losses[0], np.mean([r.losses[0] for r in alone]), rtol=1e-4)
  with pytest.raises(ValueError, match="1 answers for 2 prompts"):
    cd.distill_queries(params, cfg, context, prompts, [[5]], settings=settings)
