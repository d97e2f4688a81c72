"""Runs the real trainer on a tiny random base model, as a separate process (for tests that kill
or coordinate processes). Usage: python tiny_run.py WORKDIR STEPS [SLEEP_PER_STEP [SAVE_EVERY]]

Prints `RESULT step=... preempted=... loss=... params=<sha256 of the final params>`; an expected
failure (lora_hyper.errors, ValueError, OSError) is one `error:` line on stderr and exit code 1,
as the CLI reports it, so a test can tell it from a traceback."""

import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from fakes import qa_records, tiny_base  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from lora_hyper.data import pipeline  # noqa: E402
from lora_hyper.errors import LoraHyperError  # noqa: E402
from lora_hyper.training import distributed, metrics, trainer  # noqa: E402
from lora_hyper.training.optimizer import OptimizerConfig  # noqa: E402

if len(sys.argv) > 3 and float(sys.argv[3]) > 0:  # slow each logged step down, so a test can interrupt mid-run
  _log = metrics.MetricsLogger.log
  metrics.MetricsLogger.log = lambda self, *a, **k: (time.sleep(float(sys.argv[3])), _log(self, *a, **k))[1]

distributed.maybe_initialize()  # before the tiny base touches any device
try:
  result = trainer.train(
      workdir=sys.argv[1], data=qa_records(64), objective="d2l_kl", hypernetwork="d2l_tiny",
      hyper_overrides={"chunk_len": 16, "max_chunks": 2}, global_batch_size=8, steps=int(sys.argv[2]),
      optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=1, total_steps=int(sys.argv[2])),
      doc_shapes=pipeline.DocExampleShapes(num_chunks=2, student_len=48, teacher_len=72, answer_len=4),
      save_every=int(sys.argv[4]) if len(sys.argv) > 4 else 1000, log_every=1, mesh_shape=(-1, 1, 1),
      loaded_base=tiny_base())
except (LoraHyperError, ValueError, OSError) as e:
  print(f"error: {e}", file=sys.stderr, flush=True)
  sys.exit(1)
digest = hashlib.sha256()
for leaf in jax.tree.leaves(result.variables):
  digest.update(np.ascontiguousarray(leaf).tobytes())
print(f"RESULT step={result.step} preempted={result.preempted} loss={result.metrics.get('loss')!r} "
      f"params={digest.hexdigest()}", flush=True)
