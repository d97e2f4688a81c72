"""Per-answer scores, by name (what `EvalConfig.metrics` lists), each in [0, 1]. Of a generated
answer and its reference:

  rouge_l         ROUGE-L F1 over lowercased words (the papers' QA metric)
  contains        1 when the reference's words appear, in order and adjacent, in the answer
  exact_match     1 when the answer's first line equals the reference, spaces and commas dropped and a
                  final period removed (needle in a haystack: "1,234." is the number 1234)
  digit_accuracy  the share of the reference's characters given at their position in the normalised
                  answer: partial credit for a magic number exact match lacks
  first_3_letters 1 when a word of the answer starts with the reference's first three letters (case and
                  punctuation aside): partial credit for a made-up name whose first syllable came through

and of the reference read by the model after its prompt, in one teacher-forced forward without
generating (`qa.greedy_matches`; what greedy decoding would write, Text-to-LoRA's scores):

  exact_match_eos       1 when the greedy answer is the reference's tokens, then EOS
  exact_match_line_end  the same, with a line end accepted in place of the EOS (how a base model
                        ends an answer after a few-shot prompt)
  token_accuracy        the share of the reference's tokens (and its EOS) that are the argmax
"""

from __future__ import annotations

import re
from typing import Callable

from lora_hyper import qa


def normalise(answer: str) -> str:
  """The first line with spaces and commas dropped and a final period removed."""
  return re.sub(r"[\s,]", "", qa.first_line(answer)).rstrip(".")


def exact_match(answer: str, reference: str) -> float:
  return float(normalise(answer) == reference)


def digit_hits(answer: str, reference: str) -> list[bool]:
  """For each character of the reference: is it given at its position in the normalised answer?"""
  given = normalise(answer)
  return [i < len(given) and given[i] == c for i, c in enumerate(reference)]


def digit_accuracy(answer: str, reference: str) -> float:
  hits = digit_hits(answer, reference)
  return sum(hits) / len(hits) if hits else float(not normalise(answer))


def first_3_letters(answer: str, reference: str) -> float:
  """"Staimshou" for "Staisshea": some word of the answer starts as the reference's first word does."""
  prefix = reference.split()[0][:3].lower() if reference.split() else ""
  return float(bool(prefix) and any(w.strip(".,;:!?\"'()").lower().startswith(prefix) for w in answer.split()))


METRICS: dict[str, Callable[[str, str], float]] = {
    "rouge_l": qa.rouge_l,
    "contains": lambda a, r: float(qa.contains(a, r)),
    "exact_match": exact_match,
    "digit_accuracy": digit_accuracy,
    "first_3_letters": first_3_letters,
}


# Read from one teacher-forced forward per batch (the evaluator's), in `qa.GreedyMatch`'s order.
FORCED_METRICS = ("exact_match_eos", "exact_match_line_end", "token_accuracy")


def check(names: tuple[str, ...]) -> None:
  known = (*METRICS, *FORCED_METRICS)
  unknown = [n for n in names if n not in known]
  if unknown or not names:
    raise ValueError(f"unknown metric(s) {unknown} (known: {', '.join(known)})" if unknown else "no metric given")


def scores(answer: str, reference: str, names: tuple[str, ...]) -> dict[str, float]:
  """The answer metrics among `names` (the forced ones are the evaluator's)."""
  return {n: float(METRICS[n](answer, reference)) for n in names if n in METRICS}
