"""The task functions of the task library: input string -> output string, most with a parameter
(`functools.partial` fixes it per task)."""

from __future__ import annotations

import re
import string
from typing import Callable

from lora_hyper.data.tasks._inputs import CATEGORIES, POSITIVE, VOWELS


def reverse(s: str) -> str:
  return s[::-1]


def uppercase(s: str) -> str:
  return s.upper()


def lowercase(s: str) -> str:
  return s.lower()


def remove_vowels(s: str) -> str:
  return "".join(c for c in s if c.lower() not in VOWELS)


def double_letters(s: str) -> str:
  return "".join(c * 2 for c in s)


def sort_letters(s: str) -> str:
  return "".join(sorted(s))


def capitalise_words(s: str) -> str:
  return " ".join(w.capitalize() for w in s.split())


def first_chars(s: str, n: int) -> str:
  return s[:n]


def last_chars(s: str, n: int) -> str:
  return s[-n:]


def rot(s: str, k: int) -> str:
  lower = string.ascii_lowercase
  return s.translate(str.maketrans(lower, lower[k:] + lower[:k]))


def replace_char(s: str, old: str, new: str) -> str:
  return s.replace(old, new)


def compose(s: str, first: Callable[[str], str], then: Callable[[str], str]) -> str:
  return then(first(s))


def _items(s: str) -> list[str]:
  return s.split(", ")


def _numbers(s: str) -> list[int]:
  return [int(x) for x in _items(s)]


def sort_numbers(s: str, descending: bool) -> str:
  return ", ".join(str(v) for v in sorted(_numbers(s), reverse=descending))


def sort_items(s: str) -> str:
  return ", ".join(sorted(_items(s)))


def reverse_items(s: str) -> str:
  return ", ".join(reversed(_items(s)))


def item_at(s: str, position: int) -> str:
  return _items(s)[position]


def max_number(s: str) -> str:
  return str(max(_numbers(s)))


def min_number(s: str) -> str:
  return str(min(_numbers(s)))


def sum_numbers(s: str) -> str:
  return str(sum(_numbers(s)))


def count_items(s: str) -> str:
  return str(len(_items(s)))


def unique_items(s: str) -> str:
  return ", ".join(dict.fromkeys(_items(s)))


def add_to_each(s: str, k: int) -> str:
  return ", ".join(str(v + k) for v in _numbers(s))


def wrap(s: str, left: str, right: str) -> str:
  return f"{left}{s}{right}"


def join_words(s: str, separator: str) -> str:
  return separator.join(s.split())


def key_value(s: str, separator: str) -> str:
  key, value = s.split()
  return f"{key}{separator}{value}"


def add(s: str, k: int) -> str:
  return str(int(s) + k)


def multiply(s: str, k: int) -> str:
  return str(int(s) * k)


def modulo(s: str, k: int) -> str:
  return str(int(s) % k)


def is_in_category(s: str, category: str) -> str:
  return "yes" if s in CATEGORIES[category] else "no"


def category_of(s: str) -> str:
  return next(c for c, words in CATEGORIES.items() if s in words)


def sentiment(s: str, labels: tuple[str, str]) -> str:
  return labels[0] if set(re.findall(r"[a-z]+", s.lower())) & set(POSITIVE) else labels[1]


def extract_numbers(s: str) -> str:
  return ", ".join(re.findall(r"\d+", s))


def longest_word(s: str) -> str:
  return max(s.split(), key=len)


def shortest_word(s: str) -> str:
  return min(s.split(), key=len)


def count_words(s: str) -> str:
  return str(len(s.split()))


def word_at(s: str, position: int) -> str:
  return s.split()[position]


def word_after(s: str, marker: str) -> str:
  words = s.split()
  return words[words.index(marker) + 1]
