"""`lora-hyper prepare-data` on a tiny random model that writes text (`write_talking_tiny_model`):
200 fictional documents x 4 queries killed halfway (SIGKILL) and resumed equal an uninterrupted
run byte for byte; two localhost processes write the files of one; bad input is refused before any
work or skipped and reported; a folder holding another preparation is never overwritten."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lora_hyper.data import pipeline, prepare, prepared
from lora_hyper.hypernetworks import doc_to_lora
from lora_hyper.model import base_model

import xla_flags
from tiny_model import write_talking_tiny_model

ROOT = Path(__file__).parents[2]
# Small generations and one compiled prompt length per stage keep 200 x 4 at a few seconds.
CONFIG = prepare.PrepareConfig(num_queries=4, top_k=4, shard_size=10, batch_size=40, query_max_tokens=8,
                               answer_max_tokens=4, bucket=128)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
  folder = tmp_path_factory.mktemp("prepare")
  model = write_talking_tiny_model(folder / "model")
  (folder / "short.txt").write_text("{context}\nQ:")
  return {"folder": folder, "model": model, "template": folder / "short.txt"}


def _gin(setup, out: Path, num_docs: int, config: prepare.PrepareConfig = CONFIG, mesh=(1, 1, 1)) -> Path:
  lines = [f"lora_hyper.prepare_data.out = '{out}'", f"lora_hyper.prepare_data.base_model = '{setup['model']}'",
           f"lora_hyper.prepare_data.query_model = '{setup['model']}'",
           f"lora_hyper.prepare_data.query_template = '{setup['template']}'",
           f"lora_hyper.prepare_data.mesh_shape = {tuple(mesh)}",
           "lora_hyper.prepare_data.contexts = @lora_hyper.fictional_contexts()",
           f"lora_hyper.fictional_contexts.num_docs = {num_docs}", "lora_hyper.fictional_contexts.facts_per_doc = 2",
           "lora_hyper.prepare_data.config = @lora_hyper.PrepareConfig()"]
  lines += [f"lora_hyper.PrepareConfig.{k} = {v!r}" for k, v in vars(config).items()]
  path = out.parent / f"{out.name}.gin"
  path.write_text("\n".join(lines) + "\n")
  return path


def _env(devices: int, **extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_HYPER_")}
  return {**env, "XLA_FLAGS": xla_flags.for_devices(devices), "JAX_PLATFORMS": "cpu", **extra}


def _start(gin_file: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
  with open(log, "w") as f:  # a file, not a pipe: a full pipe would stall the process
    return subprocess.Popen([sys.executable, "-m", "lora_hyper.cli", "prepare-data", "--gin_file", str(gin_file)],
                            stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def _files(folder: Path) -> dict[str, bytes]:
  return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _in_process(setup, out: Path, num_docs: int, config=CONFIG, mesh=(1, 1, 1)) -> prepare.PrepareResult:
  return prepare.prepare_data(out=str(out), contexts=prepare.fictional_contexts(num_docs, facts_per_doc=2),
                              base_model=str(setup["model"]), query_model=str(setup["model"]),
                              query_template=str(setup["template"]), config=config, mesh_shape=mesh, log=lambda m: None)


def test_200_documents_killed_halfway_and_resumed_equal_an_uninterrupted_run(setup, tmp_path):
  reference = _in_process(setup, tmp_path / "reference", 200)
  assert reference.report["records"] > 700  # 800 queries, a few sampled empty or twice

  out = tmp_path / "killed"
  gin_file = _gin(setup, out, 200)
  proc = _start(gin_file, _env(8), tmp_path / "killed.log")
  deadline = time.monotonic() + 120
  while len(list(out.glob("shard-*.json"))) < 10 and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  finished = len(list(out.glob("shard-*.json")))
  assert proc.returncode == -signal.SIGKILL and 10 <= finished < 20, (finished, (tmp_path / "killed.log").read_text())

  resumed = _start(gin_file, _env(8), tmp_path / "resumed.log")
  assert resumed.wait(timeout=120) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
  log = (tmp_path / "resumed.log").read_text()
  assert f"{20 - finished} of its 20 shards to write (20 in all, 10 contexts each); {finished} already finished" in log
  assert "records/s" in log and "ETA" in log
  assert log.strip().splitlines()[-1] == str(out)
  assert _files(out) == _files(tmp_path / "reference")  # no .tmp left, every shard byte for byte
  records = list(prepared.read_records(out))
  assert len(records) == reference.report["records"]
  assert sorted({r["context_index"] for r in records}) == list(range(200))
  first = records[0]
  assert first["teacher_topk_ids"].shape == (len(first["teacher_topk_logprobs"]), 4)
  assert first["provenance"]["seed"] == 0 and len(first["provenance"]["base"]) == 16


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_write_the_records_of_one(setup, tmp_path):
  config = prepare.PrepareConfig(num_queries=2, top_k=4, shard_size=4, batch_size=8, query_max_tokens=6,
                                 answer_max_tokens=4, bucket=128)
  _in_process(setup, tmp_path / "one", 22, config, mesh=(2, 1, 1))
  gin_file = _gin(setup, tmp_path / "two", 22, config, mesh=(2, 1, 1))
  port = _free_port()
  procs = [_start(gin_file, _env(2, LORA_HYPER_COORDINATOR=f"127.0.0.1:{port}", LORA_HYPER_NUM_PROCESSES="2",
                                 LORA_HYPER_PROCESS_ID=str(pid)), tmp_path / f"{pid}.log") for pid in range(2)]
  try:
    codes = [p.wait(timeout=180) for p in procs]
  finally:
    for p in procs:
      p.kill()
  logs = [(tmp_path / f"{pid}.log").read_text() for pid in range(2)]
  assert codes == [0, 0], logs
  assert "host 0 of 2: 3 of its 3 shards to write (6 in all" in logs[0]
  assert "host 1 of 2: 3 of its 3 shards to write (6 in all" in logs[1]
  assert _files(tmp_path / "two") == _files(tmp_path / "one")


# ----------------------------------------------------------------------------- bad input

SMALL = prepare.PrepareConfig(num_queries=2, top_k=4, shard_size=3, batch_size=4, query_max_tokens=6,
                              answer_max_tokens=4, max_context_tokens=200, bucket=128)


@pytest.fixture(scope="module")
def loaded(setup):
  return base_model.load_base_model(setup["model"], on_host=True)


def _small(setup, loaded, out: Path, contexts: list[str], config=SMALL, **kw) -> prepare.PrepareResult:
  return prepare.prepare_data(out=str(out), contexts=contexts, base_model=loaded, query_model=loaded,
                              query_template=str(setup["template"]), config=config, mesh_shape=(1, 1, 1),
                              log=lambda m: None, **kw)


def test_empty_and_oversized_contexts_are_skipped_and_reported(setup, loaded, tmp_path):
  docs = prepare.fictional_contexts(3, facts_per_doc=2)
  contexts = [docs[0], "", "x" * 300, docs[1], "  \n", docs[2]]
  result = _small(setup, loaded, tmp_path / "out", contexts)
  assert result.report["skipped_contexts"] == {"empty": [1, 4], "too_long": [2]}
  assert json.loads((tmp_path / "out" / prepared.REPORT).read_text()) == result.report
  records = list(prepared.read_records(tmp_path / "out"))
  assert {r["context_index"] for r in records} == {0, 3, 5}
  assert len(records) == result.report["records"] > 0
  assert all(r["document"] == contexts[r["context_index"]] for r in records)


def test_a_query_model_that_cannot_load_stops_before_any_work(setup, tmp_path):
  gin_file = tmp_path / "bad.gin"
  gin_file.write_text(_gin(setup, tmp_path / "out", 4).read_text().replace(
      f"query_model = '{setup['model']}'", f"query_model = '{tmp_path / 'no_such_model'}'"))
  done = subprocess.run([sys.executable, "-m", "lora_hyper.cli", "prepare-data", "--gin_file", str(gin_file)],
                        capture_output=True, text=True, cwd=ROOT, env=_env(1), timeout=120)
  assert done.returncode == 1, done.stderr[-2000:]
  assert "error: the query model" in done.stderr and "cannot be loaded, nothing was written" in done.stderr
  assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_a_template_without_its_context_slot_is_refused(setup, loaded, tmp_path):
  (tmp_path / "t.txt").write_text("Ask a question.\nQ:")
  with pytest.raises(ValueError, match=r"must hold \{context\} exactly once, holds it 0 times"):
    prepare.prepare_data(out=str(tmp_path / "out"), contexts=["a text"], base_model=loaded, query_model=loaded,
                         query_template=str(tmp_path / "t.txt"), config=SMALL)
  with pytest.raises(FileNotFoundError, match=r"neither a file nor one of \['base', 'instruct'\]"):
    prepare.read_template("chatty")
  assert "{context}" in prepare.read_template("instruct")
  assert not (tmp_path / "out").exists()


def test_an_existing_preparation_is_resumed_never_overwritten(setup, loaded, tmp_path):
  out, contexts = tmp_path / "out", prepare.fictional_contexts(4, facts_per_doc=2)
  _small(setup, loaded, out, contexts)
  before = _files(out)
  again = _small(setup, loaded, out, contexts)
  assert again.shards_written == 0 and _files(out) == before
  with pytest.raises(ValueError, match=r"made otherwise \(differs in settings: num_queries\); nothing was overwritten"):
    _small(setup, loaded, out, contexts, config=prepare.PrepareConfig(**{**vars(SMALL), "num_queries": 3}))
  with pytest.raises(ValueError, match=r"differs in contexts_sha256, num_contexts"):
    _small(setup, loaded, out, contexts[:3])
  assert _files(out) == before
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="holds other files and no prepare.json"):
    _small(setup, loaded, tmp_path / "other", contexts)


def test_an_unfinished_folder_is_not_read(setup, loaded, tmp_path):
  out = tmp_path / "out"
  _small(setup, loaded, out, prepare.fictional_contexts(4, facts_per_doc=2))
  (out / "shard-00001-of-00002.json").unlink()
  with pytest.raises(ValueError, match=r"is not finished: 1 of 2 shards missing \(first shard-00001-of-00002\)"):
    prepared.PreparedQA(str(out))


def test_stored_topk_enter_the_example_cut_to_its_answer(loaded):
  hyper = doc_to_lora.d2l_tiny(loaded.config, chunk_len=64, max_chunks=4)
  answer = pipeline.answer_ids(loaded.tokenizer, "yes", loaded.config.eos_id)  # " yes" + EOS: 5 ids
  record = {"document": "A text.", "query": "Is it?", "answer": "yes",
            "teacher_topk_logprobs": np.log(np.full((5, 2), 0.25, np.float32)),
            "teacher_topk_ids": np.arange(10, dtype=np.int32).reshape(5, 2)}
  shapes = pipeline.DocExampleShapes(num_chunks=1, student_len=32, teacher_len=None, answer_len=3)
  example = pipeline.doc_example(record, loaded.tokenizer, hyper, shapes)
  assert len(answer) == 5 and "teacher_tokens" not in example
  np.testing.assert_array_equal(example["teacher_topk_ids"], record["teacher_topk_ids"][:3])
  np.testing.assert_array_equal(np.exp(example["teacher_topk_logprobs"]), np.full((3, 2), 0.25, np.float32))
  longer = pipeline.doc_example(record, loaded.tokenizer, hyper, pipeline.DocExampleShapes(
      num_chunks=1, student_len=32, teacher_len=None, answer_len=8))
  assert np.all(np.exp(longer["teacher_topk_logprobs"][5:]) == 0) and longer["loss_mask"].sum() == 5
  with pytest.raises(ValueError, match="has 4 rows for an answer of 5 tokens .* another tokenizer"):
    pipeline.doc_example({**record, "teacher_topk_ids": record["teacher_topk_ids"][:4],
                          "teacher_topk_logprobs": record["teacher_topk_logprobs"][:4]}, loaded.tokenizer, hyper, shapes)
