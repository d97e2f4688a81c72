"""Can the adapter's form write a whole made-up word? Fit one document's chunk block by gradient.

The linear probe (experiments/qa/code_probe.py) finds only a code word's first token in the
hypernetwork's code of a document. That leaves open whether an adapter of this form, given the
right factors, would write the rest: this script gives each validation code word (seed 1) its own
chunk block, started from the hypernetwork's, and fits it by Adam on the teacher-forced
cross-entropy of the answer (the question without the document, as the student reads it):
  B free: only the chunk's B moves; A stays the hypernetwork's (for a "b" hypernetwork the shared,
          document-independent A: the form generation has),
  A and B free: both move (the form the published generated A has).
The bias block stays. Scored as copy_eval scores hypernetworks: each token's cross-entropy and the
share of greedy answers with the word's first j tokens right.

Run (the committed result: 40 steps, a few minutes on 2 CPU cores):
  .venv/bin/python -m experiments.qa.free_adapter --name qa_copy_free_adapter \
    --hypernetwork runs/qa_copy/c2b/hypernetwork --records 32 --steps 40
Writes experiments/results/NAME.{json,md,png}.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from experiments.qa import code_words, copy_eval, run
from lora_hyper.adapters import lora
from lora_hyper.data import pipeline
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model, transformer

FREE = {"B free": ("b",), "A and B free": ("a", "b")}


def split_blocks(adapter: lora.LoraAdapter, rank: int) -> tuple[dict, dict]:
  """A one-chunk document's adapter [N, L, 2r, d] -> (chunk block, bias block), each {module: {a, b}}."""
  chunk = {m: {k: w[:, :, :rank] for k, w in f.items()} for m, f in adapter.weights.items()}
  bias = {m: {k: w[:, :, rank:] for k, w in f.items()} for m, f in adapter.weights.items()}
  return chunk, bias


def joined(chunk: dict, bias: dict, scaling: float) -> lora.LoraAdapter:
  return lora.LoraAdapter({m: {k: jnp.concatenate([chunk[m][k], bias[m][k]], axis=2) for k in chunk[m]}
                           for m in chunk}, scaling)


def answer_nats(base, adapter: lora.LoraAdapter, batch: dict) -> jax.Array:
  """Teacher-forced cross-entropy [N, answer_len] of each answer token, without the document."""
  logits = transformer.forward(base.params, batch["student_tokens"], config=base.config, mask=batch["student_mask"],
                               adapter=adapter, logits_at=batch["student_logits_at"]).logits
  picked = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32), -1), batch["targets"][..., None], -1)
  return -picked[..., 0] * batch["loss_mask"]


def fit(base, chunk: dict, bias: dict, scaling: float, batch: dict, free: tuple[str, ...], steps: int,
        relative_lr: float) -> tuple[dict, list[float]]:
  """Adam on the free factors of every document's chunk block at once (the loss is a sum over
  documents, so each block follows its own document's gradient). Step size: `relative_lr` times
  each factor's RMS, so A and B move at the same relative pace. Returns the block and the losses."""
  trainable = {m: {k: chunk[m][k] for k in free} for m in chunk}
  fixed = {m: {k: chunk[m][k] for k in chunk[m] if k not in free} for m in chunk}
  rms = jax.tree.map(lambda w: jnp.sqrt(jnp.mean(w * w)) + 1e-8, trainable)
  optimizer = optax.adam(1.0)

  def loss_fn(params):
    block = {m: {**fixed[m], **params[m]} for m in chunk}
    nats = answer_nats(base, joined(block, bias, scaling), batch)
    return jnp.sum(nats) / jnp.sum(batch["loss_mask"])

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = optimizer.update(grads, state)
    updates = jax.tree.map(lambda u, s: u * relative_lr * s, updates, rms)
    return optax.apply_updates(params, updates), state, loss

  params, state, losses = trainable, optimizer.init(trainable), []
  for i in range(steps):
    params, state, loss = step(params, state)
    losses.append(float(loss))
    if i % 25 == 0 or i == steps - 1:
      print(f"  step {i:4d} loss {losses[-1]:.3f}", flush=True)
  return {m: {**fixed[m], **params[m]} for m in chunk}, losses


def relative_change(fitted: dict, generated: dict, factor: str) -> float:
  """Median over documents of |fitted - generated| / |generated| of one factor, all modules and layers."""
  norm = lambda tree: np.sqrt(sum(np.sum(np.square(np.asarray(w[factor])), axis=(1, 2, 3)) for w in tree.values()))
  diff = {m: {factor: np.asarray(fitted[m][factor]) - np.asarray(generated[m][factor])} for m in fitted}
  return float(np.median(norm(diff) / norm(generated)))


def per_token(nats: np.ndarray, lengths: np.ndarray) -> list[float]:
  return [float(nats[lengths > j, j].mean()) for j in range(copy_eval.MAX_TOKENS)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hypernetwork", required=True, help="a saved Doc-to-LoRA folder")
  parser.add_argument("--records", type=int, default=32)
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--relative-lr", type=float, default=0.05)
  parser.add_argument("--name", default="qa_copy_free_adapter")
  args = parser.parse_args()

  base = base_model.load_base_model()
  hyper = saved.load_hypernetwork(args.hypernetwork, base)
  records = code_words.records(args.records, args.seed)
  examples = [pipeline.doc_example(r, base.tokenizer, hyper.config, copy_eval.SHAPES) for r in records]
  batch = {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0] if not k.startswith("teacher")}
  lengths = np.asarray([len(copy_eval.word_tokens(r["answer"], base.tokenizer)) for r in records])
  generated = doc_to_lora.internalize(hyper.variables, base.params, [r["document"] for r in records],
                                      config=hyper.config, tokenizer=base.tokenizer)
  if generated.rank != 2 * hyper.config.rank:
    raise ValueError(f"expected one chunk per document (rank {2 * hyper.config.rank}), got rank {generated.rank}")
  chunk, bias = split_blocks(generated, hyper.config.rank)

  adapters = {"generated": generated}
  curves, moved = {}, {"generated": {}}
  for label, free in FREE.items():
    print(label, flush=True)
    block, curves[label] = fit(base, chunk, bias, generated.scaling, batch, free, args.steps, args.relative_lr)
    adapters[label] = joined(block, bias, generated.scaling)
    moved[label] = {k: relative_change(block, chunk, k) for k in free}
  scores = {}
  for label, adapter in adapters.items():
    nats = np.asarray(jax.jit(functools.partial(answer_nats, base))(adapter, batch))
    answers = run.answer_with(base, records, adapter, list(range(len(records))))
    scores[label] = {**copy_eval.profile(answers, records, base.tokenizer), "token_nats": per_token(nats, lengths),
                     "relative_change": moved[label], "examples": answers[:8]}
    print(label, scores[label]["first_tokens_right"], scores[label]["token_nats"], flush=True)

  common.write_json(args.name, {"hypernetwork": args.hypernetwork, "records": len(records), "seed": args.seed,
                                "steps": args.steps, "relative_lr": args.relative_lr, "scores": scores,
                                "losses": curves, "gold": [r["answer"] for r in records[:8]]})
  header = (["chunk block", "contains"] + [f"first {j} right" for j in range(1, copy_eval.MAX_TOKENS + 1)]
            + ["B moved", "A moved"])
  rows = [[label, s["contains"], *s["first_tokens_right"], s["relative_change"].get("b", "-"),
           s["relative_change"].get("a", "-")] for label, s in scores.items()]
  nats_header = ["chunk block", *(f"token {j}" for j in range(1, copy_eval.MAX_TOKENS + 1))]
  nats_rows = [[label, *s["token_nats"]] for label, s in scores.items()]
  common.write_markdown(
      args.name, "Fitting one document's adapter by gradient: can its form write the whole word?",
      f"{len(records)} validation code words (seed {args.seed}); each document's chunk block started from "
      f"the hypernetwork's ({args.hypernetwork}) and fitted alone, {args.steps} Adam steps (step "
      f"{args.relative_lr} x each factor's RMS) on the answer's teacher-forced cross-entropy; the bias block "
      f"stays. Moved: the median over documents of |fitted - generated| / |generated| (Frobenius norm of the "
      f"chunk's factor over all layers).\n\n{common.markdown_table(header, rows)}\n"
      f"Cross-entropy (nats) of the word's j-th token:\n\n"
      f"{common.markdown_table(nats_header, nats_rows)}")
  plot(curves, args.name)


def plot(curves: dict[str, list[float]], name: str) -> None:
  plt = common.pyplot()

  fig, ax = plt.subplots(figsize=(6, 3.6))
  for label, losses in curves.items():
    ax.plot(losses, label=label)
  ax.set_xlabel("Adam step (every document's block at once)")
  ax.set_ylabel("answer cross-entropy (nats / token)")
  ax.set_yscale("log")
  ax.legend()
  ax.set_title("Fitting each document's chunk block alone")
  common.save_figure(fig, name)


if __name__ == "__main__":
  main()
