"""Records (dicts of strings) -> fixed-shape numpy training examples -> sharded grain pipelines.

Doc-to-LoRA sequences use the prompt formats of `lora_hyper.prompts`:
  student (adapter, no document):  query_prompt(query) + " {answer}"
  teacher (document in context):   context_prompt(document, query) + " {answer}"
Every sequence starts with BOS and is right-padded; the answer ends with EOS, so a trained
adapter stops after it; `*_logits_at` are the positions whose next-token logits predict the
answer tokens. A record that carries the teacher's stored top-k (`lora-hyper prepare-data`,
`data.prepared`) brings them into its example as `teacher_topk_logprobs/ids` [answer_len, k].
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Mapping, Sequence

import grain
import jax
import numpy as np

from lora_hyper.hypernetworks import doc_to_lora
from lora_hyper.hypernetworks.doc_to_lora import DocToLoraConfig
from lora_hyper.prompts import query_prompt

Record = Mapping[str, Any]
Example = dict[str, np.ndarray]


def _right_pad(ids: Sequence[int], length: int, pad_id: int, what: str) -> tuple[np.ndarray, np.ndarray]:
  if len(ids) > length:
    raise ValueError(f"{what} has {len(ids)} tokens, more than the configured {length}")
  tokens = np.full((length,), pad_id, np.int32)
  tokens[:len(ids)] = ids
  mask = np.zeros((length,), bool)
  mask[:len(ids)] = True
  return tokens, mask


def answer_ids(tokenizer, answer: str, eos_id: int, limit: int | None = None) -> list[int]:
  """" {answer}" then EOS, cut to `limit` tokens (a cut answer loses its EOS)."""
  return [*tokenizer.encode(" " + answer, add_bos=False), eos_id][:limit]


def teacher_prefix(tokenizer, document: str, query: str, bos_id: int) -> list[int]:
  """BOS, the document and the question: what the teacher reads before the answer. `prepare-data`
  answers from and scores these very ids, so stored targets match the teacher computed in the step."""
  return [bos_id, *tokenizer.encode(document + "\n\n", add_bos=False),
          *tokenizer.encode(query_prompt(query), add_bos=False)]


# Stored top-k rows past an answer's end: no probability mass, so they add nothing (masked anyway).
_NO_MASS = -1e30


def _stored_topk(record: Record, answer_len: int, width: int) -> Example:
  """The record's teacher top-k at its first `answer_len` answer tokens, padded to `width` rows."""
  logprobs, ids = np.asarray(record["teacher_topk_logprobs"]), np.asarray(record["teacher_topk_ids"])
  if logprobs.shape != ids.shape or logprobs.ndim != 2:
    raise ValueError(f"stored teacher top-k log-probs {logprobs.shape} and ids {ids.shape} must be [answer, k] alike")
  out_logprobs = np.full((width, ids.shape[1]), _NO_MASS, np.float32)
  out_ids = np.zeros((width, ids.shape[1]), np.int32)
  out_logprobs[:answer_len], out_ids[:answer_len] = logprobs[:answer_len], ids[:answer_len]
  return {"teacher_topk_logprobs": out_logprobs, "teacher_topk_ids": out_ids}


def _answer_positions(prefix_len: int, answer_len: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions whose logits predict the answer (the token before each answer token) and their mask."""
  at = np.zeros((width,), np.int32)
  at[:answer_len] = np.arange(prefix_len - 1, prefix_len - 1 + answer_len)
  mask = np.zeros((width,), bool)
  mask[:answer_len] = True
  return at, mask


# The paper's second stage: how many chunks a document is cut into (1: 50%, 2: 12.5%, 3-8: 6.25%
# each), every chunk at least this many tokens (and at most the hypernetwork's chunk_len - 1).
RANDOM_CHUNK_COUNTS = np.array([8, 2, 1, 1, 1, 1, 1, 1]) / 16
MIN_RANDOM_CHUNK_TOKENS = 25


@dataclasses.dataclass(frozen=True)
class DocExampleShapes:
  """Fixed shapes of Doc-to-LoRA training examples (one compilation for the whole run).

  `random_chunking`: cut each document at random points into 1 to `num_chunks` chunks, the paper's
  second training stage (`random_pieces`), instead of into chunks of the hypernetwork's chunk_len.
  """

  num_chunks: int = 1
  student_len: int = 64
  teacher_len: int | None = 512  # None: no teacher sequence (plain cross-entropy needs none)
  answer_len: int = 16
  random_chunking: bool = False


def random_pieces(ids: Sequence[int], rng: np.random.Generator, *, max_chunks: int, max_tokens: int) -> list[list[int]]:
  """A document's ids cut at random points into contiguous chunks: their count drawn as the paper's
  second stage draws it (capped at `max_chunks`), each chunk 25 to `max_tokens` tokens where the
  document allows (shorter documents get fewer chunks, longer ones more)."""
  n = len(ids)
  if not n:
    raise ValueError("document is empty: it has no tokens")
  fewest = -(-n // max_tokens)
  if fewest > max_chunks:
    raise ValueError(f"a document of {n} tokens needs {fewest} chunks of {max_tokens}; num_chunks={max_chunks}")
  drawn = 1 + int(rng.choice(len(RANDOM_CHUNK_COUNTS), p=RANDOM_CHUNK_COUNTS))
  k = max(fewest, min(drawn, max_chunks, n // MIN_RANDOM_CHUNK_TOKENS))
  if k * MIN_RANDOM_CHUNK_TOKENS > n:
    return [list(ids)]
  sizes = MIN_RANDOM_CHUNK_TOKENS + rng.multinomial(n - k * MIN_RANDOM_CHUNK_TOKENS, rng.dirichlet(np.ones(k)))
  if sizes.max() > max_tokens:  # rare: fall back to near-equal chunks, which fit since k >= fewest
    sizes = np.full(k, n // k) + (np.arange(k) < n % k)
  cuts = np.concatenate([[0], np.cumsum(sizes)])
  return [list(ids[cuts[i]:cuts[i + 1]]) for i in range(k)]


def doc_example(record: Record, tokenizer, hyper: DocToLoraConfig, shapes: DocExampleShapes) -> Example:
  """{'document', 'query', 'answer'} -> chunked document, teacher and student sequences."""
  pad, bos = hyper.base.pad_id, hyper.base.bos_id
  doc_ids = tokenizer.encode(record["document"], add_bos=False)
  needed = len(doc_to_lora.split_document(doc_ids, hyper))
  if needed > shapes.num_chunks:  # training's shapes are fixed: say which setting to raise
    per_chunk = hyper.chunk_len - int(not hyper.templated)  # BOS takes a place; a template is on top
    raise ValueError(f"a document of {len(doc_ids)} tokens needs {needed} chunks of {per_chunk} tokens, "
                     f"more than DocExampleShapes.num_chunks={shapes.num_chunks}: raise it (up to the "
                     f"hypernetwork's max_chunks={hyper.max_chunks}) or shorten the document "
                     f"({record['document'][:40]!r}...)")
  if shapes.random_chunking:
    # Seeded by the record itself: the same record is always cut the same way, on any process.
    rng = np.random.default_rng(zlib.crc32((record["document"] + "\0" + record["query"]).encode()))
    pieces = random_pieces(doc_ids, rng, max_chunks=shapes.num_chunks, max_tokens=hyper.chunk_len - 1)
    chunks = doc_to_lora.pack_chunks([pieces], config=hyper, num_chunks=shapes.num_chunks)
  else:
    chunks = doc_to_lora.chunk_documents([doc_ids], config=hyper, num_chunks=shapes.num_chunks)
  width = doc_to_lora.chunk_width(hyper)
  chunk_tokens = np.full((shapes.num_chunks, width), pad, np.int32)
  chunk_mask = np.zeros((shapes.num_chunks, width), bool)
  chunk_tokens[:, :chunks.tokens.shape[-1]] = chunks.tokens[0]
  chunk_mask[:, :chunks.mask.shape[-1]] = chunks.mask[0]

  question = tokenizer.encode(query_prompt(record["query"]), add_bos=False)
  full_answer = answer_ids(tokenizer, record["answer"], hyper.base.eos_id)
  answer = full_answer[:shapes.answer_len]
  student_prefix = [bos, *question]
  student_tokens, student_mask = _right_pad(student_prefix + answer, shapes.student_len, pad, "question + answer")
  student_at, loss_mask = _answer_positions(len(student_prefix), len(answer), shapes.answer_len)
  targets = np.full((shapes.answer_len,), pad, np.int32)
  targets[:len(answer)] = answer
  example = {"chunk_tokens": chunk_tokens, "chunk_mask": chunk_mask, "student_tokens": student_tokens,
             "student_mask": student_mask, "student_logits_at": student_at, "targets": targets,
             "loss_mask": loss_mask}
  if "teacher_topk_ids" in record:
    if len(record["teacher_topk_ids"]) != len(full_answer):
      raise ValueError(f"stored teacher top-k has {len(record['teacher_topk_ids'])} rows for an answer of "
                       f"{len(full_answer)} tokens (query {record['query'][:40]!r}): the records were prepared "
                       "with another tokenizer; prepare them with this base model")
    example.update(_stored_topk(record, len(answer), shapes.answer_len))
  if shapes.teacher_len is None:
    return example
  prefix = teacher_prefix(tokenizer, record["document"], record["query"], bos)
  teacher_tokens, teacher_mask = _right_pad(prefix + answer, shapes.teacher_len, pad, "document + question + answer")
  teacher_at, _ = _answer_positions(len(prefix), len(answer), shapes.answer_len)
  return {**example, "teacher_tokens": teacher_tokens, "teacher_mask": teacher_mask, "teacher_logits_at": teacher_at}


@dataclasses.dataclass(frozen=True)
class TaskExampleShapes:
  seq_len: int = 64
  answer_len: int = 16


def sft_example(record: Record, tokenizer, bos_id: int, eos_id: int, pad_id: int, shapes: TaskExampleShapes,
                format_prompt: Callable[[str], str]) -> Example:
  """{'input', 'output'} -> the supervised sequence [BOS, prompt, answer, EOS] and its answer positions."""
  prefix = [bos_id, *tokenizer.encode(format_prompt(record["input"]), add_bos=False)]
  return supervised_example(prefix, answer_ids(tokenizer, record["output"], eos_id, shapes.answer_len), shapes,
                            pad_id)


def supervised_example(prefix: Sequence[int], answer: Sequence[int], shapes: TaskExampleShapes,
                       pad_id: int) -> Example:
  """Token ids [prefix, answer] right-padded to `shapes.seq_len`, with the positions whose logits
  predict the answer and the answer as targets (`shapes.answer_len` wide)."""
  tokens, mask = _right_pad([*prefix, *answer], shapes.seq_len, pad_id, "prompt + answer")
  at, loss_mask = _answer_positions(len(prefix), len(answer), shapes.answer_len)
  targets = np.full((shapes.answer_len,), pad_id, np.int32)
  targets[:len(answer)] = answer
  return {"student_tokens": tokens, "student_mask": mask, "student_logits_at": at, "targets": targets,
          "loss_mask": loss_mask}


def task_example(record: Record, tokenizer, embeddings: Mapping[str, np.ndarray], bos_id: int, eos_id: int,
                 pad_id: int, shapes: TaskExampleShapes, format_prompt: Callable[[str], str]) -> Example:
  """{'description', 'input', 'output'} -> the SFT sequence and the description's embedding."""
  return {"task_emb": np.asarray(embeddings[record["description"]], np.float32),
          **sft_example(record, tokenizer, bos_id, eos_id, pad_id, shapes, format_prompt)}


def reconstruction_example(record: Record, embeddings: Mapping[str, np.ndarray]) -> Example:
  """{'description', 'target_*'} (a `TaskLoraLibrary` record) -> the description's embedding and
  the target factors (and, from a z-scoring library, its per-element stats)."""
  return {"task_emb": np.asarray(embeddings[record["description"]], np.float32),
          **{k: np.asarray(v, np.float32) for k, v in record.items() if k.startswith("target_")}}


def batches(source, to_example: Callable[[Record], Example], *, global_batch_size: int, seed: int,
            shuffle: bool = True) -> grain.IterDataset:
  """An endless, deterministic iterator of this process's share of each global batch: records in an
  order shuffled by `seed`, or with `shuffle=False` in the source's own order, batch after batch.

  Every process reads a disjoint slice of the source; its iterator state (`get_state`) is what
  the checkpoint saves, so a resumed run continues with the very next batch.
  """
  processes, index = jax.process_count(), jax.process_index()
  if global_batch_size % processes:
    raise ValueError(f"global batch {global_batch_size} does not split over {processes} processes")
  dataset = grain.MapDataset.source(source)
  if len(dataset) < global_batch_size:
    raise ValueError(f"the data source has {len(dataset)} records, fewer than one batch of {global_batch_size}")
  if shuffle:
    dataset = dataset.shuffle(seed=seed)
  dataset = dataset[index::processes].map(to_example).repeat()
  return dataset.batch(global_batch_size // processes, drop_remainder=True).to_iter_dataset()
