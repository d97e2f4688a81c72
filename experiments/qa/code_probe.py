"""Does a chunk's code hold a made-up word whole, or only its first token? A linear probe.

The copying drill (experiments/qa/copy_drill.sh) left two explanations for adapters that copy a
code word's first token and never the next: either the hypernetwork's code of the document holds
only the first token, or it holds more and the adapter cannot use it. A ridge regression from a
representation of each one-sentence document to the input embedding of the word's j-th token
answers the first: on code words of another seed, the prediction names the gold token among the
distinct j-th tokens of those words (top-1 by cosine) as often as the representation holds it.

Representations of each hypernetwork, from the document's end to the adapter's:
  encoder latents: the Perceiver encoder's latents (8 of them), all the decoder reads,
  decoder output: the Perceiver's output, one latent per (layer, module, rank row), flattened,
  pre-head MLP output: those after the per-layer residual MLPs (the code before centring),
  code: the heads' inputs (every layer's and rank row's centred, L2-normalised code, flattened),
  B:    the chunk's generated B (every layer's rank block, gate included), what the adapter writes
        (linear in the code, so the probe's reach on the code is the adapter's).
Controls: the word's first-token embedding (how much of token j its first token alone gives away:
the words' syllables are drawn independently, so little), and the base model's layers at the word
(its first and last token, and the mean over its tokens): what an encoder that attended to the
word could keep, at the layer early_exit reads (4 of the 270M model's 18) and deeper ones.

The ridge penalty is picked per representation and token on a validation part of the training
words (seed 0, as the drill's training data); the test words (seed 1) only score.

Run (about 10 minutes on 2 CPU cores):
  .venv/bin/python -m experiments.qa.code_probe --name qa_copy_code_probe \
    --hypernetwork 'c2b=runs/qa_copy/c2b/hypernetwork'
Writes experiments/results/NAME.{json,md,png}.
"""

from __future__ import annotations

import argparse
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.qa import code_words
from experiments.qa.copy_eval import word_tokens
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model, transformer

PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
BATCH = 64
# From the document's end to the adapter's (jax returns dicts with sorted keys; tables keep this order).
HYPERNETWORK_VIEWS = ("encoder latents", "decoder output", "pre-head MLP output", "code", "B")


def fit_ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
  """Dual ridge (features may outnumber examples): coefficients c with predictions k(x', x) @ c."""
  gram = x @ x.T
  scale = np.trace(gram) / len(x)  # the penalty is relative to the mean squared feature norm
  return np.linalg.solve(gram + penalty * scale * np.eye(len(x)), y)


def retrieval_accuracy(predicted: np.ndarray, gold: np.ndarray, embedding: np.ndarray) -> float:
  """Share of rows whose prediction is closest (cosine) to its gold token among all gold tokens here."""
  candidates = np.unique(gold)
  table = embedding[candidates]
  table = table / np.linalg.norm(table, axis=-1, keepdims=True)
  scores = predicted @ table.T
  return float(np.mean(candidates[np.argmax(scores, axis=-1)] == gold))


def probe(train_x: np.ndarray, train_gold: np.ndarray, test_x: np.ndarray, test_gold: np.ndarray,
          embedding: np.ndarray, validation_share: float = 0.2) -> dict:
  """Ridge from representations to gold-token embeddings (unit rows); penalty chosen on the last
  `validation_share` of the training rows, refit on all of them, scored on the test rows."""
  mean = train_x.mean(0)
  train_x, test_x = train_x - mean, test_x - mean
  target = embedding[train_gold] / np.linalg.norm(embedding[train_gold], axis=-1, keepdims=True)
  cut = int(len(train_x) * (1 - validation_share))
  validation = {}
  for penalty in PENALTIES:
    coef = fit_ridge(train_x[:cut], target[:cut], penalty)
    validation[penalty] = retrieval_accuracy(train_x[cut:] @ train_x[:cut].T @ coef, train_gold[cut:], embedding)
  best = max(PENALTIES, key=lambda p: (validation[p], p))  # ties: the stronger penalty
  coef = fit_ridge(train_x, target, best)
  return {"test_accuracy": retrieval_accuracy(test_x @ train_x.T @ coef, test_gold, embedding),
          "validation_accuracy": validation[best], "penalty": best,
          "chance": 1 / len(np.unique(test_gold)), "candidates": int(len(np.unique(test_gold)))}


def word_span(document_ids: list[int], word_ids: list[int]) -> tuple[int, int]:
  """Positions of the word's tokens in the chunk (BOS at 0), found as a sublist of the document."""
  for start in range(len(document_ids) - len(word_ids) + 1):
    if document_ids[start:start + len(word_ids)] == word_ids:
      return start + 1, start + 1 + len(word_ids)
  raise ValueError(f"the word's tokens {word_ids} are not in the document's {document_ids}")


def _documents(base, records: list[dict], config) -> tuple[list[list[int]], doc_to_lora.Chunks]:
  ids = [base.tokenizer.encode(r["document"], add_bos=False) for r in records]
  return ids, doc_to_lora.chunk_documents(ids, config=config)


def hypernetwork_views(hyper, base, records: list[dict]) -> dict[str, np.ndarray]:
  """{'encoder latents', 'decoder output', 'pre-head MLP output', 'code', 'B'}: one row per record
  (each document one chunk), in batches."""
  config = hyper.config
  apply = functools.partial(doc_to_lora.DocToLora(config).apply, hyper.variables)

  @jax.jit
  def batch_views(tokens, mask):
    features = doc_to_lora.encode_context(base.params, tokens, mask, config=config)
    decoded, captured = apply(features[-1], mask, method=doc_to_lora.DocToLora.encode,
                              capture_intermediates=lambda module, _: module.name == "encoder",
                              mutable=["intermediates"])
    latents = captured["intermediates"]["perceiver"]["encoder"]["__call__"][0]
    codes = doc_to_lora.chunk_codes(hyper.variables, features, mask, config=config)
    chunk_valid = mask.any(axis=-1)[:, None]  # [N, K = 1]: every document is one chunk
    heads = apply(codes, chunk_valid, False, method=doc_to_lora.DocToLora.head_inputs)  # running-mean centred
    adapter = doc_to_lora.adapter_from_chunks(hyper.variables, base.params, tokens[:, None], mask[:, None],
                                              config=config)
    chunk_b = jnp.concatenate([w["b"][:, :, :config.rank] for w in adapter.weights.values()], axis=-1)
    return {"encoder latents": latents, "decoder output": decoded, "pre-head MLP output": codes, "code": heads,
            "B": chunk_b}

  rows = []
  for start in range(0, len(records), BATCH):
    _, chunks = _documents(base, records[start:start + BATCH], config)
    views = jax.device_get(batch_views(jnp.asarray(chunks.tokens[:, 0]), jnp.asarray(chunks.mask[:, 0])))
    rows.append({name: v.reshape(len(v), -1) for name, v in views.items()})
  return {name: np.concatenate([r[name] for r in rows]).astype(np.float32) for name in HYPERNETWORK_VIEWS}


def base_views(base, records: list[dict], config, layers: Sequence[int]) -> dict[str, np.ndarray]:
  """What the Perceiver could read: the input of each of `layers` (through that layer's
  pre-attention RMSNorm, as `experimental.normalize_features` reads it) at the word's first and last tokens and
  averaged over the word's tokens. One row per record."""
  views = {f"layer {k}, word {where}": [] for k in layers for where in ("first token", "last token", "mean")}
  scales = base.params["layers"]["pre_attention_norm"]["scale"][jnp.asarray(layers)]

  @jax.jit
  def read(tokens, mask):
    hidden = transformer.forward(base.params, tokens, config=base.config, mask=mask, logits=False).per_layer_hidden
    return transformer.rms_norm(hidden[jnp.asarray(layers)], scales[:, None, None, :], base.config.rms_norm_eps)

  for start in range(0, len(records), BATCH):
    batch = records[start:start + BATCH]
    ids, chunks = _documents(base, batch, config)
    hidden = np.asarray(read(jnp.asarray(chunks.tokens[:, 0]), jnp.asarray(chunks.mask[:, 0])))
    for i, (doc, r) in enumerate(zip(ids, batch)):
      first, end = word_span(doc, word_tokens(r["answer"], base.tokenizer))
      for li, k in enumerate(layers):
        views[f"layer {k}, word first token"].append(hidden[li, i, first])
        views[f"layer {k}, word last token"].append(hidden[li, i, end - 1])
        views[f"layer {k}, word mean"].append(hidden[li, i, first:end].mean(0))
  return {name: np.stack(rows).astype(np.float32) for name, rows in views.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hypernetwork", action="append", required=True, metavar="LABEL=DIR",
                      help="a saved Doc-to-LoRA folder and its label in the table (repeat)")
  parser.add_argument("--train-records", type=int, default=2000)
  parser.add_argument("--test-records", type=int, default=400)
  parser.add_argument("--tokens", type=int, default=3, help="probe the word's tokens 1..this")
  parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 12],
                      help="base-model layers whose input to probe at the word (4: what early_exit reads)")
  parser.add_argument("--name", default="qa_copy_code_probe")
  args = parser.parse_args()
  runs = common.labelled(parser, args.hypernetwork, "--hypernetwork", metavar="LABEL=DIR")

  base = base_model.load_base_model()
  embedding = np.asarray(base.params["embedding"], np.float32)
  # Words long enough for every probed token, so each probe sees the same documents.
  long_enough = lambda rs: [r for r in rs if len(word_tokens(r["answer"], base.tokenizer)) >= args.tokens]
  train = long_enough(code_words.records(args.train_records, seed=0))
  test = long_enough(code_words.records(args.test_records, seed=1))
  gold = {split: np.asarray([word_tokens(r["answer"], base.tokenizer)[:args.tokens] for r in rs])
          for split, rs in (("train", train), ("test", test))}

  views = {}
  for label, folder in runs.items():
    hyper = saved.load_hypernetwork(folder, base)
    train_views, test_views = hypernetwork_views(hyper, base, train), hypernetwork_views(hyper, base, test)
    views.update({f"{label}: {name}": (train_views[name], test_views[name]) for name in train_views})
  train_views, test_views = (base_views(base, rs, hyper.config, args.layers) for rs in (train, test))
  views.update({name: (train_views[name], test_views[name]) for name in train_views})
  views["first token's embedding"] = (embedding[gold["train"][:, 0]], embedding[gold["test"][:, 0]])

  results = {}
  for view, (train_x, test_x) in views.items():
    results[view] = [probe(train_x, gold["train"][:, j], test_x, gold["test"][:, j], embedding)
                     for j in range(args.tokens)]
    print(view, [round(r["test_accuracy"], 3) for r in results[view]], flush=True)

  common.write_json(args.name, {"hypernetworks": runs, "train_words": len(train), "test_words": len(test),
                                "tokens": args.tokens, "penalties": list(PENALTIES), "probes": results})
  header = ["representation"] + [f"token {j + 1} (chance {results[view][j]['chance']:.3f})"
                                 for j in range(args.tokens)]
  rows = [[view, *(r["test_accuracy"] for r in per_token)] for view, per_token in results.items()]
  common.write_markdown(
      args.name, "Linear probe: which of a code word's tokens a document's representation holds",
      f"Ridge regression from each representation to the embedding of the word's j-th token, fitted on "
      f"{len(train)} training code words (seed 0, those of at least {args.tokens} tokens; penalty picked on "
      f"their last fifth), scored on {len(test)} code words of seed 1: the share whose prediction is "
      f"closest (cosine) to the gold token among the distinct j-th tokens of the test words.\n\n"
      f"{common.markdown_table(header, rows)}")
  plot(results, args.tokens, args.name)


def plot(results: dict[str, list[dict]], tokens: int, name: str) -> None:
  plt = common.pyplot()

  # The legend sits beside the bars (over them it hid some), a column per 17 entries.
  columns = 1 + len(results) // 17
  fig, ax = plt.subplots(figsize=(7 + 2.4 * columns, 3.8))
  width = 0.8 / len(results)
  for i, (view, per_token) in enumerate(results.items()):
    ax.bar(np.arange(tokens) + i * width, [r["test_accuracy"] for r in per_token], width, label=view)
  ax.plot(np.arange(tokens) + 0.4 - width / 2, [results[next(iter(results))][j]["chance"] for j in range(tokens)],
          "k_", markersize=30, label="chance")
  ax.set_xticks(np.arange(tokens) + 0.4 - width / 2, [f"token {j + 1}" for j in range(tokens)])
  ax.set_ylabel("test words whose token is retrieved")
  ax.set_ylim(0, 1)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=columns)
  ax.set_title("Linear probe of the document's representation")
  common.save_figure(fig, name)


if __name__ == "__main__":
  main()
