"""The CLI under careless and hostile input: usage errors exit 2 before any work, failures exit 1 with
one line naming the problem, preemption its own code, a traceback only with --debug or for a bug, and
nothing already saved is changed. Ends with a property-based fuzz of the argument space."""

import os
import subprocess
import sys
from pathlib import Path

import gin
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lora_hyper import cli
from lora_hyper.cli import _commands
from lora_hyper.training import trainer

import xla_flags
from tiny_model import write_all

ROOT = Path(__file__).parents[2]
EXIT_CODES = {cli.EXIT_OK, cli.EXIT_ERROR, cli.EXIT_USAGE, cli.EXIT_PREEMPTED}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return write_all(tmp_path_factory.mktemp("tiny"))


def _run(*args, cwd, stdout=subprocess.PIPE, wait=True):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags.FAST_COMPILE}
  command = [sys.executable, "-m", "lora_hyper.cli", *map(str, args)]
  process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, text=True,
                             cwd=cwd, env=env)
  if not wait:
    return process
  out, err = process.communicate(timeout=120)
  return process.returncode, out, err


def test_bad_inputs_and_outputs_stop_before_any_work_with_the_right_code(tiny, tmp_path):
  (tmp_path / "a.txt").write_text("Ava keeps three owls.")
  (tmp_path / "nul.txt").write_bytes(b"\x00\x00\x00\x00")
  (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
  (tmp_path / "folder").mkdir()
  (tmp_path / "taken").write_text("keep me")
  (tmp_path / "busy").mkdir()
  (tmp_path / "busy" / "notes.md").write_text("keep me too")
  (tmp_path / "bad.gin").write_text("lora_hyper.train.steps = = 3\n")
  d2l = tiny["d2l"]
  cases = [
      (("internalize", "nul.txt", "--out", "x", "--hypernetwork", d2l), 2, "holds NUL bytes: it is not a text file"),
      (("internalize", "latin1.txt", "--out", "x", "--hypernetwork", d2l), 1, "'latin1.txt' is not UTF-8 text"),
      (("internalize", "folder", "--out", "x", "--hypernetwork", d2l), 1, "document 'folder' is a folder, not a file"),
      (("internalize", "a.txt", "--out", "", "--hypernetwork", d2l), 2, "--out is empty"),
      (("internalize", "a.txt", "--out", "taken", "--hypernetwork", d2l), 2, "--out 'taken' is a file, not a folder"),
      (("internalize", "a.txt", "--out", "busy", "--hypernetwork", d2l), 2, "holds other files (notes.md)"),
      (("internalize", "a.txt", "--out", "taken/sub", "--hypernetwork", d2l), 2, "cannot be written"),
      (("export-peft", "--adapter", "x", "--out", "taken"), 2, "--out 'taken' is a file, not a folder"),
      (("train", "--gin_file", "bad.gin"), 2, "in the gin configuration"),
      (("train", "--gin_file", str(ROOT / "gin_configs" / "d2l_270m.gin"), "--out", "taken"), 2, "is a file"),
      (("ask", "--no-adapter", "--max-new-tokens", "0", "q"), 2, "--max-new-tokens must be >= 1, got 0"),
      (("ask", "--no-adapter", "--temperature", "-1", "q"), 2, "--temperature must be >= 0, got -1"),
      (("ask", "--no-adapter", "--top-p", "2", "q"), 2, "--top-p must be in (0, 1], got 2"),
      (("ask", "--no-adapter", "--top-k", "-3", "q"), 2, "--top-k must be >= 0, got -3"),
      (("eval", "--limit", "0"), 2, "--limit must be >= 1, got 0"),
  ]
  runs = [_run(*args, cwd=tmp_path, wait=False) for args, _, _ in cases]  # concurrently: mostly start-up time
  for (args, code, message), process in zip(cases, runs):
    _, stderr = process.communicate(timeout=120)
    assert (process.returncode, message in stderr, "Traceback" in stderr) == (code, True, False), (args, stderr)
  assert (tmp_path / "taken").read_text() == "keep me" and (tmp_path / "busy" / "notes.md").read_text() == "keep me too"
  assert not (tmp_path / "x").exists()  # nothing was written for any of them


def test_a_closed_stdout_ends_quietly(tiny, tmp_path):
  process = _run("generate", "Once", "--model", tiny["model"], "--max-new-tokens", "2", cwd=tmp_path, wait=False)
  process.stdout.close()  # the reader goes away before anything is printed (as `| head -c 0` does)
  stderr = process.stderr.read()
  assert process.wait(timeout=120) == cli.EXIT_ERROR and "Traceback" not in stderr, stderr


def test_preemption_has_its_own_exit_code_and_failures_their_one_line(monkeypatch, tmp_path, capsys):
  (tmp_path / "run.gin").write_text("lora_hyper.train.workdir = 'run'\n")
  monkeypatch.chdir(tmp_path)
  stopped = trainer.TrainResult(config=None, variables={}, base=None, task_encoder="base_model", step=3,
                                metrics={"loss": 1.2e-5}, preempted=True)
  monkeypatch.setattr(trainer, "train", lambda **_: stopped)
  try:
    assert cli.main(["train", "--gin_file", "run.gin", "--out", "out"]) == cli.EXIT_PREEMPTED
  finally:
    gin.clear_config()
  err = capsys.readouterr().err
  assert "preempted; rerun the same command to resume" in err and "final loss 1.2e-05" in err
  assert not (tmp_path / "out").exists()

  def diverged(_):
    raise FloatingPointError("loss became nan at step 4")
  monkeypatch.setattr(_commands, "cmd_generate", diverged)
  assert cli.main(["generate", "x"]) == cli.EXIT_ERROR  # a FloatingPointError is not one of ours: a bug
  err = capsys.readouterr().err
  assert "Traceback" in err and "internal error: this is a bug in lora-hyper" in err

  def missing(_):
    raise FileNotFoundError("adapter file 'x' does not exist")
  monkeypatch.setattr(_commands, "cmd_generate", missing)
  assert cli.main(["generate", "x"]) == cli.EXIT_ERROR
  assert capsys.readouterr().err == "[lora-hyper] error: adapter file 'x' does not exist\n"
  assert cli.main(["--debug", "generate", "x"]) == cli.EXIT_ERROR
  assert "Traceback" in capsys.readouterr().err


def test_help_states_the_input_limits_and_exit_codes():
  commands = cli.build_parser()._subparsers._group_actions[0].choices  # argparse keeps subparsers here
  assert "8,128 tokens with the shipped hypernetwork" in " ".join(commands["internalize"].format_help().split())
  assert "at most 1,024 tokens" in " ".join(commands["adapt"].format_help().split())
  assert "75 preempted" in " ".join(commands["train"].format_help().split())


def test_concurrent_writers_to_one_output_leave_one_whole_adapter(tiny, tmp_path):
  """Two internalize runs into the same --out at once: each file is written to a temporary name and
  renamed, so the folder ends with one whole adapter, of one of the two documents."""
  from lora_hyper.adapters import io
  from lora_hyper.model import base_model

  texts = {"a.txt": "Ava keeps three owls in Quenton.", "b.txt": "The river Vell runs past the mill to the sea."}
  for name, text in texts.items():
    (tmp_path / name).write_text(text)
  runs = [_run("internalize", name, "--out", "shared", "--hypernetwork", tiny["d2l"], "--model", tiny["model"],
               cwd=tmp_path, wait=False) for name in texts]
  for process in runs:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
  assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["adapter.safetensors"]
  _, info = io.load_adapter(tmp_path / "shared", base_model.load_base_model(tiny["model"]))
  assert [d["name"] for d in info.source["documents"]] in (["a.txt"], ["b.txt"])


# ----------------------------------------------------------------------------- fuzzing

_VALUES = st.one_of(st.sampled_from(["0", "-1", "1", "2", "0.5", "1e30", "nan", "inf", "", "-", "x", "..", "\x00"]),
                    st.text(min_size=0, max_size=6))
_OPTIONS = ["--out", "--adapter", "--hypernetwork", "--model", "--dtype", "--max-new-tokens", "--temperature",
            "--top-k", "--top-p", "--seed", "--limit", "--batch-size", "--task", "--data", "--gin_file",
            "--gin_param", "--context", "--answers", "--save-dtype", "--overwrite", "--iterative", "--no-adapter",
            "-i", "--debug", "--resume-from-previous", "--bogus"]
_COMMANDS = ["generate", "internalize", "adapt", "ask", "export-peft", "train", "eval", "frobnicate"]


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(_COMMANDS),
       words=st.lists(st.one_of(st.sampled_from(_OPTIONS), _VALUES), max_size=8))
def test_fuzzed_command_lines_parse_or_fail_cleanly(monkeypatch, capsys, command, words):
  """Random command lines, parsed and validated for real (the commands' work replaced by a stub that
  checks it received validated options): exit code in {0, 1, 2, 75}, never a traceback."""
  def stub(args):
    for name in ("max_new_tokens", "limit", "batch_size"):
      assert getattr(args, name, 1) >= 1
    assert getattr(args, "temperature", 0) >= 0 and 0 < getattr(args, "top_p", 1) <= 1
    return cli.EXIT_OK
  for name in ("generate", "internalize", "adapt", "ask", "export_peft", "train", "eval"):
    monkeypatch.setattr(_commands, f"cmd_{name}", stub)
  try:
    code = cli.main([command, *words])
  except SystemExit as e:  # argparse: usage errors (2) and --help (0)
    code = e.code
  err = capsys.readouterr().err
  assert code in EXIT_CODES and "Traceback" not in err, (command, words, err)
