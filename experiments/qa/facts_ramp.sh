#!/bin/bash
# QA, the facts one at a time: words_path.sh's two-fact stage answered most words and numbers of
# two-fact validation documents (relative 0.669), and its six-fact stage lost most numbers again
# (0.355 on six-fact ones). Does the jump from two facts to six cost them, or six facts themselves?
# From words_path.sh's two_facts hypernetwork (same ROOT), seed 1 throughout but for six_more:
#   three_facts, four_facts, five_facts   200 steps each on documents of 3, 4, then 5 facts
#                                          (single_fact.gin, 20,000 documents, all fit one chunk),
#   six_after_ramp                         words_path.sh's six-fact stage (400 steps of
#                                          from_niah_fresh_documents.gin) from five_facts,
#   six_only                               the control, as many steps in all (3,200) on six facts
#                                          only: words_path.sh's six_facts, then 600 more steps,
#   six_more                               six_after_ramp, then 400 more six-fact steps (seed 2).
# Scored on the 10 six-fact validation documents beyond the 20,000 training ones (as words_path.sh's
# six_facts; two_facts too), five_facts also on 48 five-fact ones, and six_after_ramp and six_only
# held out (they tie on validation), six_more on validation only. About 2 h 5 min on 2 CPU cores;
# results experiments/results/qa_facts_ramp_*.{json,md,png}.
#   bash experiments/qa/words_path.sh ROOT && bash experiments/qa/facts_ramp.sh ROOT
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_words_path}
python=${PYTHON:-.venv/bin/python}

source experiments/qa/stages.sh   # stage, validate, held_out, needs
needs two_facts words_path.sh

from=two_facts
for facts in three:3 four:4 five:5; do
  stage "${facts%:*}_facts" 200 "$root/$from/hypernetwork" experiments/qa/single_fact.gin \
    "lora_hyper.FictionalQA.facts_per_doc = ${facts#*:}" "lora_hyper.train.seed = 1"
  from=${facts%:*}_facts
done
stage six_after_ramp 400 "$root/five_facts/hypernetwork" experiments/qa/from_niah_fresh_documents.gin \
  "lora_hyper.train.seed = 1"
validate five_facts qa_facts_ramp_five_facts 6 10
validate six_after_ramp qa_facts_ramp_six_after_ramp 6 10
validate five_facts qa_facts_ramp_five_facts 5 48
validate two_facts qa_facts_ramp_two_facts 6 10
held_out six_after_ramp qa_facts_ramp_six_after_ramp_by_fact
# The control: as many steps in all (3,200), six facts only: words_path.sh's six_facts, then 600 more
# steps on six-fact documents at the ramp stages' learning rate.
stage six_only 600 "$root/six_facts/hypernetwork" experiments/qa/single_fact.gin "lora_hyper.FictionalQA.facts_per_doc = 6" \
  "lora_hyper.DocExampleShapes.num_chunks = 2" "lora_hyper.train.seed = 1"
validate six_only qa_facts_ramp_six_only 6 10
held_out six_only qa_facts_ramp_six_only_by_fact
# Do more steps keep paying? six_after_ramp, then 400 more six-fact steps (seed 2: other batches).
stage six_more 400 "$root/six_after_ramp/hypernetwork" experiments/qa/single_fact.gin \
  "lora_hyper.FictionalQA.facts_per_doc = 6" "lora_hyper.DocExampleShapes.num_chunks = 2" "lora_hyper.train.seed = 2"
validate six_more qa_facts_ramp_six_more 6 10
