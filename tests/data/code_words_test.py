"""The copying drill's code words: one stream a seed, stated in their one-sentence document, starting
with many letters, and the very words the QA chain's drill trained on (experiments/qa/code_words.py
at commit 556469b wrote the same records)."""

import pytest

from lora_hyper.data import code_words, fictional


def test_code_words_are_the_drills_own_stated_in_their_document_and_start_with_many_letters():
  drawn = code_words.CodeWordQA(20000, seed=0)
  assert drawn[0] == {"document": "The password of Sailki Berksoul is Ploundvaitkoork.",
                      "query": "What is the password of Sailki Berksoul?", "answer": "Ploundvaitkoork"}
  assert (drawn[1234]["answer"], drawn[19999]["answer"]) == ("Lirkweark", "Searkchoo")
  records = [drawn[i] for i in range(300)]
  assert records == [code_words.CodeWordQA(300, seed=0)[i] for i in range(300)]  # a prefix of the same stream
  assert records != [code_words.CodeWordQA(300, seed=1)[i] for i in range(300)]
  for r in records:
    assert r["answer"] in r["document"] and r["answer"] not in r["query"]
    assert fictional.answer_kind(r["answer"]) == "made-up name"
  train_starts = {i[0] for i in fictional.NAME_INITIALS["train"]}
  assert len({r["answer"][0].lower() for r in records} - train_starts) >= 8
  prefixed = code_words.CodeWordQA(300, seed=0, prefix="Ka-")
  assert [prefixed[i]["answer"] for i in range(300)] == ["Ka-" + r["answer"] for r in records]
  with pytest.raises(IndexError):
    drawn[20000]
  with pytest.raises(ValueError, match="num_records"):
    code_words.CodeWordQA(0)
