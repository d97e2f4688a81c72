"""The meta-training loop: sharded == unsharded, exact resume, preemption, loss goes down."""

import dataclasses
import functools
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper import sharding
from lora_hyper.data import pipeline
from lora_hyper.hypernetworks import doc_to_lora, kinds, text_to_lora
from lora_hyper.hypernetworks.doc_to_lora import d2l_tiny, widening
from lora_hyper.model import transformer
from lora_hyper.training import objectives, program as program_lib, step as step_lib, trainer
from lora_hyper.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer

import xla_flags
from fakes import qa_records, tiny_base
from tiny_model import write_tiny_model

SHAPES = pipeline.DocExampleShapes(num_chunks=2, student_len=48, teacher_len=72, answer_len=4)
OPT = OptimizerConfig(learning_rate=3e-3, warmup_steps=1, total_steps=6)
# Centred codes: a running mean in the `code_stats` collection goes through the step and the checkpoints.
CENTRED = {"normalize_features": True, "center_momentum": 0.9}
OVERRIDES = {"chunk_len": 16, "max_chunks": 2, "experimental": CENTRED}


def _train(workdir, **kw):
  # Two data-parallel devices, not eight: still a sharded save and restore, but orbax's per-replica
  # slices of every array (the bulk of a save here) are a quarter as many.
  args = dict(workdir=str(workdir), data=qa_records(64), objective="d2l_kl", hypernetwork="d2l_tiny",
              hyper_overrides=OVERRIDES, global_batch_size=8, steps=4,
              optimizer=OPT,
              doc_shapes=SHAPES, save_every=2, log_every=1, loaded_base=tiny_base(), mesh_shape=(2, 1, 1))
  return trainer.train(**{**args, **kw})


def _assert_same(a, b, atol=0.0):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def _on_mesh(mesh_shape, base, objective, batches):
  """Gradients of the first batch and params after two steps of the jitted, sharded train step,
  built as the trainer builds it, on a mesh of the given shape."""
  mesh = sharding.make_mesh(*mesh_shape)
  # Adam's default eps (1e-8) turns float32 summation-order noise in ~1e-9 gradients into
  # visible updates; a larger eps keeps the comparison about the step, not that conditioning.
  opt = dataclasses.replace(OPT, eps=1e-4)
  tx = make_optimizer(opt)
  base_sharding = sharding.logical_sharding(transformer.param_logical_axes(base.config), mesh)
  kind = kinds.of_config(objective.hyper)
  state_sharding = step_lib.state_shardings(kind.abstract_variables(objective.hyper), tx, mesh)
  state = jax.jit(lambda k: step_lib.create_state(kind.init(objective.hyper, k), tx), out_shardings=state_sharding)(
      jax.random.key(0))
  base_params = jax.device_put(base.params, base_sharding)
  data = [jax.device_put(b, step_lib.batch_sharding(mesh)) for b in batches]
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    loss = lambda p: objective({"params": p, **state.stats}, base_params, data[0], jax.random.key(0))[0]
    grads = jax.jit(jax.grad(loss))(state.params)
  run = step_lib.jit_train_step(step_lib.make_train_step(objective, tx, learning_rate_schedule(opt)), mesh,
                                state_sharding, base_sharding, batches[0])
  metrics = []
  for batch in data:
    state, m = run(state, base_params, batch)
    metrics.append(m)
  return jax.device_get(grads), jax.device_get((state.params, state.stats)), jax.device_get(metrics)


def test_sharded_step_equals_unsharded():
  assert len(jax.devices()) == 8
  base = tiny_base()
  hyper = d2l_tiny(base.config, **OVERRIDES)
  objective = objectives.DocDistillation(hyper)
  to_example = functools.partial(pipeline.doc_example, tokenizer=base.tokenizer, hyper=hyper, shapes=SHAPES)
  it = iter(pipeline.batches(qa_records(64), to_example, global_batch_size=8, seed=0))
  batches = [next(it), next(it)]
  single = _on_mesh((1, 1, 1), base, objective, batches)
  sharded = _on_mesh((2, 2, 2), base, objective, batches)
  for g1, g8 in zip(jax.tree.leaves(single[0]), jax.tree.leaves(sharded[0])):
    np.testing.assert_allclose(g1, g8, rtol=0, atol=1e-4 * max(np.abs(g1).max(), 1e-12))
  for a, b in zip(single[2], sharded[2]):
    for key in ("loss", "grad_norm", "task_loss"):
      assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-8), key
  _assert_same(single[1], sharded[1], atol=1e-5)


def _spy_on_base_params(monkeypatch) -> list[tuple]:
  """(base params, device copies of their q weights alive) at each step train runs."""
  seen = []
  real_jit = step_lib.jit_train_step

  def spy_jit(*args, **kwargs):
    run = real_jit(*args, **kwargs)

    def spied(state, base_params, batch):
      gc.collect()
      q = base_params["layers"]["attn"]["q"]
      seen.append((base_params, sum(1 for a in jax.live_arrays() if a.shape == q.shape and a.dtype == q.dtype)))
      return run(state, base_params, batch)

    return spied

  monkeypatch.setattr(step_lib, "jit_train_step", spy_jit)
  return seen


def test_base_params_are_placed_once_in_their_shardings(tmp_path, monkeypatch):
  """The loader leaves the base params on the host (cast there to bfloat16); train puts them straight
  into the program's shardings, and no other device copy of them lives while the step runs."""
  folder = write_tiny_model(tmp_path / "model")
  built, real_build = [], program_lib.build
  monkeypatch.setattr(program_lib, "build", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
  seen = _spy_on_base_params(monkeypatch)
  _train(tmp_path / "run", loaded_base=None, base_model=str(folder), base_dtype="bfloat16", mesh_shape=(2, 2, 2),
         steps=1)
  (base_params, copies), = seen
  expected = built[0].base_sharding
  assert jax.tree.leaves(jax.tree.map(lambda x, want: x.sharding == want, base_params, expected)) == \
      [True] * len(jax.tree.leaves(base_params))
  assert {x.dtype for x in jax.tree.leaves(base_params)} == {np.dtype(jnp.bfloat16)}
  assert not base_params["layers"]["attn"]["q"].sharding.is_fully_replicated  # split over the mesh
  assert copies == 1


def test_text_to_lora_embeds_descriptions_with_a_passing_copy_of_the_base(tmp_path, monkeypatch):
  """The base model encodes Text-to-LoRA's descriptions on one device; that copy is gone before the
  first step, which reads only the sharded one."""
  folder = write_tiny_model(tmp_path / "model")
  seen = _spy_on_base_params(monkeypatch)
  records = [{"description": f"Add {n} to the number.", "input": str(i), "output": str(i + n)}
             for n in (1, 2) for i in range(4)]
  result = trainer.train(workdir=str(tmp_path / "run"), data=records, objective="t2l_sft", hypernetwork="t2l_tiny",
                         base_model=str(folder), base_dtype="bfloat16", global_batch_size=4, steps=1, optimizer=OPT,
                         task_shapes=pipeline.TaskExampleShapes(seq_len=24, answer_len=4), mesh_shape=(2, 2, 2))
  assert result.step == 1 and np.isfinite(result.metrics["loss"])
  assert [copies for _, copies in seen] == [1]


def test_resume_continues_exactly(tmp_path):
  straight = _train(tmp_path / "straight")
  first = _train(tmp_path / "resumed", stop_after=2)
  assert first.step == 2
  second = _train(tmp_path / "resumed")
  assert second.step == 4
  _assert_same(straight.variables, second.variables)
  assert straight.metrics["loss"] == second.metrics["loss"]
  # The running mean of chunk codes is carried through the checkpoint too: 4 debiased updates.
  np.testing.assert_allclose(second.variables["code_stats"]["centre"]["weight"], 1 - 0.9 ** 4, rtol=1e-6)


def _run_tiny(workdir, steps, *extra, env=None, wait=True):
  cmd = [sys.executable, str(Path(__file__).parent / "tiny_run.py"), str(workdir), str(steps), *map(str, extra)]
  env = {**os.environ, "XLA_FLAGS": xla_flags.for_devices(2), **(env or {})}
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  if not wait:
    return proc
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  return out


def _result(out):
  line = next(l for l in out.splitlines() if l.startswith("RESULT"))
  return dict(kv.split("=") for kv in line.split()[1:])


def test_sigterm_saves_then_resume_finishes(tmp_path):
  proc = _run_tiny(tmp_path, 50, 0.5, wait=False)
  metrics_file = tmp_path / "logs" / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and not (metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 2):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  stopped = _result(out)
  assert stopped["preempted"] == "True" and 2 <= int(stopped["step"]) < 50
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved[-1] == int(stopped["step"])
  resumed = _result(_run_tiny(tmp_path, int(stopped["step"]) + 2))
  assert resumed["step"] == str(int(stopped["step"]) + 2) and resumed["preempted"] == "False"


def test_two_processes_match_one(tmp_path):
  """Two processes on localhost (CPU collectives), each with one device and half the global
  batch, log the same losses as one process with two devices and the whole batch."""
  one = _run_tiny(tmp_path / "one", 3)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = [_run_tiny(tmp_path / "two", 3, wait=False, env={
      "XLA_FLAGS": xla_flags.for_devices(1), "LORA_HYPER_COORDINATOR": f"127.0.0.1:{port}",
      "LORA_HYPER_NUM_PROCESSES": "2", "LORA_HYPER_PROCESS_ID": str(i)}) for i in range(2)]
  outs = []
  for proc in procs:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    outs.append(_result(out))
  single = _result(one)
  for result in outs:
    assert float(result["loss"]) == pytest.approx(float(single["loss"]), rel=1e-5)
  logged = lambda path: [json.loads(l)["loss"] for l in (path / "logs" / "metrics.jsonl").read_text().splitlines()]
  np.testing.assert_allclose(logged(tmp_path / "two"), logged(tmp_path / "one"), rtol=1e-5)


def test_text_to_lora_objectives_train_through_the_step():
  """SFT and reconstruction (L1 to target factors, z-scored) both lower their loss in a few steps."""
  base = tiny_base()
  hyper = text_to_lora.t2l_tiny(base.config)
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 120, (4, 16)).astype(np.int32)
  batch = {"task_emb": rng.normal(size=(4, hyper.emb_dim)).astype(np.float32), "student_tokens": tokens,
           "student_mask": np.ones((4, 16), bool), "student_logits_at": np.tile(np.arange(8, 15), (4, 1)),
           "targets": tokens[:, 9:16], "loss_mask": np.ones((4, 7), bool)}
  for m in hyper.modules:
    d_in, d_out = base.config.module_shape(m)
    shape = (4, base.config.num_layers, hyper.rank)
    batch[f"target_a_{m}"] = rng.normal(size=shape + (d_in,)).astype(np.float32) * 0.1
    batch[f"target_b_{m}"] = rng.normal(size=shape + (d_out,)).astype(np.float32) * 0.1
    for n, d in (("a", d_in), ("b", d_out)):
      batch[f"target_mean_{n}_{m}"] = np.zeros((4, base.config.num_layers, hyper.rank, d), np.float32)
      batch[f"target_std_{n}_{m}"] = np.full((4, base.config.num_layers, hyper.rank, d), 0.1, np.float32)
  opt = OptimizerConfig(learning_rate=1e-2, total_steps=10)
  for objective in (objectives.TaskSFT(hyper), objectives.TaskReconstruction(hyper)):
    tx = make_optimizer(opt)
    step = jax.jit(step_lib.make_train_step(objective, tx, learning_rate_schedule(opt)))
    state = step_lib.create_state(text_to_lora.init(hyper, jax.random.key(0)), tx)
    losses = []
    for _ in range(12):
      state, metrics = step(state, base.params, batch)
      losses.append(float(metrics["task_loss"]))
    assert losses[-1] < 0.85 * losses[0], (type(objective).__name__, losses)


def test_cross_entropy_examples_need_no_teacher_and_distillation_says_so():
  base = tiny_base()
  hyper = d2l_tiny(base.config, chunk_len=16, max_chunks=2)
  record = qa_records(1)[0]
  with_teacher = pipeline.doc_example(record, base.tokenizer, hyper, SHAPES)
  without = pipeline.doc_example(record, base.tokenizer, hyper, dataclasses.replace(SHAPES, teacher_len=None))
  assert set(with_teacher) - set(without) == {"teacher_tokens", "teacher_mask", "teacher_logits_at"}
  for key, value in without.items():
    np.testing.assert_array_equal(value, with_teacher[key])
  batch = jax.tree.map(lambda x: x[None], without)
  variables = doc_to_lora.init(hyper, jax.random.key(0))
  loss, _ = objectives.DocDistillation(hyper, loss="ce")(variables, base.params, batch, jax.random.key(0))
  assert np.isfinite(loss)
  with pytest.raises(ValueError, match="loss='kl' needs teacher sequences: set DocExampleShapes.teacher_len"):
    objectives.DocDistillation(hyper, loss="kl")(variables, base.params, batch, jax.random.key(0))


def test_the_mean_gate_is_logged_over_the_real_chunks():
  base = tiny_base()
  hyper = d2l_tiny(base.config, **OVERRIDES).replace(experimental={"generated_factors": "b", "chunk_gate": True})
  shapes = dataclasses.replace(SHAPES, teacher_len=None)
  records = [qa_records(1)[0], {"document": "Short.", "query": "Which?", "answer": "X"}]  # 2 chunks, then 1
  examples = [pipeline.doc_example(r, base.tokenizer, hyper, shapes) for r in records]
  batch = jax.tree.map(lambda *x: np.stack(x), *examples)
  assert batch["chunk_mask"].any(-1).tolist() == [[True, True], [True, False]]
  objective = objectives.DocDistillation(hyper, loss="ce")
  variables = doc_to_lora.init(hyper, jax.random.key(0))
  _, (metrics, _) = objective(variables, base.params, batch, jax.random.key(0))
  assert float(metrics["mean_gate"]) == 1.0  # every gate starts at exactly 1
  gates = variables["params"]["gates_down"]
  variables = {**variables, "params": {**variables["params"], "gates_down": {
      **gates, "w": jax.random.normal(jax.random.key(1), gates["w"].shape)}}}
  _, (metrics, _) = objective(variables, base.params, batch, jax.random.key(0))
  # Centred on this batch, as training is; the empty chunk slot is left out.
  gates = doc_to_lora.document_adapters(variables, base.params, batch["chunk_tokens"], batch["chunk_mask"],
                                        config=hyper, train=True).gates["down"]  # [2, 2, layers]
  np.testing.assert_allclose(float(metrics["mean_gate"]), np.mean(np.asarray(gates)[[0, 0, 1], [0, 1, 0]]),
                             rtol=1e-6)
  assert abs(float(metrics["mean_gate"]) - 1) > 1e-3
  ungated = objectives.DocDistillation(hyper.replace(experimental={"chunk_gate": False}), loss="ce")
  ungated_variables = doc_to_lora.init(ungated.hyper, jax.random.key(0))
  assert "mean_gate" not in ungated(ungated_variables, base.params, batch, jax.random.key(0))[1][0]


def test_reconstruction_trains_from_a_library_of_task_loras(tmp_path):
  """`t2l_recon` end to end through the trainer: saved task LoRAs -> records -> lower L1; a library
  in another parametrisation is refused before any step."""
  from lora_hyper.adapters import io, lora
  from lora_hyper.baselines import task_loras
  from lora_hyper.data import lora_library, tasks

  base = tiny_base()
  hyper = text_to_lora.t2l_tiny(base.config)
  task_list = [tasks.get_task(t) for t in ("string/uppercase", "string/reverse", "arithmetic/add_3")]
  key = jax.random.key(1)
  for i, folder in enumerate(task_loras.library_paths(str(tmp_path / "loras"), [t.task_id for t in task_list])):
    adapter = lora.random(jax.random.fold_in(key, i), base.config, hyper.modules, hyper.rank, scaling=hyper.scaling,
                          std=0.1)
    io.save_adapter(folder, adapter, base=io.BaseIdentity("tiny", "0" * 16), source={})
  library = lora_library.TaskLoraLibrary(str(tmp_path / "loras"), task_list)
  opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=1, total_steps=30)
  args = dict(data=library, objective="t2l_recon", hypernetwork="t2l_tiny", global_batch_size=8, steps=30,
              optimizer=opt, save_every=30, log_every=1, loaded_base=base)
  trainer.train(workdir=str(tmp_path / "run"), **args)
  rows = [json.loads(l) for l in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
  logged = [r["loss"] for r in rows]
  assert np.mean(logged[-5:]) < 0.8 * np.mean(logged[:3]), logged
  assert not any("tokens_per_s" in r for r in rows)  # no tokens in a reconstruction step: no rate, not 0
  with pytest.raises(ValueError, match=r"do not match the hypernetwork .*rank 4"):
    trainer.train(workdir=str(tmp_path / "bad"), **{**args, "hyper_overrides": {"rank": 4}})
  with pytest.raises(ValueError, match="reads a library of task LoRAs"):
    trainer.train(workdir=str(tmp_path / "bad2"), **{**args, "data": qa_records(8)})


def test_a_second_stage_starts_from_a_saved_hypernetwork_and_still_resumes(tmp_path, capsys):
  from lora_hyper.adapters import io
  from lora_hyper.hypernetworks import saved

  base = tiny_base()
  first = _train(tmp_path / "one", steps=1, save_every=1)
  assert first.config == d2l_tiny(base.config, **OVERRIDES)  # the config it trained, for the base as loaded
  folder = str(saved.save_hypernetwork(tmp_path / "stage1", first.config, first.variables, base=first.base))
  start = _train(tmp_path / "two", init_from=folder, steps=0)
  assert start.step == 0
  _assert_same(start.variables, first.variables)  # before a step: exactly the saved ones (step and Adam are fresh)
  _train(tmp_path / "three", init_from=folder, steps=2, save_every=1, stop_after=1)
  _train(tmp_path / "three", init_from=folder, steps=2, save_every=1)
  assert json.loads((tmp_path / "three" / "run.json").read_text())["started_at_step"] == 1  # its checkpoint won
  with pytest.raises(ValueError, match="do not fit this run's DocToLoraConfig"):
    _train(tmp_path / "bad", init_from=folder, hyper_overrides={**OVERRIDES, "rank": 4})
  # A component switched on for the new stage starts from its init (a gate of exactly 1), the rest as saved.
  gated = _train(tmp_path / "gated", init_from=folder, steps=0,
                 hyper_overrides={**OVERRIDES, "experimental": {**CENTRED, "chunk_gate": True}})
  params = dict(gated.variables["params"])
  assert not any(np.any(w) for w in jax.tree.leaves(params.pop("gates_down")))
  _assert_same({**gated.variables, "params": params}, first.variables)
  assert "2 variables not in" in capsys.readouterr().out
  # An architecture lever tried from a trained start: params of another shape start from their init.
  reshaped = _train(tmp_path / "rank4", init_from=folder, steps=0, init_reshaped=True,
                    hyper_overrides={**OVERRIDES, "rank": 4})
  flat = lambda v: {"/".join(k): w for k, w in traverse_util.flatten_dict(v).items()}
  new, old = flat(reshaped.variables), flat(first.variables)
  changed = {k for k in new if np.shape(new[k]) != np.shape(old[k])}
  assert changed and changed < set(new)  # rank 4 reshapes some params (the heads), not all
  for k in set(new) - changed:
    np.testing.assert_array_equal(new[k], old[k])
  assert f"{len(changed)} variables not in {folder} (or of another shape there)" in capsys.readouterr().out
  # 'widen_rank': rank 4 from the saved rank 2's function, every variable taken from the saved ones.
  widened = _train(tmp_path / "widened", init_from=folder, steps=0, init_reshaped="widen_rank",
                   hyper_overrides={**OVERRIDES, "rank": 4})
  expected = widening.widen_rank(first.variables, first.config, 4, jax.random.key(0))
  _assert_same(widened.variables, expected)
  assert "rank 2 -> 4 from the saved hypernetwork's function" in capsys.readouterr().out
  # 'widen_width': more heads and wider MLPs from the saved function, as widening.widen_width makes them.
  wider = {**OVERRIDES, "perceiver": {"num_heads": 8, "num_kv_heads": 4}, "pre_head_mlp_dim": 64}
  broadened = _train(tmp_path / "broadened", init_from=folder, steps=0, init_reshaped="widen_width",
                     hyper_overrides=wider)
  expected = widening.widen_width(first.variables, first.config, first.config.replace(**wider), jax.random.key(0))
  _assert_same(broadened.variables, expected)
  assert "wider heads and MLPs from the saved hypernetwork's function" in capsys.readouterr().out
  with pytest.raises(ValueError, match="init_reshaped must be False, True, 'widen_rank' or 'widen_width', got 'widen'"):
    _train(tmp_path / "typo", init_from=folder, init_reshaped="widen")


def test_a_saved_config_gin_names_its_folders_portably(tmp_path, monkeypatch):
  """As `lora-hyper train --out` saves it: the operative config, its gin-bound workdir written relative to
  WORKDIR, never as this machine's absolute path (a shipped config.gin is such a file)."""
  import re

  import gin

  from lora_hyper.hypernetworks import saved

  monkeypatch.setenv("WORKDIR", str(tmp_path))
  gin.parse_config([f"lora_hyper.train.workdir = '{tmp_path / 'run'}'"])
  result = trainer.train(data=qa_records(64), objective="d2l_kl", hypernetwork="d2l_tiny", hyper_overrides=OVERRIDES,
                         global_batch_size=8, steps=1, optimizer=OPT, doc_shapes=SHAPES, save_every=1, log_every=1,
                         loaded_base=tiny_base(), mesh_shape=(2, 1, 1))
  folder = saved.save_hypernetwork(tmp_path / "hypernetwork", result.config, result.variables, base=result.base,
                                   gin_config=gin.operative_config_str())
  written = saved.load_hypernetwork(folder).gin_config
  workdir = lambda text: re.search(r"^train\.workdir = \\?\s*'(.*)'$", text, re.M).group(1)  # gin may wrap it
  assert workdir(written) == "WORKDIR/run"
  assert not re.search(r"(?<![\w.:/~$})\]])/(?:work|tmp|home|root)/\w", written), written
  assert workdir((tmp_path / "run" / "config.gin").read_text()) == "WORKDIR/run"  # the run's own record
