"""Scores a hypernetwork's adapters on held-out records: one adapter per document (or task
description), its questions (or inputs) answered with it, under the conditions asked for:

  adapter        the hypernetwork's adapter of the record's own document / description
  base           the bare base model, the same prompt
  context        the base model with the document in its prompt (Doc-to-LoRA only)
  other_source   the adapter of another record's document / description (Text-to-LoRA's control:
                 another held-out task's description); needs two sources or more
  random_source  the adapter of random words in place of the document / description (Text-to-LoRA's
                 random-string control)
  cd_oracle      gradient context distillation on the test query itself (the paper's oracle baseline;
                 one fresh LoRA per question, `baselines.context_distillation.distill`)
  cd_generated   gradient context distillation on queries generated about the document (one LoRA per
                 document, `distill_queries`)

and scores every answer with the named metrics (`evaluation.metrics`)."""

from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from lora_hyper import prompts, qa
from lora_hyper.adapters import lora
from lora_hyper.evaluation import metrics as metrics_lib
from lora_hyper.hypernetworks import doc_to_lora, kinds, text_to_lora
from lora_hyper.hypernetworks.saved import SavedHypernetwork
from lora_hyper.model import decoding
from lora_hyper.model.base_model import BaseModel

CONDITIONS = ("adapter", "base", "context", "other_source", "random_source", "cd_oracle", "cd_generated")
DOCUMENT_ONLY = ("context", "cd_oracle", "cd_generated")
DEFAULT_METRICS = ("rouge_l", "contains")


class Evaluation(NamedTuple):
  report: dict[str, Any]  # the hypernetwork, the base model, the record count and each condition's mean scores
  answers: list[dict[str, Any]]  # per record: its inputs, the reference and each condition's answer and scores


def default_conditions(kind: str) -> tuple[str, ...]:
  return ("adapter", "base", "context") if kind == "doc_to_lora" else ("adapter", "base")


def check_conditions(conditions: Sequence[str], kind: str) -> None:
  unknown = [c for c in conditions if c not in CONDITIONS]
  if unknown or not conditions:
    raise ValueError(f"unknown condition(s) {unknown} (known: {', '.join(CONDITIONS)})" if unknown
                     else "no condition given")
  if kind != "doc_to_lora" and any(c in DOCUMENT_ONLY for c in conditions):
    raise ValueError(f"conditions {', '.join(DOCUMENT_ONLY)} need documents: a doc_to_lora hypernetwork")


def make_adapters(hyper: SavedHypernetwork, base: BaseModel, sources: Sequence[str], *, config: Any = None,
                  iterative: bool = False) -> lora.LoraAdapter:
  """One adapter per document or task description [N, ...]; `config` replaces the saved one (e.g. another
  chunk length)."""
  config = hyper.config if config is None else config
  if hyper.kind == "doc_to_lora":
    return doc_to_lora.internalize(hyper.variables, base.params, list(sources), config=config,
                                   tokenizer=base.tokenizer, iterative=iterative)
  return text_to_lora.generate_adapter(hyper.variables, list(sources), config=config, encoder=hyper.task_encoder(base))


def chunked_config(hyper: SavedHypernetwork, base: BaseModel, documents: Sequence[str], chunk_len: int | None):
  """The saved config, or one with `chunk_len`-token chunks and room for the longest document (as many
  chunks as it takes: the saved max_chunks was sized for the saved chunk length)."""
  if chunk_len is None:
    return hyper.config
  if chunk_len < 2:
    raise ValueError(f"chunk_len must be at least 2 (a BOS and a token), got {chunk_len}")
  longest = max(len(base.tokenizer.encode(d, add_bos=False)) for d in documents)
  return hyper.config.replace(chunk_len=chunk_len, max_chunks=max(1, math.ceil(longest / (chunk_len - 1))))


def random_source(index: int, seed: int = 0) -> str:
  """Eight random lowercase words: a description (or document) that says nothing."""
  rng = np.random.default_rng([seed, index])
  letters = list("abcdefghijklmnopqrstuvwxyz")
  return " ".join("".join(rng.choice(letters, int(rng.integers(3, 9)))) for _ in range(8))


def _distilled_answers(base: BaseModel, rows: Sequence[dict], condition: str, settings, num_queries: int,
                       sampling: decoding.SamplingConfig, per_document: dict[str, Any]) -> list[str]:
  """Answers of the base model with a LoRA distilled from each row's document (experiments/qa's recipe);
  cd_generated's LoRA is distilled once per document and kept in `per_document` (a document's questions
  may fall in several groups)."""
  from lora_hyper.baselines import context_distillation as cd  # pylint: disable=import-outside-toplevel
  from lora_hyper.data import fictional  # pylint: disable=import-outside-toplevel

  tok = base.tokenizer
  stop_ids = (*tok.stop_ids, *tok.encode("\n", add_bos=False))  # the teacher answers in one line
  prompt_ids = lambda q: tok.encode(prompts.query_prompt(q), add_bos=False)
  answers = []
  for r in rows:
    context = tok.encode(r["document"] + "\n\n", add_bos=False)
    if condition == "cd_oracle":
      adapter = cd.distill(base.params, base.config, context, prompt_ids(r["query"]), settings=settings,
                           stop_ids=stop_ids).adapter
    else:
      if r["document"] not in per_document:
        queries = fictional.generated_queries({"document": r["document"]}, num_queries)
        per_document[r["document"]] = cd.distill_queries(base.params, base.config, context,
                                                         [prompt_ids(q) for q in queries], settings=settings,
                                                         stop_ids=stop_ids).adapter
      adapter = per_document[r["document"]]
    answers += qa.complete(base, [prompts.query_prompt(r["query"])], adapter=adapter, sampling=sampling)
  return answers


def _unique_complete(base: BaseModel, questions: list[str], sampling: decoding.SamplingConfig) -> list[str]:
  """The bare base model's answers, each distinct prompt decoded once (NIAH asks every haystack alike)."""
  unique = list(dict.fromkeys(questions))
  answered = dict(zip(unique, qa.complete(base, unique, sampling=sampling)))
  return [answered[q] for q in questions]


def evaluate(hyper: SavedHypernetwork, base: BaseModel, records: Sequence[dict], *, batch_size: int = 8,
             sampling: decoding.SamplingConfig = qa.ANSWER_SAMPLING, conditions: Sequence[str] | None = None,
             metrics: Sequence[str] = DEFAULT_METRICS, chunk_len: int | None = None, iterative: bool = False,
             distill: Any = None, distill_queries: int = 4, seed: int = 0) -> Evaluation:
  """Every record answered under each condition and scored against its reference. Records with a
  'group' (e.g. a haystack length) are also scored per group, and a `chunk_len` override sizes its
  chunk count per group."""
  kind = kinds.get(hyper.kind)
  conditions = tuple(default_conditions(hyper.kind) if conditions is None else conditions)
  metrics = tuple(metrics)
  check_conditions(conditions, hyper.kind)
  metrics_lib.check(metrics)
  if (chunk_len is not None or iterative) and hyper.kind != "doc_to_lora":
    raise ValueError("chunk_len and iterative apply to a doc_to_lora hypernetwork only")
  if not records:
    raise ValueError("no records to evaluate")
  source_key, input_key, ref_key = kind.record_fields
  documents = kind is kinds.DOC_TO_LORA
  # A published (chat-templated) Doc-to-LoRA was trained on chat turns: every condition is asked in one.
  chat = documents and hyper.config.templated
  ask = prompts.chat_prompt if chat else kind.prompt
  in_context = prompts.chat_context_prompt if chat else prompts.context_prompt
  all_sources = list(dict.fromkeys(r[source_key] for r in records))
  if "other_source" in conditions and len(all_sources) < 2:
    raise ValueError("the other_source condition needs records of two sources or more")
  other = dict(zip(all_sources, all_sources[1:] + all_sources[:1]))
  randoms = {s: random_source(i, seed) for i, s in enumerate(all_sources)}
  if distill is None and any(c.startswith("cd_") for c in conditions):
    from lora_hyper.baselines import context_distillation as cd  # pylint: disable=import-outside-toplevel

    distill = cd.DistillConfig()

  distilled: dict[str, Any] = {}  # cd_generated's LoRA of each document
  groups: dict[Any, list[int]] = {}
  for i, r in enumerate(records):
    groups.setdefault(r.get("group"), []).append(i)
  answers: list[dict | None] = [None] * len(records)
  with tqdm(total=len(records), unit="record", file=sys.stderr, disable=None) as progress:
    for indices in groups.values():
      by_source: dict[str, list[int]] = {}
      for i in indices:
        by_source.setdefault(records[i][source_key], []).append(i)
      sources = list(by_source)
      # Room for every text this group's adapters are made of, the controls' stand-ins included.
      made_of = [t for s in sources for t in (s, other[s], randoms[s])]
      config = chunked_config(hyper, base, made_of, chunk_len) if documents else hyper.config
      adapters_of = lambda texts: make_adapters(hyper, base, texts, config=config, iterative=iterative)
      for start in range(0, len(sources), batch_size):
        batch = sources[start:start + batch_size]
        rows = [(j, i) for j, s in enumerate(batch) for i in by_source[s]]
        recs = [records[i] for _, i in rows]
        questions = [ask(r[input_key]) for r in recs]
        per_row = jnp.asarray([j for j, _ in rows])  # each question its source's adapter
        predictions = {}
        for condition in conditions:
          if condition in ("adapter", "other_source", "random_source"):
            texts = {"adapter": batch, "other_source": [other[s] for s in batch],
                     "random_source": [randoms[s] for s in batch]}[condition]
            adapter = lora.take(adapters_of(texts), per_row)
            predictions[condition] = qa.complete(base, questions, adapter=adapter, sampling=sampling)
          elif condition == "base":
            predictions[condition] = _unique_complete(base, questions, sampling)
          elif condition == "context":
            predictions[condition] = qa.complete(base, [in_context(r["document"], r["query"]) for r in recs],
                                                 sampling=sampling)
          else:
            predictions[condition] = _distilled_answers(base, recs, condition, distill, distill_queries, sampling,
                                                        distilled)
        for k, r in enumerate(recs):
          answer = {source_key: r[source_key], input_key: r[input_key], "reference": r[ref_key]}
          # Its group and the numbers a record carries (a haystack's depth bin, length): what answers are
          # broken down by.
          answer.update({key: v for key, v in r.items() if key not in kind.record_fields and (
              key == "group" or isinstance(v, (int, float)) and not isinstance(v, bool))})
          for condition, texts in predictions.items():
            answer[condition] = {"answer": texts[k], **metrics_lib.scores(texts[k], r[ref_key], metrics)}
          answers[rows[k][1]] = answer
        progress.update(len(rows))
  report = {"hypernetwork": hyper.describe(), "base_model": base.name, "records": len(records),
            "scores": mean_scores(answers, conditions, metrics)}
  if any(g is not None for g in groups):
    report["by_group"] = {str(g): mean_scores([answers[i] for i in idx], conditions, metrics)
                          for g, idx in groups.items()}
  if "adapter" in conditions and "context" in conditions and "rouge_l" in metrics \
      and report["scores"]["context"]["rouge_l"] > 0:
    report["relative_rouge_l"] = report["scores"]["adapter"]["rouge_l"] / report["scores"]["context"]["rouge_l"]
  return Evaluation(report, answers)


def mean_scores(answers: Sequence[dict], conditions: Sequence[str], metrics: Sequence[str]) -> dict:
  """{condition: {metric: mean over the answers}}."""
  return {c: {m: sum(a[c][m] for a in answers) / len(answers) for m in metrics} for c in conditions}
