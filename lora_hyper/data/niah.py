"""Needle in a haystack, as Doc-to-LoRA built it.

A haystack of repeated filler sentences hides one needle, "The special magic number is N.",
at one of `NUM_DEPTH_BINS` depth bins; the query asks for the number and the answer is the
number alone. The magic number has `digits` digits (default 4 to 7, the count drawn uniformly;
the paper's NNNN is (4, 4)), no leading zero, so it cannot be guessed from the filler, which
holds no digits.

Record i depends only on (seed, i): its depth bin is `i % NUM_DEPTH_BINS` (so every ten
consecutive records cover all bins once), its target length and number come from
`numpy.random.default_rng([seed, i])`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
          "There and back again.")
QUERY = "What is the special magic number? Reply with only the number."
NUM_DEPTH_BINS = 10
DIGITS = (4, 7)  # inclusive range of the magic number's digit count

TokenCounter = Callable[[str], int]


def approx_token_count(text: str) -> int:
  """Whitespace words * 1.3: close to subword tokenizers on plain English."""
  return round(len(text.split()) * 1.3)


def needle(number: str) -> str:
  return f"The special magic number is {number}."


def magic_number(rng: np.random.Generator, digits: tuple[int, int] = DIGITS) -> str:
  n = int(rng.integers(digits[0], digits[1] + 1))
  return str(int(rng.integers(10 ** (n - 1), 10 ** n)))


def filler_sentences(count: int) -> list[str]:
  return [FILLER[j % len(FILLER)] for j in range(count)]


def haystack(num_filler: int, needle_text: str, position: int) -> str:
  """`num_filler` filler sentences with the needle inserted before sentence `position`."""
  sentences = filler_sentences(num_filler)
  sentences.insert(position, needle_text)
  return " ".join(sentences)


def fit_filler_count(target_tokens: int, needle_text: str, count_tokens: TokenCounter) -> int:
  """How many filler sentences bring the haystack closest to `target_tokens` tokens.

  Starts from per-sentence counts and corrects against the measured whole (tokenizers are not
  additive at sentence joins), so a long haystack is measured a few times, not once per sentence.
  """
  per_sentence = sum(count_tokens(s) for s in FILLER) / len(FILLER)
  count = max(0, round((target_tokens - count_tokens(needle_text)) / per_sentence))
  for _ in range(4):
    error = target_tokens - count_tokens(haystack(count, needle_text, count))
    step = round(error / per_sentence)
    if step == 0:
      break
    count = max(0, count + step)
  return count


def depth_position(rng: np.random.Generator, depth_bin: int, num_filler: int) -> int:
  """An insertion index in [0, num_filler] whose depth fraction lies in the bin."""
  depth = rng.uniform(depth_bin / NUM_DEPTH_BINS, (depth_bin + 1) / NUM_DEPTH_BINS)
  return min(num_filler, math.floor(depth * (num_filler + 1)))


@dataclasses.dataclass(frozen=True)
class NiahSource:
  """A grain random-access source of {'document', 'query', 'answer', 'depth_bin', 'length'}.

  `length` is a fixed token target or an inclusive (min, max) range drawn uniformly per record
  (the paper trains on 32-256 tokens); the record's 'length' field is the measured token count
  of its document. `count_tokens` should be the base model's tokenizer when one is at hand.
  """

  num_records: int
  length: int | tuple[int, int] = (32, 256)
  seed: int = 0
  count_tokens: TokenCounter = approx_token_count
  digits: tuple[int, int] = DIGITS  # inclusive range of the magic number's digit count

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < self.num_records:
      raise IndexError(f"index {index} out of range for {self.num_records} records")
    rng = np.random.default_rng([self.seed, index])
    low, high = (self.length, self.length) if isinstance(self.length, int) else self.length
    target = int(rng.integers(low, high + 1))
    number = magic_number(rng, tuple(self.digits))
    needle_text = needle(number)
    depth_bin = index % NUM_DEPTH_BINS
    num_filler = fit_filler_count(target, needle_text, self.count_tokens)
    document = haystack(num_filler, needle_text, depth_position(rng, depth_bin, num_filler))
    return {"document": document, "query": QUERY, "answer": number, "depth_bin": depth_bin,
            "length": self.count_tokens(document)}
