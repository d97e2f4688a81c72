#!/bin/bash
# QA, lookahead with a slow start for its maps alone: lookahead_control.sh's kl (lookahead 2 from
# the start at 3e-4) collapsed, its maps past the identity, while the drill's c2l-c4l, whose maps
# began at 1e-4, got a code word's second token through. One more run of that control, kw, the same
# as kl (start, batches, 1,200 steps at 3e-4) but for the lookahead maps' learning rate, ramped from
# 0 over the first 600 steps (OptimizerConfig.param_groups); the rest trains as in k and kl. Scored,
# probed and its log read as the control's runs were, whose result files hold k's and kl's rows
# (the same validation words and probe sets). About 1 h 50 min on 2 CPU cores (5 s a step here).
# Results: experiments/results/qa_copy_lookahead_warmup*.{json,md,png}.
#   bash experiments/qa/lookahead_warmup.sh [ROOT]   (a workdir under ROOT; default /tmp/qa_lookahead)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-/tmp/qa_lookahead}
steps=${STEPS:-1200}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # code_words, code_word_run

code_words
code_word_run kw "$steps" lora_hyper/pretrained/d2l_gemma3_270m 0 2 \
  "lora_hyper.OptimizerConfig.param_groups = (('lookahead', 1.0, $((steps / 2))),)"

"$python" -m experiments.qa.copy_eval --name qa_copy_lookahead_warmup \
  --hypernetwork "kw: $steps steps, lookahead 2, its maps warmed up=$root/kw/hypernetwork"
"$python" -m experiments.qa.code_probe --name qa_copy_lookahead_warmup_probe --hypernetwork "kw=$root/kw/hypernetwork"
"$python" -m experiments.qa.run_logs --name qa_copy_lookahead_warmup_training --run "kw=$root/kw"
