"""Update latency: how long it takes to turn a document (or a task) into an adapter.

1. Doc-to-LoRA `internalize` (tokenize, chunk, encode with the frozen base, Perceiver, heads;
   batched, iterative, and the paper's `early_exit` context encoder; and the shipped, trained
   hypernetwork, as the README's main job runs it) against gradient context distillation, the
   paper's oracle setting (`lora_hyper.baselines.context_distillation.distill`: the teacher, base
   model with the document, answers the query greedily; then Adam steps on a fresh rank-8
   down_proj LoRA so the student without the document matches the teacher's answer
   distribution), at equal lengths.
2. Text-to-LoRA `generate_adapter` (embed the description with the base model, hypernetwork)
   against training a rank-8 q/v LoRA on the task's examples (cross-entropy, Adam, batch 8).

The d2l_small / t2l_small hypernetworks are untrained (random init): latency does not depend on
their weights. The shipped one (`lora_hyper/pretrained/d2l_gemma3_270m`: d2l_compact, early exit,
128-token chunks, B-only heads, chunk gates) is what a user's `internalize` runs.
Compilation is excluded on both sides (every contender is warmed up or compiled ahead of time
first; context distillation's compile time is reported apart). Contenders alternate on this
shared machine: hypernetwork rounds run before and after each baseline run, and their median
over all rounds is used.

The baselines' gradient steps are identical compiled calls (the student never sees the
document), so by default `--timed_steps` of them are run and timed and the full count is
extrapolated linearly (`*_extrapolated`); `--full` runs every step.

Run: python -m benchmarks.update_latency [--lengths 256 512 1024 2048] [--cd_steps 300]
       [--task_steps 100] [--timed_steps 30] [--full] [--rounds 2]
Writes benchmarks/results/update_latency.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import jax
import numpy as np

from benchmarks import common
from lora_hyper.baselines import context_distillation as cd
from lora_hyper.data import pipeline, tasks
from lora_hyper.hypernetworks import doc_to_lora, saved, task_encoders, text_to_lora
from lora_hyper.prompts import query_prompt, task_answer, task_prompt


def log(*args):
  print(*args, file=sys.stderr, flush=True)


def _merge(*timings: dict) -> dict:
  """Median over the rounds of several `common.interleaved` calls."""
  out = {}
  for name in timings[0]:
    samples = [t[name]["median_s"] for t in timings]
    out[name] = {"median_s": statistics.median(samples), "min_s": min(t[name]["min_s"] for t in timings),
                 "max_s": max(t[name]["max_s"] for t in timings)}
  return out


def doc_to_lora_vs_distillation(args, model, shipped: saved.SavedHypernetwork) -> list[dict]:
  cfg, params, tok = model.config, model.params, model.tokenizer
  hyper = doc_to_lora.d2l_small(cfg, experimental=common.D2L_OPTIONS)
  hyper_variables = doc_to_lora.init(hyper, jax.random.key(0))
  # The paper's needle-in-a-haystack variant: one activation layer (L // 4) feeds every layer's LoRA,
  # so the base runs only its first L // 4 layers and the Perceiver runs once per chunk.
  exit_hyper = doc_to_lora.d2l_small(cfg, context_encoder="early_exit", experimental=common.D2L_OPTIONS)
  exit_variables = doc_to_lora.init(exit_hyper, jax.random.key(0))
  setups = {"batched": (hyper, hyper_variables, False), "iterative": (hyper, hyper_variables, True),
            "early_exit": (exit_hyper, exit_variables, False),
            "shipped": (shipped.config, shipped.variables, False)}
  settings = cd.DistillConfig(steps=args.cd_steps if args.full else args.timed_steps,
                              max_answer_tokens=args.answer_tokens)
  rows = []
  for length in args.lengths:
    ids, record = common.document_tokens(tok, length)
    text = tok.decode(ids)
    doc_tokens = len(tok.encode(text, add_bos=False))
    chunks = doc_to_lora.chunk_documents([tok.encode(text, add_bos=False)], config=hyper)
    contenders = {mode: (lambda h=h, hv=hv, it=it: doc_to_lora.internalize(hv, params, text, config=h, tokenizer=tok,
                                                                          iterative=it))
                  for mode, (h, hv, it) in setups.items()}
    before = common.interleaved(contenders, args.rounds)
    context = tok.encode(text + "\n\n", add_bos=False)
    prompt = tok.encode(query_prompt(record["query"]), add_bos=False)
    result = cd.distill(params, cfg, context, prompt, settings=settings, stop_ids=tok.stop_ids)
    after = common.interleaved(contenders, args.rounds, warmup=0)
    d2l = _merge(before, after)
    t = result.timings
    step_s = t.steps_s / settings.steps
    cd_s = t.answer_s + t.teacher_s + step_s * args.cd_steps
    row = {
        "doc_tokens": doc_tokens, "chunks": chunks.tokens.shape[1], "chunk_array_len": chunks.tokens.shape[2],
        "d2l_batched_s": d2l["batched"], "d2l_iterative_s": d2l["iterative"], "d2l_early_exit_s": d2l["early_exit"],
        "d2l_shipped_s": d2l["shipped"],
        "cd": {"steps": args.cd_steps, "timed_steps": settings.steps, "answer_tokens": len(result.answer),
               "compile_s": t.compile_s, "answer_s": t.answer_s, "teacher_s": t.teacher_s, "step_s": step_s,
               "update_s": cd_s, "update_s_is": "measured" if args.full else "extrapolated",
               "kl_first": float(result.losses[0]), "kl_last_timed": float(result.losses[-1])},
        "speedup_batched": cd_s / d2l["batched"]["median_s"],
        "speedup_iterative": cd_s / d2l["iterative"]["median_s"],
        "speedup_early_exit": cd_s / d2l["early_exit"]["median_s"],
        "speedup_shipped": cd_s / d2l["shipped"]["median_s"],
    }
    log(f"doc {doc_tokens}: d2l {d2l['batched']['median_s']:.3f}s / {d2l['iterative']['median_s']:.3f}s / "
        f"{d2l['early_exit']['median_s']:.3f}s / shipped {d2l['shipped']['median_s']:.3f}s, "
        f"cd {cd_s:.1f}s (step {step_s:.3f}s) -> {row['speedup_batched']:.0f}x")
    rows.append(row)
  return rows


def text_to_lora_vs_task_lora(args, model) -> dict:
  cfg, params, tok = model.config, model.params, model.tokenizer
  hyper = text_to_lora.t2l_small(cfg)
  hyper_variables = text_to_lora.init(hyper, jax.random.key(0))
  encoder = task_encoders.BaseModelEncoder(params, cfg, tok)
  task = tasks.get_task(args.task)
  description = task.descriptions[0]
  contenders = {"t2l": lambda: text_to_lora.generate_adapter(hyper_variables, description, config=hyper,
                                                             encoder=encoder)}
  before = common.interleaved(contenders, args.rounds * 2)

  source = tasks.TaskExamples([task], num_examples_per_task=args.task_examples)
  # The tightest fixed shapes for these examples (no wasted padding in the baseline's steps).
  records = [source[i] for i in range(len(source))]
  answers = [len(tok.encode(task_answer(r["output"]), add_bos=False)) for r in records]
  prompts = [1 + len(tok.encode(task_prompt(r["input"]), add_bos=False)) for r in records]
  shapes = pipeline.TaskExampleShapes(seq_len=max(p + a for p, a in zip(prompts, answers)), answer_len=max(answers))
  examples = [pipeline.sft_example(r, tok, cfg.bos_id, cfg.eos_id, cfg.pad_id, shapes, task_prompt)
              for r in records]
  stack = lambda k: np.stack([e[k] for e in examples])
  batch = {"tokens": stack("student_tokens"), "mask": stack("student_mask"), "logits_at": stack("student_logits_at"),
           "loss_mask": stack("loss_mask"), "targets": stack("targets")}
  steps = args.task_steps if args.full else args.timed_steps
  adapter = cd.init_adapter(jax.random.key(1), cfg, hyper.modules, hyper.rank, scaling=hyper.scaling)
  result = cd.fit(params, cfg, adapter, batch, objective="ce", steps=steps, learning_rate=1e-3,
                  batch_size=args.task_batch)
  after = common.interleaved(contenders, args.rounds * 2, warmup=0)
  t2l = _merge(before, after)["t2l"]
  step_s = result.steps_s / steps
  lora_s = step_s * args.task_steps
  out = {"task": task.task_id, "description": description, "t2l_s": t2l,
         "task_lora": {"modules": list(hyper.modules), "rank": hyper.rank, "batch": args.task_batch,
                       "seq_len": shapes.seq_len, "steps": args.task_steps, "timed_steps": steps,
                       "compile_s": result.compile_s, "step_s": step_s, "update_s": lora_s,
                       "update_s_is": "measured" if args.full else "extrapolated",
                       "loss_first": float(result.losses[0]), "loss_last_timed": float(result.losses[-1])},
         "speedup": lora_s / t2l["median_s"]}
  log(f"t2l {t2l['median_s']:.3f}s vs task LoRA {lora_s:.1f}s -> {out['speedup']:.0f}x")
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", type=int, nargs="+", default=[255, 511, 1023, 2046],
                      help="document tokens; BOS + 255/511/1023 fill a power-of-two chunk array exactly")
  parser.add_argument("--cd_steps", type=int, default=300, help="the paper's oracle: 300 steps")
  parser.add_argument("--answer_tokens", type=int, default=16, help="most tokens of the teacher's answer")
  parser.add_argument("--task", default="string/uppercase")
  parser.add_argument("--task_examples", type=int, default=64)
  parser.add_argument("--task_batch", type=int, default=8)
  parser.add_argument("--task_steps", type=int, default=100)
  parser.add_argument("--timed_steps", type=int, default=30)
  parser.add_argument("--full", action="store_true", help="run every baseline step instead of extrapolating")
  parser.add_argument("--rounds", type=int, default=2, help="hypernetwork rounds before and after each baseline")
  args = parser.parse_args()

  model = common.base()
  shipped = saved.load_hypernetwork(saved.shipped("doc_to_lora", "needle"), model)
  doc = doc_to_lora_vs_distillation(args, model, shipped)
  task = text_to_lora_vs_task_lora(args, model)
  common.write_result("update_latency", {
      "model": model.name, "dtype": "float32",
      "hypernetworks": "d2l_small (per-layer activations; and its early_exit variant) / t2l_small (L head), "
                       "random init (untrained: latency only); and the shipped Doc-to-LoRA",
      "shipped_hypernetwork": {**shipped.describe(), "context_encoder": shipped.config.context_encoder,
                               "chunk_len": shipped.config.chunk_len, "rank": shipped.config.rank,
                               "generated_factors": shipped.config.experimental.generated_factors},
      "doc_to_lora_vs_context_distillation": doc, "text_to_lora_vs_task_lora": task,
      "goal": "internalize >= 200x faster than context distillation at equal document length",
      "min_speedup_batched": min(r["speedup_batched"] for r in doc),
  })


if __name__ == "__main__":
  main()
