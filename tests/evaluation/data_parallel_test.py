"""The evaluator's batches data-parallel over the 8 simulated CPU devices (conftest): the documents'
chunks, the prompts with their per-prompt adapters and the teacher-forced rows really arrive split
over 8 devices, padded to a multiple of 8, and the answers and scores are those of one device, for
batches of 8 rows and of fewer."""

import jax
import numpy as np
import pytest

from lora_hyper import qa, sharding
from lora_hyper.evaluation import evaluator
from lora_hyper.hypernetworks import saved
from lora_hyper.hypernetworks.doc_to_lora import generation
from lora_hyper.model import base_model, decoding

from tiny_model import write_talking_tiny_model, write_tiny_hypernetworks

# 7 documents, 4 of them asked twice: a batch's prompts take their documents' adapters by row.
RECORDS = [{"document": f"Zorblat {i} lives in Quenton {i * 7}, by the river Vell.", "query": q, "answer": a}
           for i in range(7) for q, a in [("Where?", f"Quenton {i * 7}"), ("Which river?", "Vell")][:1 + i % 2]]


def test_shard_rows_pads_with_the_last_row_and_splits_rows_over_the_mesh():
  mesh = sharding.data_mesh()
  placed = sharding.shard_rows({"x": np.arange(10 * 3).reshape(10, 3)}, mesh)["x"]
  assert placed.shape == (16, 3) and len(placed.sharding.device_set) == 8
  assert [s.data.shape for s in placed.addressable_shards] == [(2, 3)] * 8  # rows split, not copied
  np.testing.assert_array_equal(placed[10:], np.tile([[27, 28, 29]], (6, 1)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  folder = tmp_path_factory.mktemp("dp")
  base = base_model.load_base_model(write_talking_tiny_model(folder / "model"))
  return base, saved.load_hypernetwork(write_tiny_hypernetworks(folder, base)[0], base)


def _spy(monkeypatch, module, name, rows_of):
  """Records (rows, devices) of the batch input of each call of `module.name`."""
  seen, original = [], getattr(module, name)

  def spy(*args, **kwargs):
    for x in rows_of(*args, **kwargs):
      seen.append((x.shape[0], len(x.sharding.device_set)))
    return original(*args, **kwargs)

  monkeypatch.setattr(module, name, spy)
  return seen


@pytest.mark.parametrize("batch_size", [8, 3])  # 8: batches of 8 documents and 3; 3: of 3 and 1
def test_data_parallel_answers_and_scores_are_one_devices(tiny, monkeypatch, batch_size):
  assert len(jax.local_devices()) == 8
  base, hyper = tiny
  run = lambda mesh: evaluator.evaluate(
      hyper, base, RECORDS, batch_size=batch_size, conditions=("adapter", "base"), chunk_len=16, mesh=mesh,
      metrics=("rouge_l", "token_accuracy"), sampling=decoding.SamplingConfig(max_new_tokens=3, temperature=1.0))
  one = run(None)
  spied = {"chunks": _spy(monkeypatch, generation, "_group_codes", lambda v, p, tokens, mask, **_: (tokens, mask)),
           "prompts": _spy(monkeypatch, decoding, "generate",
                           lambda p, prompt, mask, key, adapter=None, **_: (
                               prompt, mask, *([] if adapter is None else jax.tree.leaves(adapter.weights)))),
           "forced": _spy(monkeypatch, qa, "greedy_matches", lambda p, batch, adapter, **_: (
               *batch.values(), *([] if adapter is None else jax.tree.leaves(adapter.weights))))}
  parallel = run(sharding.data_mesh())
  assert parallel.answers == one.answers
  unmeasured = lambda report: {k: v for k, v in report.items() if k != "update_seconds"}  # times differ
  assert unmeasured(parallel.report) == unmeasured(one.report)
  # The comparison means something: answers and teacher-forced scores differ from row to row.
  assert len({a["adapter"]["answer"] for a in one.answers}) > 3
  assert len({a["adapter"]["token_accuracy"] for a in one.answers}) > 1
  for part, seen in spied.items():
    assert seen, part
    assert all(devices == 8 and rows % 8 == 0 for rows, devices in seen), (part, seen)
