#!/bin/bash
# QA, the numbers back into the copy-drilled hypernetworks: from the code words, QA answers the
# listed words (31 of 36 held out for per_document.sh's six_shuffled) but no number (0 of 28), where
# the QA start, which began from the needle's four digits, kept a third. A number is several tokens
# (one a digit) and the copy drill taught the first token of a word. As curriculum.sh's words stage
# (s2) taught the words, a stage of one kind, numbers, from six_shuffled (same ROOT), seed 1:
#   numbers      200 steps on one-fact documents whose answer is a number (single_fact.gin, 1e-4)
#   numbers_six  numbers + 400 six-fact steps as six_shuffled's (batches of 12 shuffled, 5e-5)
# numbers scored on the 48 one-fact validation documents beyond the 20,000 training ones,
# numbers_six on the 10 six-fact ones and held out. About 35 min on 2 CPU cores; results
# experiments/results/qa_numbers_stage_*.{json,md,png}.
#   bash experiments/qa/lookahead_late.sh ROOT && bash experiments/qa/lookahead_qa.sh ROOT &&
#   bash experiments/qa/per_document.sh ROOT && bash experiments/qa/numbers_stage.sh ROOT
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_lookahead}
python=${PYTHON:-.venv/bin/python}

source experiments/qa/stages.sh   # stage, jsonl, validate, only, held_out, needs, six_fact
needs six_shuffled per_document.sh

numbers_file=$(only number)   # a command substitution's failure stops the script (set -e)
mapfile -t numbers < <(jsonl "$numbers_file")
stage numbers 200 "$root/six_shuffled/hypernetwork" experiments/qa/single_fact.gin "${numbers[@]}" \
  "lora_hyper.train.seed = 1"
validate numbers qa_numbers_stage_numbers 1 48
six_fact numbers_six 400 numbers 1
validate numbers_six qa_numbers_stage_numbers_six 6 10
held_out numbers_six qa_numbers_stage_numbers_six_by_fact
