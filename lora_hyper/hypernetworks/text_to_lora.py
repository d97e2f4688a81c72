"""Text-to-LoRA: an embedded task description becomes a LoRA adapter in one forward pass.

Every (target module m, layer l) pair is one batch item, with input
  [TaskEncoder(e) (latent/2), LN(LayerEmb[l]) (latent/4), LN(ModuleEmb[m]) (latent/4)]
which the shared body (mixer, one residual block) turns into a latent; a head variant then
emits the factors:
  L: one linear head per module emits all of A and B, r * (d_in + d_out) outputs.
  M: one head per module emits r * max(d_in, d_out) and runs twice, once per factor, told
     apart by learned A/B output embeddings.
  S: as M, but emits one rank row of max(d_in, d_out) per call; the row is given by a learned
     rank embedding and all r rows run as one batch.
Heads start with zero weights and biases equal to PEFT's default LoRA init (A Kaiming-uniform,
B zero), so the first generated adapter is zero. Scaling is rsLoRA: alpha / sqrt(r).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from lora_hyper.adapters import lora
from lora_hyper.hypernetworks import _common, _layers
from lora_hyper.hypernetworks.task_encoders import TaskEncoder
from lora_hyper.model.config import MODULES, GemmaConfig

Array = jax.Array
PyTree = Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextToLoraConfig:
  """Sizes of a Text-to-LoRA hypernetwork for one base model. Build with `t2l_l` & co."""

  base: GemmaConfig
  head: str = "L"  # "L", "M" or "S"
  target_modules: tuple[str, ...] = ("q", "v")
  rank: int = 8
  alpha: float = 16.0
  emb_dim: int = 1024  # task-embedding width (gte-large-en-v1.5: 1024)
  latent_dim: int = 128  # body width: task latent/2 + layer latent/4 + module latent/4
  head_in_dim: int = 512
  mlp_factor: int = 4
  dropout: float = 0.05

  def __post_init__(self):
    if self.head not in HEADS:
      raise ValueError(f"head must be one of {sorted(HEADS)}, got {self.head!r}")
    if not self.target_modules or any(m not in MODULES for m in self.target_modules):
      raise ValueError(f"target_modules must be a non-empty subset of {MODULES}, got {self.target_modules}")
    if self.latent_dim % 4:
      raise ValueError(f"latent_dim={self.latent_dim} must be a multiple of 4")

  @property
  def scaling(self) -> float:
    """rsLoRA: alpha / sqrt(r)."""
    return self.alpha / math.sqrt(self.rank)

  @property
  def modules(self) -> tuple[str, ...]:
    return tuple(m for m in MODULES if m in self.target_modules)

  def replace(self, **changes: Any) -> "TextToLoraConfig":
    return _common.override(self, changes)


def t2l_l(base: GemmaConfig, **overrides: Any) -> TextToLoraConfig:
  """Published T2L-L (about 55M params on Mistral-7B): rank 8 on q/v, latent 128, head input 512."""
  return TextToLoraConfig(base=base, head="L").replace(**overrides)


def t2l_m(base: GemmaConfig, **overrides: Any) -> TextToLoraConfig:
  """Published T2L-M (about 34M on Mistral-7B)."""
  return TextToLoraConfig(base=base, head="M").replace(**overrides)


def t2l_s(base: GemmaConfig, **overrides: Any) -> TextToLoraConfig:
  """Published T2L-S (about 5M on Mistral-7B)."""
  return TextToLoraConfig(base=base, head="S").replace(**overrides)


def t2l_small(base: GemmaConfig, head: str = "L", **overrides: Any) -> TextToLoraConfig:
  """For gemma3_270m with the base model itself as the description encoder (emb_dim = d_model)."""
  return TextToLoraConfig(base=base, head=head, emb_dim=base.embed_dim).replace(**overrides)


def t2l_tiny(base: GemmaConfig, head: str = "L", **overrides: Any) -> TextToLoraConfig:
  """A small hypernetwork for tests."""
  config = TextToLoraConfig(base=base, head=head, rank=2, emb_dim=base.embed_dim, latent_dim=16, head_in_dim=32)
  return config.replace(**overrides)


# ----------------------------------------------------------------------------- body


def _linear(features: int, axes: tuple[str, str], name: str) -> _layers.Dense:
  return _layers.dense(features, axes, use_bias=True, name=name)


class Mixer(nn.Module):
  """Dropout, Linear d->4d, SiLU, Dropout, Linear 4d->d, SiLU, Dropout (no residual)."""

  config: TextToLoraConfig

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    d, drop = x.shape[-1], nn.Dropout(self.config.dropout, deterministic=deterministic)
    x = jax.nn.silu(_linear(d * self.config.mlp_factor, ("hyper_embed", "hyper_mlp"), "up")(drop(x)))
    return drop(jax.nn.silu(_linear(d, ("hyper_mlp", "hyper_embed"), "down")(drop(x))))


class ResidualMLP(nn.Module):
  """x + [LN, Linear d->4d, SiLU, Dropout, Linear 4d->d, SiLU, Dropout]."""

  config: TextToLoraConfig

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    d, drop = x.shape[-1], nn.Dropout(self.config.dropout, deterministic=deterministic)
    h = _layers.LayerNorm(name="norm")(x)
    h = drop(jax.nn.silu(_linear(d * self.config.mlp_factor, ("hyper_embed", "hyper_mlp"), "up")(h)))
    return x + drop(jax.nn.silu(_linear(d, ("hyper_mlp", "hyper_embed"), "down")(h)))


class HeadInput(nn.Module):
  """LN, Linear d->4d, SiLU, Dropout, Linear 4d->head_in, SiLU."""

  config: TextToLoraConfig

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    cfg = self.config
    h = _linear(x.shape[-1] * cfg.mlp_factor, ("hyper_embed", "hyper_mlp"), "up")(_layers.LayerNorm(name="norm")(x))
    h = nn.Dropout(cfg.dropout, deterministic=deterministic)(jax.nn.silu(h))
    return jax.nn.silu(_linear(cfg.head_in_dim, ("hyper_mlp", "hyper_embed"), "down")(h))


def _kaiming_a(rank: int, d_in: int, width: int, scale: float) -> Callable[..., Array]:
  """PEFT's lora_A init U(+-1/sqrt(d_in)) [rank, d_in], times `scale`, zero-padded to `width`."""

  def init(key, shape, dtype=jnp.float32):
    a = _layers.uniform_fan_in(d_in)(key, (rank, d_in), dtype) * scale
    return jnp.pad(a, ((0, 0), (0, width - d_in))).reshape(shape)

  return init


# ----------------------------------------------------------------------------- heads
# Every head maps the body's output h [B, M, L, d] (M target modules, L layers) to
# {module: (a [B, L, r, d_in], b [B, L, r, d_out])}. The shared MLPs run once on all modules;
# only the final linear maps differ per module.


class LHead(nn.Module):
  """Per module: head_in -> A [r, d_in] and B [r, d_out] in one linear map."""

  config: TextToLoraConfig

  def setup(self):
    cfg = self.config
    self.mlp2, self.mlp3 = ResidualMLP(cfg), HeadInput(cfg)
    self.out = {m: _LOut(cfg.rank, *cfg.base.module_shape(m)) for m in cfg.modules}

  def __call__(self, h: Array, deterministic: bool) -> dict[str, tuple[Array, Array]]:
    x = self.mlp3(self.mlp2(h, deterministic), deterministic)
    return {m: self.out[m](x[:, i]) for i, m in enumerate(self.config.modules)}


class _LOut(nn.Module):
  rank: int
  d_in: int
  d_out: int

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    r, zeros = self.rank, nn.initializers.zeros_init()
    axes_a, axes_b = ("hyper_embed", "lora_rank", "lora_in"), ("hyper_embed", "lora_rank", "lora_out")
    ka = _layers.param(self, "kernel_a", zeros, (x.shape[-1], r, self.d_in), axes_a)
    kb = _layers.param(self, "kernel_b", zeros, (x.shape[-1], r, self.d_out), axes_b)
    ba = _layers.param(self, "bias_a", _kaiming_a(r, self.d_in, self.d_in, 1.0), (r, self.d_in), axes_a[1:])
    bb = _layers.param(self, "bias_b", zeros, (r, self.d_out), axes_b[1:])
    return jnp.tensordot(x, ka, axes=1) + ba, jnp.tensordot(x, kb, axes=1) + bb


class _SharedOut(nn.Module):
  """The M/S output map head_in -> [*rows, width] with one bias per factor (A: Kaiming, B: zero).

  The reference shares one bias between the A and B passes, so its first B equals the scaled
  A init; separate biases keep the first adapter exactly zero at +r*width params per module.
  """

  rows: tuple[int, ...]  # (r,) for M, () for S
  d_in: int
  d_out: int
  a_scale: float

  @nn.compact
  def __call__(self, x_a: Array, x_b: Array) -> tuple[Array, Array]:
    zeros, lead = nn.initializers.zeros_init(), ("lora_rank",) * len(self.rows)
    shape = (*self.rows, max(self.d_in, self.d_out))
    kernel = _layers.param(self, "kernel", zeros, (x_a.shape[-1], *shape), ("hyper_embed", *lead, "lora_features"))
    rank = self.rows[0] if self.rows else 1
    bias_a = _layers.param(self, "bias_a", _kaiming_a(rank, self.d_in, shape[-1], self.a_scale), shape,
                           (*lead, "lora_features"))
    bias_b = _layers.param(self, "bias_b", zeros, shape, (*lead, "lora_features"))
    a = jnp.tensordot(x_a, kernel, axes=1) + bias_a
    b = jnp.tensordot(x_b, kernel, axes=1) + bias_b
    return a[..., :self.d_in], b[..., :self.d_out]


class _FactorEmbedding(nn.Module):
  """LN(learned output embedding) per (module, factor): tells the shared head to emit A or B."""

  num_modules: int
  dim: int

  @nn.compact
  def __call__(self) -> Array:  # [M, 2, d]
    emb = [_layers.param(self, f"emb_{f}", _layers.normal(1.0), (self.num_modules, self.dim),
                         ("lora_modules", "hyper_embed")) for f in ("a", "b")]
    return _layers.LayerNorm(name="norm")(jnp.stack(emb, axis=1))


class MHead(nn.Module):
  """Per module: head_in -> r * max(d_in, d_out), run once for A and once for B."""

  config: TextToLoraConfig

  def setup(self):
    cfg = self.config
    self.mlp2, self.mlp3 = ResidualMLP(cfg), HeadInput(cfg)
    self.out_emb = _FactorEmbedding(len(cfg.modules), cfg.latent_dim)
    # The reference scales the A bias by 1/sqrt(2) to match the L head's gradient scale.
    self.out = {m: _SharedOut((cfg.rank,), *cfg.base.module_shape(m), 1 / math.sqrt(2)) for m in cfg.modules}

  def __call__(self, h: Array, deterministic: bool) -> dict[str, tuple[Array, Array]]:
    x = self.mlp2(h[:, :, None] + self.out_emb()[None, :, :, None, :], deterministic)  # [B, M, 2, L, d]
    x = self.mlp3(x, deterministic)
    return {m: self.out[m](x[:, i, 0], x[:, i, 1]) for i, m in enumerate(self.config.modules)}


class SHead(nn.Module):
  """Per module: head_in -> one rank row of max(d_in, d_out); all r rows (rank embeddings) batched."""

  config: TextToLoraConfig

  def setup(self):
    cfg = self.config
    self.mlp2, self.mlp3 = ResidualMLP(cfg), HeadInput(cfg)
    self.out_emb = _FactorEmbedding(len(cfg.modules), cfg.latent_dim)
    self.rank_emb = _RankEmbedding(cfg.rank, cfg.latent_dim)
    # The reference scales the A bias by 1/sqrt(2 r): every rank row starts from the same bias.
    self.out = {m: _SharedOut((), *cfg.base.module_shape(m), 1 / math.sqrt(2 * cfg.rank)) for m in cfg.modules}

  def __call__(self, h: Array, deterministic: bool) -> dict[str, tuple[Array, Array]]:
    rows = self.mlp2(self.rank_emb(), deterministic)  # [r, d]
    x = self.mlp2(h[:, :, None] + self.out_emb()[None, :, :, None, :], deterministic)  # [B, M, 2, L, d]
    x = self.mlp3(x[..., None, :] + rows, deterministic)  # [B, M, 2, L, r, head_in]
    return {m: self.out[m](x[:, i, 0], x[:, i, 1]) for i, m in enumerate(self.config.modules)}


class _RankEmbedding(nn.Module):
  rank: int
  dim: int

  @nn.compact
  def __call__(self) -> Array:
    emb = _layers.param(self, "embedding", _layers.normal(1.0), (self.rank, self.dim), ("lora_rank", "hyper_embed"))
    return _layers.LayerNorm(name="norm")(emb)


HEADS: dict[str, type[nn.Module]] = {"L": LHead, "M": MHead, "S": SHead}
PRESETS = {"t2l_l": t2l_l, "t2l_m": t2l_m, "t2l_s": t2l_s, "t2l_small": t2l_small, "t2l_tiny": t2l_tiny}


# ----------------------------------------------------------------------------- model


class TextToLora(nn.Module):
  """task embeddings [B, E] -> {module: a [B, L, r, d_in], b [B, L, r, d_out]}."""

  config: TextToLoraConfig

  @nn.compact
  def __call__(self, task_emb: Array, deterministic: bool = True) -> dict[str, dict[str, Array]]:
    cfg = self.config
    chex.assert_rank(task_emb, 2)
    b, m, layers, quarter = task_emb.shape[0], len(cfg.modules), cfg.base.num_layers, cfg.latent_dim // 4
    task = _layers.dense(cfg.latent_dim // 2, ("hyper_in", "hyper_embed"), use_bias=True, name="task_encoder")
    task = _layers.LayerNorm(name="task_norm")(task(task_emb))
    layer_emb = _layers.param(self, "layer_embedding", _layers.normal(1.0), (layers, quarter),
                              ("layers", "hyper_embed"))
    layer_emb = _layers.LayerNorm(name="layer_norm")(layer_emb)
    module_emb = _layers.param(self, "module_embedding", _layers.normal(1.0), (m, quarter),
                               ("lora_modules", "hyper_embed"))
    module_emb = _layers.LayerNorm(name="module_norm")(module_emb)
    # One batch of every (module, layer) pair: the reference's one call per module, batched.
    x = jnp.concatenate([
        jnp.broadcast_to(task[:, None, None, :], (b, m, layers, task.shape[-1])),
        jnp.broadcast_to(layer_emb[None, None], (b, m, layers, quarter)),
        jnp.broadcast_to(module_emb[None, :, None], (b, m, layers, quarter)),
    ], axis=-1)
    h = ResidualMLP(cfg, name="mlp1")(Mixer(cfg, name="mixer")(x, deterministic), deterministic)
    factors = HEADS[cfg.head](cfg, name="head")(h, deterministic)
    return {mod: {"a": a, "b": bb} for mod, (a, bb) in factors.items()}


# ----------------------------------------------------------------------------- variables


def boxed_variables(config: TextToLoraConfig, key: Array) -> PyTree:
  """Random variables {"params": ...}, boxed with their logical axes; the first adapter is zero."""
  return dict(TextToLora(config).init(key, jnp.zeros((1, config.emb_dim), jnp.float32)))


init, abstract_variables, variable_shapes, param_shapes, param_specs, num_params = (
    _common.variable_functions(boxed_variables))


# ----------------------------------------------------------------------------- generation


@functools.partial(jax.jit, static_argnames=("config", "deterministic"))
def generate(variables: PyTree, task_emb: Array, *, config: TextToLoraConfig, deterministic: bool = True,
             dropout_rng: Array | None = None) -> lora.LoraAdapter:
  """Task embeddings [B, E] -> adapters [B, L, r, d]; dropout only with deterministic=False.
  `variables`: {"params": ...}, as `init` and `load_hypernetwork(...).variables` give."""
  chex.assert_shape(task_emb, (None, config.emb_dim))
  rngs = None if deterministic else {"dropout": dropout_rng}
  weights = TextToLora(config).apply(variables, task_emb, deterministic, rngs=rngs)
  return lora.LoraAdapter(weights, config.scaling)


def generate_adapter(variables: PyTree, descriptions: str | Sequence[str], *, config: TextToLoraConfig,
                     encoder: TaskEncoder) -> lora.LoraAdapter:
  """Description(s) -> adapter. One string gives an unbatched adapter, a list one per description."""
  single = isinstance(descriptions, str)
  texts = [descriptions] if single else list(descriptions)
  if not texts:
    raise ValueError("no task descriptions given")
  for i, text in enumerate(texts):
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"task description {i} is empty or not a string: {text!r}")
  emb = jnp.asarray(encoder(texts), jnp.float32)
  if emb.shape != (len(texts), config.emb_dim):
    raise ValueError(f"the task encoder gave embeddings of shape {emb.shape}; this hypernetwork needs "
                     f"({len(texts)}, emb_dim={config.emb_dim})")
  adapter = generate(variables, emb, config=config)
  return lora.take(adapter, 0) if single else adapter
