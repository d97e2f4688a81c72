#!/bin/bash
# QA from the code words: lookahead_late.sh's kc2 (same ROOT) continued on the QA stages, seed 1:
#   qc      kc2, then 400 steps on one-fact documents of every kind (single_fact.gin, as
#           words_path.sh's s1; 1e-4),
#   qc_two  400 steps from qc on two-fact documents (single_fact.gin),
#   qc_six  400 steps from qc_two on six-fact ones (from_niah_fresh_documents.gin, 5e-5).
# qc and kc2 itself scored on the 48 one-fact validation documents beyond the 20,000 training ones (as
# words_path.sh's s1), by kind of answer; qc_two on 48 two-fact validation documents, qc_six on the 10
# six-fact ones and held out. qc_two starts per_document.sh. The name is from its history: until the
# hypernetwork refactor it also ran qa, qa_two and qa_six, the same stages from lookahead_late.sh's ka2
# with its DocToLoraConfig.lookahead = 2 kept (and scored ka2): that option is gone from the library and
# experiments/qa/README.md keeps their results (run at git commit eb54505). It took about 1 h 35 min
# on 2 CPU cores with them (as many steps as the qc runs); results
# experiments/results/qa_lookahead_qa_*.{json,md,png}.
#   bash experiments/qa/lookahead_late.sh ROOT && bash experiments/qa/lookahead_qa.sh ROOT
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_lookahead}
python=${PYTHON:-.venv/bin/python}

source experiments/qa/stages.sh   # stage, validate, held_out, needs
needs kc2 lookahead_late.sh

qa_run() {  # qa_run NAME FROM GIN_FILE [gin bindings...]: 400 steps from FROM, seed 1
  local name=$1 start=$2 gin_file=$3
  shift 3
  stage "$name" 400 "$root/$start/hypernetwork" "$gin_file" "lora_hyper.train.seed = 1" "$@"
}
qa_run qc kc2 experiments/qa/single_fact.gin
validate qc qa_lookahead_qa_qc 1 48
# Its start too: how much of the names the code words alone give.
validate kc2 qa_lookahead_qa_kc2 1 48
# Then two facts, then six.
qa_run qc_two qc experiments/qa/single_fact.gin "lora_hyper.FictionalQA.facts_per_doc = 2"
qa_run qc_six qc_two experiments/qa/from_niah_fresh_documents.gin
validate qc_six qa_lookahead_qa_qc_six 6 10
held_out qc_six qa_lookahead_qa_qc_six_by_fact
# Where the names' starts went: the two-fact stage on 48 two-fact validation documents.
validate qc_two qa_lookahead_qa_qc_two 2 48
