"""Functional LoRA deltas against merged weights W + s * A^T B (the reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper.adapters import lora
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer
from lora_hyper.model.config import MODULES

CFG = config_lib.tiny_gemma3()


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def tokens():
  return jax.random.randint(jax.random.key(1), (3, 20), 3, CFG.vocab_size)


def _logits(params, tokens, adapter=None):
  return np.asarray(transformer.forward(params, tokens, config=CFG, adapter=adapter).logits)


def test_zero_adapter_reproduces_the_base_exactly(params, tokens):
  zero = lora.zeros(CFG, MODULES, rank=4, scaling=2.0)
  np.testing.assert_array_equal(_logits(params, tokens, zero), _logits(params, tokens))


def test_adapter_equals_merged_weights_on_every_module(params, tokens):
  adapter = lora.random(jax.random.key(2), CFG, MODULES, rank=4, scaling=1.5, std=0.1)
  with_adapter = _logits(params, tokens, adapter)
  merged = _logits(lora.merged_params(params, adapter), tokens)
  assert np.abs(with_adapter - _logits(params, tokens)).max() > 1e-2  # the adapter does something
  np.testing.assert_allclose(with_adapter, merged, atol=1e-4, rtol=1e-4)


def test_base_params_are_untouched(params, tokens):
  before = jax.tree.map(np.array, params)
  _logits(params, tokens, lora.random(jax.random.key(3), CFG, ("q", "down"), rank=2, std=0.1))
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, params))


def test_per_example_adapters_equal_separate_calls(params, tokens):
  batched = lora.random(jax.random.key(4), CFG, ("q", "v", "down"), rank=3, batch=3, scaling=2.0, std=0.1)
  together = _logits(params, tokens, batched)
  for i in range(3):
    alone = _logits(params, tokens[i:i + 1], lora.take(batched, i))
    np.testing.assert_allclose(together[i:i + 1], alone, atol=1e-5, rtol=1e-5)
  assert np.abs(together[0] - together[1]).max() > 1e-3


def test_rank_concatenation_equals_sum_of_deltas(params, tokens):
  first = lora.random(jax.random.key(5), CFG, ("o", "up", "down"), rank=4, scaling=0.5, std=0.1)
  second = lora.random(jax.random.key(6), CFG, ("o", "up", "down"), rank=4, scaling=0.5, std=0.1)
  both = lora.concat([first, second])
  assert both.rank == 8
  summed = lora.merged_params(lora.merged_params(params, first), second)
  np.testing.assert_allclose(_logits(params, tokens, both), _logits(summed, tokens), atol=1e-4, rtol=1e-4)


def test_gradients_flow_to_the_adapter(params, tokens):
  adapter = lora.random(jax.random.key(7), CFG, ("down",), rank=2, std=0.1)
  loss = lambda ad: jnp.mean(transformer.forward(params, tokens, config=CFG, adapter=ad).logits ** 2)
  grads = jax.grad(loss)(adapter)
  for leaf in jax.tree.leaves(grads):
    assert np.isfinite(leaf).all() and np.abs(leaf).max() > 0


def test_per_example_adapter_gradients_equal_separate_calls(params, tokens):
  # Each layer's factors are sliced out of the batched adapter; their gradients must land in the
  # right example and layer.
  batched = lora.random(jax.random.key(8), CFG, ("k", "down"), rank=2, batch=3, std=0.1)
  loss = lambda ad, x: jnp.sum(transformer.forward(params, x, config=CFG, adapter=ad).logits[:, -1] ** 2)
  together = jax.grad(loss)(batched, tokens)
  for i in range(3):
    alone = jax.grad(loss)(lora.take(batched, i), tokens[i:i + 1])
    jax.tree.map(lambda t, a: np.testing.assert_allclose(t[i], a, atol=1e-5 * np.abs(a).max(), rtol=1e-4),
                 together, alone)
  assert all(np.abs(together.weights["down"]["a"][0, layer]).max() > 0 for layer in range(CFG.num_layers))


def test_layer_weights_slices_one_layer_of_shared_and_per_example_factors():
  shared = {"down": {"a": jnp.arange(3 * 2 * 4.0).reshape(3, 2, 4)}}
  per_example = {"down": {"a": jnp.arange(5 * 3 * 2 * 4.0).reshape(5, 3, 2, 4)}}
  np.testing.assert_array_equal(lora.layer_weights(shared, jnp.asarray(1))["down"]["a"], shared["down"]["a"][1])
  np.testing.assert_array_equal(lora.layer_weights(per_example, jnp.asarray(2))["down"]["a"],
                                per_example["down"]["a"][:, 2])


@pytest.mark.parametrize("bad, message", [
    (lambda: lora.zeros(config_lib.tiny_gemma3(num_layers=6, sliding_layers=(True,) * 6), ("q",), 2),
     "needs a"),
    (lambda: lora.LoraAdapter({"q": {"a": jnp.zeros((3, 2, 31)), "b": jnp.zeros((3, 2, 64))}}), "module 'q'"),
    (lambda: lora.LoraAdapter({"qkv": {"a": jnp.zeros((3, 2, 32)), "b": jnp.zeros((3, 2, 64))}}), "unknown module"),
    (lambda: lora.zeros(CFG, ("q",), 2, batch=2), "2 per-example adapters for a batch of 3"),
])
def test_mismatched_adapters_get_clear_errors(params, tokens, bad, message):
  with pytest.raises(ValueError, match=message):
    transformer.forward(params, tokens, config=CFG, adapter=bad())
