"""Doc-to-LoRA's output heads, published design: per-layer linear maps from a chunk's normalised code
to A rows and B columns, scaled per layer and rank, beside a learned bias block."""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lora_hyper.hypernetworks import _layers

Array = jax.Array


class TargetHead(nn.Module):
  """One target module: per-layer linear heads to A rows and B columns, per-rank scalers, bias block.

  Published init: scale_b = 0, so the first generated B, hence the first adapter, is exactly zero.
  `zero_b_head` (experimental) zeroes the B head instead, with scale_b = 1.
  """

  num_layers: int
  rank: int
  d_in: int
  d_out: int
  latent_dim: int
  zero_b_head: bool = False
  generates_a: ClassVar[bool] = True  # `experimental.BOnlyHead` takes every chunk's A from the bias block

  def setup(self):
    n, r, d_in, d_out, latent = self.num_layers, self.rank, self.d_in, self.d_out, self.latent_dim
    # The reference's head init: small, and scaled down by r since every rank row shares it.
    head_init = _layers.normal(0.5 / math.sqrt(latent + (d_in + d_out) * r))
    zeros, ones = nn.initializers.zeros_init(), nn.initializers.ones_init()
    if self.generates_a:
      self.head_a = _layers.param(self, "head_a", head_init, (n, latent, d_in), ("layers", "hyper_embed", "lora_in"))
      self.scale_a = _layers.param(self, "scale_a", ones, (n, r), ("layers", "lora_rank"))
    self.head_b = _layers.param(self, "head_b", zeros if self.zero_b_head else head_init, (n, latent, d_out),
                                ("layers", "hyper_embed", "lora_out"))
    self.scale_b = _layers.param(self, "scale_b", ones if self.zero_b_head else zeros, (n, r), ("layers", "lora_rank"))
    self.bias_a = _layers.param(self, "bias_a", _layers.normal(0.2 / math.sqrt(d_in * r)), (n, r, d_in),
                                ("layers", "lora_rank", "lora_in"))
    self.bias_b = _layers.param(self, "bias_b", zeros, (n, r, d_out), ("layers", "lora_rank", "lora_out"))

  def __call__(self, x: Array) -> dict[str, Array]:  # x [N, L, r, d] -> a [N, L, r, d_in], b [N, L, r, d_out]
    b = jnp.einsum("nlrd,ldo->nlro", x, self.head_b.astype(x.dtype)) * self.scale_b[..., None]
    return {"a": self.generate_a(x).astype(jnp.float32), "b": b.astype(jnp.float32)}

  def generate_a(self, x: Array) -> Array:
    return jnp.einsum("nlrd,ldi->nlri", x, self.head_a.astype(x.dtype)) * self.scale_a[..., None]

  def bias_block(self) -> dict[str, Array]:
    return {"a": self.bias_a, "b": self.bias_b}


def l2_normalize(x: Array) -> Array:
  """x / ||x||, as published (no epsilon); the floor only keeps an all-zero code finite."""
  x32 = x.astype(jnp.float32)
  squared = jnp.maximum(jnp.sum(x32 * x32, axis=-1, keepdims=True), jnp.finfo(jnp.float32).tiny)
  return (x32 * jax.lax.rsqrt(squared)).astype(x.dtype)
