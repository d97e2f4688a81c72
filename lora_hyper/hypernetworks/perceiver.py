"""The Doc-to-LoRA Perceiver: token activations -> a fixed number of output latents.

Idefics2-style resampler as used by Doc-to-LoRA: a SwiGLU input projection, then learned latent
queries that cross-attend to the (projected) tokens in blocks of
  latents += RMSNorm(attn(RMSNorm(latents), RMSNorm(context)));  latents += RMSNorm(SwiGLU(RMSNorm(latents)))
with grouped-query attention and no latent self-attention, and a final RMSNorm. The decoder is one
more resampler whose queries are the output latents (one per LoRA rank row) and whose context
is the encoder's latents.
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from lora_hyper.hypernetworks import _layers

Array = jax.Array

# Large finite negative instead of -inf: a fully padded chunk then gives no NaNs.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PerceiverConfig:
  """Sizes of the Perceiver; defaults are Doc-to-LoRA's published ones."""

  latent_dim: int = 512
  num_latents: int = 8  # learned encoder queries
  num_blocks: int = 9  # encoder cross-attention blocks (the published gemma-2-2b recipe; the code's default is 8)
  decoder_blocks: int = 1
  num_heads: int = 16
  num_kv_heads: int = 4
  head_dim: int = 128
  mlp_dim: int = 2048
  input_mlp_factor: int = 4  # input SwiGLU: d_model -> factor * d_model -> latent_dim
  rms_eps: float = 1e-6
  dtype: str = "float32"  # activations; params stay float32

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")


class SwiGLU(nn.Module):
  """down(silu(gate(x)) * up(x)), no biases; `axes` = (in, hidden, out) logical names."""

  hidden_dim: int
  out_dim: int
  axes: tuple[str, str, str]

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d_in, d_hid, d_out = self.axes
    gate = _layers.dense(self.hidden_dim, (d_in, d_hid), name="gate")(x)
    up = _layers.dense(self.hidden_dim, (d_in, d_hid), name="up")(x)
    return _layers.dense(self.out_dim, (d_hid, d_out), name="down")(jax.nn.silu(gate) * up)


class CrossAttention(nn.Module):
  """Grouped-query attention from latents [B, N, d] to context [B, T, d], padded keys masked."""

  config: PerceiverConfig

  @nn.compact
  def __call__(self, latents: Array, context: Array, mask: Array | None) -> Array:
    cfg = self.config
    n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    proj = lambda heads, axis, name: _layers.Dense((heads, h), ("hyper_embed", axis, "hyper_head_dim"), name=name)
    q = proj(n, "hyper_heads", "q")(latents)  # [B, N, n, h]
    key = proj(k, "hyper_kv_heads", "k")(context)  # [B, T, k, h]
    value = proj(k, "hyper_kv_heads", "v")(context)
    b, num_q = q.shape[:2]
    q = q.reshape(b, num_q, k, n // k, h) * jnp.asarray(h ** -0.5, q.dtype)
    logits = jnp.einsum("bqkgh,btkh->bkgqt", q, key, preferred_element_type=jnp.float32)
    if mask is not None:
      logits = jnp.where(mask[:, None, None, None, :], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    out = jnp.einsum("bkgqt,btkh->bqkgh", probs, value).reshape(b, num_q, n, h)
    wo = _layers.param(self, "o", _layers.uniform_fan_in(n * h), (n, h, cfg.latent_dim),
                       ("hyper_heads", "hyper_head_dim", "hyper_embed"))
    return jnp.einsum("bqnh,nhd->bqd", out, wo.astype(out.dtype))


class CrossAttentionBlock(nn.Module):
  """Sandwich-normed cross-attention and SwiGLU MLP, each with a residual."""

  config: PerceiverConfig

  @nn.compact
  def __call__(self, latents: Array, context: Array, mask: Array | None) -> Array:
    cfg = self.config
    norm = lambda name: _layers.RMSNorm(cfg.rms_eps, name=name)
    attn = CrossAttention(cfg, name="attn")(norm("latents_norm")(latents), norm("context_norm")(context), mask)
    latents = latents + norm("post_attention_norm")(attn)
    mlp = SwiGLU(cfg.mlp_dim, cfg.latent_dim, ("hyper_embed", "hyper_mlp", "hyper_embed"), name="mlp")
    return latents + norm("post_mlp_norm")(mlp(norm("pre_mlp_norm")(latents)))


class Resampler(nn.Module):
  """`num_latents` learned queries refined by `num_blocks` cross-attention blocks, then RMSNorm."""

  config: PerceiverConfig
  num_latents: int
  num_blocks: int

  @nn.compact
  def __call__(self, context: Array, mask: Array | None) -> Array:
    cfg = self.config
    queries = _layers.param(self, "latents", _layers.normal(1.0), (self.num_latents, cfg.latent_dim),
                            ("latent", "hyper_embed"))
    x = jnp.broadcast_to(queries.astype(context.dtype), (context.shape[0],) + queries.shape)
    for i in range(self.num_blocks):
      x = CrossAttentionBlock(cfg, name=f"block_{i}")(x, context, mask)
    return _layers.RMSNorm(cfg.rms_eps, name="final_norm")(x)


class Perceiver(nn.Module):
  """features [B, T, d_model] (mask [B, T], True = real token) -> latents [B, num_outputs, latent_dim]."""

  config: PerceiverConfig
  num_outputs: int

  @nn.compact
  def __call__(self, features: Array, mask: Array) -> Array:
    cfg = self.config
    chex.assert_rank(features, 3)
    chex.assert_shape(mask, features.shape[:2])
    x = features.astype(jnp.dtype(cfg.dtype))
    hidden = cfg.input_mlp_factor * features.shape[-1]
    x = SwiGLU(hidden, cfg.latent_dim, ("hyper_in", "hyper_mlp", "hyper_embed"), name="input_projection")(x)
    x = Resampler(cfg, cfg.num_latents, cfg.num_blocks, name="encoder")(x, mask)
    return Resampler(cfg, self.num_outputs, cfg.decoder_blocks, name="decoder")(x, None)
