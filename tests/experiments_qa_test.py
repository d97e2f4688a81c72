"""experiments.qa: records of chosen answer kinds (subset), readable by JsonlQA; by_fact's partial credit."""

import sys

from experiments.qa import by_fact, subset
from lora_hyper.data import fictional, jsonl_source


def test_keeps_only_the_chosen_kinds_of_the_chosen_documents():
  kept = subset.records(40, 1, {"listed word"}, first=10)
  everything = [fictional.FictionalQA(50, facts_per_doc=1)[i] for i in range(10, 50)]
  assert kept == [r for r in everything if by_fact.answer_kind(r["answer"]) == "listed word"]
  assert 0 < len(kept) < len(everything)


def test_writes_json_lines_that_train_reads(tmp_path, monkeypatch):
  out = tmp_path / "names.jsonl"
  monkeypatch.setattr(sys, "argv", ["subset", "--out", str(out), "--docs", "30", "--facts-per-doc", "2",
                                    "--kinds", "made-up name", "number"])
  subset.main()
  source = jsonl_source.JsonlQA(str(out))
  assert len(source) == len(subset.records(30, 2, {"made-up name", "number"}))
  assert {by_fact.answer_kind(source[i]["answer"]) for i in range(len(source))} == {"made-up name", "number"}
  assert [p.name for p in tmp_path.iterdir()] == ["names.jsonl"]  # no temporary file left beside it


def test_partial_credit_needs_the_first_three_letters_of_the_first_word():
  assert by_fact.shares_prefix("Staimshou", "Staisshea")
  assert by_fact.shares_prefix("It is called 'Staisshea'.", "Staisshea")
  assert by_fact.shares_prefix("Krarl Shou", "Krarsh Bain") and not by_fact.shares_prefix("Bain", "Krarsh Bain")
  assert not by_fact.shares_prefix("Droumthou", "Staisshea") and not by_fact.shares_prefix("", "Staisshea")
  scores = by_fact.scores(["Staimshou", "Droum"], [{"answer": "Staisshea"}, {"answer": "Hiszeas"}])
  assert scores["prefix"] == 0.5 and scores["contains"] == 0.0
