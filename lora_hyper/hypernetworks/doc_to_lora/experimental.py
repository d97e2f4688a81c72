"""Our additions to the published Doc-to-LoRA, each switched on by a field of `config.Experimental`
(where the experiment that motivates it is named). With all of them off the hypernetwork is the
published one."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lora_hyper.hypernetworks import _layers
from lora_hyper.hypernetworks.doc_to_lora.heads import TargetHead

Array = jax.Array

# The gate's logit is this times a linear function of the code: its params then move the gate as
# fast as the heads move B under one learning rate (a unit code's dot product changes slowly).
GATE_GAIN = 16.0
# The variable collection of running statistics: meta-training sets it (`mutable=`), never gradients.
STATS = "code_stats"


class BOnlyHead(TargetHead):
  """`generated_factors="b"`: the heads generate B only and every chunk's A is the bias block's
  learned, document-independent A, so a document's adapter is linear in its chunk codes."""

  generates_a: ClassVar[bool] = False

  def generate_a(self, x: Array) -> Array:
    return jnp.broadcast_to(self.bias_a, (x.shape[0],) + self.bias_a.shape)


class ChunkGate(nn.Module):
  """`chunk_gate`: each chunk's gate on B per layer, g = 2 sigmoid(GATE_GAIN (w . code + c)) in (0, 2),
  exactly 1 at init (zero w, c), so a trained hypernetwork keeps its adapters when it is switched on.
  `cut` (`chunk_gate_cut`): a gate below 1 becomes 0, dropping that chunk from the layer's adapter;
  the gradient is the soft gate's (straight-through)."""

  num_layers: int
  rank: int
  latent_dim: int
  cut: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:  # normalised codes [N, L, r, d] -> gates [N, L]
    zeros = nn.initializers.zeros_init()
    w = _layers.param(self, "w", zeros, (self.num_layers, self.rank, self.latent_dim),
                      ("layers", "lora_rank", "hyper_embed"))
    c = _layers.param(self, "c", zeros, (self.num_layers,), ("layers",))
    gate = 2.0 * jax.nn.sigmoid(GATE_GAIN * (jnp.einsum("nlrd,lrd->nl", x.astype(jnp.float32), w) + c))
    if self.cut:
      gate = gate + jax.lax.stop_gradient(jnp.where(gate < 1.0, -gate, 0.0))
    return gate


def mean_code(codes: Array, chunk_valid: Array) -> Array:
  """The mean of the real chunks' codes [N*K, ...] (chunk_valid [N, K]) -> [...], without gradient."""
  n, k = chunk_valid.shape
  codes = codes.reshape(n, k, *codes.shape[1:])
  weights = chunk_valid.astype(codes.dtype).reshape(n, k, *([1] * (codes.ndim - 2)))
  return jax.lax.stop_gradient(jnp.sum(codes * weights, axis=(0, 1)) / jnp.maximum(jnp.sum(weights), 1.0))


class CodeCentre(nn.Module):
  """`center_momentum`: subtracts the mean chunk code. In meta-training (`train`) the batch's, which
  also moves a debiased running mean (as Adam's moments) in the `code_stats` collection when that is
  mutable; otherwise the running mean. A fresh Perceiver's codes are about 99% the same for every
  document, and uncentred the heads see each one as a small perturbation of a common vector."""

  momentum: float
  shape: tuple[int, ...]  # [L, modules, r, d]

  @nn.compact
  def __call__(self, codes: Array, chunk_valid: Array, train: bool) -> Array:
    axes = ("layers", "lora_modules", "lora_rank", "hyper_embed")
    ema = self.variable(STATS, "ema", nn.with_logical_partitioning(nn.initializers.zeros_init(), axes),
                        None, self.shape, jnp.float32)
    weight = self.variable(STATS, "weight", nn.with_logical_partitioning(nn.initializers.zeros_init(), ()),
                           None, (), jnp.float32)
    if train:
      mean = mean_code(codes, chunk_valid)
      if self.is_mutable_collection(STATS) and not self.is_initializing():
        beta = self.momentum
        ema.value = beta * ema.value + (1 - beta) * mean.astype(ema.value.dtype)
        weight.value = beta * weight.value + (1 - beta)
    else:
      mean = jax.lax.stop_gradient(ema.value / jnp.maximum(weight.value, 1e-12))
    return codes - mean.astype(codes.dtype)
