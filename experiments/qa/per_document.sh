#!/bin/bash
# QA, a document's questions together: the paper averages its objective per context (10 queries
# each), while every QA stage here read records shuffled, about one question of a document a step;
# on six-fact documents the adapter then answers all of a document's name questions with one name.
# Does scoring each generated adapter on all of its document's questions in one step teach it which
# fact a question asks for? FictionalQA's records are document-major, so batches of 12 read in the
# source's own order (lora_hyper.train.shuffle = False) hold whole documents: 2 six-fact documents
# x 6 questions. The control reads the same source shuffled (12 documents a step, one question
# each); both see 4,800 records. From lookahead_qa.sh's qc_two (same ROOT), batches of 12, seed 1:
#   six_grouped     qc_two + 400 six-fact steps (from_niah_fresh_documents.gin, 5e-5), whole documents
#   six_shuffled    the same, records shuffled (the control; lookahead_qa.sh's qc_six at batch 12)
# Each scored on the 10 six-fact validation documents beyond the 20,000 training ones and held out.
# About 55 min on 2 CPU cores; results experiments/results/qa_per_document_*.{json,md,png}.
#   bash experiments/qa/lookahead_late.sh ROOT && bash experiments/qa/lookahead_qa.sh ROOT &&
#   bash experiments/qa/per_document.sh ROOT
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_lookahead}
python=${PYTHON:-.venv/bin/python}

source experiments/qa/stages.sh   # stage, validate, held_out, needs, six_fact
needs qc_two lookahead_qa.sh

six_fact six_grouped 400 qc_two 1 "lora_hyper.train.shuffle = False"
validate six_grouped qa_per_document_six_grouped 6 10
six_fact six_shuffled 400 qc_two 1 "lora_hyper.train.shuffle = True"
validate six_shuffled qa_per_document_six_shuffled 6 10
held_out six_grouped qa_per_document_six_grouped_by_fact
held_out six_shuffled qa_per_document_six_shuffled_by_fact
