"""Asking the base model questions (with an adapter, bare, or with the document in its prompt)
and scoring the answers. Shared by the CLI (`ask`, `eval`) and the notebook.

Prompts use `lora_hyper.prompts`' format, the one the hypernetworks are trained on:
  "Question: {question}\\nAnswer:", after "{document}\\n\\n" when the document is in context.
Answers end at EOS or at the end of their first line.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from lora_hyper.adapters import lora
from lora_hyper.data import fictional, jsonl_source
from lora_hyper.model import decoding, transformer
from lora_hyper.model.base_model import BaseModel
from lora_hyper.model.config import GemmaConfig
from lora_hyper.prompts import context_prompt, query_prompt

ANSWER_SAMPLING = decoding.SamplingConfig(max_new_tokens=48)


def first_line(text: str) -> str:
  return text.lstrip().split("\n", 1)[0].strip()


def complete(model: BaseModel, prompts: Sequence[str], *, adapter: lora.LoraAdapter | None = None,
             sampling: decoding.SamplingConfig = ANSWER_SAMPLING, seed: int = 0,
             mesh: Mesh | None = None) -> list[str]:
  """The first line of each prompt's continuation. `adapter`: one for all, or one per prompt. `mesh`:
  the prompts decoded data-parallel over it (`decoding.generate_text`)."""
  texts = decoding.generate_text(model.params, model.config, model.tokenizer, list(prompts), sampling=sampling,
                                 seed=seed, adapter=adapter, mesh=mesh)
  return [first_line(t) for t in texts]


def answer(model: BaseModel, questions: Sequence[str], *, adapter: lora.LoraAdapter | None = None,
           context: str | None = None, sampling: decoding.SamplingConfig = ANSWER_SAMPLING,
           seed: int = 0) -> list[str]:
  """Answers to `questions`; `context` puts a document in every prompt (the in-context reference)."""
  if isinstance(questions, str):
    raise TypeError("answer takes a list of questions, got one str")
  prompts = [query_prompt(q) if context is None else context_prompt(context, q) for q in questions]
  return complete(model, prompts, adapter=adapter, sampling=sampling, seed=seed)


# ----------------------------------------------------------------------------- scores


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # the comma of 2,214


def words(text: str) -> list[str]:
  """Lowercased words; a number's thousands separators folded, so 2,214 is the one word 2214 (the
  word 214 is not in it) and equals 2214 written without them."""
  return re.findall(r"\w+", _THOUSANDS.sub("", text.lower()))


def rouge_l(prediction: str, reference: str) -> float:
  """ROUGE-L F1 over lowercased words (the papers' QA metric)."""
  p, r = words(prediction), words(reference)
  if not p or not r:
    return float(p == r)
  # Longest common subsequence, one row at a time.
  row = [0] * (len(r) + 1)
  for x in p:
    prev_diag = 0
    for j, y in enumerate(r, start=1):
      prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
  lcs = row[-1]
  if lcs == 0:
    return 0.0
  precision, recall = lcs / len(p), lcs / len(r)
  return 2 * precision * recall / (precision + recall)


def contains(prediction: str, reference: str) -> bool:
  """Whether the reference's words appear, in order and adjacent, in the prediction."""
  p, r = words(prediction), words(reference)
  return bool(r) and any(p[i:i + len(r)] == r for i in range(len(p) - len(r) + 1))


class GreedyMatch(NamedTuple):
  exact: jax.Array  # [B] the greedy answer is the target, then EOS
  exact_line: jax.Array  # [B] the greedy answer is the target, then EOS or a line end (what `complete` keeps)
  token_share: jax.Array  # [B] the share of answer tokens (EOS included) that are the argmax


@functools.partial(jax.jit, static_argnames=("config", "line_ends"))
def greedy_matches(params: Any, batch: Mapping[str, jax.Array], adapter: lora.LoraAdapter | None, *,
                   config: GemmaConfig, line_ends: tuple[int, ...] = ()) -> GreedyMatch:
  """Whether greedy decoding would reproduce each target answer, from one teacher-forced forward
  (a `pipeline.sft_example` batch, answers ending with EOS): the greedy answer equals the target
  exactly when the argmax at every answer position is the target token. `exact_line` also
  accepts a line end (`line_ends`, token ids) in place of the EOS: a bare base model continuing
  a few-shot prompt ends its answer with a new line, not with EOS."""
  logits = transformer.forward(params, batch["student_tokens"], config=config, mask=batch["student_mask"],
                               adapter=adapter, logits_at=batch["student_logits_at"]).logits
  mask, targets = batch["loss_mask"], batch["targets"]
  predicted = jnp.argmax(logits, axis=-1)
  hit = predicted == targets
  at_eos = mask & (targets == config.eos_id)
  ends_line = jnp.isin(predicted, jnp.asarray(line_ends or (config.eos_id,), jnp.int32)) & at_eos
  token_share = jnp.sum(hit & mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1)
  return GreedyMatch(jnp.all(hit | ~mask, axis=-1), jnp.all(hit | ends_line | ~mask, axis=-1), token_share)


# ----------------------------------------------------------------------------- self-generated pairs


def self_generated_pairs(model: BaseModel, document: str, num_queries: int, *, seed: int = 0,
                         sampling: decoding.SamplingConfig = ANSWER_SAMPLING) -> list[dict[str, str]]:
  """Training pairs made without labels, as the paper makes them: queries from templates about
  `document` (`data.fictional.generated_queries`), answered by the base model with the document in
  its prompt. Records {'document', 'query', 'answer'}, the shape every Doc-to-LoRA source has;
  queries the model leaves unanswered (an empty first line) are dropped."""
  queries = fictional.generated_queries({"document": document}, num_queries, seed=seed)
  answers = answer(model, queries, context=document, sampling=sampling, seed=seed)
  return [{"document": document, "query": q, "answer": a} for q, a in zip(queries, answers) if a]


def write_self_generated_pairs(model: BaseModel, documents: Sequence[str], path: str | Path, num_queries: int, *,
                               seed: int = 0, sampling: decoding.SamplingConfig = ANSWER_SAMPLING,
                               progress: Callable[[int, int], None] | None = None) -> int:
  """Appends every document's `self_generated_pairs` (with its 'doc_index') to a JSON Lines file that
  `data.jsonl_source.JsonlQA` reads, one document per write, and returns the number of records.
  A rerun resumes after the last document the file holds whole: generating pairs for thousands of
  documents takes hours, and an interrupted run loses at most the document it was writing."""
  path = Path(path)
  start = _resume_point(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("a", encoding="utf-8") as f:
    for i in range(start, len(documents)):
      pairs = self_generated_pairs(model, documents[i], num_queries, seed=seed, sampling=sampling)
      f.write("".join(json.dumps({**p, "doc_index": i}) + "\n" for p in pairs))
      f.flush()
      if progress is not None:
        progress(i + 1, len(documents))
  return sum(1 for _ in jsonl_source.read_records(path)) if path.stat().st_size else 0


def _resume_point(path: Path) -> int:
  """The first document index still to write. A last line cut off mid-write is removed along with
  the rest of its document's records, which are then written again."""
  if not path.is_file():
    return 0
  text = path.read_text(encoding="utf-8")
  lines = text.splitlines(keepends=True)
  complete = [l for l in lines if l.endswith("\n")]
  try:
    records = [json.loads(l) for l in complete if l.strip()]
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} has a malformed line before its end ({e.msg}); it is not a file this function "
                     "wrote: move it away or pass another path") from None
  if any("doc_index" not in r for r in records):
    raise ValueError(f"{path} holds records without 'doc_index': not a file this function wrote")
  last = max((r["doc_index"] for r in records), default=-1)
  if len(complete) == len(lines):
    return last + 1
  # Cut off while writing: redo the last document whole.
  keep = [l for l, r in zip((l for l in complete if l.strip()), records) if r["doc_index"] != last]
  path.write_text("".join(keep), encoding="utf-8")
  return max(last, 0)
