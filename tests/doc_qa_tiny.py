"""What the experiments/doc_qa tests share: a study trained on a tiny model from a tiny stand-in of the
shipped needle hypernetwork, and `lora-hyper eval --gin_file` run on that model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

from lora_hyper.adapters import io
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import base_model

import xla_flags
from study_plan import train_study
from tiny_model import write_talking_tiny_model

ROOT = Path(__file__).parents[1]


def tiny_needle_start(folder: Path):
  """(model folder, loaded base, saved hypernetwork folder): a tiny model and a randomly initialised
  Doc-to-LoRA of the needle hypernetwork's architecture (early exit, B-only heads, chunk gates with their cut)."""
  model_dir = write_talking_tiny_model(folder / "model")
  base = base_model.load_base_model(model_dir)
  config = doc_to_lora.d2l_tiny(base.config, context_encoder="early_exit", exit_layer=1, chunk_len=512, max_chunks=2,
                                experimental={"generated_factors": "b", "zero_b_init": "head", "chunk_gate": True,
                                              "chunk_gate_cut": True})
  start = saved.save_hypernetwork(folder / "start", config, doc_to_lora.init(config, jax.random.key(0)),
                                  base=io.base_identity(base))
  return model_dir, base, start


def train_tiny_study(tmp_path_factory, gin_file: Path, name: str, *bindings: str, scopes: tuple[str, ...] = ("",)):
  """(model folder, folder, start, result): the study `gin_file` trained on a tiny model, from a tiny
  stand-in of the needle hypernetwork, in folder/name. Each of `scopes` (the gin scopes that bind
  steps, "" for all) trains one step without warm-up, and the first starts from the stand-in; the
  documents, questions and answers are short enough for the tiny model, on four devices."""
  folder = tmp_path_factory.mktemp(name)
  model_dir, base, start = tiny_needle_start(folder)
  one_step = [b for scope in scopes for b in (f"{scope}lora_hyper.train.steps = 1",
                                               f"{scope}lora_hyper.OptimizerConfig.warmup_steps = 0")]
  tiny = [f"lora_hyper.train_study.root = '{folder / name}'", f"lora_hyper.train.base_model = '{model_dir}'",
          f"{scopes[0]}lora_hyper.train.init_from = '{start}'", "lora_hyper.train.mesh_shape = (4, 1, 1)",
          "lora_hyper.FictionalQA.num_docs = 50", "lora_hyper.DocExampleShapes.student_len = 128",
          "lora_hyper.DocExampleShapes.answer_len = 32"]
  return model_dir, folder, start, train_study(gin_file, [*tiny, *one_step, *bindings], base)


def tiny_eval(gin_file: Path, model_dir: Path, out: Path, *bindings: str, docs: int = 2) -> dict:
  """`lora-hyper eval --gin_file gin_file` on the tiny model, `docs` documents and 2-token answers."""
  params = [f"lora_hyper.eval_sweep.out = '{out}'", f"lora_hyper.EvalConfig.base_model = '{model_dir}'",
            f"lora_hyper.FictionalData.docs = {docs}", "lora_hyper.EvalConfig.max_new_tokens = 2",
            "lora_hyper.eval_sweep.plot_results = False", *bindings]
  run = subprocess.run([sys.executable, "-m", "lora_hyper.cli", "eval", "--gin_file", str(gin_file),
                        *(a for p in params for a in ("--gin_param", p))], capture_output=True, text=True, cwd=ROOT,
                       timeout=600, env={**os.environ, "XLA_FLAGS": xla_flags.for_devices(1)})
  assert run.returncode == 0, run.stderr
  return json.loads((out / "results.json").read_text())
