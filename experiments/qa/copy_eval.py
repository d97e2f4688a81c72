"""How much of a made-up word an adapter copies: validation code words (`experiments.qa.code_words`,
another seed than training's) answered by the adapters of several hypernetworks and by the base
model with the document in its prompt, scored token by token: the share of answers whose first j
tokens are the gold word's first j tokens, for j = 1, 2, ...

Run (about 1 minute per hypernetwork on 2 CPU cores):
  .venv/bin/python -m experiments.qa.copy_eval --name qa_copy_code_words \
    --hypernetwork 'before the drill=runs/qa_curriculum/s4_after_two_facts/hypernetwork' \
    --hypernetwork 'drill, 300 steps=runs/qa_copy/c1/hypernetwork'
Writes experiments/results/NAME.{json,md,png}.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.qa import code_words, run
from lora_hyper.data import pipeline
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model, transformer

MAX_TOKENS = 5  # few validation code words have more tokens
# experiments/qa/train.gin's shapes: one-sentence documents fit one chunk.
SHAPES = pipeline.DocExampleShapes(num_chunks=1, student_len=40, teacher_len=168, answer_len=12)


def word_tokens(word: str, tokenizer) -> list[int]:
  """A word's tokens as an answer holds them: after a space (`pipeline`'s answers, and the model's)."""
  return tokenizer.encode(" " + word, add_bos=False)


def tokens_right(answer: str, gold: str, tokenizer) -> int:
  """How many of the gold word's tokens the answer starts with (its first word, trimmed)."""
  words = answer.split()
  first = words[0].strip(".,;:!?\"'()") if words else ""
  got, want = word_tokens(first, tokenizer), word_tokens(gold, tokenizer)
  right = 0
  while right < min(len(got), len(want)) and got[right] == want[right]:
    right += 1
  return right


def profile(answers: list[str], records: list[dict], tokenizer) -> dict:
  """Scores of one method: ROUGE-L, contains, and for each j the share of the gold words of at
  least j tokens whose first j the answer has right."""
  right = [tokens_right(a, r["answer"], tokenizer) for a, r in zip(answers, records)]
  lengths = [len(word_tokens(r["answer"], tokenizer)) for r in records]
  shares = []
  for j in range(1, MAX_TOKENS + 1):
    long_enough = [n for n, length in zip(right, lengths) if length >= j]
    shares.append(sum(n >= j for n in long_enough) / len(long_enough) if long_enough else float("nan"))
  return {**run.scores(answers, records), "first_tokens_right": shares}


def token_losses(base, config, records: list[dict], adapter=None, in_context: bool = False) -> list[float]:
  """Cross-entropy (nats) of the gold word's j-th token given the ones before it (teacher
  forcing, as training), j = 1..MAX_TOKENS, averaged over the words that long: with `adapter`
  and no document, or with the document in the prompt."""
  examples = [pipeline.doc_example(r, base.tokenizer, config, SHAPES) for r in records]
  batch = {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}
  who = "teacher" if in_context else "student"
  logits = transformer.forward(base.params, batch[f"{who}_tokens"], config=base.config, mask=batch[f"{who}_mask"],
                               adapter=adapter, logits_at=batch[f"{who}_logits_at"]).logits
  picked = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32), -1), batch["targets"][..., None], -1)
  nats = -np.asarray(picked[..., 0])
  lengths = np.asarray([len(word_tokens(r["answer"], base.tokenizer)) for r in records])
  return [float(nats[lengths > j, j].mean()) for j in range(MAX_TOKENS)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hypernetwork", action="append", required=True, metavar="LABEL=DIR",
                      help="a saved Doc-to-LoRA folder and its label in the table (repeat)")
  parser.add_argument("--records", type=int, default=48)
  parser.add_argument("--seed", type=int, default=1, help="code words' seed; training drew them with 0")
  parser.add_argument("--prefix", default="", help="the start of every code word, as its training had")
  parser.add_argument("--name", default="qa_copy_code_words")
  args = parser.parse_args()
  runs = common.labelled(parser, args.hypernetwork, "--hypernetwork", metavar="LABEL=DIR")

  base = base_model.load_base_model()
  records = code_words.records(args.records, args.seed, args.prefix)
  documents = [r["document"] for r in records]
  gold_tokens = [len(word_tokens(r["answer"], base.tokenizer)) for r in records]
  in_context = "base model, document in prompt"
  answers = {in_context: run.in_context_answers(base, documents, [[r] for r in records])}
  losses = {}
  for label, folder in runs.items():
    hyper = saved.load_hypernetwork(folder, base)
    adapters = doc_to_lora.internalize(hyper.variables, base.params, documents, config=hyper.config,
                                       tokenizer=base.tokenizer)
    answers[label] = run.answer_with(base, records, adapters, list(range(len(records))))
    losses[label] = token_losses(base, hyper.config, records, adapters)
    if in_context not in losses:  # the document in the prompt: the same for every hypernetwork
      losses[in_context] = token_losses(base, hyper.config, records, in_context=True)
  scores = {label: {**profile(texts, records, base.tokenizer), "token_nats": losses[label]}
            for label, texts in answers.items()}
  examples = [{"answer": r["answer"], **{label: texts[i] for label, texts in answers.items()}}
              for i, r in enumerate(records[:16])]
  common.write_json(args.name, {"records": len(records), "seed": args.seed, "hypernetworks": runs,
                                "gold_tokens": {str(n): gold_tokens.count(n) for n in sorted(set(gold_tokens))},
                                "scores": scores, "examples": examples})
  header = ["method", "contains", "ROUGE-L"] + [f"first {j} token{'s' * (j > 1)} right"
                                                for j in range(1, MAX_TOKENS + 1)]
  rows = [[label, s["contains"], s["rouge_l"], *s["first_tokens_right"]] for label, s in scores.items()]
  nats_header = ["method"] + [f"token {j}" for j in range(1, MAX_TOKENS + 1)]
  nats_rows = [[label, *s["token_nats"]] for label, s in scores.items()]
  lengths = ", ".join(f"{gold_tokens.count(n)} of {n}" for n in sorted(set(gold_tokens)))
  example_rows = [[e["answer"], *(e[label] for label in runs)] for e in examples]
  common.write_markdown(
      args.name, "Copying a made-up word from the document",
      f"{len(records)} validation code words (seed {args.seed}; training's are seed 0"
      f"{f', every one starting {args.prefix!r}' if args.prefix else ''}), tokens per word: "
      f"{lengths}. First j tokens right = of the gold words with at least j tokens, the share whose "
      f"first j the answer's first word starts with.\n\n{common.markdown_table(header, rows)}\n"
      f"Cross-entropy (nats) of the gold word's j-th token given the gold ones before it (teacher forcing, "
      f"as in training), over the words of at least j tokens:\n\n"
      f"{common.markdown_table(nats_header, nats_rows)}\nExamples:\n\n"
      f"{common.markdown_table(['gold', *runs], example_rows)}")
  plot(scores, args.name)


def plot(scores: dict[str, dict], name: str) -> None:
  plt = common.pyplot()

  fig, ax = plt.subplots(figsize=(6.5, 3.8))
  positions = range(1, MAX_TOKENS + 1)
  for label, s in scores.items():
    ax.plot(positions, s["first_tokens_right"], marker="o", label=label,
            linestyle="--" if label.startswith("base model") else "-")
  ax.set_xticks(list(positions))
  ax.set_xlabel("first j tokens of the code word")
  ax.set_ylabel("share of answers with them right")
  ax.set_ylim(0, 1.02)
  ax.legend(fontsize=8)
  ax.set_title("Made-up code words: how many tokens the adapter copies")
  common.save_figure(fig, name)


if __name__ == "__main__":
  main()
