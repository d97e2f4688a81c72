"""Answer scores against hand-computed values, and the first-line cut of answers."""

import pytest

from lora_hyper import qa


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence():
  assert qa.rouge_l("Paris", "paris.") == 1.0
  # LCS("the city of paris" , "paris") = 1: precision 1/4, recall 1 -> F1 0.4
  assert qa.rouge_l("The city of Paris", "Paris") == pytest.approx(0.4)
  # LCS("a b c d", "a c e") = 2 ("a c"): precision 2/4, recall 2/3 -> F1 4/7
  assert qa.rouge_l("a b c d", "a c e") == pytest.approx(4 / 7)
  assert qa.rouge_l("", "x") == 0.0 and qa.rouge_l("", "") == 1.0 and qa.rouge_l("y", "x") == 0.0


def test_contains_needs_the_reference_words_in_order_and_adjacent():
  assert qa.contains("He lives in Vellamoor, by the river.", "vellamoor")
  assert qa.contains("seven owls", "Seven owls")
  assert not qa.contains("owls, seven", "seven owls") and not qa.contains("anything", "")
  # A number with thousands separators is one number: it holds neither of its comma-separated parts.
  assert qa.contains("It cost 6,206 dollars.", "6206") and qa.contains("6206", "6,206")
  assert not qa.contains("2,214", "214") and not qa.contains("28,871 dollars", "28")
  assert qa.words("1,2,3 and 12,345,678") == ["1", "2", "3", "and", "12345678"]


def test_answers_end_at_their_first_line():
  assert qa.first_line(" Paris\nQuestion: next") == "Paris"
  assert qa.first_line("\n\n  Seven. \nmore") == "Seven."


def test_greedy_matches_agrees_with_greedy_decoding():
  """Teacher-forced argmax == target at every answer position iff greedy decoding writes the target."""
  import jax
  import numpy as np

  from lora_hyper.adapters import lora
  from lora_hyper.model import decoding

  from training.fakes import tiny_base

  base = tiny_base()
  cfg = base.config
  adapter = lora.random(jax.random.key(3), cfg, ("q", "v"), 2, std=0.3)
  prompts = [[cfg.bos_id, *base.tokenizer.encode(f"Input: {w}\nOutput:", add_bos=False)] for w in ("ab", "xyz", "q")]
  decoded = []
  for ids in prompts:  # the greedy answer of each prompt, up to its EOS or 5 tokens
    tokens, length = decoding.generate(base.params, np.asarray([ids]), np.ones((1, len(ids)), bool),
                                       jax.random.key(0), config=cfg, sampling=decoding.SamplingConfig(max_new_tokens=5),
                                       stop_ids=(cfg.eos_id,), adapter=adapter)
    decoded.append([int(t) for t in np.asarray(tokens)[0, :int(length[0])]])
  rows = []
  for ids, answer in zip(prompts, decoded):
    wrong = [answer[0] % 100 + 3 if answer[0] % 100 + 3 != answer[0] else 7, *answer[1:]]
    for target in (answer, wrong):  # the greedy answer matches; one changed token does not
      tokens, mask = np.zeros(24, np.int32), np.zeros(24, bool)
      tokens[:len(ids) + len(target)], mask[:len(ids) + len(target)] = [*ids, *target], True
      at, loss_mask = np.zeros(6, np.int32), np.zeros(6, bool)
      at[:len(target)], loss_mask[:len(target)] = np.arange(len(ids) - 1, len(ids) - 1 + len(target)), True
      targets = np.zeros(6, np.int32)
      targets[:len(target)] = target
      rows.append({"student_tokens": tokens, "student_mask": mask, "student_logits_at": at, "targets": targets,
                   "loss_mask": loss_mask})
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  exact, exact_line, share = qa.greedy_matches(base.params, batch, adapter, config=cfg)
  np.testing.assert_array_equal(np.asarray(exact), [True, False] * 3)
  np.testing.assert_array_equal(np.asarray(exact_line), np.asarray(exact))  # no line ends named: EOS only
  assert np.all(np.asarray(share)[::2] == 1.0) and np.all(np.asarray(share)[1::2] < 1.0)


def test_greedy_matches_takes_a_line_end_for_the_eos():
  """A target "answer, EOS" is matched by a model that writes the answer and then a line end."""
  import jax.numpy as jnp
  import numpy as np

  from training.fakes import tiny_base

  base = tiny_base()
  cfg = base.config
  tokens = jnp.asarray([[cfg.bos_id, 10, 11, 12, 13]])
  logits = qa.transformer.forward(base.params, tokens, config=cfg, logits_at=jnp.asarray([[2, 3]])).logits
  predicted = np.asarray(jnp.argmax(logits, axis=-1))[0]  # the model's own next tokens after 11 and 12
  batch = {"student_tokens": tokens, "student_mask": jnp.ones_like(tokens, bool),
           "student_logits_at": jnp.asarray([[2, 3]]), "loss_mask": jnp.ones((1, 2), bool),
           "targets": jnp.asarray([[predicted[0], cfg.eos_id]])}
  line_end = int(predicted[1])  # what the model writes after the "answer": call it a line end
  assert line_end != cfg.eos_id  # (true of this seed) so EOS-only and line-end matching differ
  plain = qa.greedy_matches(base.params, batch, None, config=cfg)
  with_line = qa.greedy_matches(base.params, batch, None, config=cfg, line_ends=(line_end,))
  assert not plain.exact[0] and not plain.exact_line[0]
  assert not with_line.exact[0] and with_line.exact_line[0]


def test_self_generated_pairs_are_the_models_in_context_answers_to_template_queries():
  from lora_hyper.data import fictional

  from training.fakes import tiny_base

  base = tiny_base()
  document = fictional.make_document(0, "train", 0).text
  sampling = qa.decoding.SamplingConfig(max_new_tokens=4)
  pairs = qa.self_generated_pairs(base, document, 3, sampling=sampling)
  queries = fictional.generated_queries({"document": document}, 3)
  expected = qa.answer(base, queries, context=document, sampling=sampling)
  assert [(p["query"], p["answer"]) for p in pairs] == [(q, a) for q, a in zip(queries, expected) if a]
  assert all(p["document"] == document for p in pairs)
