"""load_base_model: params cast on the host, then on the default device, or left on the host for a
caller that places them itself (training, in their shardings)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper.model import base_model

from tiny_model import write_tiny_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_on_host_gives_numpy_cast_as_the_device_would(folder):
  full = base_model.load_base_model(folder, on_host=True)
  half = base_model.load_base_model(folder, dtype="bfloat16", on_host=True)
  assert half.config.param_dtype == half.config.dtype == "bfloat16"
  for f32, bf16 in zip(jax.tree.leaves(full.params), jax.tree.leaves(half.params)):
    assert type(f32) is np.ndarray and type(bf16) is np.ndarray
    assert f32.dtype == np.float32 and bf16.dtype == np.dtype(jnp.bfloat16)
    # The host's rounding is the device's: a model's identity digest does not depend on where it was cast.
    np.testing.assert_array_equal(bf16, np.asarray(jnp.asarray(f32, jnp.bfloat16)))


def test_default_puts_the_params_on_the_default_device(folder):
  model = base_model.load_base_model(folder, dtype="bfloat16")
  for leaf in jax.tree.leaves(model.params):
    assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.bfloat16
    assert leaf.devices() == {jax.devices()[0]}
