"""KV-cache decoding: greedy against a cache-free loop, sampling filters, stopping, batching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper.adapters import lora
from lora_hyper.model import config as config_lib
from lora_hyper.model import decoding, transformer

CFG = config_lib.tiny_gemma3()


@pytest.fixture(scope="module")
def params():
  # Small embeddings, so random continuations do not just repeat the last token.
  p = transformer.init_params(CFG, jax.random.key(0))
  return {**p, "embedding": p["embedding"] * 0.05}


def _greedy_without_cache(params, prompt, steps, adapter=None):
  seq = list(prompt)
  for _ in range(steps):
    logits = transformer.forward(params, jnp.array([seq]), config=CFG, adapter=adapter).logits[0, -1]
    seq.append(int(jnp.argmax(logits)))
  return seq[len(prompt):]


def _generate(params, prompts, sampling, key=0, stop_ids=(1,), adapter=None):
  width = max(map(len, prompts))
  tokens = np.zeros((len(prompts), width), np.int32)
  for i, p in enumerate(prompts):
    tokens[i, width - len(p):] = p
  out, lengths = decoding.generate(params, jnp.asarray(tokens), jnp.asarray(tokens != 0), jax.random.key(key),
                                   config=CFG, sampling=sampling, stop_ids=stop_ids, adapter=adapter)
  return np.asarray(out), np.asarray(lengths)


def test_greedy_batched_and_padded_equals_a_cache_free_loop(params):
  prompts = [[2, 5, 9, 17, 33], [2, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49]]  # decode past the window of 8
  out, _ = _generate(params, prompts, decoding.SamplingConfig(max_new_tokens=12), stop_ids=(127,))
  for row, prompt in zip(out, prompts):
    assert row.tolist() == _greedy_without_cache(params, prompt, 12)
  assert len(set(out[0].tolist())) > 2  # a non-degenerate continuation


def test_per_example_adapters_in_decoding(params):
  adapter = lora.random(jax.random.key(3), CFG, ("q", "down"), rank=2, batch=2, std=0.3)
  prompts = [[2, 5, 9, 17], [2, 7, 8, 9]]
  out, _ = _generate(params, prompts, decoding.SamplingConfig(max_new_tokens=6), stop_ids=(127,), adapter=adapter)
  for i, prompt in enumerate(prompts):
    assert out[i].tolist() == _greedy_without_cache(params, prompt, 6, lora.take(adapter, i))


def test_stops_at_a_stop_token_and_pads_after_it(params):
  free, _ = _generate(params, [[2, 5, 9, 17, 33]], decoding.SamplingConfig(max_new_tokens=8), stop_ids=(127,))
  stop = int(free[0, 2])
  first = free[0].tolist().index(stop)
  out, lengths = _generate(params, [[2, 5, 9, 17, 33]], decoding.SamplingConfig(max_new_tokens=8), stop_ids=(stop,))
  assert lengths[0] == first + 1
  assert out[0, :first + 1].tolist() == free[0, :first + 1].tolist()
  assert (out[0, first + 1:] == CFG.pad_id).all()


def test_sampling_filters(params):
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 200)
  draw = lambda s: np.array([int(decoding.sample_token(logits, k, s)[0]) for k in keys])
  assert set(draw(decoding.SamplingConfig(temperature=1.0, top_k=1))) == {0}
  assert set(draw(decoding.SamplingConfig(temperature=1.0, top_k=2))) == {0, 1}
  assert set(draw(decoding.SamplingConfig(temperature=1.0, top_p=0.75))) == {0, 1}
  assert set(draw(decoding.SamplingConfig(temperature=1.0))) == {0, 1, 2, 3}


def test_sampling_is_seeded(params):
  sampling = decoding.SamplingConfig(max_new_tokens=10, temperature=1.5)
  a, _ = _generate(params, [[2, 5, 9]], sampling, key=1, stop_ids=(127,))
  b, _ = _generate(params, [[2, 5, 9]], sampling, key=1, stop_ids=(127,))
  c, _ = _generate(params, [[2, 5, 9]], sampling, key=2, stop_ids=(127,))
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()


def test_over_long_prompts_and_bad_settings_are_refused():
  with pytest.raises(ValueError, match="exceeds the model's context of 256"):
    decoding.check_length(CFG, 250, 10)
  with pytest.raises(ValueError, match="top_p"):
    decoding.SamplingConfig(top_p=0.0)
  with pytest.raises(ValueError, match="max_new_tokens"):
    decoding.SamplingConfig(max_new_tokens=0)
