"""Input generators of the task library and the word lists they draw from: each takes a numpy
Generator and returns one input string."""

from __future__ import annotations

import numpy as np

Rng = np.random.Generator


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
