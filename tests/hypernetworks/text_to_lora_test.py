"""Text-to-LoRA: published sizes of the L/M/S heads, zero init, gradients and input errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper.adapters import lora
from lora_hyper.hypernetworks import task_encoders, text_to_lora
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer

HEADS = ("L", "M", "S")
PUBLISHED = {"L": (text_to_lora.t2l_l, 55e6), "M": (text_to_lora.t2l_m, 34e6), "S": (text_to_lora.t2l_s, 5e6)}


def _mistral_7b_dims():
  """Mistral-7B's shapes in a GemmaConfig: 32 layers, d 4096, q 4096->4096, v 4096->1024."""
  return config_lib.Gemma2Config(vocab_size=32_000, num_layers=32, embed_dim=4096, mlp_dim=14_336, num_heads=32,
                                 num_kv_heads=8, head_dim=128, sliding_layers=(False,) * 32)


@pytest.fixture(scope="module")
def hyper(base_cfg):
  """(config, zero-initialised params) per head, built once."""
  out = {}
  for head in HEADS:
    cfg = text_to_lora.t2l_tiny(base_cfg, head=head)
    out[head] = cfg, text_to_lora.init(cfg, jax.random.key(1))
  return out


def _trained_like(params):
  """Non-zero head kernels, as after some training, so the body receives gradient too."""
  def edit(path, w):
    if "kernel" in jax.tree_util.keystr(path) and "'out_" in jax.tree_util.keystr(path):
      return 0.05 * np.random.default_rng(5).standard_normal(w.shape, np.float32)
    return w
  return jax.tree_util.tree_map_with_path(edit, params)


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("head", HEADS)
def test_published_configs_match_published_parameter_counts(head):
  preset, published = PUBLISHED[head]
  cfg = preset(_mistral_7b_dims())
  assert cfg.emb_dim == 1024 and cfg.modules == ("q", "v") and cfg.rank == 8
  assert cfg.scaling == pytest.approx(16 / 8 ** 0.5)  # rsLoRA
  n = text_to_lora.num_params(cfg)  # eval_shape only
  assert abs(n / published - 1) < 0.02, n


@pytest.mark.parametrize("head", HEADS)
def test_every_param_has_logical_axes(base_cfg, head, check_logical_axes):
  cfg = text_to_lora.t2l_tiny(base_cfg, head=head)
  check_logical_axes(text_to_lora.param_shapes(cfg), text_to_lora.param_specs(cfg))


def test_small_configs_for_270m():
  sizes = {h: text_to_lora.num_params(text_to_lora.t2l_small(config_lib.gemma3_270m(), head=h)) for h in HEADS}
  assert sizes["L"] > sizes["M"] > sizes["S"] > 1e6, sizes


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("head", HEADS)
def test_zero_initialised_adapter_leaves_logits_unchanged(base_cfg, base_params, tokenizer, hyper, head):
  cfg, params = hyper[head]
  encoder = task_encoders.BaseModelEncoder(base_params, base_cfg, tokenizer)
  adapter = text_to_lora.generate_adapter(params, ["Answer yes or no", "Translate to French."], config=cfg,
                                          encoder=encoder)
  lora.validate(adapter, base_cfg, batch_size=2)
  assert adapter.modules == ("q", "v") and adapter.rank == cfg.rank
  assert all(float(jnp.abs(ab["a"]).max()) > 0 for ab in adapter.weights.values())  # A = Kaiming init
  tokens = jax.random.randint(jax.random.key(2), (2, 7), 3, base_cfg.vocab_size)
  plain = transformer.forward(base_params, tokens, config=base_cfg).logits
  adapted = transformer.forward(base_params, tokens, config=base_cfg, adapter=adapter).logits
  np.testing.assert_array_equal(np.asarray(adapted), np.asarray(plain))


@pytest.mark.parametrize("head", HEADS)
def test_generator_jits_and_its_gradients_are_finite_and_non_zero(hyper, head):
  cfg, params = hyper[head]
  emb = task_encoders.normalize(np.random.default_rng(3).standard_normal((2, cfg.emb_dim), np.float32))

  @jax.jit
  @jax.grad
  def grad(p):  # a smooth function of the full weight deltas (the base-model path is tested above)
    adapter = text_to_lora.generate(p, emb, config=cfg)
    return sum(jnp.sum(jnp.sin(lora.merged_delta(adapter, m))) for m in adapter.modules)

  grads = grad(params)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))  # at init: the heads
  for path, g in jax.tree_util.tree_leaves_with_path(grad(_trained_like(params))):
    assert bool(jnp.isfinite(g).all()) and float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)


def test_descriptions_give_different_adapters_and_dropout_is_stochastic(hyper):
  cfg, params = hyper["M"]
  params = _trained_like(params)
  emb = task_encoders.normalize(np.random.default_rng(3).standard_normal((2, cfg.emb_dim), np.float32))
  adapter = text_to_lora.generate(params, emb, config=cfg)
  assert not np.allclose(adapter.weights["q"]["b"][0], adapter.weights["q"]["b"][1])
  run = functools.partial(text_to_lora.generate, params, emb, config=cfg, deterministic=False)
  assert not np.allclose(run(dropout_rng=jax.random.key(0)).weights["q"]["a"],
                         run(dropout_rng=jax.random.key(1)).weights["q"]["a"])


# ----------------------------------------------------------------------------- bad input


def test_bad_descriptions_are_rejected(hyper):
  cfg, params = hyper["L"]
  encoder = lambda texts: jnp.ones((len(texts), cfg.emb_dim))
  with pytest.raises(ValueError, match="description 1 is empty"):
    text_to_lora.generate_adapter(params, ["ok", " "], config=cfg, encoder=encoder)
  with pytest.raises(ValueError, match="description 0 is empty"):
    text_to_lora.generate_adapter(params, "", config=cfg, encoder=encoder)
  with pytest.raises(ValueError, match="no task descriptions"):
    text_to_lora.generate_adapter(params, [], config=cfg, encoder=encoder)
  with pytest.raises(ValueError, match="emb_dim=32"):
    text_to_lora.generate_adapter(params, "ok", config=cfg, encoder=lambda texts: jnp.ones((1, 7)))


def test_single_description_gives_an_unbatched_adapter(hyper):
  cfg, params = hyper["S"]
  adapter = text_to_lora.generate_adapter(params, "Summarise the text", config=cfg,
                                          encoder=lambda texts: jnp.ones((len(texts), cfg.emb_dim)))
  assert not adapter.is_batched and adapter.weights["v"]["b"].shape == (cfg.base.num_layers, cfg.rank, 32)
