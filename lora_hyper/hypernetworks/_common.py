"""What every hypernetwork kind shares: its variables' init and shapes, and config overrides.

A hypernetwork's variables are a Flax variables dict: `params` (trained) and, for some Doc-to-LoRA
options, `code_stats` (running statistics that training updates with `mutable=`, never the
optimizer). Each kind defines `boxed_variables(config, key)`, its module's `init` with every
variable boxed with its logical axes, and derives the rest with `variable_functions`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax

from lora_hyper.hypernetworks import _layers

Array = jax.Array
PyTree = Any
PARAMS = "params"


class VariableFunctions(NamedTuple):
  """A kind's functions of its config, all derived from one boxed init."""

  init: Callable[[Any, Array], PyTree]  # (config, key) -> variables as plain arrays
  abstract_variables: Callable[[Any], PyTree]  # ShapeDtypeStructs still boxed with their logical axes
  variable_shapes: Callable[[Any], PyTree]  # every collection's shapes, unboxed (what a saved folder holds)
  param_shapes: Callable[[Any], PyTree]  # the `params` collection's shapes
  param_specs: Callable[[Any], PyTree]  # logical PartitionSpecs of the params
  num_params: Callable[[Any], int]  # trained scalars (statistics are not params)


def variable_functions(boxed_variables: Callable[[Any, Array], PyTree]) -> VariableFunctions:
  @functools.partial(jax.jit, static_argnames="config")  # one compiled init, not hundreds of eager ops
  def init(config, key: Array) -> PyTree:
    return nn.unbox(boxed_variables(config, key))

  def abstract_variables(config) -> PyTree:
    return jax.eval_shape(functools.partial(boxed_variables, config), jax.random.key(0))

  def variable_shapes(config) -> PyTree:
    return nn.unbox(abstract_variables(config))

  def param_shapes(config) -> PyTree:
    return variable_shapes(config)[PARAMS]

  def param_specs(config) -> PyTree:
    return nn.get_partition_spec(abstract_variables(config))[PARAMS]

  def num_params(config) -> int:
    return _layers.count_params(param_shapes(config))

  return VariableFunctions(init, abstract_variables, variable_shapes, param_shapes, param_specs, num_params)


def override(config: Any, overrides: Mapping[str, Any]) -> Any:
  """`config` with fields replaced; a dict given for a field that holds a config (e.g. `perceiver`,
  `experimental`) replaces fields of that sub-config, so gin can bind
  `hyper_overrides = {'perceiver': {'dtype': 'bfloat16'}}`."""
  fields = {f.name for f in dataclasses.fields(config)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"{type(config).__name__} has no field(s) {unknown}; it has {sorted(fields)}")
  changes = {}
  for name, value in overrides.items():
    current = getattr(config, name)
    if dataclasses.is_dataclass(current) and not isinstance(value, type(current)):
      if not isinstance(value, Mapping):
        raise ValueError(f"{type(config).__name__}.{name} takes a dict of {type(current).__name__} fields, got "
                         f"{value!r}")
      value = override(current, value)
    changes[name] = tuple(value) if isinstance(value, list) else value
  return dataclasses.replace(config, **changes)


def config_to_dict(config: Any) -> dict[str, Any]:
  """The config's fields as JSON values, sub-configs nested; the base model is left out (a saved
  folder stores it apart, with its own identity)."""
  out = {}
  for field in dataclasses.fields(config):
    if field.name != "base":
      value = getattr(config, field.name)
      out[field.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
  return out


def config_from_dict(cls: type, values: Mapping[str, Any], **fixed: Any) -> Any:
  """`config_to_dict`'s inverse: `cls(**fixed)` with `values` applied as overrides."""
  return override(cls(**fixed), values)
