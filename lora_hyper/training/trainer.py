"""The one meta-training loop, read top to bottom: mesh, base model, data, init, shard, step,
checkpoint, loop. Configured by gin at the edge (`gin_configs/`, `lora-hyper train`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from typing import Any, Sequence

import flax.linen as nn
from flax import traverse_util
import gin
import jax
import numpy as np
from jax.experimental import multihost_utils

from lora_hyper import files, prompts, sharding
from lora_hyper.adapters import io
from lora_hyper.data import lora_library, pipeline
from lora_hyper.errors import NonFiniteLossError
from lora_hyper.hypernetworks import kinds, saved, text_to_lora
from lora_hyper.hypernetworks.doc_to_lora import DocToLoraConfig, widening
from lora_hyper.hypernetworks.task_encoders import TaskEncoder, make_task_encoder
from lora_hyper.model import base_model as base_model_lib
from lora_hyper.training import checkpointing, distributed, objectives, optimizer as optimizer_lib
from lora_hyper.training import program as program_lib, step as step_lib
from lora_hyper.training.metrics import MetricsLogger
from lora_hyper.training.optimizer import OptimizerConfig

WIDEN_RANK = "widen_rank"  # init_reshaped: a wider Doc-to-LoRA rank starts from the saved function
WIDEN_WIDTH = "widen_width"  # init_reshaped: more heads, wider MLPs, from the saved function

PyTree = Any

OBJECTIVES = program_lib.OBJECTIVES


@dataclasses.dataclass
class TrainResult:
  """What a run trained: a hypernetwork ready for `saved.save_hypernetwork(dir, config, variables,
  base=base, task_encoder=task_encoder)`."""

  config: Any  # the hypernetwork's config, for the base model as loaded
  variables: PyTree  # {"params": ..., and any statistics}, on the host
  base: io.BaseIdentity
  task_encoder: str  # how its descriptions are embedded (Text-to-LoRA)
  step: int
  metrics: dict[str, float]
  preempted: bool  # stopped by SIGTERM/SIGINT before `steps`, after saving: rerun to continue


def _with_device_params(base: base_model_lib.BaseModel) -> base_model_lib.BaseModel:
  """`base` with its params on the default device, for the description encoder: a transient copy,
  freed with the encoder (numpy params would be copied to the device at every call)."""
  return dataclasses.replace(base, params=jax.device_put(base.params))


def _task_embeddings(source, encoder: TaskEncoder, batch: int = 32) -> dict[str, np.ndarray]:
  """Every distinct description in the source, embedded once by the frozen encoder."""
  if hasattr(source, "tasks"):  # the task library: read descriptions without generating examples
    descriptions = sorted({d for t in source.tasks for d in t.split_descriptions(source.descriptions)})
  else:
    descriptions = sorted({source[i]["description"] for i in range(len(source))})
  out = {}
  for start in range(0, len(descriptions), batch):
    chunk = descriptions[start:start + batch]
    out.update(zip(chunk, np.asarray(encoder(chunk))))
  return out


def _check_lora_library(data: Any, hyper: text_to_lora.TextToLoraConfig) -> None:
  """Reconstruction reads saved task LoRAs in the hypernetwork's own parametrisation."""
  if not isinstance(data, lora_library.TaskLoraLibrary):
    raise ValueError(f"objective 't2l_recon' reads a library of task LoRAs (lora_hyper.task_lora_library), "
                     f"got {type(data).__name__}")
  lora_library.check_matches(data, hyper.modules, hyper.rank, hyper.scaling)


def _global_batch(local: dict[str, np.ndarray], data_sharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(data_sharding, v) for k, v in local.items()}


def _tokens_in(batch: dict[str, np.ndarray]) -> int | None:
  """Tokens the step reads; None for a batch of none (reconstruction), so no tokens/s is logged."""
  keys = [k for k in ("chunk_mask", "student_mask", "teacher_mask") if k in batch]
  return int(sum(batch[k].sum() for k in keys)) if keys else None


@gin.configurable(module="lora_hyper")
def train(
    *,
    workdir: str = gin.REQUIRED,
    data: Any = gin.REQUIRED,
    objective: str = "d2l_kl",
    hypernetwork: str | None = None,
    hyper_overrides: dict | None = None,
    objective_overrides: dict | None = None,
    task_encoder: str = "base_model",
    base_model: str | None = None,
    base_dtype: str = "float32",
    compute_dtype: str = "float32",
    remat: bool = False,
    global_batch_size: int = 8,
    steps: int = 1000,
    optimizer: OptimizerConfig = OptimizerConfig(),
    doc_shapes: pipeline.DocExampleShapes = pipeline.DocExampleShapes(),
    task_shapes: pipeline.TaskExampleShapes = pipeline.TaskExampleShapes(),
    mesh_shape: Sequence[int] = (-1, 1, 1),
    save_every: int = 500,
    keep_checkpoints: int = 3,
    log_every: int = 10,
    seed: int = 0,
    shuffle: bool = True,
    init_from: str | None = None,
    init_reshaped: bool | str = False,
    stop_after: int | None = None,
    resume_from_previous: bool = False,
    loaded_base: base_model_lib.BaseModel | None = None,
) -> TrainResult:
  """Meta-trains a hypernetwork; resumes from `workdir`'s latest checkpoint when there is one.

  `base_dtype` stores the frozen base params, `compute_dtype` runs its matmuls (bfloat16 on
  accelerators); the hypernetwork's params and optimizer state stay float32 (master weights)
  and it computes in the dtype of the activations it reads.

  `hypernetwork` names a preset (default d2l_small) and `hyper_overrides` change its fields. With
  `init_from` and no preset, the architecture is the saved folder's config, with `hyper_overrides`
  on top (e.g. `{'experimental': {'chunk_gate': True}}` to switch a component on for this stage), so
  a later stage restates nothing.

  `optimizer.total_steps` left unset spans the run: `steps` / `accumulation_steps`.

  `task_encoder` embeds Text-to-LoRA's descriptions: "base_model" or "minilm" (all-MiniLM-L6-v2,
  which needs `hyper_overrides = {'emb_dim': 384}` and lora-hyper[minilm]).

  `shuffle=False` reads the data source in its own order, one global batch after another: for a
  file arranged ahead of time (batches of one kind, a curriculum); the default shuffles records.

  `init_from` starts from a saved hypernetwork's params (a folder `lora-hyper train --out` wrote,
  for the same base model and shapes) with a fresh optimizer and step 0: a second training stage
  on other data. Params this run's hypernetwork has and the saved one lacks (a component switched
  on for the new stage, e.g. `chunk_gate`) start from their init, and are named in the log. A
  checkpoint in `workdir` still wins, so a preempted stage resumes where it stopped. With
  `init_reshaped`, params whose shape differs from the saved ones (an architecture change tried from
  a trained start: more latents, rank 16, per-layer activations) also start from their init, named in
  the log; without it such a change is refused as a mistake. `init_reshaped='widen_rank'` does the
  same, except that a Doc-to-LoRA rank k times the saved one starts from the saved hypernetwork's
  function (`doc_to_lora.widening`: each rank row copied k times, the copies' queries told apart by
  noise) rather than from init; `init_reshaped='widen_width'` starts one with more attention heads or
  wider MLPs from it (`widening.widen_width`: new units read at random and write through zeros).

  `stop_after` ends this run after that many steps (a checkpoint is saved), as a preemption would.
  `loaded_base` lets callers (tests, notebooks) pass an already loaded base model.

  A latest checkpoint that cannot be restored (damaged files, bytes that differ from the digest
  saved with them, NaN or infinite values) raises CheckpointError and deletes nothing. With
  `resume_from_previous` (`--resume-from-previous`) the run resumes from the newest earlier step
  that restores instead; the unreadable steps stay on disk until this run saves the same step
  number, which replaces them: asking for this flag is what allows that overwrite. A NaN or
  infinite loss or gradient norm raises NonFiniteLossError before that step is saved.
  """
  # ---- mesh and base model
  check_init_reshaped(init_reshaped)
  distributed.maybe_initialize()
  mesh = sharding.make_mesh(*mesh_shape)
  program_lib.check_batch_splits(global_batch_size, mesh)
  checkpointing.check_shared_workdir(workdir)
  # On the host until placed in its shardings below: the step's sharded copy is the only one on devices.
  optimizer = optimizer_lib.for_steps(optimizer, steps)
  base = loaded_base or base_model_lib.load_base_model(base_model, dtype=base_dtype, on_host=True)
  # Checks the base model, the digest and the folder's own shapes before anything is built.
  loaded = None if init_from is None else saved.load_hypernetwork(init_from, base)
  program = program_lib.build(base.config, mesh, hypernetwork=hypernetwork, hyper_overrides=hyper_overrides,
                              objective=objective, objective_overrides=objective_overrides, optimizer=optimizer,
                              remat=remat, compute_dtype=compute_dtype, seed=seed,
                              architecture=None if loaded is None else loaded.config)
  base_config, kind, hyper, objective_fn = program.base_config, program.kind, program.hyper, program.objective
  base_params = jax.device_put(base.params, program.base_sharding)

  # ---- data
  if isinstance(objective_fn, objectives.DocDistillation):
    to_example = functools.partial(pipeline.doc_example, tokenizer=base.tokenizer, hyper=hyper, shapes=doc_shapes)
  else:
    encoder = make_task_encoder(task_encoder, _with_device_params(base) if task_encoder == "base_model" else base)
    if encoder.dim != hyper.emb_dim:
      raise ValueError(f"task_encoder={task_encoder!r} gives {encoder.dim}-d embeddings but {hypernetwork or 'the hypernetwork'} has "
                       f"emb_dim={hyper.emb_dim}; set lora_hyper.train.hyper_overrides = {{'emb_dim': {encoder.dim}}}")
    reconstruction = isinstance(objective_fn, objectives.TaskReconstruction)
    if reconstruction:
      _check_lora_library(data, hyper)
    embeddings = _task_embeddings(data, encoder)
    del encoder  # and its copy of the base params on one device
    if reconstruction:
      to_example = functools.partial(pipeline.reconstruction_example, embeddings=embeddings)
    else:
      to_example = functools.partial(pipeline.task_example, tokenizer=base.tokenizer, embeddings=embeddings,
                                     bos_id=base_config.bos_id, eos_id=base_config.eos_id,
                                     pad_id=base_config.pad_id, shapes=task_shapes,
                                     format_prompt=prompts.task_prompt)
  data_iter = iter(pipeline.batches(data, to_example, global_batch_size=global_batch_size, seed=seed,
                                    shuffle=shuffle))

  # ---- init (created already sharded), or restore
  if init_from is None:
    state = program.init_state(jax.random.key(seed))
  else:
    variables = _saved_variables(loaded, kind, hyper, seed, init_reshaped)
    state = jax.jit(lambda v: step_lib.create_state(v, program.tx),
                    out_shardings=program.state_sharding)(variables)
  ckpt = checkpointing.manager(checkpointing.checkpoint_dir(workdir), save_every=save_every, keep=keep_checkpoints)
  try:
    restored = checkpointing.restore(ckpt, checkpointing.abstract_like(state), data_iter,
                                     resume_from_previous=resume_from_previous)
  except BaseException:
    ckpt.close()  # stops orbax's threads before the error leaves
    raise
  if restored is not None:
    state = restored[1]
    if jax.process_index() == 0:
      print(f"[lora-hyper] resumed from step {restored[0]} of {workdir}", flush=True)
  start = int(state.step)
  _write_run_config(workdir, start)

  # ---- step
  first = next(data_iter)
  run_step = program.jit(first)
  pending = [first]

  # ---- loop
  end = steps if stop_after is None else min(steps, start + stop_after)
  metrics: dict[str, float] = {}
  preempted = False
  logdir = checkpointing.workdir_path(workdir) / "logs"
  with contextlib.closing(ckpt), checkpointing.PreemptionFlag() as flag, \
      MetricsLogger(logdir, total_steps=steps, log_every=log_every, initial_step=start) as logger:
    for step in range(start, end):
      local = pending.pop() if pending else next(data_iter)
      state, step_metrics = run_step(state, base_params, _global_batch(local, program.batch_sharding))
      metrics = {k: float(v) for k, v in step_metrics.items()}
      tokens = _tokens_in(local)
      logger.log(step + 1, metrics, tokens=None if tokens is None else tokens * jax.process_count())
      diverged = {k: metrics[k] for k in ("loss", "grad_norm") if k in metrics and not np.isfinite(metrics[k])}
      if diverged:
        raise _diverged(", ".join(f"{k} became {v}" for k, v in diverged.items()) + f" at step {step + 1}; "
                        f"it was not saved and {_kept(ckpt)}", optimizer, compute_dtype)
      # A signal during the last step changes nothing: the run is complete, not preempted.
      preempted = _agree(flag.is_set) and step + 1 < steps
      last = step + 1 == end
      try:
        checkpointing.save(ckpt, step + 1, state, data_iter, force=last or preempted)
      except NonFiniteLossError as e:  # the params overflowed while loss and gradients stayed finite
        raise _diverged(str(e), optimizer, compute_dtype) from None
      if preempted:
        break
  variables = _on_host({"params": state.params, **state.stats})
  return TrainResult(hyper.replace(base=base.config), variables, io.base_identity(base), task_encoder,
                     int(state.step), metrics, preempted)


def check_init_reshaped(value: Any) -> None:
  """Refuses an `init_reshaped` that is none of its settings (a typo would train from init)."""
  if value not in (False, True, WIDEN_RANK, WIDEN_WIDTH):
    raise ValueError(f"init_reshaped must be False, True, {WIDEN_RANK!r} or {WIDEN_WIDTH!r}, got {value!r}")


def _saved_variables(loaded: saved.SavedHypernetwork, kind: kinds.Kind, hyper: Any, seed: int,
                     reshaped: bool | str = False) -> Any:
  """`init_from`'s variables, float32, after checking they fit this run's hypernetwork; variables it
  lacks (and, `reshaped`, those of another shape) come from this run's init (computed on the host CPU,
  the same on every process)."""
  folder = str(loaded.path)
  variables = loaded.variables
  if reshaped == WIDEN_RANK and isinstance(hyper, DocToLoraConfig) and type(loaded.config) is type(hyper) \
      and hyper.rank != loaded.config.rank:
    variables = widening.widen_rank(variables, loaded.config, hyper.rank, jax.random.key(seed))
    print(f"init_from: rank {loaded.config.rank} -> {hyper.rank} from the saved hypernetwork's function", flush=True)
  if reshaped == WIDEN_WIDTH and isinstance(hyper, DocToLoraConfig) and type(loaded.config) is type(hyper):
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
      variables = widening.widen_width(variables, loaded.config, hyper.replace(base=loaded.config.base),
                                       jax.random.key(seed))
    print("init_from: wider heads and MLPs from the saved hypernetwork's function", flush=True)
  got = traverse_util.flatten_dict(variables)
  want = traverse_util.flatten_dict(nn.unbox(kind.abstract_variables(hyper)))
  if reshaped and type(loaded.config) is type(hyper):
    got = {k: v for k, v in got.items() if k not in want or np.shape(v) == tuple(want[k].shape)}
  added = sorted(set(want) - set(got))
  mismatch = saved.shape_mismatch({"/".join(k): v for k, v in got.items()},
                                  {"/".join(k): v for k, v in want.items() if k in got})
  if type(loaded.config) is not type(hyper) or mismatch:
    raise ValueError(f"init_from={folder!r} holds a {type(loaded.config).__name__} whose variables do not fit "
                     f"this run's {type(hyper).__name__} ({mismatch or 'another kind'}); bind no hypernetwork preset "
                     "(the saved architecture is used), or the same one and hyper_overrides as the run that saved it")
  if added:
    print(f"init_from: {len(added)} variables not in {folder}{' (or of another shape there)' if reshaped else ''} "
          f"start from their init: "
          f"{', '.join('/'.join(k) for k in added)}", flush=True)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
      fresh = traverse_util.flatten_dict(jax.device_get(kind.init(hyper, jax.random.key(seed))))
    got = {**got, **{k: fresh[k] for k in added}}
  return jax.tree.map(lambda x: np.asarray(x, np.float32), traverse_util.unflatten_dict(got))


def _kept(ckpt: checkpointing.Manager) -> str:
  step = ckpt.latest_step()
  return (f"the last checkpoint, step {step} in {str(ckpt.directory)!r}, is kept" if step is not None
          else "no checkpoint had been saved yet")


def _diverged(what: str, optimizer: OptimizerConfig, compute_dtype: str) -> NonFiniteLossError:
  """The error for a run whose numbers stopped being finite: what, where, and the likely causes."""
  overflow = "" if compute_dtype == "float32" else f"; {compute_dtype} overflow (try compute_dtype='float32')"
  return NonFiniteLossError(
      f"training diverged: {what}. Likely causes: a learning rate too high (learning_rate="
      f"{optimizer.learning_rate:g}: try it 3-10x lower, or more warmup_steps); bad data (a batch of empty or "
      f"garbled examples){overflow}. Resuming repeats the same steps, so change one of these first")


def _on_host(tree: PyTree) -> PyTree:
  """Global arrays as numpy on every process: on a pod, params sharded over other hosts' devices are
  gathered (device_get would only reach this host's shards)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def _agree(flag: bool) -> bool:
  """Every process stops at the same step if any of them was told to."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def _write_run_config(workdir: str, start_step: int) -> None:
  """The operative gin config beside the checkpoints (paths portable): every run is traceable to its settings."""
  if jax.process_index() != 0:
    return
  path = checkpointing.workdir_path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.gin").write_text(files.portable_text(gin.config_str()))
  (path / "run.json").write_text(json.dumps({"started_at_step": start_step, "time": time.time()}))
