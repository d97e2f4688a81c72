"""Gradient context distillation into a LoRA: the oracle baseline of Doc-to-LoRA.

The teacher is the frozen base model with the document in its prompt; the student is the base
model plus a LoRA, without the document. A fresh LoRA (A small random, B zero, so the student
starts as the bare base model) is optimised with Adam on

  KL( p_base(answer | context, prompt) || p_{base + LoRA}(answer | prompt) )

at the answer positions, for a fixed number of jitted gradient steps. In the paper's oracle
setting the prompt is the test query itself and the answer is the teacher's own greedy answer
(`distill`); without the test query, the prompts are queries generated about the document
(`distill_queries`, e.g. with `data.fictional.generated_queries`).

The same loop with a cross-entropy objective trains an ordinary LoRA on supervised examples
(Text-to-LoRA's per-task LoRA baseline): `fit(..., objective="ce")`.

Sequences are laid out as in `lora_hyper.data.pipeline`:
  teacher  [BOS, *context, *prompt, *answer]
  student  [BOS, *prompt, *answer]
Token ids go in as given (the caller formats and tokenizes), so any prompt format works.

Compilation is done ahead of time and timed apart from running (`Timings`), so the latency of
an update can be read with or without it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lora_hyper.adapters import lora
from lora_hyper.model import decoding, transformer
from lora_hyper.model.config import GemmaConfig
from lora_hyper.training import losses

Array = jax.Array
PyTree = Any
OBJECTIVES = ("kl", "ce")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """The LoRA being optimised and how. Defaults: the paper's oracle (300 steps) on Doc-to-LoRA's target."""

  modules: tuple[str, ...] = ("down",)
  rank: int = 8
  scaling: float = 2.0  # alpha / r with PEFT's common alpha = 2 r
  steps: int = 300
  learning_rate: float = 1e-3
  max_answer_tokens: int = 32  # teacher's greedy answer, when none is given

  def __post_init__(self):
    if self.steps < 1 or self.rank < 1 or self.max_answer_tokens < 1:
      raise ValueError(f"need steps, rank, max_answer_tokens >= 1; got {self.steps}, {self.rank}, "
                       f"{self.max_answer_tokens}")


@dataclasses.dataclass(frozen=True)
class Timings:
  """Wall seconds, each phase blocked on its results. `update_s` excludes compilation."""

  compile_s: float  # ahead-of-time compilation of every function below
  answer_s: float  # the teacher's greedy answer (0 when the answer was given)
  teacher_s: float  # teacher logits at the answer positions (one forward with the document)
  steps_s: float  # all gradient steps

  @property
  def update_s(self) -> float:
    return self.answer_s + self.teacher_s + self.steps_s

  @property
  def total_s(self) -> float:
    return self.compile_s + self.update_s


@dataclasses.dataclass(frozen=True)
class FitResult:
  adapter: lora.LoraAdapter
  losses: np.ndarray  # [steps] the loss before each update
  compile_s: float
  steps_s: float


@dataclasses.dataclass(frozen=True)
class DistillResult:
  adapter: lora.LoraAdapter
  answers: tuple[tuple[int, ...], ...]  # the answer tokens distilled on, one tuple per prompt
  losses: np.ndarray  # [steps] KL before each update
  timings: Timings

  @property
  def answer(self) -> tuple[int, ...]:
    """The first prompt's answer (the only one, from `distill`)."""
    return self.answers[0]


def init_adapter(key: Array, config: GemmaConfig, modules: tuple[str, ...], rank: int, *,
                 scaling: float) -> lora.LoraAdapter:
  """PEFT's default LoRA init: A ~ U(+-1/sqrt(d_in)) (Kaiming-uniform, a=sqrt(5)), B = 0."""
  weights = {}
  for module, k in zip(modules, jax.random.split(key, len(modules))):
    d_in, d_out = config.module_shape(module)
    bound = 1.0 / math.sqrt(d_in)
    weights[module] = {
        "a": jax.random.uniform(k, (config.num_layers, rank, d_in), jnp.float32, -bound, bound),
        "b": jnp.zeros((config.num_layers, rank, d_out), jnp.float32)}
  return lora.LoraAdapter(weights, scaling)


def _loss(objective: str, logits: Array, batch: Mapping[str, Array]) -> Array:
  if objective == "kl":
    return losses.distillation_kl(logits, batch["teacher_logits"], batch["loss_mask"])
  return losses.cross_entropy(logits, batch["targets"], batch["loss_mask"])


def make_step(config: GemmaConfig, scaling: float, objective: str, tx: optax.GradientTransformation):
  """The jitted step (weights, opt_state, base_params, batch) -> (weights, opt_state, loss) on one
  shared LoRA's factors; logits only at `batch["logits_at"]`. Weights and state are donated."""
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")

  def loss_fn(weights, base_params, batch):
    adapter = lora.LoraAdapter(weights, scaling)
    logits = transformer.forward(base_params, batch["tokens"], config=config, mask=batch["mask"], adapter=adapter,
                                 logits_at=batch["logits_at"]).logits
    return _loss(objective, logits, batch)

  def step(weights, opt_state, base_params, batch):
    loss, grads = jax.value_and_grad(loss_fn)(weights, base_params, batch)
    updates, opt_state = tx.update(grads, opt_state, weights)
    return optax.apply_updates(weights, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def fit(base_params: PyTree, config: GemmaConfig, adapter: lora.LoraAdapter, batch: Mapping[str, Any], *,
        objective: str, steps: int, learning_rate: float, batch_size: int | None = None) -> FitResult:
  """Adam on the adapter's factors (the base stays frozen) for `steps` jitted steps.

  batch: tokens, mask [N, T]; logits_at, loss_mask [N, P]; and teacher_logits [N, P, V] ("kl") or
  targets [N, P] ("ce"). With `batch_size` < N, step i reads rows i*batch_size.. (cycling);
  otherwise every step reads the whole batch.
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
  needed = {"tokens", "mask", "logits_at", "loss_mask", "teacher_logits" if objective == "kl" else "targets"}
  if missing := needed - set(batch):
    raise ValueError(f"batch lacks {sorted(missing)} for objective {objective!r}")
  if adapter.is_batched:
    raise ValueError("fit trains one shared adapter; got a batched one")
  rows = batch["tokens"].shape[0]
  batch_size = rows if batch_size is None else min(batch_size, rows)
  host = {k: np.asarray(batch[k]) for k in needed}
  offsets = [(i * batch_size) % rows for i in range(steps)]
  take = lambda i: {k: jnp.asarray(np.take(v, range(offsets[i], offsets[i] + batch_size), axis=0, mode="wrap"))
                    for k, v in host.items()}

  tx = optax.adam(learning_rate)
  weights = jax.tree.map(jnp.array, dict(adapter.weights))  # copies: the step donates its inputs
  opt_state = tx.init(weights)
  start = time.perf_counter()
  step = make_step(config, adapter.scaling, objective, tx).lower(weights, opt_state, base_params, take(0)).compile()
  compile_s = time.perf_counter() - start

  batches = [take(0)] * steps if batch_size == rows else [take(i) for i in range(steps)]
  jax.block_until_ready(batches)
  history = []
  start = time.perf_counter()
  for b in batches:
    weights, opt_state, loss = step(weights, opt_state, base_params, b)
    history.append(loss)
  jax.block_until_ready(weights)
  steps_s = time.perf_counter() - start
  return FitResult(lora.LoraAdapter(weights, adapter.scaling), np.asarray(jnp.stack(history)), compile_s, steps_s)


def _rows(prefixes: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
  """Each [prefix, answer] as one right-padded row, with the positions whose logits predict each
  answer token (padded answer slots are masked out of the loss)."""
  rows = [[*p, *a] for p, a in zip(prefixes, answers)]
  width, answer_width = max(map(len, rows)), max(map(len, answers))
  tokens = np.full((len(rows), width), pad_id, np.int32)
  at = np.zeros((len(rows), answer_width), np.int32)
  loss_mask = np.zeros((len(rows), answer_width), bool)
  targets = np.full((len(rows), answer_width), pad_id, np.int32)
  for i, (prefix, answer) in enumerate(zip(prefixes, answers)):
    tokens[i, :len(rows[i])] = rows[i]
    at[i, :len(answer)] = np.arange(len(prefix) - 1, len(prefix) - 1 + len(answer))
    loss_mask[i, :len(answer)] = True
    targets[i, :len(answer)] = answer
  mask = np.arange(width)[None] < np.asarray([len(r) for r in rows])[:, None]
  return {"tokens": tokens, "mask": mask, "logits_at": at, "loss_mask": loss_mask, "targets": targets}


def distill(base_params: PyTree, config: GemmaConfig, context: Sequence[int], prompt: Sequence[int],
            answer: Sequence[int] | None = None, *, settings: DistillConfig = DistillConfig(),
            key: Array | None = None, stop_ids: Sequence[int] | None = None) -> DistillResult:
  """Distils `context` (token ids, no BOS) into a fresh LoRA for one `prompt` (+ `answer`): the
  paper's oracle setting when the prompt is the test query. See `distill_queries`."""
  return distill_queries(base_params, config, context, [prompt], None if answer is None else [answer],
                         settings=settings, key=key, stop_ids=stop_ids)


def distill_queries(base_params: PyTree, config: GemmaConfig, context: Sequence[int],
                    prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]] | None = None, *,
                    settings: DistillConfig = DistillConfig(), key: Array | None = None,
                    stop_ids: Sequence[int] | None = None) -> DistillResult:
  """Distils `context` (token ids, no BOS) into one fresh LoRA for several prompts at once (every
  step reads all of them): the paper's setting of queries generated about the document.

  Without `answers`, the teacher (base model with the context) answers each prompt greedily, up
  to `settings.max_answer_tokens` tokens ending at the first of `stop_ids` (default: EOS), and
  those answers are distilled.
  """
  if not context or not prompts or not all(prompts):
    raise ValueError("context and every prompt need at least one token each")
  if answers is not None and len(answers) != len(prompts):
    raise ValueError(f"{len(answers)} answers for {len(prompts)} prompts")
  key = jax.random.key(0) if key is None else key
  stop_ids = (config.eos_id,) if stop_ids is None else tuple(stop_ids)
  teacher_prefixes = [[config.bos_id, *context, *p] for p in prompts]
  student_prefixes = [[config.bos_id, *p] for p in prompts]
  compile_s = answer_s = 0.0

  if answers is None:
    sampling = decoding.SamplingConfig(max_new_tokens=settings.max_answer_tokens)
    width = max(map(len, teacher_prefixes))
    prefix = np.full((len(prompts), width), config.pad_id, np.int32)
    valid = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(teacher_prefixes):  # left-padded: every prompt ends in the last column
      prefix[i, width - len(p):], valid[i, width - len(p):] = p, True
    args = (base_params, jnp.asarray(prefix), jnp.asarray(valid), key)
    start = time.perf_counter()
    generate = decoding.generate.lower(*args, config=config, sampling=sampling, stop_ids=stop_ids).compile()
    compile_s += time.perf_counter() - start
    start = time.perf_counter()
    tokens, lengths = jax.block_until_ready(generate(*args))
    answer_s = time.perf_counter() - start
    answers = [[int(t) for t in row[:n]] for row, n in zip(np.asarray(tokens), np.asarray(lengths))]
  answers = [list(a) for a in answers]
  if not all(answers):
    raise ValueError("an answer is empty: nothing to distil")

  teacher = _rows(teacher_prefixes, answers, config.pad_id)
  teacher_fn = jax.jit(lambda p, t, m, at: transformer.forward(p, t, config=config, mask=m, logits_at=at).logits)
  args = (base_params, *(jnp.asarray(teacher[k]) for k in ("tokens", "mask", "logits_at")))
  start = time.perf_counter()
  teacher_fn = teacher_fn.lower(*args).compile()
  compile_s += time.perf_counter() - start
  start = time.perf_counter()
  teacher_logits = jax.block_until_ready(teacher_fn(*args))
  teacher_s = time.perf_counter() - start

  batch = {**_rows(student_prefixes, answers, config.pad_id), "teacher_logits": teacher_logits}
  adapter = init_adapter(key, config, settings.modules, settings.rank, scaling=settings.scaling)
  result = fit(base_params, config, adapter, batch, objective="kl", steps=settings.steps,
               learning_rate=settings.learning_rate)
  timings = Timings(compile_s=compile_s + result.compile_s, answer_s=answer_s, teacher_s=teacher_s,
                    steps_s=result.steps_s)
  return DistillResult(result.adapter, tuple(tuple(a) for a in answers), result.losses, timings)
