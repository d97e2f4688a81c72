#!/usr/bin/env bash
# Launches one `lora-hyper train` run (or, with --eval, one `lora-hyper eval` sweep) on every
# worker of a Cloud TPU VM slice.
#
# Usage:
#   ./tpu_launch.sh [--dry-run] [--create] [--eval] --gin_file gin_configs/X.gin [--gin_file ...] \
#                   [--gin_param 'lora_hyper.train.steps = 100' ...]
#
# Hyperparameters travel only as gin arguments, forwarded verbatim to `lora-hyper train` / `eval`
# (gin file paths are relative to the repository root, as on the workers).
#
#   --eval       run `lora-hyper eval` (gin_configs/niah_chunk_sweep.gin is one): every worker scores
#                its share of the sweep's points into lora_hyper.eval_sweep.out, which all of them
#                must see (OUTPUT_DIR: a mount all of them share; a sweep does not write to gs://),
#                and worker 0 writes the table; rerunning skips finished points
#   --create     create the slice first unless `gcloud compute tpus tpu-vm describe` finds it
#   --dry-run    print each command (quoted, ready to paste) instead of running it
#   -h, --help   show this text
#
# Required environment:
#   TPU_NAME, ZONE, PROJECT     the slice, e.g. my-tpu, us-west4-a, my-project
#   ACCELERATOR_TYPE            with --create: the slice shape, e.g. v5litepod-16
# Optional environment:
#   RUNTIME_VERSION   TPU VM image for --create; the default follows ACCELERATOR_TYPE's generation:
#                     v4-*: tpu-ubuntu2204-base, v5litepod-*: v2-alpha-tpuv5-lite,
#                     v5p-*: v2-alpha-tpuv5, v6e-*: v2-alpha-tpuv6e (others must set it)
#   JAX_VERSION       the jax[tpu] version the workers install (default: the jax of this
#                     checkout's .venv, so the workers run the jax the project was tested with)
#   PREEMPTIBLE=1     create a preemptible slice (rerunning the launch resumes from checkpoints)
#   REPO_URL          git clone/fetch this URL on the workers (REPO_REF, default HEAD) instead
#                     of copying the local checkout
#   REMOTE_DIR        project folder on the workers, relative to home (default: lora-hyper)
#   OUTPUT_DIR        bound as lora_hyper.train.workdir (with --eval: lora_hyper.eval_sweep.out)
#                     before the user's gin params: checkpoints and logs (the sweep's results). On a multi-host slice every worker must see the same folder:
#                     gs://bucket/run (the workers then also install gcsfs and google-cloud-storage)
#                     or a mount they all share; a run whose workers see different folders stops
#                     at start-up with an error naming the workdir
#   PYTHON_VERSION    Python for the workers' venv, fetched by uv if the image lacks it (default: 3.11)
#   DETACH=1          start the run under nohup (log in REMOTE_DIR/train.log, or eval.log) and return
#
# Every worker runs the same command with LORA_HYPER_DISTRIBUTED=1, so the library calls
# jax.distributed.initialize(), which finds the coordinator and its process id by itself.
set -euo pipefail

readonly USAGE_ERROR=2
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly REPO_ROOT

die_usage() {
  echo "tpu_launch.sh: $*" >&2
  echo "Run ./tpu_launch.sh --help for usage." >&2
  exit "$USAGE_ERROR"
}

show_help() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "${BASH_SOURCE[0]}"
}

# One word in POSIX single quotes unless it is plainly safe: readable in --dry-run output, and
# read back unchanged by the workers' shell whatever it is (printf %q's $'..' form is bash-only).
quote_word() {
  local safe='^[A-Za-z0-9_./:=@%+,-]+$' escaped_quote="'\\''"
  if [[ "$1" =~ $safe ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/$escaped_quote}"
  fi
}

# The arguments as one line that a shell splits back into the same words.
quote() {
  local out="" word
  for word in "$@"; do
    out+=" $(quote_word "$word")"
  done
  printf '%s' "${out# }"
}

dry_run=0
# Prints the command when dry-running, else echoes it to stderr and runs it.
run() {
  if ((dry_run)); then
    quote "$@"
    echo
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}

create=0
verb=train
have_gin_file=0
gin_args=()
parse_args() {
  while (($#)); do
    case "$1" in
      --dry-run) dry_run=1 ;;
      --create) create=1 ;;
      --eval) verb=eval ;;
      -h | --help) show_help; exit 0 ;;
      --gin_file | --gin_param)
        (($# >= 2)) || die_usage "$1 needs a value"
        add_gin_arg "$1" "$2"
        shift ;;
      --gin_file=* | --gin_param=*) add_gin_arg "${1%%=*}" "${1#*=}" ;;
      *) die_usage "unknown argument: $1" ;;
    esac
    shift
  done
  ((have_gin_file)) || die_usage "--gin_file is required"
}

add_gin_arg() {
  gin_args+=("$1" "$2")
  if [[ "$1" == --gin_file ]]; then
    have_gin_file=1
  fi
}

check_env() {
  local missing=() name
  local required=(TPU_NAME ZONE PROJECT)
  if ((create)); then
    required+=(ACCELERATOR_TYPE)
  fi
  for name in "${required[@]}"; do
    [[ -n "${!name:-}" ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) || die_usage "missing required environment variable(s): ${missing[*]}"
}

# Sets runtime_version: RUNTIME_VERSION, else the TPU VM image of ACCELERATOR_TYPE's generation.
choose_runtime_version() {
  if [[ -n "${RUNTIME_VERSION:-}" ]]; then
    runtime_version="$RUNTIME_VERSION"
    return
  fi
  case "$ACCELERATOR_TYPE" in
    v4-*) runtime_version=tpu-ubuntu2204-base ;;
    v5litepod-*) runtime_version=v2-alpha-tpuv5-lite ;;
    v5p-*) runtime_version=v2-alpha-tpuv5 ;;
    v6e-*) runtime_version=v2-alpha-tpuv6e ;;
    *) die_usage "no default TPU VM image for ACCELERATOR_TYPE=$ACCELERATOR_TYPE (known: v4-*, v5litepod-*," \
                 "v5p-*, v6e-*); set RUNTIME_VERSION" ;;
  esac
}

# Sets jax_version: JAX_VERSION, else the jax of the local .venv, so the workers run what was tested.
choose_jax_version() {
  local local_python="$REPO_ROOT/.venv/bin/python"
  jax_version="${JAX_VERSION:-}"
  if [[ -z "$jax_version" ]]; then
    [[ -x "$local_python" ]] || die_usage "cannot tell which jax[tpu] to install: $local_python does not exist;" \
                                          "set JAX_VERSION (e.g. 0.6.2)"
    jax_version="$("$local_python" -c 'import importlib.metadata as m; print(m.version("jax"))')" \
      || die_usage "cannot tell which jax[tpu] to install: $local_python cannot import jax; set JAX_VERSION"
  fi
  [[ "$jax_version" =~ ^[0-9]+(\.[0-9]+)*[A-Za-z0-9.+]*$ ]] || die_usage "JAX_VERSION=$jax_version is not a version"
}

create_slice() {
  local create_cmd=(gcloud compute tpus tpu-vm create "$TPU_NAME" "${flags[@]}"
                    --accelerator-type="$ACCELERATOR_TYPE" --version="$runtime_version")
  if [[ "${PREEMPTIBLE:-0}" == 1 ]]; then
    create_cmd+=(--preemptible)
  fi
  if ((dry_run)); then  # the dry run cannot know whether the slice exists, so it shows both
    run gcloud compute tpus tpu-vm describe "$TPU_NAME" "${flags[@]}"
    run "${create_cmd[@]}"
  elif gcloud compute tpus tpu-vm describe "$TPU_NAME" "${flags[@]}" >/dev/null 2>&1; then
    echo "tpu_launch.sh: $TPU_NAME exists; not creating it" >&2
  else
    run "${create_cmd[@]}"
  fi
}

ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${flags[@]}" --worker=all --command "$1"
}

# Sends the local checkout to every worker (none with REPO_URL); sets ship_step, the worker-side
# shell step that unpacks it into $remote_dir, or clones / updates it there.
ship_code() {
  if [[ -n "${REPO_URL:-}" ]]; then
    local dir ref
    dir="$(quote "$remote_dir")"
    ref="$(quote "${REPO_REF:-HEAD}")"
    ship_step="{ [ -d $dir/.git ] || git clone -q $(quote "$REPO_URL") $dir; }"
    ship_step+=" && git -C $dir fetch -q origin $ref && git -C $dir checkout -q --force FETCH_HEAD"
    return
  fi
  # One tarball instead of scp --recurse: many small files over ssh are slow, and the venv stays home.
  local tarball="${TMPDIR:-/tmp}/lora-hyper-$TPU_NAME.tar.gz"
  run tar -czf "$tarball" -C "$REPO_ROOT" --exclude=.git --exclude=.venv --exclude=__pycache__ \
      --exclude='*.egg-info' --exclude=.pytest_cache --exclude=build --exclude=dist .
  run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:lora-hyper.tar.gz" "${flags[@]}" --worker=all
  if ((!dry_run)); then
    rm -f "$tarball"
  fi
  ship_step="mkdir -p $(quote "$remote_dir") && tar -xzf lora-hyper.tar.gz -C $(quote "$remote_dir")"
  ship_step+=" && rm lora-hyper.tar.gz"
}

# uv fetches a Python >= 3.11 when the TPU image has an older one (Ubuntu 22.04 has 3.10). jax[tpu]
# is pinned to the tested jax; a gs:// workdir needs epath's and tensorboardX's GCS clients.
install_step() {
  local python packages=(-e . "jax[tpu]==$jax_version")
  python="$(quote "${PYTHON_VERSION:-3.11}")"
  if [[ "${OUTPUT_DIR:-}" == gs://* ]]; then
    packages+=(gcsfs google-cloud-storage)
  fi
  printf '%s' "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --user uv" \
    " && cd $(quote "$remote_dir")" \
    " && { [ -x .venv/bin/python ] || python3 -m uv venv -q --python $python .venv; }" \
    " && python3 -m uv pip install -q --python .venv/bin/python $(quote "${packages[@]}")"
}

# The same command on every worker: `lora-hyper train`, or `lora-hyper eval` with --eval.
run_step() {
  local command
  command="LORA_HYPER_DISTRIBUTED=1 .venv/bin/lora-hyper $verb $(quote "${gin_args[@]}")"
  if [[ "${DETACH:-0}" == 1 ]]; then
    command="nohup env $command > $verb.log 2>&1 < /dev/null &"
  fi
  printf '%s' "cd $(quote "$remote_dir") && $command"
}

main() {
  parse_args "$@"
  check_env
  if ((create)); then
    choose_runtime_version
  fi
  choose_jax_version
  remote_dir="${REMOTE_DIR:-lora-hyper}"
  if [[ -n "${OUTPUT_DIR:-}" ]]; then  # first, so a --gin_param naming the folder still wins
    local binding=lora_hyper.train.workdir
    [[ "$verb" == eval ]] && binding=lora_hyper.eval_sweep.out
    gin_args=(--gin_param "$binding = '$OUTPUT_DIR'" "${gin_args[@]}")
  fi
  flags=(--zone="$ZONE" --project="$PROJECT")
  if ((create)); then
    create_slice
  fi
  ship_code
  ssh_all "$ship_step && $(install_step)"
  ssh_all "$(run_step)"
}

main "$@"
