"""The Text-to-LoRA task library: size, descriptions, the fixed held-out split and the functions."""

import collections

import numpy as np
import pytest

from lora_hyper.data import tasks
from lora_hyper.prompts import task_answer, task_prompt

EXPECTED_HELD_OUT = {
    "string/rot_7", "string/last_4", "string/replace_o", "list/add_5", "format/brackets_curly", "format/tag_em",
    "format/join_pipe", "arithmetic/add_7", "arithmetic/multiply_4", "arithmetic/mod_7", "classify/is_vehicle",
    "extract/word_after_code", "compose/remove_vowels+double_letters"}


def test_at_least_100_tasks_with_unique_ids():
  ids = [t.task_id for t in tasks.all_tasks()]
  assert len(ids) >= 100 and len(set(ids)) == len(ids)
  assert {t.category for t in tasks.all_tasks()} == {
      "string", "list", "format", "arithmetic", "classify", "extract", "compose"}


def test_every_task_has_ten_distinct_descriptions_split_three_to_one():
  for task in tasks.all_tasks():
    assert len(set(task.descriptions)) == len(task.descriptions) >= 10
    train, test = task.split_descriptions("train"), task.split_descriptions("test")
    assert len(train) == 3 * len(task.descriptions) // 4 and test
    assert not set(train) & set(test) and train + test == task.split_descriptions("all")


def test_held_out_split_is_fixed_disjoint_and_made_of_seen_families():
  train, held_out = tasks.train_tasks(), tasks.held_out_tasks()
  assert {t.task_id for t in held_out} == EXPECTED_HELD_OUT
  assert not {t.task_id for t in train} & EXPECTED_HELD_OUT
  assert len(train) + len(held_out) == len(tasks.all_tasks())
  train_families = {t.family for t in train}
  assert all(t.family in train_families for t in held_out)  # new members of seen families
  assert tasks.all_tasks() is tasks.all_tasks()


def test_functions_produce_single_line_outputs_for_generated_inputs():
  for task in tasks.all_tasks():
    rng = np.random.default_rng(0)
    for _ in range(20):
      task_input, output = task.example(rng)
      assert task_input and output and "\n" not in task_input + output, task.task_id


@pytest.mark.parametrize("task_id, task_input, output", [
    ("string/reverse", "garden", "nedrag"),
    ("string/rot_1", "zebra", "afcsb"),
    ("string/rot_13", "uryyb", "hello"),
    ("string/remove_vowels", "banana", "bnn"),
    ("string/double_letters", "cat", "ccaatt"),
    ("string/sort_letters", "dcba", "abcd"),
    ("string/capitalise_words", "red blue", "Red Blue"),
    ("string/first_2", "garden", "ga"),
    ("string/replace_e", "tree", "tr33"),
    ("compose/reverse+uppercase", "abc", "CBA"),
    ("list/sort_ascending", "10, 9, 100", "9, 10, 100"),
    ("list/unique", "3, 1, 3, 2, 1", "3, 1, 2"),
    ("list/sum", "1, 2, 3", "6"),
    ("list/add_100", "1, 2", "101, 102"),
    ("format/tag_b", "hi there", "<b>hi there</b>"),
    ("format/join_plus", "a b c", "a + b + c"),
    ("format/key_value_arrow", "size big", "size -> big"),
    ("arithmetic/subtract_20", "5", "-15"),
    ("arithmetic/mod_7", "50", "1"),
    ("classify/is_animal", "tiger", "yes"),
    ("classify/is_animal", "hammer", "no"),
    ("classify/sentiment_good_bad", "The meal was awful.", "bad"),
    ("classify/category", "spanner", "tool"),
    ("extract/numbers", "take 12 eggs and 3 pears", "12, 3"),
    ("extract/word_after_called", "a dog called rex barked", "rex"),
])
def test_task_functions(task_id, task_input, output):
  assert tasks.get_task(task_id).fn(task_input) == output


def test_classification_inputs_are_balanced():
  task = tasks.get_task("classify/is_fruit")
  rng = np.random.default_rng(0)
  answers = collections.Counter(task.example(rng)[1] for _ in range(400))
  assert 150 < answers["yes"] < 250


def test_examples_are_deterministic_and_independent_of_task_order():
  chosen = tasks.all_tasks()[:5]
  a = tasks.TaskExamples(chosen, seed=0, num_examples_per_task=4)
  assert len(a) == 20
  assert [a[i] for i in range(20)] == [tasks.TaskExamples(chosen, 0, 4)[i] for i in range(20)]
  assert [a[i] for i in range(20)] != [tasks.TaskExamples(chosen, 1, 4)[i] for i in range(20)]
  alone = tasks.TaskExamples(chosen[3:4], seed=0, num_examples_per_task=4)
  assert [alone[i] for i in range(4)] == [a[12 + i] for i in range(4)]


def test_examples_draw_descriptions_from_the_requested_split():
  chosen = tasks.held_out_tasks()
  source = tasks.TaskExamples(chosen, seed=0, num_examples_per_task=10, descriptions="test")
  for i in range(len(source)):
    record = source[i]
    task = tasks.get_task(record["task_id"])
    assert record["description"] in task.split_descriptions("test")
    assert record["output"] == task.fn(record["input"]) and record["family"] == task.family
  with pytest.raises(ValueError):
    tasks.TaskExamples(chosen, descriptions="validation")


def test_prompt_format():
  assert task_prompt("cat") == "Input: cat\nOutput:"
  assert task_prompt("cat") + task_answer("tac") == "Input: cat\nOutput: tac"
