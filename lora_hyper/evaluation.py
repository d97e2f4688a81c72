"""Scores a hypernetwork's adapters on held-out records: one adapter per document (or task
description), its questions (or inputs) answered with it, beside the bare base model and, for
documents, the base model with the document in its prompt; ROUGE-L F1 and contains-the-reference."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax.numpy as jnp
from tqdm import tqdm

from lora_hyper import prompts, qa
from lora_hyper.adapters import lora
from lora_hyper.hypernetworks import doc_to_lora, kinds, text_to_lora
from lora_hyper.hypernetworks.saved import SavedHypernetwork
from lora_hyper.model import decoding
from lora_hyper.model.base_model import BaseModel


class Evaluation(NamedTuple):
  report: dict[str, Any]  # the hypernetwork, the base model, the record count and each condition's mean scores
  answers: list[dict[str, Any]]  # per record: its inputs, the reference and each condition's answer and scores


def builtin_records(kind: str, limit: int) -> list[dict]:
  """`limit` held-out records: fictional documents' questions, or held-out tasks with held-out descriptions."""
  from lora_hyper.data import fictional, tasks  # pylint: disable=import-outside-toplevel

  if kind == "doc_to_lora":
    source = fictional.FictionalQA(num_docs=math.ceil(limit / fictional.FACTS_PER_DOC), split="test")
    return [source[i] for i in range(limit)]
  held_out = tasks.held_out_tasks()
  per_task = math.ceil(limit / len(held_out))
  source = tasks.TaskExamples(held_out, num_examples_per_task=per_task, descriptions="test")
  # Task-major indices; take them example-major so a small limit still covers many tasks.
  return [source[t * per_task + j] for j in range(per_task) for t in range(len(held_out))][:limit]


def read_records(data: str, kind: str, limit: int) -> list[dict]:
  """`limit` records: 'builtin' held-out data, or the lines of a JSONL file with the kind's fields."""
  if data == "builtin":
    return builtin_records(kind, limit)
  fields = kinds.get(kind).record_fields
  path = Path(data)
  if not path.is_file():
    raise FileNotFoundError(f"data file {data!r} does not exist (or pass --data builtin)")
  records = []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{data}:{number}: not a JSON object: {e}") from e
    if not isinstance(record, dict) or any(not isinstance(record.get(f), str) for f in fields):
      raise ValueError(f"{data}:{number}: a {kind} record needs string fields {', '.join(fields)}")
    records.append(record)
  if not records:
    raise ValueError(f"{data} holds no records")
  return records[:limit]


def make_adapters(hyper: SavedHypernetwork, base: BaseModel, sources: Sequence[str]) -> lora.LoraAdapter:
  """One adapter per document or task description [N, ...]."""
  if hyper.kind == "doc_to_lora":
    return doc_to_lora.internalize(hyper.variables, base.params, list(sources), config=hyper.config,
                                   tokenizer=base.tokenizer)
  return text_to_lora.generate_adapter(hyper.variables, list(sources), config=hyper.config,
                                       encoder=hyper.task_encoder(base))


def evaluate(hyper: SavedHypernetwork, base: BaseModel, records: Sequence[dict], *, batch_size: int = 8,
             sampling: decoding.SamplingConfig = qa.ANSWER_SAMPLING) -> Evaluation:
  """Every record answered under each condition and scored against its reference."""
  kind = kinds.get(hyper.kind)
  source_key, input_key, ref_key = kind.record_fields
  documents = kind is kinds.DOC_TO_LORA
  by_source: dict[str, list[dict]] = {}
  for record in records:
    by_source.setdefault(record[source_key], []).append(record)
  sources = list(by_source)
  conditions = ("adapter", "base", "context") if documents else ("adapter", "base")
  # A published (chat-templated) Doc-to-LoRA was trained on chat turns: every condition is asked in one.
  chat = documents and hyper.config.templated
  ask = prompts.chat_prompt if chat else kind.prompt
  in_context = prompts.chat_context_prompt if chat else prompts.context_prompt
  scores = {c: {"rouge_l": [], "contains": []} for c in conditions}
  answers = []
  with tqdm(total=len(records), unit="record", file=sys.stderr, disable=None) as progress:
    for start in range(0, len(sources), batch_size):
      batch = sources[start:start + batch_size]
      adapters = make_adapters(hyper, base, batch)
      rows = [(i, r) for i, s in enumerate(batch) for r in by_source[s]]
      per_prompt = lora.take(adapters, jnp.asarray([i for i, _ in rows]))  # each question its document's adapter
      questions = [ask(r[input_key]) for _, r in rows]
      predictions = {"adapter": qa.complete(base, questions, adapter=per_prompt, sampling=sampling),
                     "base": qa.complete(base, questions, sampling=sampling)}
      if documents:
        predictions["context"] = qa.complete(
            base, [in_context(r["document"], r["query"]) for _, r in rows], sampling=sampling)
      for j, (_, r) in enumerate(rows):
        answer = {source_key: r[source_key], input_key: r[input_key], "reference": r[ref_key]}
        for condition, texts in predictions.items():
          row = {"answer": texts[j], "rouge_l": qa.rouge_l(texts[j], r[ref_key]),
                 "contains": float(qa.contains(texts[j], r[ref_key]))}
          for metric in ("rouge_l", "contains"):
            scores[condition][metric].append(row[metric])
          answer[condition] = row
        answers.append(answer)
      progress.update(len(rows))
  means = {c: {m: sum(v) / len(v) for m, v in s.items()} for c, s in scores.items()}
  report = {"hypernetwork": hyper.describe(), "base_model": base.name, "records": len(records), "scores": means}
  if documents and means["context"]["rouge_l"] > 0:
    report["relative_rouge_l"] = means["adapter"]["rouge_l"] / means["context"]["rouge_l"]
  return Evaluation(report, answers)
