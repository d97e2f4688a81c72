"""Adapter files: a generated LoRA saved as safetensors with what it needs to be trusted later.

  DIR/adapter.safetensors
    tensors   "{module}.a" [layers, rank, d_in], "{module}.b" [layers, rank, d_out] (float32)
    metadata  "lora_hyper": JSON {format, base: {name, digest}, modules, rank, num_layers,
              scaling, source: how it was made (documents' sha256 or task description, and
              the hypernetwork that made it), content_digest (`content_digest`)}

Loading verifies `content_digest` and that every tensor is finite, so a damaged file stops with
a CorruptFileError instead of answering. Files written before the digest existed have none and
get the finiteness check only.

The base model's identity is its name plus a digest of its architecture and weights, so an
adapter never silently lands on another model. A PEFT folder (adapter_config.json +
adapter_model.safetensors) loads through the same `load_adapter`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
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
from lora_hyper.errors import CorruptFileError
from lora_hyper.model.base_model import BaseModel
from lora_hyper.model.config import MODULES, GemmaConfig

FORMAT = 1
ADAPTER_FILE = "adapter.safetensors"
_METADATA_KEY = "lora_hyper"
_DIGEST_FIELD = "content_digest"
_REMAKE = "make the adapter again (lora-hyper internalize or adapt)"
# The metadata fields of files written before the digest existed: exactly these, nothing else.
_LEGACY_FIELDS = frozenset({"format", "base", "modules", "rank", "num_layers", "scaling", "source"})
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
  def from_dict(cls, d: Any, where: str = "field", fix: str = "") -> "BaseIdentity":
    """`to_dict`'s inverse. When `d` is not {name, digest} strings: a CorruptFileError that reads
    "{where} 'base...' must be ..., got ...; {fix}"."""
    problem = None
    if not isinstance(d, Mapping):
      problem = f"'base' must be an object {{name, digest}}, got {json_type(d)}"
    else:
      for key in ("name", "digest"):
        if not isinstance(d.get(key), str):
          problem = f"'base.{key}' must be a string, got {'nothing' if key not in d else json_type(d[key])}"
          break
    if problem:
      raise CorruptFileError(f"{where} {problem}" + (f"; {fix}" if fix else ""))
    return cls(name=d["name"], digest=d["digest"])


def json_type(value: Any) -> str:
  """The JSON name of a parsed value's type, for error messages about wrongly-typed fields."""
  names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
  return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


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


def content_digest(tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
  """blake2b (32 hex digits) of the metadata (less this digest) and each tensor's name, dtype, shape
  and bytes, in sorted name order.

  It covers what the file means, not how the container lays it out: a file rewritten with the same
  tensors and metadata (other order, other JSON spacing) keeps its digest. The metadata is covered
  because its `scaling` changes the adapter as much as the tensors do.
  """
  h = hashlib.blake2b(digest_size=16)
  fields = {k: v for k, v in meta.items() if k != _DIGEST_FIELD}
  h.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
  for name in sorted(tensors):
    t = np.ascontiguousarray(tensors[name])
    # The header fixes the byte count that follows, so consecutive tensors cannot run into each other.
    h.update(json.dumps([name, t.dtype.str, list(t.shape)]).encode())
    h.update(t.tobytes())
  return h.hexdigest()


def save_adapter(directory: str | os.PathLike, adapter: lora.LoraAdapter, *, base: BaseIdentity,
                 source: Mapping[str, Any]) -> Path:
  """Writes DIR/adapter.safetensors (atomically) and returns its path. One unbatched adapter."""
  rank = lora.single_rank(adapter, "save_adapter")
  tensors = {f"{m}.{f}": np.ascontiguousarray(np.asarray(ab[f], np.float32))
             for m, ab in adapter.weights.items() for f in ("a", "b")}
  num_layers = next(iter(tensors.values())).shape[0]
  for name, t in tensors.items():
    if not np.isfinite(t).all():  # a file that can never load is better not written
      raise ValueError(f"the adapter to save holds NaN or infinite values in {name!r} (the hypernetwork or "
                       f"training that made it diverged); nothing was written to {str(directory)!r}")
  meta = {"format": FORMAT, "base": base.to_dict(), "modules": list(adapter.modules), "rank": rank,
          "num_layers": num_layers, "scaling": float(adapter.scaling), "source": dict(source)}
  # Digest the metadata as it will read back (tuples become lists, keys strings), so loading agrees.
  meta = json.loads(json.dumps(meta))
  meta[_DIGEST_FIELD] = content_digest(tensors, meta)
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
  weights = _weights(tensors, info, file)  # shapes first: their errors say more than a digest mismatch
  _check_integrity(tensors, meta, file)
  adapter = lora.LoraAdapter(weights, info.scaling)
  if base is not None:
    check_base(info.base, base, f"adapter {str(file)!r}")
    _validate(adapter, base.config, file)
  return adapter, info


def _corrupt(file: Path, problem: str) -> CorruptFileError:
  return CorruptFileError(f"adapter {str(file)!r} is damaged: {problem}; {_REMAKE}")


def _read(file: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  try:
    with safetensors.safe_open(str(file), framework="numpy") as f:
      metadata = f.metadata() or {}
      tensors = {k: f.get_tensor(k) for k in f.keys()}
  except safetensors.SafetensorError as e:
    raise CorruptFileError(f"{str(file)!r} is not a readable safetensors file (truncated or corrupt?): {e}; "
                           f"{_REMAKE}") from e
  if _METADATA_KEY not in metadata:
    raise ValueError(f"{str(file)!r} is not a lora-hyper adapter: its metadata has no {_METADATA_KEY!r} entry")
  try:
    meta = json.loads(metadata[_METADATA_KEY])
  except json.JSONDecodeError as e:
    raise _corrupt(file, f"its {_METADATA_KEY!r} metadata is not valid JSON ({e})") from e
  if not isinstance(meta, dict):
    raise _corrupt(file, f"its {_METADATA_KEY!r} metadata must be a JSON object, got {json_type(meta)}")
  return tensors, meta


def _field(meta: Mapping[str, Any], key: str, want: str, ok: Any, file: Path, default: Any = ...) -> Any:
  """meta[key] when `ok` accepts it (`default` when given and the key is missing); otherwise a
  CorruptFileError naming the field and what it should be."""
  if key not in meta and default is not ...:
    return default
  value = meta.get(key)
  if key not in meta or not ok(value):
    got = "nothing" if key not in meta else f"{json_type(value)} {json.dumps(value)[:60]}"
    raise _corrupt(file, f"its metadata field {key!r} must be {want}, got {got}")
  return value


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)  # JSON true is not a layer count


def _is_finite_number(x: Any) -> bool:
  try:
    return (_is_int(x) or isinstance(x, float)) and math.isfinite(x)
  except OverflowError:  # an integer too large for a float
    return False


def _info(meta: Mapping[str, Any], file: Path) -> AdapterInfo:
  if meta.get("format") != FORMAT:
    raise ValueError(f"{str(file)!r} has adapter format {meta.get('format')!r}; this lora-hyper reads {FORMAT}")
  modules = _field(meta, "modules", "a non-empty array of module names", lambda v: isinstance(v, list) and v, file)
  if any(m not in MODULES for m in modules) or len(set(modules)) != len(modules):
    raise ValueError(f"{str(file)!r} targets modules {modules}; expected a subset of {MODULES}")
  identity = BaseIdentity.from_dict(_field(meta, "base", "an object {name, digest}", lambda v: True, file),
                                    f"adapter {str(file)!r} is damaged: its metadata field", _REMAKE)
  rank = _field(meta, "rank", "a positive integer", lambda v: _is_int(v) and v > 0, file)
  num_layers = _field(meta, "num_layers", "a positive integer", lambda v: _is_int(v) and v > 0, file)
  scaling = _field(meta, "scaling", "a finite number", _is_finite_number, file)
  source = _field(meta, "source", "an object", lambda v: isinstance(v, dict), file, default={})
  if _field(meta, _DIGEST_FIELD, "a string", lambda v: isinstance(v, str), file, default=None) is None:
    unknown = sorted(set(meta) - _LEGACY_FIELDS)
    if unknown:  # e.g. a damaged "content_digest" key: without this the file would pass as unverifiable
      raise _corrupt(file, f"its metadata has no {_DIGEST_FIELD!r} but unknown field(s) {unknown}, so its "
                           "contents cannot be verified")
  return AdapterInfo(identity, tuple(modules), rank, num_layers, float(scaling), source)


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
    if a.dtype != np.float32 or b.dtype != np.float32:
      raise _corrupt(file, f"module {m!r} has tensors of dtype {a.dtype} and {b.dtype}; adapters are float32")
    weights[m] = {"a": jnp.asarray(a), "b": jnp.asarray(b)}
  return weights


def _check_integrity(tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any], file: Path) -> None:
  """The recorded digest matches and every value is finite. Files from before the digest existed
  have none: they get the finiteness check alone, which still catches NaN written into them."""
  recorded = meta.get(_DIGEST_FIELD)
  if recorded is not None and recorded != content_digest(tensors, meta):
    raise _corrupt(file, f"its tensors or metadata do not match the {_DIGEST_FIELD} it was saved with "
                         "(overwritten or edited since)")
  _check_finite({f"tensor {name!r}": tensors[name] for name in sorted(tensors)}, file)


def _check_finite(arrays: Mapping[str, Any], file: Path) -> None:
  """A CorruptFileError naming the first of `arrays` (described by its key) that holds NaN or inf."""
  for what, array in arrays.items():
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(np.asarray(array))))
    if bad:
      raise _corrupt(file, f"{what} holds {bad} NaN or infinite value(s)")


def _validate(adapter: lora.LoraAdapter, config: GemmaConfig, file: Path) -> None:
  try:
    lora.validate(adapter, config)
  except ValueError as e:
    raise ValueError(f"adapter {str(file)!r} does not fit the loaded base model: {e}") from e


def _load_peft(folder: Path, base: BaseModel | None) -> tuple[lora.LoraAdapter, AdapterInfo]:
  if base is None:
    raise ValueError(f"{str(folder)!r} is a PEFT adapter: loading it needs the base model (pass base=)")
  adapter = peft.import_peft(folder, base.config)
  # PEFT files carry no digest of ours: finiteness is what can be checked.
  _check_finite({f"lora_{f.upper()} of module {m!r}": ab[f]
                 for m, ab in adapter.weights.items() for f in ("a", "b")}, folder / peft.WEIGHTS_FILE)
  info = AdapterInfo(None, adapter.modules, adapter.rank, base.config.num_layers, adapter.scaling,
                     {"method": "peft", "path": str(folder)})
  return adapter, info
