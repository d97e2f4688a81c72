"""Documents into chunks, each encoded independently (positions from 0), right-padded and masked so
padding changes nothing. Two framings (`DocToLoraConfig.templated`):

  ours:       every chunk is BOS + at most chunk_len - 1 document tokens;
  published:  the document as a chat turn, prefix + ids + suffix, is cut into n = ceil(len / chunk_len)
              pieces of ceil(len / n) tokens, and every piece is completed to a turn (the first gets
              the suffix, the middle ones both, the last the prefix), as Sakana's evaluation splits it.
"""

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


def chunk_width(config: DocToLoraConfig) -> int:
  """The longest chunk the encoder reads, framing included."""
  return config.chunk_len + len(config.chunk_prefix) + len(config.chunk_suffix)


def _bucket(length: int, cap: int) -> int:
  """Chunk arrays are padded to a power of two (at least 16, at most `cap`) to limit recompiles."""
  return min(cap, max(16, 1 << (length - 1).bit_length()))


def _templated_split(ids: Sequence[int], config: DocToLoraConfig) -> list[list[int]]:
  """The published split of one document (ids without template) into complete chat turns."""
  prefix, suffix = list(config.chunk_prefix), list(config.chunk_suffix)
  turn = prefix + list(ids) + suffix
  n = math.ceil(len(turn) / config.chunk_len)
  if n == 1:
    return [turn]
  size = math.ceil(len(turn) / n)
  pieces = [turn[i:i + size] for i in range(0, len(turn), size)]
  return ([pieces[0] + suffix] + [prefix + p + suffix for p in pieces[1:-1]] + [prefix + pieces[-1]])


def _framed(pieces: Sequence[Sequence[int]], config: DocToLoraConfig) -> list[list[int]]:
  """Pieces of a document's ids (no BOS) -> chunks as the encoder reads them (BOS or a chat turn each)."""
  if config.templated:
    return [[*config.chunk_prefix, *p, *config.chunk_suffix] for p in pieces]
  return [[config.base.bos_id, *p] for p in pieces]


def split_document(ids: Sequence[int], config: DocToLoraConfig) -> list[list[int]]:
  """One document's token ids (no BOS) -> its chunks' ids, framed as the encoder reads them."""
  if config.templated:
    return _templated_split(ids, config)
  per_chunk = config.chunk_len - 1
  return _framed([ids[j:j + per_chunk] for j in range(0, len(ids), per_chunk)], config)


def chunk_documents(documents: Sequence[Sequence[int]], *, config: DocToLoraConfig,
                    num_chunks: int | None = None) -> Chunks:
  """Token ids (no BOS, no template) of N documents -> their framed, right-padded chunks.

  K is the largest chunk count in the batch, or `num_chunks` (fixed shapes for training).
  """
  if not documents:
    raise ValueError("no documents given")
  split = []
  for i, ids in enumerate(documents):
    ids = list(ids)
    if not ids:
      raise ValueError(f"document {i} is empty: it has no tokens")
    chunks = split_document(ids, config)
    if len(chunks) > config.max_chunks:
      per_chunk = config.chunk_len - int(not config.templated)  # BOS takes a place; a template is on top
      raise ValueError(
          f"document {i} has {len(ids)} tokens, {len(chunks)} chunks of {per_chunk}; the configured maximum is "
          f"max_chunks={config.max_chunks} ({config.max_chunks * (config.chunk_len - 1)} tokens)")
    split.append(chunks)
  return pad_chunks(split, config=config, num_chunks=num_chunks)


def stack_documents(stacks: Sequence[Sequence[Sequence[int]]], *, config: DocToLoraConfig) -> Chunks:
  """Token ids of N stacks of documents -> their chunks [N, K, T], a stack's adapter holding all its
  documents: each document split on its own (no chunk holds the end of one and the start of the
  next), a stack's chunks in order, so its adapter is its documents' chunk adapters concatenated along
  the rank axis."""
  if not stacks or any(not stack for stack in stacks):
    raise ValueError("no documents given")
  split = []
  for n, stack in enumerate(stacks):
    where = f"stack {n}, " if len(stacks) > 1 else ""
    for i, ids in enumerate(stack):
      if not list(ids):
        raise ValueError(f"{where}document {i} is empty: it has no tokens")
    chunks = [c for ids in stack for c in split_document(list(ids), config)]
    if len(chunks) > config.max_chunks:
      raise ValueError(f"{where}{len(stack)} documents make {len(chunks)} chunks of at most {config.chunk_len - 1} "
                       f"tokens (each document is chunked on its own); the configured maximum is "
                       f"max_chunks={config.max_chunks}")
    split.append(chunks)
  return pad_chunks(split, config=config)


def pack_chunks(split: Sequence[Sequence[Sequence[int]]], *, config: DocToLoraConfig,
                num_chunks: int | None = None) -> Chunks:
  """Documents already split into pieces of their token ids (no BOS, each at most chunk_len - 1) ->
  `Chunks`, each piece framed (BOS, or the chat turn of a templated hypernetwork)."""
  if any(len(c) > config.chunk_len - 1 for s in split for c in s):
    raise ValueError(f"a chunk holds more than chunk_len - 1 = {config.chunk_len - 1} tokens")
  return pad_chunks([_framed(s, config) for s in split], config=config, num_chunks=num_chunks)


def pad_chunks(split: Sequence[Sequence[Sequence[int]]], *, config: DocToLoraConfig,
               num_chunks: int | None = None) -> Chunks:
  """Documents as lists of chunks that are already framed (what the encoder reads: BOS or chat
  template included, e.g. token ids from the official pipeline) -> right-padded `Chunks`."""
  if not split or any(not s for s in split) or any(not c for s in split for c in s):
    raise ValueError("every document needs at least one chunk and every chunk at least one token")
  width = chunk_width(config)
  longest = max(len(c) for s in split for c in s)
  if longest > width:
    raise ValueError(f"a chunk holds {longest} tokens, more than this hypernetwork's {width} "
                     f"(chunk_len {config.chunk_len} + its template)")
  k = max(len(s) for s in split) if num_chunks is None else num_chunks
  if k < max(len(s) for s in split):
    raise ValueError(f"num_chunks={num_chunks} is fewer than the {max(len(s) for s in split)} chunks needed")
  t = _bucket(longest, width)
  tokens = np.full((len(split), k, t), config.base.pad_id, np.int32)
  mask = np.zeros((len(split), k, t), bool)
  for i, chunks in enumerate(split):
    for j, chunk in enumerate(chunks):
      tokens[i, j, :len(chunk)] = chunk
      mask[i, j, :len(chunk)] = True
  return Chunks(tokens, mask)
