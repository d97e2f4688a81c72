"""Renders the latest results (benchmarks/results/*.json) as the markdown tables of
benchmarks/README.md. Run: python -m benchmarks.report [--write] (--write updates the README
between its results markers; without it the tables are printed)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def load(name: str) -> dict | None:
  path = RESULTS / f"{name}.json"
  return json.loads(path.read_text()) if path.exists() else None


def yes(ok: bool) -> str:
  return "**met**" if ok else "**missed**"


def fmt_s(s: float) -> str:
  return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.1f} s"


# gpu.json runs from before the shipped hypernetwork was added measured d2l_small alone and do not
# name it: their internalize rows lack "hypernetwork" and their speedup keys are the mode alone.
UNNAMED_GPU_HYPERNETWORK = "d2l_small"


def memory_run() -> dict | None:
  """benchmarks/results/memory.json. Runs from before the window-aware cache (issue 66) named the full cache
  (every layer, every position) "ours" and the window-aware one "windowed": renamed here to today's names."""
  d = load("memory")
  if not d or "kv_full" in d["answer_time"][0]["computed_mb"]:
    return d
  for r in d["answer_time"]:
    c, ratio = r["computed_mb"], r["ratio_adapter_to_kv"]
    r["computed_mb"] = {**c, "kv_ours": c["kv_windowed"], "kv_ours_bf16": c["kv_windowed_bf16"],
                        "kv_full": c["kv_ours"], "kv_full_bf16": c["kv_ours_bf16"]}
    r["ratio_adapter_to_kv"] = {"ours": ratio["windowed"], "full": ratio["ours"],
                                "chunk8192_vs_ours": ratio["chunk8192_vs_windowed"]}
    if "measured_mb" in r:  # the cache built then was the full one
      m = r["measured_mb"]
      r["measured_mb"] = {"adapter_chunk1024": m["adapter_chunk1024"], "kv_full": m["kv_ours"]}
  d["ratio_at_128k"] = d["answer_time"][-1]["ratio_adapter_to_kv"]
  return d


def decode_run() -> dict | None:
  """benchmarks/results/decode_latency.json. Runs from before the window-aware cache (issue 66) decoded
  "in_context" from the full cache: renamed here to "in_context_full", their window-aware figures absent."""
  d = load("decode_latency")
  if not d or "in_context_full" in d["rows"][0]["ms_per_token"]:
    return d
  rename = lambda x: {k.replace("in_context", "in_context_full"): v for k, v in x.items()}
  for r in d["rows"]:
    r.update(rename({k: r.pop(k) for k in ("in_context_over_adapter",)}), ms_per_token=rename(r["ms_per_token"]))
  for r in d.get("computed", []):
    r.update(rename({k: r.pop(k) for k in ("in_context_over_adapter",)}), gflop_per_token=rename(r["gflop_per_token"]))
  d.update(rename({k: d.pop(k) for k in ("in_context_growth_first_to_last",)}))
  if "computed_at_128k" in d:
    d["computed_at_128k"] = rename(d["computed_at_128k"])
  return d


def fmt(value: float | None, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def gpu_run() -> dict | None:
  """benchmarks/results/gpu.json, unless it is missing or holds a CPU smoke run."""
  d = load("gpu")
  return d if d and not d.get("smoke") else None


def gpu_cd_rows(d: dict) -> list[dict]:
  """The context-distillation rows of a GPU run that were measured (a failed one has no speedup)."""
  return [r for r in d.get("cd", []) if "speedup" in r]


def gpu_hypernetwork(row: dict) -> str:
  return row.get("hypernetwork", UNNAMED_GPU_HYPERNETWORK)


def gpu_label(key: str) -> str:
  """A Doc-to-LoRA contender of gpu.json: 'HYPERNETWORK MODE'."""
  return key if " " in key else f"{UNNAMED_GPU_HYPERNETWORK} {key}"


def gpu_speedups(row: dict) -> str:
  return ", ".join(f"{gpu_label(k)} {v:.0f}x" for k, v in row["speedup"].items())


def scaling_run(d: dict | None) -> dict | None:
  """The latest code path of benchmarks/results/internalize_scaling.json ("after" if recorded)."""
  if not d or not d.get("runs"):
    return None
  return d["runs"].get("after") or d["runs"][d["label"]]


def new_length_compile(row: dict, path: str = "") -> float:
  """Compile time of internalize_scaling's first call on a length one chunk longer: that call less a warm one."""
  warm = row["one_batch_s" if path else "internalize_s"]["median_s"]
  return row[f"{path}new_length_s"] - warm


def compile_summary(run: dict) -> str:
  """A new chunk count's compile on each path: timed ahead of time if recorded (`--compile_only`), else
  first call less a warm one."""
  c = run.get("compiles")
  if not c:
    return "compile for a length one chunk longer " + ", ".join(
        f"{fmt_s(new_length_compile(r))} (was {fmt_s(new_length_compile(r, 'one_batch_'))})" for r in run["rows"])
  groups = sorted({float(v) for r in c["rows"] for v in r["group_s"].values() if v > 0.1})
  return ("compile for a new chunk count (ahead of time): " + ", ".join(
      f"{fmt_s(r['assemble_s'])} (was {fmt_s(r['one_batch_s'])})" for r in c["rows"])
      + f", plus {fmt_s(groups[0])}-{fmt_s(groups[-1])} for each group size the first time it runs (at most 8)"
      if groups else "")


def summary() -> list[str]:
  """One row per goal of issue 8: what was measured, the target, met or missed, the command."""
  rows = ["| # | goal | target | latest result | verdict | command |", "|---|---|---|---|---|---|"]
  d = load("update_latency")
  if d:
    doc = d["doc_to_lora_vs_context_distillation"]
    worst = min(r["speedup_batched"] for r in doc)
    speedups = ", ".join(f"{r['doc_tokens']}: {r['speedup_batched']:.0f}x" for r in doc)
    if "speedup_early_exit" in doc[0]:
      speedups += "; early-exit encoder " + ", ".join(f"{r['speedup_early_exit']:.0f}x" for r in doc)
    verdict = yes(worst >= 200)
    if "speedup_shipped" in doc[0]:
      speedups += "; the shipped hypernetwork " + ", ".join(f"{r['speedup_shipped']:.0f}x" for r in doc)
      if worst < 200 and min(r["speedup_shipped"] for r in doc) >= 200:
        verdict = "**met** by the shipped hypernetwork, **missed** by d2l_small's per-layer encoder"
    rows.append(f"| 1a | update latency: Doc-to-LoRA `internalize` vs context distillation "
                f"({doc[0]['cd']['steps']} Adam steps), per document length (tokens) | >= 200x at every length "
                f"| {speedups} | {verdict} | `{d['command']}` |")
    t = d["text_to_lora_vs_task_lora"]
    rows.append(f"| 1b | update latency: Text-to-LoRA vs training a LoRA on the task ({t['task_lora']['steps']} steps) "
                f"| ratio reported (no target) | {t['speedup']:.0f}x | - | `{d['command']}` |")
  d = load("internalize_scaling")
  run = scaling_run(d)
  if run:
    rs = run["rows"]
    ratios = ", ".join(f"{r['doc_tokens']}: {r['ratio_to_floor']:.2f}x" for r in rs)
    text = f"{ratios}"
    if "one_batch_ratio_to_floor" in rs[0]:
      text += ("; the one-program path it replaced, same rounds, "
               + ", ".join(f"{r['one_batch_ratio_to_floor']:.2f}x" for r in rs)
               + "; " + compile_summary(run))
    rows.append(f"| 1c | Doc-to-LoRA `internalize` on long documents (the shipped hypernetwork) / its floor, the jitted "
                f"first L/4 base layers over the same chunks, per length (tokens) | ratio reported, the closer to 1 "
                f"the better | {text} | - | `{run['command']}` |")
  d = memory_run()
  if d:
    r = d["ratio_at_128k"]
    rows.append(f"| 2a | adapter / KV cache of the document at 128K tokens (computed from shapes; measured "
                f"{', '.join(str(x['doc_tokens']) for x in d['answer_time'] if 'measured_mb' in x)} agree) | <= 0.10 "
                f"| our window-aware cache {r['ours']:.3f} (8K-token chunks: {r['chunk8192_vs_ours']:.3f}); "
                f"the full cache (every layer, every position) {r['full']:.3f} "
                f"| {yes(r['ours'] <= 0.1)} vs our cache ({yes(r['full'] <= 0.1)} vs the full one) "
                f"| `{d['command']}` |")
    both = [x for x in d["update_peak_xla"] if "cd" in x]
    last = both[-1]
    rows.append(f"| 2b | peak update memory beyond the resident params, {last['doc_tokens']} tokens (XLA buffer "
                f"assignment) | reported (no target) | Doc-to-LoRA batched {last['d2l_batched']['peak_extra_mb']:.0f} MiB, "
                f"iterative {last['d2l_iterative']['peak_extra_mb']:.0f} MiB; context distillation "
                f"{last['cd']['peak_extra_mb']:.0f} MiB | - | `{d['command']}` |")
  d = decode_run()
  if d:
    first, last = d["rows"][0]["ms_per_token"], d["rows"][-1]["ms_per_token"]
    growth = lambda name: (f"{name.replace('_', ' ').replace('in context full', 'in the full cache')} "
                           f"{first[name]:.0f} -> {last[name]:.0f} ({d[name + '_growth_first_to_last']:.2f}x)")
    measured = "; ".join(growth(k) for k in ("adapter", "in_context", "in_context_full") if k in first)
    c = d.get("computed_at_128k")
    computed = ""
    if c:
      computed = f"; computed at 128K: adapter {c['adapter_over_bare']:.2f}x the bare model's FLOPs/token"
      labels = (("in_context_over_adapter", "in context"), ("in_context_full_over_adapter", "in the full cache"))
      computed += "".join(f", {label} {c[key]:.1f}x the adapter's" for key, label in labels if key in c)
    rows.append(f"| 3 | decode ms/token with an adapter as the document grows {d['rows'][0]['doc_tokens']} -> "
                f"{d['rows'][-1]['doc_tokens']} tokens | flat (within 10%) | {measured}{computed} "
                f"| {yes(d['adapter_growth_first_to_last'] <= 1.1)} (measured lengths) | `{d['command']}` |")
  d = load("forward")
  if d:
    s = d["speedup_vs_torch"]
    rows.append(f"| 4a | jitted forward vs transformers, {d['tokens']} tokens (torch time / ours) | >= 1.0x "
                f"| all logits {s['all_logits']:.2f}x, last logit {s['last_logit']:.2f}x "
                f"| {yes(min(s['all_logits'], s['last_logit']) >= 1.0)} | `{d['command']}` |")
  d = load("train_step")
  if d:
    parts = "; ".join(f"{r['batch']}x{r['tokens']}: {r['speedup']['goal_jax_answer_vs_torch_all']:.2f}x"
                      for r in d["rows"])
    like = "; ".join(f"{r['batch']}x{r['tokens']}: {r['speedup']['like_for_like_answer']:.2f}x / "
                     f"{r['speedup']['like_for_like_all']:.2f}x" for r in d["rows"])
    rows.append(f"| 4b | LoRA train step, ours (logits only at the answers) vs transformers + PEFT (all logits), "
                f"batch x tokens | >= 1.5x | {parts} (like for like, answer / all logits: {like}) "
                f"| {yes(d['min_goal_speedup'] >= 1.5)} | `{d['command']}` |")
  d = load("mfu")
  if d:
    s = d["steps"]
    rows.append(f"| 5 | meta-training step MFU vs the measured `jnp.dot` peak (CPU) | >= 0.50 "
                f"| Doc-to-LoRA {s['d2l_meta']['mfu']:.2f} (T2L SFT {s['t2l_sft']['mfu']:.2f}, plain LoRA SFT "
                f"{s['lora_sft']['mfu']:.2f}) | {yes(s['d2l_meta']['mfu'] >= 0.5)} | `{d['command']}` |")
  d = load("per_example_adapters")
  if d:
    parts = "; ".join(f"rank {r['rank']}: prefill {r['prefill_ratio_per_example_to_merged']:.2f}x, decode "
                      f"{r['decode_ratio_per_example_to_merged']:.2f}x" for r in d["rows"])
    rows.append(f"| 6 | per-example adapters vs one shared merged adapter, batch {d['batch']} (throughput ratio) "
                f"| >= 0.8x | {parts} | {yes(d['min_ratio'] >= 0.8)} | `{d['command']}` |")
  d = gpu_run()
  smoke = load("gpu_smoke")
  if d:
    tr = d.get("train", {})
    measured = [r for r in d["internalize"] if "seconds" in r]
    if measured:
      longest = max(measured, key=lambda r: r["doc_tokens"])
      at_longest = {r["mode"]: r for r in measured
                    if r["doc_tokens"] == longest["doc_tokens"] and gpu_hypernetwork(r) == gpu_hypernetwork(longest)}
      internalized = (f"internalize {longest['doc_tokens']} tokens "
                      + " / ".join(f"{m} {fmt_s(r['seconds'])}" for m, r in at_longest.items()))
    else:  # every internalize measurement failed; gpu.json holds each error
      internalized = "internalize: no measurement succeeded (errors in gpu.json)"
    cd = "; ".join(f"{r['doc_tokens']}: {gpu_speedups(r)}" for r in gpu_cd_rows(d))
    rows.append(f"| 7 | GPU script: internalize 8K-128K, vs context distillation, train-step throughput and MFU "
                f"(sized for one H200) | runs in < 8 min | {d['elapsed_s']:.0f} s on {d['machine'].get('device_kind')} "
                f"({d['dtype']}): {internalized}"
                f"; vs context distillation ({d['sizes']['cd_steps']} steps) {cd}; train step "
                f"{tr.get('tokens_per_s', float('nan')) / 1e3:.0f}K tokens/s, MFU {tr.get('mfu') or float('nan'):.2f} "
                f"of the measured {d['dtype']} `jnp.dot` "
                f"| {yes(d['elapsed_s'] < 480 and bool(d.get('done')))} (runs in time) "
                "| `python -m benchmarks.gpu --out $OUT/gpu.json` |")
  else:
    rows.append("| 7 | GPU script: internalize 8K-128K, train-step throughput and MFU (one H200) | runs in < 8 min "
                "| **not run on a GPU yet**" + (f"; CPU smoke run passes ({smoke['elapsed_s']:.0f} s)" if smoke else "")
                + " | - | `python -m benchmarks.gpu --out $OUT/gpu.json` (smoke: `python -m benchmarks.gpu --smoke`) |")
  return rows


def crossover(lengths: list[float], ratios: list[float], target: float) -> float | None:
  """The length where the ratio falls to `target`, interpolated on log-log axes (None if never)."""
  for (l0, r0), (l1, r1) in zip(zip(lengths, ratios), zip(lengths[1:], ratios[1:])):
    if r0 >= target > r1:
      f = math.log(r0 / target) / math.log(r0 / r1)
      return math.exp(math.log(l0) + f * math.log(l1 / l0))
  return None


def notes() -> list[str]:
  """Where a goal is missed (or only just met), the numbers that say why, from the same JSON files."""
  out = []
  d = load("update_latency")
  if d:
    doc = d["doc_to_lora_vs_context_distillation"]
    a, z = doc[0], doc[-1]
    cd_fixed = z["cd"]["answer_s"] + z["cd"]["teacher_s"]
    cross = crossover([r["doc_tokens"] for r in doc], [r["speedup_batched"] for r in doc], 200)
    text = (f"- **1a.** Context distillation costs about the same at every length: its student never reads the "
            f"document, and the teacher's answer and logits are computed once ({fmt_s(cd_fixed)} of "
            f"{fmt_s(z['cd']['update_s'])} at {z['doc_tokens']} tokens), so its {z['cd']['steps']} Adam steps "
            f"({fmt_s(z['cd']['step_s'])} each) dominate. `internalize` runs the frozen base over the whole document "
            f"and the Perceiver over every layer's activations, so it grows with the length "
            f"({fmt_s(a['d2l_batched_s']['median_s'])} at {a['doc_tokens']} tokens, "
            f"{fmt_s(z['d2l_batched_s']['median_s'])} at {z['doc_tokens']}) and the ratio falls "
            f"({a['speedup_batched']:.0f}x to {z['speedup_batched']:.0f}x)")
    if cross:
      text += f"; on this machine 200x holds up to about {cross:.0f} tokens"
    if "speedup_early_exit" in z:
      text += (f". The paper's early-exit encoder (one activation layer: the base runs its first L/4 layers) is "
               f"{z['speedup_early_exit']:.0f}x at {z['doc_tokens']} tokens")
      cross_ee = crossover([r["doc_tokens"] for r in doc], [r["speedup_early_exit"] for r in doc], 200)
      if cross_ee:
        text += f" (200x up to about {cross_ee:.0f} tokens)"
    if "speedup_shipped" in z:
      shipped = d["shipped_hypernetwork"]
      worst_shipped = min(r["speedup_shipped"] for r in doc)
      text += (f". The shipped hypernetwork (trained; early exit, {shipped['chunk_len']}-token chunks, so no chunk's "
               f"attention is long) takes {fmt_s(a['d2l_shipped_s']['median_s'])} at {a['doc_tokens']} tokens and "
               f"{fmt_s(z['d2l_shipped_s']['median_s'])} at {z['doc_tokens']}: "
               f"{worst_shipped:.0f}x at the worst length (its slowest round: "
               f"{min(r['cd']['update_s'] / r['d2l_shipped_s']['max_s'] for r in doc):.0f}x)")
      cross_shipped = crossover([r["doc_tokens"] for r in doc], [r["speedup_shipped"] for r in doc], 200)
      if cross_shipped:
        text += f" (200x up to about {cross_shipped:.0f} tokens)"
      elif worst_shipped >= 200:
        text += ("; it still grows with the length where context distillation does not, so past the longest "
                 "length measured the ratio falls below 200x")
    out.append(text + ". Both sides run float32 on 2 CPU cores; context distillation's count is extrapolated from "
               f"{z['cd']['timed_steps']} timed steps (identical compiled calls) unless `--full`.")
  d = load("internalize_scaling")
  run = scaling_run(d)
  if run and "one_batch_ratio_to_floor" in run["rows"][0]:
    rs = run["rows"]
    per = lambda key: ", ".join(f"{fmt_s(r[key]['median_s'])}" for r in rs)
    ratios = lambda key: ", ".join(f"{r[key]:.2f}x" for r in rs)
    text = (f"- **1c.** The shipped hypernetwork reads a document through its first {d['shipped_hypernetwork']['feature_layer']} "
            f"base layers over {d['shipped_hypernetwork']['chunk_len']}-token chunks; that forward, jitted alone over "
            f"the same chunks, is the floor ({per('floor_s')} at {', '.join(str(r['doc_tokens']) for r in rs)} tokens), "
            f"and `internalize` takes {per('internalize_s')}. Beyond the floor it runs the hypernetwork: the Perceiver "
            f"and heads on the features take {per('perceiver_heads_s')} (jitted apart; mostly the Perceiver's input "
            f"projection over every token, about a tenth of the floor's matmul work), and tokenizing and chunking "
            f"{', '.join(fmt_s(r['tokenize_s'] + r['chunk_s']) for r in rs)}. The previous `internalize` ran one "
            f"program over all [K, T] chunk slots, compiled for every chunk count K; it now runs the chunks in groups "
            f"of 8 and the rest as one group (at most 8 programs, each compiled once) and compiles only the adapter's "
            f"assembly for a new K ({compile_summary(run)}). Groups of 8 chunks also run faster than one batch of "
            f"all K here (presumably activations that fit the caches), so past 2K tokens `internalize` beats the floor as "
            f"defined, one batched program: steady-state it is "
            f"{ratios('ratio_to_floor')} the floor against {ratios('one_batch_ratio_to_floor')} for the "
            f"one-program path in the same rounds. The shipped config allows {d['shipped_hypernetwork']['max_chunks']} chunks; longer documents are "
            f"measured with `max_chunks` raised (no weight changes). Float32, 2 CPU cores shared with other jobs "
            f"(load {run['machine']['load_average_at_start'][0]:.1f} / {run['machine']['load_average_at_end'][0]:.1f}).")
    before = d["runs"].get("before")
    if before and before is not run:
      text += (" On the commit before the change (a separate run, `--label before`, its 16384 tokens measured "
               "while this project's tests also ran): "
               + ", ".join(f"{r['doc_tokens']}: {r['ratio_to_floor']:.2f}x" for r in before["rows"]) + ".")
    out.append(text)
  d = memory_run()
  if d:
    r = d["answer_time"][-1]
    c, ratio = r["computed_mb"], r["ratio_adapter_to_kv"]
    if ratio["ours"] > 0.1:
      out.append(f"- **2a.** Gemma 3 270M caches little: one KV head of 256, and 15 of its 18 layers attend over a "
                 f"512-token window, so our window-aware cache (as transformers keeps for Gemma 3) holds "
                 f"{c['kv_ours']:.0f} MiB at {r['doc_tokens']} tokens against the full cache's {c['kv_full']:.0f} MiB "
                 f"(every layer, every position). d2l_small adds rank 8 per 1,024-token chunk "
                 f"({c['adapter_chunk1024']:.0f} MiB at rank {r['adapter_rank']}): {ratio['ours']:.3f} of our cache "
                 f"(it was {ratio['full']:.3f} of the full one); with the paper's 8,192-token chunks it is "
                 f"{c['adapter_chunk8192']:.0f} MiB, {ratio['chunk8192_vs_ours']:.3f}.")
  d = decode_run()
  if d and d.get("computed"):
    c = d["computed"][-1]
    caches = " and ".join(f"{c[key]:.1f}x that again for the document in {label}" for key, label in
                          (("in_context_over_adapter", "our cache"), ("in_context_full_over_adapter", "the full cache"))
                          if key in c)
    out.append(f"- **3.** Measured up to {d['rows'][-1]['doc_tokens']} tokens (in-context prefill beyond that is too "
               f"slow here). The adapter's rank grows with the document (8 per chunk), so its per-token cost is not "
               f"exactly flat: computed at {c['doc_tokens']} tokens (rank {c['adapter_rank']}) it is "
               f"{c['adapter_over_bare']:.2f}x the bare model's matmul FLOPs per token, against {caches}.")
  f, t = load("forward"), load("train_step")
  if f:
    s = f["speedup_vs_torch"]
    worst = min(s["all_logits"], s["last_logit"])
    verdict = (f"ours {worst - 1:.0%} to {max(s['all_logits'], s['last_logit']) - 1:.0%} faster" if worst >= 1.0 else
               "parity within 5%, not a lead" if worst >= 0.95 else f"ours up to {1 / worst - 1:.0%} slower")
    out.append(f"- **4a.** The forward is the same float32 matmuls on both sides, and both run them at a similar "
               f"fraction of this machine's matmul peak (ours {f['fraction_of_peak']['jax_all_logits']:.2f}, PyTorch "
               f"{f['fraction_of_peak']['torch_all_logits']:.2f} with all logits): {s['all_logits']:.2f}x (all "
               f"logits) / {s['last_logit']:.2f}x (last logit) is {verdict}.")
  if t:
    parts = []
    for r in t["rows"]:
      g = r.get("matmul_gflop")
      work = f"{g['all_logits'] / g['answer_logits']:.2f}x less matmul work, " if g else ""
      parts.append(f"{r['batch']}x{r['tokens']}: {work}{r['speedup']['goal_jax_answer_vs_torch_all']:.2f}x in all; "
                   f"like for like {r['speedup']['like_for_like_answer']:.2f}x (answer logits) / "
                   f"{r['speedup']['like_for_like_all']:.2f}x (all logits)")
    like = min(r["speedup"]["like_for_like_answer"] for r in t["rows"])
    widest = min(t["rows"], key=lambda r: r["speedup"]["like_for_like_all"])
    parts_d = load("train_step_parts")
    parity = f is not None and min(f["speedup_vs_torch"]["all_logits"], f["speedup_vs_torch"]["last_logit"]) >= 0.95
    out.append("- **4b.** Two factors make the ratio: logits only at the answers cut the step's matmul work "
               "(counted from its jaxpr: forward + backward, no base-weight gradients on either side), and each "
               "framework's speed on the same work (like for like). Per shape: " + "; ".join(parts) + ". "
               + ("Like for like our jitted step is slower than PyTorch's eager one on this CPU, which takes back "
                  "part of the saved work" + (" (the forward alone is not slower, 4a: the gap is in the backward "
                                              "pass as XLA:CPU compiles it)" if parity else "") + ". "
                  if like < 1 else "")
               + (f"The gap is widest with 262,144-way logits at every position (all logits, {widest['batch']}x"
                  f"{widest['tokens']}: {widest['speedup']['like_for_like_all']:.2f}x); timed alone on those shapes "
                  f"({parts_d['positions']} positions, `train_step_parts.json`), each vocabulary-sized piece is slower "
                  "in ours too (torch time / ours): " + ", ".join(f"{k.replace('_', ' ')} {v:.2f}x"
                                                                  for k, v in parts_d["torch_over_ours"].items())
                  + "; the decoder's share of the gap was not broken down. " if parts_d else "")
               + "There is no PyTorch implementation of the hypernetworks' meta-training to compare with; this "
               "step (base + LoRA forward, backward, Adam) is the part of it both frameworks share.")
  d = load("mfu")
  if d:
    m = d["steps"]["d2l_meta"]
    out.append(f"- **5.** The Doc-to-LoRA step reaches {m['achieved_gflops']:.0f} GFLOP/s against a "
               f"{m['peak_gflops_paired']:.0f} GFLOP/s `jnp.dot` measured around it ({m['mfu']:.2f}; per round "
               + ", ".join(f"{x:.2f}" for x in m["mfu_rounds"]) + ")"
               + (": met by a hair, within the spread of the rounds" if m["mfu"] >= 0.5 > min(m["mfu_rounds"]) else "")
               + ". Elementwise work (softmax over the 262,144-token "
               "vocabulary for the KL, norms, Adam) is not counted as FLOPs.")
  d = load("per_example_adapters")
  if d:
    parts = []
    for r in d["rows"]:
      mb = r.get("mb_read_per_decode_step")
      reads = (f" (a decoding step reads {mb['base_params']:.0f} MiB of weights and {mb['per_example_adapters']:.0f} "
               f"MiB of per-example adapters: the reads alone predict "
               f"{mb['base_params'] / (mb['base_params'] + mb['per_example_adapters']):.2f}x)" if mb else "")
      parts.append(f"rank {r['rank']}: prefill {r['prefill_ratio_per_example_to_merged']:.2f}x, decode "
                   f"{r['decode_ratio_per_example_to_merged']:.2f}x{reads}")
    out.append("- **6.** Per-example adapters are never merged, so each example's A and B are read at every step: "
               "the cost grows with batch x rank. " + "; ".join(parts) + ". Rank 16 is a one-chunk document's "
               "adapter, rank 136 a 16K-token document's. Decoding one token per example is bound by memory reads "
               "on this CPU; where the measured ratio falls below the reads' prediction, the rest is the batched "
               "matrix-vector products of the per-example einsum. The model slices each layer's factors out of "
               "the adapters where they lie (`lora.layer_weights`): scanning over a layer-major copy instead "
               "copied every example's whole adapter at each decoding step. A merged adapter costs nothing per "
               "token but serves one document only.")
  d = gpu_run()
  if d:
    out.append(gpu_note(d))
  return out


def gpu_note(d: dict) -> str:
  cd = gpu_cd_rows(d)
  text = (f"- **7.** Run on {d['machine'].get('device_kind')} (jax {d['machine'].get('jax')}, {d['dtype']}, "
          f"{d['model']}), the kind of machine the session was lent; the script was sized for an H200, the same "
          "chip with more and faster memory.")
  if cd:
    below = sorted({gpu_label(k) for r in cd for k, v in r["speedup"].items() if v < 200})
    text += (" Against context distillation (1a's goal: 200x): "
             + "; ".join(f"{r['doc_tokens']} tokens {gpu_speedups(r)}" for r in cd) + ".")
    if below:
      text += (f" **Missed** by {', '.join(below)}: each of distillation's {cd[0]['cd_steps']} Adam steps runs the "
               f"model on a few dozen student tokens, {cd[0]['cd_steps_s'] / cd[0]['cd_steps'] * 1e3:.1f} ms a step "
               "whatever the document's length (on the CPU, 1a: hundreds of ms), while `internalize` reads the "
               "whole document, work the GPU speeds up far more than those small steps.")
    if all(r.get("kl_first") == 0.0 for r in cd):
      text += (" Random weights make the distillation loss 0 from its first step (the teacher and student "
               "predict alike); every step still runs, so the time is the real one.")
  if not any(r.get("hypernetwork") == "shipped" for r in d["internalize"]):
    text += (" This run has no rows for the shipped hypernetwork (early exit, 128-token chunks: 1a's hypernetwork "
             "that meets 200x on the CPU): it is not measured on a GPU yet.")
  return text


def gflops(row: dict) -> str:
  g = row.get("matmul_gflop")
  return "-" if not g else f"{g['answer_logits']:.0f} / {g['all_logits']:.0f}"


def first(row: dict, name: str) -> str:
  loss = row.get("first_loss", {}).get(name)
  return "-" if loss is None else f"{loss:.4f}"


def details() -> list[str]:
  out = []
  d = load("update_latency")
  if d:
    out += ["", "**1. Update latency** (d2l_small, untrained, and the shipped hypernetwork; context distillation: "
            f"teacher's greedy answer + {d['doc_to_lora_vs_context_distillation'][0]['cd']['steps']} Adam steps, "
            "rank-8 down_proj LoRA; step time measured over the timed steps, total extrapolated unless `--full`)", "",
            "| doc tokens | D2L batched | D2L iterative | D2L early-exit | D2L shipped | CD answer + teacher | CD step "
            "| CD total | speedup batched / early-exit / shipped |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in d["doc_to_lora_vs_context_distillation"]:
      c = r["cd"]
      timed = lambda key: fmt_s(r[f"d2l_{key}_s"]["median_s"]) if f"d2l_{key}_s" in r else "-"
      ratio = lambda key: "%.0fx" % r[f"speedup_{key}"] if f"speedup_{key}" in r else "-"
      out.append(f"| {r['doc_tokens']} | {timed('batched')} | {timed('iterative')} | {timed('early_exit')} "
                 f"| {timed('shipped')} | {fmt_s(c['answer_s'] + c['teacher_s'])} | {fmt_s(c['step_s'])} "
                 f"| {fmt_s(c['update_s'])} ({c['update_s_is']}) "
                 f"| {ratio('batched')} / {ratio('early_exit')} / {ratio('shipped')} |")
    t = d["text_to_lora_vs_task_lora"]
    tl = t["task_lora"]
    out += ["", f"Text-to-LoRA `generate_adapter` {fmt_s(t['t2l_s']['median_s'])} vs a {tl['steps']}-step rank-{tl['rank']} "
            f"q/v LoRA on `{t['task']}` (batch {tl['batch']} x {tl['seq_len']} tokens, {fmt_s(tl['step_s'])}/step): "
            f"{fmt_s(tl['update_s'])} ({tl['update_s_is']}), **{t['speedup']:.0f}x**."]
  d = memory_run()
  if d:
    out += ["", "**2a. Extra memory at answer time** (MiB; `computed` from shapes, `measured` = nbytes of arrays built "
            "here; ours: window-aware, full: every layer caches every position)", "",
            "| doc tokens | adapter rank | adapter (1K chunks) | adapter (8K chunks) | KV ours | KV full "
            "| KV ours bf16 | measured adapter / KV | adapter / KV ours | adapter / KV full |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["answer_time"]:
      c, m = r["computed_mb"], r.get("measured_mb")
      meas = "-"
      if m:
        kv = f"{m['kv_ours']:.0f}" if "kv_ours" in m else f"{m['kv_full']:.0f} (full)"
        meas = f"{m['adapter_chunk1024']:.1f} / {kv}"
      out.append(f"| {r['doc_tokens']} | {r['adapter_rank']} | {c['adapter_chunk1024']:.1f} | {c['adapter_chunk8192']:.1f} "
                 f"| {c['kv_ours']:.0f} | {c['kv_full']:.0f} | {c['kv_ours_bf16']:.0f} | {meas} "
                 f"| {r['ratio_adapter_to_kv']['ours']:.3f} | {r['ratio_adapter_to_kv']['full']:.3f} |")
    out += ["", "**2b. Peak update memory** (MiB beyond the resident params; XLA buffer assignment of the compiled "
            "update, compiled not run; CD = max over its phases)", "",
            "| doc tokens | D2L batched | D2L iterative | D2L shipped | CD | CD / D2L iterative |",
            "|---|---|---|---|---|---|"]
    for r in d["update_peak_xla"]:
      cdm = r.get("cd", {}).get("peak_extra_mb")
      cd_s = "%.0f" % cdm if cdm else "beyond the 32K context"
      ratio = "%.2f" % (cdm / r["d2l_iterative"]["peak_extra_mb"]) if cdm else "-"
      shipped = "%.0f" % r["d2l_shipped"]["peak_extra_mb"] if "d2l_shipped" in r else "beyond its max_chunks"
      out.append(f"| {r['doc_tokens']} | {r['d2l_batched']['peak_extra_mb']:.0f} | {r['d2l_iterative']['peak_extra_mb']:.0f} "
                 f"| {shipped} | {cd_s} | {ratio} |")
    if d.get("update_peak_rss"):
      out += ["", "Measured peak RSS growth during one update (fresh process, after compilation): "
              + ", ".join(f"{r['contender']} {r['peak_growth_mb']:.0f} MiB" for r in d["update_peak_rss"])
              + f" at {d['update_peak_rss'][0]['doc_tokens']} tokens."]
  d = decode_run()
  if d:
    out += ["", "**3. Decode latency** (ms per token, batch 1, greedy, median of interleaved rounds; in context: "
            "our window-aware cache, full: every layer caches every position)", "",
            "| doc tokens | adapter rank | with adapter | in context | in context, full cache | bare base "
            "| in context / adapter | full cache / adapter |", "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
      m = r["ms_per_token"]
      out.append(f"| {r['doc_tokens']} | {r['adapter_rank']} | {m['adapter']:.1f} | {fmt(m.get('in_context'), '.1f')} "
                 f"| {fmt(m.get('in_context_full'), '.1f')} | {m['bare']:.1f} "
                 f"| {fmt(r.get('in_context_over_adapter'), '.2f')} "
                 f"| {fmt(r.get('in_context_full_over_adapter'), '.2f')} |")
    if d.get("computed"):
      out += ["", "Computed from shapes (matmul GFLOP per decoded token, from the jaxpr of the same step):", "",
              "| doc tokens | adapter rank | with adapter | in context | in context, full cache | bare base "
              "| adapter / bare | in context / adapter | full cache / adapter |",
              "|---|---|---|---|---|---|---|---|---|"]
      for r in d["computed"]:
        g = r["gflop_per_token"]
        out.append(f"| {r['doc_tokens']} | {r['adapter_rank']} | {g['adapter']:.3f} "
                   f"| {fmt(g.get('in_context'), '.3f')} | {fmt(g.get('in_context_full'), '.3f')} | {g['bare']:.3f} "
                   f"| {r['adapter_over_bare']:.3f} "
                   f"| {fmt(r.get('in_context_over_adapter'), '.2f')} "
                   f"| {fmt(r.get('in_context_full_over_adapter'), '.2f')} |")
  d = load("forward")
  if d:
    s = d["seconds"]
    out += ["", f"**4a. Forward vs transformers** ({d['tokens']} tokens, float32, batch 1, PyTorch with "
            f"{d.get('torch_threads', '?')} threads; seconds, median of {d['repeats']} interleaved rounds; last-position "
            f"logits differ by at most {d.get('max_abs_diff_last_logit', float('nan')):.1e})", "",
            "| logits | ours | transformers | torch / ours | ours, fraction of the matmul peak |", "|---|---|---|---|---|"]
    for way, key in (("all positions", "all_logits"), ("last position", "last_logit")):
      out.append(f"| {way} | {s['jax_' + key]:.3f} | {s['torch_' + key]:.3f} | {d['speedup_vs_torch'][key]:.2f}x "
                 f"| {d['fraction_of_peak']['jax_' + key]:.2f} |")
  d = load("train_step")
  if d:
    out += ["", f"**4b. Train step vs PyTorch** (seconds per step, median of {d['rounds']} interleaved rounds; rank-8 "
            f"down_proj LoRA, Adam, float32; PyTorch with {d['torch_threads']} threads, only the LoRA factors trainable; "
            "first loss: the bare base model's, ours / PyTorch's)", "",
            "| batch x tokens (answer) | ours, answer logits | ours, all logits | torch, all logits (reference) | torch, answer logits | goal ratio | matmul GFLOP, answer / all logits | first loss |",
            "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
      s = r["seconds"]
      out.append(f"| {r['batch']}x{r['tokens']} ({r['answer_tokens']}) | {s['jax_answer_logits']:.2f} | {s['jax_all_logits']:.2f} "
                 f"| {s['torch_all_logits']:.2f} | {s['torch_answer_logits']:.2f} | {r['speedup']['goal_jax_answer_vs_torch_all']:.2f}x "
                 f"| {gflops(r)} | {first(r, 'jax_answer_logits')} / {first(r, 'torch_all_logits')} |")
  d = load("mfu")
  if d:
    out += ["", "**5. MFU** (matmul FLOPs from the jaxpr / step time / paired `jnp.dot` peak, median of rounds)", "",
            "| step | seconds | matmul GFLOP | achieved GFLOP/s | paired peak GFLOP/s | MFU |", "|---|---|---|---|---|---|"]
    for name, s in d["steps"].items():
      out.append(f"| {name} | {s['seconds']:.2f} | {s['matmul_gflops']:.0f} | {s['achieved_gflops']:.0f} "
                 f"| {s['peak_gflops_paired']:.0f} | {s['mfu']:.2f} |")
  d = load("per_example_adapters")
  if d:
    out += ["", f"**6. Per-example adapters** (tokens/s; batch {d['batch']}, {d['prompt_tokens']}-token prompts, "
            f"{d['new_tokens']} decoded tokens)", "",
            "| rank | phase | per-example | shared merged | shared unmerged | base | per-example / merged |",
            "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
      for phase in ("prefill", "decode"):
        t = r[f"{phase}_tokens_per_s"]
        out.append(f"| {r['rank']} | {phase} | {t['per_example']:.0f} | {t['shared_merged']:.0f} | {t['shared_unmerged']:.0f} "
                   f"| {t['base']:.0f} | {r[f'{phase}_ratio_per_example_to_merged']:.2f} |")
  d = gpu_run()
  if d:
    out += ["", f"**7. GPU** ({d['machine'].get('device_kind')}, {d['dtype']}; median of {d['sizes']['rounds']} "
            f"runs after compilation; run {d['date']} UTC, {d['elapsed_s']:.0f} s in all)", "",
            "| hypernetwork | doc tokens | chunks | mode | internalize | tokens/s | compile | XLA temp | XLA output |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in d["internalize"]:
      if "seconds" not in r:
        out.append(f"| {gpu_hypernetwork(r)} | {r.get('doc_tokens', '-')} | - | {r.get('mode', '-')} "
                   f"| failed: {r['error'][:80]} | | | | |")
        continue
      out.append(f"| {gpu_hypernetwork(r)} | {r['doc_tokens']} | {r['chunks']} | {r['mode']} "
                 f"| {fmt_s(r['seconds'])} | {r['tokens_per_s'] / 1e3:.0f}K | {r['compile_s']:.1f} s "
                 f"| {r['xla_temp_mb']:.0f} MiB | {r['xla_output_mb']:.0f} MiB |")
    cd = gpu_cd_rows(d)
    if cd:
      out += ["", "| doc tokens | CD answer | CD teacher | CD steps | CD total | speedup |",
              "|---|---|---|---|---|---|"]
      for r in cd:
        out.append(f"| {r['doc_tokens']} | {fmt_s(r['cd_answer_s'])} | {fmt_s(r['cd_teacher_s'])} "
                   f"| {fmt_s(r['cd_steps_s'])} ({r['cd_steps']}) | {fmt_s(r['cd_update_s'])} | {gpu_speedups(r)} |")
    tr, pk = d.get("train", {}), d.get("peak", {})
    if "step_s" in tr:
      out += ["", f"Meta-training step (batch {tr['batch']}, a {tr['chunk_len']}-token chunk, teacher "
              f"{tr['teacher_len']} / student {tr['student_len']} tokens, {tr['answer_len']} answer tokens): "
              f"{fmt_s(tr['step_s'])} a step, {tr['tokens_per_s'] / 1e3:.0f}K tokens/s, {tr['achieved_tflops']:.0f} "
              f"TFLOP/s of matmuls against a {pk.get('bfloat16_tflops', float('nan')):.0f} TFLOP/s bf16 `jnp.dot` "
              f"({pk.get('n')}^3; float32 {pk.get('float32_tflops', float('nan')):.0f}): "
              f"MFU {tr.get('mfu') or float('nan'):.2f}."]
  dates = [(n, load(n)) for n in ("update_latency", "internalize_scaling", "memory", "decode_latency", "forward", "train_step", "mfu",
                                  "per_example_adapters", "train_step_parts", "gpu_smoke")]
  m = next((d["machine"] for _, d in dates if d), {})
  # The PyTorch ratios move between the VMs this runs on: name the CPU, per run where they differ.
  cpus = {d["machine"].get("processor") or "not recorded" for _, d in dates if d}
  one_cpu = len(cpus) == 1
  out += ["", f"Machine: {m.get('cpu_count')} CPU cores" + (f" ({cpus.pop()})" if one_cpu else "")
          + f", {m.get('platform')}, jax {m.get('jax')} ({m.get('backend')}). "
          "Run dates (UTC) and 1-minute load average at the start / end of each run"
          + ("" if one_cpu else ", with its CPU") + ": " + "; ".join(
      f"{n} {d['date']}" + (f" (load {d['machine']['load_average_at_start'][0]:.1f} / "
                            f"{d['machine']['load_average_at_end'][0]:.1f}"
                            + ("" if one_cpu else f"; {d['machine'].get('processor') or 'CPU not recorded'}") + ")"
                            if "load_average_at_start" in d.get("machine", {}) else "")
      for n, d in dates if d) + "."]
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--write", action="store_true")
  args = parser.parse_args(argv)
  block = "\n".join([START, "", *summary(), "", "Notes on the numbers (generated from the same files):", "",
                     *notes(), *details(), "", END])
  if not args.write:
    print(block)
    return
  readme = HERE / "README.md"
  text = readme.read_text()
  head, rest = text.split(START, 1)
  _, tail = rest.split(END, 1)
  readme.write_text(head + block + tail)


if __name__ == "__main__":
  main()
