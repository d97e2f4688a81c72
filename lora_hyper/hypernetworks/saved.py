"""A hypernetwork as one folder that `load_hypernetwork` turns back into (kind, config, variables).

  DIR/hypernetwork.json      {format, kind, config (without its base), base: {name, digest},
                              base_config, task_encoder (Text-to-LoRA: {type: base_model, pooling}
                              or {type: minilm}), variables_dtype, variables_digest}
  DIR/variables.safetensors  the Flax variables flattened with '/'-joined paths led by their
                             collection (`params/...`, `code_stats/...`), float32 or bfloat16 (half
                             the size; loaded back as float32)
  DIR/config.gin             the operative gin config of the training run that made it, if any, its
                             paths portable (files.portable_path)

The config is stored whole, so loading needs no gin; config.gin is the trace of how it was
trained. Loading against a base model checks the recorded identity and runs the hypernetwork
with that model's config (so float32 or bfloat16 both work). Folders of format 1 (before
Doc-to-LoRA's experimental options had their own sub-config) load too (`_format_1`).
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

from lora_hyper import files, pretrained
from lora_hyper.adapters import io
from lora_hyper.errors import CorruptFileError
from lora_hyper.hypernetworks import _common, _format_1, kinds, task_encoders
from lora_hyper.model import config as config_lib
from lora_hyper.model.base_model import BaseModel

FORMAT = 2
MANIFEST, VARIABLES, GIN = "hypernetwork.json", "variables.safetensors", "config.gin"
_RESAVE = "save the hypernetwork again"


@dataclasses.dataclass(frozen=True, eq=False)
class SavedHypernetwork:
  kind: str  # "doc_to_lora" | "text_to_lora"
  config: Any
  variables: Any  # {"params": ..., and for some Doc-to-LoRA options "code_stats": ...}
  base: io.BaseIdentity
  path: Path
  digest: str  # of the variables file
  task_pooling: str | None = None  # Text-to-LoRA: how the base model pools a description
  gin_config: str | None = None
  task_encoder_type: str = "base_model"  # Text-to-LoRA: one of task_encoders.TASK_ENCODERS

  @property
  def params(self) -> Any:
    return self.variables["params"]

  def describe(self) -> dict[str, str]:
    """What adapter files record about the hypernetwork that made them; `prompt` "chat" when its
    adapters are asked in the base model's chat turn (a published, chat-templated Doc-to-LoRA)."""
    described = {"kind": self.kind, "digest": self.digest[:16], "path": str(self.path)}
    return described | ({"prompt": "chat"} if getattr(self.config, "templated", False) else {})

  def task_encoder(self, base: BaseModel) -> task_encoders.TaskEncoder:
    """The description encoder this Text-to-LoRA hypernetwork was trained with."""
    if self.kind != "text_to_lora":
      raise ValueError(f"{str(self.path)!r} is a {self.kind} hypernetwork; only text_to_lora encodes tasks")
    return task_encoders.make_task_encoder(self.task_encoder_type, base, pooling=self.task_pooling)


DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def _flatten(variables: Any, dtype: str = "float32") -> dict[str, np.ndarray]:
  if dtype not in DTYPES:
    raise ValueError(f"variables dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
  flat = jax.tree_util.tree_flatten_with_path(variables)[0]
  # np.asarray (not ascontiguousarray, which makes scalars 1-d) keeps every shape, and copies only
  # what needs a cast or a layout: saving a published-size hypernetwork holds two copies, not three.
  return {"/".join(k.key for k in path): np.asarray(v, DTYPES[dtype], order="C") for path, v in flat}


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  tree: dict = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = jnp.asarray(value, jnp.float32)  # bfloat16 files too: variables are float32 in use
  return tree


def save_hypernetwork(directory: str | os.PathLike, config: Any, variables: Any, *, base: io.BaseIdentity,
                      gin_config: str | None = None, task_encoder: str = "base_model",
                      task_pooling: str = "last_token", dtype: str = "float32") -> Path:
  """Writes the folder (variables first, the manifest last, each atomically) and returns it.
  `dtype="bfloat16"` halves the file (how the shipped hypernetworks are stored)."""
  kind = kinds.of_config(config)
  if task_encoder not in task_encoders.TASK_ENCODERS:
    raise ValueError(f"task_encoder must be one of {task_encoders.TASK_ENCODERS}, got {task_encoder!r}")
  _check_shapes(variables, kind.variable_shapes(config), "the variables to save")
  folder = Path(directory)
  variables_file = folder / VARIABLES
  flat = _flatten(variables, dtype)
  files.atomic_write(variables_file, lambda tmp: safetensors.numpy.save_file(flat, tmp))
  manifest = {"format": FORMAT, "kind": kind.name, "config": _common.config_to_dict(config),
              "base": base.to_dict(), "base_config": config.base.to_dict(), "variables_dtype": dtype,
              "variables_digest": files.file_digest(variables_file)}
  if kind is kinds.TEXT_TO_LORA:
    manifest["task_encoder"] = ({"type": "base_model", "pooling": task_pooling} if task_encoder == "base_model"
                                else {"type": task_encoder})
  if gin_config is not None:  # a record of the run: its folders portable, as a shipped one must be
    text = files.portable_text(gin_config)
    files.atomic_write(folder / GIN, lambda tmp: Path(tmp).write_text(text))
  text = json.dumps(manifest, indent=1)
  files.atomic_write(folder / MANIFEST, lambda tmp: Path(tmp).write_text(text))
  return folder


def _read_variables(file: Path, digest: str | None) -> dict[str, np.ndarray]:
  if not file.is_file():
    raise FileNotFoundError(f"hypernetwork {str(file.parent)!r} has no {file.name}")
  if files.file_digest(file) != digest:
    raise CorruptFileError(f"{str(file)!r} does not match the digest in {MANIFEST}: truncated, corrupt or "
                           f"replaced; {_RESAVE}")
  try:
    flat = safetensors.numpy.load_file(str(file))
  except safetensors.SafetensorError as e:
    raise CorruptFileError(f"{str(file)!r} is not a readable safetensors file: {e}; {_RESAVE}") from e
  # The digest only says the file is the one saved: a NaN saved (or written in with the digest
  # recomputed) would otherwise generate NaN adapters, i.e. empty answers.
  for name in sorted(flat):
    bad = int(flat[name].size - np.count_nonzero(np.isfinite(np.asarray(flat[name], np.float32))))
    if bad:
      raise CorruptFileError(f"{str(file)!r}: variable {name!r} holds {bad} NaN or infinite value(s); "
                             f"{_RESAVE} from a good checkpoint")
  return flat


def _check_manifest(manifest: Any, file: Path, base_given: bool) -> None:
  """Every field loading reads is there with its JSON type, or a CorruptFileError naming it."""
  if not isinstance(manifest, dict):
    raise CorruptFileError(f"{str(file)!r} must hold a JSON object, got {io.json_type(manifest)}; {_RESAVE}")
  digest = "params_digest" if manifest.get("format") == 1 else "variables_digest"
  fields = {"format": (int, "a number"), "kind": (str, "a string"), "config": (dict, "an object"),
            "base": (dict, "an object {name, digest}"), digest: (str, "a string")}
  if not base_given:  # only read without a base model, whose config stands in for it otherwise
    fields["base_config"] = (dict, "an object")
  if "task_encoder" in manifest:
    fields["task_encoder"] = (dict, "an object {type, pooling}")
  for key, (kind, want) in fields.items():
    if key not in manifest or not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
      got = "nothing" if key not in manifest else io.json_type(manifest[key])
      raise CorruptFileError(f"{str(file)!r}: field {key!r} must be {want}, got {got}; {_RESAVE}")
  io.BaseIdentity.from_dict(manifest["base"], f"{str(file)!r}: field", _RESAVE)
  encoder = manifest.get("task_encoder", {})
  for key in ("type", "pooling"):
    if encoder.get(key) is not None and not isinstance(encoder[key], str):
      raise CorruptFileError(f"{str(file)!r}: field 'task_encoder.{key}' must be a string, got "
                             f"{io.json_type(encoder[key])}; {_RESAVE}")


def load_hypernetwork(directory: str | os.PathLike, base: BaseModel | None = None) -> SavedHypernetwork:
  """The folder `save_hypernetwork` wrote. With `base`, checks it is the base model the
  hypernetwork was made for, and gives the config that model's config (dtype included)."""
  folder = Path(directory)
  manifest_file = folder / MANIFEST
  manifest = files.read_json_file(manifest_file, f"{str(folder)!r} is not a saved hypernetwork: no {MANIFEST} in it")
  _check_manifest(manifest, manifest_file, base is not None)
  version = manifest.get("format")
  if version not in (1, FORMAT) or manifest.get("kind") not in kinds.KINDS:
    raise ValueError(f"{str(manifest_file)!r} has format {version!r} and kind {manifest.get('kind')!r}; this "
                     f"lora-hyper reads formats 1 and {FORMAT} of {sorted(kinds.KINDS)}")
  kind, identity = kinds.KINDS[manifest["kind"]], io.BaseIdentity.from_dict(manifest["base"])
  if base is not None:
    io.check_base(identity, base, f"hypernetwork {str(folder)!r}")
  try:
    base_config = base.config if base is not None else config_lib.config_from_dict(manifest["base_config"])
  except (KeyError, TypeError, ValueError) as e:  # a missing field, a family or value this version does not know
    raise CorruptFileError(f"{str(manifest_file)!r}: field 'base_config' is not a base model config this "
                           f"lora-hyper reads ({type(e).__name__}: {e}); {_RESAVE}") from e
  stored = manifest["config"]
  if version == 1:
    stored = _format_1.upgrade_config(kind.name, stored, str(manifest_file))
    digest = manifest["params_digest"]
    flat = _format_1.upgrade_variables(_read_variables(folder / _format_1.PARAMS_FILE, digest))
  else:
    digest = manifest["variables_digest"]
    flat = _read_variables(folder / VARIABLES, digest)
  if kind is kinds.DOC_TO_LORA and "last_feature" not in stored:
    # Saved before the published last feature became the default: those read the raw residual.
    stored = {**stored, "last_feature": "residual"}
  try:
    config = _common.config_from_dict(kind.config_class, stored, base=base_config)
  except (TypeError, ValueError) as e:  # a field this version does not know, or a value it rejects
    raise ValueError(f"{str(manifest_file)!r}: the stored {kind.name} config does not fit this lora-hyper: {e}") from e
  variables = _unflatten(flat)
  _check_shapes(variables, kind.variable_shapes(config), str(folder))
  gin_file = folder / GIN
  encoder = manifest.get("task_encoder", {})
  if encoder.get("type", "base_model") not in task_encoders.TASK_ENCODERS:
    raise ValueError(f"{str(manifest_file)!r} names task encoder {encoder['type']!r}; this lora-hyper knows "
                     f"{task_encoders.TASK_ENCODERS}")
  return SavedHypernetwork(kind.name, config, variables, identity, folder, digest, encoder.get("pooling"),
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


def _check_shapes(variables: Any, want: Any, what: str) -> None:
  mismatch = shape_mismatch(variables, want)
  if mismatch:
    raise ValueError(f"{what!r} does not match its config: {mismatch}")


def shipped(kind: str, name: str | None = None) -> Path:
  """The trained hypernetwork `name` of `kind` shipped with the package (None: the kind's default, e.g.
  Doc-to-LoRA's 'general'; 'needle' is the needle-in-a-haystack one), or a FileNotFoundError saying how
  to make one."""
  folder = pretrained.folder(kinds.get(kind).name, name)
  if not (folder / MANIFEST).is_file():
    raise FileNotFoundError(
        f"no trained {kind} hypernetwork is shipped with lora-hyper yet (looked in {str(folder)!r}); pass a "
        f"trained one (--hypernetwork DIR), e.g. from: lora-hyper train --gin_file {kinds.get(kind).gin_file} "
        f"--gin_param \"lora_hyper.train.workdir = 'runs/{kind}'\" --out DIR")
  return folder
