"""Evaluates Text-to-LoRA on the task library: zero-shot on held-out tasks (experiment 1),
reconstruction fidelity on training tasks (experiment 2) and zero-shot against the number of
training tasks (experiment 3), against the base model (bare, with the description in its prompt,
with in-context examples), the multi-task LoRA and the per-task oracle LoRAs.

  .venv/bin/python -m experiments.t2l.run --loras runs/t2l_loras \
    --sft L=lora_hyper/pretrained/t2l_gemma3_270m --recon 118=runs/t2l_recon/hypernetwork

Score: exact match of the whole greedy answer (and its EOS), read from one teacher-forced forward
(`qa.greedy_matches`). Held-out tasks are read with their held-out descriptions (a core phrasing never seen in
training); adapters are generated per example from that example's description. Controls:
random strings, and a description of another held-out task, as the description.
Writes experiments/results/t2l.{json,md,png}. Without rerunning the rest, `--add-sft HEAD=DIR ...`
adds SFT heads (e.g. M and S; `HEAD:N=DIR` one trained on N tasks, a point of the SFT scaling
curve), and `--loras DIR --redo-library --recon N=DIR ...` rescores a new oracle library and the
reconstruction hypernetworks trained on it.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from lora_hyper import configurables, qa
from lora_hyper.adapters import io, lora
from lora_hyper.baselines import task_loras
from lora_hyper.data import pipeline, tasks
from lora_hyper.hypernetworks import saved, text_to_lora
from lora_hyper.model import base_model
from lora_hyper.prompts import task_answer, task_prompt

EVAL_SHAPES = pipeline.TaskExampleShapes(seq_len=64, answer_len=32)  # no answer in the library is cut
ICL_SHAPES = pipeline.TaskExampleShapes(seq_len=288, answer_len=32)  # 3 demonstrations (or a description) fit
BATCH = 32
OWN_TASK_EXAMPLES = 240  # a reconstruction hypernetwork's own training tasks: examples in all


def _log(message: str) -> None:
  print(f"[t2l] {message}", file=sys.stderr, flush=True)


class Evaluator:
  """Examples of some tasks, tokenized once; `score(adapters_for)` runs them in batches."""

  def __init__(self, base, records: list[dict], shapes=EVAL_SHAPES, prompt: Callable[[dict], str] | None = None):
    self.base, self.records = base, records
    cfg = base.config
    examples = []
    for r in records:
      fmt = (lambda inp, r=r: prompt(r) + task_prompt(inp)) if prompt else task_prompt
      examples.append(pipeline.sft_example(r, base.tokenizer, cfg.bos_id, cfg.eos_id, cfg.pad_id, shapes, fmt))
    self.examples = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    self.line_ends = (cfg.eos_id, *{t for text in ("\n", "\n\n") for t in base.tokenizer.encode(text, add_bos=False)})

  def score(self, adapters_for: Callable[[list[dict]], lora.LoraAdapter | None]) -> dict[str, np.ndarray]:
    """Per record: exact (answer + EOS), exact_line (answer + EOS or line end), token_accuracy."""
    parts = []
    for start in range(0, len(self.records), BATCH):
      rows = self.records[start:start + BATCH]
      batch = {k: jnp.asarray(v[start:start + BATCH]) for k, v in self.examples.items()}
      parts.append(qa.greedy_matches(self.base.params, batch, adapters_for(rows), config=self.base.config,
                                     line_ends=self.line_ends))
    names = ("exact_match", "exact_match_line_end", "token_accuracy")
    return {n: np.concatenate([np.asarray(p[i]) for p in parts]) for i, n in enumerate(names)}


def _summary(scores: dict[str, np.ndarray], records: list[dict] | None = None) -> dict:
  """Means of every score, and per task the exact match with a line end (when `records` given)."""
  out: dict = {k: float(v.mean()) for k, v in scores.items()}
  if records is not None:
    out["per_task"] = _by_task(records, scores["exact_match_line_end"])
  return out


def _by_task(records: list[dict], values: np.ndarray) -> dict[str, float]:
  out: dict[str, list[float]] = {}
  for r, v in zip(records, values):
    out.setdefault(r["task_id"], []).append(float(v))
  return {t: float(np.mean(v)) for t, v in out.items()}


def _random_description(rng: np.random.Generator) -> str:
  words = ["".join(rng.choice(list(string.ascii_lowercase), int(rng.integers(3, 9)))) for _ in range(8)]
  return " ".join(words)


def _generated(hyper: saved.SavedHypernetwork, encoder, describe: Callable[[dict], str]):
  return lambda rows: text_to_lora.generate_adapter(hyper.variables, [describe(r) for r in rows], config=hyper.config,
                                                    encoder=encoder)


def _stacked(adapters: lora.LoraAdapter, index: dict[str, int]):
  """Per-example rows of a batched adapter (one per task), picked by each record's task."""
  return lambda rows: lora.LoraAdapter(
      jax.tree.map(lambda w: w[np.asarray([index[r["task_id"]] for r in rows])], dict(adapters.weights)),
      adapters.scaling)


def _load_library(folder: Path, task_ids: Sequence[str]) -> lora.LoraAdapter:
  adapters = [io.load_adapter(p)[0] for p in task_loras.library_paths(str(folder), task_ids)]
  return lora.LoraAdapter(jax.tree.map(lambda *w: jnp.stack(w), *[dict(a.weights) for a in adapters]),
                          adapters[0].scaling)


def _delta_inner(a: lora.LoraAdapter, b: lora.LoraAdapter) -> jax.Array:
  """<delta_a, delta_b> summed over modules and layers, without building a delta:
  <A1^T B1, A2^T B2>_F = sum_ij (A1 A2^T)_ij (B1 B2^T)_ij, per layer."""
  total = 0.0
  for m in a.modules:
    x, y = a.weights[m], b.weights[m]
    total += jnp.sum(jnp.einsum("...ri,...si->...rs", x["a"], y["a"]) * jnp.einsum("...ro,...so->...rs", x["b"], y["b"]))
  return a.scaling * b.scaling * total


def _delta_cosine(a: lora.LoraAdapter, b: lora.LoraAdapter) -> float:
  """Cosine between two adapters' full weight deltas (all modules and layers, flattened)."""
  return float(_delta_inner(a, b) / jnp.sqrt(_delta_inner(a, a) * _delta_inner(b, b) + 1e-30))


def _oracle_clustering(oracles: lora.LoraAdapter, task_list: Sequence[tasks.Task]) -> dict[str, float]:
  """Mean cosine between the oracle LoRAs' deltas of two tasks of the same family and of
  different families: do the reconstruction targets cluster by task?"""
  n = len(task_list)
  inner = jax.jit(lambda i, j: _delta_inner(lora.take(oracles, i), lora.take(oracles, j)))
  norms = np.sqrt([float(inner(i, i)) for i in range(n)])
  same, different = [], []
  for i in range(n):
    for j in range(i + 1, n):
      cosine = float(inner(i, j)) / (norms[i] * norms[j])
      (same if task_list[i].family == task_list[j].family else different).append(cosine)
  return {"same_family": float(np.mean(same)), "different_family": float(np.mean(different))}


def _named_dirs(items: Sequence[str], what: str) -> dict[str, str]:
  out = {}
  for item in items:
    name, sep, folder = item.partition("=")
    if not sep:
      raise SystemExit(f"{what} takes NAME=DIR, got {item!r}")
    out[name] = folder
  return out


def _training_steps(hyper: saved.SavedHypernetwork) -> int | None:
  """The `train.steps` a saved hypernetwork was trained for (its config.gin), when recorded."""
  match = re.search(r"^train\.steps = (\d+)$", hyper.gin_config or "", re.M)
  return int(match.group(1)) if match else None


def _held_out_records(per_task: int) -> list[dict]:
  held = tasks.TaskExamples(tasks.held_out_tasks(), seed=1, num_examples_per_task=per_task, descriptions="test")
  return [held[i] for i in range(len(held))]


def _train_records(per_task: int) -> list[dict]:
  seen = tasks.TaskExamples(tasks.train_tasks(), seed=1, num_examples_per_task=per_task, descriptions="train")
  return [seen[i] for i in range(len(seen))]


def _after_heads(rows: dict, added: dict) -> dict:
  """`rows` with `added` placed after its last plain SFT head (before the controls)."""
  names = list(rows)
  heads = [i for i, n in enumerate(names) if n.startswith("T2L SFT-") and "," not in n and n not in added]
  cut = heads[-1] + 1 if heads else len(names)
  return {**{n: rows[n] for n in names[:cut] if n not in added}, **added,
          **{n: rows[n] for n in names[cut:] if n not in added}}


def _recon_rows(base, encoder, recon: dict[int, saved.SavedHypernetwork], held: list[dict], train: list[dict],
                oracles: lora.LoraAdapter) -> tuple[dict, dict]:
  """Reconstruction hypernetworks by number of training tasks: every one zero-shot on `held` and
  on its own training tasks against their oracles; the one of the most tasks on `train` too, with
  its deltas' cosine to the oracles' and the best any head of its width could do."""
  zero, fidelity, own = {}, {}, {}
  index = {t.task_id: i for i, t in enumerate(tasks.train_tasks())}
  held_eval, train_eval = Evaluator(base, held), Evaluator(base, train)  # tokenized once for every model
  for n, hyper in sorted(recon.items()):
    name = f"T2L recon ({n} tasks)"
    generated = _generated(hyper, encoder, lambda r: r["description"])
    zero[name] = _summary(held_eval.score(generated), held)
    _log(f"held-out {name}: {zero[name]}")
    per_task = max(2, OWN_TASK_EXAMPLES // n)  # about the same number of examples for every library size
    seen = tasks.TaskExamples(configurables.task_library(num_tasks=n).tasks, seed=1,
                              num_examples_per_task=per_task, descriptions="train")
    evaluator = Evaluator(base, [seen[i] for i in range(len(seen))])
    own[str(n)] = {"examples_per_task": per_task, "steps": _training_steps(hyper),
                   "recon": _summary(evaluator.score(generated)),
                   "oracles": _summary(evaluator.score(_stacked(oracles, index)))}
    _log(f"{name} on its own tasks: {own[str(n)]}")
  if recon:
    full = max(recon)
    name = f"T2L recon ({full} tasks)"
    fidelity[name] = _summary(train_eval.score(_generated(recon[full], encoder, lambda r: r["description"])))
    _log(f"training tasks {name}: {fidelity[name]}")
    if recon[full].config.head == "L" and full == len(index):
      width = recon[full].config.head_in_dim
      ceiling = f"oracle LoRAs in their top-{width} subspace (an L head of width {width} at best)"
      fidelity[ceiling] = _summary(train_eval.score(_stacked(_top_subspace(oracles, width), index)))
      _log(f"training tasks {ceiling}: {fidelity[ceiling]}")
    generated = text_to_lora.generate_adapter(recon[full].variables,
                                              [t.split_descriptions("train")[0] for t in tasks.train_tasks()],
                                              config=recon[full].config, encoder=encoder)
    cosines = [_delta_cosine(lora.take(generated, i), lora.take(oracles, i)) for i in range(len(index))]
    fidelity["delta_cosine_recon_vs_oracle"] = {"mean": float(np.mean(cosines)), "min": float(np.min(cosines))}
    fidelity["recon_own_tasks"] = own
  return zero, fidelity


def _top_subspace(library: lora.LoraAdapter, width: int) -> lora.LoraAdapter:
  """The library's factors projected, per module, onto their best `width`-dim affine subspace over
  all (task, layer) rows: an L head emits a module's A and B of every task and layer as one linear
  map of a `width`-wide input plus a bias, so this is the closest to the library it can get."""
  out = {}
  for module, factors in library.weights.items():
    a, b = np.asarray(factors["a"]), np.asarray(factors["b"])
    rows = np.concatenate([a.reshape(a.shape[0] * a.shape[1], -1), b.reshape(b.shape[0] * b.shape[1], -1)], 1)
    mean = rows.mean(axis=0)
    u, s, vt = np.linalg.svd(rows - mean, full_matrices=False)
    fitted = (u[:, :width] * s[:width]) @ vt[:width] + mean
    split = a.shape[2] * a.shape[3]
    out[module] = {"a": jnp.asarray(fitted[:, :split].reshape(a.shape)),
                   "b": jnp.asarray(fitted[:, split:].reshape(b.shape))}
  return lora.LoraAdapter(out, library.scaling)


def _oracle_rows(base, train: list[dict], oracles: lora.LoraAdapter) -> dict:
  """The per-task oracle LoRAs on the training tasks, and how their deltas cluster."""
  index = {t.task_id: i for i, t in enumerate(tasks.train_tasks())}
  rows = {"oracle LoRAs (one per task)": _summary(Evaluator(base, train).score(_stacked(oracles, index)))}
  _log(f"training tasks oracle LoRAs: {rows['oracle LoRAs (one per task)']}")
  rows["oracle_delta_cosine"] = _oracle_clustering(oracles, tasks.train_tasks())
  return rows


def _saved_results() -> dict:
  path = common.RESULTS / "t2l.json"
  if not path.is_file():
    raise SystemExit(f"{path} does not exist: run the full evaluation first")
  return json.loads(path.read_text())


def _save_updated(result: dict) -> None:
  """Writes results changed by this command: the first run's command and date stay, `added_by`
  names this one."""
  result.setdefault("added_by", []).append(common.command())
  common.write_json("t2l", result)
  _write_markdown(result, [t.task_id for t in tasks.held_out_tasks()])
  _plot(result)


def redo_library(loras: str, recon_specs: Sequence[str]) -> None:
  """Rescores what depends on the oracle library (its row and clustering) and the reconstruction
  hypernetworks trained on it, replacing those rows of the saved results; the rest stands."""
  result = _saved_results()
  base = base_model.load_base_model(None)
  recon_dirs = _named_dirs(recon_specs, "--recon")
  recon = {int(n): saved.load_hypernetwork(d, base) for n, d in recon_dirs.items()}
  encoder = next(iter(recon.values())).task_encoder(base)
  oracles = _load_library(Path(loras) / "oracles", [t.task_id for t in tasks.train_tasks()])
  held = _held_out_records(result["held_out_examples_per_task"])
  train = _train_records(result["train_examples_per_task"])
  zero, fidelity = _recon_rows(base, encoder, recon, held, train, oracles)
  library = _oracle_rows(base, train, oracles)
  is_recon = lambda name: name.startswith("T2L recon (")
  result["zero_shot"] = _after_heads({k: v for k, v in result["zero_shot"].items() if not is_recon(k)}, zero)
  kept = {k: library.get(k, v) for k, v in result["training_tasks"].items() if not is_recon(k)}
  result["training_tasks"] = _after_heads(kept, {k: v for k, v in fidelity.items() if is_recon(k)})
  result["training_tasks"].update({k: v for k, v in fidelity.items() if not is_recon(k)})
  result["hypernetworks"] = {k: v for k, v in result["hypernetworks"].items() if not k.isdigit()} | recon_dirs
  _save_updated(result)


def add_heads(specs: Sequence[str]) -> None:
  """Scores more SFT heads on the saved run's records and adds their rows to results/t2l.*."""
  result = _saved_results()
  base = base_model.load_base_model(None)
  dirs = _named_dirs(specs, "--add-sft")
  sft = {h: saved.load_hypernetwork(d, base) for h, d in dirs.items()}
  encoder = next(iter(sft.values())).task_encoder(base)
  held = _held_out_records(result["held_out_examples_per_task"])
  train = _train_records(result["train_examples_per_task"])
  zero, fidelity = {}, {}
  for head, hyper in sft.items():
    head, _, num_tasks = head.partition(":")
    name, adapters_for = f"T2L SFT-{head}", _generated(hyper, encoder, lambda r: r["description"])
    if num_tasks:  # a point of the scaling curve: held-out tasks only
      name = f"{name} ({int(num_tasks)} tasks)"
    zero[name] = _summary(Evaluator(base, held).score(adapters_for), held)
    if not num_tasks:
      fidelity[name] = _summary(Evaluator(base, train).score(adapters_for))
    _log(f"{name}: held-out {zero[name]}, training tasks {fidelity.get(name)}")
  result["zero_shot"] = _after_heads(result["zero_shot"], zero)
  result["training_tasks"] = _after_heads(result["training_tasks"], fidelity)
  result["hypernetworks"].update(dirs)
  _save_updated(result)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--loras", help="folder written by experiments.t2l.oracles")
  parser.add_argument("--sft", nargs="+", default=[], help="HEAD=DIR of SFT-trained Text-to-LoRAs (L, M, S)")
  parser.add_argument("--add-sft", nargs="+", default=[],
                      help="HEAD=DIR: only score these SFT heads and add them to the saved results; HEAD:N=DIR "
                           "for one trained on N tasks (task_library.num_tasks = N): a point of the scaling curve")
  parser.add_argument("--recon", nargs="*", default=[],
                      help="TASKS=DIR of reconstruction-trained Text-to-LoRAs, by number of training tasks")
  parser.add_argument("--redo-library", action="store_true",
                      help="only rescore the oracle library (--loras) and the --recon hypernetworks trained on it, "
                           "replacing their rows of the saved results")
  parser.add_argument("--held-out-examples", type=int, default=20, help="per held-out task")
  parser.add_argument("--train-examples", type=int, default=4, help="per training task (experiment 2)")
  parser.add_argument("--icl-shots", type=int, default=3)
  args = parser.parse_args(argv)
  if args.add_sft:
    return add_heads(args.add_sft)
  if not args.loras:
    raise SystemExit("give --loras (the folder experiments.t2l.oracles wrote)")
  if args.redo_library:
    if not args.recon:
      raise SystemExit("--redo-library rescores reconstruction hypernetworks: give --recon TASKS=DIR ...")
    return redo_library(args.loras, args.recon)
  sft_dirs, recon_dirs = _named_dirs(args.sft, "--sft"), _named_dirs(args.recon, "--recon")
  if not sft_dirs:
    raise SystemExit("give at least one --sft HEAD=DIR")

  base = base_model.load_base_model(None)
  sft = {h: saved.load_hypernetwork(d, base) for h, d in sft_dirs.items()}
  recon = {int(n): saved.load_hypernetwork(d, base) for n, d in recon_dirs.items()}
  encoder = next(iter(sft.values())).task_encoder(base)
  train_ids = [t.task_id for t in tasks.train_tasks()]
  multitask = io.load_adapter(Path(args.loras) / "multitask", base)[0]
  oracles = _load_library(Path(args.loras) / "oracles", train_ids)
  rng = np.random.default_rng(0)
  result: dict = {"held_out_examples_per_task": args.held_out_examples,
                  "train_examples_per_task": args.train_examples, "hypernetworks": {**sft_dirs, **recon_dirs}}

  # ---- experiment 1: zero-shot on held-out tasks, from held-out descriptions
  records = _held_out_records(args.held_out_examples)
  evaluator = Evaluator(base, records)
  held_ids = [t.task_id for t in tasks.held_out_tasks()]
  other = {t: tasks.get_task(held_ids[(i + 1) % len(held_ids)]).split_descriptions("test")
           for i, t in enumerate(held_ids)}
  randoms = {id(r): _random_description(rng) for r in records}
  heads = {f"T2L SFT-{head}": _generated(hyper, encoder, lambda r: r["description"]) for head, hyper in sft.items()}
  methods: dict[str, Callable] = {"base model": lambda rows: None, "multi-task LoRA": lambda rows: multitask, **heads}
  first = next(iter(sft))
  methods[f"T2L SFT-{first}, random-string description"] = _generated(sft[first], encoder, lambda r: randoms[id(r)])
  methods[f"T2L SFT-{first}, another task's description"] = _generated(
      sft[first], encoder, lambda r: other[r["task_id"]][zlib.crc32(r["input"].encode()) % len(other[r["task_id"]])])
  zero_shot = {}
  for name, adapters_for in methods.items():
    start = time.perf_counter()
    zero_shot[name] = _summary(evaluator.score(adapters_for), records)
    _log(f"held-out {name}: {zero_shot[name]} ({time.perf_counter() - start:.0f}s)")
  demos = tasks.TaskExamples(tasks.held_out_tasks(), seed=2, num_examples_per_task=args.icl_shots)
  shots = {t: "".join(f"{task_prompt(d['input'])}{task_answer(d['output'])}\n\n"
                      for d in (demos[i * args.icl_shots + j] for j in range(args.icl_shots)))
           for i, t in enumerate(held_ids)}
  prompted = {"base model, description in prompt": lambda r: r["description"] + "\n",
              f"base model + {args.icl_shots} in-context examples": lambda r: shots[r["task_id"]]}
  for name, prompt in prompted.items():
    zero_shot[name] = _summary(Evaluator(base, records, ICL_SHAPES, prompt=prompt).score(lambda rows: None), records)
    _log(f"held-out {name}: {zero_shot[name]}")
  result["zero_shot"] = zero_shot

  # ---- experiment 2: training tasks (seen descriptions, new examples): generated vs oracle LoRAs
  train_records = _train_records(args.train_examples)
  train_eval = Evaluator(base, train_records)
  library = _oracle_rows(base, train_records, oracles)
  fidelity = {}
  for name, adapters_for in {"base model": lambda rows: None, "multi-task LoRA": lambda rows: multitask}.items():
    fidelity[name] = _summary(train_eval.score(adapters_for))
    _log(f"training tasks {name}: {fidelity[name]}")
  fidelity["oracle LoRAs (one per task)"] = library.pop("oracle LoRAs (one per task)")
  for name, adapters_for in heads.items():
    fidelity[name] = _summary(train_eval.score(adapters_for))
    _log(f"training tasks {name}: {fidelity[name]}")
  recon_zero, recon_fidelity = _recon_rows(base, encoder, recon, records, train_records, oracles)
  result["zero_shot"] = _after_heads(result["zero_shot"], recon_zero)
  result["training_tasks"] = {**fidelity, **recon_fidelity, **library}
  common.write_json("t2l", result)
  _write_markdown(result, held_ids)
  _plot(result)


def _write_markdown(result: dict, held_ids: list[str]) -> None:
  zero = result["zero_shot"]
  body = "## Experiment 1: zero-shot on the 13 held-out tasks (held-out descriptions)\n\n"
  header = ["method", "exact match (answer, EOS)", "exact match (answer, EOS or line end)", "token accuracy"]
  row = lambda m, v: [m, v["exact_match"], v["exact_match_line_end"], v["token_accuracy"]]
  body += common.markdown_table(header, [row(m, v) for m, v in zero.items()])
  body += "\nPer held-out task (exact match, answer then EOS or line end):\n\n"
  names = list(zero)
  body += common.markdown_table(["task", *names], [[t, *[zero[m]["per_task"][t] for m in names]] for t in held_ids])
  body += "\n## Experiment 2: training tasks (seen descriptions, new examples)\n\n"
  train = {k: v for k, v in result["training_tasks"].items() if "exact_match" in v}
  body += common.markdown_table(header, [row(m, v) for m, v in train.items()])
  if "delta_cosine_recon_vs_oracle" in result["training_tasks"]:
    c = result["training_tasks"]["delta_cosine_recon_vs_oracle"]
    body += (f"\nCosine between the reconstruction hypernetwork's weight deltas and the oracle LoRAs' "
             f"(all modules and layers): mean {c['mean']:.3f}, min {c['min']:.3f} over the training tasks.\n")
  own = result["training_tasks"].get("recon_own_tasks")
  if own:
    body += ("\nEach reconstruction hypernetwork on its own training tasks (seen descriptions, new examples), "
             "against those tasks' oracle LoRAs on the same examples:\n\n")
    body += common.markdown_table(
        ["training tasks", "training steps (batch 8)", "examples", "oracle LoRAs: exact match",
         "reconstruction: exact match", "oracle LoRAs: token accuracy", "reconstruction: token accuracy"],
        [[n, v.get("steps") or "-", v["examples_per_task"] * int(n), v["oracles"]["exact_match"],
          v["recon"]["exact_match"], v["oracles"]["token_accuracy"], v["recon"]["token_accuracy"]]
         for n, v in own.items()])
  if "oracle_delta_cosine" in result["training_tasks"]:
    c = result["training_tasks"]["oracle_delta_cosine"]
    body += (f"\nCosine between the oracle LoRAs' deltas of two training tasks: {c['same_family']:.3f} within a "
             f"family (e.g. rot_1 and rot_2), {c['different_family']:.3f} across families.\n")
  exact, accuracy = _scaling_curves(zero), _scaling_curves(zero, "token_accuracy")
  if exact:
    body += "\n## Experiment 3: zero-shot against the number of training tasks (held-out tasks)\n\n"
    sizes = sorted({n for points in exact.values() for n in points})
    header = ["training tasks", *[f"{c}: {m}" for c in exact for m in ("exact match", "token accuracy")]]
    body += common.markdown_table(header, [[n, *[curve.get(n, "-") for c in exact for curve in (exact[c], accuracy[c])]]
                                           for n in sizes])
  if result.get("added_by"):
    body = (f"The first run: `{result['command']}`; rows added or replaced by: "
            + "; ".join(f"`{c}`" for c in result["added_by"]) + ".\n\n" + body)
  common.write_markdown("t2l", "Text-to-LoRA on the task library (Gemma 3 270M)", body)


def _scaling_curves(zero: dict, metric: str = "exact_match_line_end") -> dict[str, dict[int, float]]:
  """Held-out `metric` by number of training tasks, per mode, from rows named "T2L recon (N tasks)"
  and "T2L SFT-H (N tasks)" (whose full-library point is the plain "T2L SFT-H" row); only curves
  of two or more points."""
  curves: dict[str, dict[int, float]] = {}
  for name, v in zero.items():
    if "," in name or not name.endswith(" tasks)"):
      continue
    mode, count = name.removeprefix("T2L ").split(" (")
    curves.setdefault("reconstruction" if mode == "recon" else mode, {})[int(count.split()[0])] = v[metric]
  full = len(tasks.train_tasks())
  for mode, points in curves.items():
    if mode.startswith("SFT-") and f"T2L {mode}" in zero:
      points.setdefault(full, zero[f"T2L {mode}"][metric])
  return {m: dict(sorted(p.items())) for m, p in curves.items() if len(p) > 1}


def _plot(result: dict) -> None:
  plt = common.pyplot()

  zero = result["zero_shot"]
  curves = _scaling_curves(zero)
  fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(13 if curves else 8, 4.5), squeeze=False)
  ax = axes[0, 0]
  names = list(zero)
  y = np.arange(len(names))
  ax.barh(y - 0.2, [zero[n]["exact_match_line_end"] for n in names], height=0.4, label="answer, then EOS or line end")
  ax.barh(y + 0.2, [zero[n]["exact_match"] for n in names], height=0.4, label="answer, then EOS")
  ax.legend(fontsize=8)
  ax.set_yticks(y, names, fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel("exact match, 13 held-out tasks")
  ax.set_title("zero-shot (held-out tasks and descriptions)")
  if curves:
    ax = axes[0, 1]
    for curve, points in curves.items():
      ax.plot(list(points), list(points.values()), marker="o", label=f"{curve}, held-out tasks")
    own = result["training_tasks"].get("recon_own_tasks", {})
    if own:
      sizes = [int(n) for n in own]
      ax.plot(sizes, [v["recon"]["exact_match"] for v in own.values()], marker="o",
              label="reconstruction, its own training tasks")
      ax.plot(sizes, [v["oracles"]["exact_match"] for v in own.values()], marker="x", linestyle="--",
              label="oracle LoRAs, the same tasks")
    ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("training tasks")
    ax.set_ylabel("exact match")
    ax.set_title("scaling")
  common.save_figure(fig, "t2l")


if __name__ == "__main__":
  main()
