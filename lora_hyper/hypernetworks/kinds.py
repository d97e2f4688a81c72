"""One record per kind of hypernetwork: everything the trainer, saved folders, the CLI and the evaluator
need to know about a kind, in one place."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from lora_hyper import prompts
from lora_hyper.hypernetworks import doc_to_lora, text_to_lora


@dataclasses.dataclass(frozen=True)
class Kind:
  name: str  # as saved folders and adapter files record it
  config_class: type
  presets: Mapping[str, Callable[..., Any]]  # preset name -> (base config, **overrides) -> config
  init: Callable[[Any, Any], Any]  # (config, key) -> variables
  abstract_variables: Callable[[Any], Any]  # config -> boxed ShapeDtypeStructs
  variable_shapes: Callable[[Any], Any]  # config -> the shapes a saved folder holds
  gin_file: str  # the config that trains one
  record_fields: tuple[str, str, str]  # (source, input, reference) of its evaluation records
  prompt: Callable[[str], str]  # how its adapters are asked: an input -> the prompt
  context_prompt: Callable[[str, str], str]  # (source, input) -> the base model's prompt with the source in it


DOC_TO_LORA = Kind(
    name="doc_to_lora", config_class=doc_to_lora.DocToLoraConfig, presets=doc_to_lora.PRESETS,
    init=doc_to_lora.init, abstract_variables=doc_to_lora.abstract_variables,
    variable_shapes=doc_to_lora.variable_shapes, gin_file="gin_configs/d2l_270m.gin",
    record_fields=("document", "query", "answer"), prompt=prompts.query_prompt,
    context_prompt=prompts.context_prompt)
TEXT_TO_LORA = Kind(
    name="text_to_lora", config_class=text_to_lora.TextToLoraConfig, presets=text_to_lora.PRESETS,
    init=text_to_lora.init, abstract_variables=text_to_lora.abstract_variables,
    variable_shapes=text_to_lora.variable_shapes, gin_file="experiments/t2l/sft.gin",
    record_fields=("description", "input", "output"), prompt=prompts.task_prompt,
    context_prompt=prompts.task_context_prompt)
KINDS = {kind.name: kind for kind in (DOC_TO_LORA, TEXT_TO_LORA)}


def get(name: str) -> Kind:
  if name not in KINDS:
    raise ValueError(f"unknown hypernetwork kind {name!r}; expected one of {sorted(KINDS)}")
  return KINDS[name]


def of_config(config: Any) -> Kind:
  for kind in KINDS.values():
    if isinstance(config, kind.config_class):
      return kind
  raise TypeError(f"not a hypernetwork config: {type(config).__name__}")


def from_preset(preset: str, base: Any, overrides: Mapping[str, Any] | None = None) -> tuple[Kind, Any]:
  """(kind, config) of a preset such as 'd2l_small' or 't2l_l' for `base`, with `overrides`."""
  for kind in KINDS.values():
    if preset in kind.presets:
      return kind, kind.presets[preset](base, **(overrides or {}))
  presets = sorted(p for kind in KINDS.values() for p in kind.presets)
  raise ValueError(f"unknown hypernetwork {preset!r}; expected one of {presets}")
