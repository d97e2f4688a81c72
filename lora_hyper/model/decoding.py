"""Batched autoregressive decoding with a KV cache: greedy, temperature, top-k and top-p."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jax.sharding import Mesh

from lora_hyper import sharding
from lora_hyper.adapters import lora
from lora_hyper.model import transformer
from lora_hyper.model.config import GemmaConfig

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """`temperature=0` is greedy; top_k=0 and top_p=1 disable those filters."""

  max_new_tokens: int = 64
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample_token(logits: Array, key: Array, sampling: SamplingConfig) -> Array:
  """Next token ids [B] from logits [B, V]."""
  if sampling.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / sampling.temperature
  if sampling.top_k > 0:
    kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if sampling.top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p.
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(mass_before < sampling.top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "sampling", "stop_ids", "windowed_cache"))
def generate(params: Any, prompt: Array, prompt_mask: Array, key: Array, *, config: GemmaConfig,
             sampling: SamplingConfig, stop_ids: tuple[int, ...], adapter: lora.LoraAdapter | None = None,
             windowed_cache: bool = True) -> tuple[Array, Array]:
  """Continues left-padded prompts [B, T]. Returns (tokens [B, max_new_tokens], lengths [B]).

  Tokens after a row's first stop token are `config.pad_id`; `lengths` counts the tokens up to
  and including that stop token. Decoding ends early once every row has stopped. Sliding layers
  cache only their window (`transformer.KVCache`); `windowed_cache=False` caches every position
  of every layer instead (more memory and reads, the same tokens).
  """
  batch, prompt_len = prompt.shape
  max_new = sampling.max_new_tokens
  cache = transformer.KVCache.empty(config, batch, prompt_len + max_new, windowed=windowed_cache)
  positions = transformer.default_positions(prompt_mask)
  last = jnp.full((batch, 1), prompt_len - 1)  # left padding: every row ends at the last column.
  out = transformer.forward(params, prompt, config=config, mask=prompt_mask, positions=positions,
                            adapter=adapter, cache=cache, logits_at=last)
  stops = jnp.asarray(stop_ids, jnp.int32)

  def cond(state):
    step, _, _, _, _, done, _ = state
    return jnp.logical_and(step < max_new, jnp.logical_not(jnp.all(done)))

  def body(state):
    step, key, logits, cache, next_pos, done, tokens = state
    key, sub = jax.random.split(key)
    token = sample_token(logits[:, -1], sub, sampling)
    token = jnp.where(done, config.pad_id, token)
    tokens = tokens.at[:, step].set(token)
    done = jnp.logical_or(done, jnp.isin(token, stops))
    step_out = transformer.forward(params, token[:, None], config=config, mask=jnp.ones((batch, 1), bool),
                                   positions=next_pos, adapter=adapter, cache=cache)
    return step + 1, key, step_out.logits, step_out.cache, next_pos + 1, done, tokens

  tokens = jnp.full((batch, max_new), config.pad_id, jnp.int32)
  init = (jnp.zeros((), jnp.int32), key, out.logits, out.cache, positions[:, -1:] + 1,
          jnp.zeros((batch,), bool), tokens)
  _, _, _, _, _, _, tokens = jax.lax.while_loop(cond, body, init)
  is_stop = jnp.isin(tokens, stops)
  first_stop = jnp.where(is_stop.any(axis=1), jnp.argmax(is_stop, axis=1) + 1, max_new)
  return tokens, first_stop


def check_length(config: GemmaConfig, prompt_len: int, max_new_tokens: int) -> None:
  """A clear error for prompts that, with the continuation, exceed the model's context."""
  if prompt_len + max_new_tokens > config.max_seq_len:
    raise ValueError(
        f"prompt of {prompt_len} tokens plus {max_new_tokens} new tokens exceeds the model's context of "
        f"{config.max_seq_len} tokens; shorten the prompt or lower max_new_tokens")


def generate_text(params: Any, config: GemmaConfig, tokenizer, prompts: Sequence[str], *,
                  sampling: SamplingConfig = SamplingConfig(), seed: int = 0,
                  adapter: lora.LoraAdapter | None = None, bucket: int = 64, mesh: Mesh | None = None) -> list[str]:
  """Tokenizes, left-pads (to a multiple of `bucket`, to reuse compilations), decodes, detokenizes.
  `mesh`: the prompts (and a per-prompt adapter) split over its batch axes, padded with copies of the
  last prompt whose answers are dropped; `params` should be replicated on it (`sharding.replicate`).
  Sampled draws are the same: a row's random bits do not depend on the batch size."""
  if isinstance(prompts, str):
    raise TypeError("generate_text takes a list of prompts, got one str")
  if not prompts:
    raise ValueError("generate_text needs at least one prompt")
  ids = tokenizer.encode_batch(list(prompts))
  longest = max(len(x) for x in ids)
  check_length(config, longest, sampling.max_new_tokens)
  length = min(-(-longest // bucket) * bucket, config.max_seq_len - sampling.max_new_tokens)
  tokens, mask = tokenizer.pad_batch(ids, side="left", length=length)
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
  if mesh is not None:
    per_prompt = adapter if adapter is not None and adapter.is_batched else None
    tokens, mask, per_prompt = sharding.shard_rows((tokens, mask, per_prompt), mesh)
    adapter = adapter if per_prompt is None else per_prompt
  out, lengths = generate(params, tokens, mask, jax.random.key(seed), config=config,
                          sampling=sampling, stop_ids=tuple(tokenizer.stop_ids), adapter=adapter)
  rows = len(ids)  # the padding rows' answers dropped
  return [tokenizer.decode(row[:n]) for row, n in zip(out.tolist()[:rows], lengths.tolist()[:rows])]
