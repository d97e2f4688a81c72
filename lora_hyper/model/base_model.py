"""The frozen base model as users name it: config + params + tokenizer, loaded in one call."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lora_hyper.model import weights
from lora_hyper.model.config import GemmaConfig
from lora_hyper.model.tokenizer import MissingTokenizer, Tokenizer

DEFAULT_MODEL = "gemma3-270m"


@dataclasses.dataclass(frozen=True, eq=False)
class BaseModel:
  config: GemmaConfig
  params: Any
  tokenizer: Tokenizer | MissingTokenizer  # a Hugging Face folder without tokenizer.json runs on ids only
  name: str


def load_base_model(source: str | os.PathLike | None = None, *, dtype: str = "float32", on_host: bool = False,
                    log: Callable[[str], None] = lambda msg: None) -> BaseModel:
  """Loads `source`: None or "gemma3-270m" (the embedded default), a `.gguf` file, or a local
  Hugging Face folder (config.json + safetensors + tokenizer.json) of a Gemma 2/3 text model; without
  tokenizer.json the model runs on token ids and text input stops with `MissingTokenizerError`.

  `dtype` ("float32" | "bfloat16") sets both the stored params and the compute dtype; the params are
  cast on the host, then put on the default device. `on_host` leaves them as numpy arrays (ml_dtypes
  for bfloat16) for a caller that places them itself: training puts them straight into their
  shardings, so no chip ever holds a whole float32 copy. `log` hears about conversions and cache
  (re)builds. Damaged files raise `errors.CorruptFileError` naming them.
  """
  source = DEFAULT_MODEL if source is None else str(source)
  if source == DEFAULT_MODEL:
    path, digest = weights.embedded_gguf_path(log=log)
    config, params = weights.load_gguf(path, source_digest=digest, log=log)
    tokenizer = Tokenizer.from_gguf(path, source_digest=digest, log=log)
    name = "google/gemma-3-270m (GGUF Q4_K_M)"
  elif source.endswith(".gguf"):
    config, params = weights.load_gguf(source, log=log)
    tokenizer, name = Tokenizer.from_gguf(source, log=log), Path(source).stem
  elif os.path.isdir(source):
    config, params = weights.load_hf_checkpoint(source, dtype=dtype, param_dtype=dtype)  # read in place
    has_tokenizer = os.path.exists(os.path.join(source, "tokenizer.json"))
    tokenizer = Tokenizer.from_hf_dir(source) if has_tokenizer else MissingTokenizer(source)
    name = Path(source).name
  else:
    expected = (f"expected {DEFAULT_MODEL!r}, a .gguf file or a Hugging Face model folder with config.json "
                "and *.safetensors")
    if os.path.exists(source):
      raise ValueError(f"base model {source!r} is a file without the .gguf suffix: {expected}")
    raise FileNotFoundError(f"base model {source!r} does not exist: {expected}")
  if dtype != config.param_dtype:
    config = config.replace(dtype=dtype, param_dtype=dtype)
    params = jax.tree.map(lambda p: np.asarray(p, jnp.dtype(dtype)), params)  # numpy: cast on the host
  if not on_host:
    params = jax.device_put(params)  # once, so jitted calls do not copy numpy to the device each time
  return BaseModel(config, params, tokenizer, name)
