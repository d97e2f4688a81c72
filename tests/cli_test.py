"""`lora-hyper` as a user runs it (subprocesses), on a tiny random Gemma 3 folder and tiny random
hypernetworks: the internalize -> ask -> export-peft workflow, adapt, chat, eval, train --out,
--help, and the exit codes and messages of bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gin
import jax
import numpy as np
import pytest

from lora_hyper import cli
from lora_hyper.adapters import io, lora, peft
from lora_hyper.hypernetworks import saved
from lora_hyper.model import base_model, config as config_lib

import xla_flags
from tiny_model import write_all, write_small_sakana_checkpoint, write_tiny_model

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return write_all(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  # One compilation cache for every subprocess of this module: later runs skip XLA compiles.
  cache = tmp_path_factory.mktemp("jax_cache")
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "XLA_FLAGS": xla_flags.FAST_COMPILE}  # one device, as most users


@pytest.fixture
def run(env, tmp_path):
  def run(*args, stdin: str | None = None, wait: bool = True):
    command = [sys.executable, "-m", "lora_hyper.cli", *map(str, args)]
    if not wait:
      return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path, env=env)
    return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
  return run


DOC_A = "Zorblat the clockmaker lives in Quenton. He keeps seven owls."
DOC_B = "The river Vell runs past Quenton to the sea."


def test_internalize_ask_export_workflow(tiny, run, tmp_path):
  (tmp_path / "a.txt").write_text(DOC_A)
  done = run("internalize", "a.txt", "-", "--out", "notes", "--hypernetwork", tiny["d2l"], "--model", tiny["model"],
             stdin=DOC_B)
  assert done.returncode == 0, done.stderr
  assert done.stdout == "notes\n"
  assert "internalized 2 document(s)" in done.stderr and "wrote notes/adapter.safetensors" in done.stderr
  adapter, info = io.load_adapter(tmp_path / "notes")
  assert info.source["method"] == "doc_to_lora" and info.source["hypernetwork"]["path"] == str(tiny["d2l"])
  assert [d["name"] for d in info.source["documents"]] == ["a.txt", "<stdin>"]
  assert info.source["documents"][1]["sha256"] == io.text_digest(DOC_B)
  assert info.base.name == "model" and info.modules == ("down",)

  asked = run("ask", "--adapter", "notes", "--model", tiny["model"], "--max-new-tokens", "6",
              "Where does Zorblat live?", "How many owls?")
  assert asked.returncode == 0, asked.stderr
  assert len(asked.stdout.splitlines()) == 2  # one answer per line, in order

  exported = run("export-peft", "--adapter", "notes", "--out", "peft_notes")
  assert exported.returncode == 0 and exported.stdout == "peft_notes\n", exported.stderr
  config = json.loads((tmp_path / "peft_notes" / "adapter_config.json").read_text())
  assert config["base_model_name_or_path"] == "model" and config["r"] == info.rank
  imported = peft.import_peft(tmp_path / "peft_notes", base_model.load_base_model(tiny["model"]).config)
  for m in adapter.modules:
    np.testing.assert_array_equal(imported.weights[m]["a"], adapter.weights[m]["a"])
    np.testing.assert_array_equal(imported.weights[m]["b"], adapter.weights[m]["b"])


def test_adapt_then_chat_in_the_task_format(tiny, run):
  done = run("adapt", "--task", "-", "--out", "rev", "--hypernetwork", tiny["t2l"], "--model", tiny["model"],
             stdin="Reverse the letters of the word.\n")
  assert done.returncode == 0 and done.stdout == "rev\n", done.stderr
  chat = run("ask", "--adapter", "rev", "--model", tiny["model"], "-i", "--max-new-tokens", "4",
             stdin="garden\n\nplanet\nexit\nnever asked\n")
  assert chat.returncode == 0, chat.stderr
  assert len(chat.stdout.splitlines()) == 2 and "task format" in chat.stderr


def test_eval_reports_scores_as_json(tiny, run, tmp_path):
  records = [{"document": DOC_A, "query": "Where does Zorblat live?", "answer": "Quenton"},
             {"document": DOC_A, "query": "How many owls?", "answer": "seven"}]
  (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
  done = run("eval", "--hypernetwork", tiny["d2l"], "--model", tiny["model"], "--data", "qa.jsonl",
             "--max-new-tokens", "4", "--answers", "out/answers.jsonl")
  assert done.returncode == 0, done.stderr
  report = json.loads(done.stdout)
  assert report["records"] == 2 and set(report["scores"]) == {"adapter", "base", "context"}
  assert set(report["scores"]["adapter"]) == {"rouge_l", "contains"}
  answers = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
  assert [(a["query"], a["reference"]) for a in answers] == [(r["query"], r["answer"]) for r in records]
  for condition, scores in report["scores"].items():  # the report's means are the answers' scores
    for metric, mean in scores.items():
      assert mean == pytest.approx(sum(a[condition][metric] for a in answers) / 2)
    assert all(isinstance(a[condition]["answer"], str) for a in answers)
  (tmp_path / "bad.jsonl").write_text(json.dumps(records[0]) + "\n{\"document\": \"x\"}\n")
  bad = run("eval", "--hypernetwork", tiny["d2l"], "--model", tiny["model"], "--data", "bad.jsonl")
  assert bad.returncode == 1 and "bad.jsonl:2: a doc_to_lora record needs string fields" in bad.stderr


def test_bad_input_gives_usage_or_error_codes_and_messages(tiny, run, tmp_path):
  (tmp_path / "empty.txt").write_text("  \n")
  (tmp_path / "a.txt").write_text(DOC_A)
  model, d2l, t2l = tiny["model"], tiny["d2l"], tiny["t2l"]
  cases = [
      (("internalize", "missing.txt", "--out", "x", "--hypernetwork", d2l), 1, "document file 'missing.txt' does not exist"),
      (("internalize", "empty.txt", "--out", "x", "--hypernetwork", d2l), 2, "document empty.txt is empty"),
      (("internalize", "a.txt"), 2, "the following arguments are required: --out"),
      (("adapt", "--task", "Reverse it.", "--out", "x", "--model", model), 1,  # the shipped one is for the 270M
       "was made for base model 'google/gemma-3-270m (GGUF Q4_K_M)'"),
      (("internalize", "a.txt", "--out", "x", "--hypernetwork", t2l, "--model", model), 1,
       "holds a text_to_lora hypernetwork; this command needs a doc_to_lora one"),
      (("adapt", "--task", " ", "--out", "x"), 2, "the task description is empty"),
      (("ask", "What?"), 2, "give --adapter DIR"),
      (("ask", "--no-adapter"), 2, "give QUESTION(s)"),
      (("ask", "--adapter", "nowhere", "--model", model, "What?"), 1, "no adapter at 'nowhere'"),
      (("export-peft", "--adapter", "a.txt", "--out", "x"), 1, "not a readable safetensors file"),
      (("frobnicate",), 2, "invalid choice: 'frobnicate'"),
  ]
  runs = [run(*args, wait=False) for args, _, _ in cases]  # concurrently: each is mostly start-up time
  for (args, code, message), process in zip(cases, runs):
    _, stderr = process.communicate(timeout=120)
    assert (process.returncode, message in stderr) == (code, True), (args, stderr)


def test_adapters_refuse_another_base_model_and_truncation(tiny, run, tmp_path):
  (tmp_path / "a.txt").write_text(DOC_A)
  io.save_adapter(tmp_path / "ad", lora.random(jax.random.key(0), config_lib.tiny_gemma3(max_seq_len=2048),
                                               ("down",), rank=2),
                  base=io.base_identity(base_model.load_base_model(tiny["model"])), source={})
  other = write_tiny_model(tmp_path / "other", seed=1)
  done = run("ask", "--adapter", "ad", "--model", other, "What?")
  assert done.returncode == 1 and "was made for base model 'model'" in done.stderr
  done = run("internalize", "a.txt", "--out", "ad2", "--hypernetwork", tiny["d2l"], "--model", other)
  assert done.returncode == 1 and "hypernetwork" in done.stderr and "was made for base model" in done.stderr
  file = tmp_path / "ad" / "adapter.safetensors"
  file.write_bytes(file.read_bytes()[:-50])
  done = run("ask", "--adapter", "ad", "--model", tiny["model"], "What?")
  assert done.returncode == 1 and "truncated or corrupt" in done.stderr


def test_train_out_saves_a_hypernetwork_for_the_base_model(tiny, tmp_path, monkeypatch, capsys):
  records = [{"document": f"{name} has {n} cats.", "query": f"How many cats has {name}?", "answer": str(n)}
             for name, n in zip("ABCDEFGH", range(2, 10))]
  (tmp_path / "tiny.gin").write_text(f"""
lora_hyper.train.workdir = 'run'
lora_hyper.train.base_model = '{tiny["model"]}'
lora_hyper.train.hypernetwork = 'd2l_tiny'
lora_hyper.train.hyper_overrides = {{'chunk_len': 16, 'max_chunks': 1}}
lora_hyper.train.data = {records!r}
lora_hyper.train.doc_shapes = @lora_hyper.DocExampleShapes()
lora_hyper.DocExampleShapes.student_len = 48
lora_hyper.DocExampleShapes.teacher_len = 64
lora_hyper.DocExampleShapes.answer_len = 2
lora_hyper.train.steps = 0
lora_hyper.train.global_batch_size = 8
lora_hyper.train.mesh_shape = (1, 1, 1)
""")
  # No training steps (tests/training covers those): what is checked is that the hypernetwork the
  # run ends with is saved from its gin settings and loads for internalize. In this process (gin
  # state cleared after): a subprocess would mostly import torch, which tensorboardX loads.
  monkeypatch.chdir(tmp_path)
  try:
    assert cli.main(["train", "--gin_file", "tiny.gin", "--out", "trained"]) == cli.EXIT_OK
  finally:
    gin.clear_config()
  assert capsys.readouterr().out == "trained\n"
  assert "train.hypernetwork = 'd2l_tiny'" in (tmp_path / "trained" / "config.gin").read_text()  # the run's trace
  trained = saved.load_hypernetwork(tmp_path / "trained", base_model.load_base_model(tiny["model"]))
  assert trained.kind == "doc_to_lora" and trained.config.chunk_len == 16


def test_help_explains_every_option(run):
  parser = cli.build_parser()
  commands = parser._subparsers._group_actions[0].choices  # argparse keeps subparsers here
  assert {"internalize", "adapt", "ask", "export-peft", "train", "eval", "generate"} <= set(commands)
  for name, sub in commands.items():
    for action in sub._actions:
      assert action.help, (name, action.dest)
  done = run("ask", "--help")
  assert done.returncode == 0 and "--no-adapter" in done.stdout and "exit codes: 0 done" in done.stdout
  done = run("internalize", "--help")
  help_text = " ".join(done.stdout.split())  # argparse wraps lines
  assert done.returncode == 0 and "'general' (the default): a Doc-to-LoRA for short factual texts" in help_text
  assert "'needle': a needle-in-a-haystack Doc-to-LoRA" in help_text


def test_hypernetwork_names_a_folder_or_a_shipped_one(tmp_path, monkeypatch):
  from lora_hyper.cli._common import hypernetwork_dir

  monkeypatch.chdir(tmp_path)
  assert hypernetwork_dir(None, "doc_to_lora") == str(saved.shipped("doc_to_lora"))
  assert hypernetwork_dir("needle", "doc_to_lora") == str(saved.shipped("doc_to_lora", "needle"))
  assert hypernetwork_dir("tasks", "doc_to_lora") == str(saved.shipped("text_to_lora"))  # eval takes either kind
  (tmp_path / "needle").mkdir()
  assert hypernetwork_dir("needle", "doc_to_lora") == "needle"  # a folder of that name comes first
  assert hypernetwork_dir("runs/missing", "doc_to_lora") == "runs/missing"  # loading it says it is missing


@pytest.mark.real_model
def test_ask_on_the_embedded_default_with_the_document_in_context(run, tmp_path):
  (tmp_path / "doc.txt").write_text("Zorblat Quenn is a clockmaker. Zorblat Quenn lives in the town of Vellamoor.")
  done = run("ask", "--no-adapter", "--context", "doc.txt", "Which town does Zorblat Quenn live in?")
  assert done.returncode == 0, done.stderr
  assert "Vellamoor" in done.stdout and len(done.stdout.splitlines()) == 1


@pytest.mark.real_model
def test_shipped_hypernetworks_work_after_install(run, tmp_path):
  """The README's workflows with no --hypernetwork: the shipped Text-to-LoRA and Doc-to-LoRA load
  for the embedded default and write non-zero adapters that `ask` uses."""
  done = run("adapt", "--task", "Write the word in capital letters.", "--out", "upper")
  assert done.returncode == 0, done.stderr
  adapter, info = io.load_adapter(tmp_path / "upper")
  assert info.source["method"] == "text_to_lora" and info.source["hypernetwork"]["path"].endswith("t2l_gemma3_270m")
  assert info.source["task"] == "Write the word in capital letters." and info.modules == ("q", "v")
  assert float(np.abs(np.asarray(lora.merged_delta(adapter, "v"))).max()) > 0  # trained: not the zero init
  done = run("ask", "--adapter", "upper", "garden")
  assert done.returncode == 0 and len(done.stdout.splitlines()) == 1, done.stderr
  (tmp_path / "notes.txt").write_text("Vellamoor is a town on the river Quenn. It has 4,817 people.")
  done = run("internalize", "notes.txt", "--out", "notes")
  assert done.returncode == 0, done.stderr
  assert io.load_adapter(tmp_path / "notes")[1].source["hypernetwork"]["path"].endswith("d2l_gemma3_270m_general")
  (tmp_path / "haystack.txt").write_text("The grass is green. The special magic number is 4817. The sky is blue.")
  done = run("internalize", "haystack.txt", "--out", "hay", "--hypernetwork", "needle")  # a shipped one by name
  assert done.returncode == 0, done.stderr
  assert io.load_adapter(tmp_path / "hay")[1].source["hypernetwork"]["path"].endswith("d2l_gemma3_270m")


def test_import_d2l_then_internalize_ask_and_export_back(tiny, run, tmp_path):
  """Sakana's checkpoint format in (import-d2l), lora-hyper's verbs on it, and their format out again."""
  from lora_hyper.hypernetworks import published
  from lora_hyper.hypernetworks.doc_to_lora import sakana

  theirs = write_small_sakana_checkpoint(tiny["model"], tmp_path / "theirs")
  prefix, _ = published.gemma_chat_affixes(base_model.load_base_model(tiny["model"]))
  scaling = sakana.read_checkpoint(theirs)["hypernet_config"].lora_config.lora_alpha

  imported = run("import-d2l", theirs, "--model", tiny["model"], "--out", "d2l")
  assert imported.returncode == 0 and imported.stdout == "d2l\n", imported.stderr
  assert saved.load_hypernetwork(tmp_path / "d2l").config.chunk_prefix == prefix  # from the base's tokenizer
  (tmp_path / "doc.txt").write_text(DOC_A)
  done = run("internalize", "doc.txt", "--out", "notes", "--hypernetwork", "d2l", "--model", tiny["model"])
  assert done.returncode == 0, done.stderr
  adapter, info = io.load_adapter(tmp_path / "notes")
  assert info.source["hypernetwork"]["prompt"] == "chat" and adapter.scaling == scaling
  asked = run("ask", "--adapter", "notes", "--model", tiny["model"], "--max-new-tokens", "4", "Where?")
  assert asked.returncode == 0 and len(asked.stdout.splitlines()) == 1, asked.stderr
  assert run("export-peft", "--adapter", "notes", "--out", "peft").returncode == 0
  (tmp_path / "qa.jsonl").write_text(json.dumps({"document": DOC_A, "query": "Where?", "answer": "Quenton"}) + "\n")
  scored = run("eval", "--hypernetwork", "d2l", "--model", tiny["model"], "--data", "qa.jsonl", "--max-new-tokens", "3",
               "--answers", "answers.jsonl")
  assert scored.returncode == 0 and set(json.loads(scored.stdout)["scores"]) == {"adapter", "base", "context"}

  exported = run("export-d2l", "--hypernetwork", "d2l", "--out", "served")
  assert exported.returncode == 0 and exported.stdout == "served/pytorch_model.bin\n", exported.stderr
  again, original = sakana.read_checkpoint(tmp_path / "served"), sakana.read_checkpoint(theirs)
  assert list(again) == list(original)
  for key, value in original.items():
    if isinstance(value, np.ndarray):
      np.testing.assert_array_equal(again[key], value)
  refused = run("import-d2l", tmp_path / "doc.txt", "--model", tiny["model"], "--out", "bad")
  assert refused.returncode == 1 and "is not a torch zip checkpoint" in refused.stderr
