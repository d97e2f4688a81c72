"""Shared helpers for benchmark scripts: timing (interleaved rounds), the machine's matmul peak,
matmul FLOPs counted from a jaxpr, XLA memory analysis, peak RSS, documents, JSON results."""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from lora_hyper import files

RESULTS = Path(__file__).parent / "results"
_START_LOAD = list(os.getloadavg())  # other workers share this machine: recorded with every result
MB = 2**20
# The experimental options of every random-init Doc-to-LoRA the benchmarks build (`experimental=D2L_OPTIONS`):
# the library's defaults when the recorded results were measured, and the shipped hypernetwork's too
# (features read through each layer's RMSNorm, chunk codes centred on a running mean). The published
# design, today's default, has neither; passing them keeps what the benchmarks measure unchanged.
D2L_OPTIONS = {"normalize_features": True, "center_momentum": 0.9}


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """Median wall time of `fn()` over `repeats` calls (after one untimed warm-up call)."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - start, out


def interleaved(contenders: Mapping[str, Callable[[], Any]], rounds: int, calls: int = 1,
                warmup: int = 1) -> dict[str, dict[str, float]]:
  """Times every contender once per round, round after round, so background load on this shared
  machine hits all of them alike, after `warmup` untimed calls each (PyTorch's eager training
  step needs about three). Each timing covers `calls` back-to-back calls (reported per call).
  Returns {name: {median_s, min_s, max_s, rounds}}."""
  for _ in range(int(warmup)):
    for fn in contenders.values():
      jax.block_until_ready(fn())
  samples: dict[str, list[float]] = {name: [] for name in contenders}
  for _ in range(rounds):
    for name, fn in contenders.items():
      start = time.perf_counter()
      for _ in range(calls):
        out = fn()
      jax.block_until_ready(out)
      samples[name].append((time.perf_counter() - start) / calls)
  return {name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s), "rounds": len(s)}
          for name, s in samples.items()}


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
  """Achieved GFLOP/s of one large jitted `jnp.dot`: this machine's practical limit."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  dot = jax.jit(jnp.dot)
  return 2 * n**3 / median_seconds(lambda: dot(a, b), repeats) / 1e9


# ----------------------------------------------------------------------------- FLOPs and memory


def _sub_jaxprs(value: Any):
  if isinstance(value, jax_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def _jaxpr_matmul_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lhs_contract)
      continue
    subs = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
    if not subs:
      continue
    if name == "cond":  # one branch runs: count the dearest
      total += max(_jaxpr_matmul_flops(j) for j in subs)
    elif name == "while":
      raise ValueError("matmul_flops cannot count a while loop (unknown trip count)")
    else:
      inner = sum(_jaxpr_matmul_flops(j) for j in subs)
      total += inner * (eqn.params["length"] if name == "scan" else 1)
  return total


def matmul_flops(fn: Callable, *args, **kwargs) -> float:
  """FLOPs of every matrix multiply `fn` runs (2 per multiply-add), counted from its jaxpr: the
  forward and, for a grad, the backward matmuls; scans times their length. Attention counts as
  computed (dense scores, masked entries included); elementwise ops are not counted."""
  return _jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)


def tree_bytes(tree: Any) -> int:
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def xla_memory(jitted, *args, resident: Any = None, **kwargs) -> dict[str, float]:
  """XLA's buffer assignment for `jitted(*args)` (compiled, not run), in MiB: arguments, outputs,
  temporaries, and `peak_extra_mb` = temp + output + arguments other than `resident` (the base
  params, already in memory before and after the update)."""
  stats = jitted.lower(*args, **kwargs).compile().memory_analysis()
  resident_bytes = tree_bytes(resident) if resident is not None else 0
  out = {"argument_mb": stats.argument_size_in_bytes / MB, "output_mb": stats.output_size_in_bytes / MB,
         "temp_mb": stats.temp_size_in_bytes / MB, "alias_mb": stats.alias_size_in_bytes / MB}
  out["peak_extra_mb"] = (stats.temp_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
                          + stats.argument_size_in_bytes - resident_bytes) / MB
  return out


def rss_mb() -> float:
  """Current resident set size of this process, MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def peak_rss_mb() -> float:
  """Peak resident set size since start (or since `reset_peak_rss`), MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark (Linux: write 5 to clear_refs); False if not allowed."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def cpu_cores() -> int:
  """CPU cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def torch_threads(threads: int | None = None) -> int:
  """Sets PyTorch's intra-op threads to this machine's cores (as XLA's CPU client uses them all) and
  returns the count. PyTorch's OpenMP threads spin at barriers: on cores another process is also
  using, its eager backward slows 5-20x (measured here), so compare only on an otherwise idle machine."""
  import torch

  torch.set_num_threads(threads or cpu_cores())
  return torch.get_num_threads()


# ----------------------------------------------------------------------------- inputs


@functools.lru_cache(maxsize=1)
def base():
  """The embedded Gemma 3 270M (float32), loaded once per process."""
  from lora_hyper.model import base_model

  return base_model.load_base_model()


def document_tokens(tokenizer, length: int, seed: int = 0) -> tuple[list[int], dict[str, str]]:
  """`length` token ids (no BOS) of fictional documents joined by blank lines, and the first
  document's first record (its query is answered by the start of the document)."""
  from lora_hyper.data import fictional

  source = fictional.FictionalQA(num_docs=10_000, seed=seed)
  record = source[0]
  ids: list[int] = []
  doc = 0
  while len(ids) < length:
    text = source[doc * fictional.FACTS_PER_DOC]["document"]
    ids += tokenizer.encode(text + "\n\n", add_bos=False)
    doc += 1
  return ids[:length], record


# ----------------------------------------------------------------------------- results


def cpu_model() -> str:
  """The CPU as /proc/cpuinfo names it, with family/model and its widest vector extension: the
  PyTorch ratios differ between the VMs this project runs on, so each result says which it had."""
  try:
    info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
  except OSError:
    return platform.processor()
  info = {k.strip(): v.strip() for k, v in info.items()}
  flags = info.get("flags", "").split()
  vector = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "-"
  name, family, model = (info.get(k, "?") for k in ("model name", "cpu family", "model"))
  return f"{name} (family {family}, model {model}, {vector})"


def machine() -> dict[str, Any]:
  return {"platform": platform.platform(), "processor": cpu_model(), "cpu_count": os.cpu_count(),
          "jax": jax.__version__, "backend": jax.default_backend(), "devices": len(jax.devices()),
          "device_kind": jax.devices()[0].device_kind,
          "load_average_at_start": _START_LOAD, "load_average_at_end": list(os.getloadavg())}


def command() -> str:
  """How this run was started, as the README gives it (run from the repository root), its paths
  portable (files.portable_path)."""
  return files.portable_command(["python", "-m", "benchmarks." + Path(sys.argv[0]).stem, *sys.argv[1:]])


def write_result(name: str, result: dict[str, Any]) -> Path:
  """results/{name}.json, stamped with the machine and command; every path in it portable."""
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{name}.json"
  result = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
            "command": command(), **files.portable_record(result)}
  path.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
  print(json.dumps(result, indent=2, default=_json_default))
  return path


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


# ----------------------------------------------------------------------------- decoding


def decode_loop(config, steps: int):
  """A jitted greedy decoder that continues from a prefilled cache for `steps` tokens, carrying
  the cache through a `fori_loop` (updated in place, as `decoding.generate` does) and donating it:
  (params, cache, token [B, 1], position [B, 1], adapter) -> (cache, last token)."""
  from lora_hyper.model import transformer

  def run(params, cache, token, position, adapter):
    def body(i, carry):
      cache, token = carry
      out = transformer.forward(params, token, config=config, positions=position + i, adapter=adapter, cache=cache)
      return out.cache, jnp.argmax(out.logits[:, -1], axis=-1).astype(jnp.int32)[:, None]

    return jax.lax.fori_loop(0, steps, body, (cache, token))

  return jax.jit(run, donate_argnums=(1,))
