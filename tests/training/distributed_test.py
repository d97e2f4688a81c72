"""Two CPU processes on localhost join one JAX run and sum a global array across both."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

import xla_flags
from lora_hyper.training import distributed

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
ROWS_PER_PROCESS = 4

# Each process contributes rows 4*pid .. 4*pid+3, so only a real cross-process sum gives 0+...+7.
_WORKER = f"""
import numpy as np
from lora_hyper.training import distributed

assert distributed.maybe_initialize()
assert not distributed.maybe_initialize()  # idempotent

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

mesh = jax.make_mesh((jax.device_count(),), ("data",))
pid = jax.process_index()
local = np.arange({ROWS_PER_PROCESS}, dtype=np.float32) + {ROWS_PER_PROCESS} * pid
batch = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)
total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(batch)
print(f"RESULT pid={{pid}} processes={{jax.process_count()}} devices={{jax.device_count()}} "
      f"global_shape={{batch.shape}} main={{distributed.is_main_process()}} sum={{float(total)}}",
      flush=True)
jax.distributed.shutdown()
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _worker_env(port: int, process_id: int) -> dict[str, str]:
  env = dict(os.environ)
  env.pop("LORA_HYPER_DISTRIBUTED", None)
  env.update({
      "XLA_FLAGS": xla_flags.for_devices(DEVICES_PER_PROCESS),
      "JAX_PLATFORMS": "cpu",
      "LORA_HYPER_COORDINATOR": f"127.0.0.1:{port}",
      "LORA_HYPER_NUM_PROCESSES": str(NUM_PROCESSES),
      "LORA_HYPER_PROCESS_ID": str(process_id),
  })
  return env


def test_two_processes_sum_a_global_array():
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER], env=_worker_env(port, pid),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for pid in range(NUM_PROCESSES)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=60)[0])
  finally:
    for proc in procs:
      proc.kill()
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out

  rows = NUM_PROCESSES * ROWS_PER_PROCESS
  expected_sum = float(sum(range(rows)))
  for pid, out in enumerate(outputs):
    match = re.search(r"^RESULT .*$", out, re.MULTILINE)
    assert match, out
    assert match.group(0) == (
        f"RESULT pid={pid} processes={NUM_PROCESSES} devices={NUM_PROCESSES * DEVICES_PER_PROCESS} "
        f"global_shape=({rows},) main={pid == 0} sum={expected_sum}")


def test_single_process_env_does_nothing():
  assert distributed.maybe_initialize({}) is False
  assert distributed.maybe_initialize({"LORA_HYPER_DISTRIBUTED": "0"}) is False
  assert distributed.is_main_process()


def test_partial_explicit_env_is_an_error():
  with pytest.raises(ValueError, match="LORA_HYPER_NUM_PROCESSES, LORA_HYPER_PROCESS_ID missing"):
    distributed.maybe_initialize({"LORA_HYPER_COORDINATOR": "127.0.0.1:1234"})


class _FakeDistributed:
  """Records `jax.distributed.initialize` calls instead of joining a cluster."""

  def __init__(self):
    self.calls: list[dict] = []

  def initialize(self, **kwargs) -> None:
    self.calls.append(kwargs)

  def is_initialized(self) -> bool:
    return bool(self.calls)


@pytest.fixture
def fake_distributed(monkeypatch: pytest.MonkeyPatch) -> _FakeDistributed:
  fake = _FakeDistributed()
  monkeypatch.setattr(distributed.jax, "distributed", fake)
  return fake


def test_tpu_pod_flag_initializes_without_arguments(fake_distributed: _FakeDistributed):
  assert distributed.maybe_initialize({"LORA_HYPER_DISTRIBUTED": "1"}) is True
  assert distributed.maybe_initialize({"LORA_HYPER_DISTRIBUTED": "1"}) is False
  assert fake_distributed.calls == [{}]


def test_explicit_env_passes_coordinator_and_device_ids(fake_distributed: _FakeDistributed):
  env = {"LORA_HYPER_COORDINATOR": "10.0.0.2:1234", "LORA_HYPER_NUM_PROCESSES": "4",
         "LORA_HYPER_PROCESS_ID": "3", "LORA_HYPER_LOCAL_DEVICE_IDS": "0,1"}
  assert distributed.maybe_initialize(env) is True
  assert fake_distributed.calls == [{"coordinator_address": "10.0.0.2:1234", "num_processes": 4,
                                     "process_id": 3, "local_device_ids": [0, 1]}]
