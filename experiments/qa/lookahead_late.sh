#!/bin/bash
# QA, the code-word drill from the needle start, longer: k, 1,200 steps at 3e-4 on code words from the
# shipped needle hypernetwork (trained again unless ROOT holds it), then
#   kc   k + $MORE steps at 3e-4 (seed 2: batches k did not read),
#   kc2  kc + 600 more steps (seed 3),
# scored as the copying drill's runs are (experiments.qa.copy_eval) and probed linearly
# (experiments.qa.code_probe). kc2 starts the QA headline chain (lookahead_qa.sh's qc). The name is
# from its history: until the hypernetwork refactor this script also trained ka and ka2, the same
# continuations with DocToLoraConfig.lookahead = 2 (kc and kc2 were their controls; k was also the
# control of kl, lookahead from the start, in the since deleted lookahead_control.sh). That option is
# gone from the library; experiments/qa/README.md keeps their results (run at git commit eb54505). It
# took about 2 h 20 min on 2 CPU cores with ka and ka2 (as many steps as kc and kc2).
# Results: experiments/results/qa_copy_lookahead_late*.{json,md,png}.
#   bash experiments/qa/lookahead_late.sh [ROOT]   (a workdir per run under ROOT; default runs/qa_lookahead)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_lookahead}
more=${MORE:-900}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$root"

source experiments/qa/stages.sh   # code_words, code_word_run

code_words
[[ -d "$root/k/hypernetwork" ]] || code_word_run k 1200 lora_hyper/pretrained/d2l_gemma3_270m 0
code_word_run kc "$more" "$root/k/hypernetwork" 2

"$python" -m experiments.qa.copy_eval --name qa_copy_lookahead_late \
  --hypernetwork "k: 1,200 steps=$root/k/hypernetwork" \
  --hypernetwork "kc: k + $more steps=$root/kc/hypernetwork"
"$python" -m experiments.qa.code_probe --name qa_copy_lookahead_late_probe \
  --hypernetwork "k=$root/k/hypernetwork" --hypernetwork "kc=$root/kc/hypernetwork"
# kc, 600 more steps (seed 3).
code_word_run kc2 600 "$root/kc/hypernetwork" 3
"$python" -m experiments.qa.copy_eval --name qa_copy_lookahead_late_1500 \
  --hypernetwork "kc2: kc + 600 steps=$root/kc2/hypernetwork"
"$python" -m experiments.qa.code_probe --name qa_copy_lookahead_late_1500_probe \
  --hypernetwork "kc2=$root/kc2/hypernetwork"
