"""`lora-hyper train` on two hosts, simulated: two CPU processes on localhost (two devices each) run the
same command and join one JAX run through the LORA_HYPER_* variables, as every worker of a TPU pod
does. The mesh's fsdp axis spans both processes, so the base params and the hypernetwork's state are
split across the hosts. With one workdir for both, training ends (its params gathered from both
processes), process 0 alone writes --out and the logs, and a rerun resumes; with a workdir each,
both stop at start-up with the error that names it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from lora_hyper.hypernetworks import saved
from lora_hyper.model import base_model

import xla_flags
from fakes import qa_records
from tiny_model import write_tiny_model

ROOT = Path(__file__).parents[2]
DEVICES_PER_PROCESS = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
  folder = tmp_path_factory.mktemp("multihost")
  model = write_tiny_model(folder / "model")
  (folder / "tiny.gin").write_text(f"""
lora_hyper.train.base_model = '{model}'
lora_hyper.train.data = {qa_records(16)!r}
lora_hyper.train.hypernetwork = 'd2l_tiny'
lora_hyper.train.hyper_overrides = {{'chunk_len': 32, 'max_chunks': 1}}
lora_hyper.train.doc_shapes = @lora_hyper.DocExampleShapes()
lora_hyper.DocExampleShapes.num_chunks = 1
lora_hyper.DocExampleShapes.student_len = 64
lora_hyper.DocExampleShapes.teacher_len = 96
lora_hyper.DocExampleShapes.answer_len = 2
lora_hyper.train.global_batch_size = 8
lora_hyper.train.mesh_shape = (1, 4, 1)  # fsdp over both processes: params sharded across the hosts
lora_hyper.train.steps = 1
lora_hyper.train.save_every = 1000
lora_hyper.train.log_every = 1
lora_hyper.train.optimizer = @lora_hyper.OptimizerConfig()
lora_hyper.OptimizerConfig.learning_rate = 3e-3
lora_hyper.OptimizerConfig.warmup_steps = 1
lora_hyper.OptimizerConfig.total_steps = 2
""")
  return {"model": model, "gin": folder / "tiny.gin"}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train(gin_file: Path, workdirs: list[Path], out: Path, logs: Path, *params: str) -> list[dict]:
  """Runs `lora-hyper train` once per workdir, process i in workdirs[i]: {returncode, stdout, stderr} each."""
  port = _free_port()
  logs.mkdir(parents=True, exist_ok=True)
  procs = []
  for pid, workdir in enumerate(workdirs):
    env = {k: v for k, v in os.environ.items() if k != "LORA_HYPER_DISTRIBUTED"}
    env.update({"XLA_FLAGS": xla_flags.for_devices(DEVICES_PER_PROCESS), "JAX_PLATFORMS": "cpu",
                "LORA_HYPER_COORDINATOR": f"127.0.0.1:{port}", "LORA_HYPER_NUM_PROCESSES": str(len(workdirs)),
                "LORA_HYPER_PROCESS_ID": str(pid)})
    bindings = [word for p in (f"lora_hyper.train.workdir = '{workdir}'", *params) for word in ("--gin_param", p)]
    command = [sys.executable, "-m", "lora_hyper.cli", "train", "--gin_file", str(gin_file), *bindings,
               "--out", str(out)]
    # Files, not pipes: a process blocked on a full pipe would stall the other in a collective.
    with open(logs / f"{pid}.out", "w") as stdout, open(logs / f"{pid}.err", "w") as stderr:
      procs.append(subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, cwd=ROOT, env=env))
  try:
    codes = [proc.wait(timeout=240) for proc in procs]
  finally:
    for proc in procs:
      proc.kill()
  return [{"returncode": code, "stdout": _without_gloo((logs / f"{pid}.out").read_text()),
           "stderr": (logs / f"{pid}.err").read_text()} for pid, code in enumerate(codes)]


def _without_gloo(text: str) -> str:
  """CPU collectives (Gloo) print their connections to stdout; TPUs have none."""
  return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("[Gloo]"))


def _steps_logged(workdir: Path) -> list[int]:
  return [json.loads(line)["step"] for line in (workdir / "logs" / "metrics.jsonl").read_text().splitlines()]


def test_two_hosts_train_save_once_and_resume(setup, tmp_path):
  workdir, out = tmp_path / "run", tmp_path / "trained"
  first = _train(setup["gin"], [workdir, workdir], out, tmp_path / "logs1")
  for run in first:
    assert run["returncode"] == 0, run["stderr"][-3000:]
    assert "stopped at step 1" in run["stderr"]
  assert first[0]["stdout"].splitlines() == [str(out)]  # process 0 saved it
  assert first[1]["stdout"] == "" and "process 0 saves the hypernetwork" in first[1]["stderr"]
  assert _steps_logged(workdir) == [1]  # one logger
  base = base_model.load_base_model(setup["model"])
  trained = saved.load_hypernetwork(out, base)  # its shapes: the gathered params, not one host's shards
  assert trained.kind == "doc_to_lora" and trained.config.chunk_len == 32

  second = _train(setup["gin"], [workdir, workdir], out, tmp_path / "logs2", "lora_hyper.train.steps = 2")
  for run in second:
    assert run["returncode"] == 0, run["stderr"][-3000:]
    assert "stopped at step 2" in run["stderr"]
  assert f"resumed from step 1 of {workdir}" in second[0]["stdout"]
  assert second[0]["stdout"].splitlines()[-1] == str(out) and second[1]["stdout"] == ""
  assert _steps_logged(workdir) == [1, 2]
  resumed = saved.load_hypernetwork(out, base)
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(trained.variables),
                                                      jax.tree.leaves(resumed.variables))]
  assert any(changed)  # one more step was taken and saved


def test_a_workdir_each_host_sees_alone_stops_at_start_up(setup, tmp_path):
  workdirs = [tmp_path / "host0", tmp_path / "host1"]
  runs = _train(setup["gin"], workdirs, tmp_path / "trained", tmp_path / "logs")
  for workdir, run in zip(workdirs, runs):
    assert run["returncode"] == 1, run["stderr"][-3000:]
    assert f"error: workdir {str(workdir)!r} is not shared by every host: process(es) [1] of 2" in run["stderr"]
    assert "every host must see the same folder" in run["stderr"].lower()
    assert "Traceback" not in run["stderr"]
  assert not (tmp_path / "trained").exists() and not (workdirs[0] / "checkpoints").exists()


# A data source that records whether the CLI joined the JAX run first: gin builds train's arguments
# before train's body runs, so a source touching JAX there would make joining impossible on a pod.
_PROBE = """
import sys

import gin
from jax._src import xla_bridge

from lora_hyper import cli
from lora_hyper.training import distributed

order = []
distributed.maybe_initialize = lambda *a, **k: order.append(("join", xla_bridge.backends_are_initialized()))


@gin.configurable
def probe_data():
  order.append(("data", xla_bridge.backends_are_initialized()))
  print(order, flush=True)
  sys.exit(0)


cli.main(sys.argv[1:])
"""


def test_the_cli_joins_the_run_before_gin_builds_the_data(tmp_path):
  (tmp_path / "probe.gin").write_text("lora_hyper.train.workdir = 'run'\nlora_hyper.train.data = @probe_data()\n")
  done = subprocess.run([sys.executable, "-c", _PROBE, "train", "--gin_file", "probe.gin"], capture_output=True,
                        text=True, cwd=tmp_path, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip() == "[('join', False), ('data', False)]"


def test_out_is_a_local_folder(setup, capsys):
  """Process 0 writes --out where it runs; a URL would become a local folder named gs:."""
  from lora_hyper import cli

  assert cli.main(["train", "--gin_file", str(setup["gin"]), "--out", "gs://bucket/trained"]) == cli.EXIT_USAGE
  assert "error: --out 'gs://bucket/trained' is a URL: name a local folder" in capsys.readouterr().err
