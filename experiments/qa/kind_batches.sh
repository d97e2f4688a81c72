#!/bin/bash
# QA, mixed.sh's run with batches of one kind of answer: the same ~24,000 records of documents with 1 to 6
# facts (experiments.qa.mixed_facts), the same start (the shipped needle hypernetwork), gin file and
# 1,200 steps, but each batch of 8 holds numbers only, listed words only or made-up names only, in
# shuffled order (--kind-batches 8, read in the file's order: lora_hyper.train.shuffle = False). It
# asks whether the one-kind stages of curriculum.sh taught the words by their batches or by their
# order. Then mkw: 200 steps from it on one-fact documents whose answer is a listed word, as
# curriculum.sh's s2 (single_fact.gin, the same batches), which took words from 0.07 to 0.47 from s1.
# About 1 h 45 min on 2 CPU cores; results experiments/results/qa_kind_batches_*.{json,md,png}.
#   bash experiments/qa/kind_batches.sh [ROOT]   (workdirs ROOT/mk and ROOT/mkw; default runs/qa_mixed)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_mixed}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # stage, jsonl, validate, only, held_out

"$python" -m experiments.qa.mixed_facts --out "$root/kind_batches.jsonl" --records-per-count 4000 --kind-batches 8
mapfile -t data < <(jsonl "$root/kind_batches.jsonl")
stage mk 1200 lora_hyper/pretrained/d2l_gemma3_270m experiments/qa/from_niah.gin "${data[@]}" \
  "lora_hyper.DocExampleShapes.num_chunks = 2" "lora_hyper.train.shuffle = False"
"$python" -m experiments.qa.kind_losses --data "$root/kind_batches.jsonl" --training-log "$root/mk/logs/metrics.jsonl" \
  --batch-size 8 --name qa_kind_batches_training_by_kind

validate mk qa_kind_batches 6 10 --training-log "$root/mk/logs/metrics.jsonl"
validate mk qa_kind_batches 1 48
held_out mk qa_kind_batches_by_fact
validate mk qa_kind_batches 2 48

words_file=$(only 'listed word')   # a command substitution's failure stops the script (set -e)
mapfile -t words < <(jsonl "$words_file")
stage mkw 200 "$root/mk/hypernetwork" experiments/qa/single_fact.gin "${words[@]}"
validate mkw qa_kind_batches_then_words 1 48
validate mkw qa_kind_batches_then_words 6 10 --training-log "$root/mk/logs/metrics.jsonl" "$root/mkw/logs/metrics.jsonl"
held_out mkw qa_kind_batches_then_words_by_fact
