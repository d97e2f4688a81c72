"""Training on prepared records (`lora-hyper prepare-data`): the stored teacher top-k replace the
teacher in the step, and the run equals, step for step, one that computes the teacher's top-k in
the step from the same (document, query, answer) records (reference: `d2l_topk` with teacher
sequences, `losses.teacher_topk` on the in-step logits)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from lora_hyper.data import pipeline, prepare, prepared
from lora_hyper.model import base_model
from lora_hyper.training import trainer
from lora_hyper.training.optimizer import OptimizerConfig

from tiny_model import write_talking_tiny_model

STEPS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  folder = tmp_path_factory.mktemp("prepared_training")
  base = base_model.load_base_model(write_talking_tiny_model(folder / "model"))
  (folder / "short.txt").write_text("{context}\nQ:")
  config = prepare.PrepareConfig(num_queries=2, top_k=16, shard_size=4, batch_size=8, query_max_tokens=6,
                                 answer_max_tokens=4, bucket=128)
  prepare.prepare_data(out=str(folder / "prepared"), contexts=prepare.fictional_contexts(8, facts_per_doc=1),
                       base_model=base, query_model=base, query_template=str(folder / "short.txt"), config=config,
                       mesh_shape=(1, 1, 1), log=lambda m: None)
  return base, str(folder / "prepared")


def _train(base, workdir, data, teacher_len):
  return trainer.train(
      workdir=str(workdir), data=data, objective="d2l_topk", hypernetwork="d2l_tiny",
      hyper_overrides={"chunk_len": 128, "max_chunks": 1}, global_batch_size=4, steps=STEPS,
      optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=1, total_steps=STEPS),
      doc_shapes=pipeline.DocExampleShapes(num_chunks=1, student_len=48, teacher_len=teacher_len, answer_len=6),
      mesh_shape=(2, 1, 1), log_every=1, save_every=1000, loaded_base=base)


def _losses(workdir) -> list[float]:
  return [json.loads(line)["loss"] for line in (workdir / "logs" / "metrics.jsonl").read_text().splitlines()]


def test_stored_teacher_topk_train_like_the_teacher_in_the_step(data, tmp_path):
  base, folder = data
  source = prepared.PreparedQA(folder)
  assert len(source) >= 8
  plain = [{k: source[i][k] for k in ("document", "query", "answer")} for i in range(len(source))]

  stored = _train(base, tmp_path / "stored", source, teacher_len=None)  # no teacher sequence in the batch
  in_step = _train(base, tmp_path / "in_step", plain, teacher_len=256)
  assert stored.step == in_step.step == STEPS
  np.testing.assert_allclose(_losses(tmp_path / "stored"), _losses(tmp_path / "in_step"), rtol=2e-5)
  for a, b in zip(jax.tree.leaves(stored.variables), jax.tree.leaves(in_step.variables)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_stored_topk_of_another_k_is_refused(data, tmp_path):
  base, folder = data
  with pytest.raises(ValueError, match=r"stored teacher top-k has k=16, the objective top_k=8"):
    trainer.train(workdir=str(tmp_path / "run"), data=prepared.PreparedQA(folder), objective="d2l_topk",
                  objective_overrides={"top_k": 8}, hypernetwork="d2l_tiny",
                  hyper_overrides={"chunk_len": 128, "max_chunks": 1}, global_batch_size=4, steps=1,
                  doc_shapes=pipeline.DocExampleShapes(num_chunks=1, student_len=48, teacher_len=None, answer_len=6),
                  mesh_shape=(2, 1, 1), loaded_base=base)
