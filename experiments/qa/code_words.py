"""Copying drill for QA: one-sentence documents that give a fictional subject a made-up code word,
asked back, as JSON Lines for `lora_hyper.JsonlQA` (optionally mixed with fictional QA records).

Why: every adapter so far writes a made-up name's first syllable from the few starts training
names have (`fictional.NAME_INITIALS['train']`) and never a whole name; held-out names start with
other letters and none comes through. Code words start with any consonant and are built from a
larger syllable inventory than names, so an adapter that answers them cannot rely on a closed set
of starts: it has to carry the document's tokens. They are not entities of the held-out split (its
documents and names stay unseen); the code words are drawn from their own random stream.

Run (seconds):
  .venv/bin/python -m experiments.qa.code_words --out runs/code_words.jsonl --records 20000 --seed 0
  # half code words, half six-fact fictional QA records of training documents 0..N-1:
  .venv/bin/python -m experiments.qa.code_words --out runs/mixed.jsonl --records 20000 --with-fictional-docs 3334
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments.qa import subset
from lora_hyper import files
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


def records(count: int, seed: int, prefix: str = "") -> list[dict[str, str]]:
  """`prefix` starts every code word ("Ka-": the same first tokens for all), so that the first token
  the document decides comes after some the adapter need not copy."""
  rng = np.random.default_rng(seed)
  return [record(rng, prefix) for _ in range(count)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True)
  parser.add_argument("--records", type=int, default=20000, help="code-word records")
  parser.add_argument("--seed", type=int, default=0, help="another seed gives other code words (validation)")
  parser.add_argument("--with-fictional-docs", type=int, default=0, metavar="N",
                      help="also every question of fictional training documents 0..N-1 (--facts-per-doc each)")
  parser.add_argument("--facts-per-doc", type=int, default=fictional.FACTS_PER_DOC)
  parser.add_argument("--prefix", default="", help="the same start for every code word, e.g. 'Ka-'")
  args = parser.parse_args()
  if args.records < 1 or args.with_fictional_docs < 0:
    parser.error("--records must be positive and --with-fictional-docs not negative")
  kept = records(args.records, args.seed, args.prefix)
  if args.with_fictional_docs:
    kept += subset.records(args.with_fictional_docs, args.facts_per_doc, set(subset.by_fact.ANSWER_KINDS))
  files.write_json_lines(args.out, kept)
  print(f"{len(kept)} records ({args.records} code words) written to {args.out}")


if __name__ == "__main__":
  main()
