"""Gemma 2 / Gemma 3 decoder in flax.linen, applied as pure functions of a params pytree.

Layers are stacked with `nn.scan` (params carry a leading `layers` axis), so one compiled block
serves every layer; per-layer differences (local vs global attention, RoPE base) are scanned
inputs. LoRA adapters enter as an argument and are applied as functional deltas.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lora_hyper.adapters import lora
from lora_hyper.model.config import GemmaConfig

Array = jax.Array
PyTree = Any

# Large finite negative instead of -inf, so fully masked rows (left padding) give no NaNs.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def _param(module: nn.Module, name: str, init, shape: tuple[int, ...], axes: tuple[str, ...], dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def rms_norm(x: Array, scale: Array, eps: float) -> Array:
  """Gemma RMSNorm: x / rms(x) * (1 + scale), in float32, returned in x's dtype."""
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


class RMSNorm(nn.Module):
  """`rms_norm` with its learned scale."""

  eps: float
  param_dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = _param(self, "scale", nn.initializers.zeros_init(), (x.shape[-1],), ("norm",), self.param_dtype)
    return rms_norm(x, scale, self.eps)


def _project(x: Array, kernel: Array, equation: str, ab: dict[str, Array] | None) -> Array:
  """x W by einsum, plus the LoRA delta (x A^T) B computed on the flattened in/out dims."""
  y = jnp.einsum(equation, x, kernel.astype(x.dtype))
  if ab is None:
    return y
  flat_x = x.reshape(x.shape[:2] + (-1,))  # [B, T, d_in], head dims flattened as in HF's Linear.
  return y + lora.delta(flat_x, ab["a"], ab["b"]).reshape(y.shape).astype(y.dtype)


def rope(x: Array, positions: Array, base: float | Array, scale: float | Array = 1.0) -> Array:
  """Rotary embedding on [B, T, N, H] with HF's rotate-half layout; positions [B, T].

  `base` and `scale` may be traced scalars, so one scanned layer serves local and global layers."""
  half = x.shape[-1] // 2
  inv_freq = 1.0 / (base ** (jnp.arange(0, half, dtype=jnp.float32) * 2 / x.shape[-1]))
  angles = (positions.astype(jnp.float32) / scale)[..., None] * inv_freq  # [B, T, H/2]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _softcap(x: Array, cap: float | None) -> Array:
  return x if cap is None else jnp.tanh(x / cap) * cap


class AttentionInputs(NamedTuple):
  """What every layer's attention shares: this call's positions and mask, and the cache it reads."""

  positions: Array  # [B, T] of this call's tokens: its queries and its own keys.
  allowed: Array  # [B, T, T] bool: causal and not padding, among this call's tokens.
  cache: KVCache | None  # read only: the layers' new keys are written after the layer scan (`KVCache.append`).
  # {"window": [B, T, R], "full": [B, T, S]} bool: the cached slots each query sees; None for a fresh cache.
  cache_allowed: dict[str, Array] | None = None


def _attend(q: Array, parts: list[tuple[Array, Array, Array, Array]], q_positions: Array, sliding: Array,
            config: GemmaConfig) -> Array:
  """Softmax attention of q [B, K, G, T, H] over key parts taken as one sequence: each part is (keys [B, S, K, H],
  values, their positions [B, S], allowed [B, T, S]). Parts spare concatenating a layer's cached keys with the
  call's own (a copy of the whole cache per step); only the small logits are concatenated."""
  logits, allowed = [], []
  for key, _, k_positions, part_allowed in parts:
    logits.append(jnp.einsum("bkgth,bskh->bkgts", q, key.astype(q.dtype), preferred_element_type=jnp.float32))
    distance = q_positions[:, :, None] - k_positions[:, None, :]
    in_window = jnp.logical_or(jnp.logical_not(sliding), distance < config.sliding_window)
    allowed.append(jnp.logical_and(part_allowed, in_window)[:, None, None])
  logits = _softcap(jnp.concatenate(logits, axis=-1), config.attn_logit_softcap)
  probs = jax.nn.softmax(jnp.where(jnp.concatenate(allowed, axis=-1), logits, _MASK_VALUE), axis=-1)
  out, start = None, 0
  for key, value, _, _ in parts:
    part_probs = probs[..., start:start + key.shape[1]].astype(value.dtype)
    part_out = jnp.einsum("bkgts,bskh->bkgth", part_probs, value)
    out, start = part_out if out is None else out + part_out, start + key.shape[1]
  return out


def _attend_with_cache(attend, own: tuple, layer: dict[str, Array], inputs: AttentionInputs) -> Array:
  """Attention over this layer's cached slots and the call's own keys. The layer is a scanned (traced) one, so
  `lax.cond` picks its stack: only that stack's slots are read."""
  def over(name: str):
    slots = getattr(inputs.cache, name)

    def run():
      key = jax.lax.dynamic_index_in_dim(slots.k, layer["slot"], keepdims=False)
      value = jax.lax.dynamic_index_in_dim(slots.v, layer["slot"], keepdims=False)
      return attend([(key, value, slots.positions, inputs.cache_allowed[name]), own])

    return run

  stacks = [name for name in ("window", "full") if getattr(inputs.cache, name).k.shape[0]]
  if len(stacks) == 1:  # e.g. the full cache: no branch to pick
    return over(stacks[0])()
  return jax.lax.cond(layer["windowed"], over("window"), over("full"))


class Attention(nn.Module):
  config: GemmaConfig

  @nn.compact
  def __call__(self, x: Array, layer: dict[str, Array], inputs: AttentionInputs, lora_ab: dict | None):
    """Returns (output [B, T, D], this call's keys and values {"k", "v"} [B, T, K, H] when caching, else None)."""
    cfg = self.config
    d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = nn.initializers.normal(0.02)
    wq = _param(self, "q", init, (d, n, h), ("embed", "heads", "head_dim"), cfg.weight_dtype)
    wk = _param(self, "k", init, (d, k, h), ("embed", "kv_heads", "head_dim"), cfg.weight_dtype)
    wv = _param(self, "v", init, (d, k, h), ("embed", "kv_heads", "head_dim"), cfg.weight_dtype)
    wo = _param(self, "o", init, (n, h, d), ("heads", "head_dim", "embed"), cfg.weight_dtype)
    ab = lambda name: None if lora_ab is None else lora_ab.get(name)

    q = _project(x, wq, "btd,dnh->btnh", ab("q"))
    key = _project(x, wk, "btd,dkh->btkh", ab("k"))
    value = _project(x, wv, "btd,dkh->btkh", ab("v"))
    if cfg.use_qk_norm:
      q = RMSNorm(cfg.rms_norm_eps, cfg.weight_dtype, name="q_norm")(q)
      key = RMSNorm(cfg.rms_norm_eps, cfg.weight_dtype, name="k_norm")(key)

    sliding = layer["sliding"]
    base = jnp.where(sliding, cfg.rope_base_local, cfg.rope_base_global)
    scale = jnp.where(sliding, 1.0, cfg.rope_scale_global)
    q = rope(q, inputs.positions, base, scale)
    key = rope(key, inputs.positions, base, scale)
    q = nn.with_logical_constraint(q, ("batch", "length", "act_heads", "head_dim"))

    new_kv = None
    if inputs.cache is not None:
      key, value = key.astype(inputs.cache.dtype), value.astype(inputs.cache.dtype)
      new_kv = {"k": key, "v": value}

    b, t = q.shape[:2]
    q = q.reshape(b, t, k, n // k, h) * jnp.asarray(cfg.query_pre_attn_scalar ** -0.5, q.dtype)
    # Queries laid out [b, k, g, t, h] first: XLA then runs plain batched matmuls (about 2x faster
    # on CPU than contracting from [b, t, k, g, h]).
    q = q.transpose(0, 2, 3, 1, 4)
    attend = functools.partial(_attend, q, q_positions=inputs.positions, sliding=sliding, config=cfg)
    own = (key, value, inputs.positions, inputs.allowed)
    if inputs.cache is None or inputs.cache.fresh:  # nothing cached yet: a prefill costs an uncached forward
      out = attend([own])
    else:
      out = _attend_with_cache(attend, own, layer, inputs)
    out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h).astype(x.dtype)
    return _project(out, wo, "btnh,nhd->btd", ab("o")), new_kv


class MLP(nn.Module):
  config: GemmaConfig

  @nn.compact
  def __call__(self, x: Array, lora_ab: dict | None) -> Array:
    cfg = self.config
    init = nn.initializers.normal(0.02)
    gate = _param(self, "gate", init, (cfg.embed_dim, cfg.mlp_dim), ("embed", "mlp"), cfg.weight_dtype)
    up = _param(self, "up", init, (cfg.embed_dim, cfg.mlp_dim), ("embed", "mlp"), cfg.weight_dtype)
    down = _param(self, "down", init, (cfg.mlp_dim, cfg.embed_dim), ("mlp", "embed"), cfg.weight_dtype)
    ab = lambda name: None if lora_ab is None else lora_ab.get(name)
    hidden = jax.nn.gelu(_project(x, gate, "btd,df->btf", ab("gate")), approximate=True)
    hidden = hidden * _project(x, up, "btd,df->btf", ab("up"))
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "act_mlp"))
    return _project(hidden, down, "btf,fd->btd", ab("down"))


class Block(nn.Module):
  """One decoder layer, written as an `nn.scan` body: (x, per-layer inputs) -> (x, outputs)."""

  config: GemmaConfig

  @nn.compact
  def __call__(self, x: Array, layer: dict[str, Any], inputs: AttentionInputs, lora_weights: dict | None):
    cfg = self.config
    lora_ab = None if lora_weights is None else lora.layer_weights(lora_weights, layer["index"])
    norm = lambda name: RMSNorm(cfg.rms_norm_eps, cfg.weight_dtype, name=name)
    layer_input = x
    attn_out, new_kv = Attention(cfg, name="attn")(norm("pre_attention_norm")(x), layer, inputs, lora_ab)
    x = x + norm("post_attention_norm")(attn_out)
    mlp_out = MLP(cfg, name="mlp")(norm("pre_ffw_norm")(x), lora_ab)
    x = x + norm("post_ffw_norm")(mlp_out)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    return x, {"hidden": layer_input, "kv": new_kv}


@flax.struct.dataclass
class KVSlots:
  """Keys/values of a stack of layers, and the validity and position of each slot (shared by the stack)."""

  k: Array  # [layers, B, slots, K, H]
  v: Array  # [layers, B, slots, K, H]
  valid: Array  # [B, slots] bool
  positions: Array  # [B, slots] int32

  @classmethod
  def empty(cls, config: GemmaConfig, layers: int, batch: int, slots: int) -> "KVSlots":
    shape = (layers, batch, slots, config.num_kv_heads, config.head_dim)
    return cls(k=jnp.zeros(shape, config.compute_dtype), v=jnp.zeros(shape, config.compute_dtype),
               valid=jnp.zeros((batch, slots), bool), positions=jnp.zeros((batch, slots), jnp.int32))

  def visible(self, q_positions: Array) -> Array:
    """[B, T, slots]: written slots of earlier positions (slots past a rewound `index` hold later ones)."""
    return self.valid[:, None, :] & (self.positions[:, None, :] < q_positions[:, :, None])


@flax.struct.dataclass
class KVCache:
  """The decoder's keys/values, window-aware: sliding layers keep only their window, the others every position.

  Two stacks, each one array per K/V, so the layer scan stays one compiled block:
    window  the sliding layers' ring buffers [L_window, B, R, K, H], R = min(sliding_window, length): column c
            of the sequence lives in slot c % R. A query sees the previous sliding_window - 1 positions at most,
            all among the last R columns before its call or in the call itself, so evicted keys are never read.
    full    the other layers [L_full, B, S, K, H], S = length: column c in slot c.
  Each scanned layer gets its stack and its slot in it (`layer_slots`); its attention reads that slot read-only
  (`lax.cond` picks the stack, so a decoding step reads R slots in a sliding layer, S in a global one) next to
  the call's own keys, and `append` writes every layer's new keys after the scan. For the 270M model at 128K
  tokens that is 783 MiB instead of 4,609 (15 of 18 layers slide over 512 positions).

  The ring keeps the last R columns of each row, so it assumes padding only before a row's tokens (left
  padding, as `decoding.generate` pads); `empty(..., windowed=False)` keeps everything in every layer (the
  window still masks), which any padding suits.
  """

  window: KVSlots
  full: KVSlots
  index: Array  # [] int32: columns written so far (the next call's first column).
  windowed: tuple[bool, ...] = flax.struct.field(pytree_node=False)  # per layer: in the window stack.
  # Static: nothing written yet, so the first call attends over its own tokens alone (as an uncached forward).
  fresh: bool = flax.struct.field(pytree_node=False, default=True)

  @classmethod
  def empty(cls, config: GemmaConfig, batch: int, length: int, *, windowed: bool = True) -> "KVCache":
    """Room for `length` columns (prompt and continuation)."""
    in_window = tuple(config.sliding_layers) if windowed else (False,) * config.num_layers
    slots = min(config.sliding_window, length) if any(in_window) else 0
    return cls(window=KVSlots.empty(config, sum(in_window), batch, slots),
               full=KVSlots.empty(config, config.num_layers - sum(in_window), batch, length),
               index=jnp.zeros((), jnp.int32), windowed=in_window)

  @property
  def length(self) -> int:
    return self.full.valid.shape[1]

  @property
  def dtype(self) -> jnp.dtype:
    return self.full.k.dtype

  def layer_slots(self) -> dict[str, Array]:
    """Scanned per layer: whether it is in the window stack, and its index in its stack."""
    windowed = np.asarray(self.windowed)
    slot = np.where(windowed, np.cumsum(windowed) - 1, np.cumsum(~windowed) - 1)
    return {"windowed": jnp.asarray(windowed), "slot": jnp.asarray(slot, jnp.int32)}

  def append(self, k: Array, v: Array, positions: Array, mask: Array) -> "KVCache":
    """This cache after a call's tokens: k, v [L, B, T, K, H] of every layer, positions and mask [B, T]."""
    t = mask.shape[1]
    windowed = np.asarray(self.windowed)
    full_layers, window_layers = np.flatnonzero(~windowed), np.flatnonzero(windowed)
    full = self.full.replace(
        k=jax.lax.dynamic_update_slice(self.full.k, k[full_layers], (0, 0, self.index, 0, 0)),
        v=jax.lax.dynamic_update_slice(self.full.v, v[full_layers], (0, 0, self.index, 0, 0)),
        valid=jax.lax.dynamic_update_slice(self.full.valid, mask, (0, self.index)),
        positions=jax.lax.dynamic_update_slice(self.full.positions, positions.astype(jnp.int32), (0, self.index)))
    window = self.window
    ring = window.valid.shape[1]
    if ring:  # the call's last columns, each into its slot (distinct: at most `ring` consecutive columns)
      n = min(t, ring)
      slots = (self.index + t - n + jnp.arange(n)) % ring
      window = window.replace(
          k=window.k.at[:, :, slots].set(k[window_layers][:, :, t - n:], unique_indices=True),
          v=window.v.at[:, :, slots].set(v[window_layers][:, :, t - n:], unique_indices=True),
          valid=window.valid.at[:, slots].set(mask[:, t - n:], unique_indices=True),
          positions=window.positions.at[:, slots].set(positions[:, t - n:].astype(jnp.int32), unique_indices=True))
    return self.replace(window=window, full=full, index=self.index + t, fresh=False)


def kv_cache_bytes(config: GemmaConfig, batch: int, length: int, *, windowed: bool = True) -> int:
  """Bytes of `KVCache.empty(config, batch, length)` (keys and values in config.dtype, slot metadata), from shapes."""
  shapes = jax.eval_shape(lambda: KVCache.empty(config, batch, length, windowed=windowed))
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def uncached_attention_inputs(positions: Array, mask: Array, cache: KVCache | None = None) -> AttentionInputs:
  """A call whose tokens attend causally to themselves alone (padding masked out): no cache, or a fresh one."""
  t = positions.shape[1]
  causal = jnp.tril(jnp.ones((t, t), bool))
  return AttentionInputs(positions, mask[:, None, :] & causal[None], cache)


def cached_attention_inputs(positions: Array, mask: Array, cache: KVCache) -> AttentionInputs:
  """A call that also attends over what earlier calls cached."""
  own = uncached_attention_inputs(positions, mask, cache)
  allowed = {"window": cache.window.visible(positions), "full": cache.full.visible(positions)}
  return own._replace(cache_allowed=allowed)


class Gemma(nn.Module):
  """Returns (final normed hidden [B, T, D], per-layer inputs Z_0..Z_{L-1} [L, B, T, D], cache)."""

  config: GemmaConfig

  def setup(self):
    cfg = self.config
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
        (cfg.vocab_size, cfg.embed_dim), cfg.weight_dtype)
    self.final_norm = RMSNorm(cfg.rms_norm_eps, cfg.weight_dtype)
    block = nn.remat(Block, prevent_cse=False) if cfg.remat else Block
    self.layers = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=(0, nn.broadcast, nn.broadcast),
        length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"},
    )(cfg)

  def embed(self, tokens: Array) -> Array:
    x = jnp.take(self.embedding, tokens, axis=0).astype(self.config.compute_dtype)
    return x * jnp.asarray(math.sqrt(self.config.embed_dim), x.dtype)

  def logits(self, hidden: Array) -> Array:
    """The tied output head (the bulk of the 270M model's FLOPs): call it only where needed."""
    out = jnp.einsum("...d,vd->...v", hidden, self.embedding.astype(hidden.dtype),
                     preferred_element_type=jnp.float32)
    return _softcap(out, self.config.final_logit_softcap)

  def __call__(self, tokens: Array, positions: Array, mask: Array, adapter: lora.LoraAdapter | None = None,
               cache: KVCache | None = None):
    cfg = self.config
    x = nn.with_logical_constraint(self.embed(tokens), ("batch", "length", "act_embed"))
    per_layer = {"sliding": jnp.asarray(cfg.sliding_layers), "index": jnp.arange(cfg.num_layers)}
    if cache is None or cache.fresh:
      inputs = uncached_attention_inputs(positions, mask, cache)
    else:
      inputs = cached_attention_inputs(positions, mask, cache)
      per_layer |= cache.layer_slots()
    lora_weights = None if adapter is None else lora.scaled_weights(adapter)
    x, outs = self.layers(x, per_layer, inputs, lora_weights)

    new_cache = None
    if cache is not None:
      new_cache = cache.append(outs["kv"]["k"], outs["kv"]["v"], positions, mask)
    return self.final_norm(x), outs["hidden"], new_cache


# ----------------------------------------------------------------------------- pure functions


class ForwardOutput(NamedTuple):
  logits: Array | None  # [B, T, V] float32 (or [B, P, V] at `logits_at`), None if not asked for.
  hidden: Array  # [B, T, D] after the final norm.
  per_layer_hidden: Array  # [L, B, T, D]: Z_0 (scaled embeddings) .. Z_{L-1}, the input of each layer.
  cache: KVCache | None


@functools.partial(jax.jit, static_argnames=("config",))
def init_params(config: GemmaConfig, key: Array) -> PyTree:
  """Random params as a plain pytree (leading `layers` axis on every per-layer leaf)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  variables = Gemma(config).init(key, tokens, tokens, jnp.ones((1, 1), bool))
  return nn.unbox(variables["params"])


def param_logical_axes(config: GemmaConfig) -> PyTree:
  """Logical PartitionSpecs of the params, computed without allocating them."""
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  mask = jax.ShapeDtypeStruct((1, 1), bool)
  boxed = jax.eval_shape(lambda t, m: Gemma(config).init(jax.random.key(0), t, t, m), tokens, mask)
  return nn.get_partition_spec(boxed["params"])


def default_positions(mask: Array) -> Array:
  """Positions that skip padding: 0 at each row's first real token (left or right padding)."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


@functools.partial(jax.jit, static_argnames=("config", "logits"))
def forward(params: PyTree, tokens: Array, *, config: GemmaConfig, mask: Array | None = None,
            positions: Array | None = None, adapter: lora.LoraAdapter | None = None,
            cache: KVCache | None = None, logits: bool = True, logits_at: Array | None = None) -> ForwardOutput:
  """Runs the decoder. `logits_at` [B, P] picks the positions whose logits are computed."""
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
  mask = jnp.ones(tokens.shape, bool) if mask is None else mask.astype(bool)
  positions = default_positions(mask) if positions is None else positions
  if adapter is not None:
    lora.validate(adapter, config, batch_size=tokens.shape[0])
  model = Gemma(config)
  hidden, per_layer, new_cache = model.apply({"params": params}, tokens, positions, mask, adapter, cache)
  out_logits = None
  if logits:
    selected = hidden if logits_at is None else jnp.take_along_axis(hidden, logits_at[..., None], axis=1)
    out_logits = model.apply({"params": params}, selected, method=Gemma.logits)
  return ForwardOutput(out_logits, hidden, per_layer, new_cache)


def layer_input(params: PyTree, tokens: Array, layer: int, *, config: GemmaConfig,
                mask: Array | None = None) -> Array:
  """Z_layer [B, T, D], the input of layer `layer` (Z_0: the scaled embeddings), from the first `layer`
  layers alone: what an early exit reads, without running the layer it exits at."""
  x = Gemma(config).apply({"params": params}, tokens, method=Gemma.embed)
  if layer == 0:
    return x
  mask = jnp.ones(tokens.shape, bool) if mask is None else mask.astype(bool)
  inputs = uncached_attention_inputs(default_positions(mask), mask)
  sliding = jnp.asarray(config.sliding_layers)

  # Each step indexes its layer in the stacked params: slicing off the first `layer` layers up
  # front would copy their weights (85 MiB for four layers of the 270M model) at every call.
  def one_layer(x, i):
    weights = jax.tree.map(lambda w: jax.lax.dynamic_index_in_dim(w, i, keepdims=False), params["layers"])
    x, _ = Block(config).apply({"params": weights}, x, {"sliding": sliding[i], "index": i}, inputs, None)
    return x, None

  return jax.lax.scan(one_layer, x, jnp.arange(layer))[0]


@functools.partial(jax.jit, static_argnames=("config",))
def compute_logits(params: PyTree, hidden: Array, *, config: GemmaConfig) -> Array:
  """The output head on already-computed final hidden states [..., D]."""
  return Gemma(config).apply({"params": params}, hidden, method=Gemma.logits)
