"""Per-task LoRAs trained jointly on a tiny random Gemma 3: the same as separate runs, micro-batching
changes nothing, a library of them is a reconstruction source."""

import jax
import numpy as np
import pytest

from lora_hyper.adapters import io, lora
from lora_hyper.baselines import task_loras
from lora_hyper.data import lora_library, pipeline, tasks
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer
from lora_hyper.prompts import task_prompt
from lora_hyper.training import losses

TASK_IDS = ("string/uppercase", "string/reverse", "arithmetic/add_3")
SHAPES = pipeline.TaskExampleShapes(seq_len=80, answer_len=40)


@pytest.fixture(scope="module")
def tiny():
  cfg = config_lib.tiny_gemma3()
  return cfg, transformer.init_params(cfg, jax.random.key(0))


def _to_example(record):
  encode = lambda text: [3 + ord(c) % 120 for c in text]  # a character tokenizer for the tiny vocab
  tokenizer = type("CharTokenizer", (), {"encode": lambda self, text, add_bos=False: encode(text)})()
  return pipeline.sft_example(record, tokenizer, 2, 1, 0, SHAPES, task_prompt)


def _source(task_ids=TASK_IDS):
  return tasks.TaskExamples([tasks.get_task(t) for t in task_ids], num_examples_per_task=8)


def _train(tiny, task_ids, steps=6, micro_batch=64, examples_per_task=2):
  cfg, params = tiny
  config = task_loras.TaskLoraConfig(modules=("q", "v"), rank=2, scaling=1.5, steps=steps, learning_rate=1e-2,
                                     examples_per_task=examples_per_task, micro_batch=micro_batch)
  batches = task_loras.per_task_batches(_source(task_ids), _to_example, len(task_ids), examples_per_task)
  return task_loras.train(params, cfg, batches, len(task_ids), config)


@pytest.mark.parametrize("shared", [True, False])
def test_initial_weights_shared_or_independent(tiny, shared):
  """Shared: every task starts from the first task's A (the T = 1 start); otherwise each has its
  own. B starts at zero either way."""
  cfg, _ = tiny
  config = task_loras.TaskLoraConfig(modules=("q", "v"), rank=2, shared_init=shared)
  weights = task_loras.initial_weights(cfg, 3, config)
  single = task_loras.initial_weights(cfg, 1, config)
  a = np.asarray(weights["q"]["a"])
  assert a.shape == (3, cfg.num_layers, 2, cfg.module_shape("q")[0])
  np.testing.assert_array_equal(a[0], np.asarray(single["q"]["a"])[0])
  assert np.array_equal(a[1], a[0]) == shared and np.array_equal(a[2], a[0]) == shared
  np.testing.assert_array_equal(np.asarray(weights["v"]["b"]), 0.0)


def test_joint_training_equals_separate_runs(tiny):
  """Each task's factors see only its own examples and Adam is elementwise (and scale-free): the
  joint run gives every task the LoRA of a run on that task's examples alone."""
  cfg, params = tiny
  joint = _train(tiny, TASK_IDS)
  assert joint.losses[-1] < 0.9 * joint.losses[0], joint.losses
  config = task_loras.TaskLoraConfig(modules=("q", "v"), rank=2, scaling=1.5, steps=6, learning_rate=1e-2,
                                     examples_per_task=2)
  for i in range(len(TASK_IDS)):
    batches = task_loras.per_task_batches(_source(), _to_example, len(TASK_IDS), 2)
    only_i = ({k: v[b["task_index"] == i] for k, v in b.items()} for b in batches)
    alone = task_loras.train(params, cfg, only_i, len(TASK_IDS), config)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5),
                 dict(lora.take(joint.adapters, i).weights), dict(lora.take(alone.adapters, i).weights))
    untouched = (i + 1) % len(TASK_IDS)  # zero gradient, zero Adam update: still the PEFT init (B = 0)
    np.testing.assert_array_equal(alone.adapters.weights["v"]["b"][untouched], 0.0)
  assert all(np.abs(np.asarray(joint.adapters.weights["v"]["b"][i])).max() > 0 for i in range(3))


def test_micro_batches_change_nothing(tiny):
  whole, parts = _train(tiny, TASK_IDS, micro_batch=64), _train(tiny, TASK_IDS, micro_batch=4)
  np.testing.assert_allclose(whole.losses, parts.losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), dict(whole.adapters.weights),
               dict(parts.adapters.weights))


def test_library_round_trip_and_errors(tiny, tmp_path):
  trained = _train(tiny, TASK_IDS, steps=2)
  base = io.BaseIdentity("tiny", "0" * 16)
  task_list = [tasks.get_task(t) for t in TASK_IDS]
  for i, folder in enumerate(task_loras.library_paths(str(tmp_path), TASK_IDS)):
    io.save_adapter(folder, lora.take(trained.adapters, i), base=base, source={"task_id": TASK_IDS[i]})
  library = lora_library.TaskLoraLibrary(str(tmp_path), task_list, "train")
  per_task = library.descriptions_per_task
  assert len(library) == 3 * per_task == 3 * 18
  record = library[per_task + 5]
  assert record["task_id"] == TASK_IDS[1]
  assert record["description"] == task_list[1].split_descriptions("train")[5]
  np.testing.assert_array_equal(record["target_b_v"], np.asarray(trained.adapters.weights["v"]["b"][1]))
  example = pipeline.reconstruction_example(record, {record["description"]: np.ones(4)})
  assert set(example) == {"task_emb", "target_a_q", "target_b_q", "target_a_v", "target_b_v"}
  lora_library.check_matches(library, ("q", "v"), 2, 1.5)
  # zscore: each record carries the library's per-element mean and std over tasks; an element no
  # task moved (B starts at zero: untouched rows stay exactly equal) gets std 1.
  scored = lora_library.TaskLoraLibrary(str(tmp_path), task_list, "train", zscore=True)[0]
  stacked = np.asarray(trained.adapters.weights["q"]["a"])
  np.testing.assert_allclose(scored["target_mean_a_q"], stacked.mean(0), rtol=1e-6)
  std = stacked.std(0)
  np.testing.assert_allclose(scored["target_std_a_q"], np.where(std > 1e-8, std, 1.0), rtol=1e-5)
  assert set(scored) - set(record) == {f"target_{s}_{n}_{m}" for s in ("mean", "std") for n in "ab" for m in "qv"}
  batch = {k: v[None] for k, v in pipeline.reconstruction_example(scored, {scored["description"]: np.ones(4)}).items()}
  targets = lora.LoraAdapter({m: {n: batch[f"target_{n}_{m}"] for n in "ab"} for m in "qv"}, 1.5)
  stats = {m: {n: (batch[f"target_mean_{n}_{m}"][0], batch[f"target_std_{n}_{m}"][0]) for n in "ab"} for m in "qv"}
  shifted = lora.LoraAdapter(jax.tree.map(lambda w: w + 0.01, dict(targets.weights)), 1.5)
  expected = np.mean([np.mean(0.01 / stats[m][n][1]) for m in "qv" for n in "ab"])
  np.testing.assert_allclose(losses.reconstruction_l1(shifted, targets, stats), expected, rtol=1e-4)
  with pytest.raises(ValueError, match="do not match the hypernetwork"):
    lora_library.check_matches(library, ("q", "v"), 8, 1.5)
  with pytest.raises(FileNotFoundError, match="no adapter for 1 task"):
    lora_library.TaskLoraLibrary(str(tmp_path), task_list + [tasks.get_task("string/rot_7")])


def test_gin_library_keeps_tasks_spread_over_the_split(tiny, tmp_path):
  from lora_hyper import configurables

  cfg, _ = tiny
  train_ids = [t.task_id for t in tasks.train_tasks()]
  adapter = lora.random(jax.random.key(0), cfg, ("q", "v"), 2, scaling=1.5)
  for folder in task_loras.library_paths(str(tmp_path), train_ids):
    io.save_adapter(folder, adapter, base=io.BaseIdentity("tiny", "0" * 16), source={})
  library = configurables.task_lora_library(str(tmp_path), num_tasks=8)
  chosen = [t.task_id for t in library.tasks]
  assert len(chosen) == 8 and chosen[0] == train_ids[0]
  assert len({tasks.get_task(t).category for t in chosen}) >= 5  # not the first 8 (all string tasks)
  assert len(configurables.task_lora_library(str(tmp_path)).tasks) == len(train_ids)
  same = configurables.task_lora_library(str(tmp_path), num_tasks=8, zscore=True)[0]  # one adapter for all
  np.testing.assert_array_equal(same["target_std_b_v"], 1.0)  # no spread: z-scoring leaves the difference as is
  np.testing.assert_allclose(same["target_mean_a_q"], np.asarray(adapter.weights["q"]["a"]), rtol=1e-6)
  assert [t.task_id for t in configurables.task_library(num_tasks=8).tasks] == chosen
  with pytest.raises(ValueError, match="num_tasks must be between 1 and 118"):
    configurables.task_lora_library(str(tmp_path), num_tasks=0)
