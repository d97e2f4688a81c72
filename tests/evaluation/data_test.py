"""Evaluation record sources that need no model: the Text-to-LoRA task library's records as the
Text-to-LoRA study read them (held-out tasks with held-out descriptions, seed 1, task-major)."""

import pytest

from lora_hyper.data import tasks
from lora_hyper.evaluation import data


def test_task_data_is_the_libraries_held_out_examples_grouped_by_task():
  records = data.TaskData(per_task=3, shots=2).records("text_to_lora", len)
  held = tasks.TaskExamples(tasks.held_out_tasks(), seed=1, num_examples_per_task=3, descriptions="test")
  assert [{k: v for k, v in r.items() if k not in ("group", "demonstrations")} for r in records] == \
      [held[i] for i in range(len(held))]
  assert all(r["group"] == r["task_id"] for r in records)
  shown = tasks.TaskExamples(tasks.held_out_tasks(), seed=2, num_examples_per_task=2)
  first = tasks.held_out_tasks()[0].task_id
  assert records[0]["demonstrations"] == [[shown[0]["input"], shown[0]["output"]], [shown[1]["input"], shown[1]["output"]]]
  assert all(r["demonstrations"] == records[0]["demonstrations"] for r in records if r["task_id"] == first)
  assert "demonstrations" not in data.TaskData(per_task=1).records("text_to_lora", len)[0]


def test_task_data_of_training_tasks_reads_seen_descriptions():
  records = data.TaskData(split="train", per_task=1, num_tasks=8).records("text_to_lora", len)
  chosen = tasks.split_tasks("train", 8)
  assert [r["task_id"] for r in records] == [t.task_id for t in chosen]
  assert all(r["description"] in tasks.get_task(r["task_id"]).split_descriptions("train") for r in records)


@pytest.mark.parametrize("kwargs, message", [
    ({"per_task": 0}, "TaskData.per_task must be a positive integer"),
    ({"shots": -1}, "TaskData.shots must be a non-negative integer"),
    ({"descriptions": "held_out"}, "TaskData.descriptions must be"),
    ({"split": "train", "num_tasks": 500}, "num_tasks must be between 1 and 118"),
])
def test_bad_task_data_is_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    data.TaskData(**kwargs)


def test_task_data_needs_a_text_to_lora_hypernetwork():
  with pytest.raises(ValueError, match="needs a text_to_lora hypernetwork"):
    data.TaskData().records("doc_to_lora", len)
