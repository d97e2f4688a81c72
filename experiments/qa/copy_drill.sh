#!/bin/bash
# QA, a copying drill after the curriculum: can the adapter learn to copy a made-up word whatever
# letters it starts with? From the curriculum's pick (experiments/qa/curriculum.sh's
# s4_after_two_facts; FROM overrides), through single_fact.gin's shapes and learning rate:
#   c1   300 steps on one-sentence documents that each state a code word (experiments.qa.code_words),
#   c2b  300 more from c1 as it is,
#   m1   400 from c1 on half code words, half six-fact fictional records (two chunks a document),
#   p1   300 from c2b on code words that all start "Ka-": the first token the document decides is
#        then the third, after two the adapter can write without reading the document.
# Scored: code words of another seed (experiments.qa.copy_eval, token by token; p1's with the same
# "Ka-" start), held-out one-fact documents for c1 (names' first letters, against the curriculum's
# s3), and m1 on six-fact validation documents and then the held-out split. About 1 h 45 min on 2
# CPU cores when it also ran c2a and c3a (800 of its 2,100 training steps): until the hypernetwork
# refactor it trained c2a, 300 more from c1 with generated_factors 'b+a' (each chunk's A corrected from
# its code; c2b was its control, on the same batches), and c3a, 500 more from c2a at 3e-4 (seed 1).
# That option is gone from the library; experiments/qa/README.md keeps their results (run at git
# commit eb54505).
# Results: experiments/results/qa_copy_*.{json,md,png}.
#   bash experiments/qa/copy_drill.sh [ROOT]   (a workdir per stage under ROOT; default runs/qa_copy)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_copy}
from=${FROM:-runs/qa_curriculum/s4_after_two_facts/hypernetwork}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # stage, jsonl, code_words, validate, held_out

code_words
"$python" -m experiments.qa.code_words --out "$root/mixed.jsonl" --records 20000 --seed 0 --with-fictional-docs 3334
"$python" -m experiments.qa.code_words --out "$root/prefixed.jsonl" --records 20000 --seed 0 --prefix Ka-
mapfile -t mixed < <(jsonl "$root/mixed.jsonl")
mapfile -t prefixed < <(jsonl "$root/prefixed.jsonl")
gin=experiments/qa/single_fact.gin   # its shapes and learning rate; the data is the bindings'
stage c1 300 "$from" $gin "${words[@]}"
stage c2b 300 "$root/c1/hypernetwork" $gin "${words[@]}"
stage m1 400 "$root/c1/hypernetwork" $gin "${mixed[@]}" "lora_hyper.DocExampleShapes.num_chunks = 2"
stage p1 300 "$root/c2b/hypernetwork" $gin "${prefixed[@]}"

"$python" -m experiments.qa.copy_eval --name qa_copy_code_words \
  --hypernetwork "before the drill=$from" --hypernetwork "c1: drill, 300 steps=$root/c1/hypernetwork" \
  --hypernetwork "c2b: 300 more, as c1=$root/c2b/hypernetwork" \
  --hypernetwork "m1: 400 mixed with six-fact QA=$root/m1/hypernetwork"
"$python" -m experiments.qa.copy_eval --name qa_copy_prefixed_code_words --prefix Ka- \
  --hypernetwork "c2b=$root/c2b/hypernetwork" --hypernetwork "p1: 300 steps on 'Ka-' words=$root/p1/hypernetwork"
"$python" -m experiments.qa.by_fact --hypernetwork "$root/c1/hypernetwork" --docs 48 --facts-per-doc 1 \
  --name qa_copy_c1_by_fact_1fact
validate m1 qa_copy_m1 6 10 --training-log "$root/c1/logs/metrics.jsonl" "$root/m1/logs/metrics.jsonl"
held_out m1 qa_copy_m1_by_fact
