"""Experiment 2, internalization QA on held-out fictional documents, and experiment 3, the failure
modes the paper reports (an unrelated document's adapter; many chunks).

Held-out documents (`FictionalQA` split 'test': names no training document has), six questions
each. Methods, laid out like the paper's 2WikiMultihopQA table:
  base model with the document in its prompt (the reference of relative scores) and without it;
  Doc-to-LoRA, one forward of the hypernetwork (batched: the Perceiver over all layers' features
  at once; iterative: one layer at a time, `internalize(..., iterative=True)`);
  context distillation by gradient steps (`baselines.context_distillation`) on the test query
  itself (the oracle: the teacher's greedy answer to it) and on queries generated about the
  document (`data.fictional.generated_queries`, the teacher's answers), on the first
  `--cd-docs` documents (minutes per document on this CPU).
Score: ROUGE-L F1 of the answer's first line against the gold answer (and whether it contains it);
relative = a method's ROUGE-L / the in-context ROUGE-L on the same questions. Update latency:
median wall seconds of one update (one per document; the oracle makes one per question),
compiled beforehand. Update memory: XLA's buffer
assignment of the update's compiled functions (arguments + outputs + temporaries, less the
resident base and hypernetwork params; `benchmarks.common.xla_memory`), for the first document.

Failure modes: each document's questions answered with the next document's adapter; and each
document cut into more, shorter chunks than training used (rank-concatenated chunk adapters).

Run (about 40 minutes on 2 CPU cores):
  .venv/bin/python -m experiments.qa.run --hypernetwork runs/qa/hypernetwork --training-log runs/qa/logs/metrics.jsonl
Writes experiments/results/qa.{json,md,png} (`--name` for another name).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from benchmarks.common import xla_memory
from experiments import common
from lora_hyper import qa
from lora_hyper.adapters import lora
from lora_hyper.baselines import context_distillation as cd
from lora_hyper.data import fictional
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model, decoding, transformer
from lora_hyper.prompts import query_prompt

SAMPLING = decoding.SamplingConfig(max_new_tokens=24)
BATCH = 48  # prompts per generation call


def scores(answers: list[str], records: list[dict]) -> dict[str, float]:
  return {"rouge_l": statistics.mean(qa.rouge_l(a, r["answer"]) for a, r in zip(answers, records)),
          "contains": statistics.mean(float(qa.contains(a, r["answer"])) for a, r in zip(answers, records))}


def answer_with(base, records: list[dict], adapter: lora.LoraAdapter | None, owner: list[int] | None = None):
  """Answers to every record's query; `adapter` batched over documents, row `owner[i]` for record i."""
  answers = []
  for start in range(0, len(records), BATCH):
    group = records[start:start + BATCH]
    rows = None if adapter is None else lora.take(adapter, jnp.asarray(owner[start:start + BATCH]))
    answers += qa.answer(base, [r["query"] for r in group], adapter=rows, sampling=SAMPLING)
  return answers


def in_context_answers(base, documents: list[str], per_doc: list[list[dict]]) -> list[str]:
  return [a for doc, records in zip(documents, per_doc)
          for a in qa.answer(base, [r["query"] for r in records], context=doc, sampling=SAMPLING)]


# ----------------------------------------------------------------------------- Doc-to-LoRA


def chunked(config: doc_to_lora.DocToLoraConfig, chunk_len: int, longest: int) -> doc_to_lora.DocToLoraConfig:
  return config.replace(chunk_len=chunk_len, max_chunks=max(config.max_chunks, math.ceil(longest / (chunk_len - 1))))


def d2l_update(base, hyper, documents: list[str], *, iterative: bool, config=None) -> dict:
  """Median seconds of one document's `internalize` (compiled first) and its XLA update memory."""
  config = config or hyper.config
  run = lambda doc: jax.block_until_ready(doc_to_lora.internalize(
      hyper.variables, base.params, doc, config=config, tokenizer=base.tokenizer, iterative=iterative))
  run(documents[0])
  times = []
  for doc in documents[:5]:
    start = time.perf_counter()
    run(doc)
    times.append(time.perf_counter() - start)
  chunks = doc_to_lora.chunk_documents([base.tokenizer.encode(documents[0], add_bos=False)], config=config)
  memory = xla_memory(doc_to_lora.adapter_from_chunks, hyper.variables, base.params, jnp.asarray(chunks.tokens),
                      jnp.asarray(chunks.mask), config=config, iterative=iterative,
                      resident=(base.params, hyper.variables))
  return {"update_s": statistics.median(times), "update_mb": memory["peak_extra_mb"]}


# ----------------------------------------------------------------------------- context distillation


def cd_memory(base, settings: cd.DistillConfig, context_len: int, prompts, answers) -> float:
  """Peak extra MiB of the teacher's answers, its logits and one gradient step (the largest)."""
  cfg, sds = base.config, jax.ShapeDtypeStruct
  n, answer_len = len(prompts), max(map(len, answers))
  student = 1 + max(len(p) + len(a) for p, a in zip(prompts, answers))
  teacher = student + context_len
  prefix = teacher - answer_len
  generate = xla_memory(decoding.generate, base.params, sds((n, prefix), jnp.int32), sds((n, prefix), bool),
                        jax.random.key(0), config=cfg, stop_ids=(cfg.eos_id,),
                        sampling=decoding.SamplingConfig(max_new_tokens=settings.max_answer_tokens),
                        resident=base.params)
  teacher_fn = jax.jit(lambda p, t, m, at: transformer.forward(p, t, config=cfg, mask=m, logits_at=at).logits)
  logits = xla_memory(teacher_fn, base.params, sds((n, teacher), jnp.int32), sds((n, teacher), bool),
                      sds((n, answer_len), jnp.int32), resident=base.params)
  tx = optax.adam(settings.learning_rate)
  weights = jax.eval_shape(lambda: dict(cd.init_adapter(jax.random.key(0), cfg, settings.modules, settings.rank,
                                                        scaling=settings.scaling).weights))
  batch = {"tokens": sds((n, student), jnp.int32), "mask": sds((n, student), bool),
           "logits_at": sds((n, answer_len), jnp.int32), "loss_mask": sds((n, answer_len), bool),
           "teacher_logits": sds((n, answer_len, cfg.vocab_size), jnp.float32)}
  step = xla_memory(cd.make_step(cfg, settings.scaling, "kl", tx), weights, jax.eval_shape(tx.init, weights),
                    base.params, batch, resident=base.params)  # its arguments hold the teacher logits
  return max(generate["peak_extra_mb"], logits["peak_extra_mb"], step["peak_extra_mb"])


def context_distillation(base, documents, per_doc, settings: cd.DistillConfig, num_queries: int) -> dict:
  """Answers, median update seconds and update memory of both distillation baselines."""
  tok = base.tokenizer
  stop_ids = (*tok.stop_ids, *tok.encode("\n", add_bos=False))  # the teacher answers in one line
  prompt_ids = lambda q: tok.encode(query_prompt(q), add_bos=False)
  out = {m: {"answers": [], "times": [], "kl": []} for m in ("cd_oracle", "cd_generated")}
  for d, (doc, records) in enumerate(zip(documents, per_doc)):
    context = tok.encode(doc + "\n\n", add_bos=False)
    for r in records:  # oracle: one LoRA per test query
      prompt = prompt_ids(r["query"])
      result = cd.distill(base.params, base.config, context, prompt, settings=settings, stop_ids=stop_ids)
      out["cd_oracle"]["answers"] += qa.answer(base, [r["query"]], adapter=result.adapter, sampling=SAMPLING)
      out["cd_oracle"]["times"].append(result.timings.update_s)
      out["cd_oracle"]["kl"].append((float(result.losses[0]), float(result.losses[-1])))
      if d == 0 and "update_mb" not in out["cd_oracle"]:
        out["cd_oracle"]["update_mb"] = cd_memory(base, settings, len(context), [prompt], result.answers)
    queries = fictional.generated_queries({"document": doc}, num_queries)
    prompts = [prompt_ids(q) for q in queries]
    result = cd.distill_queries(base.params, base.config, context, prompts, settings=settings, stop_ids=stop_ids)
    out["cd_generated"]["answers"] += qa.answer(base, [r["query"] for r in records], adapter=result.adapter,
                                                sampling=SAMPLING)
    out["cd_generated"]["times"].append(result.timings.update_s)
    out["cd_generated"]["kl"].append((float(result.losses[0]), float(result.losses[-1])))
    if d == 0:
      out["cd_generated"]["update_mb"] = cd_memory(base, settings, len(context), prompts, result.answers)
      out["cd_generated"]["pairs"] = [{"query": q, "teacher_answer": tok.decode(list(a))}
                                      for q, a in zip(queries, result.answers)]
    print(f"[qa] context distillation: document {d + 1}/{len(documents)} "
          f"({out['cd_oracle']['times'][-1]:.1f} s oracle, {out['cd_generated']['times'][-1]:.1f} s generated)",
          flush=True)
  return out


# ----------------------------------------------------------------------------- main


def qa_documents(docs: int, split: str = "test", first: int = 0, facts_per_doc: int = fictional.FACTS_PER_DOC
                 ) -> tuple[list[list[dict]], list[str], list[dict], list[int]]:
  """`docs` documents of `split` from `first` on: records per document, texts, all records, each
  record's document. Training reads the 'train' split's first `FictionalQA.num_docs` documents, so
  the ones after them validate."""
  source = fictional.FictionalQA(num_docs=first + docs, split=split, facts_per_doc=facts_per_doc)
  per_doc = [source.qa_pairs(d) for d in range(first, first + docs)]
  records = [r for rs in per_doc for r in rs]
  owner = [d for d, rs in enumerate(per_doc) for _ in rs]
  return per_doc, [rs[0]["document"] for rs in per_doc], records, owner


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hypernetwork", required=True, help="saved Doc-to-LoRA folder (experiments/qa/*.gin)")
  parser.add_argument("--docs", type=int, default=24, help="held-out documents (6 questions each)")
  parser.add_argument("--cd-docs", type=int, default=2, help="documents for the distillation baselines")
  parser.add_argument("--cd-steps", type=int, default=100,
                      help="Adam steps per distillation (paper: 300; one query's KL converges in under 100)")
  parser.add_argument("--generated-queries", type=int, default=8, help="queries per document for cd_generated")
  parser.add_argument("--chunk-lens", type=int, nargs="+", default=[64, 32, 16],
                      help="shorter chunks than training's for the many-chunks failure mode")
  parser.add_argument("--training-log", default=None, metavar="WORKDIR/logs/metrics.jsonl",
                      help="also plot the training run's loss (results/NAME_training.{json,png})")
  parser.add_argument("--name", default="qa", help="results are written to experiments/results/NAME.{json,md,png}")
  args = parser.parse_args()
  if args.training_log:
    common.training_curve(args.training_log, f"{args.name}_training")

  base = base_model.load_base_model()
  hyper = saved.load_hypernetwork(args.hypernetwork, base)
  per_doc, documents, records, owner = qa_documents(args.docs)
  cd_records = [r for rs in per_doc[:args.cd_docs] for r in rs]
  print(f"[qa] {len(documents)} held-out documents, {len(records)} questions", flush=True)

  answers = {"base_in_context": in_context_answers(base, documents, per_doc),
             "base_no_context": answer_with(base, records, None)}
  adapters = doc_to_lora.internalize(hyper.variables, base.params, documents, config=hyper.config,
                                     tokenizer=base.tokenizer)
  answers["d2l"] = answer_with(base, records, adapters, owner)
  updates = {f"d2l_{mode}": d2l_update(base, hyper, documents, iterative=mode == "iterative")
             for mode in ("batched", "iterative")}
  print(f"[qa] Doc-to-LoRA: {scores(answers['d2l'], records)}", flush=True)

  # Experiment 3: the next document's adapter; more, shorter chunks.
  answers["d2l_unrelated_document"] = answer_with(base, records, adapters, [(d + 1) % len(documents) for d in owner])
  longest = max(len(base.tokenizer.encode(doc, add_bos=False)) for doc in documents)
  chunk_rows = [{"chunk_len": hyper.config.chunk_len, "chunks": math.ceil(longest / (hyper.config.chunk_len - 1)),
                 **scores(answers["d2l"], records)}]
  for chunk_len in args.chunk_lens:
    config = chunked(hyper.config, chunk_len, longest)
    many = doc_to_lora.internalize(hyper.variables, base.params, documents, config=config, tokenizer=base.tokenizer)
    chunk_rows.append({"chunk_len": chunk_len, "chunks": math.ceil(longest / (chunk_len - 1)),
                       **scores(answer_with(base, records, many, owner), records)})
    print(f"[qa] {chunk_rows[-1]}", flush=True)

  settings = cd.DistillConfig(steps=args.cd_steps, max_answer_tokens=SAMPLING.max_new_tokens)
  distilled = context_distillation(base, documents[:args.cd_docs], per_doc[:args.cd_docs], settings,
                                   args.generated_queries)

  # Every score on all documents, and on the distillation baselines' documents alone.
  n_cd = len(cd_records)
  table = {}
  for method, texts in answers.items():
    table[method] = {"all": scores(texts, records), "cd_docs": scores(texts[:n_cd], cd_records)}
  for method, result in distilled.items():
    table[method] = {"cd_docs": scores(result["answers"], cd_records)}
  for method, row in table.items():
    for split in row:
      reference = table["base_in_context"][split]["rouge_l"]
      row[split]["relative_rouge_l"] = row[split]["rouge_l"] / reference if reference else float("nan")
      # Format-free: ROUGE-L also rewards an answer's length matching the gold's.
      reference = table["base_in_context"][split]["contains"]
      row[split]["relative_contains"] = row[split]["contains"] / reference if reference else float("nan")
  latency = {**{m: u["update_s"] for m, u in updates.items()},
             **{m: statistics.median(distilled[m]["times"]) for m in distilled}}
  memory = {**{m: u["update_mb"] for m, u in updates.items()}, **{m: distilled[m]["update_mb"] for m in distilled}}
  for method in ("cd_oracle", "cd_generated"):
    print(f"[qa] {method}: {table[method]['cd_docs']}, {latency[method]:.1f} s", flush=True)

  examples = {m: texts[:6] for m, texts in answers.items()}
  examples.update({m: r["answers"][:6] for m, r in distilled.items()})
  examples["reference"] = [r["answer"] for r in records[:6]]
  result = {"hypernetwork": hyper.describe(), "docs": args.docs, "questions": len(records),
            "cd_docs": args.cd_docs, "cd_questions": n_cd, "cd_steps": args.cd_steps,
            "generated_queries": args.generated_queries, "scores": table, "update_s": latency,
            "update_mb": memory, "chunks": chunk_rows, "examples": examples,
            "cd_generated_pairs": distilled["cd_generated"]["pairs"],  # the first document's
            # (first, last) KL of each distillation: whether --cd-steps was enough to converge
            "cd_kl_first_last": {m: r["kl"] for m, r in distilled.items()}}
  common.write_json(args.name, result)
  write_markdown(result, args.name)
  plot(result, args.name)


METHODS = (("base_in_context", "base model, document in prompt", None),
           ("base_no_context", "base model, no document", None),
           ("d2l", "Doc-to-LoRA (batched)", "d2l_batched"),
           ("d2l", "Doc-to-LoRA (iterative)", "d2l_iterative"),
           ("cd_oracle", "context distillation, test query (oracle)", "cd_oracle"),
           ("cd_generated", "context distillation, generated queries", "cd_generated"))


def write_markdown(result: dict, name: str) -> None:
  table, rows = result["scores"], []
  for method, label, update in METHODS:
    row = table[method]
    full = row.get("all")
    rows.append([label, full["rouge_l"] if full else "-", full["relative_rouge_l"] if full else "-",
                 row["cd_docs"]["rouge_l"], row["cd_docs"]["relative_rouge_l"],
                 (full or row["cd_docs"])["contains"], (full or row["cd_docs"])["relative_contains"],
                 result["update_s"][update] if update else "-", result["update_mb"][update] if update else "-"])
  main = common.markdown_table(
      ["method", f"ROUGE-L ({result['questions']} q)", "relative", f"ROUGE-L ({result['cd_questions']} q)",
       "relative", "contains answer", "relative", "update latency (s)", "update memory (MiB)"], rows)
  failure = common.markdown_table(
      ["adapter", "ROUGE-L", "relative"],
      [["own document", table["d2l"]["all"]["rouge_l"], table["d2l"]["all"]["relative_rouge_l"]],
       ["the next document's", table["d2l_unrelated_document"]["all"]["rouge_l"],
        table["d2l_unrelated_document"]["all"]["relative_rouge_l"]]])
  reference = table["base_in_context"]["all"]["rouge_l"]
  chunks = common.markdown_table(
      ["chunk tokens", "chunks (longest document)", "ROUGE-L", "relative"],
      [[c["chunk_len"], c["chunks"], c["rouge_l"], c["rouge_l"] / reference] for c in result["chunks"]])
  common.write_markdown(
      name, "Internalization QA on held-out fictional documents",
      f"{result['docs']} held-out documents x 6 questions; the distillation baselines ({result['cd_steps']} Adam "
      f"steps each) on the first {result['cd_docs']} documents ({result['cd_questions']} questions), where every "
      f"method is also scored. Relative = ROUGE-L (or contains answer) / the in-context one on the same "
      f"questions; ROUGE-L also rewards an answer as short as the gold one, which the in-context model's "
      f"sentences are not. Update latency: median seconds of one update (one per document; the oracle makes "
      f"one per question), compiled beforehand; memory: XLA's peak extra over the resident params.\n\n{main}\n"
      f"## Failure modes\n\nAn unrelated document's adapter:\n\n{failure}\nMore, shorter "
      f"chunks than training's (one chunk per document), rank-concatenated:\n\n{chunks}")


def plot(result: dict, name: str) -> None:
  plt = common.pyplot()

  table = result["scores"]
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
  labels = [label for method, label, update in METHODS if update != "d2l_iterative"]
  values = [table[m]["cd_docs"]["relative_rouge_l"] for m, _, update in METHODS if update != "d2l_iterative"]
  left.barh(labels[::-1], values[::-1], color="tab:blue")
  left.axvline(0.8, color="grey", linestyle=":", label="target: 80% of in-context")
  left.set_xlabel(f"relative ROUGE-L ({result['cd_questions']} questions)")
  left.legend(fontsize=8)
  for method in ("d2l_batched", "cd_oracle", "cd_generated"):
    right.scatter(result["update_s"][method], table["d2l" if method.startswith("d2l") else method]["cd_docs"]
                  ["relative_rouge_l"], s=60, label=method)
  right.set_xscale("log")
  right.set_xlabel("update latency (s, log; the oracle: per question)")
  right.set_ylabel("relative ROUGE-L")
  right.legend(fontsize=8)
  fig.suptitle("Internalization QA, Gemma 3 270M, held-out fictional documents")
  common.save_figure(fig, name)


if __name__ == "__main__":
  main()
