"""Model FLOPs utilisation of the meta-training steps against this machine's matmul peak.

The peak is the achieved GFLOP/s of one large jitted float32 `jnp.dot` (N x N by N x N), timed in
the same interleaved rounds as the steps, so both see the same background load. A step's FLOPs
are its matrix multiplies counted from its jaxpr (`common.matmul_flops`: forward and backward,
2 per multiply-add; dense attention scores counted as computed; elementwise work not counted),
so MFU = matmul FLOPs / step time / peak.

Steps (jitted, single device, float32, on the real embedded Gemma 3 270M, real batches):
  d2l_meta   Doc-to-LoRA meta-training (`objectives.DocDistillation`, full-vocabulary KL; AdamW,
             clipping) at gin_configs/d2l_270m.gin's shapes: batch 8, one 256-token chunk,
             teacher 320 tokens, student 48, 12 answer tokens; d2l_small hypernetwork.
  t2l_sft    Text-to-LoRA SFT meta-training (`objectives.TaskSFT`) at t2l_270m.gin's shapes:
             batch 8 x 48 tokens, 16 answer tokens; t2l_small (L head).
  lora_sft   one shared rank-8 down_proj LoRA trained directly (`context_distillation.make_step`,
             cross-entropy), batch 8 x 256 tokens, 32 answer tokens.

Run: python -m benchmarks.mfu [--rounds 3] [--peak_n 4096]
Writes benchmarks/results/mfu.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from lora_hyper.baselines import context_distillation as cd
from lora_hyper.data import fictional, pipeline, tasks
from lora_hyper.hypernetworks import doc_to_lora, task_encoders, text_to_lora
from lora_hyper.prompts import task_prompt
from lora_hyper.training import objectives, optimizer, step as step_lib


def log(*args):
  print(*args, file=sys.stderr, flush=True)


def meta_step(objective, variables, batch, params, rounds_state):
  opt_cfg = optimizer.OptimizerConfig(learning_rate=1e-4, warmup_steps=10, total_steps=1000)
  tx = optimizer.make_optimizer(opt_cfg)
  train_step = step_lib.make_train_step(objective, tx, optimizer.learning_rate_schedule(opt_cfg))
  state = step_lib.create_state(variables, tx)
  flops = common.matmul_flops(train_step, state, params, batch)
  jitted = jax.jit(train_step, donate_argnums=(0,))
  rounds_state["state"] = state

  def run():
    rounds_state["state"], metrics = jitted(rounds_state["state"], params, batch)
    return metrics["loss"]

  return run, flops


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--peak_n", type=int, default=4096)
  args = parser.parse_args()

  model = common.base()
  cfg, params, tok = model.config, model.params, model.tokenizer
  stack = lambda examples: {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}

  # Doc-to-LoRA meta-training at d2l_270m.gin's shapes.
  d2l = doc_to_lora.d2l_small(cfg, chunk_len=256, max_chunks=8, experimental=common.D2L_OPTIONS)
  doc_shapes = pipeline.DocExampleShapes(num_chunks=1, student_len=48, teacher_len=320, answer_len=12)
  source = fictional.FictionalQA(num_docs=8)
  d2l_batch = stack([pipeline.doc_example(source[i * fictional.FACTS_PER_DOC], tok, d2l, doc_shapes)
                     for i in range(8)])
  d2l_run, d2l_flops = meta_step(objectives.DocDistillation(d2l, loss="kl"), doc_to_lora.init(d2l, jax.random.key(0)),
                                 d2l_batch, params, {})

  # Text-to-LoRA SFT at t2l_270m.gin's shapes (descriptions embedded once by the frozen base).
  t2l = text_to_lora.t2l_small(cfg)
  task_list = tasks.all_tasks()[:8]
  records = [tasks.TaskExamples([t], num_examples_per_task=1)[0] for t in task_list]
  encoder = task_encoders.BaseModelEncoder(params, cfg, tok)
  embeddings = dict(zip([r["description"] for r in records], np.asarray(encoder([r["description"] for r in records]))))
  task_shapes = pipeline.TaskExampleShapes(seq_len=48, answer_len=16)
  t2l_batch = stack([pipeline.task_example(r, tok, embeddings, cfg.bos_id, cfg.eos_id, cfg.pad_id, task_shapes,
                                           task_prompt) for r in records])
  t2l_run, t2l_flops = meta_step(objectives.TaskSFT(t2l), text_to_lora.init(t2l, jax.random.key(0)), t2l_batch,
                                 params, {})

  # A plain shared LoRA SFT step.
  b, t, a = 8, 256, 32
  ids = np.random.default_rng(0).integers(1000, 30000, (b, t)).astype(np.int32)
  lora_batch = {"tokens": jnp.asarray(ids), "mask": jnp.ones((b, t), bool),
                "logits_at": jnp.asarray(np.tile(np.arange(t - a - 1, t - 1, dtype=np.int32), (b, 1))),
                "loss_mask": jnp.ones((b, a), bool), "targets": jnp.asarray(ids[:, t - a:])}
  tx = optax.adam(1e-4)
  lora_step = cd.make_step(cfg, 2.0, "ce", tx)
  w = dict(cd.init_adapter(jax.random.key(0), cfg, ("down",), 8, scaling=2.0).weights)
  lora_state = [w, tx.init(w)]
  lora_flops = common.matmul_flops(lora_step, *lora_state, params, lora_batch)

  def lora_run():
    lora_state[0], lora_state[1], loss = lora_step(*lora_state, params, lora_batch)
    return loss

  n = args.peak_n
  x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  y = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot_gflop = 2 * n**3 / 1e9
  runs = {"d2l_meta": (d2l_run, d2l_flops), "t2l_sft": (t2l_run, t2l_flops), "lora_sft": (lora_run, lora_flops)}
  for fn in [lambda: dot(x, y)] + [r for r, _ in runs.values()]:
    jax.block_until_ready(fn())  # compile and warm up
  # Each step is timed between two timings of the dot: the peak it is compared with is the one
  # measured under the same background load (this machine is shared), and the MFU of a round is
  # (step GFLOP/s) / (mean of the two dots' GFLOP/s). Reported: the median over rounds.
  samples = {name: {"step_s": [], "peak_gflops": [], "mfu": []} for name in runs}
  for _ in range(args.rounds):
    for name, (fn, flops) in runs.items():
      before, _ = common.timed(lambda: dot(x, y))
      step_s, _ = common.timed(fn)
      after, _ = common.timed(lambda: dot(x, y))
      peak = (dot_gflop / before + dot_gflop / after) / 2
      samples[name]["step_s"].append(step_s)
      samples[name]["peak_gflops"].append(peak)
      samples[name]["mfu"].append(flops / step_s / 1e9 / peak)
  steps = {}
  for name, (_, flops) in runs.items():
    sm = samples[name]
    s = statistics.median(sm["step_s"])
    steps[name] = {"seconds": s, "range_s": [min(sm["step_s"]), max(sm["step_s"])],
                   "matmul_gflops": flops / 1e9, "achieved_gflops": flops / s / 1e9,
                   "peak_gflops_paired": statistics.median(sm["peak_gflops"]),
                   "mfu": statistics.median(sm["mfu"]), "mfu_rounds": sm["mfu"],
                   "mfu_best_vs_best": flops / min(sm["step_s"]) / 1e9 / max(sm["peak_gflops"])}
    log(f"{name}: {s:.2f}s, {flops / 1e9:.0f} GFLOP, {flops / s / 1e9:.0f} GFLOP/s, MFU {steps[name]['mfu']:.2f}")
  common.write_result("mfu", {
      "model": model.name, "dtype": "float32", "rounds": args.rounds, "remat": cfg.remat,
      "matmul_peak": {"n": n, "gflops_best": max(max(v["peak_gflops"]) for v in samples.values()),
                      "how": "float32 jnp.dot, timed just before and after every step (paired)"},
      "steps": steps,
      "goal": "meta-training step MFU >= 50% of the measured matmul peak",
      "d2l_meta_mfu": steps["d2l_meta"]["mfu"],
  })


if __name__ == "__main__":
  main()
