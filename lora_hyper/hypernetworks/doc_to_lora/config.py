"""Doc-to-LoRA's configuration: the published design, our experimental additions apart, and presets."""

from __future__ import annotations

import dataclasses
from typing import Any

from lora_hyper.hypernetworks import _common
from lora_hyper.hypernetworks.perceiver import PerceiverConfig
from lora_hyper.model.config import MODULES, GemmaConfig

CONTEXT_ENCODERS = ("per_layer_activations", "early_exit")
# What `per_layer_activations` reads for the last layer: "final_norm" (published: the official
# encoder's last hidden state, i.e. Z_{L-1} through the base model's final RMSNorm) or "residual"
# (the raw Z_{L-1}, what hypernetworks saved before this option existed read).
LAST_FEATURES = ("final_norm", "residual")
ZERO_B_INITS = ("scale", "head")
GENERATED_FACTORS = ("ab", "b")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experimental:
  """Additions to the published design, all off by default (the published hypernetwork). Each one is
  there because a shipped or reported result needs it; the experiment that motivates it is named."""

  # Read Z_l through layer l's pre-attention RMSNorm: one channel holds most of a raw Gemma residual
  # stream's norm (experiments/README.md, "What was wrong, and what changed").
  normalize_features: bool = False
  # Subtract the mean chunk code before the L2 normalisation: the batch's in meta-training, a
  # running mean (`code_stats`) in generation (the same section).
  center_momentum: float | None = None
  # What makes the first generated B zero: "scale" (published: scale_b = 0) or "head" (B head = 0,
  # scale_b = 1, so the head learns from the first step; experiments/README.md, the ablation).
  zero_b_init: str = "scale"
  # "ab" (published): A and B from each chunk's code. "b": B only; every chunk's A is the bias
  # block's learned A, so the adapter is linear in the code (experiments/README.md, "Generating B only").
  generated_factors: str = "ab"
  # A learned gate per chunk, layer and module scales each chunk's B, 1 at init (experiments/README.md,
  # "Many chunks: a chunk gate and the paper's second stage").
  chunk_gate: bool = False
  # Drop a chunk whose gate is below 1 (straight-through in training; "A cut instead of a dimmer").
  chunk_gate_cut: bool = False

  def __post_init__(self):
    if self.zero_b_init not in ZERO_B_INITS:
      raise ValueError(f"zero_b_init must be one of {ZERO_B_INITS}, got {self.zero_b_init!r}")
    if self.generated_factors not in GENERATED_FACTORS:
      raise ValueError(f"generated_factors must be one of {GENERATED_FACTORS}, got {self.generated_factors!r}")
    if self.chunk_gate_cut and not self.chunk_gate:
      raise ValueError("chunk_gate_cut=True needs chunk_gate=True")
    if self.center_momentum is not None and not 0 <= self.center_momentum < 1:
      raise ValueError(f"center_momentum must be in [0, 1) or None, got {self.center_momentum}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DocToLoraConfig:
  """Sizes of a Doc-to-LoRA hypernetwork for one base model; the defaults are the published design.
  Build with `d2l_paper` & co."""

  base: GemmaConfig
  perceiver: PerceiverConfig = PerceiverConfig()
  target_modules: tuple[str, ...] = ("down",)
  rank: int = 8
  alpha: float | None = None  # None: 2 * rank ** 1.5, applied directly, as published.
  context_encoder: str = "per_layer_activations"
  exit_layer: int | None = None  # early_exit only; None: base.num_layers // 4.
  pre_head_blocks: int = 1  # per-layer residual MLP blocks before the heads
  pre_head_mlp_dim: int = 2048
  last_feature: str = "final_norm"
  chunk_len: int = 8192  # tokens per chunk, BOS included
  max_chunks: int = 16
  # Token ids around each chunk. Empty (ours): every chunk is BOS + up to chunk_len - 1 tokens. Set
  # (the published pipeline, e.g. Gemma's chat turn `<bos><start_of_turn>user\n\n\n` ...
  # `<end_of_turn>\n<start_of_turn>model\n`): the templated document is cut into
  # ceil(len / chunk_len) equal pieces and each piece is completed to a templated turn.
  chunk_prefix: tuple[int, ...] = ()
  chunk_suffix: tuple[int, ...] = ()
  experimental: Experimental = Experimental()

  def __post_init__(self):
    if not self.target_modules or any(m not in MODULES for m in self.target_modules):
      raise ValueError(f"target_modules must be a non-empty subset of {MODULES}, got {self.target_modules}")
    if self.context_encoder not in CONTEXT_ENCODERS:
      raise ValueError(f"context_encoder must be one of {CONTEXT_ENCODERS}, got {self.context_encoder!r}")
    if self.last_feature not in LAST_FEATURES:
      raise ValueError(f"last_feature must be one of {LAST_FEATURES}, got {self.last_feature!r}")
    if bool(self.chunk_prefix) != bool(self.chunk_suffix):
      raise ValueError(f"chunk_prefix and chunk_suffix are set together or not at all, got "
                       f"{self.chunk_prefix} and {self.chunk_suffix}")
    if not 0 <= self.feature_layer < self.base.num_layers:
      raise ValueError(f"exit_layer={self.exit_layer} is outside the base model's {self.base.num_layers} layers")
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
  def templated(self) -> bool:
    """Whether chunks are chat-templated turns (`chunk_prefix`/`chunk_suffix`) rather than BOS + tokens."""
    return bool(self.chunk_prefix)

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
    """A copy with fields replaced; a dict for `perceiver` or `experimental` replaces fields of it."""
    return _common.override(self, changes)


def d2l_paper(base: GemmaConfig, **overrides: Any) -> DocToLoraConfig:
  """The published hypernetwork (315,237,792 params on gemma-2-2b): width 512, 8 latents, 9 encoder
  blocks and 1 decoder block, 16x128 queries, 4 KV heads, MLP 2048, rank 8 on down_proj, reading every
  layer's activations (the last through the final norm). Sakana's checkpoint imports to exactly this
  (`doc_to_lora.sakana`), with their chat-templated chunks (`chunk_prefix`/`chunk_suffix`)."""
  return DocToLoraConfig(base=base).replace(**overrides)


def d2l_small(base: GemmaConfig, **overrides: Any) -> DocToLoraConfig:
  """For gemma3_270m (~32M params, 12% of the base as in the paper): width 256, 4 encoder blocks,
  8 query heads x 64, 2 KV heads, MLP 1024; rank 8 on down_proj; 1024-token chunks, up to 32."""
  perceiver = PerceiverConfig(latent_dim=256, num_latents=8, num_blocks=4, num_heads=8, num_kv_heads=2,
                              head_dim=64, mlp_dim=1024)
  config = DocToLoraConfig(base=base, perceiver=perceiver, pre_head_mlp_dim=1024, chunk_len=1024, max_chunks=32)
  return config.replace(**overrides)


def d2l_compact(base: GemmaConfig, **overrides: Any) -> DocToLoraConfig:
  """Sized to ship with gemma3_270m (~12M params; 7.3M, 15 MB in bfloat16 with B-only heads):
  width 128, 4 encoder blocks, 4 query heads x 32, 2 KV heads, MLP 512; rank 8 on down_proj."""
  perceiver = PerceiverConfig(latent_dim=128, num_latents=8, num_blocks=4, num_heads=4, num_kv_heads=2,
                              head_dim=32, mlp_dim=512, input_mlp_factor=2)
  config = DocToLoraConfig(base=base, perceiver=perceiver, pre_head_mlp_dim=512, chunk_len=1024, max_chunks=32)
  return config.replace(**overrides)


def d2l_tiny(base: GemmaConfig, **overrides: Any) -> DocToLoraConfig:
  """A few-thousand-parameter hypernetwork for tests."""
  perceiver = PerceiverConfig(latent_dim=16, num_latents=4, num_blocks=2, num_heads=4, num_kv_heads=2, head_dim=8,
                              mlp_dim=32, input_mlp_factor=2)
  config = DocToLoraConfig(base=base, perceiver=perceiver, rank=2, pre_head_mlp_dim=32, chunk_len=8, max_chunks=6)
  return config.replace(**overrides)


PRESETS = {"d2l_paper": d2l_paper, "d2l_small": d2l_small, "d2l_compact": d2l_compact, "d2l_tiny": d2l_tiny}
