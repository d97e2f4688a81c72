"""Asking the base model questions (with an adapter, bare, or with the document in its prompt)
and scoring the answers. Shared by the CLI (`ask`, `eval`) and the notebook.

Prompts use `data.pipeline`'s format, the one the hypernetworks are trained on:
  "Question: {question}\\nAnswer:", after "{document}\\n\\n" when the document is in context.
Answers end at EOS or at the end of their first line.
"""

from __future__ import annotations

import re
from typing import Sequence

from lora_hyper.adapters import lora
from lora_hyper.data import pipeline
from lora_hyper.model import decoding
from lora_hyper.model.base_model import BaseModel

ANSWER_SAMPLING = decoding.SamplingConfig(max_new_tokens=48)


def first_line(text: str) -> str:
  return text.lstrip().split("\n", 1)[0].strip()


def complete(model: BaseModel, prompts: Sequence[str], *, adapter: lora.LoraAdapter | None = None,
             sampling: decoding.SamplingConfig = ANSWER_SAMPLING, seed: int = 0) -> list[str]:
  """The first line of each prompt's continuation. `adapter`: one for all, or one per prompt."""
  texts = decoding.generate_text(model.params, model.config, model.tokenizer, list(prompts), sampling=sampling,
                                 seed=seed, adapter=adapter)
  return [first_line(t) for t in texts]


def answer(model: BaseModel, questions: Sequence[str], *, adapter: lora.LoraAdapter | None = None,
           context: str | None = None, sampling: decoding.SamplingConfig = ANSWER_SAMPLING,
           seed: int = 0) -> list[str]:
  """Answers to `questions`; `context` puts a document in every prompt (the in-context reference)."""
  if isinstance(questions, str):
    raise TypeError("answer takes a list of questions, got one str")
  prompts = [pipeline.query_prompt(q) if context is None else pipeline.context_prompt(context, q)
             for q in questions]
  return complete(model, prompts, adapter=adapter, sampling=sampling, seed=seed)


# ----------------------------------------------------------------------------- scores


def words(text: str) -> list[str]:
  return re.findall(r"\w+", text.lower())


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
