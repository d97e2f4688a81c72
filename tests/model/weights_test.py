"""Weight conversion and its cache: round trips, corrupt and partial caches, HF folders."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer, weights

CFG = config_lib.tiny_gemma3()


def _assert_on_host(params):
  """Loaders build numpy arrays: the caller places them (sharded, for training), so no device holds a
  copy it did not ask for."""
  types = {type(x) for x in jax.tree.leaves(params)}
  assert types == {np.ndarray}, types


@pytest.fixture()
def saved(tmp_path):
  params = transformer.init_params(CFG, jax.random.key(0))
  weights.save_converted(tmp_path, CFG, params, source="test")
  return tmp_path, params


def test_cache_round_trip(saved):
  folder, params = saved
  cfg, loaded = weights.load_converted(folder)
  assert cfg == CFG
  _assert_on_host(loaded)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded), jax.tree.map(np.asarray, params))


def test_corrupt_cache_is_detected_and_removed(saved):
  folder, _ = saved
  file = folder / "params.safetensors"
  with open(file, "r+b") as f:  # flip bytes inside the tensor data
    f.seek(file.stat().st_size - 64)
    f.write(b"\xff" * 16)
  messages = []
  assert weights.load_converted(folder, messages.append) is None
  assert "does not match its recorded digest" in messages[0] and not file.exists()


def test_partial_cache_is_detected(saved):
  folder, _ = saved
  (folder / "manifest.json").unlink()  # killed between the two atomic writes
  assert weights.load_converted(folder) is None
  file = folder / "params.safetensors"
  assert file.exists()  # nothing to check against yet: ignored, then overwritten by the rebuild


def test_manifest_of_another_config_is_rejected(saved):
  folder, _ = saved
  manifest = json.loads((folder / "manifest.json").read_text())
  manifest["config"]["num_layers"] = 5
  manifest["config"]["sliding_layers"] = [True] * 5
  (folder / "manifest.json").write_text(json.dumps(manifest))
  messages = []
  assert weights.load_converted(folder, messages.append) is None
  assert "do not match the config" in messages[0]


def _hf_folder(tmp_path, params, cfg, shards=2):
  """Writes our params back under HF names in `shards` safetensors files with an index."""
  n, k, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.embed_dim
  layers = params["layers"]
  tensors = {"model.embed_tokens.weight": params["embedding"], "model.norm.weight": params["final_norm"]["scale"]}
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    tensors |= {
        p + "self_attn.q_proj.weight": layers["attn"]["q"][i].reshape(d, n * h).T,
        p + "self_attn.k_proj.weight": layers["attn"]["k"][i].reshape(d, k * h).T,
        p + "self_attn.v_proj.weight": layers["attn"]["v"][i].reshape(d, k * h).T,
        p + "self_attn.o_proj.weight": layers["attn"]["o"][i].reshape(n * h, d).T,
        p + "self_attn.q_norm.weight": layers["attn"]["q_norm"]["scale"][i],
        p + "self_attn.k_norm.weight": layers["attn"]["k_norm"]["scale"][i],
        p + "mlp.gate_proj.weight": layers["mlp"]["gate"][i].T,
        p + "mlp.up_proj.weight": layers["mlp"]["up"][i].T,
        p + "mlp.down_proj.weight": layers["mlp"]["down"][i].T,
        p + "input_layernorm.weight": layers["pre_attention_norm"]["scale"][i],
        p + "post_attention_layernorm.weight": layers["post_attention_norm"]["scale"][i],
        p + "pre_feedforward_layernorm.weight": layers["pre_ffw_norm"]["scale"][i],
        p + "post_feedforward_layernorm.weight": layers["post_ffw_norm"]["scale"][i],
    }
  tensors = {name: np.ascontiguousarray(np.asarray(t)) for name, t in tensors.items()}
  names = sorted(tensors)
  weight_map = {}
  for s in range(shards):
    shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
    part = {name: tensors[name] for name in names[s::shards]}
    safetensors.numpy.save_file(part, str(tmp_path / shard))
    weight_map |= {name: shard for name in part}
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  hf_config = {"model_type": "gemma3_text", "vocab_size": cfg.vocab_size, "hidden_size": d,
               "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.num_layers, "num_attention_heads": n,
               "num_key_value_heads": k, "head_dim": h, "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
               "sliding_window": cfg.sliding_window, "max_position_embeddings": cfg.max_seq_len,
               "layer_types": ["sliding_attention" if s else "full_attention" for s in cfg.sliding_layers],
               "rope_theta": cfg.rope_base_global, "rope_local_base_freq": cfg.rope_base_local}
  (tmp_path / "config.json").write_text(json.dumps(hf_config))
  return tmp_path


def test_sharded_hf_folder_loads(tmp_path):
  params = transformer.init_params(CFG, jax.random.key(1))
  cfg, loaded = weights.load_hf_checkpoint(_hf_folder(tmp_path, params, CFG))
  assert cfg == CFG
  _assert_on_host(loaded)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded), jax.tree.map(np.asarray, params))


def test_hf_folder_errors_name_the_problem(tmp_path):
  params = transformer.init_params(CFG, jax.random.key(1))
  folder = _hf_folder(tmp_path, params, CFG)
  (folder / "model.safetensors.index.json").unlink()
  (folder / "model-00002-of-00002.safetensors").unlink()  # no index: the remaining shard lacks tensors
  with pytest.raises(KeyError, match="missing tensor"):
    weights.load_hf_checkpoint(folder)
  (folder / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="no config.json"):
    weights.load_hf_checkpoint(folder)


def test_params_from_hf_builds_numpy_in_the_config_dtype(tmp_path):
  params = transformer.init_params(CFG, jax.random.key(1))
  _hf_folder(tmp_path, params, CFG, shards=1)
  tensors = safetensors.numpy.load_file(str(tmp_path / "model-00001-of-00001.safetensors"))
  loaded = weights.params_from_hf(tensors, CFG.replace(param_dtype="bfloat16"))
  _assert_on_host(loaded)
  assert {x.dtype for x in jax.tree.leaves(loaded)} == {np.dtype(jnp.bfloat16)}
  np.testing.assert_array_equal(loaded["embedding"], np.asarray(params["embedding"]).astype(jnp.bfloat16))


def test_bfloat16_safetensors_read_on_the_host_in_their_dtype(tmp_path):
  """Most Gemma shards are bfloat16: read as numpy (no device) as stored, never widened on the way."""
  values = np.asarray([[1.5, -2.25], [3.0e-3, 65504.0]], np.float32).astype(jnp.bfloat16)
  safetensors.numpy.save_file({"w": values}, str(tmp_path / "w.safetensors"))
  read = weights._read_safetensors(tmp_path / "w.safetensors")
  assert type(read["w"]) is np.ndarray and read["w"].dtype == np.dtype(jnp.bfloat16)
  np.testing.assert_array_equal(read["w"], values)


def test_bfloat16_folders_load_in_either_dtype_exactly(tmp_path):
  """A bfloat16 folder read as float32 widens exactly; read as bfloat16 it is the file's bits."""
  params = transformer.init_params(CFG, jax.random.key(3))
  folder = _hf_folder(tmp_path, jax.tree.map(lambda x: np.asarray(x).astype(jnp.bfloat16), params), CFG)
  cfg32, as32 = weights.load_hf_checkpoint(folder)
  cfg16, as16 = weights.load_hf_checkpoint(folder, dtype="bfloat16", param_dtype="bfloat16")
  assert cfg32.param_dtype == "float32" and cfg16.param_dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(as16)} == {np.dtype(jnp.bfloat16)}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(np.float32)), as32, as16)
