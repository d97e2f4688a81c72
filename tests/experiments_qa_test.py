"""experiments.qa: records of chosen answer kinds (subset) and code words, readable by JsonlQA; by_fact's
partial credit."""

import sys

from experiments.qa import by_fact, code_words, copy_eval, subset
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


def test_code_words_are_stated_in_their_document_and_start_with_many_letters():
  drawn = code_words.records(300, seed=0)
  assert drawn == code_words.records(300, seed=0) and drawn != code_words.records(300, seed=1)
  for r in drawn:
    assert r["answer"] in r["document"] and r["answer"] not in r["query"]
    assert by_fact.answer_kind(r["answer"]) == "made-up name"
  # Unlike training names (fictional.NAME_INITIALS['train']), code words start with any consonant.
  train_starts = {i[0] for i in fictional.NAME_INITIALS["train"]}
  assert len({r["answer"][0].lower() for r in drawn} - train_starts) >= 8
  prefixed = code_words.records(300, seed=0, prefix="Ka-")
  assert [r["answer"] for r in prefixed] == ["Ka-" + r["answer"] for r in drawn]
  assert all(r["answer"] in r["document"] for r in prefixed)


def test_code_words_mixed_with_fictional_records(tmp_path, monkeypatch):
  out = tmp_path / "mixed.jsonl"
  monkeypatch.setattr(sys, "argv", ["code_words", "--out", str(out), "--records", "5", "--with-fictional-docs", "3"])
  code_words.main()
  source = jsonl_source.JsonlQA(str(out))
  fictional_six = [fictional.FictionalQA(3)[i] for i in range(18)]
  assert [source[i] for i in range(len(source))] == code_words.records(5, seed=0) + fictional_six


class _PairTokenizer:
  """Two letters a token, a leading space joined to the first: enough to count how many leading
  tokens two words share."""

  def encode(self, text, add_bos=False):
    assert not add_bos and text.startswith(" ")  # copy_eval reads words as answers hold them
    word = text[1:]
    return [" " + word[:2]] + [word[i:i + 2] for i in range(2, len(word), 2)]


def test_counts_the_gold_words_tokens_an_answer_starts_with():
  tok = _PairTokenizer()
  assert copy_eval.tokens_right("Vagrou", "Vagrouxvoon", tok) == 3
  assert copy_eval.tokens_right("Vagquai.", "Vagrouxvoon", tok) == 1  # "Va" right, "gq" not
  assert copy_eval.tokens_right("\"Vagrouxvoon\" is the word", "Vagrouxvoon", tok) == 6
  assert copy_eval.tokens_right("The word is Vagrouxvoon", "Vagrouxvoon", tok) == 0  # the first word only
  assert copy_eval.tokens_right("", "Vagrouxvoon", tok) == 0
  profile = copy_eval.profile(["Vagrouxvoon", "Chool", "Zum"], [{"answer": "Vagrouxvoon"}, {"answer": "Chansu"},
                                                                {"answer": "Zumneam"}], tok)
  # Of the words with at least 4 tokens ("Zumneam" has 4, "Chansu" 3) the answers have 1 in 2 right.
  assert profile["first_tokens_right"] == [1.0, 1 / 3, 1 / 3, 1 / 2, 1.0] and profile["contains"] == 1 / 3
