"""Multi-process start-up, behind environment variables (as big_vision's run_tpu.sh does).

`LORA_HYPER_DISTRIBUTED=1`: on a TPU pod slice every worker runs the same command and
`jax.distributed.initialize()` finds the coordinator and its own id by itself.

`LORA_HYPER_COORDINATOR` (host:port), `LORA_HYPER_NUM_PROCESSES` and `LORA_HYPER_PROCESS_ID`
(plus optional `LORA_HYPER_LOCAL_DEVICE_IDS`, comma separated): explicit values for clusters
without auto-detection, e.g. several CPU processes on localhost in tests.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax

_EXPLICIT_VARS = ("LORA_HYPER_COORDINATOR", "LORA_HYPER_NUM_PROCESSES", "LORA_HYPER_PROCESS_ID")


def _explicit_kwargs(env: Mapping[str, str]) -> dict[str, Any]:
  kwargs: dict[str, Any] = {
      "coordinator_address": env["LORA_HYPER_COORDINATOR"],
      "num_processes": int(env["LORA_HYPER_NUM_PROCESSES"]),
      "process_id": int(env["LORA_HYPER_PROCESS_ID"]),
  }
  if env.get("LORA_HYPER_LOCAL_DEVICE_IDS"):
    kwargs["local_device_ids"] = [int(i) for i in env["LORA_HYPER_LOCAL_DEVICE_IDS"].split(",")]
  return kwargs


def _initialize_kwargs(env: Mapping[str, str]) -> dict[str, Any] | None:
  """The arguments for `jax.distributed.initialize`, or None when the env asks for one process."""
  present = [name for name in _EXPLICIT_VARS if env.get(name)]
  if present:
    missing = sorted(set(_EXPLICIT_VARS) - set(present))
    if missing:
      raise ValueError(f"{', '.join(present)} set but {', '.join(missing)} missing")
    return _explicit_kwargs(env)
  if env.get("LORA_HYPER_DISTRIBUTED") == "1":
    return {}
  return None


def maybe_initialize(env: Mapping[str, str] = os.environ) -> bool:
  """Joins the multi-process JAX run the env describes; True only for the call that joined it.

  Must run before any other JAX computation. A second call is a no-op (returns False).
  """
  kwargs = _initialize_kwargs(env)
  if kwargs is None or jax.distributed.is_initialized():
    return False
  jax.distributed.initialize(**kwargs)
  return True


def is_main_process() -> bool:
  """Whether this process writes logs and other once-per-run files."""
  return jax.process_index() == 0
