"""Doc-to-LoRA: a document becomes a LoRA adapter of the base model in one forward pass.

Pipeline (`internalize`): tokenize -> split into chunks -> encode every chunk with the frozen base
model (one batched call) -> Perceiver per (chunk, layer) -> per-layer residual MLP, centring, L2
normalisation and per-layer linear heads -> per-rank scalers -> the K chunk adapters
concatenated along the rank axis, followed by a learned bias block:

  rank = K * r + r,   scaling = alpha (applied directly; paper: alpha = 2 * r**1.5).

Context encoders (`DocToLoraConfig.context_encoder`):
  per_layer_activations: Z_0 .. Z_{L-1} (the input of every decoder layer); Z_{l} feeds the
    adapter of layer l, and the Perceiver is shared by all layers (each layer a batch item).
  early_exit: only Z_{exit_layer} (default L // 4, the base model truncated after that many
    layers) is encoded, once; the decoder then has one output latent per (layer, module, rank).

Two additions to the published design, both switchable, made the 270M NIAH run learn on a CPU
budget (experiments/README.md); the paper's run had 80K steps to get past them.

Activations are read as each layer reads them, through that layer's own pre-attention RMSNorm
(`normalize_features`): raw Gemma residual streams are dominated by a few huge channels shared by
every token (one channel holds most of the norm at layer 4 of the 270M model), which hides the
token-specific part from a freshly initialised Perceiver.

Chunk codes are centred before the L2 normalisation (`center_momentum`): a fresh Perceiver's
pre-head latents are about 99% the same for every document (learned queries, shared filler), so
uncentred the heads see each document as a small perturbation of a common vector, and the noise
of that common part drowns the per-document signal: meta-training then sits at the answer's
marginal for thousands of steps. Meta-training subtracts the mean code of the batch's chunks
(as batch normalisation does) and keeps a running mean in the params, which generation
subtracts; the document-independent part of each adapter is the bias block's job.

Optionally only B is generated (`generated_factors="b"`): every block's A is the bias block's
learned, document-independent A, so a document's adapter is linear in its chunk codes instead of
quadratic (B and A both from the code). On the NIAH needle the published heads learn the number one
digit at a time, the linear ones all four digits together, as free per-digit factors do
(experiments/README.md). Its cost: the chunks' rank blocks then share one A, so however many
chunks a document has, its adapter reads the same r directions of its input (its rank stays r).
`generated_factors="b+a"` is meant to lift that cost: each chunk's A is the shared A plus a
generated correction, linear in the code and zero at init (a zero A head), so it starts as exactly
the "b" hypernetwork it continues. A document-dependent A could read *which* token the model has
just written and B write the one that follows it (as a copied multi-token name needs), where a
shared A reads the same r features for every document. On made-up code words 800 steps of it
did not get the adapter past a word's first token (experiments/qa/README.md).

Optionally each chunk's B is gated (`chunk_gate`, also not published): g = 2 sigmoid(GATE_GAIN *
(w . code + c)) per (layer, module), exactly 1 at init so a trained hypernetwork keeps its
adapters. The heads are linear in the code, so a chunk of filler makes a B as large as the
needle's (its centred code is L2-normalised too), and many of them summed along the rank axis
drown the one that matters: on NIAH, stage 1's hypernetwork finds no needle in 1,024 tokens of
128-token chunks, 85% of them with only the needle's chunk kept. The gate is the nonlinearity that
lets a chunk's adapter shrink; multi-chunk training (the paper's second stage,
`DocExampleShapes.random_chunking`) teaches it which chunks those are (experiments/README.md).
A soft gate still leaves every attenuated chunk a share, and those shares add up with the number of
chunks; `chunk_gate_cut` drops a chunk whose gate is below 1 from that layer's adapter (gate 0; in
training the soft gate's gradient passes straight through), so a dropped chunk counts for nothing
however many there are.

Optionally each token's features also carry the next few tokens' (`lookahead`, not published): a
linear map per offset, zero at init so that it continues a hypernetwork without it exactly. On made-up
code words a linear probe finds a word's first token in the Perceiver's latents and not the second
(experiments/qa/README.md): the latents attend to where a word starts. With lookahead that position
holds the tokens after it as well: after 1,500 steps of the copying drill the second token reaches
the code (probe 0.05 to 0.23) and the answers (first two tokens right for 21% of unseen words,
against 2% for the drill's runs without it, of up to 800 steps), where 600 steps had taken it only
as far as the latents. Start the maps at a low learning rate: at 3e-4 from zero they outgrew the
identity (spectral norm 1.8) and training collapsed to one answer for every document. And add them
after the copy is learned, as the drill did: from the needle hypernetwork, with the maps' rate
warmed up alone (`OptimizerConfig.param_groups`), the first token fell from 85% right to 17%.

Each chunk is encoded independently: BOS prepended, positions from 0, right padding masked
both in the base model and in the Perceiver's cross-attention, so padding changes nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lora_hyper.adapters import lora
from lora_hyper.hypernetworks import _layers
from lora_hyper.hypernetworks.perceiver import Perceiver, PerceiverConfig
from lora_hyper.hypernetworks.task_encoders import TextTokenizer
from lora_hyper.model import transformer
from lora_hyper.model.config import MODULES, GemmaConfig

Array = jax.Array
PyTree = Any

CONTEXT_ENCODERS = ("per_layer_activations", "early_exit")
ZERO_B_INITS = ("scale", "head")
GENERATED_FACTORS = ("ab", "b", "b+a")
# The gate's logit is this times a linear function of the code: its params then move the gate as
# fast as the heads move B under one learning rate (a unit code's dot product changes slowly).
GATE_GAIN = 16.0
# Params that hold the running mean of chunk codes: set by `update_center`, never by gradients.
CENTER_EMA, CENTER_WEIGHT = "center_ema", "center_weight"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DocToLoraConfig:
  """Sizes of a Doc-to-LoRA hypernetwork for one base model. Build with `d2l_paper` & co."""

  base: GemmaConfig
  perceiver: PerceiverConfig = PerceiverConfig()
  target_modules: tuple[str, ...] = ("down",)
  rank: int = 8
  alpha: float | None = None  # None: 2 * rank ** 1.5, as published.
  context_encoder: str = "per_layer_activations"
  exit_layer: int | None = None  # early_exit only; None: base.num_layers // 4.
  normalize_features: bool = True  # read Z_l through layer l's pre-attention RMSNorm
  center_momentum: float | None = 0.9  # running mean of chunk codes (module docstring); None: no centring
  # What makes the first generated B zero. "scale": the published init (scale_b = 0, random B head):
  # B = scale_b * head_b(x) then starts as a product in which the head gets no gradient until
  # scale_b has moved. "head": B head = 0, scale_b = 1: the head learns from the first step (no
  # faster on NIAH haystacks, a little on the needle alone: experiments/README.md).
  zero_b_init: str = "scale"
  # Which factors the heads generate from a chunk's code. "ab": A and B (published), so the adapter
  # B A is quadratic in the code. "b": B only; every block's A is the bias block's learned,
  # document-independent A, so the adapter is linear in the code (module docstring). "b+a": B, and
  # A as that shared A plus a generated correction, zero at init (continues a "b" hypernetwork).
  generated_factors: str = "ab"
  # Not published. True: each chunk's generated B is scaled by a learned gate in (0, 2), 1 at
  # init, read from the chunk's code (per layer and module), so training can switch off chunks
  # that hold nothing the answer needs (module docstring).
  chunk_gate: bool = False
  # Not published, needs chunk_gate. True: a chunk whose gate is below 1 (one the hypernetwork
  # attenuates) is dropped from that layer's adapter, gate 0; training passes the soft gate's
  # gradient straight through. Then no number of dropped chunks adds up against the kept ones.
  chunk_gate_cut: bool = False
  # Not published. n > 0: each token's features plus a learned linear map (zero at init) of each of
  # the next n tokens' features, before the Perceiver (module docstring): a latent that attends to
  # a word's first token then reads the tokens after it too.
  lookahead: int = 0
  pre_head_blocks: int = 1  # per-layer residual MLP blocks before the heads
  pre_head_mlp_dim: int = 2048
  chunk_len: int = 8192  # tokens per chunk, BOS included
  max_chunks: int = 16

  def __post_init__(self):
    if not self.target_modules or any(m not in MODULES for m in self.target_modules):
      raise ValueError(f"target_modules must be a non-empty subset of {MODULES}, got {self.target_modules}")
    if self.context_encoder not in CONTEXT_ENCODERS:
      raise ValueError(f"context_encoder must be one of {CONTEXT_ENCODERS}, got {self.context_encoder!r}")
    if not 0 <= self.feature_layer < self.base.num_layers:
      raise ValueError(f"exit_layer={self.exit_layer} is outside the base model's {self.base.num_layers} layers")
    if self.zero_b_init not in ZERO_B_INITS:
      raise ValueError(f"zero_b_init must be one of {ZERO_B_INITS}, got {self.zero_b_init!r}")
    if self.generated_factors not in GENERATED_FACTORS:
      raise ValueError(f"generated_factors must be one of {GENERATED_FACTORS}, got {self.generated_factors!r}")
    if self.chunk_gate_cut and not self.chunk_gate:
      raise ValueError("chunk_gate_cut=True needs chunk_gate=True")
    if self.lookahead < 0:
      raise ValueError(f"lookahead must be >= 0 (tokens ahead each token reads), got {self.lookahead}")
    if self.chunk_len < 2 or self.max_chunks < 1 or self.rank < 1:
      raise ValueError(f"need chunk_len >= 2, max_chunks >= 1, rank >= 1; got {self.chunk_len}, "
                       f"{self.max_chunks}, {self.rank}")

  @property
  def scaling(self) -> float:
    return 2 * self.rank ** 1.5 if self.alpha is None else self.alpha

  @property
  def modules(self) -> tuple[str, ...]:
    """Target modules in the forward-pass order used by adapters."""
    return tuple(m for m in MODULES if m in self.target_modules)

  @property
  def feature_layer(self) -> int:
    return self.base.num_layers // 4 if self.exit_layer is None else self.exit_layer

  @property
  def num_feature_layers(self) -> int:
    """How many activation layers the Perceiver reads per chunk."""
    return self.base.num_layers if self.context_encoder == "per_layer_activations" else 1

  @property
  def num_output_latents(self) -> int:
    """Decoder queries per Perceiver call: one per (module, rank row), times layers for early_exit."""
    per_layer = len(self.target_modules) * self.rank
    return per_layer if self.context_encoder == "per_layer_activations" else self.base.num_layers * per_layer

  def replace(self, **changes: Any) -> "DocToLoraConfig":
    return dataclasses.replace(self, **changes)


def d2l_paper(base: GemmaConfig, **overrides: Any) -> DocToLoraConfig:
  """Published sizes: width 512, 8 latents, 8 blocks, 16x128 queries, 4 KV heads, MLP 2048, r 8, down_proj."""
  return DocToLoraConfig(base=base, **overrides)


def d2l_small(base: GemmaConfig, **overrides: Any) -> DocToLoraConfig:
  """For gemma3_270m (~32M params, 12% of the base as in the paper): width 256, 4 encoder blocks,
  8 query heads x 64, 2 KV heads, MLP 1024; rank 8 on down_proj; 1024-token chunks, up to 32."""
  perceiver = PerceiverConfig(latent_dim=256, num_latents=8, num_blocks=4, num_heads=8, num_kv_heads=2,
                              head_dim=64, mlp_dim=1024)
  kw = dict(perceiver=perceiver, pre_head_mlp_dim=1024, chunk_len=1024, max_chunks=32)
  return DocToLoraConfig(base=base, **{**kw, **overrides})


def d2l_compact(base: GemmaConfig, **overrides: Any) -> DocToLoraConfig:
  """Sized to ship with gemma3_270m (~12M params; 7.3M, 15 MB in bfloat16 with generated_factors="b"):
  width 128, 4 encoder blocks, 4 query heads x 32, 2 KV heads, MLP 512; rank 8 on down_proj."""
  perceiver = PerceiverConfig(latent_dim=128, num_latents=8, num_blocks=4, num_heads=4, num_kv_heads=2,
                              head_dim=32, mlp_dim=512, input_mlp_factor=2)
  kw = dict(perceiver=perceiver, pre_head_mlp_dim=512, chunk_len=1024, max_chunks=32)
  return DocToLoraConfig(base=base, **{**kw, **overrides})


def d2l_tiny(base: GemmaConfig, **overrides: Any) -> DocToLoraConfig:
  """A few-thousand-parameter hypernetwork for tests."""
  perceiver = PerceiverConfig(latent_dim=16, num_latents=4, num_blocks=2, num_heads=4, num_kv_heads=2, head_dim=8,
                              mlp_dim=32, input_mlp_factor=2)
  kw = dict(perceiver=perceiver, rank=2, pre_head_mlp_dim=32, chunk_len=8, max_chunks=6)
  return DocToLoraConfig(base=base, **{**kw, **overrides})


# ----------------------------------------------------------------------------- modules


class Lookahead(nn.Module):
  """features x_t + sum_{j=1..span} W_j x_{t+j} [B, T, D]; W_j zero at init, and tokens past the
  chunk's end (mask False) read as zero, so padding changes nothing."""

  span: int

  @nn.compact
  def __call__(self, features: Array, mask: Array) -> Array:
    d = features.shape[-1]
    kernel = _layers.param(self, "kernel", nn.initializers.zeros_init(), (self.span, d, d),
                           ("token_offset", "hyper_in_ahead", "hyper_in"))
    source = features * mask[..., None].astype(features.dtype)
    out = features
    for j in range(1, self.span + 1):
      ahead = jnp.pad(source, ((0, 0), (0, j), (0, 0)))[:, j:]  # token t + j at t, zeros past the end
      out = out + jnp.tensordot(ahead, kernel[j - 1].astype(features.dtype), axes=1)
    return out


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


class TargetHead(nn.Module):
  """One target module: per-layer linear heads to A rows and B columns, scalers, bias block."""

  num_layers: int
  rank: int
  d_in: int
  d_out: int
  latent_dim: int
  zero_b_init: str = "scale"  # DocToLoraConfig.zero_b_init
  factors: str = "ab"  # DocToLoraConfig.generated_factors
  chunk_gate: bool = False  # DocToLoraConfig.chunk_gate
  gate_cut: bool = False  # DocToLoraConfig.chunk_gate_cut

  def setup(self):
    n, r, d_in, d_out = self.num_layers, self.rank, self.d_in, self.d_out
    latent = self.latent_dim
    # The reference's head init: small, and scaled down by r since every rank row shares it.
    head_init = _layers.normal(0.5 / math.sqrt(latent + (d_in + d_out) * r))
    zeros, ones = nn.initializers.zeros_init(), nn.initializers.ones_init()
    zero_head = self.zero_b_init == "head"
    if self.factors != "b":  # "b+a": a zero A head, so the correction of the shared A starts at zero
      self.head_a = _layers.param(self, "head_a", head_init if self.factors == "ab" else zeros, (n, latent, d_in),
                                  ("layers", "hyper_embed", "lora_in"))
      self.scale_a = _layers.param(self, "scale_a", ones, (n, r), ("layers", "lora_rank"))
    self.head_b = _layers.param(self, "head_b", zeros if zero_head else head_init, (n, latent, d_out),
                                ("layers", "hyper_embed", "lora_out"))
    # A zero scale_b (or B head) makes every generated B, hence the first adapter, exactly zero.
    self.scale_b = _layers.param(self, "scale_b", ones if zero_head else zeros, (n, r), ("layers", "lora_rank"))
    self.bias_a = _layers.param(self, "bias_a", _layers.normal(0.2 / math.sqrt(d_in * r)), (n, r, d_in),
                                ("layers", "lora_rank", "lora_in"))
    self.bias_b = _layers.param(self, "bias_b", nn.initializers.zeros_init(), (n, r, d_out),
                                ("layers", "lora_rank", "lora_out"))
    if self.chunk_gate:  # zero: every gate starts at exactly 1
      self.gate_w = _layers.param(self, "gate_w", zeros, (n, r, latent), ("layers", "lora_rank", "hyper_embed"))
      self.gate_b = _layers.param(self, "gate_b", zeros, (n,), ("layers",))

  def __call__(self, x: Array) -> dict[str, Array]:  # x [N, L, r, d] -> a [N, L, r, d_in], b [N, L, r, d_out]
    a = jnp.broadcast_to(self.bias_a, (x.shape[0],) + self.bias_a.shape)
    if self.factors != "b":
      generated = jnp.einsum("nlrd,ldi->nlri", x, self.head_a.astype(x.dtype)) * self.scale_a[..., None]
      a = generated if self.factors == "ab" else a + generated
    b = jnp.einsum("nlrd,ldo->nlro", x, self.head_b.astype(x.dtype)) * self.scale_b[..., None]
    if self.chunk_gate:
      b = b * self.gate(x)[..., None, None].astype(b.dtype)
    return {"a": a.astype(jnp.float32), "b": b.astype(jnp.float32)}

  def gate(self, x: Array) -> Array:
    """Normalised codes x [N, L, r, d] -> each chunk's gate on B per layer [N, L], in (0, 2)
    (with `gate_cut`: 0 or in [1, 2))."""
    logit = jnp.einsum("nlrd,lrd->nl", x.astype(jnp.float32), self.gate_w) + self.gate_b
    gate = 2.0 * jax.nn.sigmoid(GATE_GAIN * logit)
    if self.gate_cut:  # straight-through: the forward pass drops the chunk, the gradient is the soft gate's
      gate = gate + jax.lax.stop_gradient(jnp.where(gate < 1.0, -gate, 0.0))
    return gate

  def bias_block(self) -> dict[str, Array]:
    return {"a": self.bias_a, "b": self.bias_b}


class DocToLora(nn.Module):
  """The hypernetwork. `encode`: activations -> latents; `decode`: latents -> per-chunk factors."""

  config: DocToLoraConfig

  def setup(self):
    cfg = self.config
    layers = cfg.base.num_layers
    self.perceiver = Perceiver(cfg.perceiver, cfg.num_output_latents)
    self.lookahead = Lookahead(cfg.lookahead) if cfg.lookahead else None
    self.pre_head = [PerLayerResidualMLP(layers, cfg.pre_head_mlp_dim) for _ in range(cfg.pre_head_blocks)]
    self.heads = {m: TargetHead(layers, cfg.rank, *cfg.base.module_shape(m), latent_dim=cfg.perceiver.latent_dim,
                                zero_b_init=cfg.zero_b_init, factors=cfg.generated_factors,
                                chunk_gate=cfg.chunk_gate, gate_cut=cfg.chunk_gate_cut)
                  for m in cfg.modules}
    if cfg.center_momentum is not None:  # statistics, not weights: meta-training sets them (`update_center`)
      zeros = nn.initializers.zeros_init()
      self.center_ema = _layers.param(self, CENTER_EMA, zeros, (layers, len(cfg.modules), cfg.rank,
                                                                cfg.perceiver.latent_dim),
                                      ("layers", "lora_modules", "lora_rank", "hyper_embed"))
      self.center_weight = _layers.param(self, CENTER_WEIGHT, zeros, (1,), ("statistic",))  # 1-d: files keep it

  def encode(self, features: Array, mask: Array) -> Array:
    """features [B, T, D], mask [B, T] -> latents [B, num_output_latents, latent_dim]."""
    if self.lookahead is not None:
      features = self.lookahead(features, mask)
    return self.perceiver(features, mask)

  def codes(self, latents: Array) -> Array:
    """latents [F, N, num_output_latents, d] -> chunk codes [N, L, modules, r, d] (per-layer MLPs)."""
    cfg = self.config
    n = latents.shape[1]
    x = jnp.moveaxis(latents, 0, 1).reshape(n, cfg.base.num_layers, len(cfg.modules), cfg.rank, latents.shape[-1])
    for block in self.pre_head:
      x = block(x)
    return x

  def decode(self, codes: Array, center: Array | None = None) -> dict[str, dict[str, Array]]:
    """codes [N, L, modules, r, d] minus `center` [L, modules, r, d] -> {module: a [N, L, r, d_in], b}."""
    x = self.head_inputs(codes, center)
    return {m: self.heads[m](x[:, :, i]) for i, m in enumerate(self.config.modules)}

  def head_inputs(self, codes: Array, center: Array | None = None) -> Array:
    """Codes centred and L2-normalised, as the heads read them."""
    x = codes if center is None else codes - center.astype(codes.dtype)
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True) + 1e-12)).astype(x.dtype)

  def gates(self, codes: Array, center: Array | None = None) -> dict[str, Array]:
    """codes [N, L, modules, r, d] -> {module: each chunk's gate per layer [N, L]} (chunk_gate only)."""
    x = self.head_inputs(codes, center)
    return {m: self.heads[m].gate(x[:, :, i]) for i, m in enumerate(self.config.modules)}

  def running_center(self) -> Array | None:
    """The debiased running mean of chunk codes (zero before any update), or None without centring."""
    if self.config.center_momentum is None:
      return None
    return jax.lax.stop_gradient(self.center_ema / jnp.maximum(self.center_weight, 1e-12))

  def bias_block(self) -> dict[str, dict[str, Array]]:
    """The learned, document-independent rank-r block {module: a [L, r, d_in], b [L, r, d_out]}."""
    return {m: self.heads[m].bias_block() for m in self.config.modules}

  def __call__(self, features: Array, mask: Array) -> Array:
    """features [F, N, T, D], mask [N, T] -> latents [F, N, ...]; all F layers in one Perceiver batch."""
    f, n, t, d = features.shape
    latents = self.encode(features.reshape(f * n, t, d), jnp.tile(mask, (f, 1)))
    return latents.reshape(f, n, *latents.shape[1:])


# ----------------------------------------------------------------------------- params


def _init_all(module: DocToLora, features: Array, mask: Array) -> dict[str, dict[str, Array]]:
  """Touches every submodule, so `init` creates every parameter."""
  module.bias_block()
  module.running_center()
  return module.decode(module.codes(module(features, mask)))


def _boxed_params(config: DocToLoraConfig, key: Array) -> PyTree:
  features = jnp.zeros((config.num_feature_layers, 1, 1, config.base.embed_dim), jnp.float32)
  return DocToLora(config).init(key, features, jnp.ones((1, 1), bool), method=_init_all)["params"]


@functools.partial(jax.jit, static_argnames="config")  # one compiled init, not hundreds of eager ops
def init(config: DocToLoraConfig, key: Array) -> PyTree:
  """Random hypernetwork params as a plain pytree; the first adapter they generate is zero."""
  return nn.unbox(_boxed_params(config, key))


def abstract_params(config: DocToLoraConfig) -> PyTree:
  """ShapeDtypeStructs of the params, still boxed with their logical axes (nothing allocated)."""
  return jax.eval_shape(functools.partial(_boxed_params, config), jax.random.key(0))


def param_shapes(config: DocToLoraConfig) -> PyTree:
  return nn.unbox(abstract_params(config))


def param_specs(config: DocToLoraConfig) -> PyTree:
  """Logical PartitionSpecs of the params (map to a mesh with `sharding.logical_sharding`)."""
  return nn.get_partition_spec(abstract_params(config))


def num_params(config: DocToLoraConfig) -> int:
  return _layers.count_params(param_shapes(config))


# ----------------------------------------------------------------------------- generation


def encode_context(base_params: PyTree, tokens: Array, mask: Array, *, config: DocToLoraConfig) -> Array:
  """Frozen base-model activations of chunks [B, T] -> features [F, B, T, D] (no gradient)."""
  base = config.base
  norm_scales = base_params["layers"]["pre_attention_norm"]["scale"]  # [layers, D]
  if config.context_encoder == "early_exit":
    k = config.feature_layer  # only the first k layers run
    hidden = transformer.layer_input(base_params, tokens, k, config=base, mask=mask)[None]
    norm_scales = norm_scales[k:k + 1]
  else:
    hidden = transformer.forward(base_params, tokens, config=base, mask=mask, logits=False).per_layer_hidden
  if config.normalize_features:
    hidden = transformer.rms_norm(hidden, norm_scales[:, None, None, :], base.rms_norm_eps)
  return jax.lax.stop_gradient(hidden)


def chunk_codes(params: PyTree, features: Array, mask: Array, *, config: DocToLoraConfig,
                iterative: bool = False) -> Array:
  """features [F, B, T, D] of B chunks -> codes [B, L, modules, r, d], the heads' inputs before centring.

  `iterative` runs the Perceiver one feature layer at a time (`lax.map`): its activations then
  take 1/F of the memory, and the result is the same.
  """
  chex.assert_rank(features, 4)
  chex.assert_shape(mask, features.shape[1:3])
  chex.assert_equal(features.shape[0], config.num_feature_layers)
  apply = functools.partial(DocToLora(config).apply, {"params": params})
  if iterative:
    latents = jax.lax.map(lambda f: apply(f, mask, method=DocToLora.encode), features)
  else:
    latents = apply(features, mask)
  return apply(latents, method=DocToLora.codes)


def batch_center(codes: Array, chunk_valid: Array) -> Array:
  """Mean code [L, modules, r, d] over the real chunks of codes [N, K, L, modules, r, d] (no gradient)."""
  weights = chunk_valid.astype(codes.dtype).reshape(*chunk_valid.shape, *([1] * (codes.ndim - 2)))
  mean = jnp.sum(codes * weights, axis=(0, 1)) / jnp.maximum(jnp.sum(weights), 1.0)
  return jax.lax.stop_gradient(mean)


def update_center(params: PyTree, batch_mean: Array, *, config: DocToLoraConfig) -> PyTree:
  """One step of the running mean (debiased like Adam's moments): params with new center_* leaves."""
  beta = config.center_momentum
  ema, weight = params[CENTER_EMA], params[CENTER_WEIGHT]
  return {**params, CENTER_EMA: beta * ema + (1 - beta) * batch_mean.astype(ema.dtype),
          CENTER_WEIGHT: beta * weight + (1 - beta)}


def recompute_center(params: PyTree, base_params: PyTree, tokens: Array, mask: Array, *, config: DocToLoraConfig,
                     batch_size: int = 16) -> PyTree:
  """Params whose running mean is the exact mean code of these chunked documents [N, K, T] under
  these params, as batch-norm statistics are recalibrated after training: a running mean trails
  codes that move, and the codes' per-document parts are small next to their common part."""
  if config.center_momentum is None:
    raise ValueError("this hypernetwork does not centre its codes (center_momentum=None): nothing to recompute")
  total, count = 0.0, 0
  for start in range(0, tokens.shape[0], batch_size):
    batch_tokens, batch_mask = tokens[start:start + batch_size], mask[start:start + batch_size]
    chunks = int(jnp.sum(jnp.any(batch_mask, axis=-1)))
    total = total + chunks * _batch_mean_code(params, base_params, batch_tokens, batch_mask, config=config)
    count += chunks
  if count == 0:
    raise ValueError("recompute_center needs at least one non-empty document")
  return {**params, CENTER_EMA: (total / count).astype(params[CENTER_EMA].dtype),
          CENTER_WEIGHT: jnp.ones_like(params[CENTER_WEIGHT])}


@functools.partial(jax.jit, static_argnames="config")
def _batch_mean_code(params: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                     config: DocToLoraConfig) -> Array:
  return document_adapters(params, base_params, tokens, mask, config=config, center_on_batch=True).code_mean


def combine(params: PyTree, chunk_weights: dict[str, dict[str, Array]], chunk_valid: Array, *,
            config: DocToLoraConfig) -> lora.LoraAdapter:
  """Per-chunk factors [N, K, L, r, d] -> one adapter per document [N, L, K*r + r, d].

  Chunks are concatenated along the rank axis in document order, then the bias block. Chunk
  slots that a shorter document does not fill (chunk_valid [N, K] False) become exact zeros.
  """
  bias = DocToLora(config).apply({"params": params}, method=DocToLora.bias_block)
  weights = {}
  for m, ab in chunk_weights.items():
    weights[m] = {}
    for key, w in ab.items():
      n, k, layers, r, d = w.shape
      w = jnp.where(chunk_valid[:, :, None, None, None], w, 0.0)
      w = jnp.transpose(w, (0, 2, 1, 3, 4)).reshape(n, layers, k * r, d)
      weights[m][key] = jnp.concatenate([w, jnp.broadcast_to(bias[m][key], (n, layers, r, d))], axis=-2)
  return lora.LoraAdapter(weights, config.scaling)


class GeneratedAdapters(NamedTuple):
  """What `document_adapters` returns."""

  adapter: lora.LoraAdapter  # one per document [N, L, K*r + r, d]
  code_mean: Array | None  # the batch's mean code (center_on_batch only), for `update_center`
  gates: dict[str, Array] | None  # chunk_gate only: {module: gate [N, K, L]}, 0 on empty chunk slots


def document_adapters(params: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                      config: DocToLoraConfig, iterative: bool = False,
                      center_on_batch: bool = False) -> GeneratedAdapters:
  """Chunked documents tokens/mask [N, K, T] -> their adapters, and what training needs besides.

  Codes are centred on the running mean, or with `center_on_batch` (meta-training) on the mean
  of this batch's chunks, which is then returned for `update_center` (otherwise None).
  """
  chex.assert_rank(tokens, 3)
  chex.assert_equal_shape([tokens, mask])
  n, k, t = tokens.shape
  flat_tokens, flat_mask = tokens.reshape(n * k, t), mask.reshape(n * k, t)
  features = encode_context(base_params, flat_tokens, flat_mask, config=config)
  codes = chunk_codes(params, features, flat_mask, config=config, iterative=iterative)
  chunk_valid = mask.any(axis=-1)
  apply = functools.partial(DocToLora(config).apply, {"params": params})
  mean = None
  if config.center_momentum is not None and center_on_batch:
    center = mean = batch_center(codes.reshape(n, k, *codes.shape[1:]), chunk_valid)
  else:
    center = apply(method=DocToLora.running_center)
  weights = apply(codes, center, method=DocToLora.decode)
  weights = jax.tree.map(lambda w: w.reshape(n, k, *w.shape[1:]), weights)
  gates = None
  if config.chunk_gate:  # the heads apply them; recomputed here (one small einsum) to be reported
    gates = {m: jnp.where(chunk_valid[:, :, None], g.reshape(n, k, -1), 0.0)
             for m, g in apply(codes, center, method=DocToLora.gates).items()}
  return GeneratedAdapters(combine(params, weights, chunk_valid, config=config), mean, gates)


@functools.partial(jax.jit, static_argnames="config")
def chunk_gates(params: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                config: DocToLoraConfig) -> dict[str, Array]:
  """Chunked documents tokens/mask [N, K, T] -> {module: gate [N, K, L]}: how much of each chunk's
  B the adapter keeps (`chunk_gate`; 0 for empty chunk slots and, with `chunk_gate_cut`, for
  dropped chunks). Shows which chunks a document's adapter is made of."""
  if not config.chunk_gate:
    raise ValueError("this hypernetwork has no chunk gates (chunk_gate=False)")
  return document_adapters(params, base_params, tokens, mask, config=config).gates


@functools.partial(jax.jit, static_argnames=("config", "iterative"))
def adapter_from_chunks(params: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                        config: DocToLoraConfig, iterative: bool = False) -> lora.LoraAdapter:
  """Chunked documents tokens/mask [N, K, T] -> adapters [N, L, K*r + r, d], all chunks in one batch."""
  return document_adapters(params, base_params, tokens, mask, config=config, iterative=iterative).adapter


# ----------------------------------------------------------------------------- documents


@dataclasses.dataclass(frozen=True)
class Chunks:
  """Documents split into chunks: tokens [N, K, T] int32 and mask [N, K, T] bool (True = token)."""

  tokens: np.ndarray
  mask: np.ndarray


def _bucket(length: int, cap: int) -> int:
  """Chunk arrays are padded to a power of two (at least 16, at most `cap`) to limit recompiles."""
  return min(cap, max(16, 1 << (length - 1).bit_length()))


def chunk_documents(documents: Sequence[Sequence[int]], *, config: DocToLoraConfig,
                    num_chunks: int | None = None) -> Chunks:
  """Token ids (no BOS) of N documents -> BOS-prefixed, right-padded chunks of at most `chunk_len`.

  K is the largest chunk count in the batch, or `num_chunks` (fixed shapes for training).
  """
  if not documents:
    raise ValueError("no documents given")
  per_chunk = config.chunk_len - 1
  split = []
  for i, ids in enumerate(documents):
    ids = list(ids)
    if not ids:
      raise ValueError(f"document {i} is empty: it has no tokens")
    count = math.ceil(len(ids) / per_chunk)
    if count > config.max_chunks:
      raise ValueError(
          f"document {i} has {len(ids)} tokens, {count} chunks of {per_chunk}; the configured maximum is "
          f"max_chunks={config.max_chunks} ({config.max_chunks * per_chunk} tokens)")
    split.append([ids[j:j + per_chunk] for j in range(0, len(ids), per_chunk)])
  return pack_chunks(split, config=config, num_chunks=num_chunks)


def pack_chunks(split: Sequence[Sequence[Sequence[int]]], *, config: DocToLoraConfig,
                num_chunks: int | None = None) -> Chunks:
  """Documents already split into chunks of token ids (no BOS, each at most chunk_len - 1) -> `Chunks`."""
  if any(len(c) > config.chunk_len - 1 for s in split for c in s):
    raise ValueError(f"a chunk holds more than chunk_len - 1 = {config.chunk_len - 1} tokens")
  k = max(len(s) for s in split) if num_chunks is None else num_chunks
  if k < max(len(s) for s in split):
    raise ValueError(f"num_chunks={num_chunks} is fewer than the {max(len(s) for s in split)} chunks needed")
  t = _bucket(1 + max(len(c) for s in split for c in s), config.chunk_len)
  tokens = np.full((len(split), k, t), config.base.pad_id, np.int32)
  mask = np.zeros((len(split), k, t), bool)
  for i, chunks in enumerate(split):
    for j, chunk in enumerate(chunks):
      tokens[i, j, :len(chunk) + 1] = [config.base.bos_id, *chunk]
      mask[i, j, :len(chunk) + 1] = True
  return Chunks(tokens, mask)


def internalize(params: PyTree, base_params: PyTree, documents: str | Sequence[str], *,
                config: DocToLoraConfig, tokenizer: TextTokenizer, iterative: bool = False) -> lora.LoraAdapter:
  """Document(s) -> adapter: tokenize, chunk, encode, generate.

  One string gives an unbatched adapter [L, K*r + r, d]; a list gives one per document
  [N, L, K*r + r, d]. Time it with `jax.block_until_ready(internalize(...))`.
  """
  single = isinstance(documents, str)
  texts = [documents] if single else list(documents)
  for i, text in enumerate(texts):
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"document {i} is empty or not a string: {text!r}")
  chunks = chunk_documents([tokenizer.encode(text, add_bos=False) for text in texts], config=config)
  adapter = adapter_from_chunks(params, base_params, jnp.asarray(chunks.tokens), jnp.asarray(chunks.mask),
                                config=config, iterative=iterative)
  return lora.take(adapter, 0) if single else adapter
