"""The standard PEFT layout, written and read without torch: adapter_config.json + adapter_model.safetensors.

Key names are those PEFT saves for transformers' Gemma2ForCausalLM / Gemma3ForCausalLM:
  base_model.model.model.layers.{i}.mlp.down_proj.lora_A.weight   [r, d_in]   = our A
  base_model.model.model.layers.{i}.mlp.down_proj.lora_B.weight   [d_out, r]  = our B^T
PEFT scales by lora_alpha / r (use_rslora: / sqrt(r)); ours is a free float applied directly, so
the export writes lora_alpha = scaling * r. Rank-concatenated (chunked) adapters export as one
adapter of the total rank with the same scaling.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

from lora_hyper import files
from lora_hyper.adapters import lora
from lora_hyper.model.config import MODULES, GemmaConfig

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model.model.layers"
HF_MODULES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
              "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
_OURS = {hf.split(".")[1]: m for m, hf in HF_MODULES.items()}  # "q_proj" -> "q"
_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.weight$")
# PEFT options that change what the tensors mean; an import that ignored them would be wrong.
_UNSUPPORTED = {"use_dora": False, "fan_in_fan_out": False, "bias": "none", "lora_bias": False,
                "rank_pattern": {}, "alpha_pattern": {}, "layer_replication": None, "modules_to_save": None}


def key(layer: int, module: str, factor: str) -> str:
  """PEFT's saved name of one layer's factor ("A" or "B") of a target module."""
  return f"{PREFIX}.{layer}.{HF_MODULES[module]}.lora_{factor}.weight"


def export_peft(adapter: lora.LoraAdapter, directory: str | os.PathLike, *,
                base_model_name_or_path: str | None = None) -> Path:
  """Writes one unbatched adapter in the PEFT layout (each file atomically); returns the folder."""
  rank = lora.single_rank(adapter, "export_peft")  # PEFT's `r` is one rank
  tensors = {}
  for m, ab in adapter.weights.items():
    a, b = np.asarray(ab["a"], np.float32), np.asarray(ab["b"], np.float32)
    for i in range(a.shape[0]):
      tensors[key(i, m, "A")] = np.ascontiguousarray(a[i])
      tensors[key(i, m, "B")] = np.ascontiguousarray(b[i].T)
  config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
      "r": rank, "lora_alpha": float(adapter.scaling) * rank, "use_rslora": False,
      "target_modules": [HF_MODULES[m].split(".")[1] for m in adapter.modules], "lora_dropout": 0.0,
      "inference_mode": True, "init_lora_weights": True, **_UNSUPPORTED,
  }
  folder = Path(directory)
  files.atomic_write(folder / WEIGHTS_FILE,
                     lambda tmp: safetensors.numpy.save_file(tensors, tmp, metadata={"format": "pt"}))
  text = json.dumps(config, indent=2)
  files.atomic_write(folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))
  return folder


def import_peft(directory: str | os.PathLike, config: GemmaConfig) -> lora.LoraAdapter:
  """A PEFT LoRA folder for a Gemma model of `config` -> our adapter (float32).

  Layers the PEFT adapter does not target get zero factors (no delta), as in PEFT.
  """
  folder = Path(directory)
  peft_config = _read_config(folder)
  tensors = _read_tensors(folder / WEIGHTS_FILE)
  rank = int(peft_config["r"])
  scale_by = math.sqrt(rank) if peft_config.get("use_rslora") else rank
  scaling = float(peft_config["lora_alpha"]) / scale_by

  found: dict[str, dict[int, dict[str, np.ndarray]]] = {}
  for name, w in tensors.items():
    match = _KEY.search(name)
    if match is None or match.group(2) not in _OURS:
      raise ValueError(f"{str(folder / WEIGHTS_FILE)!r}: tensor {name!r} is not a LoRA factor of a Gemma "
                       "attention or MLP projection")
    layer, module, factor = int(match.group(1)), _OURS[match.group(2)], match.group(3)
    if layer >= config.num_layers:
      raise ValueError(f"{str(folder)!r} adapts layer {layer}, but the base model has {config.num_layers} layers")
    found.setdefault(module, {}).setdefault(layer, {})[factor] = w
  if not found:
    raise ValueError(f"{str(folder / WEIGHTS_FILE)!r} holds no LoRA factors")

  weights = {}
  for module in (m for m in MODULES if m in found):
    d_in, d_out = config.module_shape(module)
    a = np.zeros((config.num_layers, rank, d_in), np.float32)
    b = np.zeros((config.num_layers, rank, d_out), np.float32)
    for layer, ab in found[module].items():
      if set(ab) != {"A", "B"}:
        raise ValueError(f"{str(folder)!r}: layer {layer} {module!r} has lora_{''.join(ab)} but not both A and B")
      if ab["A"].shape != (rank, d_in) or ab["B"].shape != (d_out, rank):
        raise ValueError(
            f"{str(folder)!r}: layer {layer} {module!r} has lora_A{ab['A'].shape} lora_B{ab['B'].shape}; "
            f"this base model with r={rank} needs lora_A({rank}, {d_in}) and lora_B({d_out}, {rank})")
      a[layer], b[layer] = ab["A"], ab["B"].T
    weights[module] = {"a": jnp.asarray(a), "b": jnp.asarray(b)}
  return lora.LoraAdapter(weights, scaling)


def _read_config(folder: Path) -> dict[str, Any]:
  path = folder / CONFIG_FILE
  config = files.read_json_file(path, f"{str(folder)!r} is not a PEFT adapter folder: no {CONFIG_FILE} in it")
  if config.get("peft_type") != "LORA":
    raise ValueError(f"{str(path)!r} has peft_type {config.get('peft_type')!r}; only LORA adapters are supported")
  for option, plain in _UNSUPPORTED.items():
    value = config.get(option)
    if value is not None and value != plain and value != []:
      raise ValueError(f"{str(path)!r} sets {option}={config[option]!r}, which lora-hyper does not support "
                       f"(supported: {plain!r})")
  for field in ("r", "lora_alpha"):
    if field not in config:
      raise ValueError(f"{str(path)!r} has no {field!r}")
  return config


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
  if not path.is_file():
    raise FileNotFoundError(f"no {path.name} in PEFT adapter folder {str(path.parent)!r} "
                            "(only the safetensors format is read)")
  try:  # through flax: plain numpy has no bfloat16, which many PEFT files use
    with safetensors.safe_open(str(path), framework="flax") as f:
      return {k: np.asarray(f.get_tensor(k), np.float32) for k in f.keys()}
  except safetensors.SafetensorError as e:
    raise ValueError(f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {e}") from e
