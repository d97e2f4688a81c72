"""The task catalogue: `Task`, the per-category builders with each task's descriptions, and the
fixed held-out split (`all_tasks`, `train_tasks`, `held_out_tasks`, `get_task`)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

from lora_hyper.data.tasks._functions import (
    add,
    add_to_each,
    capitalise_words,
    category_of,
    compose,
    count_items,
    count_words,
    double_letters,
    extract_numbers,
    first_chars,
    is_in_category,
    item_at,
    join_words,
    key_value,
    last_chars,
    longest_word,
    lowercase,
    max_number,
    min_number,
    modulo,
    multiply,
    remove_vowels,
    replace_char,
    reverse,
    reverse_items,
    rot,
    sentiment,
    shortest_word,
    sort_items,
    sort_letters,
    sort_numbers,
    sum_numbers,
    unique_items,
    uppercase,
    word_after,
    word_at,
    wrap,
)
from lora_hyper.data.tasks._inputs import (
    CATEGORIES,
    VOWELS,
    Rng,
    any_category_word,
    category_word,
    integer_input,
    key_value_input,
    number_list,
    phrase,
    phrase_with_marker,
    phrase_with_unique_extreme,
    review,
    shouty_word,
    text_with_numbers,
    word_input,
    word_list,
)


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


def split_tasks(split: str, num_tasks: int | None = None) -> tuple[Task, ...]:
  """The split's tasks ('train', 'test': the held-out ones, or 'all'), or `num_tasks` of them evenly
  spaced (the split is ordered by category, so a prefix would be one category): scaling studies."""
  chosen = {"train": train_tasks, "test": held_out_tasks, "all": all_tasks}
  if split not in chosen:
    raise ValueError(f"task split must be one of {sorted(chosen)}, got {split!r}")
  every = chosen[split]()
  if num_tasks is None:
    return every
  if not 1 <= num_tasks <= len(every):
    raise ValueError(f"num_tasks must be between 1 and {len(every)} (the {split!r} split), got {num_tasks}")
  return tuple(every[i] for i in sorted({round(i * len(every) / num_tasks) for i in range(num_tasks)}))


def get_task(task_id: str) -> Task:
  return next(t for t in all_tasks() if t.task_id == task_id)
