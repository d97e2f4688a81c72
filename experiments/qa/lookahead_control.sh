#!/bin/bash
# QA, lookahead against a matched control: the lookahead drill (lookahead_drill.sh) got a code
# word's second token through only after 1,500 steps, and its controls without lookahead had fewer
# steps (c2b 300, c3a 800). Here two runs differ in lookahead alone: the same start (the shipped
# needle hypernetwork with from_niah.gin's shapes, so nothing here needs the curriculum's hours),
# the same batches (seed 0), learning rate 3e-4 (c4l's), 1,200 steps each:
#   k    lookahead 0,
#   kl   lookahead 2 (zero at init: it starts as k exactly),
# scored as the drill's runs are (experiments.qa.copy_eval), probed linearly (experiments.qa.code_probe)
# and their training logs read side by side (experiments.qa.run_logs). About 1 h 10 min on 2 CPU cores.
# Results: experiments/results/qa_copy_lookahead_control*.{json,md,png}.
#   bash experiments/qa/lookahead_control.sh [ROOT]   (a workdir per run under ROOT; default /tmp/qa_lookahead)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-/tmp/qa_lookahead}
steps=${STEPS:-1200}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # code_words, code_word_run

code_words
for run in "k 0" "kl 2"; do
  set -- $run
  code_word_run "$1" "$steps" lora_hyper/pretrained/d2l_gemma3_270m 0 "$2"
done

"$python" -m experiments.qa.copy_eval --name qa_copy_lookahead_control \
  --hypernetwork "k: $steps steps, no lookahead=$root/k/hypernetwork" \
  --hypernetwork "kl: $steps steps, lookahead 2=$root/kl/hypernetwork"
"$python" -m experiments.qa.code_probe --name qa_copy_lookahead_control_probe \
  --hypernetwork "k=$root/k/hypernetwork" --hypernetwork "kl=$root/kl/hypernetwork"
"$python" -m experiments.qa.run_logs --name qa_copy_lookahead_control_training --run "k=$root/k" --run "kl=$root/kl"
