"""tpu_launch.sh: the gcloud commands its dry run prints, and its usage errors.

A fake `gcloud` (and `tar`) that fails loudly comes first on PATH, so no test can reach Cloud TPU.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import shlex
import subprocess

import jax
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "tpu_launch.sh"
SLICE_ENV = {"TPU_NAME": "hyper-tpu", "ZONE": "us-west4-a", "PROJECT": "my-project",
             "ACCELERATOR_TYPE": "v5litepod-16"}
OPTIONAL_VARS = ("RUNTIME_VERSION", "PREEMPTIBLE", "REPO_URL", "REPO_REF", "REMOTE_DIR", "OUTPUT_DIR",
                 "PYTHON_VERSION", "DETACH", "JAX_VERSION")
# Spaces, quotes and shell syntax that must reach `lora-hyper train` untouched.
GIN_PARAMS = ("lora_hyper.train.steps = 100",
              "lora_hyper.train.hypernetwork = 'd2l_tiny'",
              'lora_hyper.train.workdir = "/tmp/$(echo injected); x && y"')
FAKE_TOOL = "#!/bin/sh\necho \"FAKE $(basename \"$0\") CALLED: $*\" >&2\nexit 99\n"


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("fake_bin")
  for tool in ("gcloud", "tar"):
    (path / tool).write_text(FAKE_TOOL)
    (path / tool).chmod(0o755)
  return path


def _launch(fake_bin: pathlib.Path, *args: str, **env: str) -> subprocess.CompletedProcess:
  full_env = {k: v for k, v in os.environ.items() if k not in SLICE_ENV and k not in OPTIONAL_VARS}
  full_env.update(env, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
  return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=30)


def _dry_run(fake_bin: pathlib.Path, *args: str, **env: str) -> list[list[str]]:
  """The printed commands, each split into words as a shell would."""
  result = _launch(fake_bin, "--dry-run", *args, **{**SLICE_ENV, **env})
  assert result.returncode == 0, result.stderr
  assert "FAKE" not in result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def _gin_args(*gin_files: str, params: tuple[str, ...] = GIN_PARAMS) -> list[str]:
  args = [word for f in gin_files for word in ("--gin_file", f)]
  return args + [word for p in params for word in ("--gin_param", p)]


def _ssh_commands(commands: list[list[str]]) -> list[list[str]]:
  """The remote command of each `tpu-vm ssh`, split into words."""
  ssh = [c for c in commands if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
  return [shlex.split(c[c.index("--command") + 1]) for c in ssh]


def test_train_command_forwards_gin_arguments_verbatim(fake_bin: pathlib.Path):
  gin = _gin_args("gin_configs/d2l.gin", "gin_configs/extra.gin")
  remote = _ssh_commands(_dry_run(fake_bin, *gin))[-1]
  assert remote == ["cd", "lora-hyper", "&&", "LORA_HYPER_DISTRIBUTED=1", ".venv/bin/lora-hyper", "train", *gin]


def test_equals_form_of_gin_arguments(fake_bin: pathlib.Path):
  remote = _ssh_commands(_dry_run(fake_bin, "--gin_file=a.gin", f"--gin_param={GIN_PARAMS[1]}"))[-1]
  assert remote[-4:] == ["--gin_file", "a.gin", "--gin_param", GIN_PARAMS[1]]


def test_output_dir_is_the_first_gin_binding(fake_bin: pathlib.Path):
  remote = _ssh_commands(_dry_run(fake_bin, *_gin_args("a.gin"), OUTPUT_DIR="/mnt/runs/r1"))[-1]
  train = remote.index("train")
  assert remote[train + 1:train + 5] == ["--gin_param", "lora_hyper.train.workdir = '/mnt/runs/r1'",
                                         "--gin_file", "a.gin"]


def test_every_remote_command_runs_on_all_workers(fake_bin: pathlib.Path):
  commands = _dry_run(fake_bin, *_gin_args("a.gin"))
  remote = [c for c in commands if c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]]
  assert [c[4] for c in remote] == ["scp", "ssh", "ssh"]
  for command in remote:
    assert "--worker=all" in command
    assert command[command.index("--zone=us-west4-a") + 1] == "--project=my-project"
  scp = remote[0]
  assert scp[6] == "hyper-tpu:lora-hyper.tar.gz"


def _install(commands: list[list[str]]) -> list[str]:
  """The words of the workers' last `pip install` (the project's, after uv's), to the end of that step."""
  setup = _ssh_commands(commands)[0]
  start = max(i for i, word in enumerate(setup) if word == "install")
  return setup[start:setup.index("&&", start) if "&&" in setup[start:] else len(setup)]


def test_setup_installs_the_project_with_the_tested_jax_for_tpu(fake_bin: pathlib.Path):
  commands = _dry_run(fake_bin, *_gin_args("a.gin"))
  assert "tar -xzf lora-hyper.tar.gz -C lora-hyper" in " ".join(_ssh_commands(commands)[0])
  # The jax of this checkout's .venv, which runs these tests: the workers run the jax that was tested.
  assert jax.__version__ == importlib.metadata.version("jax")
  assert _install(commands) == ["install", "-q", "--python", ".venv/bin/python", "-e", ".",
                                f"jax[tpu]=={jax.__version__}"]
  assert _install(_dry_run(fake_bin, *_gin_args("a.gin"), JAX_VERSION="0.6.2"))[-1] == "jax[tpu]==0.6.2"


def test_a_gs_workdir_installs_the_gcs_clients(fake_bin: pathlib.Path):
  local = _install(_dry_run(fake_bin, *_gin_args("a.gin"), OUTPUT_DIR="/mnt/shared/r1"))
  assert "gcsfs" not in local
  assert _install(_dry_run(fake_bin, *_gin_args("a.gin"), OUTPUT_DIR="gs://bucket/r1")) == \
      [*local, "gcsfs", "google-cloud-storage"]


def test_a_jax_version_that_is_not_one_is_a_usage_error(fake_bin: pathlib.Path):
  result = _launch(fake_bin, "--dry-run", *_gin_args("a.gin"), **SLICE_ENV, JAX_VERSION="0.6; rm -rf ~")
  assert result.returncode == 2 and "JAX_VERSION=0.6; rm -rf ~ is not a version" in result.stderr
  assert result.stdout == ""


@pytest.mark.parametrize("accelerator, image", [("v4-32", "tpu-ubuntu2204-base"),
                                                ("v5litepod-16", "v2-alpha-tpuv5-lite"),
                                                ("v5p-8", "v2-alpha-tpuv5"), ("v6e-64", "v2-alpha-tpuv6e")])
def test_the_default_image_follows_the_tpu_generation(fake_bin: pathlib.Path, accelerator: str, image: str):
  commands = _dry_run(fake_bin, "--create", *_gin_args("a.gin"), ACCELERATOR_TYPE=accelerator)
  assert commands[1][-2:] == [f"--accelerator-type={accelerator}", f"--version={image}"]


def test_an_unknown_generation_needs_runtime_version(fake_bin: pathlib.Path):
  result = _launch(fake_bin, "--dry-run", "--create", *_gin_args("a.gin"), **{**SLICE_ENV, "ACCELERATOR_TYPE": "v3-8"})
  assert result.returncode == 2 and result.stdout == ""
  assert "no default TPU VM image for ACCELERATOR_TYPE=v3-8" in result.stderr and "set RUNTIME_VERSION" in result.stderr
  commands = _dry_run(fake_bin, "--create", *_gin_args("a.gin"), ACCELERATOR_TYPE="v3-8",
                      RUNTIME_VERSION="tpu-vm-base")
  assert commands[1][-1] == "--version=tpu-vm-base"


def test_repo_url_clones_instead_of_copying(fake_bin: pathlib.Path):
  commands = _dry_run(fake_bin, *_gin_args("a.gin"), REPO_URL="https://example.com/lora-hyper.git",
                      REPO_REF="v1")
  assert not [c for c in commands if c[0] == "tar" or "scp" in c]
  setup = " ".join(_ssh_commands(commands)[0])
  assert "git clone -q https://example.com/lora-hyper.git lora-hyper" in setup
  assert "fetch -q origin v1" in setup


def test_create_only_with_the_flag(fake_bin: pathlib.Path):
  without = _dry_run(fake_bin, *_gin_args("a.gin"))
  assert not [c for c in without if "create" in c or "describe" in c]

  commands = _dry_run(fake_bin, "--create", *_gin_args("a.gin"))
  assert commands[0] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "hyper-tpu", "--zone=us-west4-a",
                         "--project=my-project"]
  assert commands[1] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "hyper-tpu", "--zone=us-west4-a",
                         "--project=my-project", "--accelerator-type=v5litepod-16",
                         "--version=v2-alpha-tpuv5-lite"]


def test_create_preemptible_with_another_runtime(fake_bin: pathlib.Path):
  commands = _dry_run(fake_bin, "--create", *_gin_args("a.gin"), PREEMPTIBLE="1", RUNTIME_VERSION="v2-alpha-tpuv6e")
  assert commands[1][-2:] == ["--version=v2-alpha-tpuv6e", "--preemptible"]


def test_detach_runs_under_nohup(fake_bin: pathlib.Path):
  remote = _ssh_commands(_dry_run(fake_bin, *_gin_args("a.gin", params=()), DETACH="1"))[-1]
  assert remote == ["cd", "lora-hyper", "&&", "nohup", "env", "LORA_HYPER_DISTRIBUTED=1", ".venv/bin/lora-hyper",
                    "train", "--gin_file", "a.gin", ">", "train.log", "2>&1", "<", "/dev/null", "&"]


def test_eval_launches_a_sweep_on_every_worker_into_the_output_dir(fake_bin: pathlib.Path):
  gin = _gin_args("gin_configs/niah_chunk_sweep.gin")
  remote = _ssh_commands(_dry_run(fake_bin, "--eval", *gin, OUTPUT_DIR="/mnt/shared/sweep", DETACH="1"))[-1]
  assert remote == ["cd", "lora-hyper", "&&", "nohup", "env", "LORA_HYPER_DISTRIBUTED=1", ".venv/bin/lora-hyper",
                    "eval", "--gin_param", "lora_hyper.eval_sweep.out = '/mnt/shared/sweep'", *gin,
                    ">", "eval.log", "2>&1", "<", "/dev/null", "&"]


@pytest.mark.parametrize("missing", [("ZONE",), ("TPU_NAME", "PROJECT")])
def test_missing_environment_is_a_usage_error(fake_bin: pathlib.Path, missing: tuple[str, ...]):
  env = {k: v for k, v in SLICE_ENV.items() if k not in missing}
  result = _launch(fake_bin, "--dry-run", *_gin_args("a.gin"), **env)
  assert result.returncode == 2
  assert f"missing required environment variable(s): {' '.join(missing)}" in result.stderr
  assert result.stdout == ""


def test_accelerator_type_is_required_only_to_create(fake_bin: pathlib.Path):
  env = {k: v for k, v in SLICE_ENV.items() if k != "ACCELERATOR_TYPE"}
  assert _launch(fake_bin, "--dry-run", *_gin_args("a.gin"), **env).returncode == 0
  result = _launch(fake_bin, "--dry-run", "--create", *_gin_args("a.gin"), **env)
  assert result.returncode == 2
  assert "ACCELERATOR_TYPE" in result.stderr


@pytest.mark.parametrize("args, message", [
    ((), "--gin_file is required"),
    (("--gin_param", "x = 1"), "--gin_file is required"),
    (("--gin_file",), "--gin_file needs a value"),
    (("--gin_file", "a.gin", "--steps", "3"), "unknown argument: --steps"),
])
def test_usage_errors(fake_bin: pathlib.Path, args: tuple[str, ...], message: str):
  result = _launch(fake_bin, "--dry-run", *args, **SLICE_ENV)
  assert result.returncode == 2
  assert message in result.stderr


def test_help(fake_bin: pathlib.Path):
  result = _launch(fake_bin, "--help")
  assert result.returncode == 0
  assert "Usage:" in result.stdout and "TPU_NAME" in result.stdout and "ACCELERATOR_TYPE" in result.stdout
  assert "JAX_VERSION" in result.stdout and "v6e-*: v2-alpha-tpuv6e" in result.stdout


def test_without_dry_run_it_calls_gcloud(fake_bin: pathlib.Path):
  """The fake gcloud is the one found: a real run reaches it (and it fails loudly)."""
  result = _launch(fake_bin, "--create", *_gin_args("a.gin"), **SLICE_ENV)
  assert result.returncode == 99
  assert "FAKE gcloud CALLED: compute tpus tpu-vm create hyper-tpu" in result.stderr


def test_printed_train_command_runs_with_exact_arguments(fake_bin: pathlib.Path, tmp_path: pathlib.Path):
  """Both quoting levels, evaluated by real shells: bash for the printed line, sh on the 'worker'."""
  line = _launch(fake_bin, "--dry-run", *_gin_args("a.gin"), **SLICE_ENV).stdout.splitlines()[-1]
  worker_bin = tmp_path / "worker_bin"
  worker_bin.mkdir()
  (worker_bin / "gcloud").write_text(
      '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --command ] && exec sh -c "$2"; shift; done\nexit 98\n')
  entry_point = tmp_path / "lora-hyper" / ".venv" / "bin" / "lora-hyper"
  entry_point.parent.mkdir(parents=True)
  entry_point.write_text('#!/bin/sh\nprintf "%s\\n" "$LORA_HYPER_DISTRIBUTED" "$@" > ../args.txt\n')
  for tool in (worker_bin / "gcloud", entry_point):
    tool.chmod(0o755)
  env = {**os.environ, "PATH": f"{worker_bin}{os.pathsep}{os.environ['PATH']}"}
  subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, check=True, timeout=30)
  assert (tmp_path / "args.txt").read_text().splitlines() == ["1", "train", *_gin_args("a.gin")]
