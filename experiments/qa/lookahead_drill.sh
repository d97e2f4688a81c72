#!/bin/bash
# QA, the copying drill with lookahead: does a Perceiver input that carries the next tokens'
# features (DocToLoraConfig.lookahead = 2) get a code word's second token through? The drill's c1
# (experiments/qa/copy_drill.sh) continued 300 steps as c2b was, on the same batches, with two
# lookahead maps (zero at init, so it starts as c1 exactly):
#   c2l  300 steps from c1 with lookahead 2 (c2b is the control),
#   c3l  300 more from c2l at learning rate 3e-4 (as c3a) and other batches (seed 1): at 1e-4 the
#        lookahead maps stay small (spectral norm about 0.2 against the identity's 1),
#   c4l  900 more from c3l at 3e-4 on other batches again (seed 2),
# scored as the drill's runs are (experiments.qa.copy_eval, against c2b and c3a) and probed
# linearly (experiments.qa.code_probe). About 1 h 45 min on 2 CPU cores after copy_drill.sh.
# Results: experiments/results/qa_copy_lookahead*.{json,md,png}.
#   bash experiments/qa/lookahead_drill.sh [ROOT]   (copy_drill.sh's ROOT; default /tmp/qa_copy)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-/tmp/qa_copy}
python=${PYTHON:-.venv/bin/python}

source experiments/qa/stages.sh   # stage, jsonl, with_lookahead

mapfile -t words < <(jsonl "$root/code_words.jsonl")
stage c2l 300 "$root/c1/hypernetwork" experiments/qa/single_fact.gin "${words[@]}" \
  "$(with_lookahead 2)"
stage c3l 300 "$root/c2l/hypernetwork" experiments/qa/single_fact.gin "${words[@]}" \
  "$(with_lookahead 2)" \
  "lora_hyper.OptimizerConfig.learning_rate = 3e-4" "lora_hyper.train.seed = 1"
stage c4l 900 "$root/c3l/hypernetwork" experiments/qa/single_fact.gin "${words[@]}" \
  "$(with_lookahead 2)" \
  "lora_hyper.OptimizerConfig.learning_rate = 3e-4" "lora_hyper.train.seed = 2"

"$python" -m experiments.qa.copy_eval --name qa_copy_lookahead \
  --hypernetwork "c2b: 300 more, as c1=$root/c2b/hypernetwork" \
  --hypernetwork "c3a: 500 more from c2a (b+a), lr 3e-4=$root/c3a/hypernetwork" \
  --hypernetwork "c2l: 300 more, lookahead 2=$root/c2l/hypernetwork" \
  --hypernetwork "c3l: 300 more from c2l, lr 3e-4=$root/c3l/hypernetwork" \
  --hypernetwork "c4l: 900 more from c3l, lr 3e-4=$root/c4l/hypernetwork"
"$python" -m experiments.qa.code_probe --name qa_copy_lookahead_probe \
  --hypernetwork "c2b=$root/c2b/hypernetwork" --hypernetwork "c3a=$root/c3a/hypernetwork" \
  --hypernetwork "c2l=$root/c2l/hypernetwork" \
  --hypernetwork "c3l=$root/c3l/hypernetwork" --hypernetwork "c4l=$root/c4l/hypernetwork"
