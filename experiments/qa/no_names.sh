#!/bin/bash
# QA, six facts without the name questions: every six-fact stage from the copy start lost the
# numbers that a one-fact numbers stage brought back (numbers_stage.sh: 3 of 12 on one fact, 0 of 28
# held out after six facts), while no run ever answered a made-up name at six facts, and those are
# 80 of 144 held-out questions, 52% of the six-fact training ones. Is the unlearnable names'
# share of the gradient what takes the numbers? six_no_names continues numbers_stage.sh's numbers
# (same ROOT) with its numbers_six stage (400 six-fact steps, batches of 12 shuffled, 5e-5, seed 1)
# on the same documents' number and listed-word questions only; numbers_six is its control. Then,
# from it, seed 2:
#   six_no_names_longer  400 more steps of the same
#   six_numbers          200 steps on the six-fact documents' number questions alone, as numbers_stage.sh
#                        did on one fact (which halved the words there)
#   six_numbers_no_names six_numbers + 400 steps of six_no_names's (seed 3): do the numbers stay when the
#                        words come back?
#   six_numbers_2, six_numbers_no_names_2  the last two stages again (seeds 4 and 5)
# Scored on the 10 six-fact validation documents beyond the 20,000 training ones and held out (all
# 144 questions, names included). About 2 h 20 min on 2 CPU cores; results
# experiments/results/qa_no_names_*.{json,md,png}.
#   bash experiments/qa/lookahead_late.sh ROOT && bash experiments/qa/lookahead_qa.sh ROOT &&
#   bash experiments/qa/per_document.sh ROOT && bash experiments/qa/numbers_stage.sh ROOT &&
#   bash experiments/qa/no_names.sh ROOT
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_lookahead}
python=${PYTHON:-.venv/bin/python}

source experiments/qa/stages.sh   # stage, jsonl, validate, held_out, needs, six_fact
needs numbers numbers_stage.sh

"$python" -m experiments.qa.subset --out "$root/six_fact_no_names.jsonl" --docs 20000 --facts-per-doc 6 \
  --kinds number 'listed word'
mapfile -t no_names < <(jsonl "$root/six_fact_no_names.jsonl")
six_fact six_no_names 400 numbers 1 "${no_names[@]}"
validate six_no_names qa_no_names_six_no_names 6 10
held_out six_no_names qa_no_names_six_no_names_by_fact
six_fact six_no_names_longer 400 six_no_names 2 "${no_names[@]}"
validate six_no_names_longer qa_no_names_six_no_names_longer 6 10
held_out six_no_names_longer qa_no_names_six_no_names_longer_by_fact
"$python" -m experiments.qa.subset --out "$root/six_fact_numbers.jsonl" --docs 20000 --facts-per-doc 6 --kinds number
mapfile -t six_numbers < <(jsonl "$root/six_fact_numbers.jsonl")
six_fact six_numbers 200 six_no_names 2 "${six_numbers[@]}"
validate six_numbers qa_no_names_six_numbers 6 10
held_out six_numbers qa_no_names_six_numbers_by_fact
six_fact six_numbers_no_names 400 six_numbers 3 "${no_names[@]}"
validate six_numbers_no_names qa_no_names_six_numbers_no_names 6 10
held_out six_numbers_no_names qa_no_names_six_numbers_no_names_by_fact
six_fact six_numbers_2 200 six_numbers_no_names 4 "${six_numbers[@]}"
validate six_numbers_2 qa_no_names_six_numbers_2 6 10
six_fact six_numbers_no_names_2 400 six_numbers_2 5 "${no_names[@]}"
validate six_numbers_no_names_2 qa_no_names_six_numbers_no_names_2 6 10
held_out six_numbers_no_names_2 qa_no_names_six_numbers_no_names_2_by_fact
