"""Fixtures for the hypernetwork tests: a tiny random Gemma 3 and a byte-level fake tokenizer."""

import jax
import pytest

from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer


class FakeTokenizer:
  """Bytes mod the tiny vocabulary (ids 3..122, clear of pad 0 / eos 1 / bos 2)."""

  bos_id, pad_id = 2, 0

  def encode(self, text: str, add_bos: bool = True) -> list[int]:
    ids = [3 + b % 120 for b in text.encode()]
    return [self.bos_id, *ids] if add_bos else ids


@pytest.fixture(scope="session")
def base_cfg():
  return config_lib.tiny_gemma3()


@pytest.fixture(scope="session")
def base_params(base_cfg):
  return transformer.init_params(base_cfg, jax.random.key(0))


@pytest.fixture(scope="session")
def tokenizer():
  return FakeTokenizer()


@pytest.fixture(scope="session")
def check_logical_axes():
  """Asserts every param has a logical name per dimension, each one known to the sharding rules."""
  from lora_hyper import sharding

  known = {name for name, _ in sharding.LOGICAL_AXIS_RULES}

  def check(shapes, specs):
    flat_shapes = jax.tree_util.tree_leaves_with_path(shapes)
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(flat_shapes) == len(flat_specs)
    for (path, shape), spec in zip(flat_shapes, flat_specs):
      assert len(spec) == len(shape.shape), (jax.tree_util.keystr(path), spec, shape.shape)
      assert set(spec) <= known, (jax.tree_util.keystr(path), spec)
    mesh = sharding.make_mesh(data=-1, fsdp=2, tensor=2, devices=jax.devices()[:4])
    sharding.logical_sharding(specs, mesh)  # every spec maps onto a real mesh (no mesh axis twice)

  return check
