"""widen_rank and widen_width: a Doc-to-LoRA at k times its rank, or with more heads and wider MLPs,
generates the same adapters (checked as merged deltas, scaling * A^T B, which do not depend on how
the rank rows are ordered or split)."""

import jax
import numpy as np
import pytest
from flax import traverse_util

from lora_hyper.adapters import lora
from lora_hyper.hypernetworks import doc_to_lora
from lora_hyper.hypernetworks.doc_to_lora import widening

# Every experimental option the shipped needle hypernetwork has, the gate's cut off as in the lever rows.
OPTIONS = {"normalize_features": True, "center_momentum": 0.9, "zero_b_init": "head", "generated_factors": "b",
           "chunk_gate": True, "chunk_gate_cut": False}
DOCUMENTS = ["A document of a few chunks.", "Two."]


def _config(base_cfg, encoder, rank, **options):
  exit_layer = 1 if encoder == "early_exit" else None
  return doc_to_lora.d2l_tiny(base_cfg, context_encoder=encoder, exit_layer=exit_layer, rank=rank,
                              experimental=options)


def _trained_like(variables, seed=0):
  """Every param and statistic random, so each one reaches the adapter (a fresh one's B is zero)."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(variables)
  flat = {k: (np.float32(1.0) if k[-1] == "weight" else 0.3 * rng.standard_normal(np.shape(v)).astype(np.float32))
          if k[-1] in ("head_b", "scale_b", "bias_b", "w", "c", "ema", "weight") else v for k, v in flat.items()}
  return traverse_util.unflatten_dict(flat)


def _deltas(variables, cfg, base_params, tokenizer):
  adapter = doc_to_lora.internalize(variables, base_params, DOCUMENTS, config=cfg, tokenizer=tokenizer)
  return np.asarray(lora.merged_delta(adapter, "down"))


WIDER = {"perceiver": {"num_heads": 8, "num_kv_heads": 4, "mlp_dim": 64, "input_mlp_factor": 4},
         "pre_head_mlp_dim": 48}


def _widened(how, narrow, variables):
  """(the bigger config, its variables from `variables`): k times the rank, or more heads and wider MLPs."""
  if how == "rank":
    wide = narrow.replace(rank=6)
    return wide, widening.widen_rank(variables, narrow, wide.rank, jax.random.key(1), query_noise=0.0)
  wide = narrow.replace(**WIDER)
  return wide, widening.widen_width(variables, narrow, wide, jax.random.key(1))


@pytest.mark.parametrize("encoder", doc_to_lora.CONTEXT_ENCODERS)
@pytest.mark.parametrize("options", [OPTIONS, {}], ids=["needle_options", "published"])
@pytest.mark.parametrize("how", ["rank", "width"])
def test_the_wider_hypernetwork_generates_the_same_adapters(base_cfg, base_params, tokenizer, encoder, options, how):
  narrow = _config(base_cfg, encoder, 2, **options)
  variables = _trained_like(doc_to_lora.init(narrow, jax.random.key(0)))
  wide, widened = _widened(how, narrow, variables)
  want = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(doc_to_lora.variable_shapes(wide)).items()}
  assert {k: np.shape(v) for k, v in traverse_util.flatten_dict(widened).items()} == want
  expected = _deltas(variables, narrow, base_params, tokenizer)
  assert np.abs(expected).max() > 1e-3  # the check means something: the adapters are not zero
  np.testing.assert_allclose(_deltas(widened, wide, base_params, tokenizer), expected, rtol=1e-4,
                             atol=1e-5 * np.abs(expected).max())


def test_noise_tells_the_copies_apart_and_moves_the_adapter_a_little(base_cfg, base_params, tokenizer):
  narrow = _config(base_cfg, "early_exit", 2, **OPTIONS)
  wide = narrow.replace(rank=4)
  variables = _trained_like(doc_to_lora.init(narrow, jax.random.key(0)))
  widened = widening.widen_rank(variables, narrow, wide.rank, jax.random.key(1), query_noise=1e-2)
  latents = widened["params"]["perceiver"]["decoder"]["latents"]
  copies = latents.reshape(-1, 2, 2, latents.shape[-1])  # [..., the narrow rank row, its two copies, d]
  assert not np.allclose(copies[:, :, 0], copies[:, :, 1])
  expected = _deltas(variables, narrow, base_params, tokenizer)
  moved = np.abs(_deltas(widened, wide, base_params, tokenizer) - expected).max() / np.abs(expected).max()
  assert 0 < moved < 0.1


def test_only_a_multiple_of_the_rank_is_taken(base_cfg):
  narrow = _config(base_cfg, "early_exit", 2)
  with pytest.raises(ValueError, match="multiple of its rank, got 2 -> 3"):
    widening.widen_rank(doc_to_lora.init(narrow, jax.random.key(0)), narrow, 3, jax.random.key(1))


def test_new_units_read_at_random_and_write_through_zeros(base_cfg):
  narrow = _config(base_cfg, "early_exit", 2, **OPTIONS)
  variables = doc_to_lora.init(narrow, jax.random.key(0))
  widened = widening.widen_width(variables, narrow, narrow.replace(**WIDER), jax.random.key(1))
  block = widened["params"]["perceiver"]["encoder"]["block_0"]
  old_block = variables["params"]["perceiver"]["encoder"]["block_0"]
  np.testing.assert_array_equal(block["attn"]["q"]["kernel"][:, :4], old_block["attn"]["q"]["kernel"])
  assert np.all(block["attn"]["q"]["kernel"][:, 4:] != 0)  # new heads' queries: fresh
  assert np.all(block["attn"]["k"]["kernel"][:, 2:] != 0)  # and their keys and values
  assert not np.any(block["attn"]["o"][4:])  # their output rows: zero
  assert np.all(block["mlp"]["up"]["kernel"][:, 32:] != 0) and not np.any(block["mlp"]["down"]["kernel"][32:])
  pre_head = widened["params"]["pre_head_0"]
  assert np.all(pre_head["w1"][:, :, 32:] != 0) and not np.any(pre_head["w2"][:, 32:])


@pytest.mark.parametrize("change, error", [
    ({"perceiver": {"latent_dim": 32}}, "changes only the perceiver's num_heads"),
    ({"rank": 4}, "the two configs differ elsewhere"),
    ({"perceiver": {"mlp_dim": 16}}, "only widens, got mlp_dim 32 -> 16"),
    ({"perceiver": {"num_heads": 8}}, r"query heads per key-value head \(2\), got 4"),
])
def test_only_heads_and_mlps_grow(base_cfg, change, error):
  narrow = _config(base_cfg, "early_exit", 2)
  with pytest.raises(ValueError, match=error):
    widening.widen_width(doc_to_lora.init(narrow, jax.random.key(0)), narrow, narrow.replace(**change),
                         jax.random.key(1))
