"""A generated Text-to-LoRA task library: small deterministic tasks a 270M base model does not
do out of the box, each with many natural-language descriptions.

Every `Task` has a stable id ("category/member"), a category (string, list, format, arithmetic,
classify, extract, compose), a family (the parameterised template it instantiates, e.g. "rot_k"),
a function input -> output, a seeded input generator and 24 descriptions: 4 core phrasings of
the task, each in 6 framings ("Please ...", "Task: ...", ...), core-major.

Held-out splits, both fixed:
  tasks         `HELD_OUT_TASK_IDS`: one member of a seen family with an unseen parameter
                (rot-7 while rot-1..6 and 8..13 train, add 7, mod 7, the <em> tag, ...) and one
                unseen combination of seen string operations.
  descriptions  the first 3/4 of each task's descriptions train, the last 1/4 are held out;
                being core-major, the held-out quarter is the 4th core phrasing, never seen in
                training for that task.

Prompt format, used everywhere: the base model reads `format_prompt(input)`
("Input: {input}\\nOutput:") and completes `format_answer(output)` (" {output}", a leading space).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
import zlib
from typing import Any, Callable, Sequence

import numpy as np

Rng = np.random.Generator


def format_prompt(task_input: str) -> str:
  return f"Input: {task_input}\nOutput:"


def format_answer(output: str) -> str:
  return f" {output}"


# ---- vocabularies -------------------------------------------------------------------------------
CATEGORIES = {
    "animal": ("cat", "dog", "horse", "tiger", "rabbit", "eagle", "shark", "mouse", "zebra", "camel", "otter",
               "wolf", "sheep", "whale", "frog"),
    "colour": ("red", "blue", "green", "yellow", "purple", "pink", "brown", "black", "white", "grey", "violet",
               "scarlet"),
    "fruit": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "melon", "kiwi",
              "apricot"),
    "vegetable": ("carrot", "potato", "onion", "cabbage", "pepper", "spinach", "lettuce", "celery", "turnip",
                  "garlic", "radish", "leek"),
    "vehicle": ("car", "bus", "truck", "bicycle", "train", "boat", "tram", "scooter", "van", "taxi", "ship",
                "tractor"),
    "tool": ("hammer", "saw", "wrench", "drill", "shovel", "chisel", "pliers", "rake", "axe", "screwdriver",
             "ladder", "spanner"),
    "body part": ("hand", "knee", "elbow", "nose", "ear", "shoulder", "ankle", "finger", "chin", "wrist", "lung",
                  "thumb"),
}
GENERAL_WORDS = ("garden", "window", "silver", "planet", "river", "candle", "market", "pencil", "forest", "bottle",
            "castle", "winter", "summer", "island", "basket", "button", "marble", "rocket", "shadow", "thunder",
            "bridge", "jacket", "kitten", "lantern", "meadow", "needle", "ocean", "pillow", "puzzle", "saddle",
            "tunnel", "valley", "wagon", "anchor", "butter", "copper", "dragon", "engine", "feather", "giant",
            "honey", "insect", "jungle", "kettle", "mirror", "noodle", "orbit", "sugar", "table", "umbrella",
            "velvet", "wallet", "zipper", "music", "paper", "stone", "cloud", "light", "dream", "smile", "story",
            "water", "guitar", "desert", "harbor", "letter", "morning", "pocket", "sister", "ticket")
WORDS = tuple(dict.fromkeys(GENERAL_WORDS + sum(CATEGORIES.values(), ())))
POSITIVE = ("wonderful", "great", "excellent", "delightful", "lovely", "fantastic", "superb", "pleasant", "amazing",
            "brilliant")
NEGATIVE = ("terrible", "awful", "horrible", "dreadful", "boring", "disappointing", "poor", "nasty", "unpleasant",
            "dull")
_REVIEW_NOUNS = ("movie", "meal", "concert", "hotel", "book", "trip", "game", "service", "show", "lecture")
_REVIEW_TEMPLATES = ("The {n} was {a}.", "I thought the {n} was {a}.", "Honestly, the {n} felt {a}.",
                     "Everyone said the {n} was {a}.")
_KEYS = ("name", "color", "size", "city", "animal", "fruit", "mood", "shape")
VOWELS = "aeiou"

# ---- descriptions -------------------------------------------------------------------------------
FRAMINGS = ("{C}.", "{C}. Reply with only the result.", "Task: {c}.", "Your job is to {c}.", "Please {c}.",
            "Read the input and {c}.")
NUM_CORES = 4  # core phrasings per task; the last one is the held-out quarter of descriptions


def describe(cores: Sequence[str]) -> tuple[str, ...]:
  """Every framing of every core phrasing, core-major."""
  if len(cores) != NUM_CORES:
    raise ValueError(f"need {NUM_CORES} core phrasings, got {len(cores)}")
  return tuple(f.format(c=core, C=core[0].upper() + core[1:]) for core in cores for f in FRAMINGS)


def _letters(n: int) -> str:
  return "letter" if n == 1 else f"{n} letters"


def _places(n: int) -> str:
  return "place" if n == 1 else "places"


# ---- input generators ---------------------------------------------------------------------------
def word_input(rng: Rng, min_len: int = 3, contains: str = "") -> str:
  pool = [w for w in WORDS if len(w) >= min_len and contains in w]
  return str(rng.choice(pool))


def shouty_word(rng: Rng) -> str:
  """A word with some (at least one) capital letters, the input of lowercasing."""
  word = word_input(rng)
  caps = rng.random(len(word)) < 0.6
  caps[int(rng.integers(len(word)))] = True
  return "".join(c.upper() if up else c for c, up in zip(word, caps))


def phrase(rng: Rng, low: int = 2, high: int = 5) -> str:
  return " ".join(rng.choice(GENERAL_WORDS, int(rng.integers(low, high + 1)), replace=False))


def number_list(rng: Rng, with_duplicate: bool = False) -> str:
  values = list(rng.integers(0, 100, int(rng.integers(3, 7))))
  if with_duplicate:
    values.insert(int(rng.integers(len(values) + 1)), values[int(rng.integers(len(values)))])
  return ", ".join(str(int(v)) for v in values)


def word_list(rng: Rng) -> str:
  return ", ".join(rng.choice(GENERAL_WORDS, int(rng.integers(3, 7)), replace=False))


def integer_input(rng: Rng, high: int) -> str:
  return str(int(rng.integers(0, high + 1)))


def category_word(rng: Rng, category: str) -> str:
  """Half the time a member of `category`, otherwise a member of another category."""
  if rng.random() < 0.5:
    return str(rng.choice(CATEGORIES[category]))
  return str(rng.choice([w for c, ws in CATEGORIES.items() if c != category for w in ws]))


def any_category_word(rng: Rng) -> str:
  return str(rng.choice(CATEGORIES[str(rng.choice(list(CATEGORIES)))]))


def review(rng: Rng) -> str:
  adjective = str(rng.choice(POSITIVE if rng.random() < 0.5 else NEGATIVE))
  return str(rng.choice(_REVIEW_TEMPLATES)).format(n=rng.choice(_REVIEW_NOUNS), a=adjective)


def text_with_numbers(rng: Rng) -> str:
  words = list(rng.choice(GENERAL_WORDS, int(rng.integers(3, 7)), replace=False))
  for _ in range(int(rng.integers(1, 4))):
    words.insert(int(rng.integers(len(words) + 1)), str(int(rng.integers(0, 1000))))
  return " ".join(words)


def phrase_with_unique_extreme(rng: Rng, longest: bool) -> str:
  """A phrase whose longest (or shortest) word is unique, so the answer is unambiguous."""
  while True:
    words = list(rng.choice(WORDS, int(rng.integers(3, 7)), replace=False))
    lengths = [len(w) for w in words]
    if lengths.count(max(lengths) if longest else min(lengths)) == 1:
      return " ".join(words)


def phrase_with_marker(rng: Rng, marker: str) -> str:
  """General words with `marker` inserted once, never last, so a word follows it."""
  words = list(rng.choice(GENERAL_WORDS, int(rng.integers(3, 7)), replace=False))
  words.insert(int(rng.integers(len(words))), marker)
  return " ".join(words)


def key_value_input(rng: Rng) -> str:
  return f"{rng.choice(_KEYS)} {rng.choice(GENERAL_WORDS)}"


# ---- task functions -----------------------------------------------------------------------------
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


# ---- the library --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Task:
  task_id: str
  category: str
  family: str
  fn: Callable[[str], str]
  make_input: Callable[[Rng], str]
  descriptions: tuple[str, ...]

  def split_descriptions(self, which: str) -> tuple[str, ...]:
    """'train' (first 3/4), 'test' (last 1/4) or 'all' descriptions."""
    cut = len(self.descriptions) * 3 // 4
    return {"train": self.descriptions[:cut], "test": self.descriptions[cut:], "all": self.descriptions}[which]

  def example(self, rng: Rng) -> tuple[str, str]:
    task_input = self.make_input(rng)
    return task_input, self.fn(task_input)


def _task(category: str, family: str, member: str, fn: Callable[[str], str], make_input: Callable[[Rng], str],
          cores: Sequence[str]) -> Task:
  return Task(f"{category}/{member}", category, family, fn, make_input, describe(cores))


# String operations as verb phrases over an object, shared by single and composed tasks.
STRING_OPS: dict[str, tuple[Callable[[str], str], tuple[str, ...]]] = {
    "reverse": (reverse, ("reverse the order of the letters in {o}", "write {o} backwards",
                          "spell {o} in reverse", "output the letters of {o} from last to first")),
    "uppercase": (uppercase, ("convert {o} to uppercase", "write {o} in capital letters",
                              "make every letter of {o} upper case", "turn all letters of {o} into capitals")),
    "remove_vowels": (remove_vowels, ("remove every vowel from {o}", "delete the letters a, e, i, o and u from {o}",
                                      "write {o} without its vowels", "keep only the consonants of {o}")),
    "double_letters": (double_letters, ("double every letter of {o}", "write each letter of {o} twice",
                                        "repeat every character of {o} two times in a row",
                                        "replace each letter of {o} with two copies of it")),
    "sort_letters": (sort_letters, ("sort the letters of {o} alphabetically",
                                    "rearrange the letters of {o} in alphabetical order",
                                    "write the letters of {o} from a to z",
                                    "put the characters of {o} in sorted order")),
}
COMPOSITIONS = (("reverse", "uppercase"), ("remove_vowels", "reverse"), ("sort_letters", "uppercase"),
                ("double_letters", "reverse"), ("remove_vowels", "uppercase"), ("uppercase", "double_letters"),
                ("sort_letters", "remove_vowels"), ("remove_vowels", "double_letters"))
_COMPOSE_FRAMES = ("{a}, then {b}", "first {a}; after that, {b}", "{a} and afterwards {b}",
                   "do two steps: {a}, and then {b}")


def _string_tasks() -> list[Task]:
  tasks = [_task("string", name, name, fn, word_input, [p.format(o="the word") for p in phrases])
           for name, (fn, phrases) in STRING_OPS.items()]
  tasks.append(_task("string", "lowercase", "lowercase", lowercase, shouty_word, (
      "convert the word to lowercase", "write the word in small letters", "make every letter of the word lower case",
      "turn all capitals in the word into lowercase letters")))
  tasks.append(_task("string", "capitalise_words", "capitalise_words", capitalise_words, phrase, (
      "capitalise the first letter of each word", "write the phrase in title case",
      "start every word with a capital letter", "make the initial letter of every word upper case")))
  for n in range(1, 6):
    tasks.append(_task("string", "first_n", f"first_{n}", functools.partial(first_chars, n=n),
                       functools.partial(word_input, min_len=n + 1), (
        f"give the first {_letters(n)} of the word", f"output only the opening {_letters(n)} of the word",
        f"keep the first {_letters(n)} of the word and drop the rest", f"write the word's first {_letters(n)}")))
    tasks.append(_task("string", "last_n", f"last_{n}", functools.partial(last_chars, n=n),
                       functools.partial(word_input, min_len=n + 1), (
        f"give the last {_letters(n)} of the word", f"output only the final {_letters(n)} of the word",
        f"keep the last {_letters(n)} of the word and drop the rest", f"write the word's closing {_letters(n)}")))
  for k in range(1, 14):
    tasks.append(_task("string", "rot_k", f"rot_{k}", functools.partial(rot, k=k), word_input, (
        f"shift every letter {k} {_places(k)} forward in the alphabet",
        f"apply a Caesar cipher with a shift of {k}", f"encode the word with ROT{k}",
        f"replace each letter with the letter {k} {_places(k)} later in the alphabet, wrapping from z back to a")))
  for old, new in (("a", "@"), ("e", "3"), ("o", "0"), ("s", "$"), ("i", "!"), ("t", "7")):
    tasks.append(_task("string", "replace_char", f"replace_{old}", functools.partial(replace_char, old=old, new=new),
                       functools.partial(word_input, contains=old), (
        f"replace every '{old}' in the word with '{new}'", f"substitute '{new}' for each letter {old} in the word",
        f"swap each occurrence of {old} for {new}", f"write the word with all {old} characters changed to {new}")))
  return tasks


def _compose_tasks() -> list[Task]:
  tasks = []
  for a, b in COMPOSITIONS:
    (fa, pa), (fb, pb) = STRING_OPS[a], STRING_OPS[b]
    cores = [frame.format(a=pa[i].format(o="the word"), b=pb[i].format(o="the result"))
             for i, frame in enumerate(_COMPOSE_FRAMES)]
    tasks.append(_task("compose", "compose", f"{a}+{b}", functools.partial(compose, first=fa, then=fb),
                       word_input, cores))
  return tasks


def _list_tasks() -> list[Task]:
  numbers, words = number_list, word_list
  tasks = [
      _task("list", "sort_ascending", "sort_ascending", functools.partial(sort_numbers, descending=False), numbers, (
          "sort the comma-separated numbers from smallest to largest", "put the numbers in ascending order",
          "order the list of numbers from low to high", "rearrange the numbers so they increase")),
      _task("list", "sort_descending", "sort_descending", functools.partial(sort_numbers, descending=True), numbers, (
          "sort the comma-separated numbers from largest to smallest", "put the numbers in descending order",
          "order the list of numbers from high to low", "rearrange the numbers so they decrease")),
      _task("list", "sort_words", "sort_words", sort_items, words, (
          "sort the comma-separated words alphabetically", "put the words of the list in alphabetical order",
          "order the list of words from a to z", "arrange the listed words in dictionary order")),
      _task("list", "reverse_list", "reverse_list", reverse_items, words, (
          "reverse the order of the comma-separated items", "list the items from last to first",
          "write the list backwards, item by item", "flip the order of the elements in the list")),
      _task("list", "first_item", "first_item", functools.partial(item_at, position=0), words, (
          "give the first item of the comma-separated list", "output only the element that comes first in the list",
          "return the opening entry of the list", "write just the first element of the list")),
      _task("list", "last_item", "last_item", functools.partial(item_at, position=-1), words, (
          "give the last item of the comma-separated list", "output only the element that comes last in the list",
          "return the final entry of the list", "write just the last element of the list")),
      _task("list", "max", "max", max_number, numbers, (
          "give the largest number in the list", "find the maximum of the comma-separated numbers",
          "return the biggest value in the list", "output the highest number")),
      _task("list", "min", "min", min_number, numbers, (
          "give the smallest number in the list", "find the minimum of the comma-separated numbers",
          "return the lowest value in the list", "output the least of the numbers")),
      _task("list", "sum", "sum", sum_numbers, numbers, (
          "add up all the numbers in the list", "give the sum of the comma-separated numbers",
          "compute the total of the list", "return what the numbers add up to")),
      _task("list", "count", "count", count_items, words, (
          "count how many items are in the list", "give the number of comma-separated elements",
          "return the length of the list", "say how many entries the list has")),
      _task("list", "unique", "unique", unique_items, functools.partial(number_list, with_duplicate=True), (
          "remove duplicate items from the list, keeping the first occurrence",
          "list each distinct element once, in order of first appearance",
          "drop repeated entries from the comma-separated list", "deduplicate the list while keeping its order")),
  ]
  for k in (1, 2, 3, 5, 10, 100):
    tasks.append(_task("list", "add_to_each", f"add_{k}", functools.partial(add_to_each, k=k), numbers, (
        f"add {k} to each number in the list", f"increase every number in the list by {k}",
        f"return the list with {k} added to every element", f"raise each comma-separated number by {k}")))
  return tasks


def _format_tasks() -> list[Task]:
  tasks = []
  short = functools.partial(phrase, low=1, high=3)
  for name, left, right in (("round", "(", ")"), ("square", "[", "]"), ("curly", "{", "}"), ("angle", "<", ">")):
    tasks.append(_task("format", "brackets", f"brackets_{name}", functools.partial(wrap, left=left, right=right),
                       short, (
        f"wrap the input in {name} brackets", f"put {left} before the input and {right} after it",
        f"enclose the text in {name} brackets like {left}this{right}", f"surround the input with {left} and {right}")))
  for name, mark in (("double", '"'), ("single", "'"), ("backtick", "`")):
    plural = "backticks" if name == "backtick" else f"{name} quotes"
    tasks.append(_task("format", "quotes", f"quotes_{name}", functools.partial(wrap, left=mark, right=mark), short, (
        f"wrap the input in {plural}", f"quote the text using {plural}", f"put a {mark} before and after the input",
        f"surround the text with {mark} on both sides")))
  for tag in ("b", "i", "em", "code", "item", "answer", "span"):
    tasks.append(_task("format", "tag", f"tag_{tag}", functools.partial(wrap, left=f"<{tag}>", right=f"</{tag}>"),
                       short, (
        f"wrap the input in {tag} tags", f"put the text inside <{tag}> and </{tag}>",
        f"enclose the input in an HTML {tag} element", f"surround the text with the tags <{tag}> and </{tag}>")))
  for name, plural, sep in (("hyphen", "hyphens", "-"), ("underscore", "underscores", "_"), ("pipe", "pipes", "|"),
                            ("slash", "slashes", "/"), ("comma", "commas", ", "), ("plus", "plus signs", " + "),
                            ("dot", "dots", ".")):
    tasks.append(_task("format", "join", f"join_{name}", functools.partial(join_words, separator=sep), phrase, (
        f"join the words with {plural}", f"replace the spaces between the words with '{sep}'",
        f"connect the words using '{sep}' as the separator",
        f"write the words separated by {plural} instead of spaces")))
  for name, sep in (("colon", ": "), ("equals", " = "), ("arrow", " -> ")):
    tasks.append(_task("format", "key_value", f"key_value_{name}", functools.partial(key_value, separator=sep),
                       key_value_input, (
        f"turn the two words into a key-value pair written as key{sep}value",
        f"write the first word as a key and the second as its value, separated by '{sep.strip()}'",
        f"format the input as key{sep}value", f"output the pair with '{sep.strip()}' between the key and the value")))
  return tasks


def _arithmetic_tasks() -> list[Task]:
  tasks = []
  small, big = functools.partial(integer_input, high=99), functools.partial(integer_input, high=999)
  for k in (1, 2, 3, 5, 7, 10, 12, 25, 100):
    tasks.append(_task("arithmetic", "add", f"add_{k}", functools.partial(add, k=k), big, (
        f"add {k} to the number", f"increase the number by {k}", f"return the number plus {k}",
        f"compute the input number + {k}")))
  for k in (1, 2, 3, 5, 10, 20):
    tasks.append(_task("arithmetic", "subtract", f"subtract_{k}", functools.partial(add, k=-k), big, (
        f"subtract {k} from the number", f"decrease the number by {k}", f"return the number minus {k}",
        f"compute the input number - {k}")))
  for k in (2, 3, 4, 5, 10):
    tasks.append(_task("arithmetic", "multiply", f"multiply_{k}", functools.partial(multiply, k=k), small, (
        f"multiply the number by {k}", f"return {k} times the number", f"compute the product of the number and {k}",
        f"scale the number by a factor of {k}")))
  for k in (2, 3, 4, 5, 7, 10):
    tasks.append(_task("arithmetic", "modulo", f"mod_{k}", functools.partial(modulo, k=k), big, (
        f"give the remainder when the number is divided by {k}", f"compute the number modulo {k}",
        f"return the number mod {k}", f"find what is left over after dividing the number by {k}")))
  return tasks


def _classify_tasks() -> list[Task]:
  tasks = []
  for category in CATEGORIES:
    a = f"{'an' if category[0] in VOWELS else 'a'} {category}"
    tasks.append(_task("classify", "is_category", f"is_{category.replace(' ', '_')}",
                       functools.partial(is_in_category, category=category),
                       functools.partial(category_word, category=category), (
        f"answer yes if the word is {a}, otherwise no", f"say whether the word names {a}: yes or no",
        f"reply yes when the word is {a} and no when it is not",
        f"decide if the given word is {a} and answer yes or no")))
  for good, bad in (("positive", "negative"), ("good", "bad")):
    tasks.append(_task("classify", "sentiment", f"sentiment_{good}_{bad}",
                       functools.partial(sentiment, labels=(good, bad)), review, (
        f"label the sentence as {good} or {bad} according to its sentiment",
        f"decide whether the review is {good} or {bad}", f"classify the opinion in the sentence as {good} or {bad}",
        f"say if the sentence expresses a {good} or a {bad} feeling")))
  names = ", ".join(list(CATEGORIES)[:-1]) + f" or {list(CATEGORIES)[-1]}"
  tasks.append(_task("classify", "category", "category", category_of, any_category_word, (
      f"name the category of the word: {names}", f"say which group the word belongs to, choosing from {names}",
      f"classify the word as one of {names}", f"tell what kind of thing the word is: {names}")))
  return tasks


def _extract_tasks() -> list[Task]:
  tasks = [
      _task("extract", "numbers", "numbers", extract_numbers, text_with_numbers, (
          "list the numbers that appear in the text, separated by commas", "extract every number from the sentence",
          "pull out all the numbers in the text, in order",
          "write only the numbers mentioned in the input, comma-separated")),
      _task("extract", "longest_word", "longest_word", longest_word,
            functools.partial(phrase_with_unique_extreme, longest=True), (
          "give the longest word in the text", "find the word with the most letters",
          "return the longest word of the sentence", "output whichever word in the input is longest")),
      _task("extract", "shortest_word", "shortest_word", shortest_word,
            functools.partial(phrase_with_unique_extreme, longest=False), (
          "give the shortest word in the text", "find the word with the fewest letters",
          "return the shortest word of the sentence", "output whichever word in the input is shortest")),
      _task("extract", "count_words", "count_words", count_words, functools.partial(phrase, low=2, high=9), (
          "count the words in the text", "give the number of words in the sentence",
          "say how many words the input contains", "return the word count of the text")),
      _task("extract", "first_word", "first_word", functools.partial(word_at, position=0), phrase, (
          "give the first word of the text", "output only the opening word of the sentence",
          "return the word the input starts with", "write just the first word")),
      _task("extract", "last_word", "last_word", functools.partial(word_at, position=-1), phrase, (
          "give the last word of the text", "output only the final word of the sentence",
          "return the word the input ends with", "write just the last word")),
  ]
  for marker in ("key", "code", "then", "called"):
    tasks.append(_task("extract", "word_after", f"word_after_{marker}", functools.partial(word_after, marker=marker),
                       functools.partial(phrase_with_marker, marker=marker), (
        f"give the word that comes right after '{marker}'", f"find '{marker}' in the text and output the next word",
        f"return the word following '{marker}'", f"look for the word '{marker}' and write the word after it")))
  return tasks


# New members of seen families (an unseen parameter) and one unseen combination of seen operations.
HELD_OUT_TASK_IDS = (
    "string/rot_7", "string/last_4", "string/replace_o", "list/add_5", "format/brackets_curly", "format/tag_em",
    "format/join_pipe", "arithmetic/add_7", "arithmetic/multiply_4", "arithmetic/mod_7", "classify/is_vehicle",
    "extract/word_after_code", "compose/remove_vowels+double_letters")


@functools.cache
def all_tasks() -> tuple[Task, ...]:
  tasks = (_string_tasks() + _compose_tasks() + _list_tasks() + _format_tasks() + _arithmetic_tasks()
           + _classify_tasks() + _extract_tasks())
  return tuple(tasks)


def train_tasks() -> tuple[Task, ...]:
  return tuple(t for t in all_tasks() if t.task_id not in HELD_OUT_TASK_IDS)


def held_out_tasks() -> tuple[Task, ...]:
  return tuple(t for t in all_tasks() if t.task_id in HELD_OUT_TASK_IDS)


def get_task(task_id: str) -> Task:
  return next(t for t in all_tasks() if t.task_id == task_id)


@dataclasses.dataclass(frozen=True)
class TaskExamples:
  """A grain random-access source of {'task_id', 'category', 'family', 'description', 'input', 'output'}.

  Index i is example i % num_examples_per_task of task i // num_examples_per_task; it depends only
  on (seed, task id, example number), so reordering or subsetting `tasks` keeps each task's examples.
  """

  tasks: tuple[Task, ...]
  seed: int = 0
  num_examples_per_task: int = 100
  descriptions: str = "train"  # which description split to draw from: 'train' | 'test' | 'all'

  def __post_init__(self):
    if self.descriptions not in ("train", "test", "all"):
      raise ValueError(f"descriptions must be 'train', 'test' or 'all', got {self.descriptions!r}")
    object.__setattr__(self, "tasks", tuple(self.tasks))

  def __len__(self) -> int:
    return len(self.tasks) * self.num_examples_per_task

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    task = self.tasks[index // self.num_examples_per_task]
    rng = np.random.default_rng([self.seed, zlib.crc32(task.task_id.encode()), index % self.num_examples_per_task])
    task_input, output = task.example(rng)
    return {"task_id": task.task_id, "category": task.category, "family": task.family,
            "description": str(rng.choice(task.split_descriptions(self.descriptions))), "input": task_input,
            "output": output}
