"""Tiny Doc-to-LoRA and Text-to-LoRA runs on the real embedded 270M model lower their loss.

Small hypernetworks overfit a handful of records (every batch holds all of them, so the curve is
not noise from changing batches): a check that gradients reach the generator through the real
frozen base model and the whole loop learns, in minutes.
The real runs belong to experiments/.
"""

import json

import numpy as np
import pytest

from lora_hyper.data import fictional, pipeline, tasks
from lora_hyper.training import trainer
from lora_hyper.training.optimizer import OptimizerConfig

pytestmark = pytest.mark.real_model


def _losses(workdir):
  return [json.loads(line)["task_loss"] for line in (workdir / "logs" / "metrics.jsonl").read_text().splitlines()]


def _assert_learns(losses):
  first, last = np.mean(losses[:5]), np.mean(losses[-5:])
  assert last < 0.6 * first, (first, last, losses)


def test_doc_to_lora_run_lowers_its_loss(tmp_path, embedded_base):
  source = fictional.FictionalQA(num_docs=1)  # one document, three of its questions
  result = trainer.train(
      workdir=str(tmp_path), data=[source[i] for i in range(3)], objective="d2l_kl",
      hypernetwork="d2l_tiny", hyper_overrides={"chunk_len": 128, "max_chunks": 1, "rank": 4},
      global_batch_size=3, steps=12, log_every=10, save_every=1000, loaded_base=embedded_base, mesh_shape=(1, 1, 1),
      optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=3, total_steps=12, schedule="constant"),
      doc_shapes=pipeline.DocExampleShapes(num_chunks=1, student_len=32, teacher_len=160, answer_len=8))
  assert result.step == 12
  _assert_learns(_losses(tmp_path))


def test_text_to_lora_run_lowers_its_loss(tmp_path, embedded_base):
  source = tasks.TaskExamples([tasks.get_task("string/uppercase"), tasks.get_task("list/reverse_list")],
                              num_examples_per_task=2)
  result = trainer.train(
      workdir=str(tmp_path), data=source, objective="t2l_sft", hypernetwork="t2l_tiny",
      global_batch_size=4, steps=12, log_every=10, save_every=1000, loaded_base=embedded_base, mesh_shape=(1, 1, 1),
      optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=3, total_steps=12, schedule="constant"),
      task_shapes=pipeline.TaskExampleShapes(seq_len=40, answer_len=12))
  assert result.step == 12
  _assert_learns(_losses(tmp_path))
