# Shell helpers of the QA stage scripts (curriculum.sh, copy_drill.sh, lookahead_late.sh, lookahead_qa.sh,
# mixed.sh, kind_batches.sh, words_path.sh, facts_ramp.sh, per_document.sh, numbers_stage.sh,
# no_names.sh, no_names_cycles.sh), sourced by them.
# They read the caller's $root (a workdir per stage under it) and $python.
# Every stage's gin file includes experiments/qa/from_niah.gin, whose hyper_overrides every hypernetwork
# these scripts save was trained with, so a stage builds the config its init_from was saved with (from
# the shipped needle hypernetwork: its config but for chunk_gate_cut, which from_niah.gin leaves off).

stage() {  # stage NAME STEPS FROM GIN_FILE [gin bindings...]: train NAME from FROM's hypernetwork
  local name=$1 steps=$2 start=$3 gin_file=$4
  shift 4
  local args=(--gin_param "lora_hyper.train.workdir = '$root/$name'"
              --gin_param "lora_hyper.train.init_from = '$start'" --gin_param "lora_hyper.train.steps = $steps"
              --gin_param "lora_hyper.OptimizerConfig.total_steps = $steps")
  for binding in "$@"; do args+=(--gin_param "$binding"); done
  "$python" -m lora_hyper.cli train --gin_file "$gin_file" "${args[@]}" --out "$root/$name/hypernetwork" \
    --save-dtype bfloat16
}

validate() {  # validate STAGE PREFIX FACTS_PER_DOC DOCS [by_fact flags...]: score STAGE's hypernetwork on
  # validation documents (from 20,000 on, beyond every stage's training ones) as PREFIX_validation_Nfact
  local name=$1 prefix=$2 facts=$3 docs=$4
  shift 4
  "$python" -m experiments.qa.by_fact --hypernetwork "$root/$name/hypernetwork" --split train --first-doc 20000 \
    --docs "$docs" --facts-per-doc "$facts" --name "${prefix}_validation_${facts}fact" "$@"
}

needs() {  # needs STAGE SCRIPT: stop unless STAGE's hypernetwork is under $root (SCRIPT, run first, makes it)
  if [[ ! -d "$root/$1/hypernetwork" ]]; then
    echo "no $root/$1/hypernetwork: run bash experiments/qa/$2 $root first" >&2
    exit 1
  fi
}

held_out() {  # held_out STAGE NAME: score STAGE's hypernetwork on the 24 held-out documents as NAME
  "$python" -m experiments.qa.by_fact --hypernetwork "$root/$1/hypernetwork" --name "$2"
}

only() {  # only KIND: one-fact training records whose answer is of that kind, as JSON Lines; prints its path
  local file="$root/${1// /_}.jsonl"
  "$python" -m experiments.qa.subset --out "$file" --docs 20000 --facts-per-doc 1 --kinds "$1" >&2
  echo "$file"
}

jsonl() {  # jsonl FILE: the gin bindings that train on a JSON Lines file, one a line
  echo "lora_hyper.train.data = @lora_hyper.JsonlQA()"
  echo "lora_hyper.JsonlQA.path = '$1'"
}

code_words() {  # code_words: write $root/code_words.jsonl (20,000 words, seed 0); its bindings in $words
  "$python" -m experiments.qa.code_words --out "$root/code_words.jsonl" --records 20000 --seed 0
  mapfile -t words < <(jsonl "$root/code_words.jsonl")
}

code_word_run() {  # code_word_run NAME STEPS FROM SEED [gin bindings...]: train NAME on the code words
  # (after code_words) at 3e-4, the rate of the lookahead runs these were the controls of, with
  # from_niah.gin's shapes and hyper_overrides
  local name=$1 steps=$2 start=$3 seed=$4
  shift 4
  stage "$name" "$steps" "$start" experiments/qa/single_fact.gin "${words[@]}" \
    "lora_hyper.OptimizerConfig.learning_rate = 3e-4" "lora_hyper.train.seed = $seed" "$@"
}

six_fact() {  # six_fact NAME STEPS FROM SEED [gin bindings...]: train NAME from stage FROM on six-fact documents
  # (from_niah_fresh_documents.gin) in batches of 12; the bindings may name other data
  local name=$1 steps=$2 start=$3 seed=$4
  shift 4
  stage "$name" "$steps" "$root/$start/hypernetwork" experiments/qa/from_niah_fresh_documents.gin "$@" \
    "lora_hyper.train.seed = $seed" "lora_hyper.train.global_batch_size = 12"
}
