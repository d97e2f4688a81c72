"""Documents about fictional people, places and companies: knowledge no base model can have.

Each document describes one subject with `FACTS_PER_DOC` facts (or `facts_per_doc`, 1 to
`MAX_FACTS_PER_DOC`) drawn from its kind's catalogue
(a person's birthplace, profession, employer, ...; a town's river, population, dish, ...; a
company's founder, product, headquarters, ...), every fact phrased by one of several statement
templates, in shuffled order after a varied opening sentence. Every fact has one question,
phrased by one of several templates, whose short answer (a name, a number or a word) appears
verbatim in the document.

Names (people, towns, companies, rivers, pets, ...) are made by joining syllables, so they are
novel. The 'train' and 'test' splits draw documents from separate random streams and their
names from disjoint first letters (`NAME_INITIALS`): no held-out document shares an entity
with a training one. Plain attribute words (colours, professions, products) are shared.

`FictionalQA` holds one record per (document, question): index i is question i % facts_per_doc
of document i // facts_per_doc, and depends only on (seed, split, facts_per_doc, i). One fact per
document is the QA counterpart of the needle alone: copying a name without choosing among six.
`answer_kinds` keeps only the questions whose answer is of those kinds (`answer_kind`: a number, a
word of the fixed lists, a made-up name), in the same order: e.g. six-fact documents without their
name questions.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import zlib
from typing import Any, Callable, Mapping

import numpy as np

FACTS_PER_DOC = 6
SPLITS = ("train", "test")
# Every name of a split starts with one of its letters, so names of the two splits never coincide.
NAME_INITIALS = {"train": ("b", "br", "d", "dr", "f", "fl", "h", "k", "kr", "m", "p", "pr", "s", "st", "v"),
                 "test": ("c", "cl", "g", "gr", "j", "l", "n", "qu", "r", "t", "tr", "w", "z")}
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "nd", "rk", "m")
_COMPANY_SUFFIXES = ("Works", "Guild", "Company", "Foundry", "Trust", "Collective", "Industries", "Institute")

PROFESSIONS = ("baker", "cartographer", "beekeeper", "glassblower", "clockmaker", "archivist", "astronomer",
               "carpenter", "weaver", "botanist", "blacksmith", "surveyor", "potter", "librarian", "tailor",
               "engineer", "violinist", "midwife", "ferryman", "architect")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "teal", "crimson", "amber", "violet", "silver",
           "indigo")
PET_SPECIES = ("cat", "dog", "parrot", "tortoise", "rabbit", "goat", "ferret", "owl")
RELATIVES = ("sister", "brother", "cousin")
HOBBIES = ("fencing", "gardening", "chess", "rowing", "birdwatching", "pottery", "juggling", "sailing",
           "painting", "archery")
EXPORTS = ("copper", "wool", "salt", "timber", "honey", "tea", "glass", "marble", "cheese", "paper")
PRODUCTS = ("lanterns", "bicycles", "umbrellas", "telescopes", "clocks", "typewriters", "kites", "compasses",
            "pianos", "boots")
# The subject kinds event, product and organisation draw from these too.
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
MATERIALS = ("oak", "brass", "steel", "leather", "bamboo", "walnut", "canvas", "pewter", "linen", "slate")
PRIZES = ("trophy", "medal", "ribbon", "banner", "cup", "shield", "plaque", "rosette")
TOPICS = ("astronomy", "beekeeping", "folk music", "local history", "mountaineering", "bookbinding", "rowing",
          "mushroom hunting", "kite flying", "stamp collecting")
ANIMALS = ("heron", "badger", "beaver", "stag", "falcon", "hare", "lynx", "swan", "wolf", "tortoise")  # "a {x}"
PRODUCT_TYPES = ("lantern", "bicycle", "umbrella", "telescope", "clock", "typewriter", "kite", "compass", "piano",
                 "boot")
_EVENT_TYPES = ("Fair", "Regatta", "Congress", "Marathon", "Carnival", "Tournament")
_SOCIETY_TYPES = ("Society", "Club", "Association", "League", "Circle", "Guild")

ANSWER_KINDS = ("number", "listed word", "made-up name")
_LISTED = {w.lower() for words in (COLOURS, EXPORTS, HOBBIES, PET_SPECIES, PROFESSIONS, PRODUCTS, RELATIVES, MONTHS,
                                   MATERIALS, PRIZES, TOPICS, ANIMALS) for w in words}


def answer_kind(answer: str) -> str:
  """'number' (digits and commas), 'listed word' (a word of the generator's fixed lists: colours,
  professions, ...) or 'made-up name' (anything else: names are made of syllables)."""
  if re.fullmatch(r"[\d,]+", answer):
    return "number"
  return "listed word" if answer.lower() in _LISTED else "made-up name"


def check_answer_kinds(kinds: Any, where: str) -> tuple[str, ...] | None:
  """`kinds` as a tuple of known answer kinds (None: every kind)."""
  if kinds is None:
    return None
  kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
  unknown = [k for k in kinds if k not in ANSWER_KINDS]
  if unknown or not kinds:
    raise ValueError(f"{where} must name answer kinds among {ANSWER_KINDS} (or be None: all), got {kinds!r}")
  return kinds


def _syllable(rng: np.random.Generator, onsets: tuple[str, ...]) -> str:
  return str(rng.choice(onsets)) + str(rng.choice(_VOWELS)) + str(rng.choice(_CODAS))


def novel_word(rng: np.random.Generator, split: str, syllables: int) -> str:
  """A made-up lowercase word whose first letters mark its split."""
  return _syllable(rng, NAME_INITIALS[split]) + "".join(_syllable(rng, _ONSETS) for _ in range(syllables - 1))


def novel_name(rng: np.random.Generator, split: str) -> str:
  return novel_word(rng, split, int(rng.integers(2, 4))).capitalize()


def person_name(rng: np.random.Generator, split: str) -> str:
  return f"{novel_word(rng, split, 2).capitalize()} {novel_name(rng, split)}"


def company_name(rng: np.random.Generator, split: str) -> str:
  return f"{novel_name(rng, split)} {rng.choice(_COMPANY_SUFFIXES)}"


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


# A fact value and an optional detail ({x} in templates, e.g. the pet's species).
Drawn = tuple[str, str]
Draw = Callable[[np.random.Generator, str], Drawn]


def _named(make: Callable[[np.random.Generator, str], str]) -> Draw:
  return lambda rng, split: (make(rng, split), "")


def _picked(words: tuple[str, ...]) -> Draw:
  return lambda rng, split: (str(rng.choice(words)), "")


def _number(low: int, high: int, commas: bool = False) -> Draw:
  return lambda rng, split: (f"{int(rng.integers(low, high + 1)):{',' if commas else ''}}", "")


def _with_detail(make: Callable[[np.random.Generator, str], str], details: tuple[str, ...]) -> Draw:
  return lambda rng, split: (make(rng, split), str(rng.choice(details)))


@dataclasses.dataclass(frozen=True)
class FactSpec:
  """One fact type: how its value is drawn, stated and asked. Templates see {s} subject, {v} value,
  {a} the article for the value and {x} its detail."""

  name: str
  draw: Draw
  statements: tuple[str, ...]
  questions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class KindSpec:
  name: str
  subject: Callable[[np.random.Generator, str], str]
  openings: tuple[str, ...]
  facts: tuple[FactSpec, ...]


_FOUNDED = ("{s} was founded in {v}.", "The founding of {s} dates to {v}.", "{s} has existed since {v}.")
_FOUNDED_Q = ("When was {s} founded?", "In what year was {s} founded?", "What year does the founding of {s} date to?")

PERSON = KindSpec("person", person_name, (
    "This is a short profile of {s}.", "The following notes describe {s}.", "Here is what is known about {s}."), (
    FactSpec("birthplace", _named(novel_name), (
        "{s} was born in the town of {v}.", "{s} grew up in {v}, the town of their birth.",
        "The hometown of {s} is {v}."), (
        "Where was {s} born?", "In which town was {s} born?", "What is the hometown of {s}?")),
    FactSpec("profession", _picked(PROFESSIONS), (
        "{s} works as {a} {v}.", "By trade, {s} is {a} {v}.", "{s} earns a living as {a} {v}."), (
        "What is the profession of {s}?", "What does {s} do for a living?", "What job does {s} have?")),
    FactSpec("employer", _named(company_name), (
        "{s} is employed by {v}.", "{s} works for {v}.", "The employer of {s} is {v}."), (
        "Who employs {s}?", "Which company does {s} work for?", "What is the name of the employer of {s}?")),
    FactSpec("birth_year", _number(1850, 2005), (
        "{s} was born in the year {v}.", "The year of birth of {s} is {v}.", "{s} came into the world in {v}."), (
        "In what year was {s} born?", "What is the year of birth of {s}?", "When was {s} born?")),
    FactSpec("pet", _with_detail(novel_name, PET_SPECIES), (
        "{s} has a {x} named {v}.", "{s} keeps a pet {x} called {v}.", "The {x} that lives with {s} is called {v}."), (
        "What is the name of the pet {x} of {s}?", "What is the {x} of {s} called?",
        "What did {s} name their {x}?")),
    FactSpec("favourite_colour", _picked(COLOURS), (
        "The favourite colour of {s} is {v}.", "{s} likes the colour {v} best.", "Of all colours, {s} prefers {v}."), (
        "What is the favourite colour of {s}?", "Which colour does {s} like best?",
        "What colour does {s} prefer?")),
    FactSpec("relative", _with_detail(novel_name, RELATIVES), (
        "{s} has a {x} called {v}.", "The {x} of {s} is named {v}.", "{v} is the {x} of {s}."), (
        "What is the name of the {x} of {s}?", "Who is the {x} of {s}?", "What is the {x} of {s} called?")),
    FactSpec("hobby", _picked(HOBBIES), (
        "In their spare time, {s} enjoys {v}.", "The favourite hobby of {s} is {v}.", "{s} spends weekends on {v}."), (
        "What is the hobby of {s}?", "What does {s} enjoy in their spare time?", "How does {s} spend weekends?")),
))

PLACE = KindSpec("place", novel_name, (
    "{s} is a small town.", "The following notes describe the town of {s}.", "This is a short guide to {s}."), (
    FactSpec("river", _named(novel_name), (
        "{s} lies on the banks of the {v} River.", "The {v} River flows through {s}.",
        "The river that runs through {s} is the {v}."), (
        "Which river flows through {s}?", "On which river does {s} lie?", "What is the name of the river in {s}?")),
    FactSpec("population", _number(800, 95000, commas=True), (
        "{s} has a population of {v}.", "About {v} people live in {s}.", "The population of {s} is {v}."), (
        "What is the population of {s}?", "How many people live in {s}?", "How large is the population of {s}?")),
    FactSpec("dish", _named(lambda rng, split: novel_word(rng, split, 2)), (
        "{s} is famous for a stew called {v}.", "The signature dish of {s} is {v}.",
        "Visitors to {s} always try {v}, the local dish."), (
        "What dish is {s} famous for?", "What is the signature dish of {s}?",
        "Which local dish do visitors to {s} try?")),
    FactSpec("founded", _number(1100, 1900), _FOUNDED, _FOUNDED_Q),
    FactSpec("mayor", _named(person_name), (
        "The mayor of {s} is {v}.", "{s} is governed by its mayor, {v}.", "{v} serves as the mayor of {s}."), (
        "Who is the mayor of {s}?", "Who governs {s} as mayor?", "What is the name of the mayor of {s}?")),
    FactSpec("province", _named(novel_name), (
        "{s} is in the province of {v}.", "{s} belongs to the province of {v}.", "The province of {v} includes {s}."), (
        "In which province is {s}?", "Which province does {s} belong to?", "What province includes {s}?")),
    FactSpec("festival", _named(novel_name), (
        "Every spring, {s} holds the {v} Festival.", "The {v} Festival takes place in {s} each spring.",
        "Each spring brings the {v} Festival to {s}."), (
        "What festival does {s} hold every spring?", "Which festival takes place in {s} each spring?",
        "What is the name of the spring festival of {s}?")),
    FactSpec("export", _picked(EXPORTS), (
        "{s} is known for exporting {v}.", "The main export of {s} is {v}.",
        "Most of the {v} sold in the region comes from {s}."), (
        "What does {s} export?", "What is the main export of {s}?", "Which product is {s} known for exporting?")),
))

COMPANY = KindSpec("company", company_name, (
    "{s} is a company.", "The following notes describe the company {s}.", "This is a short profile of {s}."), (
    FactSpec("founded", _number(1780, 2015), _FOUNDED, _FOUNDED_Q),
    FactSpec("headquarters", _named(novel_name), (
        "{s} has its headquarters in {v}.", "The head office of {s} is in the town of {v}.", "{s} is based in {v}."), (
        "Where is {s} headquartered?", "In which town is the head office of {s}?", "Where is {s} based?")),
    FactSpec("founder", _named(person_name), (
        "{s} was founded by {v}.", "{v} founded {s}.", "The founder of {s} is {v}."), (
        "Who founded {s}?", "Who is the founder of {s}?", "By whom was {s} founded?")),
    FactSpec("product", _picked(PRODUCTS), (
        "{s} makes {v}.", "The best-known product of {s} is {v}.", "{s} manufactures {v}."), (
        "What does {s} make?", "What product is {s} known for?", "What does {s} manufacture?")),
    FactSpec("employees", _number(12, 9500, commas=True), (
        "{s} employs {v} people.", "{s} has {v} employees.", "The staff of {s} numbers {v}."), (
        "How many people does {s} employ?", "How many employees does {s} have?", "How large is the staff of {s}?")),
    FactSpec("chief", _named(person_name), (
        "The chief executive of {s} is {v}.", "{v} runs {s} as its chief executive.", "{s} is led by {v}."), (
        "Who is the chief executive of {s}?", "Who runs {s}?", "Who leads {s}?")),
    FactSpec("logo_colour", _picked(COLOURS), (
        "The logo of {s} is {v}.", "{s} uses a {v} logo.", "The colour of the logo of {s} is {v}."), (
        "What colour is the logo of {s}?", "Which colour does {s} use for its logo?",
        "What is the colour of the logo of {s}?")),
))

EVENT = KindSpec("event", lambda rng, split: f"{novel_name(rng, split)} {rng.choice(_EVENT_TYPES)}", (
    "The {s} is held once a year.", "The following notes describe the {s}.", "This is a short history of the {s}."), (
    FactSpec("first_held", _number(1820, 2010), (
        "The {s} was first held in {v}.", "The first {s} took place in {v}.", "The {s} dates back to {v}."), (
        "When was the {s} first held?", "In what year did the first {s} take place?",
        "What year does the {s} date back to?")),
    FactSpec("host_town", _named(novel_name), (
        "The {s} takes place in the town of {v}.", "Every year the {s} comes to {v}.", "{v} hosts the {s}."), (
        "Where does the {s} take place?", "Which town hosts the {s}?", "In which town is the {s} held?")),
    FactSpec("organiser", _named(person_name), (
        "The {s} is organised by {v}.", "{v} organises the {s}.", "The organiser of the {s} is {v}."), (
        "Who organises the {s}?", "Who is the organiser of the {s}?", "By whom is the {s} organised?")),
    FactSpec("attendance", _number(300, 90000, commas=True), (
        "About {v} people attend the {s}.", "The {s} draws {v} visitors.", "Attendance at the {s} is {v}."), (
        "How many people attend the {s}?", "How many visitors does the {s} draw?",
        "What is the attendance at the {s}?")),
    FactSpec("month", _picked(MONTHS), (
        "The {s} is held every {v}.", "Each year the {s} falls in {v}.", "The {s} takes place in {v}."), (
        "In which month is the {s} held?", "When in the year does the {s} fall?",
        "In what month does the {s} take place?")),
    FactSpec("prize", _picked(PRIZES), (
        "The winner of the {s} receives {a} {v}.", "At the {s} the best entry wins {a} {v}.",
        "The prize of the {s} is {a} {v}."), (
        "What does the winner of the {s} receive?", "What does the best entry at the {s} win?",
        "What is the prize of the {s}?")),
    FactSpec("mascot", _with_detail(novel_name, ANIMALS), (
        "The mascot of the {s} is a {x} called {v}.", "A {x} named {v} is the mascot of the {s}.",
        "The {s} has a {x} mascot named {v}."), (
        "What is the name of the mascot of the {s}?", "What is the {x} mascot of the {s} called?",
        "What is the mascot of the {s} named?")),
    FactSpec("last_winner", _named(person_name), (
        "Last year the {s} was won by {v}.", "{v} won the {s} last year.", "The most recent winner of the {s} is {v}."), (
        "Who won the {s} last year?", "Who is the most recent winner of the {s}?", "Who won the last {s}?")),
))

PRODUCT = KindSpec("product", lambda rng, split: f"{novel_name(rng, split)} {rng.choice(PRODUCT_TYPES)}", (
    "The {s} is a product.", "The following notes describe the {s}.", "Here is what is known about the {s}."), (
    FactSpec("maker", _named(company_name), (
        "The {s} is made by {v}.", "{v} manufactures the {s}.", "The maker of the {s} is {v}."), (
        "Who makes the {s}?", "Which company manufactures the {s}?", "Who is the maker of the {s}?")),
    FactSpec("designer", _named(person_name), (
        "The {s} was designed by {v}.", "{v} designed the {s}.", "The designer of the {s} is {v}."), (
        "Who designed the {s}?", "Who is the designer of the {s}?", "By whom was the {s} designed?")),
    FactSpec("price", _number(15, 4800), (
        "The {s} sells for {v} crowns.", "A new {s} costs {v} crowns.", "The price of the {s} is {v} crowns."), (
        "How many crowns does the {s} cost?", "What is the price of the {s} in crowns?",
        "How much does a new {s} cost in crowns?")),
    FactSpec("launched", _number(1890, 2024), (
        "The {s} was launched in {v}.", "The {s} first went on sale in {v}.", "The {s} came out in {v}."), (
        "When was the {s} launched?", "In what year did the {s} first go on sale?", "What year did the {s} come out?")),
    FactSpec("colour", _picked(COLOURS), (
        "The {s} is sold in {v}.", "Most buyers know the {s} by its {v} finish.", "The {s} comes in {v}."), (
        "What colour is the {s} sold in?", "What colour is the finish of the {s}?", "Which colour does the {s} come in?")),
    FactSpec("material", _picked(MATERIALS), (
        "The {s} is made of {v}.", "The body of the {s} is {v}.", "The {s} is built from {v}."), (
        "What is the {s} made of?", "What material is the body of the {s}?", "What is the {s} built from?")),
    FactSpec("factory", _named(novel_name), (
        "The {s} is built in a factory in {v}.", "Every {s} comes from the factory at {v}.",
        "The factory that builds the {s} is in {v}."), (
        "Where is the {s} built?", "Which town is the factory of the {s} in?", "Where does every {s} come from?")),
    FactSpec("weight", _number(120, 9500, commas=True), (
        "The {s} weighs {v} grams.", "A {s} has a weight of {v} grams.", "The weight of the {s} is {v} grams."), (
        "How many grams does the {s} weigh?", "What is the weight of the {s} in grams?",
        "How heavy is the {s} in grams?")),
))

ORGANISATION = KindSpec("organisation", lambda rng, split: f"{novel_name(rng, split)} {rng.choice(_SOCIETY_TYPES)}", (
    "The {s} is a club for enthusiasts.", "The following notes describe the {s}.", "This is a short profile of the {s}."), (
    FactSpec("founded", _number(1750, 2015), (
        "The {s} was founded in {v}.", "The {s} has met since {v}.", "The founding of the {s} dates to {v}."), (
        "When was the {s} founded?", "In what year was the {s} founded?", "Since when has the {s} met?")),
    FactSpec("founder", _named(person_name), (
        "The {s} was founded by {v}.", "{v} founded the {s}.", "The founder of the {s} is {v}."), (
        "Who founded the {s}?", "Who is the founder of the {s}?", "By whom was the {s} founded?")),
    FactSpec("members", _number(20, 12000, commas=True), (
        "The {s} has {v} members.", "Membership of the {s} stands at {v}.", "{v} people belong to the {s}."), (
        "How many members does the {s} have?", "What does membership of the {s} stand at?",
        "How many people belong to the {s}?")),
    FactSpec("meets_in", _named(novel_name), (
        "The {s} meets in the town of {v}.", "Meetings of the {s} are held in {v}.", "The {s} gathers in {v}."), (
        "Where does the {s} meet?", "In which town are meetings of the {s} held?", "Where does the {s} gather?")),
    FactSpec("president", _named(person_name), (
        "The president of the {s} is {v}.", "{v} presides over the {s}.", "The {s} is chaired by {v}."), (
        "Who is the president of the {s}?", "Who presides over the {s}?", "Who chairs the {s}?")),
    FactSpec("topic", _picked(TOPICS), (
        "The members of the {s} share a passion for {v}.", "The {s} is devoted to {v}.", "At the {s} everyone talks about {v}."), (
        "What is the {s} devoted to?", "What passion do the members of the {s} share?",
        "What does everyone at the {s} talk about?")),
    FactSpec("newsletter", _named(novel_name), (
        "The newsletter of the {s} is called {v}.", "The {s} publishes a newsletter named {v}.",
        "Members of the {s} read its newsletter, {v}."), (
        "What is the newsletter of the {s} called?", "What is the name of the newsletter of the {s}?",
        "Which newsletter does the {s} publish?")),
    FactSpec("emblem", _picked(ANIMALS), (
        "The emblem of the {s} is {a} {v}.", "{a} {v} appears on the emblem of the {s}.",
        "The {s} has {a} {v} as its emblem."), (
        "What animal is on the emblem of the {s}?", "What is the emblem of the {s}?",
        "Which animal does the {s} have as its emblem?")),
))

SUBJECT_KINDS = {kind.name: kind for kind in (PERSON, PLACE, COMPANY, EVENT, PRODUCT, ORGANISATION)}
# What documents were about before events, products and organisations were added: the default, so
# every study run on them reads the same documents.
KINDS = (PERSON, PLACE, COMPANY)
MAX_FACTS_PER_DOC = min(len(kind.facts) for kind in SUBJECT_KINDS.values())  # a document's facts are all of different types


def check_subject_kinds(names: Any, where: str) -> tuple[str, ...]:
  """`names` as a tuple of known subject kinds (None: the default three)."""
  if names is None:
    return tuple(k.name for k in KINDS)
  names = (names,) if isinstance(names, str) else tuple(names)
  unknown = [n for n in names if n not in SUBJECT_KINDS]
  if unknown or not names or len(set(names)) != len(names):
    raise ValueError(f"{where} must name distinct subject kinds among {tuple(SUBJECT_KINDS)}, got {names!r}")
  return names


@dataclasses.dataclass(frozen=True)
class Fact:
  name: str
  answer: str
  statement: str
  questions: tuple[str, ...]  # every phrasing of this fact's question


@dataclasses.dataclass(frozen=True)
class FictionalDocument:
  doc_id: str
  kind: str
  subject: str
  text: str
  facts: tuple[Fact, ...]  # in question order


def _fill(template: str, subject: str, value: str, detail: str) -> str:
  sentence = template.format(s=subject, v=value, a=_article(value), x=detail)
  return sentence[0].upper() + sentence[1:]


def _draw_fact(rng: np.random.Generator, split: str, spec: FactSpec, subject: str, used: set[str]) -> Fact:
  # Values of one document are all different (and differ from its subject), so every answer is unique.
  value, detail = spec.draw(rng, split)
  while value in used:
    value, detail = spec.draw(rng, split)
  used.add(value)
  questions = tuple(_fill(q, subject, value, detail) for q in spec.questions)
  return Fact(spec.name, value, _fill(str(rng.choice(spec.statements)), subject, value, detail), questions)


def _check_facts_per_doc(facts_per_doc: int) -> None:
  if not 1 <= facts_per_doc <= MAX_FACTS_PER_DOC:
    raise ValueError(f"facts_per_doc must be between 1 and {MAX_FACTS_PER_DOC}, got {facts_per_doc}")


def make_document(seed: int, split: str, doc_index: int, facts_per_doc: int = FACTS_PER_DOC,
                  subject_kinds: tuple[str, ...] | None = None) -> FictionalDocument:
  """Document `doc_index` of `split`, about a subject of one of `subject_kinds` (None: person, place,
  company): a pure function of its arguments."""
  _check_facts_per_doc(facts_per_doc)
  kinds = [SUBJECT_KINDS[n] for n in check_subject_kinds(subject_kinds, "subject_kinds")]
  rng = np.random.default_rng([seed, SPLITS.index(split), doc_index])
  kind = kinds[int(rng.integers(len(kinds)))]
  subject = kind.subject(rng, split)
  specs = [kind.facts[j] for j in rng.choice(len(kind.facts), facts_per_doc, replace=False)]
  used = {subject}
  facts = tuple(_draw_fact(rng, split, spec, subject, used) for spec in specs)
  order = rng.permutation(facts_per_doc)
  opening = _fill(str(rng.choice(kind.openings)), subject, subject, "")
  text = " ".join([opening, *(facts[j].statement for j in order)])
  return FictionalDocument(f"{split}-{doc_index:06d}", kind.name, subject, text, facts)


@dataclasses.dataclass(frozen=True)
class FictionalQA:
  """A grain random-access source of {'document', 'query', 'answer', 'doc_id', 'fact'}: every question
  of `num_docs` documents, or with `answer_kinds` those whose answer is of these kinds. Documents are
  about `subject_kinds` (None: person, place and company; `SUBJECT_KINDS` adds event, product and
  organisation)."""

  num_docs: int
  split: str = "train"
  seed: int = 0
  facts_per_doc: int = FACTS_PER_DOC
  answer_kinds: tuple[str, ...] | None = None  # None: every question
  subject_kinds: tuple[str, ...] | None = None

  def __post_init__(self):
    if self.split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
    _check_facts_per_doc(self.facts_per_doc)
    object.__setattr__(self, "answer_kinds", check_answer_kinds(self.answer_kinds, "FictionalQA.answer_kinds"))
    if self.subject_kinds is not None:
      object.__setattr__(self, "subject_kinds", check_subject_kinds(self.subject_kinds, "FictionalQA.subject_kinds"))

  @functools.cached_property
  def _kept(self) -> tuple[int, ...] | None:
    """Indices of the questions `answer_kinds` keeps, in order; None when it keeps all. Made on first
    use (every document is drawn: about a second per 2,000)."""
    if self.answer_kinds is None:
      return None
    kept = tuple(d * self.facts_per_doc + j for d in range(self.num_docs)
                 for j, fact in enumerate(self.document(d).facts) if answer_kind(fact.answer) in self.answer_kinds)
    if not kept:
      raise ValueError(f"no question of {self.num_docs} documents has an answer of kinds {self.answer_kinds}")
    return kept

  def __len__(self) -> int:
    return self.num_docs * self.facts_per_doc if self._kept is None else len(self._kept)

  def document(self, doc_index: int) -> FictionalDocument:
    if not 0 <= doc_index < self.num_docs:
      raise IndexError(f"document {doc_index} out of range for {self.num_docs} documents")
    return make_document(self.seed, self.split, doc_index, self.facts_per_doc, self.subject_kinds)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    doc_index, question = divmod(index if self._kept is None else self._kept[index], self.facts_per_doc)
    doc = self.document(doc_index)
    # The phrasing gets its own stream so that it depends on the record, not on sibling questions.
    rng = np.random.default_rng([self.seed, SPLITS.index(self.split), doc_index, question])
    return _record(doc, doc.facts[question], str(rng.choice(doc.facts[question].questions)))

  def qa_pairs(self, doc_index: int) -> list[dict[str, Any]]:
    """Every question of one document, in index order (`answer_kinds` aside)."""
    every = dataclasses.replace(self, answer_kinds=None)
    return [every[doc_index * self.facts_per_doc + j] for j in range(self.facts_per_doc)]


def _record(doc: FictionalDocument, fact: Fact, query: str) -> dict[str, Any]:
  return {"document": doc.text, "query": query, "answer": fact.answer, "doc_id": doc.doc_id, "fact": fact.name}


# Self-generated queries: template questions the base model answers with the document in context
# (its answers become the context-distillation targets), like the paper's 10 LLM-written queries.
GENERIC_QUERIES = (
    "What is the text about?", "Summarize the text in one sentence.", "What are the main facts stated in the text?",
    "List three details mentioned in the text.", "What is the first thing the text says?",
    "What is the last thing the text says?", "Which names appear in the text?",
    "Which numbers appear in the text, and what do they refer to?", "Write a short title for the text.",
    "Describe the text to someone who has not read it.", "Which places are mentioned in the text?",
    "Who is mentioned in the text?")
ENTITY_QUERIES = ("What does the text say about {e}?", "Who or what is {e}?", "Tell me about {e}.",
                  "What is {e} known for?", "Which facts are given about {e}?", "How is {e} described?")
# Capitalised only because they start a sentence.
_NOT_NAMES = {"The", "This", "These", "There", "Here", "In", "On", "At", "For", "Every", "Each", "It", "A", "An",
              "By", "Of", "About", "Most", "Visitors", "He", "She", "They", "We", "I", "But", "And", "When", "After",
              "Attendance", "Last", "Meetings", "Members", "Membership"}
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*")


def entity_mentions(text: str) -> list[str]:
  """Capitalised phrases with leading sentence-start words dropped, in order of first mention."""
  found = []
  for phrase in _CAPITALISED.findall(text):
    words = phrase.split()
    while words and words[0] in _NOT_NAMES:
      words = words[1:]
    name = " ".join(words)
    if name and name not in found:
      found.append(name)
  return found


def generated_queries(record: Mapping[str, Any], n: int, *, seed: int = 0) -> list[str]:
  """Up to `n` distinct template queries about `record['document']` (any document, not only fictional).

  The draw depends only on (seed, document text), so a document gets the same queries every epoch.
  """
  text = record["document"]
  pool = list(GENERIC_QUERIES) + [q.format(e=e) for e in entity_mentions(text) for q in ENTITY_QUERIES]
  rng = np.random.default_rng([seed, zlib.crc32(text.encode())])
  return [pool[j] for j in rng.choice(len(pool), min(n, len(pool)), replace=False)]
