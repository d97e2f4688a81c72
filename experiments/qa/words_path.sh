#!/bin/bash
# QA, where the curriculum's words came from: curriculum.sh's words-only stage (s2: 200 steps on
# one-fact documents whose answer is a listed word) took the words from 0.07 to 0.47 from s1, and
# kind_batches.sh's same stage from another start (mk) did not. This run asks which part of s2's path
# mattered, and whether it was chance:
#   start   the experiments/qa/from_niah.gin run again (1,200 steps from the shipped needle hypernetwork),
#   direct  s2's stage straight from start, without s1,
#   s1      curriculum.sh's s1 from start (400 steps on one-fact documents of every kind), seed 1,
#   s2      s2's stage from that s1, seed 1 (the curriculum ran both with seed 0).
# Each is scored on 48 validation one-fact documents beyond the 20,000 training ones.
# About 1 h 45 min on 2 CPU cores; results experiments/results/qa_words_path_*_validation_1fact.{json,md,png}.
#   bash experiments/qa/words_path.sh [ROOT]   (a workdir per stage under ROOT; default /tmp/qa_words_path)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-/tmp/qa_words_path}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # stage, jsonl, validate, only

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
