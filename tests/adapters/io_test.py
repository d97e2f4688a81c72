"""Adapter files: save -> load gives identical tensors and outputs; wrong base, truncated files and
mismatched shapes stop with errors naming the file and the problem."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from lora_hyper.adapters import io, lora, peft
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer
from lora_hyper.model.base_model import BaseModel
from lora_hyper.model.config import MODULES

CFG = config_lib.tiny_gemma3()
SOURCE = io.from_documents(["Ava has 3 cats."], ["cats.txt"], {"kind": "doc_to_lora", "digest": "0" * 16})


def _base(seed: int = 0, cfg=CFG) -> BaseModel:
  return BaseModel(cfg, transformer.init_params(cfg, jax.random.key(seed)), None, f"tiny-{seed}")


@pytest.fixture(scope="module")
def base():
  return _base()


@pytest.fixture(scope="module")
def adapter():
  return lora.random(jax.random.key(2), CFG, MODULES, rank=3, scaling=2.5, std=0.1)


def _logits(base, adapter=None):
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 3, CFG.vocab_size)
  return np.asarray(transformer.forward(base.params, tokens, config=CFG, adapter=adapter).logits)


def test_save_load_round_trip_gives_identical_outputs(base, adapter, tmp_path):
  path = io.save_adapter(tmp_path / "ad", adapter, base=io.base_identity(base), source=SOURCE)
  assert path == tmp_path / "ad" / io.ADAPTER_FILE
  loaded, info = io.load_adapter(tmp_path / "ad", base)
  assert loaded.scaling == 2.5 and loaded.modules == MODULES
  jax.tree.map(np.testing.assert_array_equal, dict(loaded.weights), dict(adapter.weights))
  np.testing.assert_array_equal(_logits(base, loaded), _logits(base, adapter))
  assert info.base == io.base_identity(base)
  assert (info.rank, info.num_layers, info.modules, info.scaling) == (3, CFG.num_layers, MODULES, 2.5)
  assert info.source == SOURCE and info.source["documents"][0]["sha256"] == io.text_digest("Ava has 3 cats.")
  assert io.load_adapter(path)[1] == info  # the file itself, and no base check without a base


def test_identity_follows_weights_and_architecture_not_dtype(base):
  identity = io.base_identity(base)
  assert io.base_identity(base) is identity  # computed once per loaded model
  assert len(identity.digest) == 16 and identity.name == "tiny-0"
  bf16 = BaseModel(CFG.replace(dtype="bfloat16", param_dtype="bfloat16"),
                   jax.tree.map(lambda p: p.astype(jnp.bfloat16), base.params), None, "tiny-0 bf16")
  assert io.base_identity(bf16).digest == identity.digest
  assert io.base_identity(_base(seed=1)).digest != identity.digest
  assert io.weights_digest(CFG.replace(rms_norm_eps=1e-5), base.params) != identity.digest


def test_loading_onto_another_base_model_fails(base, adapter, tmp_path):
  io.save_adapter(tmp_path, adapter, base=io.base_identity(base), source=SOURCE)
  with pytest.raises(ValueError, match=r"was made for base model 'tiny-0' .* loaded base model is 'tiny-1'"):
    io.load_adapter(tmp_path, _base(seed=1))


def test_truncated_file_fails_clearly(base, adapter, tmp_path):
  path = io.save_adapter(tmp_path, adapter, base=io.base_identity(base), source=SOURCE)
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(ValueError, match=r"adapter.safetensors' is not a readable safetensors file \(truncated"):
    io.load_adapter(tmp_path, base)


def test_shapes_that_do_not_fit_the_base_fail(base, tmp_path):
  other = config_lib.tiny_gemma3(mlp_dim=48)
  misfit = lora.random(jax.random.key(3), other, ("down",), rank=2)
  io.save_adapter(tmp_path, misfit, base=io.base_identity(base), source=SOURCE)  # a lying identity
  with pytest.raises(ValueError, match=r"does not fit the loaded base model: adapter module 'down' has a\(3, 2, 48\)"):
    io.load_adapter(tmp_path, base)


def test_tensors_that_disagree_with_the_metadata_fail(base, adapter, tmp_path):
  path = io.save_adapter(tmp_path, adapter, base=io.base_identity(base), source=SOURCE)
  with safetensors.safe_open(str(path), "numpy") as f:
    meta = json.loads(f.metadata()["lora_hyper"])
    tensors = {k: f.get_tensor(k) for k in f.keys()}
  safetensors.numpy.save_file({k: v[:, :2] for k, v in tensors.items()}, str(path),
                              metadata={"lora_hyper": json.dumps(meta)})
  with pytest.raises(ValueError, match=r"module 'q' has a\(3, 2, 32\) .* metadata says 3 layers of rank 3"):
    io.load_adapter(path)
  safetensors.numpy.save_file({"q.a": tensors["q.a"]}, str(path), metadata={"lora_hyper": json.dumps(meta)})
  with pytest.raises(ValueError, match="but its metadata promises"):
    io.load_adapter(path)
  safetensors.numpy.save_file(tensors, str(path))
  with pytest.raises(ValueError, match="is not a lora-hyper adapter"):
    io.load_adapter(path)


def test_missing_adapter_and_batched_save_fail(adapter, tmp_path):
  with pytest.raises(FileNotFoundError, match="no adapter at .*expected a folder with adapter.safetensors"):
    io.load_adapter(tmp_path / "nothing")
  batched = lora.random(jax.random.key(4), CFG, ("down",), rank=2, batch=2)
  with pytest.raises(ValueError, match="takes one adapter, got a batch"):
    io.save_adapter(tmp_path, batched, base=io.BaseIdentity("x", "y"), source={})


def test_a_peft_folder_loads_through_the_same_call(base, adapter, tmp_path):
  peft.export_peft(adapter, tmp_path)
  with pytest.raises(ValueError, match="is a PEFT adapter: loading it needs the base model"):
    io.load_adapter(tmp_path)
  loaded, info = io.load_adapter(tmp_path, base)
  assert info.base is None and info.source["method"] == "peft"
  np.testing.assert_allclose(_logits(base, loaded), _logits(base, adapter), atol=1e-5)
