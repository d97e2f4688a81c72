"""Doc-to-LoRA's Flax modules, published design: a Perceiver shared by all layers turns each chunk's
activations into one latent per (layer, module, rank row); per-layer residual MLPs make them codes;
codes are L2-normalised and per-layer linear heads emit A rows and B columns, scaled per layer and
rank, beside a learned bias block. The options of `Experimental` swap in `experimental.py`'s modules.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lora_hyper.hypernetworks import _layers
from lora_hyper.hypernetworks.doc_to_lora import experimental
from lora_hyper.hypernetworks.doc_to_lora.config import DocToLoraConfig
from lora_hyper.hypernetworks.doc_to_lora.heads import TargetHead, l2_normalize
from lora_hyper.hypernetworks.perceiver import Perceiver

Array = jax.Array


class PerLayerResidualMLP(nn.Module):
  """x + LN(W2_l silu(W1_l LN(x) + b1_l) + b2_l), with separate W1, W2 per base layer l."""

  num_layers: int
  hidden_dim: int

  @nn.compact
  def __call__(self, x: Array) -> Array:  # [N, L, M, r, d]
    d, f, n = x.shape[-1], self.hidden_dim, self.num_layers
    w1 = _layers.param(self, "w1", _layers.uniform_fan_in(d), (n, d, f), ("layers", "hyper_embed", "hyper_mlp"))
    b1 = _layers.param(self, "b1", _layers.uniform_fan_in(d), (n, f), ("layers", "hyper_mlp"))
    w2 = _layers.param(self, "w2", _layers.uniform_fan_in(f), (n, f, d), ("layers", "hyper_mlp", "hyper_embed"))
    b2 = _layers.param(self, "b2", _layers.uniform_fan_in(f), (n, d), ("layers", "hyper_embed"))
    h = _layers.LayerNorm(name="pre_norm")(x)
    h = jax.nn.silu(jnp.einsum("nlmrd,ldf->nlmrf", h, w1) + b1[:, None, None, :])
    h = jnp.einsum("nlmrf,lfd->nlmrd", h, w2) + b2[:, None, None, :]
    return x + _layers.LayerNorm(name="post_norm")(h)


class DocToLora(nn.Module):
  """The hypernetwork. `encode`: activations -> latents; `codes`: latents -> per-layer codes;
  `decode`: codes -> per-chunk factors."""

  config: DocToLoraConfig

  def setup(self):
    cfg, extra = self.config, self.config.experimental
    layers, latent = cfg.base.num_layers, cfg.perceiver.latent_dim
    self.perceiver = Perceiver(cfg.perceiver, cfg.num_output_latents)
    self.pre_head = [PerLayerResidualMLP(layers, cfg.pre_head_mlp_dim) for _ in range(cfg.pre_head_blocks)]
    head = experimental.BOnlyHead if extra.generated_factors == "b" else TargetHead
    self.heads = {m: head(layers, cfg.rank, *cfg.base.module_shape(m), latent_dim=latent,
                          zero_b_head=extra.zero_b_init == "head") for m in cfg.modules}
    self.gates = ({m: experimental.ChunkGate(layers, cfg.rank, latent, cut=extra.chunk_gate_cut) for m in cfg.modules}
                  if extra.chunk_gate else None)
    self.centre = (experimental.CodeCentre(extra.center_momentum, (layers, len(cfg.modules), cfg.rank, latent))
                   if extra.center_momentum is not None else None)

  def __call__(self, features: Array, mask: Array) -> Array:
    """features [F, N, T, D], mask [N, T] -> latents [F, N, ...]; all F layers in one Perceiver batch,
    folded batch-major (N outer), so the folded axis keeps the chunks' data-parallel sharding."""
    f, n, t, d = features.shape
    latents = self.encode(jnp.swapaxes(features, 0, 1).reshape(n * f, t, d), jnp.repeat(mask, f, axis=0))
    return jnp.swapaxes(latents.reshape(n, f, *latents.shape[1:]), 0, 1)

  def encode(self, features: Array, mask: Array) -> Array:
    """features [B, T, D], mask [B, T] -> latents [B, num_output_latents, latent_dim]."""
    return self.perceiver(features, mask)

  def codes(self, latents: Array) -> Array:
    """latents [F, N, num_output_latents, d] -> chunk codes [N, L, modules, r, d] (per-layer MLPs)."""
    cfg = self.config
    n = latents.shape[1]
    x = jnp.moveaxis(latents, 0, 1).reshape(n, cfg.base.num_layers, len(cfg.modules), cfg.rank, latents.shape[-1])
    for block in self.pre_head:
      x = block(x)
    return x

  def head_inputs(self, codes: Array, chunk_valid: Array, train: bool) -> Array:
    """Codes [N*K, ...] (chunk_valid [N, K]) as the heads read them: L2-normalised (centred first
    with `center_momentum`: on this batch's mean in training, else on the running mean)."""
    if self.centre is not None:
      codes = self.centre(codes, chunk_valid, train)
    return l2_normalize(codes)

  def decode(self, codes: Array, chunk_valid: Array, train: bool = False
             ) -> tuple[dict[str, dict[str, Array]], dict[str, Array] | None]:
    """codes [N*K, L, modules, r, d] -> ({module: a [N*K, L, r, d_in], b}, {module: gate [N*K, L]} or None)."""
    x = self.head_inputs(codes, chunk_valid, train)
    factors = {m: self.heads[m](x[:, :, i]) for i, m in enumerate(self.config.modules)}
    if self.gates is None:
      return factors, None
    gates = {m: self.gates[m](x[:, :, i]) for i, m in enumerate(self.config.modules)}
    return {m: {"a": ab["a"], "b": ab["b"] * gates[m][..., None, None]} for m, ab in factors.items()}, gates

  def bias_block(self) -> dict[str, dict[str, Array]]:
    """The learned, document-independent rank-r block {module: a [L, r, d_in], b [L, r, d_out]}."""
    return {m: self.heads[m].bias_block() for m in self.config.modules}


def _init_all(module: DocToLora, features: Array, mask: Array):
  """Touches every submodule, so `init` creates every variable."""
  module.bias_block()
  codes = module.codes(module(features, mask))
  return module.decode(codes, jnp.ones((codes.shape[0], 1), bool))


def boxed_variables(config: DocToLoraConfig, key: Array):
  """Random variables, boxed with their logical axes; the first adapter they generate is zero."""
  features = jnp.zeros((config.num_feature_layers, 1, 1, config.base.embed_dim), jnp.float32)
  return dict(DocToLora(config).init(key, features, jnp.ones((1, 1), bool), method=_init_all))
