#!/bin/bash
# QA, does the lookahead's second token carry over to made-up names? lookahead_late.sh's ka2 (1,500
# lookahead steps) starts 8 of 48 unseen code words with their first two tokens, its matched control
# kc2 3; every QA run so far answered none of the made-up names. From both (same ROOT), seed 1:
#   qc   kc2, then 400 steps on one-fact documents of every kind (single_fact.gin, as
#        words_path.sh's s1; 1e-4), no lookahead,
#   qa   ka2, the same steps and batches with its lookahead 2 kept.
# Each scored on the 48 one-fact validation documents beyond the 20,000 training ones (as
# words_path.sh's s1), by kind of answer, and so are kc2 and ka2 themselves. Then words_path.sh's
# last two stages from each, seed 1, lookahead as its start:
#   qc_two, qa_two    400 steps on two-fact documents (single_fact.gin),
#   qc_six, qa_six    400 steps on six-fact ones (from_niah_fresh_documents.gin, 5e-5),
# each six-fact one scored on the 10 six-fact validation documents and held out, each two-fact one
# on 48 two-fact validation documents. About 1 h 35 min on 2 CPU cores; results
# experiments/results/qa_lookahead_qa_*.{json,md,png}.
#   bash experiments/qa/lookahead_late.sh ROOT && bash experiments/qa/lookahead_qa.sh ROOT
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-/tmp/qa_lookahead}
python=${PYTHON:-.venv/bin/python}

source experiments/qa/stages.sh   # stage, validate, with_lookahead, held_out, needs
needs kc2 lookahead_late.sh
needs ka2 lookahead_late.sh

qa_run() {  # qa_run NAME FROM LOOKAHEAD GIN_FILE [gin bindings...]: 400 steps from FROM, seed 1
  local name=$1 start=$2 lookahead=$3 gin_file=$4
  shift 4
  stage "$name" 400 "$root/$start/hypernetwork" "$gin_file" "lora_hyper.train.seed = 1" \
    "$(with_lookahead "$lookahead")" "$@"
}
qa_run qc kc2 0 experiments/qa/single_fact.gin
qa_run qa ka2 2 experiments/qa/single_fact.gin
validate qa qa_lookahead_qa_qa 1 48
validate qc qa_lookahead_qa_qc 1 48
# Their starts too: how much of the names the code words alone give.
validate ka2 qa_lookahead_qa_ka2 1 48
validate kc2 qa_lookahead_qa_kc2 1 48
# Then two facts, then six, from each.
for run in qc:0 qa:2; do
  name=${run%:*} lookahead=${run#*:}
  qa_run "${name}_two" "$name" "$lookahead" experiments/qa/single_fact.gin "lora_hyper.FictionalQA.facts_per_doc = 2"
  qa_run "${name}_six" "${name}_two" "$lookahead" experiments/qa/from_niah_fresh_documents.gin
  validate "${name}_six" "qa_lookahead_qa_${name}_six" 6 10
  held_out "${name}_six" "qa_lookahead_qa_${name}_six_by_fact"
done
# Where the names' starts went: the two-fact stages on 48 two-fact validation documents.
validate qc_two qa_lookahead_qa_qc_two 2 48
validate qa_two qa_lookahead_qa_qa_two 2 48
