"""Why does Doc-to-LoRA learn the 4-digit needle so slowly? Short runs that each change one thing.

The NIAH run's adapters carry the needle's first two digits after 1,400 steps. Here every variant
trains on the same batches (batch 8, a fresh 4-digit needle in every haystack of 16-48 tokens, one
64-token chunk, plain cross-entropy) and is scored on 64 held-out haystacks: digits right at their
position and whole numbers right (teacher-forced argmax), with the codes centred on the running
mean as generation does, and also on the held-out batch's own mean as meta-training centres them
(the running mean lags the codes while the learning rate is constant).

- A ridge probe per layer: are the needle's digits, and their positions in the number, readable
  from the RMS-normed activations the hypernetwork reads (the early-exit encoder reads Z_4)?
- `digit_table`: no hypernetwork, the adapter is a sum of learned factors per (position, digit
  value) looked up from the answer: how fast the adapter side alone learns the number.
- Hypernetwork variants against the published heads as `experiments/niah/train.gin` first ran them
  (d2l_compact, early_exit, lr 1e-4):
  learning rate, rank, which B factor starts at zero (`zero_b_init`), only B generated
  (`generated_factors='b'`: the adapter linear in the code), the needle without filler, and a
  curriculum (needle alone first, then haystacks).

Run (about 6 minutes per 200-step variant; results accumulate across runs):
  .venv/bin/python -m experiments.niah.ablation --steps 200 --variants NAME ...
writes results/niah_ablation.{json,md,png}; the markdown lists the commands that made its rows.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from lora_hyper.adapters import lora
from lora_hyper.data import niah, pipeline
from lora_hyper.hypernetworks import doc_to_lora
from lora_hyper.model import base_model, transformer
from lora_hyper.training import losses, objectives

SHAPES = pipeline.DocExampleShapes(num_chunks=1, student_len=32, teacher_len=None, answer_len=6)
LENGTHS = (16, 48)
CHUNK_LEN = 64
# Every variant reads RMS-normed features and centres its codes (momentum 0.9): the experimental options
# that were DocToLoraConfig's defaults when these runs were made.
FEATURES_CENTRED = {"normalize_features": True, "center_momentum": 0.9}


def examples(base, config, sources, indices) -> dict[str, jax.Array]:
  """A batch of records `indices` (each from its own source, when `sources` is a list)."""
  sources = sources if isinstance(sources, list) else [sources] * len(indices)
  rows = [pipeline.doc_example(src[int(i)], base.tokenizer, config, SHAPES) for src, i in zip(sources, indices)]
  return {k: jnp.stack([r[k] for r in rows]) for k in rows[0]}


def digit_ids(tokenizer) -> list[int]:
  return [tokenizer.encode(str(d), add_bos=False)[-1] for d in range(10)]


def digit_scores(hits: jax.Array, targets: np.ndarray, ids: list[int]) -> tuple[float, float]:
  """(digits right at their position, whole numbers right) from teacher-forced argmax hits [N, answer]."""
  hits, digit = np.asarray(hits), np.isin(targets, ids)  # digits: not the leading space, not EOS
  return float(hits[digit].mean()), float(np.all(hits | ~digit, axis=-1).mean())


def digit_positions(hits: jax.Array, targets: np.ndarray, ids: list[int]) -> list[float]:
  """Teacher-forced hits per position in the number (first digit first)."""
  hits, digit = np.asarray(hits), np.isin(targets, ids)
  order = np.cumsum(digit, axis=-1) - 1  # which digit of the number each answer token is
  return [float(hits[digit & (order == k)].mean()) for k in range(int(digit.sum(-1).max()))]


class Method(NamedTuple):
  """What a variant trains: its Flax variables ({"params": ...} and any running statistics),
  loss(variables, batch) -> (loss, the statistics after this batch, {} if none), and the adapters
  it gives a batch (codes centred on the running mean as generation does, or on the batch as
  meta-training does). Only the params are trained; the statistics replace the old ones after a step."""

  variables: Any
  loss: Callable
  adapters: Callable


def hypernetwork(base, config) -> Method:
  objective = objectives.DocDistillation(config, loss="ce", l1_penalty=0.0)

  def loss(variables, batch):
    value, (_, stats) = objective(variables, base.params, batch, jax.random.key(0))
    return value, stats

  adapters = lambda variables, batch, on_batch=False: doc_to_lora.document_adapters(
      variables, base.params, batch["chunk_tokens"], batch["chunk_mask"], config=config, train=on_batch).adapter
  return Method(doc_to_lora.init(config, jax.random.key(0)), loss, adapters)


def digit_table(base, config) -> Method:
  """No hypernetwork: the adapter is the sum of learned factors for (position, value) of each of the
  needle's digits, read from the batch's answer. How fast the adapter side alone learns 4 digits."""
  ids = jnp.asarray(digit_ids(base.tokenizer))
  d_in, d_out = base.config.module_shape("down")
  shape = (4, 10, base.config.num_layers, config.rank)
  table = {"a": jax.random.normal(jax.random.key(0), (*shape, d_in)) * (2.0 / np.sqrt(d_in * config.rank)),
           "b": jnp.zeros((*shape, d_out))}

  def adapters(variables, batch, on_batch=False):
    del on_batch  # nothing to centre
    values = jnp.argmax(batch["targets"][:, 1:5, None] == ids, axis=-1)  # [N, 4]: after the leading space
    factors = {k: sum(v[p, values[:, p]] for p in range(4)) for k, v in variables["params"].items()}
    return lora.LoraAdapter({"down": factors}, config.scaling)

  def loss(variables, batch):
    logits = transformer.forward(base.params, batch["student_tokens"], config=base.config,
                                 mask=batch["student_mask"], adapter=adapters(variables, batch),
                                 logits_at=batch["student_logits_at"]).logits
    return losses.cross_entropy(logits, batch["targets"], batch["loss_mask"]), {}

  return Method({"params": table}, loss, adapters)


LINEAR = {"experimental": {"generated_factors": "b", "zero_b_init": "head"}}


class Variant(NamedTuple):
  method: Callable[..., Method]
  overrides: dict[str, Any]  # of the hypernetwork config
  lr: float
  lengths: tuple[int, int] = LENGTHS  # of the training and held-out haystacks
  # A curriculum: the first `warmup_steps` batches hold haystacks of `warmup_lengths` instead.
  warmup_lengths: tuple[int, int] | None = None
  warmup_steps: int = 0
  alone_share: float = 0.0  # a mixture instead: this share of the examples is the needle alone


VARIANTS = {
    "published heads (lr 1e-4)": Variant(hypernetwork, {}, 1e-4),
    "lr 3e-4": Variant(hypernetwork, {}, 3e-4),
    "lr 1e-3": Variant(hypernetwork, {}, 1e-3),
    "rank 16": Variant(hypernetwork, {"rank": 16}, 1e-4),
    "digit table, no hypernetwork (lr 1e-4)": Variant(digit_table, {}, 1e-4),
    "digit table, no hypernetwork (lr 1e-3)": Variant(digit_table, {}, 1e-3),
    "needle alone, no filler": Variant(hypernetwork, {}, 1e-4, lengths=(1, 1)),
    "needle alone, lr 3e-4": Variant(hypernetwork, {}, 3e-4, lengths=(1, 1)),
    "needle alone, lr 1e-3": Variant(hypernetwork, {}, 1e-3, lengths=(1, 1)),
    "needle alone, B head zero": Variant(hypernetwork, {"experimental": {"zero_b_init": "head"}}, 1e-4,
                                         lengths=(1, 1)),
    "B head zero, scale_b 1": Variant(hypernetwork, {"experimental": {"zero_b_init": "head"}}, 1e-4),
    "needle alone for 200 steps, then haystacks": Variant(hypernetwork, {}, 1e-4, warmup_lengths=(1, 1),
                                                          warmup_steps=200),
    "a quarter of the examples the needle alone": Variant(hypernetwork, {}, 1e-4, alone_share=0.25),
    # The adapter linear in the code: B generated, A the bias block's (document-independent).
    "needle alone, A fixed (B from the code)": Variant(hypernetwork, LINEAR, 1e-4, lengths=(1, 1)),
    "A fixed (B from the code)": Variant(hypernetwork, LINEAR, 1e-4),
}


def layer_probe(base, source: niah.NiahSource, num_haystacks: int, lam: float = 10.0) -> list[dict]:
  """Per layer: held-out accuracy of ridge probes on the needle's digit tokens (RMS-normed as the
  hypernetwork reads them) for the digit's value, its position in the number, and both at once;
  and how strongly each digit of the number shows in the haystack's mean feature (what a fresh
  Perceiver's near-uniform attention reads): the share of that mean's variance across haystacks
  explained by the digit's value (chance about 9 / (haystacks - 1))."""
  ids = digit_ids(base.tokenizer)
  every_layer = doc_to_lora.d2l_compact(base.config, context_encoder="per_layer_activations",
                                        experimental={"normalize_features": True})
  features, pooled, position, value = [], [], [], []
  for i in range(num_haystacks):
    record = source[i]
    tokens = base.tokenizer.encode(record["document"])
    number = [ids[int(d)] for d in record["answer"]]
    start = next(j for j in range(len(tokens)) if tokens[j:j + 4] == number)
    padded = np.zeros((1, CHUNK_LEN), np.int32)  # one shape, one compilation; padding is masked
    padded[0, :len(tokens)] = tokens
    hidden = doc_to_lora.encode_context(base.params, jnp.asarray(padded), jnp.asarray(padded > 0), config=every_layer)
    features.append(np.asarray(hidden[:, 0, start:start + 4]))  # [layers, 4, D]
    pooled.append(np.asarray(hidden[:, 0, :len(tokens)]).mean(axis=1))  # [layers, D]
    position += range(4)
    value += [int(d) for d in record["answer"]]
  x = np.concatenate(features, axis=1)  # [layers, 4 * haystacks, D]
  position, value = np.asarray(position), np.asarray(value)
  split = 4 * int(0.7 * num_haystacks)  # train on 70% of the haystacks, score the rest

  def accuracy(x, labels, classes):
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-6
    x = (x - mean) / std
    w = np.linalg.solve(x[:split].T @ x[:split] + lam * np.eye(x.shape[1]), x[:split].T @ np.eye(classes)[labels[:split]])
    return float(np.mean((x[split:] @ w).argmax(1) == labels[split:]))

  def explained(x, labels):  # between-value variance / total variance of x [haystacks, D]
    mean = x.mean(0)
    between = sum((labels == c).sum() * np.sum((x[labels == c].mean(0) - mean) ** 2) for c in np.unique(labels))
    return float(between / np.sum((x - mean) ** 2))

  means, digits = np.stack(pooled, axis=1), value.reshape(num_haystacks, 4)  # [layers, haystacks, D]
  return [{"layer": layer, "value": accuracy(x[layer], value, 10), "position": accuracy(x[layer], position, 4),
           "value_and_position": accuracy(x[layer], 10 * position + value, 40),
           "mean_feature_share_by_digit": [explained(means[layer], digits[:, k]) for k in range(4)]}
          for layer in range(x.shape[0])]


def run_variant(base, method: Method, lr: float, data, held_out, eval_every: int) -> dict:
  tx = optax.adam(lr)

  @jax.jit
  def step(variables, opt, batch):
    params = variables["params"]
    loss_of = lambda p: method.loss({**variables, "params": p}, batch)
    (loss, stats), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return {**variables, "params": optax.apply_updates(params, updates), **stats}, opt, loss

  @functools.partial(jax.jit, static_argnames="on_batch")
  def hits(variables, batch, on_batch):
    logits = transformer.forward(base.params, batch["student_tokens"], config=base.config,
                                 mask=batch["student_mask"], adapter=method.adapters(variables, batch, on_batch),
                                 logits_at=batch["student_logits_at"]).logits
    return jnp.argmax(logits, -1) == batch["targets"]

  ids, targets = digit_ids(base.tokenizer), np.asarray(held_out["targets"])
  variables, curve, evals = method.variables, [], []
  opt = tx.init(variables["params"])
  start = time.perf_counter()
  for i, batch in enumerate(data, 1):
    variables, opt, loss = step(variables, opt, batch)
    curve.append(float(loss))
    if i % eval_every == 0 or i == len(data):
      running, on_batch = hits(variables, held_out, False), hits(variables, held_out, True)
      digits, exact = digit_scores(running, targets, ids)
      batch_digits, _ = digit_scores(on_batch, targets, ids)
      by_position = digit_positions(on_batch, targets, ids)
      evals.append({"step": i, "digits": digits, "exact": exact, "digits_batch_centred": batch_digits,
                    "by_position_batch_centred": by_position})
      print(f"  step {i}: loss {np.mean(curve[-eval_every:]):.3f} digits {digits:.3f} exact {exact:.3f} "
            f"(batch-centred: digits {batch_digits:.3f}, by position "
            + common.slashed(by_position) + f") ({time.perf_counter() - start:.0f} s)", flush=True)
  return {"curve": curve, "evals": evals, "seconds": time.perf_counter() - start}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--eval-every", type=int, default=50)
  parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
  parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the saved JSON")
  args = parser.parse_args()
  if args.plot_only:
    plot(json.loads((common.RESULTS / "niah_ablation.json").read_text())["results"])
    return

  base = base_model.load_base_model()
  count = lambda text: len(base.tokenizer.encode(text))
  probe = layer_probe(base, niah.NiahSource(num_records=160, length=LENGTHS, seed=2, count_tokens=count,
                                            digits=(4, 4)), 160)
  for row in probe:
    print("[probe] layer {layer}: value {value:.3f} position {position:.3f} both {value_and_position:.3f}".format(**row),
          "mean-feature share by digit", common.slashed(row["mean_feature_share_by_digit"], 3))
  order = np.random.default_rng(0).permutation(10**6)[:8 * args.steps].reshape(args.steps, 8)
  results = {}
  for name in args.variants:
    variant = VARIANTS[name]
    config = doc_to_lora.d2l_compact(base.config, context_encoder="early_exit", chunk_len=CHUNK_LEN,
                                     max_chunks=1, experimental=FEATURES_CENTRED).replace(**variant.overrides)
    print(f"[ablation] {name}", flush=True)
    source = lambda length, seed=0, n=10**6: niah.NiahSource(num_records=n, length=length, seed=seed,
                                                             count_tokens=count, digits=(4, 4))
    train, alone = source(variant.lengths), source((1, 1))
    warmup = source(variant.warmup_lengths) if variant.warmup_lengths else train
    mixed = np.random.default_rng(3).random(order.shape) < variant.alone_share
    data = [examples(base, config, [alone if mix else warmup if step < variant.warmup_steps else train
                                    for mix in row_mixed], idx)
            for step, (idx, row_mixed) in enumerate(zip(order, mixed))]
    held_out = examples(base, config, source(variant.lengths, seed=1, n=64), range(64))
    results[name] = {"overrides": variant.overrides, "lr": variant.lr, "lengths": variant.lengths,
                     "steps": args.steps, "warmup_lengths": variant.warmup_lengths,
                     "warmup_steps": variant.warmup_steps, "alone_share": variant.alone_share,
                     "command": common.command(),
                     **run_variant(base, variant.method(base, config), variant.lr, data, held_out, args.eval_every)}
  write(results, probe, args)


def write(results: dict, probe: list[dict], args) -> None:
  """Adds (or replaces) these variants' rows in the saved results: variants can run separately."""
  path = common.RESULTS / "niah_ablation.json"
  saved = json.loads(path.read_text()) if path.exists() else {}
  results = {**saved.get("results", {}), **results}
  common.write_json("niah_ablation", {"lengths": LENGTHS, "batch": 8, "results": results, "layer_probe": probe})
  rows = []
  for name, r in results.items():
    last = r["evals"][-1]
    loss = float(np.mean(r["curve"][-50:]))
    haystack = "needle only" if tuple(r["lengths"]) == (1, 1) else "{}-{}".format(*r["lengths"])
    by_position = last.get("by_position_batch_centred")
    rows.append([name, haystack, r["steps"], loss, last["digits"], last["exact"],
                 last.get("digits_batch_centred", "-"),
                 common.slashed(by_position) if by_position else "-", r["seconds"] / r["steps"]])
  table = common.markdown_table(["variant", "haystack tokens", "steps", "loss (last 50 steps)", "digits right",
                                 "exact match", "digits right, batch-centred", "by position, batch-centred",
                                 "s / step"], rows)
  commands = sorted({r["command"] for r in results.values()})
  probe_table = common.markdown_table(
      ["layer", "digit value", "position in the number", "both (40 classes)",
       "share of the mean feature's variance, by digit (1st / 2nd / 3rd / 4th)"],
      [[r["layer"], r["value"], r["position"], r["value_and_position"],
        common.slashed(r.get("mean_feature_share_by_digit", []), 3)] for r in probe])
  common.write_markdown("niah_ablation", "Needle digits: what makes Doc-to-LoRA learn them",
                        f"4-digit needles in {LENGTHS[0]}-{LENGTHS[1]}-token haystacks unless said, batch 8, "
                        f"the same batches for every variant; scored on 64 held-out haystacks (seed 1) of the "
                        f"variant's length, teacher-forced, after its last step; chance is 0.1 per digit. "
                        f"'digits right' centres the codes on the running mean (as generation does), "
                        f"'batch-centred' on the mean of the 64 held-out haystacks (as meta-training centres "
                        f"on its batch). Made by:\n\n" + "".join(f"    {c}\n" for c in commands) +
                        f"\n{table}\n\n## Is the needle readable from the features?\n\n"
                        f"Ridge probes on the needle's digit tokens, RMS-normed activations Z_l (the early-exit "
                        f"encoder reads Z_4), trained on 112 haystacks and scored on 48 (seed 2). The last column uses "
                        f"all 160 haystacks' mean features over their real tokens (chance about 9 / 159 = 0.057)."
                        f"\n\n"
                        f"{probe_table}")
  plot(results)


def plot(results: dict) -> None:
  plt = common.pyplot()

  fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
  colors = plt.get_cmap("tab20")(np.arange(len(results)) % 20)  # more variants than the default 10 colours
  for (name, r), color in zip(results.items(), colors):
    curve = np.convolve(r["curve"], np.ones(10) / 10, mode="valid")
    left.plot(range(10, len(r["curve"]) + 1), curve, color=color, label=name)
    right.plot([e["step"] for e in r["evals"]], [e["digits"] for e in r["evals"]], marker="o", color=color, label=name)
    if "digits_batch_centred" in r["evals"][0]:
      right.plot([e["step"] for e in r["evals"]], [e["digits_batch_centred"] for e in r["evals"]], marker="x",
                 linestyle="--", color=color, label=f"{name}, batch-centred")
  left.axhline(4 * np.log(10) / 6, color="grey", linestyle=":", label="chance")
  left.set(xlabel="step", ylabel="training loss (10-step mean)", ylim=(0, 3))
  right.axhline(0.1, color="grey", linestyle=":", label="chance")
  right.set(xlabel="step", ylabel="held-out digits right", ylim=(0, 1))
  right.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
  common.save_figure(fig, "niah_ablation")


if __name__ == "__main__":
  main()
