"""The evaluator on a tiny random Gemma 3 and Doc-to-LoRA: every condition answers every record, the
report's means are the answers' scores, and bad conditions are refused before any compute."""

import pytest

from lora_hyper.baselines import context_distillation as cd
from lora_hyper.evaluation import evaluator
from lora_hyper.hypernetworks import saved
from lora_hyper.model import base_model, decoding

from tiny_model import write_all

RECORDS = [{"document": "Zorblat lives in Quenton.", "query": "Where?", "answer": "Quenton", "group": 1},
           {"document": "The river Vell is cold.", "query": "Which river?", "answer": "Vell", "group": 2}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  paths = write_all(tmp_path_factory.mktemp("tiny"))
  base = base_model.load_base_model(paths["model"])
  return base, saved.load_hypernetwork(paths["d2l"], base)


def test_every_condition_answers_and_the_means_are_the_answers_scores(tiny):
  base, hyper = tiny
  result = evaluator.evaluate(hyper, base, RECORDS, conditions=evaluator.CONDITIONS,
                              metrics=("exact_match", "rouge_l"), chunk_len=8,
                              sampling=decoding.SamplingConfig(max_new_tokens=2),
                              distill=cd.DistillConfig(steps=1, rank=2, max_answer_tokens=2), distill_queries=1)
  assert [a["query"] for a in result.answers] == ["Where?", "Which river?"]
  assert [a["group"] for a in result.answers] == [1, 2]
  for condition in evaluator.CONDITIONS:
    assert all(isinstance(a[condition]["answer"], str) for a in result.answers)
    for metric in ("exact_match", "rouge_l"):
      mean = sum(a[condition][metric] for a in result.answers) / 2
      assert result.report["scores"][condition][metric] == pytest.approx(mean)
      assert result.report["by_group"]["1"][condition][metric] == result.answers[0][condition][metric]


def test_bad_conditions_and_options_are_refused(tiny):
  base, hyper = tiny
  with pytest.raises(ValueError, match=r"unknown condition\(s\) \['oracle'\]"):
    evaluator.evaluate(hyper, base, RECORDS, conditions=("adapter", "oracle"))
  with pytest.raises(ValueError, match="other_source condition needs records of two sources"):
    evaluator.evaluate(hyper, base, RECORDS[:1], conditions=("other_source",))
  with pytest.raises(ValueError, match="chunk_len must be at least 2"):
    evaluator.evaluate(hyper, base, RECORDS, conditions=("adapter",), chunk_len=1)
