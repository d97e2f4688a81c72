"""Shared fixtures. Eight simulated CPU devices let sharding tests build real meshes; XLA skips
LLVM's kernel optimisation, which costs tests more than it saves (xla_flags.py)."""

import os
import tempfile

import xla_flags

os.environ.setdefault("XLA_FLAGS", xla_flags.for_devices(8))
# The test extra installs libtpu (the pod configs' compile check): without this every test process
# would try to open a TPU first. Compiling for TPU topologies needs no TPU backend (training/aot.py).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests rebuild the same tiny programs many times (each resumed run recompiles its step): a
# session-wide compilation cache makes the repeats cheap. Set in the environment, so the trainer
# processes that tests start share it. XLA has segfaulted while serializing an executable for it
# (rarely; pyproject.toml's addopts rerun a test whose worker died).
os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lora_hyper_jax_cache_")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import jax  # noqa: E402  (after the environment above, which jax reads on import)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

@pytest.fixture(scope="session")
def embedded_base():
  """The real embedded Gemma 3 270M (BaseModel: config, params, tokenizer), loaded once."""
  from lora_hyper.model import base_model

  return base_model.load_base_model()


@pytest.fixture(scope="session")
def embedded_model(embedded_base):
  return embedded_base.config, embedded_base.params
