"""What a Doc-to-LoRA adapter carries of a document, fact by fact: the held-out questions of
`experiments.qa.run` (or validation ones) scored per kind of answer (a number, a word from the generator's fixed lists,
a made-up name) and per fact, for the adapter and for the base model with the document in its prompt.

Run (about 3 minutes on 2 CPU cores):
  .venv/bin/python -m experiments.qa.by_fact --hypernetwork runs/qa_niah/hypernetwork --name qa_from_niah_by_fact
Writes experiments/results/NAME.{json,md,png}. With `--split train --first-doc 2000` it scores
training-split documents that training (2,000 documents) never read: a validation set.
"""

from __future__ import annotations

import argparse
import collections
import re

from experiments import common
from experiments.qa import run
from lora_hyper import qa
from lora_hyper.data import fictional
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model

LISTED = {w.lower() for words in (fictional.COLOURS, fictional.EXPORTS, fictional.HOBBIES, fictional.PET_SPECIES,
                                  fictional.PROFESSIONS, fictional.PRODUCTS, fictional.RELATIVES) for w in words}
ANSWER_KINDS = ("number", "listed word", "made-up name")


def answer_kind(answer: str) -> str:
  if re.fullmatch(r"[\d,]+", answer):
    return "number"
  return "listed word" if answer.lower() in LISTED else "made-up name"


def shares_prefix(answer: str, gold: str, letters: int = 3) -> bool:
  """Some word of the answer starts as the gold answer does: partial credit for a made-up name
  whose first syllable came through ("Staimshou" for "Staisshea")."""
  prefix = gold.split()[0][:letters].lower()
  return any(word.strip(".,;:!?\"'()").lower().startswith(prefix) for word in answer.split())


def distinct_within_document(answers: list[str], records: list[dict]) -> float | None:
  """Of the questions whose document has another question among these, the share answered with
  something no other of them got: low when an adapter gives one answer for every question of a
  document (one made-up name for its province, festival and mayor). None when no document has two."""
  by_doc = collections.defaultdict(list)
  for a, r in zip(answers, records):
    by_doc[r["doc_id"]].append(tuple(qa.words(a)))  # ROUGE-L's words: case and punctuation aside
  counted = [texts for texts in by_doc.values() if len(texts) > 1]
  if not counted:
    return None
  unique = sum(texts.count(t) == 1 for texts in counted for t in texts)
  return unique / sum(len(texts) for texts in counted)


def scores(answers: list[str], records: list[dict]) -> dict[str, float | None]:
  prefix = [float(shares_prefix(a, r["answer"])) for a, r in zip(answers, records)]
  return {**run.scores(answers, records), "prefix": sum(prefix) / len(prefix),
          "distinct": distinct_within_document(answers, records)}


def grouped(records: list[dict], answers: dict[str, list[str]], key) -> dict[str, dict]:
  """Scores of every method over the records of each group, with the group's size."""
  members = collections.defaultdict(list)
  for i, r in enumerate(records):
    members[key(r)].append(i)
  return {group: {"questions": len(idx),
                  **{m: scores([texts[i] for i in idx], [records[i] for i in idx]) for m, texts in answers.items()}}
          for group, idx in sorted(members.items())}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hypernetwork", required=True, help="saved Doc-to-LoRA folder (experiments/qa/*.gin)")
  parser.add_argument("--docs", type=int, default=24, help="documents (--facts-per-doc questions each)")
  parser.add_argument("--facts-per-doc", type=int, default=fictional.FACTS_PER_DOC,
                      help="facts (and questions) per document; 1 scores copying without choosing")
  parser.add_argument("--split", default="test", choices=fictional.SPLITS,
                      help="'test': held-out names; 'train' from --first-doc on: validation")
  parser.add_argument("--first-doc", type=int, default=0, help="index of the first document scored")
  parser.add_argument("--name", default="qa_by_fact")
  parser.add_argument("--training-log", nargs="+", default=None, metavar="WORKDIR/logs/metrics.jsonl",
                      help="also plot the training run's loss, several files as stages (results/NAME_training.*)")
  args = parser.parse_args()
  if args.training_log:
    common.training_curve(args.training_log, f"{args.name}_training")

  base = base_model.load_base_model()
  hyper = saved.load_hypernetwork(args.hypernetwork, base)
  per_doc, documents, records, owner = run.qa_documents(args.docs, args.split, args.first_doc, args.facts_per_doc)
  adapters = doc_to_lora.internalize(hyper.variables, base.params, documents, config=hyper.config,
                                     tokenizer=base.tokenizer)
  answers = {"base_in_context": run.in_context_answers(base, documents, per_doc),
             "d2l": run.answer_with(base, records, adapters, owner)}
  by_kind = grouped(records, answers, lambda r: answer_kind(r["answer"]))
  by_fact = grouped(records, answers, lambda r: f"{answer_kind(r['answer'])}: {r['fact']}")
  examples = [{"query": r["query"], "answer": r["answer"], "d2l": a}
              for r, a in zip(records, answers["d2l"])][:24]
  result = {"hypernetwork": hyper.describe(), "split": args.split, "first_doc": args.first_doc, "docs": args.docs,
            "facts_per_doc": args.facts_per_doc, "questions": len(records),
            "relative_rouge_l": relative_rouge_l(by_kind), "by_answer_kind": by_kind,
            "by_fact": by_fact, "examples": examples}
  common.write_json(args.name, result)
  row = lambda group, s: [group, s["questions"], s["base_in_context"]["contains"], s["d2l"]["contains"],
                          s["base_in_context"]["rouge_l"], s["d2l"]["rouge_l"], s["base_in_context"]["prefix"],
                          s["d2l"]["prefix"], _or_dash(s["base_in_context"]["distinct"]), _or_dash(s["d2l"]["distinct"])]
  header = ["answer", "questions", "contains: in context", "contains: Doc-to-LoRA", "ROUGE-L: in context",
            "ROUGE-L: Doc-to-LoRA", "first 3 letters: in context", "first 3 letters: Doc-to-LoRA",
            "distinct in document: in context", "distinct in document: Doc-to-LoRA"]
  common.write_markdown(
      args.name, "QA by kind of answer",
      f"{args.docs} documents of the '{args.split}' split from document {args.first_doc} on, "
      f"x {args.facts_per_doc} questions, "
      f"`{args.hypernetwork}`. Contains = the answer holds the gold one; first 3 letters = a word of the "
      f"answer starts with the gold one's first three (partial credit for names); distinct in document = of the "
      f"questions whose document has another of this row's, the share whose answer (case and punctuation "
      f"aside) none of those got; listed words come from the "
      f"generator's fixed lists (colours, exports, professions, ...), made-up names from its syllables.\n\n"
      f"Relative ROUGE-L over the {len(records)} questions: {result['relative_rouge_l']:.3f}.\n\n"
      f"{common.markdown_table(header, [row(k, s) for k, s in by_kind.items()])}\nBy fact:\n\n"
      f"{common.markdown_table(header[:-2], [row(k, s)[:-2] for k, s in by_fact.items()])}")  # one question a fact
  plot(by_kind, args.name, args.split)


def relative_rouge_l(by_kind: dict[str, dict]) -> float:
  """Doc-to-LoRA's ROUGE-L over all questions relative to the base model's with the document in its
  prompt: each kind's mean weighted by its questions (the QA table's relative score)."""
  total = lambda method: sum(s["questions"] * s[method]["rouge_l"] for s in by_kind.values())
  return total("d2l") / total("base_in_context")


def _or_dash(value: float | None):
  return "-" if value is None else value


def plot(by_kind: dict[str, dict], name: str, split: str) -> None:
  plt = common.pyplot()

  kinds = [k for k in ANSWER_KINDS if k in by_kind]
  fig, ax = plt.subplots(figsize=(7, 3.5))
  for offset, (method, label) in zip((-0.2, 0.2), (("base_in_context", "base model, document in prompt"),
                                                   ("d2l", "Doc-to-LoRA, no document"))):
    ax.bar([i + offset for i in range(len(kinds))], [by_kind[k][method]["contains"] for k in kinds], 0.4,
           label=label)
  ax.set_xticks(range(len(kinds)), [f"{k} ({by_kind[k]['questions']} q)" for k in kinds])
  ax.set_ylabel("answer contains the gold one")
  ax.set_ylim(0, 1)
  ax.legend(fontsize=8)
  ax.set_title(f"Fictional documents ('{split}' split): what the adapter carries")
  common.save_figure(fig, name)


if __name__ == "__main__":
  main()
