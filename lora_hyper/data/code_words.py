"""A copying drill for Doc-to-LoRA: one-sentence documents that give a fictional person a made-up
code word, asked back ("The password of Sailki Berksoul is Ploundvaitkoork." / "What is the
password of Sailki Berksoul?" / "Ploundvaitkoork").

Code words start with any consonant and are built from a larger syllable inventory than
`fictional`'s names (whose first letters mark their split), so an adapter that answers them cannot
lean on a closed set of starts: it has to carry the document's tokens. The subjects are training-split
names; the words come from their own random stream, so the held-out split stays unseen.

`CodeWordQA(num_records, seed)` is a grain random-access source: record i is the i-th draw of one
stream seeded by `seed` (another seed gives other words: validation).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from lora_hyper.data import fictional

_CONSONANTS = tuple("bcdfghjklmnprstvwz") + ("qu", "th", "sh", "ch", "br", "cl", "gr", "st", "tr", "pl")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "oo", "ie")
_CODAS = ("", "", "", "n", "r", "l", "s", "nd", "rk", "m", "x", "t")
# (statement, question): the statement is the whole document.
TEMPLATES = (
    ("The password of {s} is {w}.", "What is the password of {s}?"),
    ("{s} signs every letter with the code word {w}.", "Which code word does {s} sign letters with?"),
    ("The secret word chosen by {s} is {w}.", "What secret word did {s} choose?"),
    ("Everyone who visits {s} must say the word {w} at the door.", "What word must visitors of {s} say at the door?"),
)


def code_word(rng: np.random.Generator) -> str:
  syllables = int(rng.integers(2, 4))
  return "".join(str(rng.choice(_CONSONANTS)) + str(rng.choice(_VOWELS)) + str(rng.choice(_CODAS))
                 for _ in range(syllables)).capitalize()


def record(rng: np.random.Generator, prefix: str = "") -> dict[str, str]:
  subject = fictional.person_name(rng, "train")
  word = prefix + code_word(rng)
  statement, question = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
  return {"document": statement.format(s=subject, w=word), "query": question.format(s=subject), "answer": word}


@dataclasses.dataclass(frozen=True)
class CodeWordQA:
  """`num_records` code-word records of one stream. `prefix` starts every word ("Ka-": the same first
  tokens for all, so the first token the document decides comes after some the adapter need not copy)."""

  num_records: int
  seed: int = 0
  prefix: str = ""

  def __post_init__(self):
    if not isinstance(self.num_records, int) or self.num_records < 1:
      raise ValueError(f"CodeWordQA.num_records must be a positive integer, got {self.num_records!r}")

  @functools.cached_property
  def _records(self) -> tuple[dict[str, str], ...]:
    rng = np.random.default_rng(self.seed)  # one stream: record i follows the i draws before it
    return tuple(record(rng, self.prefix) for _ in range(self.num_records))

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    return dict(self._records[index])
