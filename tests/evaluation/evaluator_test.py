"""The evaluator on a tiny random Gemma 3 and Doc-to-LoRA / Text-to-LoRA: every condition answers every
record, the report's means are the answers' scores, the teacher-forced metrics are `qa.greedy_matches`,
and bad conditions are refused before any compute."""

import jax
import jax.numpy as jnp
import pytest

from lora_hyper.adapters import lora
from lora_hyper.baselines import context_distillation as cd
from lora_hyper.evaluation import data, evaluator, metrics
from lora_hyper.hypernetworks import saved
from lora_hyper.model import base_model, decoding

from tiny_model import write_all

RECORDS = [{"document": "Zorblat lives in Quenton.", "query": "Where?", "answer": "Quenton", "group": 1},
           {"document": "The river Vell is cold.", "query": "Which river?", "answer": "Vell", "group": 2}]
# What the few_shot and task_lora conditions read.
EXTRAS = [{"task_id": "a", "demonstrations": [["Who?", "Zorblat"]]}, {"task_id": "b", "demonstrations": []}]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
  """The tiny base model and its two hypernetworks, written once for the module."""
  paths = write_all(tmp_path_factory.mktemp("tiny"))
  base = base_model.load_base_model(paths["model"])
  return base, saved.load_hypernetwork(paths["d2l"], base), saved.load_hypernetwork(paths["t2l"], base)


@pytest.fixture(scope="module")
def tiny(tiny_models):
  return tiny_models[:2]


def test_every_condition_answers_and_the_means_are_the_answers_scores(tiny):
  base, hyper = tiny
  some = lora.random(jax.random.key(1), base.config, ("down",), 2, std=0.3)
  result = evaluator.evaluate(hyper, base, [{**r, **e} for r, e in zip(RECORDS, EXTRAS)],
                              conditions=evaluator.CONDITIONS, metrics=("exact_match", "rouge_l"), chunk_len=8,
                              sampling=decoding.SamplingConfig(max_new_tokens=2),
                              distill=cd.DistillConfig(steps=1, rank=2, max_answer_tokens=2), distill_queries=1,
                              fixed_lora=some, task_loras={"a": some, "b": some})
  assert [a["query"] for a in result.answers] == ["Where?", "Which river?"]
  assert [a["group"] for a in result.answers] == [1, 2]
  for condition in evaluator.CONDITIONS:
    assert all(isinstance(a[condition]["answer"], str) for a in result.answers)
    for metric in ("exact_match", "rouge_l"):
      mean = sum(a[condition][metric] for a in result.answers) / 2
      assert result.report["scores"][condition][metric] == pytest.approx(mean)
      assert result.report["by_group"]["1"][condition][metric] == result.answers[0][condition][metric]
  # Every update timed: one adapter batch per group, one distillation per question (cd_oracle) or document.
  updates = result.report["update_seconds"]
  assert set(updates) == {"adapter", "cd_oracle", "cd_generated"}
  assert all(u["updates"] == 2 and u["median"] > 0 and u["first"] > 0 for u in updates.values())
  # The first adapter batch compiles; a distillation's compilation is timed apart from its update.
  assert updates["adapter"]["compiled"] >= 1 and updates["cd_oracle"]["compiled"] == 0


def test_stacked_documents_answer_with_one_adapter_of_the_whole_stack(tiny, monkeypatch):
  """Reference: the stack's adapter made by hand (`internalize` of the stack), its questions answered
  with it; the in-context prompt holds every document of the stack."""

  from lora_hyper import prompts, qa
  from lora_hyper.hypernetworks import doc_to_lora

  base, hyper = tiny
  stacked = data.FictionalData(docs=4, stack=2, facts_per_doc=1).records("doc_to_lora", None)
  assert len(stacked) == 4 and all(len(r["documents"]) == 2 for r in stacked)
  assert stacked[0]["document"] == "\n\n".join(stacked[0]["documents"]) == stacked[1]["document"]
  sampling = decoding.SamplingConfig(max_new_tokens=3)
  monkeypatch.setattr(evaluator, "_ready_seconds", lambda adapter, start: 8.0)  # each batch of adapters
  one_group = [{k: v for k, v in r.items() if k != "group"} for r in stacked]  # so one batch holds both stacks
  result = evaluator.evaluate(hyper, base, one_group, conditions=("adapter", "context"), chunk_len=64,
                              metrics=("contains",), sampling=sampling)
  # One batch of 2 stacks of 2 documents: its seconds shared by the 4 documents.
  assert result.report["update_seconds"]["adapter"]["first"] == 2.0
  config = evaluator.chunked_config(hyper, base, [r["documents"] for r in stacked], 64)
  adapters = doc_to_lora.internalize(hyper.variables, base.params, [stacked[0]["documents"], stacked[2]["documents"]],
                                     config=config, tokenizer=base.tokenizer)
  expected = qa.complete(base, [prompts.query_prompt(r["query"]) for r in stacked],
                         adapter=lora.take(adapters, jnp.asarray([0, 0, 1, 1])), sampling=sampling)
  assert [a["adapter"]["answer"] for a in result.answers] == expected
  with pytest.raises(ValueError, match="docs=3 is not a multiple of FictionalData.stack=2"):
    data.FictionalData(docs=3, stack=2)


def test_update_seconds_leave_the_updates_that_compiled_out_of_the_median():
  timed = evaluator.update_seconds({"adapter": [(9.0, True), (0.2, False), (4.0, True), (0.4, False), (0.3, False)],
                                    "cd_oracle": [(5.0, True)], "cd_generated": []})
  assert timed == {"adapter": {"median": 0.3, "first": 9.0, "updates": 5, "compiled": 2},
                   "cd_oracle": {"median": 5.0, "first": 5.0, "updates": 1, "compiled": 1}}


def test_compiles_are_counted_while_the_context_is_open():
  double = jax.jit(lambda x: 2 * x)
  three, five = jnp.ones(3), jnp.ones(5)
  with evaluator.counting_compiles() as first:
    double(three).block_until_ready()
  with evaluator.counting_compiles() as again:
    double(three).block_until_ready()  # cached: no compilation
  with evaluator.counting_compiles() as new_shape:
    double(five).block_until_ready()
  assert len(first) == 1 and again == [] and len(new_shape) == 1


def test_progress_in_a_log_is_a_line_per_batch(tiny, capsys):
  """Where stderr is not a terminal (a job's log) a tqdm bar would show nothing until the end."""
  base, hyper = tiny
  evaluator.evaluate(hyper, base, RECORDS, conditions=("base",), sampling=decoding.SamplingConfig(max_new_tokens=1))
  lines = capsys.readouterr().err.splitlines()
  assert [line.split(" (")[0] for line in lines if "evaluated" in line] == \
      ["[lora-hyper] evaluated 1/2 records", "[lora-hyper] evaluated 2/2 records"]


def test_bad_conditions_and_options_are_refused(tiny):
  base, hyper = tiny
  with pytest.raises(ValueError, match=r"unknown condition\(s\) \['oracle'\]"):
    evaluator.evaluate(hyper, base, RECORDS, conditions=("adapter", "oracle"))
  with pytest.raises(ValueError, match="other_source condition needs records of two sources"):
    evaluator.evaluate(hyper, base, RECORDS[:1], conditions=("other_source",))
  with pytest.raises(ValueError, match="chunk_len must be at least 2"):
    evaluator.evaluate(hyper, base, RECORDS, conditions=("adapter",), chunk_len=1)


@pytest.fixture(scope="module")
def tiny_t2l(tiny_models):
  return tiny_models[0], tiny_models[2]


def test_teacher_forced_metrics_are_greedy_matches_of_the_experiments_batches(tiny):
  """forced_scores (padded to its own buckets, 32 rows a forward) gives what `qa.greedy_matches` gives
  on `pipeline.sft_example` batches of Text-to-LoRA's fixed shapes, with and without an adapter."""
  import numpy as np

  from lora_hyper import prompts, qa
  from lora_hyper.data import pipeline

  base, _ = tiny
  cfg, tok = base.config, base.tokenizer
  records = [{"input": f"w{i}x", "output": "abc"[:1 + i % 3]} for i in range(35)]  # two forwards, one padded
  adapter = lora.random(jax.random.key(0), cfg, ("q", "v"), 2, std=0.3, batch=len(records))
  shapes = pipeline.TaskExampleShapes(seq_len=64, answer_len=32)
  examples = [pipeline.sft_example(r, tok, cfg.bos_id, cfg.eos_id, cfg.pad_id, shapes, prompts.task_prompt)
              for r in records]
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  line_ends = (cfg.eos_id, *tok.encode("\n", add_bos=False))
  for given in (None, adapter):
    expected = qa.greedy_matches(base.params, batch, given, config=cfg, line_ends=line_ends)
    got = evaluator.forced_scores(base, [prompts.task_prompt(r["input"]) for r in records],
                                  [r["output"] for r in records], given, metrics.FORCED_METRICS)
    for k, name in enumerate(metrics.FORCED_METRICS):
      np.testing.assert_allclose([g[name] for g in got], np.asarray(expected[k], np.float64), atol=1e-6)


def test_text_to_lora_conditions_on_task_data(tiny_t2l):
  """Every Text-to-LoRA condition scores every record; a zero LoRA is the base model, a library
  holding one LoRA for every task is that LoRA, and context / few_shot read their own prompts."""
  import numpy as np

  from lora_hyper import prompts

  base, hyper = tiny_t2l
  records = data.TaskData(per_task=2, shots=2).records("text_to_lora", len)[:6]  # 3 held-out tasks
  some = lora.random(jax.random.key(1), base.config, ("q", "v"), 2, std=0.3)
  forced = metrics.FORCED_METRICS
  conditions = ("adapter", "base", "context", "few_shot", "lora", "task_lora", "other_source", "random_source")
  result = evaluator.evaluate(hyper, base, records, conditions=conditions, metrics=forced,
                              fixed_lora=lora.zeros(base.config, ("q", "v"), 2),
                              task_loras={r["task_id"]: some for r in records})
  answers = result.answers
  assert [a["group"] for a in answers] == [r["task_id"] for r in records]
  assert set(result.report["by_group"]) == {r["task_id"] for r in records}
  for name in forced:
    assert [a["lora"][name] for a in answers] == pytest.approx([a["base"][name] for a in answers])
  alone = evaluator.forced_scores(base, [prompts.task_prompt(r["input"]) for r in records],
                                  [r["output"] for r in records], some, forced)
  flat = lambda scores: [s[name] for s in scores for name in forced]
  assert flat(a["task_lora"] for a in answers) == pytest.approx(flat(alone))
  for condition, asked in (("context", [prompts.task_context_prompt(r["description"], r["input"]) for r in records]),
                           ("few_shot", [prompts.few_shot_prompt(r["demonstrations"], r["input"]) for r in records])):
    expected = evaluator.forced_scores(base, asked, [r["output"] for r in records], None, forced)
    assert flat(a[condition] for a in answers) == pytest.approx(flat(expected))
  assert np.isclose(result.report["scores"]["adapter"]["token_accuracy"],
                    np.mean([a["adapter"]["token_accuracy"] for a in answers]))


def test_the_other_source_is_of_another_task():
  records = [{"description": d, "task_id": t} for d, t in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c"))]
  assert evaluator.other_sources(records, "description") == {"a1": "b1", "a2": "b1", "b1": "c1", "c1": "a1"}
  untasked = [{"document": d} for d in ("x", "y", "z")]
  assert evaluator.other_sources(untasked, "document") == {"x": "y", "y": "z", "z": "x"}


def test_conditions_without_what_they_need_are_refused(tiny_t2l):
  base, hyper = tiny_t2l
  records = data.TaskData(per_task=1).records("text_to_lora", len)[:2]
  with pytest.raises(ValueError, match="lora condition needs a saved LoRA"):
    evaluator.evaluate(hyper, base, records, conditions=("lora",), metrics=("token_accuracy",))
  with pytest.raises(ValueError, match="task_lora condition needs records with a 'task_id' and a LoRA for each task"):
    evaluator.evaluate(hyper, base, records, conditions=("task_lora",), metrics=("token_accuracy",), task_loras={})
  with pytest.raises(ValueError, match="few_shot condition needs records with 'demonstrations'"):
    evaluator.evaluate(hyper, base, records, conditions=("few_shot",), metrics=("token_accuracy",))
