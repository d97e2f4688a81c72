"""Every generated source plugs into grain: MapDataset shuffling and batching, and the DataLoader."""

import json
import tempfile

import grain
import numpy as np
import pytest

from lora_hyper.data import fictional, jsonl_source, niah, tasks


def _jsonl_of_fictional() -> str:
  source = fictional.FictionalQA(2, split="test")
  with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    f.write("".join(json.dumps(source[i]) + "\n" for i in range(len(source))))
  return f.name


SOURCES = {
    "niah": lambda: niah.NiahSource(24, length=(32, 64)),
    "fictional": lambda: fictional.FictionalQA(4, split="test"),
    "tasks": lambda: tasks.TaskExamples(tasks.all_tasks()[:6], seed=0, num_examples_per_task=4),
    "jsonl": lambda: jsonl_source.JsonlQA(_jsonl_of_fictional()),
}


@pytest.mark.parametrize("name", SOURCES)
def test_map_dataset_shuffles_and_batches(name):
  source = SOURCES[name]()
  dataset = grain.MapDataset.source(source).shuffle(seed=0).batch(4, drop_remainder=True)
  batch = dataset[0]
  assert set(batch) == set(source[0]) and all(len(v) == 4 for v in batch.values())
  again = grain.MapDataset.source(SOURCES[name]()).shuffle(seed=0).batch(4, drop_remainder=True)[0]
  assert all(np.array_equal(batch[k], again[k]) for k in batch)
  assert sum(1 for _ in dataset) == len(source) // 4


@pytest.mark.parametrize("name", SOURCES)
def test_data_loader_with_index_sampler(name):
  source = SOURCES[name]()
  sampler = grain.samplers.IndexSampler(len(source), shuffle=True, num_epochs=1, seed=0)
  loader = grain.DataLoader(data_source=source, sampler=sampler, operations=[grain.transforms.Batch(4)],
                            worker_count=0)
  batches = list(loader)
  assert sum(len(next(iter(b.values()))) for b in batches) == len(source)
