"""LoRA adapters as functional weight deltas: y = x W + scaling * (x A^T) B.

An adapter never touches the base params. For each target module it holds
  a: [*batch, layers, rank, d_in]   b: [*batch, layers, rank, d_out]
where the optional leading `batch` axis gives every example of a batch its own adapter.
Any rank works, so adapters concatenated along the rank axis (Doc-to-LoRA's chunking) apply
unchanged: the delta of a concatenation is the sum of the deltas.
"""

from __future__ import annotations

from typing import Mapping

import chex
import flax.struct
import jax
import jax.numpy as jnp

from lora_hyper.model.config import MODULES, GemmaConfig

Array = jax.Array


@flax.struct.dataclass
class LoraAdapter:
  """Per-module A/B factors (`{'down': {'a': ..., 'b': ...}}`) and the scale of their product."""

  weights: Mapping[str, Mapping[str, Array]]
  scaling: float = flax.struct.field(pytree_node=False, default=1.0)

  @property
  def modules(self) -> tuple[str, ...]:
    return tuple(m for m in MODULES if m in self.weights)

  @property
  def rank(self) -> int:
    return next(iter(self.weights.values()))["a"].shape[-2]

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return next(iter(self.weights.values()))["a"].shape[:-3]

  @property
  def is_batched(self) -> bool:
    return bool(self.batch_shape)


def zeros(config: GemmaConfig, modules: tuple[str, ...], rank: int, *, batch: int | None = None,
          scaling: float = 1.0, dtype=jnp.float32) -> LoraAdapter:
  """An adapter whose delta is exactly zero (B = 0)."""
  lead = () if batch is None else (batch,)
  weights = {}
  for m in modules:
    d_in, d_out = config.module_shape(m)
    weights[m] = {"a": jnp.zeros(lead + (config.num_layers, rank, d_in), dtype),
                  "b": jnp.zeros(lead + (config.num_layers, rank, d_out), dtype)}
  return LoraAdapter(weights, scaling)


def random(key: Array, config: GemmaConfig, modules: tuple[str, ...], rank: int, *, batch: int | None = None,
           scaling: float = 1.0, std: float = 0.02, dtype=jnp.float32) -> LoraAdapter:
  """Gaussian A and B (both non-zero), for tests and benchmarks."""
  lead = () if batch is None else (batch,)
  weights = {}
  for m, k in zip(modules, jax.random.split(key, len(modules))):
    ka, kb = jax.random.split(k)
    d_in, d_out = config.module_shape(m)
    weights[m] = {"a": std * jax.random.normal(ka, lead + (config.num_layers, rank, d_in), dtype),
                  "b": std * jax.random.normal(kb, lead + (config.num_layers, rank, d_out), dtype)}
  return LoraAdapter(weights, scaling)


def validate(adapter: LoraAdapter, config: GemmaConfig, batch_size: int | None = None) -> None:
  """Raises a ValueError naming the module and shapes when `adapter` does not fit `config`."""
  if not adapter.weights:
    raise ValueError("adapter has no target modules")
  ranks, leads = set(), set()
  for module, ab in adapter.weights.items():
    if module not in MODULES:
      raise ValueError(f"adapter targets unknown module {module!r}; expected a subset of {MODULES}")
    if set(ab) != {"a", "b"}:
      raise ValueError(f"adapter module {module!r} must hold exactly 'a' and 'b', got {sorted(ab)}")
    a, b = ab["a"], ab["b"]
    d_in, d_out = config.module_shape(module)
    lead = a.shape[:-3]
    want_a = lead + (config.num_layers, a.shape[-2], d_in)
    want_b = lead + (config.num_layers, a.shape[-2], d_out)
    if a.ndim not in (3, 4) or a.shape != want_a or b.shape != want_b:
      raise ValueError(
          f"adapter module {module!r} has a{tuple(a.shape)} b{tuple(b.shape)}, but this base model "
          f"({config.family}, {config.num_layers} layers) needs a[*batch, {config.num_layers}, rank, {d_in}] "
          f"and b[*batch, {config.num_layers}, rank, {d_out}]")
    ranks.add(a.shape[-2])
    leads.add(lead)
  if len(leads) > 1:
    raise ValueError(f"adapter modules disagree on the batch axis: {sorted(leads)}")
  lead = leads.pop()
  if lead and batch_size is not None and lead[0] != batch_size:
    raise ValueError(f"adapter holds {lead[0]} per-example adapters for a batch of {batch_size}")


def single_rank(adapter: LoraAdapter, caller: str) -> int:
  """The rank of one unbatched adapter whose modules share it (what files store), else a clear error."""
  if adapter.is_batched:
    raise ValueError(f"{caller} takes one adapter, got a batch of shape {adapter.batch_shape}; "
                     "pass each with lora.take(adapter, i)")
  ranks = {ab["a"].shape[-2] for ab in adapter.weights.values()}
  if len(ranks) != 1:
    raise ValueError(f"{caller}: adapter modules have different ranks {sorted(ranks)}; one rank per adapter "
                     "is stored")
  return ranks.pop()


def delta(x: Array, a: Array, b: Array) -> Array:
  """(x A^T) B for one layer; a/b are [rank, d] or per-example [batch, rank, d]."""
  a, b = a.astype(x.dtype), b.astype(x.dtype)
  if a.ndim == 2:
    return jnp.einsum("...r,ro->...o", jnp.einsum("...i,ri->...r", x, a), b)
  chex.assert_equal(a.shape[0], x.shape[0])
  return jnp.einsum("b...r,bro->b...o", jnp.einsum("b...i,bri->b...r", x, a), b)


def scaled_weights(adapter: LoraAdapter) -> dict[str, dict[str, Array]]:
  """The factors with the scaling folded into B."""
  return {m: {"a": ab["a"], "b": ab["b"] * adapter.scaling} for m, ab in adapter.weights.items()}


def layer_weights(weights: Mapping[str, Mapping[str, Array]], layer: Array) -> dict[str, dict[str, Array]]:
  """One layer's factors [*batch, rank, d] from [*batch, layers, rank, d]; `layer` may be traced.

  Sliced in place rather than scanned over: scanning needs the layer axis first, and moving it
  there copies every example's whole adapter on each call (each decoding step)."""
  take = lambda w: jax.lax.dynamic_index_in_dim(w, layer, axis=w.ndim - 3, keepdims=False)
  return {m: {k: take(w) for k, w in ab.items()} for m, ab in weights.items()}


def concat(adapters: list[LoraAdapter]) -> LoraAdapter:
  """Concatenates adapters along the rank axis: the delta becomes the sum of their deltas."""
  if not adapters:
    raise ValueError("concat needs at least one adapter")
  scalings = {ad.scaling for ad in adapters}
  if len(scalings) != 1:
    raise ValueError(f"cannot concatenate adapters with different scalings {sorted(scalings)}")
  modules = {ad.modules for ad in adapters}
  if len(modules) != 1:
    raise ValueError(f"cannot concatenate adapters with different target modules {sorted(modules)}")
  weights = jax.tree.map(lambda *ws: jnp.concatenate(ws, axis=-2), *[dict(ad.weights) for ad in adapters])
  return LoraAdapter(weights, adapters[0].scaling)


def merged_delta(adapter: LoraAdapter, module: str) -> Array:
  """The full delta scaling * A^T B, [*batch, layers, d_in, d_out]. For reference checks only."""
  ab = adapter.weights[module]
  return adapter.scaling * jnp.einsum("...ri,...ro->...io", ab["a"], ab["b"])


def merged_params(params, adapter: LoraAdapter):
  """Base params with W + scaling * A^T B folded in (one unbatched adapter).

  The reference the functional path is checked against, and a way to deploy one adapter at
  no per-token cost. The inputs are not modified.
  """
  if adapter.is_batched:
    raise ValueError("merged_params takes one adapter; pick an example with `take` first")
  groups = {m: "attn" for m in ("q", "k", "v", "o")} | {m: "mlp" for m in ("gate", "up", "down")}
  layers = dict(params["layers"])
  for module in adapter.modules:
    group = dict(layers[groups[module]])
    kernel = group[module]
    d = merged_delta(adapter, module).reshape(kernel.shape)
    group[module] = (kernel.astype(jnp.float32) + d).astype(kernel.dtype)
    layers[groups[module]] = group
  return {**params, "layers": layers}


def take(adapter: LoraAdapter, index) -> LoraAdapter:
  """The adapter of example `index` of a batched adapter; an array of indices gives one adapter per
  entry (e.g. each question its document's adapter)."""
  return LoraAdapter(jax.tree.map(lambda w: w[index], dict(adapter.weights)), adapter.scaling)
