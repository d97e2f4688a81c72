"""Adapter files: a generated LoRA saved as safetensors with what it needs to be trusted later.

  DIR/adapter.safetensors
    tensors   "{module}.a" [layers, rank, d_in], "{module}.b" [layers, rank, d_out] (float32)
    metadata  "lora_hyper": JSON {format, base: {name, digest}, modules, rank, num_layers,
              scaling, source: how it was made (documents' sha256 or task description, and
              the hypernetwork that made it)}

The base model's identity is its name plus a digest of its architecture and weights, so an
adapter never silently lands on another model. A PEFT folder (adapter_config.json +
adapter_model.safetensors) loads through the same `load_adapter`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

from lora_hyper import files
from lora_hyper.adapters import lora, peft
from lora_hyper.model.base_model import BaseModel
from lora_hyper.model.config import MODULES, GemmaConfig

FORMAT = 1
ADAPTER_FILE = "adapter.safetensors"
_METADATA_KEY = "lora_hyper"
# Config fields that change how a model runs, not what it is: an adapter fits either way.
_RUNTIME_FIELDS = ("dtype", "param_dtype", "remat")


# ----------------------------------------------------------------------------- base identity


@dataclasses.dataclass(frozen=True)
class BaseIdentity:
  """Which base model an artifact belongs to. `digest` alone decides a match; `name` is for people."""

  name: str
  digest: str

  def to_dict(self) -> dict[str, str]:
    return {"name": self.name, "digest": self.digest}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "BaseIdentity":
    return cls(name=str(d["name"]), digest=str(d["digest"]))


def weights_digest(config: GemmaConfig, params: Any) -> str:
  """blake2b (16 hex digits) of the architecture config and every param leaf's path and bytes.

  Leaves are hashed as bfloat16, so one checkpoint loaded in float32 or bfloat16 has one identity
  (bfloat16 loading is float32 loading plus this same cast).
  """
  h = hashlib.blake2b(digest_size=8)
  arch = {k: v for k, v in config.to_dict().items() if k not in _RUNTIME_FIELDS}
  h.update(json.dumps(arch, sort_keys=True).encode())
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.asarray(jnp.asarray(leaf, jnp.bfloat16)).tobytes())
  return h.hexdigest()


_IDENTITIES: "weakref.WeakKeyDictionary[BaseModel, BaseIdentity]" = weakref.WeakKeyDictionary()


def base_identity(model: BaseModel) -> BaseIdentity:
  """The identity of a loaded base model, computed once per BaseModel object (~1 s for 270M)."""
  if model not in _IDENTITIES:
    _IDENTITIES[model] = BaseIdentity(model.name, weights_digest(model.config, model.params))
  return _IDENTITIES[model]


def check_base(recorded: BaseIdentity, model: BaseModel, what: str) -> None:
  """Raises a ValueError when `what` (e.g. "adapter file X") was made for another base model."""
  actual = base_identity(model)
  if recorded.digest != actual.digest:
    raise ValueError(
        f"{what} was made for base model {recorded.name!r} (digest {recorded.digest}), but the loaded base "
        f"model is {actual.name!r} (digest {actual.digest}); load the base model it was made for")


# ----------------------------------------------------------------------------- provenance


def text_digest(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()


def from_documents(documents: Sequence[str], names: Sequence[str], hypernetwork: Mapping[str, Any]
                   ) -> dict[str, Any]:
  """The `source` record of a Doc-to-LoRA adapter: each document's name and sha256."""
  return {"method": "doc_to_lora", "hypernetwork": dict(hypernetwork),
          "documents": [{"name": n, "sha256": text_digest(d)} for n, d in zip(names, documents, strict=True)]}


def from_task(description: str, hypernetwork: Mapping[str, Any]) -> dict[str, Any]:
  """The `source` record of a Text-to-LoRA adapter: the task description itself."""
  return {"method": "text_to_lora", "hypernetwork": dict(hypernetwork), "task": description}


# ----------------------------------------------------------------------------- save / load


@dataclasses.dataclass(frozen=True)
class AdapterInfo:
  """What an adapter file says about itself. `base` is None for PEFT folders (they do not say)."""

  base: BaseIdentity | None
  modules: tuple[str, ...]
  rank: int
  num_layers: int
  scaling: float
  source: Mapping[str, Any]


def save_adapter(directory: str | os.PathLike, adapter: lora.LoraAdapter, *, base: BaseIdentity,
                 source: Mapping[str, Any]) -> Path:
  """Writes DIR/adapter.safetensors (atomically) and returns its path. One unbatched adapter."""
  rank = lora.single_rank(adapter, "save_adapter")
  tensors = {f"{m}.{f}": np.ascontiguousarray(np.asarray(ab[f], np.float32))
             for m, ab in adapter.weights.items() for f in ("a", "b")}
  num_layers = next(iter(tensors.values())).shape[0]
  meta = {"format": FORMAT, "base": base.to_dict(), "modules": list(adapter.modules), "rank": rank,
          "num_layers": num_layers, "scaling": float(adapter.scaling), "source": dict(source)}
  path = Path(directory) / ADAPTER_FILE
  files.atomic_write(path, lambda tmp: safetensors.numpy.save_file(
      tensors, tmp, metadata={_METADATA_KEY: json.dumps(meta)}))
  return path


def load_adapter(path: str | os.PathLike, base: BaseModel | None = None) -> tuple[lora.LoraAdapter, AdapterInfo]:
  """An adapter saved by `save_adapter` (its folder or file) or a PEFT folder.

  With `base`, the adapter must have been made for that base model and fit its shapes; PEFT
  folders need `base` (they record neither the layer count nor the model's identity).
  """
  path = Path(path)
  if (path / "adapter_config.json").is_file() and not (path / ADAPTER_FILE).is_file():
    return _load_peft(path, base)
  file = path / ADAPTER_FILE if path.is_dir() else path
  if not file.is_file():
    raise FileNotFoundError(f"no adapter at {str(path)!r}: expected a folder with {ADAPTER_FILE} "
                            "(made by internalize/adapt) or a PEFT folder with adapter_config.json")
  tensors, meta = _read(file)
  info = _info(meta, file)
  adapter = lora.LoraAdapter(_weights(tensors, info, file), info.scaling)
  if base is not None:
    check_base(info.base, base, f"adapter {str(file)!r}")
    _validate(adapter, base.config, file)
  return adapter, info


def _read(file: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  try:
    with safetensors.safe_open(str(file), framework="numpy") as f:
      metadata = f.metadata() or {}
      tensors = {k: f.get_tensor(k) for k in f.keys()}
  except safetensors.SafetensorError as e:
    raise ValueError(f"{str(file)!r} is not a readable safetensors file (truncated or corrupt?): {e}") from e
  if _METADATA_KEY not in metadata:
    raise ValueError(f"{str(file)!r} is not a lora-hyper adapter: its metadata has no {_METADATA_KEY!r} entry")
  return tensors, json.loads(metadata[_METADATA_KEY])


def _info(meta: Mapping[str, Any], file: Path) -> AdapterInfo:
  if meta.get("format") != FORMAT:
    raise ValueError(f"{str(file)!r} has adapter format {meta.get('format')!r}; this lora-hyper reads {FORMAT}")
  modules = tuple(meta["modules"])
  if not modules or any(m not in MODULES for m in modules):
    raise ValueError(f"{str(file)!r} targets modules {list(modules)}; expected a subset of {MODULES}")
  return AdapterInfo(BaseIdentity.from_dict(meta["base"]), modules, int(meta["rank"]), int(meta["num_layers"]),
                     float(meta["scaling"]), meta.get("source", {}))


def _weights(tensors: Mapping[str, np.ndarray], info: AdapterInfo, file: Path) -> dict[str, dict[str, jax.Array]]:
  want = {f"{m}.{f}" for m in info.modules for f in ("a", "b")}
  if set(tensors) != want:
    raise ValueError(f"{str(file)!r} holds tensors {sorted(tensors)}, but its metadata promises {sorted(want)}")
  weights = {}
  for m in info.modules:
    a, b = tensors[f"{m}.a"], tensors[f"{m}.b"]
    lead = (info.num_layers, info.rank)
    if a.ndim != 3 or b.ndim != 3 or a.shape[:2] != lead or b.shape[:2] != lead:
      raise ValueError(f"{str(file)!r}: module {m!r} has a{a.shape} b{b.shape}, but its metadata says "
                       f"{info.num_layers} layers of rank {info.rank}")
    weights[m] = {"a": jnp.asarray(a), "b": jnp.asarray(b)}
  return weights


def _validate(adapter: lora.LoraAdapter, config: GemmaConfig, file: Path) -> None:
  try:
    lora.validate(adapter, config)
  except ValueError as e:
    raise ValueError(f"adapter {str(file)!r} does not fit the loaded base model: {e}") from e


def _load_peft(folder: Path, base: BaseModel | None) -> tuple[lora.LoraAdapter, AdapterInfo]:
  if base is None:
    raise ValueError(f"{str(folder)!r} is a PEFT adapter: loading it needs the base model (pass base=)")
  adapter = peft.import_peft(folder, base.config)
  info = AdapterInfo(None, adapter.modules, adapter.rank, base.config.num_layers, adapter.scaling,
                     {"method": "peft", "path": str(folder)})
  return adapter, info
