"""experiments.qa: records of chosen answer kinds (subset), of mixed facts per document, also in one-kind
batches (mixed_facts), and code words, readable by JsonlQA; by_fact's partial credit; the linear probe,
the per-document fit, runs' logs side by side, the loss by kind of answer (kind_losses) and scores side by
side (by_fact's relative ROUGE-L, compare); hypernetworks' weight average (average)."""

import collections
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from experiments.qa import (average, by_fact, code_probe, code_words, compare, copy_eval, free_adapter, kind_losses,
                            mixed_facts, run_logs, subset)
from lora_hyper.adapters import io, lora
from lora_hyper.data import fictional, jsonl_source
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import config as config_lib


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


def test_mixes_every_count_of_facts_evenly_from_disjoint_documents_below_validation():
  mixed = mixed_facts.records(12, (1, 3, 6))
  by_doc = collections.defaultdict(list)
  for r in mixed:
    by_doc[r["doc_id"]].append(r)
  assert len(mixed) == 12 + 12 + 12 and len(by_doc) == 12 + 4 + 2  # each count's records, from distinct documents
  assert sorted(len(records) for records in by_doc.values()) == [1] * 12 + [3] * 4 + [6] * 2
  assert [r["doc_id"] for r in mixed] != sorted(r["doc_id"] for r in mixed)  # shuffled
  assert mixed == mixed_facts.records(12, (1, 3, 6))  # reproducible
  with pytest.raises(ValueError, match="validation"):
    mixed_facts.records(mixed_facts.VALIDATION_FIRST_DOC, (1, 2))


def test_kind_batches_hold_one_kind_each_in_shuffled_order_and_drop_short_ones():
  mixed = mixed_facts.records(24, (1, 2, 6))
  arranged = mixed_facts.kind_batches(mixed, 4)
  kinds = [by_fact.answer_kind(r["answer"]) for r in arranged]
  blocks = [set(kinds[i:i + 4]) for i in range(0, len(arranged), 4)]
  assert len(arranged) % 4 == 0 and all(len(b) == 1 for b in blocks)  # one kind a block
  block_kinds = [b.pop() for b in blocks]
  assert block_kinds != sorted(block_kinds, key=by_fact.ANSWER_KINDS.index)  # blocks shuffled
  counts = collections.Counter(by_fact.answer_kind(r["answer"]) for r in mixed)
  assert collections.Counter(kinds) == {k: n - n % 4 for k, n in counts.items()}  # only short blocks left out
  assert all(r in mixed for r in arranged) and len({id(r) for r in arranged}) == len(arranged)
  assert arranged == mixed_facts.kind_batches(mixed, 4)  # reproducible
  with pytest.raises(ValueError, match="at least 1"):
    mixed_facts.kind_batches(mixed, 0)


def test_kind_losses_read_each_steps_loss_as_its_batchs_kind_and_wrap_around_the_file():
  arranged = mixed_facts.kind_batches(mixed_facts.records(24, (1, 6)), 4)
  kinds = kind_losses.batch_kinds(arranged, 4)
  assert len(kinds) == len(arranged) // 4
  rows = [{"step": s, "loss": float(s)} for s in range(1, 2 * len(kinds) + 1)]  # two passes over the file
  by_kind = kind_losses.losses_by_kind(rows, kinds, window=len(kinds))
  for kind, (first, second) in by_kind.items():
    steps = [s for s in range(1, len(kinds) + 1) if kinds[s - 1] == kind]
    assert first == pytest.approx(np.mean(steps)) and second == pytest.approx(np.mean(steps) + len(kinds))
  with pytest.raises(ValueError, match="mix kinds"):
    kind_losses.batch_kinds(mixed_facts.records(24, (1, 6)), 8)


def test_partial_credit_needs_the_first_three_letters_of_the_first_word():
  assert by_fact.shares_prefix("Staimshou", "Staisshea")
  assert by_fact.shares_prefix("It is called 'Staisshea'.", "Staisshea")
  assert by_fact.shares_prefix("Krarl Shou", "Krarsh Bain") and not by_fact.shares_prefix("Bain", "Krarsh Bain")
  assert not by_fact.shares_prefix("Droumthou", "Staisshea") and not by_fact.shares_prefix("", "Staisshea")
  scores = by_fact.scores(["Staimshou", "Droum"], [{"answer": "Staisshea", "doc_id": "a"},
                                                   {"answer": "Hiszeas", "doc_id": "b"}])
  assert scores["prefix"] == 0.5 and scores["contains"] == 0.0 and scores["distinct"] is None


def test_distinct_within_document_counts_answers_no_sibling_question_got():
  records = [{"answer": g, "doc_id": d} for g, d in (("Mindmunpi", "a"), ("Kaisfest", "a"), ("Pounkom", "a"),
                                                     ("teal", "b"), ("1796", "c"), ("Breaspurk", "c"))]
  # Document a: one name for two of its questions ("Peandthou", case and punctuation aside); b has
  # one question and is left out; c's two answers differ.
  answers = ["Peandthou", "peandthou.", "Droum", "teal", "1796", "Breaspurk"]
  assert by_fact.distinct_within_document(answers, records) == 3 / 5
  assert by_fact.distinct_within_document([r["answer"] for r in records], records) == 1.0


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


def test_probe_retrieves_a_token_a_representation_holds_and_not_one_it_lacks():
  rng = np.random.default_rng(0)
  embedding = rng.standard_normal((50, 16)).astype(np.float32)
  gold = rng.integers(0, 50, size=(400, 2))
  mixing = rng.standard_normal((16, 64))
  # The representation holds token 0 (a linear image of its embedding) and only noise for token 1.
  x = embedding[gold[:, 0]] @ mixing + 0.05 * rng.standard_normal((400, 64))
  held = code_probe.probe(x[:300], gold[:300, 0], x[300:], gold[300:, 0], embedding)
  lacking = code_probe.probe(x[:300], gold[:300, 1], x[300:], gold[300:, 1], embedding)
  assert held["test_accuracy"] > 0.95 and held["penalty"] in code_probe.PENALTIES
  assert lacking["test_accuracy"] < 0.15 and lacking["chance"] == pytest.approx(1 / len(np.unique(gold[300:, 1])))
  # Dual ridge equals the primal solution (X'X + lambda I)^-1 X'y, scaled as fit_ridge scales it.
  y = rng.standard_normal((300, 3))
  coef = code_probe.fit_ridge(x[:300], y, 0.1)
  scale = np.trace(x[:300] @ x[:300].T) / 300
  primal = np.linalg.solve(x[:300].T @ x[:300] + 0.1 * scale * np.eye(64), x[:300].T @ y)
  np.testing.assert_allclose(x[300:] @ x[:300].T @ coef, x[300:] @ primal, rtol=1e-3, atol=1e-3)


def test_word_span_finds_the_words_tokens_after_bos():
  assert code_probe.word_span([7, 8, 9, 10, 11], [9, 10]) == (3, 5)
  with pytest.raises(ValueError, match="not in the document"):
    code_probe.word_span([7, 8, 9], [9, 10])


def test_free_fit_splits_a_one_chunk_adapter_into_its_blocks_and_joins_them_back():
  rng = np.random.default_rng(1)
  weights = {"down": {"a": jnp.asarray(rng.standard_normal((3, 2, 8, 5)), jnp.float32),
                      "b": jnp.asarray(rng.standard_normal((3, 2, 8, 4)), jnp.float32)}}
  adapter = lora.LoraAdapter(weights, 2.0)
  chunk, bias = free_adapter.split_blocks(adapter, 4)
  assert chunk["down"]["b"].shape == (3, 2, 4, 4) and bias["down"]["a"].shape == (3, 2, 4, 5)
  rejoined = free_adapter.joined(chunk, bias, adapter.scaling)
  np.testing.assert_array_equal(np.asarray(rejoined.weights["down"]["b"]), np.asarray(weights["down"]["b"]))
  doubled = {"down": {**chunk["down"], "b": 2 * chunk["down"]["b"]}}
  assert free_adapter.relative_change(doubled, chunk, "b") == pytest.approx(1.0)
  assert free_adapter.relative_change(doubled, chunk, "a") == 0.0


def test_run_logs_summarize_loss_per_hundred_steps_and_the_late_gradient_norm(tmp_path):
  logs = tmp_path / "logs"
  logs.mkdir()
  rows = [{"step": s, "loss": 10.0 - s / 100, "grad_norm": 1000.0 if s <= 100 else float(s)}
          for s in range(10, 310, 10)]
  rows.insert(3, {"step": 35, "eval_loss": 1.0})  # rows without a training loss are skipped
  (logs / "metrics.jsonl").write_text("".join(f"{json.dumps(r)}\n" for r in rows))
  log = run_logs.read_log(str(tmp_path))
  assert log["step"] == list(range(10, 310, 10))
  summary = run_logs.summarize(log)
  # Steps 10..100 average 10 - 0.55; steps 110..200 10 - 1.55; steps 210..300 10 - 2.55.
  assert summary["loss_per_100_steps"] == pytest.approx({0: 9.45, 100: 8.45, 200: 7.45})
  # The last 200 steps are 110..300, whose norms are their step numbers: median 205.
  assert summary["grad_norm_median_late"] == 205.0 and set(summary) == {"loss_per_100_steps", "grad_norm_median_late"}


def _kind(questions, d2l_rouge, in_context_rouge, d2l_contains=0.0):
  return {"questions": questions, "d2l": {"rouge_l": d2l_rouge, "contains": d2l_contains, "prefix": d2l_contains},
          "base_in_context": {"rouge_l": in_context_rouge, "contains": 1.0, "prefix": 1.0}}


def test_relative_rouge_l_weights_each_kind_by_its_questions():
  by_kind = {"number": _kind(3, 1.0, 0.5), "made-up name": _kind(1, 0.0, 1.0)}
  assert by_fact.relative_rouge_l(by_kind) == pytest.approx(3.0 / 2.5)


def test_compare_lines_up_each_labels_scores_and_marks_a_missing_one(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "RESULTS", tmp_path)
  for name, contains in (("v1", 0.5), ("h1", 0.25), ("h2", 1.0)):
    result = {"experiment": name, "by_answer_kind": {"number": _kind(4, contains, 1.0, contains),
                                                      "made-up name": _kind(4, 0.0, 1.0)}}
    (tmp_path / f"{name}.json").write_text(json.dumps(result))
  runs = compare.compare({"validation": {"a": "v1"}, "held_out": {"a": "h1", "b": "h2"}})
  assert list(runs) == ["a", "b"] and "validation" not in runs["b"]
  assert runs["a"]["validation"]["contains"] == {"number": 2, "made-up name": 0}
  assert runs["b"]["held_out"]["relative_rouge_l"] == pytest.approx(0.5)
  rows = compare.table(runs, "cycle").splitlines()
  assert rows[0].startswith("| cycle | validation: number")
  assert rows[2] == "| a | 2 of 4 (2) | 0 of 4 (0) | 0.250 | 1 of 4 (1) | 0 of 4 (0) | 0.125 |"
  assert rows[3] == "| b | - | - | - | 4 of 4 (4) | 0 of 4 (0) | 0.500 |"


def _centred_variables(config, seed):
  """Random variables whose running code centre is seed-dependent too (init's is zero)."""
  variables = doc_to_lora.init(config, jax.random.key(seed))
  stats = jax.tree.map(lambda x: x + seed, variables["code_stats"])
  return {**variables, "code_stats": stats}


def test_average_is_the_leafwise_mean_of_one_runs_hypernetworks_and_refuses_another_config(tmp_path):
  config = doc_to_lora.d2l_tiny(config_lib.tiny_gemma3(), experimental={"center_momentum": 0.9})
  identity = io.BaseIdentity("tiny", "0" * 16)
  folders = [saved.save_hypernetwork(tmp_path / str(seed), config, _centred_variables(config, seed), base=identity)
             for seed in (1, 2, 3)]
  average.main([*map(str, folders), "--out", str(tmp_path / "mean")])
  mean = saved.load_hypernetwork(tmp_path / "mean")
  inputs = [saved.load_hypernetwork(folder).variables for folder in folders]
  assert mean.config == config and mean.base == identity
  assert set(mean.variables) == {"params", "code_stats"}  # the running centre is averaged with the params
  jax.tree.map(lambda m, *xs: np.testing.assert_allclose(m, np.mean(xs, axis=0), rtol=1e-6, atol=1e-7),
               mean.variables, *inputs)
  assert any(not np.allclose(m, x) for m, x in zip(jax.tree.leaves(mean.params), jax.tree.leaves(inputs[0]["params"])))
  other = doc_to_lora.d2l_tiny(config_lib.tiny_gemma3(), rank=4)
  saved.save_hypernetwork(tmp_path / "other", other, doc_to_lora.init(other, jax.random.key(0)), base=identity)
  with pytest.raises(ValueError, match="another config"):
    average.average([saved.load_hypernetwork(folders[0]), saved.load_hypernetwork(tmp_path / "other")])
