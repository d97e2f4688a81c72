"""The base model as task-description encoder: pooling, normalisation, padding invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper.hypernetworks import task_encoders


def test_pooling_against_explicit_indexing():
  hidden = jax.random.normal(jax.random.key(0), (2, 5, 3))
  mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  last = task_encoders.pool(hidden, mask, "last_token")
  np.testing.assert_allclose(last, jnp.stack([hidden[0, 2], hidden[1, 4]]))
  mean = task_encoders.pool(hidden, mask, "mean")
  np.testing.assert_allclose(mean, jnp.stack([hidden[0, :3].mean(0), hidden[1].mean(0)]), rtol=1e-6)
  with pytest.raises(ValueError, match="pooling"):
    task_encoders.pool(hidden, mask, "cls")


def test_normalize_gives_norm_sqrt_dim():
  emb = task_encoders.normalize(jax.random.normal(jax.random.key(0), (3, 16)) * 7)
  np.testing.assert_allclose(jnp.linalg.norm(emb, axis=-1), 4.0, rtol=1e-5)


def test_add_full_stop():
  assert task_encoders.add_full_stop("  Classify this ") == "Classify this."
  assert task_encoders.add_full_stop("Done?") == "Done?"


@pytest.mark.parametrize("pooling", task_encoders.POOLINGS)
def test_base_model_encoder_is_independent_of_batch_padding(base_cfg, base_params, tokenizer, pooling):
  encoder = task_encoders.BaseModelEncoder(base_params, base_cfg, tokenizer, pooling=pooling)
  alone = encoder(["Sort the list"])
  batched = encoder(["Sort the list", "A much longer description of another task entirely"])
  assert batched.shape == (2, encoder.dim)
  np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)
  assert not np.allclose(batched[0], batched[1])


def test_base_model_encoder_rejects_bad_input(base_cfg, base_params, tokenizer):
  encoder = task_encoders.BaseModelEncoder(base_params, base_cfg, tokenizer, max_len=10)
  with pytest.raises(ValueError, match="description 0 is empty"):
    encoder([""])
  with pytest.raises(ValueError, match="more than max_len=10"):
    encoder(["far too long for ten tokens"])
  with pytest.raises(ValueError, match="non-empty list"):
    encoder("a bare string")
