"""Scores a hypernetwork's adapters on held-out records: one adapter per document (or task
description), its questions (or inputs) answered with it, under the conditions asked for:

  adapter        the hypernetwork's adapter of the record's own document / description (of its
                 'documents' stacked into one adapter, where a record has them; its 'document' joins them)
  base           the bare base model, the same prompt
  context        the base model with the record's document / description in its prompt
  few_shot       the base model with worked examples of the record's task before its prompt (the
                 record's 'demonstrations', e.g. `TaskData.shots`)
  lora           a fixed saved LoRA for every record (e.g. a multi-task LoRA; `lora=` loaded)
  task_lora      the saved LoRA of the record's task ('task_id') from a library of per-task LoRAs
                 (e.g. the oracle LoRAs of experiments/t2l/oracles.py; `load_task_loras`)
  other_source   the adapter of another record's document / description, of another task when the
                 records name their task (Text-to-LoRA's control: another task's description); needs
                 two sources or more
  random_source  the adapter of random words in place of the document / description (Text-to-LoRA's
                 random-string control)
  cd_oracle      gradient context distillation on the test query itself (the paper's oracle baseline;
                 one fresh LoRA per question, `baselines.context_distillation.distill`)
  cd_generated   gradient context distillation on queries generated about the document (one LoRA per
                 document, `distill_queries`)

and scores every answer with the named metrics (`evaluation.metrics`): the answer metrics on the
generated first line, the teacher-forced ones (`metrics.FORCED_METRICS`) from one forward over the
prompt and the reference, without generating.

With a `mesh` (`sharding.data_mesh()`: this process's devices) the batches run data-parallel: the
params are replicated on it, and the documents' chunks, the prompts, their masks and per-prompt
adapters, and the teacher-forced rows are split over its batch axes, padded with copies of the last
row whose results are dropped. The answers are those of one device. A Text-to-LoRA's description
encoder and the cd_* distillations are not split: they run whole on every device."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import sys
import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from lora_hyper import prompts, qa, sharding
from lora_hyper.adapters import io, lora
from lora_hyper.data import pipeline
from lora_hyper.evaluation import metrics as metrics_lib
from lora_hyper.hypernetworks import doc_to_lora, kinds, text_to_lora
from lora_hyper.hypernetworks.saved import SavedHypernetwork
from lora_hyper.model import decoding
from lora_hyper.model.base_model import BaseModel

CONDITIONS = ("adapter", "base", "context", "few_shot", "lora", "task_lora", "other_source", "random_source",
              "cd_oracle", "cd_generated")
DOCUMENT_ONLY = ("cd_oracle", "cd_generated")  # distilled from documents; generated answers only
DEFAULT_METRICS = ("rouge_l", "contains")
FORCED_ROWS = 32  # rows of one teacher-forced forward at most, padded to a multiple of 8 (few compilations)


class Evaluation(NamedTuple):
  report: dict[str, Any]  # the hypernetwork, the base model, the record count and each condition's mean scores
  answers: list[dict[str, Any]]  # per record: its inputs, the reference and each condition's answer and scores


def default_conditions(kind: str) -> tuple[str, ...]:
  return ("adapter", "base", "context") if kind == "doc_to_lora" else ("adapter", "base")


def check_conditions(conditions: Sequence[str], kind: str) -> None:
  unknown = [c for c in conditions if c not in CONDITIONS]
  if unknown or not conditions:
    raise ValueError(f"unknown condition(s) {unknown} (known: {', '.join(CONDITIONS)})" if unknown
                     else "no condition given")
  if kind != "doc_to_lora" and any(c in DOCUMENT_ONLY for c in conditions):
    raise ValueError(f"conditions {', '.join(DOCUMENT_ONLY)} need documents: a doc_to_lora hypernetwork")


def check_metrics(metrics: Sequence[str], conditions: Sequence[str]) -> None:
  metrics_lib.check(tuple(metrics))
  forced = [m for m in metrics if m in metrics_lib.FORCED_METRICS]
  distilled = [c for c in conditions if c in DOCUMENT_ONLY]
  if forced and distilled:
    raise ValueError(f"conditions {', '.join(distilled)} score generated answers only, not {', '.join(forced)}")


def load_task_loras(folder: str, task_ids: Sequence[str], base: BaseModel) -> dict[str, lora.LoraAdapter]:
  """The saved LoRA of each task from a library folder (one subfolder per task, `task_loras.task_dirname`)."""
  from lora_hyper.baselines import task_loras  # pylint: disable=import-outside-toplevel

  unique = list(dict.fromkeys(task_ids))
  return {t: io.load_adapter(p, base)[0] for t, p in zip(unique, task_loras.library_paths(folder, unique))}


def stacked(adapters: Mapping[str, lora.LoraAdapter], keys: Sequence[str]) -> lora.LoraAdapter:
  """One adapter per entry of `keys` [N, ...], stacked from `adapters` (of one scaling)."""
  chosen = [adapters[k] for k in keys]
  if len({a.scaling for a in chosen}) > 1:
    raise ValueError("the task LoRAs have different scalings: they cannot be stacked into one batch")
  return lora.LoraAdapter(jax.tree.map(lambda *w: jnp.stack(w), *[dict(a.weights) for a in chosen]),
                          chosen[0].scaling)


def _bucket(length: int, smallest: int) -> int:
  return max(smallest, 1 << (length - 1).bit_length())


def forced_scores(base: BaseModel, prompt_texts: Sequence[str], references: Sequence[str],
                  adapter: lora.LoraAdapter | None, names: Sequence[str],
                  mesh: Mesh | None = None) -> list[dict[str, float]]:
  """The teacher-forced metrics `names` of each reference read after its prompt (" {reference}",
  EOS), `FORCED_ROWS` rows per forward at most (`qa.greedy_matches`). `adapter`: None, one for every row
  or one per row. Prompts and answers are padded to powers of two (64 and 32 at least). `mesh`: each
  forward's rows split over its batch axes (base params replicated on it)."""
  tok, cfg = base.tokenizer, base.config
  prefixes = [[cfg.bos_id, *tok.encode(p, add_bos=False)] for p in prompt_texts]
  answers = [pipeline.answer_ids(tok, r, cfg.eos_id) for r in references]
  shapes = pipeline.TaskExampleShapes(seq_len=_bucket(max(len(p) + len(a) for p, a in zip(prefixes, answers)), 64),
                                      answer_len=_bucket(max(map(len, answers)), 32))
  if shapes.seq_len > cfg.max_seq_len:
    raise ValueError(f"a prompt and its reference take {shapes.seq_len} tokens padded, more than the base "
                     f"model's {cfg.max_seq_len}")
  examples = [pipeline.supervised_example(p, a, shapes, cfg.pad_id) for p, a in zip(prefixes, answers)]
  line_ends = (cfg.eos_id, *sorted({t for text in ("\n", "\n\n") for t in tok.encode(text, add_bos=False)}))
  per_row = adapter is not None and adapter.is_batched
  columns: list[list[np.ndarray]] = [[], [], []]
  multiple = math.lcm(8, 1 if mesh is None else sharding.batch_shards(mesh))
  for start in range(0, len(examples), FORCED_ROWS):
    rows = list(range(start, min(start + FORCED_ROWS, len(examples))))
    rows += [rows[-1]] * (-len(rows) % multiple)  # a multiple of 8 (and of the shards): the last row again
    batch = {k: jnp.asarray(np.stack([examples[i][k] for i in rows])) for k in examples[0]}
    row_adapter = lora.take(adapter, jnp.asarray(rows)) if per_row else None
    if mesh is not None:
      batch, row_adapter = sharding.shard_rows((batch, row_adapter), mesh)
    matched = qa.greedy_matches(base.params, batch, row_adapter if per_row else adapter,
                                config=cfg, line_ends=line_ends)
    for column, values in zip(columns, matched):
      column.append(np.asarray(values)[:min(FORCED_ROWS, len(examples) - start)])
  values = dict(zip(metrics_lib.FORCED_METRICS, (np.concatenate(c).astype(np.float64) for c in columns)))
  return [{n: float(values[n][i]) for n in names} for i in range(len(examples))]


def make_adapters(hyper: SavedHypernetwork, base: BaseModel, sources: Sequence[str | Sequence[str]], *,
                  config: Any = None, iterative: bool = False, mesh: Mesh | None = None) -> lora.LoraAdapter:
  """One adapter per document, stack of documents (a list: `doc_to_lora.internalize`) or task description
  [N, ...]; `config` replaces the saved one (e.g. another chunk length). `mesh`: a Doc-to-LoRA's chunks
  encoded data-parallel over it."""
  config = hyper.config if config is None else config
  if hyper.kind == "doc_to_lora":
    return doc_to_lora.internalize(hyper.variables, base.params, list(sources), config=config,
                                   tokenizer=base.tokenizer, iterative=iterative, mesh=mesh)
  return text_to_lora.generate_adapter(hyper.variables, list(sources), config=config, encoder=hyper.task_encoder(base))


def chunked_config(hyper: SavedHypernetwork, base: BaseModel, documents: Sequence[str | Sequence[str]],
                   chunk_len: int | None):
  """The saved config, or one with `chunk_len`-token chunks and room for the longest document or stack
  of them (as many chunks as it takes: the saved max_chunks was sized for the saved chunk length)."""
  if chunk_len is None:
    return hyper.config
  if chunk_len < 2:
    raise ValueError(f"chunk_len must be at least 2 (a BOS and a token), got {chunk_len}")
  chunks = lambda text: max(1, math.ceil(len(base.tokenizer.encode(text, add_bos=False)) / (chunk_len - 1)))
  most = max(chunks(d) if isinstance(d, str) else sum(map(chunks, d)) for d in documents)
  return hyper.config.replace(chunk_len=chunk_len, max_chunks=most)


def other_sources(records: Sequence[dict], source_key: str) -> dict[str, str]:
  """Each source's stand-in for the other_source control: the next source in record order (cycling),
  the next one of another task when records name their task ('task_id': a description of the same
  task would be no control)."""
  sources = list(dict.fromkeys(r[source_key] for r in records))
  task_of = {r[source_key]: r.get("task_id") for r in records}
  out = {}
  for i, s in enumerate(sources):
    later = sources[i + 1:] + sources[:i]
    out[s] = next((o for o in later if task_of[s] is None or task_of[o] != task_of[s]), later[0] if later else s)
  return out


def random_source(index: int, seed: int = 0) -> str:
  """Eight random lowercase words: a description (or document) that says nothing."""
  rng = np.random.default_rng([seed, index])
  letters = list("abcdefghijklmnopqrstuvwxyz")
  return " ".join("".join(rng.choice(letters, int(rng.integers(3, 9)))) for _ in range(8))


def _distilled_answers(base: BaseModel, rows: Sequence[dict], condition: str, settings, num_queries: int,
                       sampling: decoding.SamplingConfig, per_document: dict[str, Any],
                       seconds: list[tuple[float, bool]]) -> list[str]:
  """Answers of the base model with a LoRA distilled from each row's document (experiments/qa's recipe);
  cd_generated's LoRA is distilled once per document and kept in `per_document` (a document's questions
  may fall in several groups). Each distillation's seconds are appended to `seconds`, with False: its
  compilation is timed apart (`context_distillation.Timings.update_s`)."""
  from lora_hyper.baselines import context_distillation as cd  # pylint: disable=import-outside-toplevel
  from lora_hyper.data import fictional  # pylint: disable=import-outside-toplevel

  tok = base.tokenizer
  stop_ids = (*tok.stop_ids, *tok.encode("\n", add_bos=False))  # the teacher answers in one line
  prompt_ids = lambda q: tok.encode(prompts.query_prompt(q), add_bos=False)
  answers = []
  for r in rows:
    context = tok.encode(r["document"] + "\n\n", add_bos=False)
    if condition == "cd_oracle":
      result = cd.distill(base.params, base.config, context, prompt_ids(r["query"]), settings=settings,
                          stop_ids=stop_ids)
      adapter = result.adapter
      seconds.append((result.timings.update_s, False))
    else:
      if r["document"] not in per_document:
        queries = fictional.generated_queries({"document": r["document"]}, num_queries)
        result = cd.distill_queries(base.params, base.config, context, [prompt_ids(q) for q in queries],
                                    settings=settings, stop_ids=stop_ids)
        per_document[r["document"]] = result.adapter
        seconds.append((result.timings.update_s, False))
      adapter = per_document[r["document"]]
    answers += qa.complete(base, [prompts.query_prompt(r["query"])], adapter=adapter, sampling=sampling)
  return answers


def _ready_seconds(adapter: lora.LoraAdapter, start: float) -> float:
  """Wall seconds from `start` until the adapter's weights are computed."""
  jax.block_until_ready(adapter.weights)
  return time.perf_counter() - start


COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax.monitoring's, once per XLA compilation


@contextlib.contextmanager
def counting_compiles() -> Iterator[list[float]]:
  """A list that gets each XLA compilation's seconds while the context is open: an update that
  compiled (a new batch or chunk shape) is not a steady-state update."""
  compiles: list[float] = []

  def listener(event: str, duration: float, **_) -> None:
    if event == COMPILE_EVENT:
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
  """Counts answered records: a tqdm bar on a terminal; in a log (nohup, a job's output), where a
  bar shows nothing until it closes, a plain line per batch, as training prints its steps."""
  stream, start, done = sys.stderr, time.perf_counter(), 0
  bar = tqdm(total=total, unit="record", file=stream) if stream.isatty() else None

  def update(n: int) -> None:
    nonlocal done
    done += n
    if bar is not None:
      bar.update(n)
    else:
      print(f"[lora-hyper] evaluated {done}/{total} records ({time.perf_counter() - start:.0f} s)",
            file=stream, flush=True)

  try:
    yield update
  finally:
    if bar is not None:
      bar.close()


def update_seconds(timings: Mapping[str, Sequence[tuple[float, bool]]]) -> dict[str, dict[str, float]]:
  """{condition: its updates' seconds per document}, from (seconds, whether it compiled) per update:
  the median of those that compiled nothing (of all, where every one did), the first update's
  seconds, and how many were timed and how many compiled."""
  out = {}
  for c, t in timings.items():
    if t:
      steady = [s for s, compiled in t if not compiled]
      out[c] = {"median": statistics.median(steady or [s for s, _ in t]), "first": t[0][0], "updates": len(t),
                "compiled": sum(compiled for _, compiled in t)}
  return out


def _unique_complete(base: BaseModel, questions: list[str], sampling: decoding.SamplingConfig,
                     mesh: Mesh | None) -> list[str]:
  """The bare base model's answers, each distinct prompt decoded once (NIAH asks every haystack alike)."""
  unique = list(dict.fromkeys(questions))
  answered = dict(zip(unique, qa.complete(base, unique, sampling=sampling, mesh=mesh)))
  return [answered[q] for q in questions]


def evaluate(hyper: SavedHypernetwork, base: BaseModel, records: Sequence[dict], *, batch_size: int = 8,
             sampling: decoding.SamplingConfig = qa.ANSWER_SAMPLING, conditions: Sequence[str] | None = None,
             metrics: Sequence[str] = DEFAULT_METRICS, chunk_len: int | None = None, iterative: bool = False,
             distill: Any = None, distill_queries: int = 4, seed: int = 0,
             fixed_lora: lora.LoraAdapter | None = None,
             task_loras: Mapping[str, lora.LoraAdapter] | None = None, mesh: Mesh | None = None) -> Evaluation:
  """Every record answered under each condition and scored against its reference. Records with a
  'group' (e.g. a haystack length, a task) are also scored per group, and a `chunk_len` override
  sizes its chunk count per group. `fixed_lora` is the lora condition's adapter, `task_loras` the
  task_lora condition's (task id -> adapter). `mesh`: batches data-parallel over it (see above)."""
  kind = kinds.get(hyper.kind)
  conditions = tuple(default_conditions(hyper.kind) if conditions is None else conditions)
  metrics = tuple(metrics)
  check_conditions(conditions, hyper.kind)
  check_metrics(metrics, conditions)
  if (chunk_len is not None or iterative) and hyper.kind != "doc_to_lora":
    raise ValueError("chunk_len and iterative apply to a doc_to_lora hypernetwork only")
  if not records:
    raise ValueError("no records to evaluate")
  if "lora" in conditions and fixed_lora is None:
    raise ValueError("the lora condition needs a saved LoRA (EvalConfig.lora)")
  if "task_lora" in conditions:
    if task_loras is None:
      raise ValueError("the task_lora condition needs a library of per-task LoRAs (EvalConfig.task_loras)")
    missing = sorted({str(r.get("task_id")) for r in records} - set(task_loras))
    if missing:
      raise ValueError(f"the task_lora condition needs records with a 'task_id' and a LoRA for each task; "
                       f"none for {missing[:5]}")
  if "few_shot" in conditions and any("demonstrations" not in r for r in records):
    raise ValueError("the few_shot condition needs records with 'demonstrations' (e.g. TaskData.shots > 0)")
  answer_metrics = tuple(m for m in metrics if m in metrics_lib.METRICS)
  forced_metrics = tuple(m for m in metrics if m in metrics_lib.FORCED_METRICS)
  source_key, input_key, ref_key = kind.record_fields
  documents = kind is kinds.DOC_TO_LORA
  # A published (chat-templated) Doc-to-LoRA was trained on chat turns: every condition is asked in one.
  chat = documents and hyper.config.templated
  ask = prompts.chat_prompt if chat else kind.prompt
  in_context = prompts.chat_context_prompt if chat else kind.context_prompt
  all_sources = list(dict.fromkeys(r[source_key] for r in records))
  if "other_source" in conditions and len(all_sources) < 2:
    raise ValueError("the other_source condition needs records of two sources or more")
  other = other_sources(records, source_key)
  randoms = {s: random_source(i, seed) for i, s in enumerate(all_sources)}
  # A stacked record's adapter is made of its 'documents' (its 'document' joins them, for the prompt).
  stacks = {r[source_key]: list(r["documents"]) for r in records if "documents" in r}
  parts = lambda texts: [stacks.get(t, t) for t in texts]
  if distill is None and any(c.startswith("cd_") for c in conditions):
    from lora_hyper.baselines import context_distillation as cd  # pylint: disable=import-outside-toplevel

    distill = cd.DistillConfig()
  if mesh is not None:  # once per evaluation, not per batch: every sharded call takes the params whole
    base = dataclasses.replace(base, params=sharding.replicate(base.params, mesh))
    hyper = dataclasses.replace(hyper, variables=sharding.replicate(hyper.variables, mesh))

  distilled: dict[str, Any] = {}  # cd_generated's LoRA of each document
  # Each update's wall seconds per document (a distillation's, or a batch of adapters' shared evenly)
  # and whether it compiled.
  timings: dict[str, list[tuple[float, bool]]] = {c: [] for c in ("adapter", *DOCUMENT_ONLY) if c in conditions}
  groups: dict[Any, list[int]] = {}
  for i, r in enumerate(records):
    groups.setdefault(r.get("group"), []).append(i)
  answers: list[dict | None] = [None] * len(records)
  with _progress(len(records)) as progress:
    for indices in groups.values():
      by_source: dict[str, list[int]] = {}
      for i in indices:
        by_source.setdefault(records[i][source_key], []).append(i)
      sources = list(by_source)
      # Room for every text this group's adapters are made of, the controls' stand-ins included.
      made_of = parts([t for s in sources for t in (s, other[s], randoms[s])])
      config = chunked_config(hyper, base, made_of, chunk_len) if documents else hyper.config
      adapters_of = lambda texts: make_adapters(hyper, base, parts(texts), config=config, iterative=iterative,
                                                mesh=mesh)
      for start in range(0, len(sources), batch_size):
        batch = sources[start:start + batch_size]
        rows = [(j, i) for j, s in enumerate(batch) for i in by_source[s]]
        recs = [records[i] for _, i in rows]
        questions = [ask(r[input_key]) for r in recs]
        per_row = jnp.asarray([j for j, _ in rows])  # each question its source's adapter
        scored: dict[str, list[dict]] = {}
        for condition in conditions:
          if condition in DOCUMENT_ONLY:
            texts = _distilled_answers(base, recs, condition, distill, distill_queries, sampling, distilled,
                                       timings[condition])
            scored[condition] = [{"answer": t, **metrics_lib.scores(t, r[ref_key], metrics)}
                                 for t, r in zip(texts, recs)]
            continue
          asked, adapter = questions, None
          if condition in ("adapter", "other_source", "random_source"):
            texts = {"adapter": batch, "other_source": [other[s] for s in batch],
                     "random_source": [randoms[s] for s in batch]}[condition]
            with counting_compiles() as compiles:
              start = time.perf_counter()
              made = adapters_of(texts)
              seconds = _ready_seconds(made, start)
            if condition == "adapter":  # per document: a stack's time shared by its documents
              count = sum(len(p) if isinstance(p, list) else 1 for p in parts(texts))
              timings["adapter"].append((seconds / count, bool(compiles)))
            adapter = lora.take(made, per_row)
          elif condition == "context":
            asked = [in_context(r[source_key], r[input_key]) for r in recs]
          elif condition == "few_shot":
            asked = [prompts.few_shot_prompt(r["demonstrations"], r[input_key], kind.prompt) for r in recs]
          elif condition == "lora":
            adapter = fixed_lora
          elif condition == "task_lora":
            adapter = stacked(task_loras, [r["task_id"] for r in recs])
          scores = [{} for _ in recs]
          if answer_metrics:
            texts = (_unique_complete(base, asked, sampling, mesh) if condition == "base"
                     else qa.complete(base, asked, adapter=adapter, sampling=sampling, mesh=mesh))
            scores = [{"answer": t, **metrics_lib.scores(t, r[ref_key], answer_metrics)} for t, r in zip(texts, recs)]
          if forced_metrics:
            forced = forced_scores(base, asked, [r[ref_key] for r in recs], adapter, forced_metrics, mesh)
            scores = [{**s, **f} for s, f in zip(scores, forced)]
          scored[condition] = scores
        for k, r in enumerate(recs):
          answer = {source_key: r[source_key], input_key: r[input_key], "reference": r[ref_key]}
          # What answers are broken down by: the record's group (a haystack length, a task) and the
          # numbers it carries (a haystack's depth bin, length).
          answer.update({key: v for key, v in r.items() if key not in kind.record_fields and (
              key == "group" or isinstance(v, (int, float)) and not isinstance(v, bool))})
          for condition, scores in scored.items():
            answer[condition] = scores[k]
          answers[rows[k][1]] = answer
        progress(len(rows))
  report = {"hypernetwork": hyper.describe(), "base_model": base.name, "records": len(records),
            "scores": mean_scores(answers, conditions, metrics)}
  report["update_seconds"] = update_seconds(timings)
  if any(g is not None for g in groups):
    report["by_group"] = {str(g): mean_scores([answers[i] for i in idx], conditions, metrics)
                          for g, idx in groups.items()}
  if "adapter" in conditions and "context" in conditions and "rouge_l" in metrics \
      and report["scores"]["context"]["rouge_l"] > 0:
    report["relative_rouge_l"] = report["scores"]["adapter"]["rouge_l"] / report["scores"]["context"]["rouge_l"]
  return Evaluation(report, answers)


def mean_scores(answers: Sequence[dict], conditions: Sequence[str], metrics: Sequence[str]) -> dict:
  """{condition: {metric: mean over the answers}}."""
  return {c: {m: sum(a[c][m] for a in answers) / len(answers) for m in metrics} for c in conditions}
