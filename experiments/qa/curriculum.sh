#!/bin/bash
# QA, a curriculum for words and names through the trainer, each stage from the last one's saved
# hypernetwork (a fresh warm-up and cosine per stage), starting from the experiments/qa/from_niah.gin
# run's --out (runs/qa_niah/hypernetwork; FROM overrides):
#   s1  400 steps on one-fact documents of every kind (single_fact.gin),
#   s2  200 on one-fact documents whose answer is a listed word (colour, export, profession, ...),
#   s3  400 on one-fact documents whose answer is a made-up name,
#   s4  500 on six-fact documents none of which repeats (from_niah_fresh_documents.gin), from s3;
#   and a middle stage instead: s3_two_facts, 400 on two-fact documents from s3, then
#   s4_after_two_facts, 400 on six-fact documents from it.
# Each stage is scored on validation documents beyond the 20,000 training ones, with as many facts
# as it trained on (by_fact --split train --first-doc 20000); the six-fact ends and s3 also on the
# held-out split. About 2 hours on 2 CPU cores. Results: experiments/results/qa_curriculum_*.{json,md,png},
# the stages' loss end to end in qa_curriculum_*_validation_6fact_training.{json,png}.
#   bash experiments/qa/curriculum.sh [ROOT]   (a workdir per stage under ROOT; default runs/qa_curriculum)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_curriculum}
from=${FROM:-runs/qa_niah/hypernetwork}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # stage, jsonl, validate, only, held_out

words_file=$(only 'listed word')   # a command substitution's failure stops the script (set -e)
names_file=$(only 'made-up name')
mapfile -t words < <(jsonl "$words_file")
mapfile -t names < <(jsonl "$names_file")
stage s1 400 "$from" experiments/qa/single_fact.gin
stage s2 200 "$root/s1/hypernetwork" experiments/qa/single_fact.gin "${words[@]}"
stage s3 400 "$root/s2/hypernetwork" experiments/qa/single_fact.gin "${names[@]}"
stage s4 500 "$root/s3/hypernetwork" experiments/qa/from_niah_fresh_documents.gin
stage s3_two_facts 400 "$root/s3/hypernetwork" experiments/qa/single_fact.gin "lora_hyper.FictionalQA.facts_per_doc = 2"
stage s4_after_two_facts 400 "$root/s3_two_facts/hypernetwork" experiments/qa/from_niah_fresh_documents.gin

logs() { for s in "$@"; do echo "$root/$s/logs/metrics.jsonl"; done; }
for s in s1 s2 s3; do validate $s "qa_curriculum_$s" 1 48; done
for s in s3 s3_two_facts; do validate $s "qa_curriculum_$s" 2 48; done
validate s4 qa_curriculum_s4 6 10 --training-log $(logs s1 s2 s3 s4)
validate s4_after_two_facts qa_curriculum_s4_after_two_facts 6 10 --training-log $(logs s1 s2 s3 s3_two_facts s4_after_two_facts)
# Held out: made-up names whose first letters training never saw (fictional.NAME_INITIALS).
"$python" -m experiments.qa.by_fact --hypernetwork "$root/s3/hypernetwork" --docs 48 --facts-per-doc 1 \
  --name qa_curriculum_s3_by_fact_1fact
for s in s4 s4_after_two_facts; do
  held_out "$s" "qa_curriculum_${s}_by_fact"
done
