"""The computing helpers of benchmarks/common.py (matmul FLOPs from a jaxpr, XLA memory, timing)
and the decoding step's FLOPs of benchmarks/decode_latency.py, each against a count done by hand."""

import subprocess

import jax
import jax.numpy as jnp
import pytest

from benchmarks import common, decode_latency
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer

M, K, N = 4, 5, 6
A, B = jnp.ones((M, K)), jnp.ones((K, N))
MATMUL = 2 * M * K * N


def test_matmul_flops_counts_two_per_multiply_add():
  assert common.matmul_flops(jnp.dot, A, B) == MATMUL
  assert common.matmul_flops(lambda a, b: jnp.einsum("ik,kn->in", a, b) + 1.0, A, B) == MATMUL
  assert common.matmul_flops(jax.jit(jnp.dot), A, B) == MATMUL  # inside a pjit


def test_matmul_flops_through_scans_conds_and_grads():
  square = jnp.ones((K, K))
  scan = lambda a: jax.lax.scan(lambda c, _: (c @ square, None), a, None, length=3)[0]
  assert common.matmul_flops(scan, A) == 3 * 2 * M * K * K
  fori = lambda a: jax.lax.fori_loop(0, 3, lambda i, c: c @ square, a)  # static trip count: a scan
  assert common.matmul_flops(fori, A) == 3 * 2 * M * K * K
  cond = lambda p: jax.lax.cond(p, lambda: A @ B, lambda: jnp.zeros((M, N)))
  assert common.matmul_flops(cond, True) == MATMUL  # the dearer branch
  # Forward, then the cotangents of both operands: three matmuls of the same size.
  assert common.matmul_flops(jax.grad(lambda a, b: (a @ b).sum(), argnums=(0, 1)), A, B) == 3 * MATMUL
  with pytest.raises(ValueError, match="while"):
    common.matmul_flops(lambda a, n: jax.lax.while_loop(lambda c: c[1] < n, lambda c: (c[0] @ square, c[1] + 1),
                                                        (a, 0))[0], A, 3)


def test_matmul_flops_of_abstract_shapes():
  big = jax.ShapeDtypeStruct((4096, 8192), jnp.float32)
  assert common.matmul_flops(lambda a: a @ a.T, big) == 2 * 4096 * 8192 * 4096


def test_xla_memory_leaves_out_resident_arguments():
  params, x = jnp.ones((256, 256)), jnp.ones((8, 256))
  stats = common.xla_memory(jax.jit(lambda p, x: x @ p), params, x, resident=params)
  assert stats["argument_mb"] == pytest.approx((256 * 256 + 8 * 256) * 4 / common.MB)
  assert stats["output_mb"] == pytest.approx(8 * 256 * 4 / common.MB)
  assert stats["peak_extra_mb"] == pytest.approx(stats["temp_mb"] + (2 * 8 * 256 * 4) / common.MB)
  assert common.tree_bytes({"a": params, "b": [x.astype(jnp.bfloat16)]}) == 256 * 256 * 4 + 8 * 256 * 2


def test_interleaved_times_every_contender_every_round():
  calls = {"a": 0, "b": 0}

  def bump(name):
    calls[name] += 1
    return jnp.zeros(())

  times = common.interleaved({"a": lambda: bump("a"), "b": lambda: bump("b")}, rounds=3, calls=2, warmup=1)
  assert calls == {"a": 7, "b": 7}
  for t in times.values():
    assert t["rounds"] == 3 and 0 <= t["min_s"] <= t["median_s"] <= t["max_s"]


def test_decode_step_flops_count_each_layer_over_its_own_cache():
  """A window-aware cache's step attends over the window in sliding layers and every slot in the others."""
  cfg = config_lib.tiny_gemma3()  # 2 sliding layers (window 8) + 1 global
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  full = decode_latency.step_flops(cfg, params, 40, None, windowed=False)
  windowed = decode_latency.step_flops(cfg, params, 40, None)
  per_slot = 2 * 2 * cfg.num_heads * cfg.head_dim  # scores and weighted values, one query
  assert full - windowed == pytest.approx(2 * per_slot * (40 - 8))
  assert decode_latency.step_flops(cfg, params, 41, None, windowed=False) - full == pytest.approx(3 * per_slot)


def test_run_all_runs_the_chosen_benchmarks_in_order_and_reports_failures(monkeypatch, capsys, tmp_path):
  from benchmarks import report, run_all

  calls = []

  def fake_run(command, stdout, stderr, cwd):  # subprocess.run: one benchmark at a time, blocking
    calls.append(command[2:])
    return subprocess.CompletedProcess(command, 1 if command[2] == "benchmarks.forward" else 0)

  monkeypatch.setattr(run_all.subprocess, "run", fake_run)
  monkeypatch.setattr(report, "main", lambda argv: calls.append(["report", *argv]))
  monkeypatch.setattr(report, "RESULTS", tmp_path)
  code = run_all.main(["--only", "forward", "mfu", "memory", "--skip", "memory"])
  assert code == 1 and "failed: forward" in capsys.readouterr().err
  assert calls == [["benchmarks.forward", "--tokens", "512", "--repeats", "5"],
                   ["benchmarks.mfu", "--rounds", "3", "--peak_n", "4096"], ["report", "--write"]]
  assert (tmp_path / "logs" / "mfu.log").exists()


def test_gpu_benchmark_records_a_failed_length_and_measures_the_next(monkeypatch):
  from benchmarks import gpu

  def fake_one(tokens, mode, *args):
    if tokens == 128:
      raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
    return {"doc_tokens": tokens, "mode": mode, "seconds": 0.5, "xla_temp_mb": 1.0}

  monkeypatch.setattr(gpu, "internalize_one", fake_one)
  rows = gpu.internalize((128, 64), ("batched",), "d2l_tiny", None, None, None, rounds=1, budget=1e9)
  assert rows[0]["hypernetwork"] == "d2l_tiny" and "RESOURCE_EXHAUSTED" in rows[0]["error"]
  assert rows[1] == {"hypernetwork": "d2l_tiny", "doc_tokens": 64, "mode": "batched", "seconds": 0.5,
                     "xla_temp_mb": 1.0}
