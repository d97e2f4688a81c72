"""The window-aware KV cache: the same tokens and logits as the full cache and as transformers, past the window,
batched with left padding and per-example adapters, in the bytes it promises."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper.adapters import lora
from lora_hyper.model import config as config_lib
from lora_hyper.model import decoding, transformer

MB = 2**20


def _left_padded(rng, lengths, vocab=128):
  width = max(lengths)
  tokens = np.zeros((len(lengths), width), np.int32)
  for i, n in enumerate(lengths):
    tokens[i, width - n:] = np.concatenate([[2], rng.integers(3, vocab, n - 1)])
  return jnp.asarray(tokens), jnp.asarray(tokens != 0)


def _greedy(params, cfg, tokens, mask, steps, *, windowed, adapter=None):
  """Greedy continuation through `forward` and the cache: (tokens [B, steps], logits [B, steps, V], cache)."""
  b, t = tokens.shape
  positions = transformer.default_positions(mask)
  cache = transformer.KVCache.empty(cfg, b, t + steps, windowed=windowed)
  out = transformer.forward(params, tokens, config=cfg, mask=mask, positions=positions, adapter=adapter, cache=cache,
                            logits_at=jnp.full((b, 1), t - 1))
  new, logits, position = [], [], positions[:, -1:]
  for _ in range(steps):
    logits.append(out.logits[:, -1])
    new.append(jnp.argmax(out.logits[:, -1], axis=-1).astype(jnp.int32))
    position = position + 1
    out = transformer.forward(params, new[-1][:, None], config=cfg, positions=position, adapter=adapter,
                              cache=out.cache)
  return np.stack(new, axis=1), np.stack(logits, axis=1), out.cache


def _generate(params, cfg, tokens, mask, steps, *, windowed, adapter=None):
  out, _ = decoding.generate(params, tokens, mask, jax.random.key(0), config=cfg, stop_ids=(-1,), adapter=adapter,
                             sampling=decoding.SamplingConfig(max_new_tokens=steps), windowed_cache=windowed)
  return np.asarray(out)


@pytest.mark.torch
@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_greedy_tokens_and_logits_match_the_full_cache_and_transformers(family):
  import torch

  from hf_reference import ours_from_hf, tiny_hf_model

  model = tiny_hf_model(family)
  cfg, params = ours_from_hf(model)
  assert cfg.sliding_window == 8
  tokens, mask = _left_padded(np.random.default_rng(0), [14, 10])  # both longer than the window, left-padded
  steps = 12  # decoding goes on past the window too
  with torch.no_grad():
    ref = model.generate(torch.tensor(np.asarray(tokens), dtype=torch.long),
                         attention_mask=torch.tensor(np.asarray(mask), dtype=torch.long), max_new_tokens=steps,
                         do_sample=False, eos_token_id=None, pad_token_id=0, output_logits=True,
                         return_dict_in_generate=True)
  ref_tokens = ref.sequences[:, tokens.shape[1]:].numpy()
  ref_logits = np.stack([x.numpy() for x in ref.logits], axis=1)

  window_tokens, window_logits, cache = _greedy(params, cfg, tokens, mask, steps, windowed=True)
  full_tokens, full_logits, _ = _greedy(params, cfg, tokens, mask, steps, windowed=False)
  assert cache.window.k.shape[2] == cfg.sliding_window < tokens.shape[1] + steps
  assert len({tuple(row) for row in ref_tokens}) == 2 and len(set(ref_tokens[0].tolist())) > 2  # not degenerate
  np.testing.assert_array_equal(window_tokens, ref_tokens)
  np.testing.assert_array_equal(full_tokens, ref_tokens)
  for windowed in (True, False):
    np.testing.assert_array_equal(_generate(params, cfg, tokens, mask, steps, windowed=windowed), ref_tokens)
  np.testing.assert_allclose(window_logits, full_logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(window_logits, ref_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preset", ["tiny_gemma2", "tiny_gemma3"])
def test_per_example_adapters_give_the_full_caches_tokens(preset):
  cfg = config_lib.PRESETS[preset]()
  params = transformer.init_params(cfg, jax.random.key(1))
  params = {**params, "embedding": params["embedding"] * 0.05}  # random continuations that do not just repeat
  adapter = lora.random(jax.random.key(2), cfg, ("q", "k", "v", "down"), rank=2, batch=2, std=0.3)
  assert not np.allclose(adapter.weights["k"]["a"][0], adapter.weights["k"]["a"][1])  # two different adapters
  tokens, mask = _left_padded(np.random.default_rng(1), [13, 10])
  tokens = tokens.at[1].set(tokens[0])  # the same prompt twice (padding aside): only the adapters differ
  mask = tokens != 0
  steps = 12
  windowed = _generate(params, cfg, tokens, mask, steps, windowed=True, adapter=adapter)
  np.testing.assert_array_equal(windowed, _generate(params, cfg, tokens, mask, steps, windowed=False, adapter=adapter))
  assert (windowed[0] != windowed[1]).any()  # each row decoded with its own adapter
  assert (windowed != _generate(params, cfg, tokens, mask, steps, windowed=True)).any()
  # Logits too, and each row as if decoded alone with its adapter.
  window_tokens, window_logits, _ = _greedy(params, cfg, tokens, mask, steps, windowed=True, adapter=adapter)
  _, full_logits, _ = _greedy(params, cfg, tokens, mask, steps, windowed=False, adapter=adapter)
  np.testing.assert_array_equal(window_tokens, windowed)
  np.testing.assert_allclose(window_logits, full_logits, atol=1e-5, rtol=1e-5)
  second = lora.take(adapter, slice(1, 2))
  alone, _, _ = _greedy(params, cfg, tokens[1:], mask[1:], steps, windowed=True, adapter=second)
  np.testing.assert_array_equal(alone[0], windowed[1])


@pytest.mark.parametrize("preset", ["tiny_gemma2", "tiny_gemma3"])
def test_calls_of_any_length_across_the_ring_match_one_forward(preset):
  """Chunks longer than the window into a non-empty cache, chunks that wrap the ring, single tokens."""
  cfg = config_lib.PRESETS[preset]()
  params = transformer.init_params(cfg, jax.random.key(3))
  tokens, mask = _left_padded(np.random.default_rng(3), [34, 23])
  full = np.asarray(transformer.forward(params, tokens, config=cfg, mask=mask).logits)
  positions = transformer.default_positions(mask)
  cache = transformer.KVCache.empty(cfg, 2, 34)
  logits, start = [], 0
  for size in (5, 11, 1, 3, 6, 1, 7):  # 34 columns: 11 > the window of 8 into a cache holding 5
    end = start + size
    out = transformer.forward(params, tokens[:, start:end], config=cfg, mask=mask[:, start:end],
                              positions=positions[:, start:end], cache=cache)
    logits.append(np.asarray(out.logits))
    cache, start = out.cache, end
  assert start == 34 and int(cache.index) == 34
  np.testing.assert_allclose(np.concatenate(logits, axis=1)[np.asarray(mask)], full[np.asarray(mask)],
                             atol=1e-5, rtol=1e-5)


def test_sliding_layers_hold_exactly_the_window():
  cfg = config_lib.tiny_gemma2()  # layers: local, global, local, global; window 8
  k, h = cfg.num_kv_heads, cfg.head_dim
  cache = transformer.KVCache.empty(cfg, 3, 40)
  assert cache.windowed == cfg.sliding_layers == (True, False, True, False)
  assert cache.window.k.shape == cache.window.v.shape == (2, 3, 8, k, h)
  assert cache.window.valid.shape == cache.window.positions.shape == (3, 8)
  assert cache.full.k.shape == cache.full.v.shape == (2, 3, 40, k, h)
  assert cache.length == 40
  # A forward keeps the shapes: the ring does not grow with decoding.
  params = transformer.init_params(cfg, jax.random.key(0))
  out = transformer.forward(params, jnp.full((3, 20), 5, jnp.int32), config=cfg, cache=cache, logits=False)
  out = transformer.forward(params, jnp.full((3, 1), 5, jnp.int32), config=cfg, cache=out.cache,
                            positions=jnp.full((3, 1), 20), logits=False)
  assert [x.shape for x in jax.tree.leaves(out.cache)] == [x.shape for x in jax.tree.leaves(cache)]
  assert not out.cache.fresh and int(out.cache.index) == 21
  np.testing.assert_array_equal(np.sort(np.asarray(out.cache.window.positions[0])), np.arange(13, 21))
  # Shorter than the window: the ring is only as long as the cache. Without the window: every layer full.
  assert transformer.KVCache.empty(cfg, 1, 5).window.k.shape == (2, 1, 5, k, h)
  full = transformer.KVCache.empty(cfg, 3, 40, windowed=False)
  assert full.window.k.shape[0] == 0 and full.full.k.shape == (4, 3, 40, k, h)


def test_cache_bytes_from_shapes():
  cfg = config_lib.tiny_gemma3()  # 2 local + 1 global layer
  per_slot = 2 * cfg.num_kv_heads * cfg.head_dim * 4  # keys + values, float32
  for length in (5, 40):
    built = transformer.KVCache.empty(cfg, 2, length)
    nbytes = transformer.kv_cache_bytes(cfg, 2, length)
    assert nbytes == sum(x.nbytes for x in jax.tree.leaves(built))
    slots = min(length, 8)
    assert nbytes == 2 * (per_slot * (2 * slots + length) + 5 * (slots + length)) + 4  # + valid, position, index
  assert transformer.kv_cache_bytes(cfg, 2, 40, windowed=False) == 2 * (per_slot * 3 * 40 + 5 * 40) + 4
  # The 270M model at 128K tokens: 15 of 18 layers keep 512 positions.
  big = config_lib.gemma3_270m()
  assert transformer.kv_cache_bytes(big, 1, 131072) / MB == pytest.approx(783.6, abs=0.1)
  assert transformer.kv_cache_bytes(big, 1, 131072, windowed=False) / MB == pytest.approx(4608.6, abs=0.1)
  assert transformer.kv_cache_bytes(big.replace(dtype="bfloat16"), 1, 131072) / MB == pytest.approx(392.1, abs=0.1)


@pytest.mark.real_model
def test_real_model_decodes_past_its_window_as_with_the_full_cache(embedded_base):
  cfg, params = embedded_base.config, embedded_base.params
  assert cfg.sliding_window == 512
  rng = np.random.default_rng(0)
  prompt = jnp.asarray(np.concatenate([[cfg.bos_id], rng.integers(1000, 30000, 599)])[None], jnp.int32)
  mask = jnp.ones(prompt.shape, bool)
  windowed = _generate(params, cfg, prompt, mask, 8, windowed=True)
  np.testing.assert_array_equal(windowed, _generate(params, cfg, prompt, mask, 8, windowed=False))
  assert len(set(windowed[0].tolist())) > 1
