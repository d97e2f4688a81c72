"""The hand-written QA set (lora_hyper/data/handwritten_qa.jsonl, issue 65): its shape (documents of 3
questions, answers that are spans of their document, a balance of answer kinds, made-up names no two
documents share) and experiments/qa/handwritten_eval.gin read through gin, scored by a stand-in
for the evaluator (no model)."""

import collections
import json
import re
from pathlib import Path

import gin
import pytest

from lora_hyper import configurables  # noqa: F401  (registers lora_hyper.HandwrittenData, EvalConfig, eval_sweep)
from lora_hyper import qa
from lora_hyper.evaluation import data, evaluator, metrics, study

ROOT = Path(__file__).parents[2]
GIN = ROOT / "experiments/qa/handwritten_eval.gin"
# Capitalised words that may recur in documents without being anyone's made-up name.
COMMON = {"I", "Mr", "Mrs", "Miss", "Street", "Road", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
          "Saturday", "Sunday", "January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"}


def _lines() -> list[dict]:
  return [json.loads(line) for line in data.HANDWRITTEN_QA.read_text(encoding="utf-8").splitlines()]


def _documents() -> dict[str, list[dict]]:
  by_document: dict[str, list[dict]] = {}
  for r in _lines():
    by_document.setdefault(r["document"], []).append(r)
  return by_document


def _capitalised(document: str) -> set[str]:
  """Capitalised words that do not start a sentence or a line: the document's names, roughly."""
  words = set()
  for sentence in re.split(r"(?<=[.!?:])\s+|\n", document):
    words |= {w for w in re.findall(r"[A-Za-z][\w'-]*", sentence)[1:] if w[0].isupper()}
  return words


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_every_line_is_a_doc_to_lora_record_with_its_kind_and_style():
  records = _lines()
  assert data.read_records(str(data.HANDWRITTEN_QA), "doc_to_lora", 10_000) == records
  for r in records:
    assert set(r) == {"document", "query", "answer", "group", "style"} and all(isinstance(v, str) for v in r.values())
    assert r["group"] in data.HANDWRITTEN_KINDS and r["query"].strip()[-1] in "?."
    assert r["answer"] and r["answer"] == r["answer"].strip()
  kinds = collections.Counter(r["group"] for r in records)
  assert all(kinds[k] >= len(records) / 4 for k in data.HANDWRITTEN_KINDS), kinds


def test_twenty_or_more_documents_of_three_questions_in_varied_styles():
  documents = _documents()
  assert len(documents) >= 20
  for document, questions in documents.items():
    assert len(questions) == 3 and len({q["query"] for q in questions}) == 3
    assert len({q["style"] for q in questions}) == 1
    assert 40 <= len(document.split()) <= 150, document[:60]
  styles = [questions[0]["style"] for questions in documents.values()]
  assert len(set(styles)) == len(styles)


def test_every_answer_is_a_span_of_its_document_and_contains_scores_it():
  for r in _lines():
    assert r["answer"].lower() in r["document"].lower(), r["query"]
    assert qa.contains(r["document"], r["answer"]) and not qa.contains(r["query"], r["answer"]), r["query"]
    if r["group"] == "number":
      assert re.fullmatch(r"\d[\d,.]*", r["answer"]), r["answer"]


def test_no_two_documents_share_a_made_up_name():
  documents = list(_documents())
  names = [r["answer"] for r in _lines() if r["group"] == "name"]
  assert len(set(names)) == len(names)
  for name in names:
    assert sum(name.lower() in d.lower() for d in documents) == 1, name
  seen = collections.Counter(w for d in documents for w in _capitalised(d))
  assert {w for w, n in seen.items() if n > 1} <= COMMON


def test_the_gin_source_gives_every_record_grouped_by_answer_kind(clean_gin):
  gin.parse_config("lora_hyper.EvalConfig.data = @lora_hyper.HandwrittenData()")
  config = gin.get_configurable("lora_hyper.EvalConfig")()
  assert isinstance(config.data, data.HandwrittenData)
  assert config.data.records("doc_to_lora", len) == _lines()
  with pytest.raises(ValueError, match="needs a doc_to_lora hypernetwork"):
    config.data.records("text_to_lora", len)


def _scorer(calls):
  """The evaluator's report and answers without a model: the context condition answers with the
  reference, the adapter only for numbers, the bare model never."""

  def score(config: study.EvalConfig) -> evaluator.Evaluation:
    calls.append(config)
    records = config.data.records("doc_to_lora", len)
    said = {"adapter": lambda r: r["answer"] if r["group"] == "number" else "", "base": lambda r: "I do not know.",
            "context": lambda r: f"It is {r['answer']}."}
    answers = [{"document": r["document"], "query": r["query"], "reference": r["answer"], "group": r["group"],
                **{c: {"answer": said[c](r), **metrics.scores(said[c](r), r["answer"], config.metrics)}
                   for c in config.conditions}} for r in records]
    by_group = {g: evaluator.mean_scores([a for a in answers if a["group"] == g], config.conditions, config.metrics)
                for g in dict.fromkeys(a["group"] for a in answers)}
    report = {"scores": evaluator.mean_scores(answers, config.conditions, config.metrics), "by_group": by_group}
    return evaluator.Evaluation(report, answers)

  return score


def test_the_eval_config_scores_the_set_by_answer_kind(clean_gin, tmp_path):
  gin.parse_config_file(str(GIN))
  calls = []
  summary = study.eval_sweep(out=str(tmp_path), plot_results=False, command="lora-hyper eval --gin_file x.gin",
                             score=_scorer(calls))
  (config,) = calls
  assert isinstance(config.data, data.HandwrittenData) and config.hypernetwork is None  # the shipped default, general
  assert config.conditions == ("adapter", "base", "context") and config.metrics == ("contains", "rouge_l")
  assert gin.query_parameter("lora_hyper.eval_sweep.out") == "experiments/results/doc_qa_handwritten_general"
  assert summary["table"] == "by_group" and [r["group"] for r in summary["rows"]] == ["name", "number", "word"]
  table = (tmp_path / "results.md").read_text().split("\n", 4)[4]
  assert table.splitlines()[:7] == [
      "contains:", "",
      "| group | adapter | base | context |",
      "|---|---|---|---|",
      "| name | 0.000 | 0.000 | 1.000 |",
      "| number | 1.000 | 0.000 | 1.000 |",
      "| word | 0.000 | 0.000 | 1.000 |"]
