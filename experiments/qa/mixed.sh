#!/bin/bash
# QA, the curriculum in one stage: from the shipped needle hypernetwork (as experiments/qa/from_niah.gin,
# its shapes, learning rate and 1,200 steps), trained on documents of 1 to 6 facts mixed, about 4,000
# records of each count (experiments.qa.mixed_facts), instead of from_niah.gin's six-fact documents
# followed by curriculum.sh's stages in turn. Compare with from_niah.gin (the same steps on six-fact
# documents) and with the curriculum's pick (3,000 steps in all). About 1 h 40 min on 2 CPU cores.
# Scored with by_fact on validation documents beyond the 20,000 training ones (1, 2 and 6 facts) and
# on the held-out split; results experiments/results/qa_mixed_*.{json,md,png}.
#   bash experiments/qa/mixed.sh [ROOT]   (workdir ROOT/mx; default runs/qa_mixed)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_mixed}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # stage, jsonl, validate, held_out

"$python" -m experiments.qa.mixed_facts --out "$root/mixed.jsonl" --records-per-count 4000
mapfile -t mixed < <(jsonl "$root/mixed.jsonl")
# Two chunk slots: a few six-fact documents run past one 128-token chunk.
stage mx 1200 lora_hyper/pretrained/d2l_gemma3_270m experiments/qa/from_niah.gin "${mixed[@]}" \
  "lora_hyper.DocExampleShapes.num_chunks = 2"

validate mx qa_mixed 6 10 --training-log "$root/mx/logs/metrics.jsonl"
validate mx qa_mixed 1 48
validate mx qa_mixed 2 48
held_out mx qa_mixed_by_fact
