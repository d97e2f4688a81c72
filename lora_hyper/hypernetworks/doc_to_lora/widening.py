"""A trained Doc-to-LoRA at k times its rank that generates the same adapters: the start of a rank
lever that does not throw away what the rank-r hypernetwork learned.

Every variable with a rank axis repeats each rank row k times. Each adapter then holds every rank-1
term k times, under the wider scaling (2 r^1.5 grows by k^1.5 when alpha is unset), so B (its scale
and the bias block's B) is divided by k times that growth; the chunk gates sum over rank rows, so
their weights are divided by k. Copies of one row would get the same gradients for ever: noise on
the copied decoder queries tells them apart, at the price of a change to the function of the order
of `query_noise`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import traverse_util

from lora_hyper.hypernetworks.doc_to_lora.config import DocToLoraConfig

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
