"""What a meta-training step minimises: one frozen dataclass per objective, called as
`objective(variables, base_params, batch, rng) -> (loss, (metrics, stats))`.

`variables` are the hypernetwork's Flax variables ({"params": ...} and any statistics); `stats` are
its non-param collections after this batch (running statistics; {} for hypernetworks without any).
Batches are dicts of arrays with a leading batch axis (see `lora_hyper.data.pipeline`). Logits
are computed only at the positions a loss reads (`*_logits_at`): the 262K-vocabulary output
head is most of the 270M base model's FLOPs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lora_hyper.adapters import lora
from lora_hyper.hypernetworks import doc_to_lora, text_to_lora
from lora_hyper.hypernetworks.doc_to_lora import DocToLoraConfig
from lora_hyper.hypernetworks.text_to_lora import TextToLoraConfig
from lora_hyper.model import transformer
from lora_hyper.training import losses

Array = jax.Array
PyTree = Any
Batch = dict[str, Array]


def _student_logits(base_params: PyTree, batch: Batch, adapter: lora.LoraAdapter | None, base_config) -> Array:
  return transformer.forward(base_params, batch["student_tokens"], config=base_config, mask=batch["student_mask"],
                             adapter=adapter, logits_at=batch["student_logits_at"]).logits


@dataclasses.dataclass(frozen=True)
class DocDistillation:
  """Doc-to-LoRA context distillation: teacher = base with the document in context, student =
  base + generated adapter without it. `loss`: kl (full vocabulary), topk (the teacher's top-k
  log-probs, computed here or stored in the batch as `teacher_topk_logprobs/ids`) or ce (plain
  cross-entropy on the answer tokens, as the paper uses for NIAH). With `chunk_gate` the mean
  gate of the batch's real chunks is logged as `mean_gate`."""

  hyper: DocToLoraConfig
  loss: str = "kl"
  top_k: int = 16
  l1_penalty: float = 0.1
  iterative: bool = False

  def __post_init__(self):
    if self.loss not in ("kl", "topk", "ce"):
      raise ValueError(f"DocDistillation.loss must be kl, topk or ce, got {self.loss!r}")

  def __call__(self, variables: PyTree, base_params: PyTree, batch: Batch, rng: Array) -> tuple[Array, tuple]:
    del rng  # deterministic
    base = self.hyper.base
    adapter, stats, gates = doc_to_lora.document_adapters(variables, base_params, batch["chunk_tokens"],
                                                          batch["chunk_mask"], config=self.hyper,
                                                          iterative=self.iterative, train=True)
    student = _student_logits(base_params, batch, adapter, base)
    mask = batch["loss_mask"]
    if self.loss == "ce":
      task_loss = losses.cross_entropy(student, batch["targets"], mask)
    elif self.loss == "topk" and "teacher_topk_ids" in batch:
      if batch["teacher_topk_ids"].shape[-1] != self.top_k:
        raise ValueError(f"the stored teacher top-k has k={batch['teacher_topk_ids'].shape[-1]}, the objective "
                         f"top_k={self.top_k}: set objective_overrides = {{'top_k': "
                         f"{batch['teacher_topk_ids'].shape[-1]}}} or prepare the data with this k")
      task_loss = losses.topk_distillation(student, batch["teacher_topk_logprobs"], batch["teacher_topk_ids"], mask)
    else:
      if "teacher_tokens" not in batch:
        raise ValueError(f"loss={self.loss!r} needs teacher sequences: set DocExampleShapes.teacher_len")
      teacher = jax.lax.stop_gradient(transformer.forward(
          base_params, batch["teacher_tokens"], config=base, mask=batch["teacher_mask"],
          logits_at=batch["teacher_logits_at"]).logits)
      if self.loss == "kl":
        task_loss = losses.distillation_kl(student, teacher, mask)
      else:
        task_loss = losses.topk_distillation(student, *losses.teacher_topk(teacher, self.top_k), mask)
    penalty = losses.factor_penalty(adapter, "l1")
    loss = task_loss + self.l1_penalty * penalty
    metrics = {"task_loss": task_loss, "l1_penalty": penalty}
    if gates is not None:
      chunks = jnp.maximum(jnp.sum(batch["chunk_mask"].any(axis=-1)), 1)
      metrics["mean_gate"] = sum(jnp.sum(g) for g in gates.values()) / (chunks * self.hyper.base.num_layers
                                                                         * len(gates))
    return loss, (metrics, stats)


@dataclasses.dataclass(frozen=True)
class TaskSFT:
  """Text-to-LoRA SFT: completion-only cross-entropy through the frozen base with the adapter
  generated from the task embedding (`task_emb` [B, E]), label smoothing, L2 on A and B."""

  hyper: TextToLoraConfig
  label_smoothing: float = 0.1
  l2_penalty: float = 1e-3

  def __call__(self, variables: PyTree, base_params: PyTree, batch: Batch, rng: Array) -> tuple[Array, tuple]:
    adapter = text_to_lora.generate(variables, batch["task_emb"], config=self.hyper, deterministic=False,
                                    dropout_rng=rng)
    logits = _student_logits(base_params, batch, adapter, self.hyper.base)
    task_loss = losses.cross_entropy(logits, batch["targets"], batch["loss_mask"], self.label_smoothing)
    penalty = losses.factor_penalty(adapter, "l2")
    return task_loss + self.l2_penalty * penalty, ({"task_loss": task_loss, "l2_penalty": penalty}, {})


@dataclasses.dataclass(frozen=True)
class TaskReconstruction:
  """Text-to-LoRA reconstruction: L1 between generated factors and a library of task LoRAs
  (`target_a_<module>`, `target_b_<module>` [B, L, r, d]); z-scored per element when the batch
  carries the library's `target_mean_*` / `target_std_*` (`TaskLoraLibrary(zscore=True)`)."""

  hyper: TextToLoraConfig

  def __call__(self, variables: PyTree, base_params: PyTree, batch: Batch, rng: Array) -> tuple[Array, tuple]:
    del base_params
    generated = text_to_lora.generate(variables, batch["task_emb"], config=self.hyper, deterministic=False,
                                      dropout_rng=rng)
    modules = generated.modules
    target = lora.LoraAdapter({m: {"a": batch[f"target_a_{m}"], "b": batch[f"target_b_{m}"]} for m in modules},
                              generated.scaling)
    stats = None
    if f"target_mean_a_{modules[0]}" in batch:
      stats = {m: {n: (batch[f"target_mean_{n}_{m}"][0], batch[f"target_std_{n}_{m}"][0]) for n in ("a", "b")}
               for m in modules}
    loss = losses.reconstruction_l1(generated, target, stats)
    return loss, ({"task_loss": loss}, {})
