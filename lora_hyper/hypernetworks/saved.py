"""A hypernetwork as one folder that `load_hypernetwork` turns back into (kind, config, params).

  DIR/hypernetwork.json   {format, kind, config (without its base), base: {name, digest},
                           base_config, task_encoder (Text-to-LoRA: {type: base_model, pooling}
                           or {type: minilm}), params_digest}
  DIR/params.safetensors  params flattened with '/'-joined paths, float32 or bfloat16 (half the
                          size; loaded back as float32)
  DIR/config.gin          the operative gin config of the training run that made it, if any

The config is stored whole, so loading needs no gin; config.gin is the trace of how it was
trained. Loading against a base model checks the recorded identity and runs the hypernetwork
with that model's config (so float32 or bfloat16 both work).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from lora_hyper import files
from lora_hyper.adapters import io
from lora_hyper.hypernetworks import doc_to_lora, text_to_lora
from lora_hyper.hypernetworks.perceiver import PerceiverConfig
from lora_hyper.hypernetworks import task_encoders
from lora_hyper.model import config as config_lib
from lora_hyper.model.base_model import BaseModel

FORMAT = 1
MANIFEST, PARAMS, GIN = "hypernetwork.json", "params.safetensors", "config.gin"
KINDS: dict[str, type] = {"doc_to_lora": doc_to_lora.DocToLoraConfig, "text_to_lora": text_to_lora.TextToLoraConfig}
_PARAM_SHAPES = {"doc_to_lora": doc_to_lora.param_shapes, "text_to_lora": text_to_lora.param_shapes}
# Where a trained hypernetwork shipped with the package would live, per kind.
SHIPPED_DIR = Path(__file__).parents[1] / "pretrained"
SHIPPED = {"doc_to_lora": "d2l_gemma3_270m", "text_to_lora": "t2l_gemma3_270m"}
_GIN_FILES = {"doc_to_lora": "gin_configs/d2l_270m.gin", "text_to_lora": "experiments/t2l/sft.gin"}

Config = doc_to_lora.DocToLoraConfig | text_to_lora.TextToLoraConfig


@dataclasses.dataclass(frozen=True, eq=False)
class SavedHypernetwork:
  kind: str  # "doc_to_lora" | "text_to_lora"
  config: Config
  params: Any
  base: io.BaseIdentity
  path: Path
  params_digest: str
  task_pooling: str | None = None  # Text-to-LoRA: how the base model pools a description
  gin_config: str | None = None
  task_encoder_type: str = "base_model"  # Text-to-LoRA: one of task_encoders.TASK_ENCODERS

  def describe(self) -> dict[str, str]:
    """What adapter files record about the hypernetwork that made them."""
    return {"kind": self.kind, "digest": self.params_digest[:16], "path": str(self.path)}

  def task_encoder(self, base: BaseModel) -> task_encoders.TaskEncoder:
    """The description encoder this Text-to-LoRA hypernetwork was trained with."""
    if self.kind != "text_to_lora":
      raise ValueError(f"{str(self.path)!r} is a {self.kind} hypernetwork; only text_to_lora encodes tasks")
    return task_encoders.make_task_encoder(self.task_encoder_type, base, pooling=self.task_pooling)


def kind_of(config: Config) -> str:
  for kind, cls in KINDS.items():
    if isinstance(config, cls):
      return kind
  raise TypeError(f"not a hypernetwork config: {type(config).__name__}")


PARAM_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def _flatten(params: Any, dtype: str = "float32") -> dict[str, np.ndarray]:
  if dtype not in PARAM_DTYPES:
    raise ValueError(f"params dtype must be one of {sorted(PARAM_DTYPES)}, got {dtype!r}")
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(k.key for k in path): np.ascontiguousarray(np.asarray(v, PARAM_DTYPES[dtype]))
          for path, v in flat}


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  tree: dict = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = jnp.asarray(value, jnp.float32)  # bfloat16 files too: params are float32 in use
  return tree


def _config_dict(config: Config) -> dict[str, Any]:
  """The config's fields as JSON values; the base model is stored apart (it has its own identity)."""
  out = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if field.name != "base":
      out[field.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
  return out


def _config_from_dict(kind: str, d: Mapping[str, Any], base: config_lib.GemmaConfig, where: Path) -> Config:
  d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
  if "perceiver" in d:
    d["perceiver"] = PerceiverConfig(**d["perceiver"])
  try:
    return KINDS[kind](base=base, **d)
  except TypeError as e:  # a field this version does not know
    raise ValueError(f"{str(where)!r}: the stored {kind} config does not fit this lora-hyper: {e}") from e


def save_hypernetwork(directory: str | os.PathLike, config: Config, params: Any, *, base: io.BaseIdentity,
                      gin_config: str | None = None, task_encoder: str = "base_model",
                      task_pooling: str = "last_token", params_dtype: str = "float32") -> Path:
  """Writes the folder (params first, the manifest last, each atomically) and returns it.
  `params_dtype="bfloat16"` halves the file (how the shipped hypernetworks are stored)."""
  kind = kind_of(config)
  if task_encoder not in task_encoders.TASK_ENCODERS:
    raise ValueError(f"task_encoder must be one of {task_encoders.TASK_ENCODERS}, got {task_encoder!r}")
  folder = Path(directory)
  params_file = folder / PARAMS
  flat = _flatten(params, params_dtype)
  files.atomic_write(params_file, lambda tmp: safetensors.numpy.save_file(flat, tmp))
  manifest = {"format": FORMAT, "kind": kind, "config": _config_dict(config), "base": base.to_dict(),
              "base_config": config.base.to_dict(), "params_dtype": params_dtype,
              "params_digest": files.file_digest(params_file)}
  if kind == "text_to_lora":
    manifest["task_encoder"] = ({"type": "base_model", "pooling": task_pooling} if task_encoder == "base_model"
                                else {"type": task_encoder})
  if gin_config is not None:
    files.atomic_write(folder / GIN, lambda tmp: Path(tmp).write_text(gin_config))
  text = json.dumps(manifest, indent=1)
  files.atomic_write(folder / MANIFEST, lambda tmp: Path(tmp).write_text(text))
  return folder


def load_hypernetwork(directory: str | os.PathLike, base: BaseModel | None = None) -> SavedHypernetwork:
  """The folder `save_hypernetwork` wrote. With `base`, checks it is the base model the
  hypernetwork was made for, and gives the config that model's config (dtype included)."""
  folder = Path(directory)
  manifest_file, params_file = folder / MANIFEST, folder / PARAMS
  manifest = files.read_json_file(manifest_file, f"{str(folder)!r} is not a saved hypernetwork: no {MANIFEST} in it")
  if manifest.get("format") != FORMAT or manifest.get("kind") not in KINDS:
    raise ValueError(f"{str(manifest_file)!r} has format {manifest.get('format')!r} and kind "
                     f"{manifest.get('kind')!r}; this lora-hyper reads format {FORMAT} of {sorted(KINDS)}")
  kind, identity = manifest["kind"], io.BaseIdentity.from_dict(manifest["base"])
  if base is not None:
    io.check_base(identity, base, f"hypernetwork {str(folder)!r}")
  base_config = base.config if base is not None else config_lib.config_from_dict(manifest["base_config"])
  config = _config_from_dict(kind, manifest["config"], base_config, manifest_file)
  if not params_file.is_file():
    raise FileNotFoundError(f"hypernetwork {str(folder)!r} has no {PARAMS}")
  if files.file_digest(params_file) != manifest["params_digest"]:
    raise ValueError(f"{str(params_file)!r} does not match the digest in {MANIFEST}: truncated, corrupt or "
                     "replaced; save the hypernetwork again")
  try:
    params = _unflatten(safetensors.numpy.load_file(str(params_file)))
  except safetensors.SafetensorError as e:
    raise ValueError(f"{str(params_file)!r} is not a readable safetensors file: {e}") from e
  _check_shapes(params, _PARAM_SHAPES[kind](config), params_file)
  gin_file = folder / GIN
  encoder = manifest.get("task_encoder", {})
  if encoder.get("type", "base_model") not in task_encoders.TASK_ENCODERS:
    raise ValueError(f"{str(manifest_file)!r} names task encoder {encoder['type']!r}; this lora-hyper knows "
                     f"{task_encoders.TASK_ENCODERS}")
  return SavedHypernetwork(kind, config, params, identity, folder, manifest["params_digest"], encoder.get("pooling"),
                           gin_file.read_text() if gin_file.is_file() else None,
                           task_encoder_type=encoder.get("type", "base_model"))


def shape_mismatch(params: Any, want: Any) -> str | None:
  """How the leaves of `params` differ from `want`'s (paths and shapes), or None when they fit."""
  shapes = lambda tree: {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  got, expected = shapes(params), shapes(want)
  if got == expected:
    return None
  missing = sorted(set(expected) - set(got))
  wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
  extra = sorted(set(got) - set(expected))
  return f"missing {missing[:3]}, wrong shapes {wrong[:3]}, unexpected {extra[:3]}"


def _check_shapes(params: Any, want: Any, file: Path) -> None:
  mismatch = shape_mismatch(params, want)
  if mismatch:
    raise ValueError(f"{str(file)!r} does not match its config: {mismatch}")


def shipped(kind: str) -> Path:
  """The trained hypernetwork of `kind` shipped with the package, or a FileNotFoundError saying how to make one."""
  folder = SHIPPED_DIR / SHIPPED[kind]
  if not (folder / MANIFEST).is_file():
    raise FileNotFoundError(
        f"no trained {kind} hypernetwork is shipped with lora-hyper yet (looked in {str(folder)!r}); pass a "
        f"trained one (--hypernetwork DIR), e.g. from: lora-hyper train --gin_file {_GIN_FILES[kind]} "
        "--gin_param \"lora_hyper.train.workdir = '/tmp/run'\" --out DIR")
  return folder
