#!/bin/bash
# QA, where the curriculum's words came from: curriculum.sh's words-only stage (s2: 200 steps on
# one-fact documents whose answer is a listed word) took the words from 0.07 to 0.47 from s1, and
# kind_batches.sh's same stage from another start (mk) did not. This run asks which part of s2's path
# mattered, and whether it was chance:
#   start      the experiments/qa/from_niah.gin run again (1,200 steps from the shipped needle
#              hypernetwork; training is deterministic here, so this is the curriculum's start),
#   direct     s2's stage straight from start, without s1,
#   s1         curriculum.sh's s1 from start (400 steps on one-fact documents of every kind), seed 1,
#   s2         s2's stage from that s1, seed 1 (the curriculum ran both with seed 0),
#   two_facts  400 steps from s2 on two-fact documents of every kind, seed 1 (the curriculum's
#              s3_two_facts, without its names stage s3 before it),
#   six_facts  400 steps from two_facts on six-fact documents (its s4_after_two_facts), seed 1.
# Each is scored on validation documents beyond the 20,000 training ones with as many facts as it
# trained on (48 one-fact, 48 two-fact or 10 six-fact documents), six_facts also held out.
# About 2 h 25 min on 2 CPU cores; results experiments/results/qa_words_path_*.{json,md,png}.
#   bash experiments/qa/words_path.sh [ROOT]   (a workdir per stage under ROOT; default runs/qa_words_path)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_words_path}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # stage, jsonl, validate, only, held_out

words_file=$(only 'listed word')   # a command substitution's failure stops the script (set -e)
mapfile -t words < <(jsonl "$words_file")
stage start 1200 lora_hyper/pretrained/d2l_gemma3_270m experiments/qa/from_niah.gin
stage direct 200 "$root/start/hypernetwork" experiments/qa/single_fact.gin "${words[@]}"
validate direct qa_words_path_direct 1 48
stage s1 400 "$root/start/hypernetwork" experiments/qa/single_fact.gin "lora_hyper.train.seed = 1"
stage s2 200 "$root/s1/hypernetwork" experiments/qa/single_fact.gin "${words[@]}" "lora_hyper.train.seed = 1"
validate s2 qa_words_path_s2_seed1 1 48
validate s1 qa_words_path_s1_seed1 1 48
validate start qa_words_path_start 1 48
# Then the curriculum's last two stages from that s2, without its names stage (s3), seed 1:
# two-fact documents of every kind (400 steps), then six-fact ones never repeated (400 steps).
stage two_facts 400 "$root/s2/hypernetwork" experiments/qa/single_fact.gin "lora_hyper.FictionalQA.facts_per_doc = 2" \
  "lora_hyper.train.seed = 1"
stage six_facts 400 "$root/two_facts/hypernetwork" experiments/qa/from_niah_fresh_documents.gin "lora_hyper.train.seed = 1"
validate six_facts qa_words_path_six_facts 6 10
held_out six_facts qa_words_path_six_facts_by_fact
validate two_facts qa_words_path_two_facts 2 48
