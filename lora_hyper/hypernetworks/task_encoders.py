"""Task-description encoders for Text-to-LoRA: any callable texts -> embeddings [B, E].

The JAX-only default is the base model itself: the final (normed) hidden state pooled at the
last token (or averaged over tokens), L2-normalised and multiplied by sqrt(E) as in T2L's
`embed_texts`. A sentence-embedding model plugs in as another callable of the same shape: the
paper used gte-large-en-v1.5 (CLS pooling); we ship all-MiniLM-L6-v2 (`sentence_encoder.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lora_hyper.model import transformer
from lora_hyper.model.config import GemmaConfig

Array = jax.Array
PyTree = Any

TaskEncoder = Callable[[Sequence[str]], Array]
POOLINGS = ("last_token", "mean")
TASK_ENCODERS = ("base_model", "minilm")


class TextTokenizer(Protocol):
  def encode(self, text: str, add_bos: bool = ...) -> list[int]: ...


def add_full_stop(text: str) -> str:
  """T2L's description formatting: strip, and end with '.' when the text ends in a letter."""
  text = text.strip()
  return text + "." if text[-1:].isalpha() else text


def pool(hidden: Array, mask: Array, pooling: str) -> Array:
  """hidden [B, T, D], mask [B, T] (right padding) -> [B, D]."""
  if pooling == "last_token":
    last = jnp.sum(mask, axis=-1) - 1
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  if pooling == "mean":
    weights = mask.astype(hidden.dtype)[..., None]
    return jnp.sum(hidden * weights, axis=1) / jnp.sum(weights, axis=1)
  raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def pad_to_power_of_two(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[Array, Array]:
  """Right-padded tokens and mask [B, T], T a power of two (at least 8), so descriptions of
  similar length share one compilation."""
  length = max(8, 1 << (max(map(len, ids)) - 1).bit_length())
  tokens = np.full((len(ids), length), pad_id, np.int32)
  mask = np.zeros((len(ids), length), bool)
  for i, row in enumerate(ids):
    tokens[i, :len(row)], mask[i, :len(row)] = row, True
  return jnp.asarray(tokens), jnp.asarray(mask)


def normalize(emb: Array) -> Array:
  """L2-normalise and scale by sqrt(E), so every embedding has the norm of a unit-variance vector."""
  emb = emb.astype(jnp.float32)
  return emb * jax.lax.rsqrt(jnp.sum(emb * emb, axis=-1, keepdims=True) + 1e-12) * math.sqrt(emb.shape[-1])


@functools.partial(jax.jit, static_argnames=("config", "pooling"))
def embed_tokens(params: PyTree, tokens: Array, mask: Array, *, config: GemmaConfig, pooling: str) -> Array:
  """Right-padded tokens [B, T] -> normalised pooled embeddings [B, d_model] (no gradient)."""
  hidden = transformer.forward(params, tokens, config=config, mask=mask, logits=False).hidden
  return jax.lax.stop_gradient(normalize(pool(hidden, mask, pooling)))


@dataclasses.dataclass(frozen=True, eq=False)
class BaseModelEncoder:
  """The frozen base model as description encoder (emb_dim = config.embed_dim)."""

  params: PyTree
  config: GemmaConfig
  tokenizer: TextTokenizer
  pooling: str = "last_token"
  max_len: int = 1024

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")

  @property
  def dim(self) -> int:
    return self.config.embed_dim

  def __call__(self, texts: Sequence[str]) -> Array:
    if isinstance(texts, str) or not texts:
      raise ValueError("BaseModelEncoder takes a non-empty list of descriptions")
    ids = []
    for i, text in enumerate(texts):
      if not isinstance(text, str) or not text.strip():
        raise ValueError(f"task description {i} is empty or not a string: {text!r}")
      ids.append(self.tokenizer.encode(add_full_stop(text), add_bos=True))
      if len(ids[-1]) > self.max_len:
        raise ValueError(f"task description {i} has {len(ids[-1])} tokens, more than max_len={self.max_len}")
    tokens, mask = pad_to_power_of_two(ids, self.config.pad_id)
    return embed_tokens(self.params, tokens, mask, config=self.config, pooling=self.pooling)


def make_task_encoder(name: str, base: Any, *, pooling: str = "last_token") -> TaskEncoder:
  """The encoder a gin config or saved hypernetwork names, with a `dim`: "base_model" (the frozen
  `base` BaseModel, dim d_model) or "minilm" (all-MiniLM-L6-v2, dim 384, lora-hyper[minilm])."""
  if name == "base_model":
    return BaseModelEncoder(base.params, base.config, base.tokenizer, pooling=pooling)
  if name == "minilm":
    from lora_hyper.hypernetworks import sentence_encoder  # imported here: it builds on this module

    return sentence_encoder.load_minilm()
  raise ValueError(f"task encoder must be one of {TASK_ENCODERS}, got {name!r}")
