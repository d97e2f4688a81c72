"""Where evaluation records come from: the library's held-out generators, a JSON Lines file, a TFDS
dataset prepared locally, needle-in-a-haystack haystacks at given lengths, chosen fictional
documents, the hand-written documents shipped with the library or the Text-to-LoRA task library's
tasks. Each is a frozen dataclass (gin binds it as `lora_hyper.EvalConfig.data =
@lora_hyper.NiahData()`) whose `records(kind, count_tokens)` lists the records; a record may carry a
'group' (a NIAH haystack's target length, a fictional or hand-written answer's kind, a task) that
results are broken down by, a 'task_id' (the other_source control then takes another task's
description, task_lora that task's LoRA) and 'demonstrations' ([input, output] pairs of its task,
which the few_shot condition puts before its prompt)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

from lora_hyper.hypernetworks import kinds

TokenCounter = Callable[[str], int]
# 24 short paragraphs written by hand in varied styles (news brief, letter, chat log, verse, ...), 3
# questions each whose answers are spans of the paragraph: {document, query, answer, group, style}.
HANDWRITTEN_QA = Path(__file__).parents[1] / "data" / "handwritten_qa.jsonl"
HANDWRITTEN_KINDS = ("name", "number", "word")
STACK_SEPARATOR = "\n\n"  # between a stack's documents in the prompt


def builtin_records(kind: str, limit: int) -> list[dict]:
  """`limit` held-out records: fictional documents' questions, or held-out tasks with held-out descriptions."""
  from lora_hyper.data import fictional, tasks  # pylint: disable=import-outside-toplevel

  if kind == "doc_to_lora":
    source = fictional.FictionalQA(num_docs=math.ceil(limit / fictional.FACTS_PER_DOC), split="test")
    return [source[i] for i in range(limit)]
  held_out = tasks.held_out_tasks()
  per_task = math.ceil(limit / len(held_out))
  source = tasks.TaskExamples(held_out, num_examples_per_task=per_task, descriptions="test")
  # Task-major indices; take them example-major so a small limit still covers many tasks.
  return [source[t * per_task + j] for j in range(per_task) for t in range(len(held_out))][:limit]


def read_records(data: str, kind: str, limit: int) -> list[dict]:
  """`limit` records: 'builtin' held-out data, or the lines of a JSONL file with the kind's fields."""
  if data == "builtin":
    return builtin_records(kind, limit)
  fields = kinds.get(kind).record_fields
  path = Path(data)
  if not path.is_file():
    raise FileNotFoundError(f"data file {data!r} does not exist (or pass --data builtin)")
  records = []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{data}:{number}: not a JSON object: {e}") from e
    if not isinstance(record, dict) or any(not isinstance(record.get(f), str) for f in fields):
      raise ValueError(f"{data}:{number}: a {kind} record needs string fields {', '.join(fields)}")
    records.append(record)
  if not records:
    raise ValueError(f"{data} holds no records")
  return records[:limit]


def _positive(name: str, value: int) -> None:
  if not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class BuiltinData:
  """Held-out fictional documents' questions (Doc-to-LoRA) or held-out tasks (Text-to-LoRA)."""

  limit: int = 60

  def __post_init__(self):
    _positive("BuiltinData.limit", self.limit)

  def records(self, kind: str, count_tokens: TokenCounter) -> list[dict]:
    del count_tokens
    return builtin_records(kind, self.limit)


@dataclasses.dataclass(frozen=True)
class JsonlData:
  """The first `limit` lines of a JSON Lines file holding the hypernetwork kind's record fields."""

  path: str
  limit: int = 1_000_000

  def __post_init__(self):
    _positive("JsonlData.limit", self.limit)

  def records(self, kind: str, count_tokens: TokenCounter) -> list[dict]:
    del count_tokens
    return read_records(self.path, kind, self.limit)


@dataclasses.dataclass(frozen=True)
class TfdsData:
  """The first `limit` examples of a TFDS split prepared under `data_dir` (`data.tfds_source`)."""

  name: str
  split: str
  data_dir: str
  limit: int = 1_000

  def __post_init__(self):
    _positive("TfdsData.limit", self.limit)

  def records(self, kind: str, count_tokens: TokenCounter) -> list[dict]:
    from lora_hyper.data import tfds_source  # pylint: disable=import-outside-toplevel  (tensorflow_datasets)

    del count_tokens
    if kind != "doc_to_lora":
      raise ValueError("TfdsData holds {document, query, answer} records: it needs a doc_to_lora hypernetwork")
    source = tfds_source.TfdsQASource(self.name, self.split, self.data_dir)
    return [source[i] for i in range(min(self.limit, len(source)))]


@dataclasses.dataclass(frozen=True)
class NiahData:
  """`per_length` held-out haystacks at each target length in base-model tokens (seed 1: training used 0),
  every depth bin covered evenly; each record's 'group' is its target length."""

  lengths: tuple[int, ...] = (256, 1024)
  per_length: int = 10
  seed: int = 1
  digits: tuple[int, int] = (4, 4)

  def __post_init__(self):
    object.__setattr__(self, "lengths", tuple(self.lengths))
    object.__setattr__(self, "digits", tuple(self.digits))
    for length in self.lengths:
      _positive("NiahData.lengths", length)
    _positive("NiahData.per_length", self.per_length)
    if not self.lengths:
      raise ValueError("NiahData.lengths is empty")

  def records(self, kind: str, count_tokens: TokenCounter) -> list[dict]:
    from lora_hyper.data import niah  # pylint: disable=import-outside-toplevel

    if kind != "doc_to_lora":
      raise ValueError("NiahData holds haystacks: it needs a doc_to_lora hypernetwork")
    out = []
    for length in self.lengths:
      source = niah.NiahSource(self.per_length, length=length, seed=self.seed, count_tokens=count_tokens,
                               digits=self.digits)
      out += [{**source[i], "group": length} for i in range(self.per_length)]
    return out


@dataclasses.dataclass(frozen=True)
class FictionalData:
  """Every question of `docs` fictional documents of `split` from `first_doc` on: 'test' holds names
  no training document has (held out); 'train' from past the documents training read validates.
  With `by_answer_kind` each record's 'group' is its answer's kind (`fictional.answer_kind`: number,
  listed word, made-up name), so results are also scored per kind."""

  docs: int = 24
  split: str = "test"
  first_doc: int = 0
  facts_per_doc: int = 6
  seed: int = 0
  by_answer_kind: bool = True
  subject_kinds: tuple[str, ...] | None = None  # None: person, place, company (`fictional.SUBJECT_KINDS`)
  # Documents per adapter: consecutive documents stacked into one (their questions asked of it; in the
  # prompt, for the context condition, they are joined by blank lines).
  stack: int = 1

  def __post_init__(self):
    from lora_hyper.data import fictional  # pylint: disable=import-outside-toplevel

    _positive("FictionalData.docs", self.docs)
    if not isinstance(self.first_doc, int) or self.first_doc < 0:
      raise ValueError(f"FictionalData.first_doc must be a non-negative integer, got {self.first_doc!r}")
    if self.split not in fictional.SPLITS:
      raise ValueError(f"FictionalData.split must be one of {fictional.SPLITS}, got {self.split!r}")
    if not isinstance(self.facts_per_doc, int) or not 1 <= self.facts_per_doc <= fictional.MAX_FACTS_PER_DOC:
      raise ValueError(f"FictionalData.facts_per_doc must be between 1 and {fictional.MAX_FACTS_PER_DOC}, "
                       f"got {self.facts_per_doc!r}")
    _positive("FictionalData.stack", self.stack)
    if self.docs % self.stack:
      raise ValueError(f"FictionalData.docs={self.docs} is not a multiple of FictionalData.stack={self.stack}")
    if self.subject_kinds is not None:
      object.__setattr__(self, "subject_kinds",
                         fictional.check_subject_kinds(self.subject_kinds, "FictionalData.subject_kinds"))

  def records(self, kind: str, count_tokens: TokenCounter) -> list[dict]:
    from lora_hyper.data import fictional  # pylint: disable=import-outside-toplevel

    del count_tokens
    if kind != "doc_to_lora":
      raise ValueError("FictionalData holds documents: it needs a doc_to_lora hypernetwork")
    source = fictional.FictionalQA(self.first_doc + self.docs, self.split, self.seed, self.facts_per_doc,
                                   subject_kinds=self.subject_kinds)
    records = []
    for first in range(self.first_doc, self.first_doc + self.docs, self.stack):
      pairs = [source.qa_pairs(d) for d in range(first, first + self.stack)]  # each document drawn once
      texts = [questions[0]["document"] for questions in pairs]
      stacked = {"document": STACK_SEPARATOR.join(texts), "documents": texts} if self.stack > 1 else {}
      records += [{**r, **stacked} for questions in pairs for r in questions]
    if self.by_answer_kind:
      records = [{**r, "group": fictional.answer_kind(r["answer"])} for r in records]
    return records


@dataclasses.dataclass(frozen=True)
class HandwrittenData:
  """Every question of the hand-written documents shipped with the library (`HANDWRITTEN_QA`): made-up
  people, places and things in 24 styles no generator wrote. Each record's 'group' is its answer's
  kind: a made-up 'name', a 'number' as written, or a common 'word' or short phrase."""

  def records(self, kind: str, count_tokens: TokenCounter) -> list[dict]:
    del count_tokens
    if kind != "doc_to_lora":
      raise ValueError("HandwrittenData holds documents: it needs a doc_to_lora hypernetwork")
    return read_records(str(HANDWRITTEN_QA), kind, limit=1_000_000)


@dataclasses.dataclass(frozen=True)
class TaskData:
  """Text-to-LoRA's task library: `per_task` examples (seed 1: training drew seed 0) of every task of
  `split` ('test': the 13 held-out tasks; 'train': the training tasks, new examples; `num_tasks` of
  them spread evenly as `lora_hyper.task_library` picks them), task-major, each with a description
  drawn from the `descriptions` split (None: 'test', held-out phrasings, for held-out tasks and
  'train', the seen ones, for training tasks). Each record's group is its task. `shots` > 0 gives
  every record that many demonstrations of its task (seed `demonstration_seed`), for few_shot."""

  split: str = "test"
  per_task: int = 20
  descriptions: str | None = None
  seed: int = 1
  num_tasks: int | None = None
  shots: int = 0
  demonstration_seed: int = 2

  def __post_init__(self):
    from lora_hyper.data import tasks  # pylint: disable=import-outside-toplevel

    _positive("TaskData.per_task", self.per_task)
    if not isinstance(self.shots, int) or self.shots < 0:
      raise ValueError(f"TaskData.shots must be a non-negative integer, got {self.shots!r}")
    if self.descriptions not in (None, "train", "test", "all"):
      raise ValueError(f"TaskData.descriptions must be 'train', 'test', 'all' or None, got {self.descriptions!r}")
    try:
      tasks.split_tasks(self.split, self.num_tasks)
    except ValueError as e:
      raise ValueError(f"TaskData: {e}") from None

  def records(self, kind: str, count_tokens: TokenCounter) -> list[dict]:
    from lora_hyper.data import tasks  # pylint: disable=import-outside-toplevel

    del count_tokens
    if kind != "text_to_lora":
      raise ValueError("TaskData holds task descriptions and examples: it needs a text_to_lora hypernetwork")
    chosen = tasks.split_tasks(self.split, self.num_tasks)
    descriptions = self.descriptions or ("test" if self.split == "test" else "train")
    source = tasks.TaskExamples(chosen, seed=self.seed, num_examples_per_task=self.per_task,
                                descriptions=descriptions)
    records = [{**r, "group": r["task_id"]} for r in (source[i] for i in range(len(source)))]
    if self.shots:
      demos = tasks.TaskExamples(chosen, seed=self.demonstration_seed, num_examples_per_task=self.shots)
      shown = {t.task_id: [[demos[k * self.shots + j]["input"], demos[k * self.shots + j]["output"]]
                           for j in range(self.shots)] for k, t in enumerate(chosen)}
      records = [{**r, "demonstrations": shown[r["task_id"]]} for r in records]
    return records
