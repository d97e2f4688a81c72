"""Memory: the adapter against the document's KV cache at answer time, and peak update memory.

1. Extra memory at answer time, documents of 1K to 128K tokens: the Doc-to-LoRA adapter
   (d2l_small: rank 8 per 1,024-token chunk + an 8-row bias block, down_proj of 18 layers,
   float32; also 8,192-token chunks as in the paper's QA setting) against the KV cache the base
   model would hold for the document in its prompt. Three cache sizes:
     ours      `transformer.KVCache`, window-aware (what runs here): the 15 sliding layers keep a
               ring buffer of their 512-position window, the 3 global layers every position;
     full      every layer caches every position (`KVCache.empty(..., windowed=False)`, the cache
               before issue 66), for comparison;
     bfloat16  either, at half the bytes.
   `measured` rows: the nbytes of arrays actually built on this machine (the cache after a
   real prefill, the adapter from a real `internalize`); `computed` rows: the same formula from
   shapes, for lengths this 2-core machine does not run. Both are given where both exist.
2. Peak update memory of Doc-to-LoRA (batched, iterative; and the shipped, trained hypernetwork up
   to its max_chunks) against gradient context distillation
   (`lora_hyper.baselines.context_distillation`: teacher's greedy answer with the document,
   teacher logits, Adam steps on the student), as XLA's buffer assignment of each compiled
   update (`compiled.memory_analysis()`: arguments + outputs + temporaries, less the resident
   base params and hypernetwork variables): compiled only, not run, so it reaches 128K tokens. Context
   distillation stops at the base model's 32K context: its teacher must read the document.
3. Measured peak RSS growth of each update at one length (`--rss_length`), each in a fresh
   subprocess: VmHWM reset after loading and compiling, then one update.

The hypernetwork is untrained (random init): memory does not depend on its weights.

Run: python -m benchmarks.memory [--measured 1024 2048 4096] [--rss_length 2048]
Writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp

from benchmarks import common
from lora_hyper.baselines import context_distillation as cd
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import decoding, transformer

LENGTHS = [1024 * 2**k for k in range(8)]  # 1K .. 128K
MB = common.MB
PROMPT, ANSWER = 16, 16  # query tokens and answer tokens around the document (CD, prefill)


def log(*args):
  print(*args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- shapes


def adapter_rank(hyper: doc_to_lora.DocToLoraConfig, tokens: int) -> int:
  return math.ceil(tokens / (hyper.chunk_len - 1)) * hyper.rank + hyper.rank


def adapter_bytes(hyper: doc_to_lora.DocToLoraConfig, tokens: int, itemsize: int = 4) -> int:
  width = sum(sum(hyper.base.module_shape(m)) for m in hyper.modules)
  return hyper.base.num_layers * adapter_rank(hyper, tokens) * width * itemsize


def answer_time(args, model) -> list[dict]:
  cfg, params, tok = model.config, model.params, model.tokenizer
  small = doc_to_lora.d2l_small(cfg, max_chunks=256, experimental=common.D2L_OPTIONS)
  qa = doc_to_lora.d2l_small(cfg, chunk_len=8192, max_chunks=32, experimental=common.D2L_OPTIONS)
  hyper_variables = doc_to_lora.init(small, jax.random.key(0))
  prefill = jax.jit(lambda p, t, c: transformer.forward(p, t, config=cfg, cache=c, logits=False).cache)
  bf16 = cfg.replace(dtype="bfloat16")
  rows = []
  for tokens in LENGTHS:
    row = {"doc_tokens": tokens, "adapter_rank": adapter_rank(small, tokens),
           "computed_mb": {
               "adapter_chunk1024": adapter_bytes(small, tokens) / MB,
               "adapter_chunk8192": adapter_bytes(qa, tokens) / MB,
               "kv_ours": transformer.kv_cache_bytes(cfg, 1, tokens) / MB,
               "kv_full": transformer.kv_cache_bytes(cfg, 1, tokens, windowed=False) / MB,
               "kv_ours_bf16": transformer.kv_cache_bytes(bf16, 1, tokens) / MB,
               "kv_full_bf16": transformer.kv_cache_bytes(bf16, 1, tokens, windowed=False) / MB}}
    c = row["computed_mb"]
    row["ratio_adapter_to_kv"] = {"ours": c["adapter_chunk1024"] / c["kv_ours"],
                                  "full": c["adapter_chunk1024"] / c["kv_full"],
                                  "chunk8192_vs_ours": c["adapter_chunk8192"] / c["kv_ours"]}
    if tokens in args.measured:
      ids, _ = common.document_tokens(tok, tokens)
      cache = transformer.KVCache.empty(cfg, 1, tokens)
      cache = jax.block_until_ready(prefill(params, jnp.asarray([ids], jnp.int32), cache))
      chunks = doc_to_lora.chunk_documents([ids], config=small)
      adapter = jax.block_until_ready(doc_to_lora.adapter_from_chunks(
          hyper_variables, params, jnp.asarray(chunks.tokens), jnp.asarray(chunks.mask), config=small))
      row["measured_mb"] = {"adapter_chunk1024": common.tree_bytes(dict(adapter.weights)) / MB,
                            "kv_ours": common.tree_bytes(cache) / MB}
      del cache, adapter
      log(f"{tokens}: measured {row['measured_mb']}")
    rows.append(row)
  return rows


# ----------------------------------------------------------------------------- update memory


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def update_memory(args, model) -> list[dict]:
  cfg = model.config
  hyper = doc_to_lora.d2l_small(cfg, max_chunks=256, experimental=common.D2L_OPTIONS)
  base = _abstract(model.params)
  hyper_variables = jax.eval_shape(lambda: doc_to_lora.init(hyper, jax.random.key(0)))
  resident = (base, hyper_variables)
  shipped = saved.load_hypernetwork(saved.shipped("doc_to_lora", "needle"), model)  # early exit, 128-token chunks
  shipped_variables = _abstract(shipped.variables)
  settings = cd.DistillConfig(max_answer_tokens=ANSWER)
  # Context distillation's step does not see the document: one analysis serves every length.
  weights = jax.eval_shape(lambda: dict(cd.init_adapter(jax.random.key(0), cfg, settings.modules, settings.rank,
                                                        scaling=settings.scaling).weights))
  import optax
  tx = optax.adam(settings.learning_rate)
  opt_state = jax.eval_shape(tx.init, weights)
  student = 1 + PROMPT + ANSWER
  batch = {"tokens": jax.ShapeDtypeStruct((1, student), jnp.int32), "mask": jax.ShapeDtypeStruct((1, student), bool),
           "logits_at": jax.ShapeDtypeStruct((1, ANSWER), jnp.int32),
           "loss_mask": jax.ShapeDtypeStruct((1, ANSWER), bool),
           "teacher_logits": jax.ShapeDtypeStruct((1, ANSWER, cfg.vocab_size), jnp.float32)}
  step = common.xla_memory(cd.make_step(cfg, settings.scaling, "kl", tx), weights, opt_state, base, batch,
                           resident=base)
  teacher_fn = jax.jit(lambda p, t, at: transformer.forward(p, t, config=cfg, logits_at=at).logits)
  rows = []
  for tokens in LENGTHS:
    k = math.ceil(tokens / (hyper.chunk_len - 1))
    chunk_tokens = jax.ShapeDtypeStruct((1, k, hyper.chunk_len), jnp.int32)
    chunk_mask = jax.ShapeDtypeStruct((1, k, hyper.chunk_len), bool)
    row = {"doc_tokens": tokens, "chunks": k}
    for mode in ("batched", "iterative"):
      row[f"d2l_{mode}"] = common.xla_memory(doc_to_lora.adapter_from_chunks, hyper_variables, base, chunk_tokens,
                                             chunk_mask, config=hyper, iterative=mode == "iterative",
                                             resident=resident)
    k_shipped = math.ceil(tokens / (shipped.config.chunk_len - 1))
    if k_shipped <= shipped.config.max_chunks:
      shape = (1, k_shipped, shipped.config.chunk_len)
      row["d2l_shipped"] = common.xla_memory(doc_to_lora.adapter_from_chunks, shipped_variables, base,
                                             jax.ShapeDtypeStruct(shape, jnp.int32), jax.ShapeDtypeStruct(shape, bool),
                                             config=shipped.config, resident=(base, shipped_variables))
    if tokens <= cfg.max_seq_len:  # the teacher reads the document: the base model's context bounds it
      prompt = jax.ShapeDtypeStruct((1, 1 + tokens + PROMPT), jnp.int32)
      answer = common.xla_memory(decoding.generate, base, prompt, jax.ShapeDtypeStruct(prompt.shape, bool),
                                 jax.random.key(0), config=cfg, stop_ids=(cfg.eos_id,),
                                 sampling=decoding.SamplingConfig(max_new_tokens=ANSWER), resident=base)
      teacher = common.xla_memory(teacher_fn, base, jax.ShapeDtypeStruct((1, 1 + tokens + PROMPT + ANSWER), jnp.int32),
                                  jax.ShapeDtypeStruct((1, ANSWER), jnp.int32), resident=base)
      logits_mb = ANSWER * cfg.vocab_size * 4 / MB  # teacher logits, held through the steps
      row["cd"] = {"answer": answer, "teacher": teacher, "step": step,
                   "peak_extra_mb": max(answer["peak_extra_mb"], teacher["peak_extra_mb"],
                                        step["peak_extra_mb"] + logits_mb)}
      row["ratio_cd_to_d2l"] = {m: row["cd"]["peak_extra_mb"] / row[f"d2l_{m}"]["peak_extra_mb"]
                                for m in ("batched", "iterative")}
    log(f"{tokens}: d2l {row['d2l_batched']['peak_extra_mb']:.0f} / {row['d2l_iterative']['peak_extra_mb']:.0f} MB"
        + (f", cd {row['cd']['peak_extra_mb']:.0f} MB" if "cd" in row else ""))
    rows.append(row)
  return rows


# ----------------------------------------------------------------------------- measured RSS


def rss_worker(contender: str, tokens: int, runs: int = 3) -> dict:
  """Runs in a fresh process: load and compile everything, then `runs` updates, each with the peak
  mark reset first; reports the largest growth of the peak over the RSS just before a run."""
  import optax

  model = common.base()
  cfg, params, tok = model.config, model.params, model.tokenizer
  ids, record = common.document_tokens(tok, tokens)
  if contender.startswith("d2l"):
    hyper = doc_to_lora.d2l_small(cfg, max_chunks=256, experimental=common.D2L_OPTIONS)
    hyper_variables = doc_to_lora.init(hyper, jax.random.key(0))
    chunks = doc_to_lora.chunk_documents([ids], config=hyper)
    args = (hyper_variables, params, jnp.asarray(chunks.tokens), jnp.asarray(chunks.mask))
    run = doc_to_lora.adapter_from_chunks.lower(*args, config=hyper, iterative=contender == "d2l_iterative").compile()
    update = lambda: run(*args)
  else:  # context distillation's phases, as `cd.distill` runs them, compiled ahead (compiler memory excluded)
    settings = cd.DistillConfig(max_answer_tokens=ANSWER)
    prefix = jnp.asarray([[cfg.bos_id, *ids, *tok.encode(f"\n\nQuestion: {record['query']}\nAnswer:", add_bos=False)]])
    gen_args = (params, prefix, jnp.ones_like(prefix, bool), jax.random.key(0))
    generate = decoding.generate.lower(*gen_args, config=cfg, stop_ids=(-1,),
                                       sampling=decoding.SamplingConfig(max_new_tokens=ANSWER)).compile()
    teacher_tokens = jnp.concatenate([prefix, jnp.ones((1, ANSWER), jnp.int32)], axis=1)
    at = jnp.arange(prefix.shape[1] - 1, teacher_tokens.shape[1] - 1)[None]
    teacher = jax.jit(lambda p, t, a: transformer.forward(p, t, config=cfg, logits_at=a).logits)
    teacher = teacher.lower(params, teacher_tokens, at).compile()
    tx = optax.adam(settings.learning_rate)
    init = lambda: dict(cd.init_adapter(jax.random.key(0), cfg, settings.modules, settings.rank,
                                        scaling=settings.scaling).weights)
    student = jnp.ones((1, 1 + PROMPT + ANSWER), jnp.int32)
    batch = lambda logits: {"tokens": student, "mask": student > 0, "logits_at": at[:, :ANSWER] * 0 + PROMPT,
                            "loss_mask": jnp.ones((1, ANSWER), bool), "teacher_logits": logits}
    w = init()
    step = cd.make_step(cfg, settings.scaling, "kl", tx).lower(
        w, tx.init(w), params, batch(jnp.zeros((1, ANSWER, cfg.vocab_size)))).compile()

    def update(steps=3):
      generate(*gen_args)
      logits = teacher(params, teacher_tokens, at)
      w = init()
      state = tx.init(w)
      for _ in range(steps):
        w, state, _ = step(w, state, params, batch(logits))
      return w

  growth = []
  for _ in range(runs):
    before = common.rss_mb()
    reset = common.reset_peak_rss()
    jax.block_until_ready(update())
    growth.append(common.peak_rss_mb() - before)
  return {"contender": contender, "doc_tokens": tokens, "peak_growth_mb": max(growth), "per_run_mb": growth,
          "peak_reset": reset}


def measured_rss(tokens: int) -> list[dict]:
  out = []
  for contender in ("d2l_batched", "d2l_iterative", "cd"):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--_rss_worker", contender, str(tokens)],
                          capture_output=True, text=True, check=True)
    out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    log(out[-1])
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--measured", type=int, nargs="*", default=[1024, 2048, 4096],
                      help="lengths (from 1K, 2K, .. 128K) whose cache and adapter are really built here")
  parser.add_argument("--rss_length", type=int, default=2048, help="0 skips the subprocess RSS measurement")
  parser.add_argument("--_rss_worker", nargs=2, metavar=("CONTENDER", "TOKENS"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._rss_worker:
    print(json.dumps(rss_worker(args._rss_worker[0], int(args._rss_worker[1]))))
    return

  model = common.base()
  answer = answer_time(args, model)
  update = update_memory(args, model)
  rss = measured_rss(args.rss_length) if args.rss_length else []
  at_128k = answer[-1]
  common.write_result("memory", {
      "model": model.name, "hypernetwork": "d2l_small (random init), float32",
      "answer_time": answer, "update_peak_xla": update, "update_peak_rss": rss,
      "how": {"answer_time.measured_mb": "nbytes of the arrays built here (prefilled window-aware KVCache; "
                                         "internalized adapter)",
              "answer_time.computed_mb": "the same from shapes (transformer.kv_cache_bytes; kv_full: every layer "
                                         "caches every position)",
              "update_peak_xla": "compiled.memory_analysis(): temp + output + arguments - resident params (MiB)",
              "update_peak_rss": "VmHWM - VmRSS around one update in a fresh process, after warm-up (MiB)"},
      "goal": "adapter <= 1/10 of the KV cache at 128K tokens",
      "ratio_at_128k": at_128k["ratio_adapter_to_kv"],
  })


if __name__ == "__main__":
  main()
