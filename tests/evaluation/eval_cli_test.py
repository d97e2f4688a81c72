"""`lora-hyper eval --gin_file` as a user runs it, on a tiny random Gemma 3 and Doc-to-LoRA: bad
configurations stop before any model loads with a usage error naming the binding; a sweep on two
localhost processes (one JAX run, as the hosts of a pod) of two devices each, their batches
data-parallel over them, writes the same table and answers as one process of one device."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lora_hyper.evaluation import study
from lora_hyper.model import base_model

import xla_flags
from tiny_model import write_talking_tiny_model, write_tiny_hypernetworks

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  folder = tmp_path_factory.mktemp("eval_gin")
  model = write_talking_tiny_model(folder / "model")
  d2l, _ = write_tiny_hypernetworks(folder, base_model.load_base_model(model))
  (folder / "sweep.gin").write_text(f"""
lora_hyper.eval_sweep.title = 'tiny sweep'
lora_hyper.eval_sweep.axes = {{'lora_hyper.EvalConfig.chunk_len': [16, 32, 64]}}
lora_hyper.EvalConfig.hypernetwork = '{d2l}'
lora_hyper.EvalConfig.base_model = '{model}'
lora_hyper.EvalConfig.data = @lora_hyper.NiahData()
lora_hyper.NiahData.lengths = [48]
lora_hyper.NiahData.per_length = 2
lora_hyper.EvalConfig.conditions = ['adapter', 'base']
lora_hyper.EvalConfig.metrics = ['exact_match', 'digit_accuracy']
lora_hyper.EvalConfig.max_new_tokens = 3
""")
  return {"folder": folder, "gin": folder / "sweep.gin", "cache": tmp_path_factory.mktemp("jax_cache")}


def _env(setup, **extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_HYPER_")}
  return {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags.for_devices(1),
          "JAX_COMPILATION_CACHE_DIR": str(setup["cache"]), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **extra}


def _eval(setup, out, *params, env=None, wait=True):
  bindings = [w for p in (f"lora_hyper.eval_sweep.out = '{out}'", *params) for w in ("--gin_param", p)]
  command = [sys.executable, "-m", "lora_hyper.cli", "eval", "--gin_file", str(setup["gin"]), *bindings]
  if not wait:
    return command
  return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env or _env(setup), timeout=240)


@pytest.mark.parametrize("param, message", [
    ("lora_hyper.EvalConfig.chunk_size = 8", "No configurable matching|chunk_size"),
    ("lora_hyper.NiahDta.lengths = [8]", "NiahDta"),
    ("lora_hyper.eval_sweep.axes = {'lora_hyper.NiahData.length': [64, 128]}",
     "sweep axis 'lora_hyper.NiahData.length' is not a gin binding that exists"),
    ("lora_hyper.eval_sweep.axes = {'lora_hyper.EvalConfig.metrics': [['exact_match'], ['bleu']]}",
     "unknown metric(s) ['bleu']"),
])
def test_bad_configurations_are_usage_errors_before_any_model_loads(setup, tmp_path, param, message):
  done = _eval(setup, tmp_path / "out", param)
  assert done.returncode == 2, done.stderr
  assert any(m in done.stderr for m in message.split("|")), done.stderr
  assert "loaded" not in done.stderr and "Traceback" not in done.stderr
  assert not (tmp_path / "out" / "points").exists()


def test_gin_and_the_argparse_options_do_not_mix(setup, tmp_path):
  done = subprocess.run([sys.executable, "-m", "lora_hyper.cli", "eval", "--gin_file", str(setup["gin"]),
                         "--limit", "3"], capture_output=True, text=True, cwd=ROOT, env=_env(setup), timeout=120)
  assert done.returncode == 2 and "instead of --limit" in done.stderr, done.stderr


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _results(out: Path):
  """The scores' tables (after the title and the command line, before the update times, which are
  measured) and the answers."""
  table, times = (out / "results.md").read_text().split("\n", 4)[4].split("\n\n" + study.TIMES_HEADING)
  assert " adapter |" in times
  answers = [{k: v for k, v in json.loads(line).items() if k != "command"}
             for line in (out / "answers.jsonl").read_text().splitlines()]
  return table, answers


def test_two_processes_write_the_same_table_as_one(setup, tmp_path):
  one = _eval(setup, tmp_path / "one")
  assert one.returncode == 0, one.stderr[-3000:]
  assert one.stdout.splitlines() == [str(tmp_path / "one")]
  assert {p.suffix for p in (tmp_path / "one").iterdir()} >= {".json", ".md", ".png", ".jsonl"}

  port, procs = _free_port(), []
  for pid in range(2):
    env = _env(setup, LORA_HYPER_COORDINATOR=f"127.0.0.1:{port}", LORA_HYPER_NUM_PROCESSES="2",
               LORA_HYPER_PROCESS_ID=str(pid), XLA_FLAGS=xla_flags.for_devices(2))
    with open(tmp_path / f"{pid}.err", "w") as err:  # files, not pipes: a blocked writer would stall a barrier
      procs.append(subprocess.Popen(_eval(setup, tmp_path / "two", wait=False), stdout=subprocess.DEVNULL,
                                    stderr=err, cwd=ROOT, env=env))
  try:
    codes = [p.wait(timeout=240) for p in procs]
  finally:
    for p in procs:
      p.kill()
  errs = [(tmp_path / f"{pid}.err").read_text() for pid in range(2)]
  assert codes == [0, 0], errs
  assert "2 to score here (process 0 of 2)" in errs[0] and "1 to score here (process 1 of 2)" in errs[1]
  assert "wrote" in errs[0] and "wrote" not in errs[1]  # process 0 alone writes the results
  assert all("data-parallel over 2 devices" in e for e in errs) and "data-parallel" not in one.stderr
  table, answers = _results(tmp_path / "one")
  assert _results(tmp_path / "two") == (table, answers)
  assert len(answers) == 3 * 2 and len(table.splitlines()) == 2 + 3
  assert any(a["adapter"]["answer"] for a in answers)  # a talking model: the answers compared are not all empty
