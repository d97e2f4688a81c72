"""Documents into chunks: each chunk is BOS + at most chunk_len - 1 tokens, right-padded and masked, so it
is encoded independently (positions from 0) and padding changes nothing."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from lora_hyper.hypernetworks.doc_to_lora.config import DocToLoraConfig


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
