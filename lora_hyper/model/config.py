"""Gemma configurations: one frozen dataclass per family, built from presets, HF or GGUF."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, ClassVar, Mapping

import jax.numpy as jnp

# Target modules an adapter can touch, in the order of the forward pass.
ATTENTION_MODULES = ("q", "k", "v", "o")
MLP_MODULES = ("gate", "up", "down")
MODULES = ATTENTION_MODULES + MLP_MODULES


@dataclasses.dataclass(frozen=True, kw_only=True)
class GemmaConfig:
  """Architecture of a Gemma decoder. Family subclasses set the family's defaults."""

  family: ClassVar[str] = "gemma"

  vocab_size: int
  num_layers: int
  embed_dim: int
  mlp_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  query_pre_attn_scalar: float
  sliding_window: int
  # One entry per layer: True for sliding-window (local) attention, False for global.
  sliding_layers: tuple[bool, ...]
  rope_base_global: float
  rope_base_local: float
  rope_scale_global: float = 1.0  # linear RoPE scaling ("rope_scaling.factor") on global layers.
  use_qk_norm: bool
  attn_logit_softcap: float | None
  final_logit_softcap: float | None
  rms_norm_eps: float = 1e-6
  max_seq_len: int = 32_768
  bos_id: int = 2
  eos_id: int = 1
  pad_id: int = 0
  # dtype policy: params are stored in `param_dtype`, matmuls run in `dtype`.
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False

  def __post_init__(self):
    if len(self.sliding_layers) != self.num_layers:
      raise ValueError(
          f"sliding_layers has {len(self.sliding_layers)} entries for {self.num_layers} layers"
      )
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16"):
        raise ValueError(f"{name} must be 'float32' or 'bfloat16', got {getattr(self, name)!r}")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def module_shape(self, module: str) -> tuple[int, int]:
    """(d_in, d_out) of a target module's linear map, as in the HF `nn.Linear`s."""
    d, q, kv, f = self.embed_dim, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, self.mlp_dim
    shapes = {"q": (d, q), "k": (d, kv), "v": (d, kv), "o": (q, d), "gate": (d, f), "up": (d, f), "down": (f, d)}
    if module not in shapes:
      raise ValueError(f"unknown target module {module!r}; expected one of {MODULES}")
    return shapes[module]

  def replace(self, **changes: Any) -> "GemmaConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return {"family": self.family, **dataclasses.asdict(self)}


def _alternating(num_layers: int, period: int) -> tuple[bool, ...]:
  # Every `period`-th layer (1-based) is global, the others slide, as in HF's `layer_types`.
  return tuple(bool((i + 1) % period) for i in range(num_layers))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gemma2Config(GemmaConfig):
  """Gemma 2: local/global alternation, attention and final logit soft-capping."""

  family: ClassVar[str] = "gemma2"

  query_pre_attn_scalar: float = 256
  sliding_window: int = 4096
  rope_base_global: float = 10_000.0
  rope_base_local: float = 10_000.0
  use_qk_norm: bool = False
  attn_logit_softcap: float | None = 50.0
  final_logit_softcap: float | None = 30.0
  max_seq_len: int = 8192


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gemma3Config(GemmaConfig):
  """Gemma 3: qk-norm, 5:1 local:global layers with their own RoPE bases, no soft-capping."""

  family: ClassVar[str] = "gemma3"

  query_pre_attn_scalar: float = 256
  sliding_window: int = 512
  rope_base_global: float = 1_000_000.0
  rope_base_local: float = 10_000.0
  use_qk_norm: bool = True
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None


FAMILIES: dict[str, type[GemmaConfig]] = {"gemma2": Gemma2Config, "gemma3": Gemma3Config}


# ----------------------------------------------------------------------------- presets


def gemma3_270m(**overrides: Any) -> Gemma3Config:
  """The embedded default: google/gemma-3-270m."""
  kw = dict(
      vocab_size=262_144, num_layers=18, embed_dim=640, mlp_dim=2048, num_heads=4, num_kv_heads=1,
      head_dim=256, sliding_layers=_alternating(18, 6),
  )
  return Gemma3Config(**{**kw, **overrides})


def gemma3_1b(**overrides: Any) -> Gemma3Config:
  kw = dict(
      vocab_size=262_144, num_layers=26, embed_dim=1152, mlp_dim=6912, num_heads=4, num_kv_heads=1,
      head_dim=256, sliding_layers=_alternating(26, 6),
  )
  return Gemma3Config(**{**kw, **overrides})


def gemma2_2b(**overrides: Any) -> Gemma2Config:
  kw = dict(
      vocab_size=256_000, num_layers=26, embed_dim=2304, mlp_dim=9216, num_heads=8, num_kv_heads=4,
      head_dim=256, sliding_layers=_alternating(26, 2),
  )
  return Gemma2Config(**{**kw, **overrides})


def tiny_gemma3(**overrides: Any) -> Gemma3Config:
  """A few-layer random Gemma 3 for fast tests: 2 local + 1 global layer, window 8."""
  kw = dict(
      vocab_size=128, num_layers=3, embed_dim=32, mlp_dim=64, num_heads=4, num_kv_heads=2, head_dim=16,
      query_pre_attn_scalar=16, sliding_window=8, sliding_layers=_alternating(3, 3), max_seq_len=256,
  )
  return Gemma3Config(**{**kw, **overrides})


def tiny_gemma2(**overrides: Any) -> Gemma2Config:
  kw = dict(
      vocab_size=128, num_layers=4, embed_dim=32, mlp_dim=64, num_heads=4, num_kv_heads=2, head_dim=16,
      query_pre_attn_scalar=16, sliding_window=8, sliding_layers=_alternating(4, 2), max_seq_len=256,
  )
  return Gemma2Config(**{**kw, **overrides})


PRESETS = {
    "gemma3_270m": gemma3_270m, "gemma3_1b": gemma3_1b, "gemma2_2b": gemma2_2b,
    "tiny_gemma3": tiny_gemma3, "tiny_gemma2": tiny_gemma2,
}


# ----------------------------------------------------------------------------- Hugging Face


def _rope_from_hf(hf: Mapping[str, Any], family: str) -> dict[str, float]:
  """Reads RoPE bases and linear scaling from either config.json generation."""
  defaults = {"gemma2": (10_000.0, 10_000.0), "gemma3": (1_000_000.0, 10_000.0)}[family]
  global_base = hf.get("rope_theta", defaults[0])
  local_base = hf.get("rope_local_base_freq", defaults[1] if family == "gemma3" else global_base)
  scaling = hf.get("rope_scaling") or {}
  params = hf.get("rope_parameters") or {}
  if "full_attention" in params:  # transformers >= 5 layout: one dict per layer type.
    full, local = params["full_attention"], params.get("sliding_attention", {})
    global_base = full.get("rope_theta", global_base)
    local_base = local.get("rope_theta", local_base)
    scaling = full
  elif params:
    global_base = params.get("rope_theta", global_base)
    scaling = params
  rope_type = scaling.get("rope_type", scaling.get("type", "default"))
  if rope_type not in ("default", "linear"):
    raise ValueError(f"unsupported RoPE scaling {rope_type!r}: only 'default' and 'linear' are implemented")
  factor = float(scaling.get("factor", 1.0)) if rope_type == "linear" else 1.0
  return dict(rope_base_global=float(global_base), rope_base_local=float(local_base), rope_scale_global=factor)


def from_hf_config(hf: Mapping[str, Any], **overrides: Any) -> GemmaConfig:
  """Builds the config of a Gemma 2 / Gemma 3 text model from a HF `config.json` dict."""
  if "text_config" in hf:  # Multimodal Gemma 3 checkpoints nest the decoder's config.
    hf = {**hf["text_config"], "model_type": "gemma3_text"}
  model_type = hf.get("model_type", "")
  family = {"gemma2": "gemma2", "gemma3_text": "gemma3", "gemma3": "gemma3"}.get(model_type)
  if family is None:
    raise ValueError(f"unsupported model_type {model_type!r}: expected a Gemma 2 or Gemma 3 text model")
  num_layers = hf["num_hidden_layers"]
  if hf.get("layer_types"):
    sliding = tuple(t == "sliding_attention" for t in hf["layer_types"])
  else:
    period = 2 if family == "gemma2" else hf.get("sliding_window_pattern", 6)
    sliding = _alternating(num_layers, period)
  eos = hf.get("eos_token_id", 1)
  kw = dict(
      vocab_size=hf["vocab_size"], num_layers=num_layers, embed_dim=hf["hidden_size"],
      mlp_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"],
      num_kv_heads=hf["num_key_value_heads"], head_dim=hf["head_dim"],
      query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256), sliding_window=hf["sliding_window"],
      sliding_layers=sliding, rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
      max_seq_len=hf.get("max_position_embeddings", 8192),
      bos_id=hf.get("bos_token_id", 2), eos_id=eos[0] if isinstance(eos, list) else eos,
      pad_id=hf.get("pad_token_id", 0),
      **_rope_from_hf(hf, family),
  )
  if family == "gemma2":
    kw["attn_logit_softcap"] = hf.get("attn_logit_softcapping", 50.0)
    kw["final_logit_softcap"] = hf.get("final_logit_softcapping", 30.0)
  else:
    kw["attn_logit_softcap"] = hf.get("attn_logit_softcapping")
    kw["final_logit_softcap"] = hf.get("final_logit_softcapping")
  return FAMILIES[family](**{**kw, **overrides})


def load_hf_config(model_dir: str | os.PathLike, **overrides: Any) -> GemmaConfig:
  path = os.path.join(model_dir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{model_dir!s} is not a Hugging Face model folder: no config.json in it")
  with open(path) as f:
    return from_hf_config(json.load(f), **overrides)


# ----------------------------------------------------------------------------- GGUF


def from_gguf_metadata(meta: Mapping[str, Any], **overrides: Any) -> GemmaConfig:
  """Builds the config from GGUF key/values (`general.architecture` = gemma2 | gemma3)."""
  arch = meta.get("general.architecture")
  if arch not in FAMILIES:
    raise ValueError(f"unsupported GGUF architecture {arch!r}: expected gemma2 or gemma3")
  g = lambda key, default=None: meta.get(f"{arch}.{key}", default)
  num_layers = int(g("block_count"))
  heads = int(g("attention.head_count"))
  head_dim = int(g("attention.key_length"))
  kw: dict[str, Any] = dict(
      vocab_size=int(meta["vocab_size"]), num_layers=num_layers, embed_dim=int(g("embedding_length")),
      mlp_dim=int(g("feed_forward_length")), num_heads=heads,
      num_kv_heads=int(g("attention.head_count_kv", heads)), head_dim=head_dim,
      # GGUF does not store query_pre_attn_scalar; released Gemma 2/3 text models use head_dim.
      query_pre_attn_scalar=float(head_dim), sliding_window=int(g("attention.sliding_window")),
      sliding_layers=_alternating(num_layers, 2 if arch == "gemma2" else 6),
      rms_norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-6)),
      max_seq_len=int(g("context_length", 8192)),
      bos_id=int(meta.get("tokenizer.ggml.bos_token_id", 2)),
      eos_id=int(meta.get("tokenizer.ggml.eos_token_id", 1)),
      pad_id=int(meta.get("tokenizer.ggml.padding_token_id", 0)),
  )
  if arch == "gemma3":
    kw["rope_base_global"] = float(g("rope.freq_base", 1_000_000.0))
    if g("rope.scaling.type") == "linear":
      kw["rope_scale_global"] = float(g("rope.scaling.factor"))
  else:
    kw["attn_logit_softcap"] = float(g("attn_logit_softcapping", 50.0))
    kw["final_logit_softcap"] = float(g("final_logit_softcapping", 30.0))
  return FAMILIES[arch](**{**kw, **overrides})


def config_from_dict(d: Mapping[str, Any]) -> GemmaConfig:
  """Inverse of `GemmaConfig.to_dict` (JSON lists become tuples again)."""
  d = dict(d)
  family = d.pop("family")
  d["sliding_layers"] = tuple(d["sliding_layers"])
  return FAMILIES[family](**d)
