"""PEFT layout: export -> import gives identical tensors; key names are PEFT's own; and the
reference: transformers' Gemma3ForCausalLM + peft.PeftModel with the exported adapter gives our
logits (float32, within 1e-3), for a plain and a rank-concatenated (chunked) adapter."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from lora_hyper.adapters import lora, peft
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer
from lora_hyper.model.config import MODULES

from hf_reference import ours_from_hf, tiny_hf_model

CFG = config_lib.tiny_gemma3()
D2L_SCALING = 2 * 2 ** 1.5  # Doc-to-LoRA's alpha for rank 2, applied directly


def _plain(cfg=CFG):
  return lora.random(jax.random.key(0), cfg, MODULES, rank=4, scaling=1.5, std=0.1)


def _chunked(cfg=CFG):
  """Three rank-2 chunk adapters concatenated along the rank axis, with Doc-to-LoRA's scaling."""
  keys = jax.random.split(jax.random.key(1), 3)
  return lora.concat([lora.random(k, cfg, ("down", "up"), rank=2, scaling=D2L_SCALING, std=0.05) for k in keys])


def _assert_same(a: lora.LoraAdapter, b: lora.LoraAdapter):
  assert a.scaling == pytest.approx(b.scaling, rel=1e-12) and a.modules == b.modules
  jax.tree.map(np.testing.assert_array_equal, dict(a.weights), dict(b.weights))


@pytest.mark.parametrize("make", [_plain, _chunked])
def test_export_import_round_trip_is_exact(make, tmp_path):
  adapter = make()
  peft.export_peft(adapter, tmp_path, base_model_name_or_path="google/gemma-3-270m")
  config = json.loads((tmp_path / peft.CONFIG_FILE).read_text())
  assert config["r"] == adapter.rank and not config["use_rslora"]
  assert config["lora_alpha"] / config["r"] == pytest.approx(adapter.scaling)  # PEFT's scaling is ours
  assert config["base_model_name_or_path"] == "google/gemma-3-270m"
  assert config["target_modules"] == [f"{m}_proj" for m in adapter.modules]
  tensors = safetensors.numpy.load_file(str(tmp_path / peft.WEIGHTS_FILE))
  assert len(tensors) == 2 * len(adapter.modules) * CFG.num_layers
  np.testing.assert_array_equal(tensors[peft.key(2, "down", "B")], np.asarray(adapter.weights["down"]["b"][2]).T)
  _assert_same(peft.import_peft(tmp_path, CFG), adapter)


def test_import_reads_rslora_and_fills_untargeted_layers_with_zeros(tmp_path):
  adapter = lora.random(jax.random.key(2), CFG, ("v",), rank=4, std=0.1)
  peft.export_peft(adapter, tmp_path)
  config = json.loads((tmp_path / peft.CONFIG_FILE).read_text())
  (tmp_path / peft.CONFIG_FILE).write_text(json.dumps({**config, "lora_alpha": 16, "use_rslora": True}))
  tensors = safetensors.numpy.load_file(str(tmp_path / peft.WEIGHTS_FILE))
  safetensors.numpy.save_file({k: v for k, v in tensors.items() if ".layers.1." not in k},
                              str(tmp_path / peft.WEIGHTS_FILE))
  imported = peft.import_peft(tmp_path, CFG)
  assert imported.scaling == 16 / 2  # rsLoRA: alpha / sqrt(r)
  v = imported.weights["v"]
  assert not np.any(np.asarray(v["a"][1])) and not np.any(np.asarray(v["b"][1]))
  np.testing.assert_array_equal(v["a"][0], adapter.weights["v"]["a"][0])


def test_import_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder: no adapter_config.json"):
    peft.import_peft(tmp_path, CFG)
  peft.export_peft(_plain(), tmp_path)
  config = json.loads((tmp_path / peft.CONFIG_FILE).read_text())
  (tmp_path / peft.CONFIG_FILE).write_text(json.dumps({**config, "use_dora": True}))
  with pytest.raises(ValueError, match="sets use_dora=True, which lora-hyper does not support"):
    peft.import_peft(tmp_path, CFG)
  (tmp_path / peft.CONFIG_FILE).write_text(json.dumps(config))
  with pytest.raises(ValueError, match=r"layer 0 'q' has lora_A\(4, 32\) lora_B\(64, 4\); .* needs lora_A\(4, 48\)"):
    peft.import_peft(tmp_path, config_lib.tiny_gemma3(embed_dim=48))
  with pytest.raises(ValueError, match="adapts layer 2, but the base model has 2 layers"):
    peft.import_peft(tmp_path, config_lib.tiny_gemma3(num_layers=2, sliding_layers=(True, False)))
  safetensors.numpy.save_file({"base_model.model.lm_head.lora_A.weight": np.zeros((4, 32), np.float32)},
                              str(tmp_path / peft.WEIGHTS_FILE))
  with pytest.raises(ValueError, match="'base_model.model.lm_head.lora_A.weight' is not a LoRA factor"):
    peft.import_peft(tmp_path, CFG)
  (tmp_path / peft.WEIGHTS_FILE).write_bytes(b"\x00" * 10)
  with pytest.raises(ValueError, match="not a readable safetensors file"):
    peft.import_peft(tmp_path, CFG)


def test_export_refuses_batched_adapters(tmp_path):
  with pytest.raises(ValueError, match="takes one adapter, got a batch"):
    peft.export_peft(lora.random(jax.random.key(0), CFG, ("q",), rank=2, batch=3), tmp_path)


# ----------------------------------------------------------------------------- the PyTorch reference

TOKENS = np.random.default_rng(0).integers(3, 128, (2, 20))  # past the sliding window of 8


def _hf_logits(model) -> np.ndarray:
  import torch

  with torch.no_grad():
    return model(torch.tensor(TOKENS)).logits.numpy()


def _our_logits(cfg, params, adapter=None) -> np.ndarray:
  out = transformer.forward(params, jnp.asarray(TOKENS, jnp.int32), config=cfg, adapter=adapter)
  return np.asarray(out.logits)


@pytest.mark.torch
def test_our_key_names_are_the_ones_peft_saves(tmp_path):
  import peft as peft_lib
  model = peft_lib.get_peft_model(tiny_hf_model(), peft_lib.LoraConfig(
      r=3, lora_alpha=6, target_modules=[f"{m}_proj" for m in MODULES], init_lora_weights=False))
  model.save_pretrained(tmp_path / "theirs")
  cfg, params = ours_from_hf(tiny_hf_model())
  theirs = safetensors.numpy.load_file(str(tmp_path / "theirs" / peft.WEIGHTS_FILE))
  peft.export_peft(lora.random(jax.random.key(0), cfg, MODULES, rank=3), tmp_path / "ours")
  ours = safetensors.numpy.load_file(str(tmp_path / "ours" / peft.WEIGHTS_FILE))
  assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
  # And PEFT's own adapter (random A and B) imports to the same function.
  imported = peft.import_peft(tmp_path / "theirs", cfg)
  assert imported.scaling == 2.0
  np.testing.assert_allclose(_our_logits(cfg, params, imported), _hf_logits(model), atol=1e-3, rtol=1e-3)


@pytest.mark.torch
@pytest.mark.parametrize("make", [_plain, _chunked], ids=["plain", "chunk_concatenated"])
def test_exported_adapter_in_peft_gives_our_logits(make, tmp_path):
  import peft as peft_lib
  hf_base = tiny_hf_model()
  cfg, params = ours_from_hf(hf_base)
  adapter = make(cfg)
  peft.export_peft(adapter, tmp_path)
  hf = peft_lib.PeftModel.from_pretrained(tiny_hf_model(), str(tmp_path)).eval()
  ours = _our_logits(cfg, params, adapter)
  assert np.abs(ours - _our_logits(cfg, params)).max() > 0.1  # the adapter matters
  np.testing.assert_allclose(ours, _hf_logits(hf), atol=1e-3, rtol=1e-3)
