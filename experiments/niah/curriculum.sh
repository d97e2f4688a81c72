#!/bin/bash
# The NIAH curriculum through the trainer, each stage from the last one's saved hypernetwork
# (lora_hyper.train.init_from; a fresh warm-up and cosine per stage):
#   1. 200 steps on the needle alone, 2. 300 on 16-48-token haystacks, 3. 300 on train.gin's
#   32-256-token haystacks, 4. 600 more on those; then scored at 64 and 256 tokens.
# About 55 minutes on 2 CPU cores. Results: experiments/results/niah_curriculum.{json,md,png} and
# niah_curriculum_training.{json,png} (the four stages' loss end to end).
#   bash experiments/niah/curriculum.sh [ROOT]   (workdirs ROOT/s1 .. ROOT/s4; default runs/niah_curriculum)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/niah_curriculum}
python=${PYTHON:-.venv/bin/python}

stage() {  # stage NAME STEPS FROM SAVE_DTYPE [gin bindings...]
  local name=$1 steps=$2 from=$3 dtype=$4
  shift 4
  local args=(--gin_param "lora_hyper.train.workdir = '$root/$name'"
              --gin_param "lora_hyper.train.steps = $steps" --gin_param "lora_hyper.OptimizerConfig.total_steps = $steps")
  [[ -n $from ]] && args+=(--gin_param "lora_hyper.train.init_from = '$root/$from/hypernetwork'")
  for binding in "$@"; do args+=(--gin_param "$binding"); done
  "$python" -m lora_hyper.cli train --gin_file experiments/niah/train.gin "${args[@]}" --out "$root/$name/hypernetwork" \
    --save-dtype "$dtype"
}

short=("lora_hyper.DocExampleShapes.num_chunks = 1")  # documents under 128 tokens fill one chunk
stage s1 200 "" float32 "lora_hyper.NiahSource.length = (1, 1)" "${short[@]}"
stage s2 300 s1 float32 "lora_hyper.NiahSource.length = (16, 48)" "${short[@]}"
stage s3 300 s2 bfloat16  # as the recorded run did: stage 4 starts from bfloat16-rounded params
stage s4 600 s3 bfloat16
"$python" -m experiments.niah.run --hypernetwork "$root/s4/hypernetwork" --lengths 64 256 --chunk-lens 128 \
  --name niah_curriculum --training-log "$root"/s{1,2,3,4}/logs/metrics.jsonl
