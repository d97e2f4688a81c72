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


def test_answers_end_at_their_first_line():
  assert qa.first_line(" Paris\nQuestion: next") == "Paris"
  assert qa.first_line("\n\n  Seven. \nmore") == "Seven."
