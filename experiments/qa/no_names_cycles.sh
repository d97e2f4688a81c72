#!/bin/bash
# QA, more cycles of no_names.sh's last two stages, and a larger validation set to pick among them.
# no_names.sh's two cycles (200 steps on six-fact number questions alone, then 400 on number and
# listed-word questions) ended at validation 0.500 and 0.484 on 10 six-fact documents (12 number
# questions), held out 0.497 and 0.534: too few validation questions to tell them apart. Here:
#   six_numbers_N, six_numbers_no_names_N  the two stages again from cycle N-1's end (seeds 2N, 2N+1),
#                                           for each N in `added` below
#   average_6_to_8                          the mean of cycles 6, 7 and 8's weights (experiments.qa.average)
# and every cycle's end scored on 20 six-fact validation documents (from 20,000 on, beyond the
# training ones; the first 10 are no_names.sh's), the pick among them (a tie goes to the earlier
# cycle, and to a cycle over the mean); held out for all but no_names.sh's two, which no_names.sh scored.
# About 8 h 15 min on 2 CPU cores; results experiments/results/qa_no_names_cycles_*.{json,md,png}.
#   ... && bash experiments/qa/no_names.sh ROOT && bash experiments/qa/no_names_cycles.sh ROOT
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-runs/qa_lookahead}
python=${PYTHON:-.venv/bin/python}

source experiments/qa/stages.sh   # stage, jsonl, validate, held_out, needs, six_fact
needs six_numbers_no_names_2 no_names.sh
mapfile -t no_names < <(jsonl "$root/six_fact_no_names.jsonl")
mapfile -t six_numbers < <(jsonl "$root/six_fact_numbers.jsonl")

cycle() {  # cycle N: the numbers-only stage, then the no-names one, from cycle N-1's end (seeds 2N, 2N+1), scored
  local n=$1
  six_fact "six_numbers_$n" 200 "six_numbers_no_names_$((n - 1))" $((2 * n)) "${six_numbers[@]}"
  six_fact "six_numbers_no_names_$n" 400 "six_numbers_$n" $((2 * n + 1)) "${no_names[@]}"
  validate "six_numbers_no_names_$n" "qa_no_names_cycles_six_numbers_no_names_$n" 6 20
  held_out "six_numbers_no_names_$n" "qa_no_names_cycles_six_numbers_no_names_${n}_by_fact"
}

added=({3..16})  # the cycles this script trains, after no_names.sh's 1 and 2
for n in "${added[@]}"; do cycle "$n"; done
"$python" -m experiments.qa.average --out "$root/average_6_to_8/hypernetwork" \
  "$root"/six_numbers_no_names_{6,7,8}/hypernetwork
validate average_6_to_8 qa_no_names_cycles_average_6_to_8 6 20
held_out average_6_to_8 qa_no_names_cycles_average_6_to_8_by_fact
validate six_numbers_no_names qa_no_names_cycles_six_numbers_no_names 6 20
validate six_numbers_no_names_2 qa_no_names_cycles_six_numbers_no_names_2 6 20
# every cycle and the average side by side (the first two's held-out scores are no_names.sh's)
cycles=qa_no_names_cycles_six_numbers_no_names
validation=("1=${cycles}_validation_6fact" "2=${cycles}_2_validation_6fact")
held=(1=qa_no_names_six_numbers_no_names_by_fact 2=qa_no_names_six_numbers_no_names_2_by_fact)
for n in "${added[@]}"; do
  validation+=("$n=${cycles}_${n}_validation_6fact")
  held+=("$n=${cycles}_${n}_by_fact")
done
"$python" -m experiments.qa.compare --name qa_no_names_cycles --title "QA: cycles of numbers-only and no-names stages" \
  --label-title cycle \
  --validation "${validation[@]}" "6-8 mean=qa_no_names_cycles_average_6_to_8_validation_6fact" \
  --held-out "${held[@]}" "6-8 mean=qa_no_names_cycles_average_6_to_8_by_fact"
