#!/bin/bash
# QA, lookahead after the copy is learned, against as many steps without it: the drill's lookahead
# (c2l-c4l) got a code word's second token through only when it came in after c1 had learned the
# first token, and from the needle start (lookahead_control.sh's kl, lookahead_warmup.sh's kw) it
# cost the first token instead. Here it comes in after k, the control's run without lookahead
# (1,200 steps at 3e-4 from the shipped needle hypernetwork, the control's recipe, trained again
# unless ROOT holds it), and the two continuations differ in lookahead alone:
#   kc   k, then $MORE steps at 3e-4 without lookahead (seed 2: batches k did not read),
#   ka   the same steps and batches with lookahead 2 (zero at init: it starts as k exactly), its
#        maps' learning rate ramped from 0 over the first third (OptimizerConfig.param_groups).
#   kc2, ka2  kc and ka, 600 more steps each (seed 3): ka2 has had c4l's 1,500 lookahead steps.
# Scored as the drill's runs are (experiments.qa.copy_eval), probed linearly (experiments.qa.code_probe)
# and their training logs read side by side (experiments.qa.run_logs). About 2 h 20 min on 2 CPU
# cores. Results: experiments/results/qa_copy_lookahead_late*.{json,md,png}.
#   bash experiments/qa/lookahead_late.sh [ROOT]   (a workdir per run under ROOT; default /tmp/qa_lookahead)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-/tmp/qa_lookahead}
more=${MORE:-900}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # code_words, code_word_run

code_words
[[ -d "$root/k/hypernetwork" ]] || code_word_run k 1200 lora_hyper/pretrained/d2l_gemma3_270m 0 0
code_word_run kc "$more" "$root/k/hypernetwork" 2 0
code_word_run ka "$more" "$root/k/hypernetwork" 2 2 "lora_hyper.OptimizerConfig.param_groups = (('lookahead', 1.0, $((more / 3))),)"

"$python" -m experiments.qa.copy_eval --name qa_copy_lookahead_late \
  --hypernetwork "k: 1,200 steps, no lookahead=$root/k/hypernetwork" \
  --hypernetwork "kc: k + $more steps, no lookahead=$root/kc/hypernetwork" \
  --hypernetwork "ka: k + $more steps, lookahead 2=$root/ka/hypernetwork"
"$python" -m experiments.qa.code_probe --name qa_copy_lookahead_late_probe \
  --hypernetwork "k=$root/k/hypernetwork" --hypernetwork "kc=$root/kc/hypernetwork" --hypernetwork "ka=$root/ka/hypernetwork"
"$python" -m experiments.qa.run_logs --name qa_copy_lookahead_late_training --run "kc=$root/kc" --run "ka=$root/ka"
# kc and ka, 600 more steps each (seed 3): with MORE's default, c4l's 1,500 lookahead steps.
code_word_run kc2 600 "$root/kc/hypernetwork" 3 0
code_word_run ka2 600 "$root/ka/hypernetwork" 3 2
"$python" -m experiments.qa.copy_eval --name qa_copy_lookahead_late_1500 \
  --hypernetwork "kc2: kc + 600 steps, no lookahead=$root/kc2/hypernetwork" \
  --hypernetwork "ka2: ka + 600 steps, lookahead 2=$root/ka2/hypernetwork"
"$python" -m experiments.qa.code_probe --name qa_copy_lookahead_late_1500_probe \
  --hypernetwork "kc2=$root/kc2/hypernetwork" --hypernetwork "ka2=$root/ka2/hypernetwork"
