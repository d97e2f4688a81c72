"""`lora-hyper prepare-data`: the paper's Doc-to-LoRA training data made ahead of time, sharded and
resumable. For every context: `num_queries` queries sampled from a query model prompted with a
template (`query_templates/`, or any file with one `{context}`), the base model's greedy answer to
each with the context in its prompt, and the base model's top-k log-probs at that answer's tokens
(the context-distillation teacher), written as the shards `data.prepared.PreparedQA` reads.

Work goes by shards of `shard_size` contexts: shard i holds contexts [i S, (i+1) S), and host p of P
writes shards p, p + P, ... Each host splits its generation batches over its own devices (`mesh_shape`
over the local devices: data-parallel for a model one chip holds, the model's fsdp / tensor rules
for a larger one). Random draws depend only on (seed, shard, batch), so the records are the same
whatever the number of hosts, and a rerun skips the shards already finished.

The answers and their top-k are computed on the very ids `pipeline.doc_example` gives the teacher
(`pipeline.teacher_prefix`), so stored targets equal the teacher the train step would run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import Mesh

from lora_hyper import files, sharding
from lora_hyper.adapters import io
from lora_hyper.data import fictional, prepared
from lora_hyper.data.pipeline import answer_ids, teacher_prefix
from lora_hyper.errors import LoraHyperError
from lora_hyper.model import base_model as base_model_lib, decoding, transformer
from lora_hyper.model.tokenizer import pad_batch
from lora_hyper.training import distributed, losses

TEMPLATES = Path(__file__).parent / "query_templates"
CONTEXT_SLOT = "{context}"


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """What is generated, and in which pieces. The paper's pipeline: 10 queries a context from
  gemma-3-12b-it, answers by the base at temperature 0, the teacher's top-16 log-probs."""

  num_queries: int = 10
  top_k: int = 16
  shard_size: int = 64  # contexts a shard
  batch_size: int = 16  # sequences a generation call (a multiple of the data-parallel devices)
  max_context_tokens: int = 1024  # longer contexts are skipped and reported
  query_max_tokens: int = 48
  query_temperature: float = 1.0
  query_top_p: float = 0.95
  answer_max_tokens: int = 64
  seed: int = 0
  bucket: int = 64  # prompts are padded to a multiple of this, to reuse compilations

  def __post_init__(self):
    for name in ("num_queries", "top_k", "shard_size", "batch_size", "max_context_tokens", "query_max_tokens",
                 "answer_max_tokens", "bucket"):
      if getattr(self, name) < 1:
        raise ValueError(f"PrepareConfig.{name} must be >= 1, got {getattr(self, name)}")
    _ = self.query_sampling  # SamplingConfig checks temperature and top_p

  @property
  def query_sampling(self) -> decoding.SamplingConfig:
    return decoding.SamplingConfig(max_new_tokens=self.query_max_tokens, temperature=self.query_temperature,
                                   top_p=self.query_top_p)

  @property
  def answer_sampling(self) -> decoding.SamplingConfig:
    return decoding.SamplingConfig(max_new_tokens=self.answer_max_tokens)  # greedy


# ----------------------------------------------------------------------------- inputs


def read_template(template: str) -> str:
  """A query template's text: a name in `query_templates/` ('base', 'instruct') or a file path. It
  holds `{context}` once; the query is the first line the model writes after it."""
  path = TEMPLATES / f"{template}.txt" if (TEMPLATES / f"{template}.txt").is_file() else Path(template)
  if not path.is_file():
    builtin = sorted(p.stem for p in TEMPLATES.glob("*.txt"))
    raise FileNotFoundError(f"query template {template!r} is neither a file nor one of {builtin}")
  text = path.read_text(encoding="utf-8")
  if text.count(CONTEXT_SLOT) != 1:
    raise ValueError(f"query template {str(path)!r} must hold {CONTEXT_SLOT} exactly once, holds it "
                     f"{text.count(CONTEXT_SLOT)} times")
  return text


@gin.configurable(module="lora_hyper")
def text_contexts(pattern: str = gin.REQUIRED) -> list[str]:
  """One context per UTF-8 file matching the glob `pattern`, in sorted path order."""
  import glob

  paths = sorted(glob.glob(pattern, recursive=True))
  if not paths:
    raise FileNotFoundError(f"no files match {pattern!r}")
  return [Path(p).read_text(encoding="utf-8") for p in paths]


@gin.configurable(module="lora_hyper")
def jsonl_contexts(path: str = gin.REQUIRED, field: str = "document") -> list[str]:
  """The distinct `field` strings of a JSON Lines file, in order of first appearance."""
  out = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        value = json.loads(line)[field]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{number} is not a JSON object with a {field!r} ({type(e).__name__}: {e})") from None
      if not isinstance(value, str):
        raise ValueError(f"{path}:{number}: {field!r} is a {type(value).__name__}, not a string")
      out.append(value)
  return list(dict.fromkeys(out))


@gin.configurable(module="lora_hyper")
def source_contexts(source: Any = gin.REQUIRED, field: str = "document") -> list[str]:
  """The distinct documents of a record source (`TfdsQASource`, `JsonlQA`, ...), in order."""
  return list(dict.fromkeys(source[i][field] for i in range(len(source))))


@gin.configurable(module="lora_hyper")
def fictional_contexts(num_docs: int = gin.REQUIRED, split: str = "train", seed: int = 0,
                       facts_per_doc: int = fictional.FACTS_PER_DOC) -> list[str]:
  """The documents of `FictionalQA(num_docs, split, seed, facts_per_doc)`."""
  qa = fictional.FictionalQA(num_docs, split=split, seed=seed, facts_per_doc=facts_per_doc)
  return [qa.document(i).text for i in range(num_docs)]


# ----------------------------------------------------------------------------- generation


@dataclasses.dataclass(frozen=True, eq=False)
class Placed:
  """A model with its params placed on a mesh of this host's devices."""

  model: base_model_lib.BaseModel
  params: Any
  mesh: Mesh

  @property
  def config(self):
    return self.model.config

  @property
  def tokenizer(self):
    return self.model.tokenizer

  def put(self, array: np.ndarray) -> jax.Array:
    """A batch array split over the mesh's data-parallel axes."""
    return jax.device_put(array, sharding.logical_sharding(jax.sharding.PartitionSpec("batch"), self.mesh))


def place(model: base_model_lib.BaseModel, mesh: Mesh) -> Placed:
  axes = transformer.param_logical_axes(model.config)
  return Placed(model, jax.device_put(model.params, sharding.logical_sharding(axes, mesh)), mesh)


def _in_mesh(mesh: Mesh) -> contextlib.ExitStack:
  stack = contextlib.ExitStack()
  stack.enter_context(jax.set_mesh(mesh))
  stack.enter_context(nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES))
  return stack


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _batches(rows: Sequence[Any], size: int):
  """(batch number, rows) in order; the last batch is filled up with copies of its last row."""
  for number, start in enumerate(range(0, len(rows), size)):
    chunk = list(rows[start:start + size])
    yield number, chunk, chunk + [chunk[-1]] * (size - len(chunk))


def generate_rows(placed: Placed, prompts: Sequence[Sequence[int]], sampling: decoding.SamplingConfig,
                  key: jax.Array, *, batch_size: int, bucket: int) -> list[list[int]]:
  """Each prompt's continuation ids, up to and including its stop token: fixed batches of
  `batch_size` (batch b draws with fold_in(key, b)), left-padded to a multiple of `bucket`."""
  config, out = placed.config, []
  for number, chunk, padded in _batches(prompts, batch_size):
    longest = max(len(p) for p in padded)
    decoding.check_length(config, longest, sampling.max_new_tokens)
    length = min(_round_up(longest, bucket), config.max_seq_len - sampling.max_new_tokens)
    tokens, mask = pad_batch(padded, config.pad_id, side="left", length=length)
    with _in_mesh(placed.mesh):
      generated, lengths = decoding.generate(placed.params, placed.put(tokens), placed.put(mask),
                                             jax.random.fold_in(key, number), config=config, sampling=sampling,
                                             stop_ids=tuple(placed.tokenizer.stop_ids))
    generated, lengths = np.asarray(generated), np.asarray(lengths)
    out += [row[:n].tolist() for row, n in zip(generated[:len(chunk)], lengths[:len(chunk)])]
  return out


@functools.partial(jax.jit, static_argnames=("config", "k"))
def _topk_at(params, tokens, mask, logits_at, *, config, k):
  logits = transformer.forward(params, tokens, config=config, mask=mask, logits_at=logits_at).logits
  return losses.teacher_topk(logits, k)


def teacher_topk_rows(placed: Placed, prefixes: Sequence[list[int]], answers: Sequence[list[int]], *, k: int,
                      batch_size: int, bucket: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """(log-probs float32 [A, k], ids int32 [A, k]) of the model's top-k at each answer token, read
  from one forward over prefix + answer (right-padded, as the train step's teacher reads it)."""
  config, out = placed.config, []
  rows = list(zip(prefixes, answers))
  for _, chunk, padded in _batches(rows, batch_size):
    length = _round_up(max(len(p) + len(a) for p, a in padded), bucket)
    width = _round_up(max(len(a) for _, a in padded), 16)
    tokens, mask = pad_batch([p + a for p, a in padded], config.pad_id, side="right", length=length)
    at = np.zeros((batch_size, width), np.int32)
    for row, (prefix, answer) in enumerate(padded):
      at[row, :len(answer)] = np.arange(len(prefix) - 1, len(prefix) - 1 + len(answer))
    with _in_mesh(placed.mesh):
      logprobs, ids = _topk_at(placed.params, placed.put(tokens), placed.put(mask), placed.put(at), config=config,
                               k=k)
    logprobs, ids = np.asarray(logprobs, np.float32), np.asarray(ids, np.int32)
    out += [(logprobs[row, :len(a)], ids[row, :len(a)]) for row, (_, a) in enumerate(chunk)]
  return out


def _first_line(text: str) -> str:
  return text.lstrip().split("\n", 1)[0].strip()


def _context_skip(context: str, base: Placed, query: Placed, template: str, config: PrepareConfig) -> str | None:
  """Why a context is skipped ('empty', 'too_long'), or None."""
  if not context.strip():
    return "empty"
  context_tokens = len(base.tokenizer.encode(context + "\n\n", add_bos=False))
  prompt_tokens = len(query.tokenizer.encode(template.replace(CONTEXT_SLOT, context)))
  if (context_tokens > config.max_context_tokens
      or prompt_tokens + config.query_max_tokens > query.config.max_seq_len):
    return "too_long"
  return None


def prepare_shard(contexts: Sequence[str], first_index: int, shard_index: int, *, base: Placed, query: Placed,
                  template: str, config: PrepareConfig, provenance: dict[str, Any]
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """The records of contexts[i] (context_index first_index + i), and the shard's counts."""
  counts = {"shard": shard_index, "contexts": [first_index, first_index + len(contexts)], "records": 0,
            "skipped_contexts": {"empty": [], "too_long": []},
            "dropped_queries": {"empty": 0, "duplicate": 0, "too_long": 0}, "unanswered": 0}
  kept = []
  for i, context in enumerate(contexts):
    reason = _context_skip(context, base, query, template, config)
    if reason is None:
      kept.append((first_index + i, context))
    else:
      counts["skipped_contexts"][reason].append(first_index + i)
  key = jax.random.fold_in(jax.random.key(config.seed), shard_index)

  # Queries: num_queries samples a context; empty and repeated ones are dropped.
  prompts = [query.tokenizer.encode(template.replace(CONTEXT_SLOT, c)) for _, c in kept for _ in
             range(config.num_queries)]
  generated = generate_rows(query, prompts, config.query_sampling, jax.random.fold_in(key, 0),
                            batch_size=config.batch_size, bucket=config.bucket) if prompts else []
  asked = []  # (context_index, query_index, context, query)
  for n, (index, context) in enumerate(kept):
    seen = set()
    for j in range(config.num_queries):
      text = _first_line(query.tokenizer.decode(generated[n * config.num_queries + j]))
      problem = "empty" if not text else "duplicate" if text in seen else None
      if problem:
        counts["dropped_queries"][problem] += 1
        continue
      seen.add(text)
      prefix = teacher_prefix(base.tokenizer, context, text, base.config.bos_id)
      if len(prefix) + config.answer_max_tokens > base.config.max_seq_len:
        counts["dropped_queries"]["too_long"] += 1
        continue
      asked.append((index, j, context, text, prefix))

  # Answers: the base model's greedy first line, with the context in its prompt.
  answered = generate_rows(base, [a[4] for a in asked], config.answer_sampling, jax.random.fold_in(key, 1),
                           batch_size=config.batch_size, bucket=config.bucket) if asked else []
  rows = []
  for (index, j, context, text, prefix), ids in zip(asked, answered):
    answer = _first_line(base.tokenizer.decode(ids))
    if not answer:
      counts["unanswered"] += 1
      continue
    rows.append((index, j, context, text, answer, prefix, answer_ids(base.tokenizer, answer, base.config.eos_id)))

  # The teacher's top-k at " {answer}" + EOS.
  topk = teacher_topk_rows(base, [r[5] for r in rows], [r[6] for r in rows], k=config.top_k,
                           batch_size=config.batch_size, bucket=config.bucket) if rows else []
  records = [{"document": context, "query": text, "answer": answer, "context_index": index, "query_index": j,
              "teacher_topk_logprobs": logprobs, "teacher_topk_ids": ids, "provenance": provenance}
             for (index, j, context, text, answer, _, _), (logprobs, ids) in zip(rows, topk)]
  counts["records"] = len(records)
  return records, counts


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class PrepareResult:
  folder: str
  report: dict[str, Any] | None  # the whole run's counts (None on processes other than 0)
  shards_written: int  # by this process in this run (finished ones are skipped)
  records_per_second: float  # this process's, over the shards it wrote


def _model_identity(model: base_model_lib.BaseModel) -> dict[str, str]:
  identity = io.base_identity(model)
  return {"name": identity.name, "digest": identity.digest}


def _load(model: Any, dtype: str, what: str, log: Callable[[str], None]) -> base_model_lib.BaseModel:
  if isinstance(model, base_model_lib.BaseModel):
    return model
  log(f"loading the {what} {model or base_model_lib.DEFAULT_MODEL}")
  try:
    return base_model_lib.load_base_model(model, dtype=dtype, on_host=True)
  except (OSError, ValueError, LoraHyperError) as e:
    raise ValueError(f"the {what} {model!r} cannot be loaded, nothing was written: {e}") from e


def manifest(contexts: Sequence[str], config: PrepareConfig, template: str, base: base_model_lib.BaseModel,
             query: base_model_lib.BaseModel) -> dict[str, Any]:
  """What the folder is made of; a rerun resumes only a folder whose manifest is this one."""
  digest = hashlib.sha256()
  for context in contexts:
    digest.update(hashlib.sha256(context.encode()).digest())
  return {"format": prepared.FORMAT, "num_contexts": len(contexts),
          "num_shards": max(1, -(-len(contexts) // config.shard_size)), "contexts_sha256": digest.hexdigest(),
          "settings": dataclasses.asdict(config), "template": template,
          "provenance": {"base": _model_identity(base), "query_model": _model_identity(query),
                         "template_sha256": io.text_digest(template), "seed": config.seed}}


def _record_provenance(manifest_: dict[str, Any]) -> dict[str, Any]:
  p = manifest_["provenance"]
  return {"base": p["base"]["digest"][:16], "query_model": p["query_model"]["digest"][:16],
          "template": p["template_sha256"][:16], "seed": p["seed"]}


def _open_folder(out: Path, wanted: dict[str, Any]) -> None:
  """Refuses a folder that holds anything but a preparation with these very settings."""
  path = out / prepared.MANIFEST
  if path.is_file():
    have = json.loads(path.read_text())
    if have != wanted:
      differ = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
      settings = sorted(k for k in wanted["settings"] if have.get("settings", {}).get(k) != wanted["settings"][k])
      raise ValueError(f"{str(out)!r} holds a preparation made otherwise (differs in {', '.join(differ)}"
                       + (f": {', '.join(settings)}" if settings else "") + "); nothing was overwritten: rerun "
                       "with its settings to finish it, or choose a new folder")
  elif out.is_dir() and any(out.iterdir()):
    raise ValueError(f"{str(out)!r} holds other files and no {prepared.MANIFEST}; choose a new or empty folder")


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _log(message: str) -> None:
  print(f"[lora-hyper] {message}", file=sys.stderr, flush=True)


def summarize(folder: Path, count: int) -> dict[str, Any]:
  """The counts of every shard, added up (skipped contexts listed by index)."""
  shards = [json.loads(prepared.marker_path(folder, i, count).read_text()) for i in range(count)]
  skipped = {r: sorted(i for s in shards for i in s["skipped_contexts"][r]) for r in ("empty", "too_long")}
  return {"records": sum(s["records"] for s in shards), "shards": count, "skipped_contexts": skipped,
          "dropped_queries": {r: sum(s["dropped_queries"][r] for s in shards) for r in ("empty", "duplicate", "too_long")},
          "unanswered": sum(s["unanswered"] for s in shards)}


@gin.configurable(module="lora_hyper")
def prepare_data(*, out: str = gin.REQUIRED, contexts: Any = gin.REQUIRED, base_model: Any = None,
                 query_model: Any = None, query_template: str = "base", config: PrepareConfig = PrepareConfig(),
                 mesh_shape: Sequence[int] = (-1, 1, 1), dtype: str = "float32",
                 log: Callable[[str], None] = _log) -> PrepareResult:
  """Writes the prepared folder `out` for `contexts` (a list of str: see `text_contexts`,
  `jsonl_contexts`, `source_contexts`, `fictional_contexts`); resumes one a killed run left.

  `base_model` answers and is the teacher; `query_model` writes the queries (both: None for the
  embedded Gemma 3 270M, a local Hugging Face folder, a .gguf file, or a loaded BaseModel). A model
  that cannot be loaded, a template without `{context}` or a folder holding another preparation
  stop the run before anything is written. Empty and oversized contexts are skipped and counted
  (`report.json`, and the log).
  """
  distributed.maybe_initialize()
  if files.is_url(out):
    raise ValueError(f"out={out!r} is a URL: prepare into a local or mounted folder, then copy it")
  if isinstance(contexts, str) or not all(isinstance(c, str) for c in contexts):
    raise TypeError("contexts must be a list of strings (see lora_hyper.text_contexts / jsonl_contexts)")
  contexts = list(contexts)
  if not contexts:
    raise ValueError("contexts is empty: there is nothing to prepare")
  template = read_template(query_template)
  query = _load(query_model, dtype, "query model", log)
  base = query if base_model == query_model and not isinstance(base_model, base_model_lib.BaseModel) else \
      _load(base_model, dtype, "base model", log)
  mesh = sharding.make_mesh(*mesh_shape, devices=jax.local_devices())
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.batch_size % data_parallel:
    raise ValueError(f"PrepareConfig.batch_size={config.batch_size} does not split over this host's "
                     f"{data_parallel} data-parallel devices (mesh {dict(mesh.shape)})")
  wanted = manifest(contexts, config, template, base, query)
  out_path = Path(out)
  _open_folder(out_path, wanted)
  if jax.process_index() == 0 and not (out_path / prepared.MANIFEST).is_file():
    files.atomic_write(out_path / prepared.MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(wanted, indent=1)))
  _barrier("prepare-data: manifest")

  count, size = wanted["num_shards"], config.shard_size
  mine = list(range(jax.process_index(), count, jax.process_count()))
  todo = [i for i in mine if not prepared.marker_path(out_path, i, count).is_file()]
  for i in todo:  # what a killed run of this host left half written
    for stale in out_path.glob(prepared.shard_name(i, count) + ".*.tmp"):
      stale.unlink()
  log(f"host {jax.process_index()} of {jax.process_count()}: {len(todo)} of its {len(mine)} shards to write "
      f"({count} in all, {size} contexts each); {len(mine) - len(todo)} already finished")
  placed_base = place(base, mesh)
  placed_query = placed_base if query is base else place(query, mesh)
  provenance = _record_provenance(wanted)
  start, written = time.perf_counter(), 0
  for n, i in enumerate(todo, start=1):
    records, counts = prepare_shard(contexts[i * size:(i + 1) * size], i * size, i, base=placed_base,
                                    query=placed_query, template=template, config=config, provenance=provenance)
    files.atomic_write(prepared.shard_path(out_path, i, count), lambda tmp: prepared.write_shard(tmp, records))
    files.atomic_write(prepared.marker_path(out_path, i, count), lambda tmp: Path(tmp).write_text(json.dumps(counts)))
    written += len(records)
    elapsed = time.perf_counter() - start
    skipped = sum(len(v) for v in counts["skipped_contexts"].values())
    log(f"shard {i + 1}/{count}: {len(records)} records" + (f", {skipped} contexts skipped" if skipped else "")
        + f"; {n}/{len(todo)} of this host's, {written / elapsed:.2f} records/s, ETA "
        f"{_duration(elapsed / n * (len(todo) - n))}")
  rate = written / (time.perf_counter() - start) if todo else 0.0
  _barrier("prepare-data: shards")
  report = None
  if jax.process_index() == 0:
    missing = prepared.missing_shards(out_path, count)
    if missing:
      raise RuntimeError(f"{len(missing)} shards are missing after every host finished: {missing[:5]}")
    report = summarize(out_path, count)
    files.atomic_write(out_path / prepared.REPORT, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    skipped = report["skipped_contexts"]
    log(f"{report['records']} records from {len(contexts)} contexts in {out}; skipped contexts: "
        f"{len(skipped['empty'])} empty, {len(skipped['too_long'])} over {config.max_context_tokens} tokens "
        f"(indices in {prepared.REPORT}); queries dropped: {report['dropped_queries']}; unanswered: "
        f"{report['unanswered']}")
  return PrepareResult(str(out_path), report, len(todo), rate)
