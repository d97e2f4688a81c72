"""The Flax Gemma against transformers' PyTorch Gemma 2 / Gemma 3 (float32), and its own cache."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the test extra: the PyTorch references

from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer, weights

from hf_reference import ours_from_hf, tiny_hf_model


def _left_padded_batch(rng, lengths, total):
  tokens = np.zeros((len(lengths), total), np.int64)
  for i, n in enumerate(lengths):
    tokens[i, total - n:] = np.concatenate([[2], rng.integers(3, 128, n - 1)])
  return tokens, tokens != 0


@pytest.mark.torch
@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_logits_and_hidden_states_match_transformers(family):
  model = tiny_hf_model(family)
  cfg, params = ours_from_hf(model)
  assert cfg.family == family and any(cfg.sliding_layers) and not all(cfg.sliding_layers)
  tokens, mask = _left_padded_batch(np.random.default_rng(0), [30, 21], 30)  # > 3x the window of 8
  positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
  with torch.no_grad():
    ref = model(torch.tensor(tokens), attention_mask=torch.tensor(mask, dtype=torch.long),
                position_ids=torch.tensor(positions), output_hidden_states=True)
  out = transformer.forward(params, jnp.asarray(tokens, jnp.int32), config=cfg, mask=jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(out.logits)[mask], ref.logits.numpy()[mask], atol=1e-4, rtol=1e-4)
  hidden = np.asarray(out.per_layer_hidden)
  assert hidden.shape == (cfg.num_layers, 2, 30, cfg.embed_dim)
  for layer in range(cfg.num_layers):  # Z_0 .. Z_{L-1} are HF's hidden_states[0 .. L-1].
    np.testing.assert_allclose(hidden[layer][mask], ref.hidden_states[layer].numpy()[mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preset", ["tiny_gemma2", "tiny_gemma3"])
def test_layer_input_from_the_first_layers_alone_is_the_full_forwards(preset):
  cfg = config_lib.PRESETS[preset]()
  params = transformer.init_params(cfg, jax.random.key(2))
  tokens, mask = _left_padded_batch(np.random.default_rng(2), [20, 13], 20)
  tokens, mask = jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)
  full = np.asarray(transformer.forward(params, tokens, config=cfg, mask=mask, logits=False).per_layer_hidden)
  for layer in range(cfg.num_layers):
    early = np.asarray(transformer.layer_input(params, tokens, layer, config=cfg, mask=mask))
    np.testing.assert_allclose(early[np.asarray(mask)], full[layer][np.asarray(mask)], atol=1e-5, rtol=1e-5)


def test_layer_input_does_not_copy_the_weights_of_the_layers_it_runs():
  """An early exit reads the stacked params in place: XLA's scratch memory stays under two layers'
  weights however many layers run (slicing the first k layers off up front copied all k)."""
  cfg = config_lib.PRESETS["tiny_gemma3"]().replace(embed_dim=128, mlp_dim=512)  # weights >> activations
  params = transformer.init_params(cfg, jax.random.key(0))
  one_layer = sum(w[0].nbytes for w in jax.tree.leaves(params["layers"]))
  tokens = jnp.ones((1, 4), jnp.int32)
  for layer in (1, cfg.num_layers - 1, cfg.num_layers):
    run = jax.jit(functools.partial(transformer.layer_input, layer=layer, config=cfg))
    scratch = run.lower(params, tokens).compile().memory_analysis().temp_size_in_bytes
    assert scratch < 2 * one_layer, (layer, scratch, one_layer)


@pytest.mark.parametrize("preset", ["tiny_gemma2", "tiny_gemma3"])
def test_cached_decoding_matches_full_forward(preset):
  """Prefill + one token at a time through the KV cache == one full forward, past the window."""
  cfg = config_lib.PRESETS[preset]()
  params = transformer.init_params(cfg, jax.random.key(1))
  tokens, mask = _left_padded_batch(np.random.default_rng(1), [26, 17], 26)
  tokens, mask = jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)
  full = transformer.forward(params, tokens, config=cfg, mask=mask).logits
  prefill = 6
  positions = transformer.default_positions(mask)
  cache = transformer.KVCache.empty(cfg, 2, 26)
  out = transformer.forward(params, tokens[:, :prefill], config=cfg, mask=mask[:, :prefill],
                            positions=positions[:, :prefill], cache=cache)
  steps = [out.logits]
  cache = out.cache
  for t in range(prefill, 26):
    out = transformer.forward(params, tokens[:, t:t + 1], config=cfg, mask=mask[:, t:t + 1],
                              positions=positions[:, t:t + 1], cache=cache)
    steps.append(out.logits)
    cache = out.cache
  cached = jnp.concatenate(steps, axis=1)
  np.testing.assert_allclose(np.asarray(cached)[np.asarray(mask)], np.asarray(full)[np.asarray(mask)],
                             atol=1e-5, rtol=1e-5)


def test_logits_at_selects_positions():
  cfg = config_lib.tiny_gemma3()
  params = transformer.init_params(cfg, jax.random.key(2))
  tokens = jax.random.randint(jax.random.key(3), (2, 12), 3, cfg.vocab_size)
  full = transformer.forward(params, tokens, config=cfg).logits
  at = jnp.array([[0, 5], [11, 3]])
  picked = transformer.forward(params, tokens, config=cfg, logits_at=at).logits
  np.testing.assert_allclose(picked, jnp.take_along_axis(full, at[..., None], axis=1), atol=1e-6)


def test_bfloat16_policy_tracks_float32():
  cfg = config_lib.tiny_gemma3()
  params = transformer.init_params(cfg, jax.random.key(4))
  tokens = jax.random.randint(jax.random.key(5), (2, 20), 3, cfg.vocab_size)
  ref = transformer.forward(params, tokens, config=cfg).logits
  bf_cfg = cfg.replace(dtype="bfloat16", param_dtype="bfloat16")
  bf_params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  out = transformer.forward(bf_params, tokens, config=bf_cfg)
  assert out.hidden.dtype == jnp.bfloat16
  assert jax.tree.leaves(transformer.init_params(bf_cfg, jax.random.key(0)))[0].dtype == jnp.bfloat16
  rel = float(jnp.linalg.norm(out.logits - ref) / jnp.linalg.norm(ref))
  assert rel < 0.05, rel


def test_remat_gives_identical_outputs_and_gradients():
  cfg = config_lib.tiny_gemma3()
  params = transformer.init_params(cfg, jax.random.key(6))
  tokens = jax.random.randint(jax.random.key(7), (2, 10), 3, cfg.vocab_size)
  loss = lambda c: lambda p: jnp.mean(transformer.forward(p, tokens, config=c).logits ** 2)
  g1 = jax.grad(loss(cfg))(params)
  g2 = jax.grad(loss(cfg.replace(remat=True)))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g1, g2)


def test_param_axes_name_every_param():
  cfg = config_lib.gemma3_270m()
  axes = transformer.param_logical_axes(cfg)
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  for spec, shape in zip(jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)),
                         jax.tree.leaves(shapes)):
    assert len(spec) == len(shape.shape) and all(name is not None for name in spec)
  n_params = sum(x.size for x in jax.tree.leaves(shapes))
  assert abs(n_params - 268e6) / 268e6 < 0.01, n_params  # REFERENCE.md: 268M


def test_bad_inputs_are_named():
  cfg = config_lib.tiny_gemma3()
  params = transformer.init_params(cfg, jax.random.key(0))
  with pytest.raises(ValueError, match="batch, length"):
    transformer.forward(params, jnp.zeros((5,), jnp.int32), config=cfg)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    weights.load_hf_checkpoint("/nonexistent/gemma-folder")
  with pytest.raises(ValueError, match="model_type"):
    config_lib.from_hf_config({"model_type": "llama"})
