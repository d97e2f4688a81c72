"""Shared helpers for benchmark scripts: timing, the machine's matmul peak, JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

RESULTS = Path(__file__).parent / "results"


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """Median wall time of `fn()` over `repeats` calls (after one untimed warm-up call)."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  """Achieved float32 GFLOP/s of one large jitted `jnp.dot`: this machine's practical limit."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  return 2 * n**3 / median_seconds(lambda: dot(a, b), repeats) / 1e9


def machine() -> dict[str, Any]:
  return {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
          "jax": jax.__version__, "backend": jax.default_backend(), "devices": len(jax.devices())}


def write_result(name: str, result: dict[str, Any]) -> Path:
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{name}.json"
  result = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **result}
  path.write_text(json.dumps(result, indent=2) + "\n")
  print(json.dumps(result, indent=2))
  return path
