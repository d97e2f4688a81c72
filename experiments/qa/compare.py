"""Several `by_fact` results side by side: for each run, its relative ROUGE-L over all questions and
its answers right per kind of answer, on validation and held out, as one table and one plot.

Run (seconds; it reads experiments/results/NAME.json files `by_fact` wrote):
  .venv/bin/python -m experiments.qa.compare --name qa_no_names_cycles \\
    --validation 1=qa_no_names_cycles_six_numbers_no_names_validation_6fact ... \\
    --held-out 1=qa_no_names_six_numbers_no_names_by_fact ...
Writes experiments/results/NAME.{json,md,png}. Runs are listed in the order their labels first
appear; a run may lack either score.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from experiments import common
from experiments.qa import by_fact

SETS = ("validation", "held_out")


def summary(result: dict[str, Any]) -> dict[str, Any]:
  """One by_fact result as its relative ROUGE-L and, per kind, questions and answers right."""
  kinds = result["by_answer_kind"]
  right = lambda s, score: round(s["questions"] * s["d2l"][score])
  return {"source": result["experiment"], "relative_rouge_l": by_fact.relative_rouge_l(kinds),
          "questions": {k: s["questions"] for k, s in kinds.items()},
          "contains": {k: right(s, "contains") for k, s in kinds.items()},
          "first_3_letters": {k: right(s, "prefix") for k, s in kinds.items()}}


def compare(named: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
  """{set: {label: result name}} -> {label: {set: summary}}, labels in first-seen order."""
  runs: dict[str, dict[str, Any]] = {}
  for which in SETS:
    for label, name in named.get(which, {}).items():
      result = json.loads((common.RESULTS / f"{name}.json").read_text())
      runs.setdefault(label, {})[which] = summary(result)
  return runs


def table(runs: dict[str, dict[str, Any]], label_title: str = "run") -> str:
  kinds = [k for k in by_fact.ANSWER_KINDS if any(k in s["questions"] for r in runs.values() for s in r.values())]
  header = [label_title]
  for which in SETS:
    title = which.replace("_", " ")
    header += [f"{title}: {k} (first 3 letters)" for k in kinds] + [f"{title}: relative ROUGE-L"]
  rows = []
  for label, run in runs.items():
    row = [label]
    for which in SETS:
      s = run.get(which)
      if s is None:
        row += ["-"] * (len(kinds) + 1)
        continue
      row += [f"{s['contains'][k]} of {s['questions'][k]} ({s['first_3_letters'][k]})" if k in s["questions"] else "-"
              for k in kinds]
      row.append(s["relative_rouge_l"])
    rows.append(row)
  return common.markdown_table(header, rows)


def plot(runs: dict[str, dict[str, Any]], name: str, label_title: str = "run") -> None:
  plt = common.pyplot()

  labels = list(runs)
  fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(labels)), 3.5))  # room for each label
  for which, marker in zip(SETS, ("o", "s")):
    points = [(i, runs[l][which]["relative_rouge_l"]) for i, l in enumerate(labels) if which in runs[l]]
    ax.plot([i for i, _ in points], [v for _, v in points], marker=marker, label=which.replace("_", " "))
  ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 4 else 0)
  ax.set_xlabel(label_title)
  ax.set_ylabel("relative ROUGE-L")
  ax.set_ylim(0, 1)
  ax.axhline(0.8, color="grey", linestyle=":", label="target")
  ax.legend(fontsize=8)
  ax.set_title("Doc-to-LoRA against the base model with the document in its prompt")
  common.save_figure(fig, name)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--name", required=True)
  parser.add_argument("--title", default="QA runs side by side")
  parser.add_argument("--label-title", default="run", help="what the labels name (the table's first column)")
  for which in SETS:
    parser.add_argument(f"--{which.replace('_', '-')}", nargs="+", default=[], metavar="LABEL=RESULT",
                        help=f"{which.replace('_', ' ')} scores: a by_fact result name under experiments/results")
  args = parser.parse_args()
  named = {which: common.labelled(parser, getattr(args, which), f"--{which.replace('_', '-')}", "LABEL=RESULT")
           for which in SETS}
  missing = [n for names in named.values() for n in names.values() if not (common.RESULTS / f"{n}.json").exists()]
  if missing:
    parser.error(f"no such result under {common.RESULTS}: {', '.join(missing)}")
  runs = compare(named)
  common.write_json(args.name, {"runs": runs})
  common.write_markdown(
      args.name, args.title,
      "Answers right (contains the gold one; in brackets, a word starts with its first three letters) per kind "
      "of answer, and Doc-to-LoRA's ROUGE-L over all questions relative to the base model's with the document "
      f"in its prompt.\n\n{table(runs, args.label_title)}")
  plot(runs, args.name, args.label_title)


if __name__ == "__main__":
  main()
