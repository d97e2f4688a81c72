"""A trained Doc-to-LoRA made bigger so that it generates the same adapters: the start of a capacity
lever that does not throw away what the smaller hypernetwork learned.

`widen_rank`: k times the rank. Every variable with a rank axis repeats each rank row k times. Each
adapter then holds every rank-1 term k times, under the wider scaling (2 r^1.5 grows by k^1.5 when
alpha is unset), so B (its scale and the bias block's B) is divided by k times that growth; the
chunk gates sum over rank rows, so their weights are divided by k. Copies of one row would get the
same gradients for ever: noise on the copied decoder queries tells them apart, at the price of a
change to the function of the order of `query_noise`.

`widen_width`: more attention heads and wider MLPs (the Perceiver's, its input projection's and the
per-layer MLPs before the heads). New heads and hidden units read with fresh random weights and write
through zero weights (the attention output rows of a new head, the down rows of a new hidden unit),
so they change nothing until training moves the zeros; both sides get gradients from the first step,
as a LoRA's zero B does. The latent width stays: it is the width of the code, which LayerNorms read,
and zero new channels would move their mean and variance.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import traverse_util

from lora_hyper.hypernetworks.doc_to_lora.config import DocToLoraConfig
from lora_hyper.hypernetworks.doc_to_lora.modules import boxed_variables

# The decoder's queries, one per (layer when early_exit, module, rank row): [..., d]; and the running
# mean of the codes, [L, modules, r, d]. The heads' and gates' rank axis is their second: [L, r, ...].
_QUERIES = ("params", "perceiver", "decoder", "latents")
_CENTRE = ("code_stats", "centre", "ema")


def widen_rank(variables: Any, saved: DocToLoraConfig, rank: int, key: jax.Array, query_noise: float = 1e-2) -> Any:
  """`variables` of a hypernetwork configured as `saved`, for `saved.replace(rank=rank)`, rank a
  multiple of the saved one.

  With `query_noise=0` the adapters are those of `variables` exactly (to float rounding); otherwise
  each copied decoder query moves by `query_noise` times the queries' standard deviation.
  """
  k, rest = divmod(rank, saved.rank)
  if rest or k < 1:
    raise ValueError(f"widen_rank takes a hypernetwork to a multiple of its rank, got {saved.rank} -> {rank}")
  b_factor = 1.0 / (k * saved.replace(rank=rank).scaling / saved.scaling)
  out = {}
  for path, value in traverse_util.flatten_dict(variables).items():
    value = np.asarray(value, np.float32)
    owner, name = path[-2:]  # every variable sits in a module: (collection, ..., module, name)
    if path == _QUERIES:
      rows = np.repeat(value.reshape(-1, saved.rank, value.shape[-1]), k, axis=-2)
      noise = query_noise * float(np.std(value)) * jax.random.normal(key, rows.shape)
      value = (rows + np.asarray(noise)).reshape(-1, value.shape[-1])
    elif path == _CENTRE:
      value = np.repeat(value, k, axis=-2)
    elif owner.startswith("heads_") and name in ("bias_a", "bias_b", "scale_a", "scale_b"):
      value = np.repeat(value, k, axis=1) * (b_factor if name in ("bias_b", "scale_b") else 1.0)
    elif owner.startswith("gates_") and name == "w":
      value = np.repeat(value, k, axis=1) / k
    out[path] = value
  return traverse_util.unflatten_dict(out)


# Logical axes `widen_width` may grow: hidden units and attention heads.
WIDTH_AXES = ("hyper_mlp", "hyper_heads", "hyper_kv_heads")
_WIDTH_FIELDS = ("num_heads", "num_kv_heads", "mlp_dim", "input_mlp_factor")


def widen_width(variables: Any, saved: DocToLoraConfig, wider: DocToLoraConfig, key: jax.Array) -> Any:
  """`variables` of a hypernetwork configured as `saved`, for `wider`: the same but for more heads
  (as many query heads per key-value head) or wider MLPs. Adapters are those of `variables` exactly."""
  old, new = _widths(saved), _widths(wider)
  if _with_widths(wider, old) != saved:
    raise ValueError(f"widen_width changes only the perceiver's {', '.join(_WIDTH_FIELDS)} and pre_head_mlp_dim; "
                     "the two configs differ elsewhere")
  shrunk = [f for f in old if new[f] < old[f]]
  if shrunk:
    raise ValueError(f"widen_width only widens, got {', '.join(f'{f} {old[f]} -> {new[f]}' for f in shrunk)}")
  group = lambda c: c.perceiver.num_heads // c.perceiver.num_kv_heads
  if group(wider) != group(saved):
    # Query head i reads key-value head i // group: appended heads keep the old pairs only at the same group.
    raise ValueError(f"widen_width keeps the query heads per key-value head ({group(saved)}), got {group(wider)}")
  boxed = traverse_util.flatten_dict(boxed_variables(wider, key))
  flat = traverse_util.flatten_dict(variables)
  out = {}
  for path, box in boxed.items():
    names, fresh = tuple(box.names), np.asarray(box.value, np.float32)
    value = np.asarray(flat[path], np.float32)
    grown = [i for i, (a, b) in enumerate(zip(value.shape, fresh.shape)) if a != b]
    if any(names[i] not in WIDTH_AXES for i in grown):
      raise ValueError(f"{'/'.join(path)}: axes {names} grow where widen_width does not "
                       f"({value.shape} -> {fresh.shape})")
    if grown:
      # A weight whose input side (its first axis after the per-layer one) grew reads new units: those
      # rows start at zero, so the new units write nothing yet. One whose output side grew feeds new
      # units, which keep their fresh init.
      reads = [i for i, n in enumerate(names) if n != "layers"][0] in grown
      widened = np.zeros_like(fresh) if reads else fresh.copy()
      widened[tuple(slice(0, n) for n in value.shape)] = value
      value = widened
    out[path] = value
  return traverse_util.unflatten_dict(out)


def _widths(config: DocToLoraConfig) -> dict[str, int]:
  """The sizes `widen_width` may grow, by field name."""
  return {**{f: getattr(config.perceiver, f) for f in _WIDTH_FIELDS}, "pre_head_mlp_dim": config.pre_head_mlp_dim}


def _with_widths(config: DocToLoraConfig, widths: dict[str, int]) -> DocToLoraConfig:
  return config.replace(perceiver={f: widths[f] for f in _WIDTH_FIELDS}, pre_head_mlp_dim=widths["pre_head_mlp_dim"])
