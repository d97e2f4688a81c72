"""How much of a made-up word an adapter copies: validation code words (`experiments.qa.code_words`,
another seed than training's) answered by the adapters of several hypernetworks and by the base
model with the document in its prompt, scored token by token: the share of answers whose first j
tokens are the gold word's first j tokens, for j = 1, 2, ...

Run (about 1 minute per hypernetwork on 2 CPU cores):
  .venv/bin/python -m experiments.qa.copy_eval --name qa_copy_code_words \
    --hypernetwork 'before the drill=/tmp/qa_curriculum/s4_after_two_facts/hypernetwork' \
    --hypernetwork 'drill, 300 steps=/tmp/qa_copy/c1/hypernetwork'
Writes experiments/results/NAME.{json,md,png}.
"""

from __future__ import annotations

import argparse

from experiments import common
from experiments.qa import code_words, run
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model

MAX_TOKENS = 5  # the longest validation code word has about this many tokens


def tokens_right(answer: str, gold: str, tokenizer) -> int:
  """How many of the gold word's tokens the answer starts with (its first word, trimmed)."""
  words = answer.split()
  first = words[0].strip(".,;:!?\"'()") if words else ""
  got, want = tokenizer.encode(first, add_bos=False), tokenizer.encode(gold, add_bos=False)
  right = 0
  while right < min(len(got), len(want)) and got[right] == want[right]:
    right += 1
  return right


def profile(answers: list[str], records: list[dict], tokenizer) -> dict:
  """Scores of one method: ROUGE-L, contains, and for each j the share of the gold words of at
  least j tokens whose first j the answer has right."""
  right = [tokens_right(a, r["answer"], tokenizer) for a, r in zip(answers, records)]
  lengths = [len(tokenizer.encode(r["answer"], add_bos=False)) for r in records]
  shares = []
  for j in range(1, MAX_TOKENS + 1):
    long_enough = [n for n, length in zip(right, lengths) if length >= j]
    shares.append(sum(n >= j for n in long_enough) / len(long_enough) if long_enough else float("nan"))
  return {**run.scores(answers, records), "first_tokens_right": shares}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hypernetwork", action="append", required=True, metavar="LABEL=DIR",
                      help="a saved Doc-to-LoRA folder and its label in the table (repeat)")
  parser.add_argument("--records", type=int, default=48)
  parser.add_argument("--seed", type=int, default=1, help="code words' seed; training drew them with 0")
  parser.add_argument("--name", default="qa_copy_code_words")
  args = parser.parse_args()
  if any("=" not in h for h in args.hypernetwork):
    parser.error("--hypernetwork takes LABEL=DIR")
  runs = dict(h.split("=", 1) for h in args.hypernetwork)

  base = base_model.load_base_model()
  records = code_words.records(args.records, args.seed)
  documents = [r["document"] for r in records]
  gold_tokens = [len(base.tokenizer.encode(r["answer"], add_bos=False)) for r in records]
  answers = {"base model, document in prompt": run.in_context_answers(base, documents, [[r] for r in records])}
  for label, folder in runs.items():
    hyper = saved.load_hypernetwork(folder, base)
    adapters = doc_to_lora.internalize(hyper.params, base.params, documents, config=hyper.config,
                                       tokenizer=base.tokenizer)
    answers[label] = run.answer_with(base, records, adapters, list(range(len(records))))
  scores = {label: profile(texts, records, base.tokenizer) for label, texts in answers.items()}
  examples = [{"answer": r["answer"], **{label: texts[i] for label, texts in answers.items()}}
              for i, r in enumerate(records[:16])]
  common.write_json(args.name, {"records": len(records), "seed": args.seed, "hypernetworks": runs,
                                "gold_tokens": {str(n): gold_tokens.count(n) for n in sorted(set(gold_tokens))},
                                "scores": scores, "examples": examples})
  header = ["method", "contains", "ROUGE-L"] + [f"first {j} token{'s' * (j > 1)} right"
                                                for j in range(1, MAX_TOKENS + 1)]
  rows = [[label, s["contains"], s["rouge_l"], *s["first_tokens_right"]] for label, s in scores.items()]
  lengths = ", ".join(f"{gold_tokens.count(n)} of {n}" for n in sorted(set(gold_tokens)))
  example_rows = [[e["answer"], *(e[label] for label in runs)] for e in examples]
  common.write_markdown(
      args.name, "Copying a made-up word from the document",
      f"{len(records)} validation code words (seed {args.seed}; training's are seed 0), tokens per word: "
      f"{lengths}. First j tokens right = of the gold words with at least j tokens, the share whose "
      f"first j the answer's first word starts with.\n\n{common.markdown_table(header, rows)}\nExamples:\n\n"
      f"{common.markdown_table(['gold', *runs], example_rows)}")
  plot(scores, args.name)


def plot(scores: dict[str, dict], name: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

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
  fig.tight_layout()
  fig.savefig(common.RESULTS / f"{name}.png", dpi=120)


if __name__ == "__main__":
  main()
