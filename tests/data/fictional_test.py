"""Fictional documents: determinism, answers in documents, disjoint splits, generated queries."""

import pytest

from lora_hyper.data import fictional, niah

EVERY_KIND = tuple(fictional.SUBJECT_KINDS)


def _entities(doc):
  """The subject and every made-up name among the answers (numbers and shared words excluded)."""
  return {doc.subject} | {f.answer for f in doc.facts if fictional.answer_kind(f.answer) == "made-up name"}


def test_same_seed_same_records_and_different_seeds_differ():
  a, b, c = fictional.FictionalQA(10, seed=1), fictional.FictionalQA(10, seed=1), fictional.FictionalQA(10, seed=2)
  assert [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]
  assert a.document(0).text != c.document(0).text


@pytest.mark.parametrize("subject_kinds", [None, EVERY_KIND])
def test_every_answer_appears_in_its_document(subject_kinds):
  source = fictional.FictionalQA(200, seed=0, subject_kinds=subject_kinds)
  for i in range(len(source)):
    record = source[i]
    assert record["answer"] and record["answer"] in record["document"]
    assert record["query"].endswith("?")


def test_index_maps_to_document_and_question():
  source = fictional.FictionalQA(5, seed=0)
  pairs = source.qa_pairs(3)
  assert pairs == [source[3 * fictional.FACTS_PER_DOC + j] for j in range(fictional.FACTS_PER_DOC)]
  assert {r["doc_id"] for r in pairs} == {"train-000003"}
  assert len({r["fact"] for r in pairs}) == fictional.FACTS_PER_DOC
  assert len({r["answer"] for r in pairs}) == fictional.FACTS_PER_DOC
  assert {r["fact"] for r in pairs} == {f.name for f in source.document(3).facts}


def test_fewer_facts_per_document_index_one_question_each_and_keep_the_default_documents():
  single = fictional.FictionalQA(50, facts_per_doc=1)
  assert len(single) == 50
  for i in range(len(single)):
    record, doc = single[i], single.document(i)
    assert len(doc.facts) == 1 and record["answer"] == doc.facts[0].answer and record["answer"] in record["document"]
  assert single.document(0).text != fictional.make_document(0, "train", 0).text
  # Six facts, the default, keep every document (and so every recorded run) as it was before the option.
  assert fictional.FictionalQA(1).document(0).text == (
      "The following notes describe the company Kinbafeas Institute. Kinbafeas Institute makes pianos. The staff of "
      "Kinbafeas Institute numbers 5,505. The chief executive of Kinbafeas Institute is Meannourk Flaimseastork. "
      "Kinbafeas Institute is based in Flealbeand. The logo of Kinbafeas Institute is green. Kinbafeas Institute was "
      "founded by Kranor Basus.")
  three = fictional.FictionalQA(4, facts_per_doc=3)
  assert three.qa_pairs(2) == [three[6], three[7], three[8]] and len({r["fact"] for r in three.qa_pairs(2)}) == 3


@pytest.mark.parametrize("count", [0, fictional.MAX_FACTS_PER_DOC + 1])
def test_facts_per_doc_out_of_range_raises(count):
  with pytest.raises(ValueError, match="facts_per_doc must be between 1 and 7"):
    fictional.FictionalQA(1, facts_per_doc=count)


@pytest.mark.parametrize("subject_kinds", [None, EVERY_KIND])
def test_train_and_test_documents_share_no_entity(subject_kinds):
  train, test = (fictional.FictionalQA(300, split, subject_kinds=subject_kinds) for split in ("train", "test"))
  train_docs = [train.document(i) for i in range(train.num_docs)]
  test_docs = [test.document(i) for i in range(test.num_docs)]
  train_entities = set().union(*map(_entities, train_docs))
  test_entities = set().union(*map(_entities, test_docs))
  assert train_entities and test_entities and not train_entities & test_entities
  mentioned = [set().union(*(fictional.entity_mentions(d.text) for d in docs)) for docs in (train_docs, test_docs)]
  assert not {m for m in mentioned[0] & mentioned[1] if m not in fictional.MONTHS}
  assert not {d.doc_id for d in train_docs} & {d.doc_id for d in test_docs}
  assert {d.kind for d in test_docs} == set(subject_kinds or ("person", "place", "company"))


def test_the_added_subject_kinds_leave_the_default_documents_as_they_were_and_bad_kinds_are_named():
  every = fictional.FictionalQA(60, facts_per_doc=7, subject_kinds=EVERY_KIND)
  assert {every.document(i).kind for i in range(60)} == set(EVERY_KIND)
  assert {fictional.answer_kind(every[i]["answer"]) for i in range(len(every))} == set(fictional.ANSWER_KINDS)
  default = fictional.FictionalQA(5, subject_kinds=("person", "place", "company"))
  assert [default.document(i) for i in range(5)] == [fictional.FictionalQA(5).document(i) for i in range(5)]
  with pytest.raises(ValueError, match=r"FictionalQA.subject_kinds must name distinct subject kinds .*'planet'"):
    fictional.FictionalQA(1, subject_kinds=("person", "planet"))


def test_unknown_split_raises():
  with pytest.raises(ValueError):
    fictional.FictionalQA(1, split="validation")


def test_generated_queries_are_distinct_deterministic_and_name_the_entities():
  record = fictional.FictionalQA(1)[0]
  queries = fictional.generated_queries(record, 10)
  assert len(queries) == len(set(queries)) == 10
  assert queries == fictional.generated_queries(record, 10)
  assert queries != fictional.generated_queries(record, 10, seed=1)
  everything = fictional.generated_queries(record, 1000)
  assert any(fictional.make_document(0, "train", 0).subject in q for q in everything)


def test_generated_queries_work_on_any_document():
  record = niah.NiahSource(1)[0]
  queries = fictional.generated_queries(record, 10)
  assert len(set(queries)) == 10 and set(queries) <= set(fictional.GENERIC_QUERIES)


def test_answer_kinds_are_numbers_listed_words_and_made_up_names():
  assert fictional.answer_kind("58,227") == "number" and fictional.answer_kind("1796") == "number"
  assert fictional.answer_kind("Teal") == "listed word" and fictional.answer_kind("lanterns") == "listed word"
  assert fictional.answer_kind("Staisshea") == "made-up name"
  assert fictional.answer_kind("Krarsh Bain Works") == "made-up name"


def test_answer_kinds_keep_only_those_questions_in_the_same_order():
  every = fictional.FictionalQA(30)
  kept = fictional.FictionalQA(30, answer_kinds=("number", "listed word"))
  expected = [every[i] for i in range(len(every)) if fictional.answer_kind(every[i]["answer"]) != "made-up name"]
  assert [kept[i] for i in range(len(kept))] == expected and 0 < len(kept) < len(every)
  assert len(kept) == 84  # as experiments/qa/subset.py wrote them (its test at commit 556469b)
  numbers = fictional.FictionalQA(40, facts_per_doc=1, answer_kinds=["number"])
  assert numbers.answer_kinds == ("number",) and len(numbers) == 8
  assert {fictional.answer_kind(numbers[i]["answer"]) for i in range(len(numbers))} == {"number"}
  assert kept.qa_pairs(1) == every.qa_pairs(1)  # a document's questions, every kind
  with pytest.raises(IndexError):
    kept[len(kept)]
  with pytest.raises(ValueError, match="answer kinds among"):
    fictional.FictionalQA(30, answer_kinds=("numbers",))
