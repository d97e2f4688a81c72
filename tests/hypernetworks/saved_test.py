"""Saved hypernetwork folders: one call loads (kind, config, params) that generate the very same
adapters; the base model identity is checked; damaged folders fail with clear errors."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper.adapters import io
from lora_hyper import pretrained
from lora_hyper.hypernetworks import doc_to_lora, saved, text_to_lora
from lora_hyper.hypernetworks.task_encoders import BaseModelEncoder
from lora_hyper.model.base_model import BaseModel


@pytest.fixture(scope="module")
def base(base_cfg, base_params, tokenizer):
  return BaseModel(base_cfg, base_params, tokenizer, "tiny")


def _perturbed(params, seed):
  """Random-init hypernetworks generate zero adapters; fill their zero leaves so outputs tell apart."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda w: rng.normal(0, 0.3, w.shape).astype(np.float32) if not np.any(w) else w, params)


def test_doc_to_lora_round_trip_generates_identical_adapters(base, tmp_path):
  config = doc_to_lora.d2l_tiny(base.config)
  params = _perturbed(doc_to_lora.init(config, jax.random.key(0)), 0)
  saved.save_hypernetwork(tmp_path, config, params, base=io.base_identity(base), gin_config="# the run's gin\n")
  loaded = saved.load_hypernetwork(tmp_path, base)
  assert loaded.kind == "doc_to_lora" and loaded.config == config and loaded.gin_config == "# the run's gin\n"
  assert loaded.base == io.base_identity(base) and loaded.describe()["digest"] == loaded.digest[:16]
  jax.tree.map(np.testing.assert_array_equal, loaded.variables, params)
  text = "Ava has three cats and a dog named Bo."
  make = lambda p: doc_to_lora.internalize(p, base.params, text, config=config, tokenizer=base.tokenizer)
  ours, theirs = make(loaded.variables), make(params)
  assert np.any(np.asarray(ours.weights["down"]["b"]))
  jax.tree.map(np.testing.assert_array_equal, dict(ours.weights), dict(theirs.weights))


def test_bfloat16_files_are_half_the_size_and_load_as_rounded_float32(base, tmp_path):
  config = doc_to_lora.d2l_tiny(base.config)
  params = _perturbed(doc_to_lora.init(config, jax.random.key(0)), 0)
  saved.save_hypernetwork(tmp_path / "f32", config, params, base=io.base_identity(base))
  saved.save_hypernetwork(tmp_path / "bf16", config, params, base=io.base_identity(base), dtype="bfloat16")
  size = lambda d: (tmp_path / d / saved.VARIABLES).stat().st_size
  assert size("bf16") < 0.6 * size("f32")
  loaded = saved.load_hypernetwork(tmp_path / "bf16", base)
  rounded = jax.tree.map(lambda w: np.asarray(jnp.asarray(w, jnp.bfloat16), np.float32), params)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(loaded.variables))
  jax.tree.map(np.testing.assert_array_equal, loaded.variables, rounded)
  with pytest.raises(ValueError, match="variables dtype must be one of"):
    saved.save_hypernetwork(tmp_path / "f16", config, params, base=io.base_identity(base), dtype="float16")


def test_text_to_lora_round_trip_and_its_task_encoder(base, tmp_path):
  config = text_to_lora.t2l_tiny(base.config, head="M")
  params = _perturbed(text_to_lora.init(config, jax.random.key(1)), 1)
  saved.save_hypernetwork(tmp_path, config, params, base=io.base_identity(base), task_pooling="mean")
  loaded = saved.load_hypernetwork(tmp_path)  # no base: the stored base config is used
  assert loaded.kind == "text_to_lora" and loaded.config == config and loaded.gin_config is None
  encoder = loaded.task_encoder(base)
  assert isinstance(encoder, BaseModelEncoder) and encoder.pooling == "mean"
  make = lambda p: text_to_lora.generate_adapter(p, "Reverse the word.", config=config, encoder=encoder)
  jax.tree.map(np.testing.assert_array_equal, dict(make(loaded.variables).weights), dict(make(params).weights))


def test_loading_takes_the_base_models_config_and_checks_its_identity(base, tmp_path):
  config = doc_to_lora.d2l_tiny(base.config)
  saved.save_hypernetwork(tmp_path, config, doc_to_lora.init(config, jax.random.key(0)), base=io.base_identity(base))
  bf16 = BaseModel(base.config.replace(dtype="bfloat16", param_dtype="bfloat16"),
                   jax.tree.map(lambda p: p.astype(jnp.bfloat16), base.params), base.tokenizer, "tiny bf16")
  assert saved.load_hypernetwork(tmp_path, bf16).config.base.dtype == "bfloat16"
  other = BaseModel(base.config, jax.tree.map(lambda p: p + 1, base.params), base.tokenizer, "other")
  with pytest.raises(ValueError, match="hypernetwork .* was made for base model 'tiny'"):
    saved.load_hypernetwork(tmp_path, other)


def test_damaged_folders_fail_clearly(base, tmp_path):
  with pytest.raises(FileNotFoundError, match="is not a saved hypernetwork: no hypernetwork.json"):
    saved.load_hypernetwork(tmp_path)
  config = doc_to_lora.d2l_tiny(base.config)
  params = doc_to_lora.init(config, jax.random.key(0))
  saved.save_hypernetwork(tmp_path, config, params, base=io.base_identity(base))
  manifest_file, params_file = tmp_path / saved.MANIFEST, tmp_path / saved.VARIABLES
  manifest = json.loads(manifest_file.read_text())

  manifest_file.write_text(json.dumps({**manifest, "config": {**manifest["config"], "heads": 3}}))
  with pytest.raises(ValueError, match="the stored doc_to_lora config does not fit this lora-hyper"):
    saved.load_hypernetwork(tmp_path)
  manifest_file.write_text(json.dumps({**manifest, "config": {**manifest["config"], "rank": 3}}))
  with pytest.raises(ValueError, match=r"does not match its config: .*wrong shapes"):
    saved.load_hypernetwork(tmp_path)
  manifest_file.write_text(json.dumps({**manifest, "kind": "text_to_lora_v9"}))
  with pytest.raises(ValueError, match="this lora-hyper reads formats 1 and 2"):
    saved.load_hypernetwork(tmp_path)
  manifest_file.write_text(json.dumps(manifest))
  params_file.write_bytes(params_file.read_bytes()[:-8])
  with pytest.raises(ValueError, match="does not match the digest in hypernetwork.json: truncated"):
    saved.load_hypernetwork(tmp_path)
  params_file.unlink()
  with pytest.raises(FileNotFoundError, match="has no variables.safetensors"):
    saved.load_hypernetwork(tmp_path)


def test_no_shipped_hypernetwork_says_how_to_train_one(monkeypatch, tmp_path):
  monkeypatch.setattr(pretrained, "DIR", tmp_path)
  with pytest.raises(FileNotFoundError, match=r"no trained doc_to_lora hypernetwork is shipped .* --out DIR"):
    saved.shipped("doc_to_lora")


def test_shipped_hypernetworks_are_picked_by_name():
  assert saved.shipped("doc_to_lora").name == "d2l_gemma3_270m_general"  # the default: the first
  assert saved.shipped("doc_to_lora", "needle").name == "d2l_gemma3_270m"
  assert saved.shipped("text_to_lora").name == "t2l_gemma3_270m"
  with pytest.raises(ValueError, match="no shipped doc_to_lora hypernetwork is called 'haystack'; the shipped ones "
                                       "are general, needle"):
    saved.shipped("doc_to_lora", "haystack")


EVERY_OPTION = {"normalize_features": True, "center_momentum": 0.9, "zero_b_init": "head", "generated_factors": "b",
                "chunk_gate": True, "chunk_gate_cut": True}


def _format_1_folder(folder, config, variables, base, **config_changes):
  """A folder as lora-hyper wrote it before format 2: flat experimental fields, the code centre among
  the params, the chunk gates inside the heads."""
  import safetensors.numpy

  from lora_hyper import files
  from lora_hyper.hypernetworks import _common

  flat_config = {k: v for k, v in _common.config_to_dict(config).items() if k != "experimental"}
  flat_config.update({**dataclasses.asdict(config.experimental), "lookahead": 0, **config_changes})
  params = {**variables["params"]}
  gates = params.pop("gates_down")
  params["heads_down"] = {**params["heads_down"], "gate_w": gates["w"], "gate_b": gates["c"]}
  params["center_ema"] = variables["code_stats"]["centre"]["ema"]
  params["center_weight"] = variables["code_stats"]["centre"]["weight"].reshape(1)
  flat = {"/".join(k.key for k in path): np.asarray(v) for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  folder.mkdir()
  safetensors.numpy.save_file(flat, str(folder / "params.safetensors"))
  manifest = {"format": 1, "kind": "doc_to_lora", "config": flat_config, "base": io.base_identity(base).to_dict(),
              "base_config": config.base.to_dict(), "params_dtype": "float32",
              "params_digest": files.file_digest(folder / "params.safetensors")}
  (folder / saved.MANIFEST).write_text(json.dumps(manifest))


def test_statistics_round_trip_and_format_1_folders_load_as_format_2(base, tmp_path):
  """Variables beyond the params (the code centre) are saved and loaded with them; a folder of format 1
  (the layout the shipped hypernetworks had) loads to the same config and variables; one that uses a
  removed option stops with an error naming it."""
  config = doc_to_lora.d2l_tiny(base.config, experimental=EVERY_OPTION)
  variables = _perturbed(doc_to_lora.init(config, jax.random.key(0)), 0)
  assert set(variables) == {"params", "code_stats"}
  saved.save_hypernetwork(tmp_path / "new", config, variables, base=io.base_identity(base))
  loaded = saved.load_hypernetwork(tmp_path / "new", base)
  assert loaded.config == config
  jax.tree.map(np.testing.assert_array_equal, loaded.variables, variables)

  _format_1_folder(tmp_path / "old", config, variables, base)
  old = saved.load_hypernetwork(tmp_path / "old", base)
  assert old.config == config
  jax.tree.map(np.testing.assert_array_equal, old.variables, variables)
  text = "Ava has three cats and a dog named Bo."
  make = lambda v: doc_to_lora.internalize(v, base.params, text, config=config, tokenizer=base.tokenizer).weights
  jax.tree.map(np.testing.assert_array_equal, dict(make(old.variables)), dict(make(variables)))

  _format_1_folder(tmp_path / "lookahead", config, variables, base, lookahead=2)
  with pytest.raises(ValueError, match="uses lookahead=2, an experimental option that lora-hyper no longer has"):
    saved.load_hypernetwork(tmp_path / "lookahead", base)
  _format_1_folder(tmp_path / "b_plus_a", config, variables, base, generated_factors="b+a")
  with pytest.raises(ValueError, match="uses generated_factors='b\\+a'"):
    saved.load_hypernetwork(tmp_path / "b_plus_a", base)
  with pytest.raises(ValueError, match="does not match its config"):  # the centre without its statistics
    saved.save_hypernetwork(tmp_path / "x", config, {"params": variables["params"]}, base=io.base_identity(base))
