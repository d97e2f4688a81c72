"""Sakana AI's published Doc-to-LoRA (gemma-2-2b-it, 315,237,792 params) on this CPU, with random
weights of the published shapes: importing their checkpoint, internalizing one chunk, and loading a
gemma-2-2b Hugging Face folder. Every measurement runs in a fresh subprocess (its peak RSS is its
own), watched by this process, which stops it past `--max_rss_gb`.

Parts (`--parts`, default all three, in this order; each rewrites only its own entry):
  convert      Their `pytorch_model.bin` at the published size (`sakana.write_checkpoint` of
               `d2l_paper(gemma2_2b(), chunk_prefix/suffix = CHAT_AFFIXES["google/gemma-2-2b-it"])`
               with random float32 variables: `doc_to_lora.init`, every all-zero leaf made nonzero),
               then `published.import_sakana_d2l` into a lora-hyper folder, float32 and bfloat16
               output, each in a fresh process that holds a random bfloat16 gemma-2-2b base (the
               import records its identity, a digest of every base weight). The base's own share of
               memory and the digest are measured first and apart (the digest is cached per base model,
               so the import then reuses it); the peak mark is reset just before the import, and the
               growth of the peak over the RSS before it is the conversion's memory.
  internalize  `doc_to_lora.internalize_chunk_ids` of the published architecture on gemma-2-2b
               shapes: the random base (bfloat16 params and compute) and the converted float32
               hypernetwork (the convert part's output, loaded with `saved.load_hypernetwork(folder,
               base)`, which checks the recorded base identity; without it, the same random
               variables), one chat-templated chunk of `--chunk_tokens` tokens as the encoder reads
               it (template included, so no padding): the first call (trace + compile + run), then the
               median of `--repeats` calls, and the peak RSS growth of each. XLA:CPU runs a bfloat16
               matmul in float32, and its loop-invariant code motion then converts all 26 layers'
               weights to float32 before the layer loop (8 GB of temporaries, over this machine's
               share): the run is made without that pass (`NO_LICM`), and XLA's memory analysis of the
               program is reported with and without it (compiled from shapes, not run).
  loader       `base_model.load_base_model(folder, dtype="bfloat16")` on a random gemma-2-2b Hugging
               Face folder: gemma-2-2b-it's published config.json, bfloat16 safetensors in two shards
               with an index, no tokenizer. The config read must equal `config_lib.gemma2_2b` (bfloat16)
               and every loaded tensor the saved one, bit for bit (checked against the HF layout by
               index arithmetic, not by the loader's own transform). The loader reads every tensor as
               float32 and stacks the layers in float32 before the bfloat16 cast, so all 26 layers
               need ~18 GB here: the folder is written with `--loader_layers` layers (default 8 and 10;
               every tensor keeps its real shape; the 26-layer config.json is read apart), and the
               peak is extrapolated to 26 layers (and computed from the code, which the measured
               points match).

Random weights: latency and memory do not depend on their values. Timings are for this machine's
cores and its load at the time (recorded). Scratch files go to a temporary folder (under /tmp by
default, at most ~6 GB at a time), deleted at the end.

Run: python -m benchmarks.sakana_d2l [--parts convert internalize loader] [--chunk_tokens 512]
         [--repeats 3] [--loader_layers 8 10] [--max_rss_gb 14]
Writes benchmarks/results/sakana_d2l.json: one entry per processor (`runs`), each holding the latest
result of every part run on it.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from benchmarks import common
from lora_hyper.adapters import io
from lora_hyper.hypernetworks import doc_to_lora, published, saved
from lora_hyper.hypernetworks.doc_to_lora import sakana
from lora_hyper.model import base_model, transformer
from lora_hyper.model import config as config_lib
from lora_hyper.model.tokenizer import MissingTokenizer

NAME = "sakana_d2l"
PARTS = ("convert", "internalize", "loader")
BASE_NAME = "google/gemma-2-2b-it"  # their checkpoint's base model, and its chat template
PUBLISHED_PARAMS = 315_237_792
GB = 1e9
BASE_SEED, HYPER_SEED = 0, 1

# google/gemma-2-2b-it's config.json as published (transformers 4.42.4); the weights it ships are
# bfloat16 in two safetensors shards, whatever torch_dtype says.
GEMMA2_2B_IT_CONFIG = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 107],
    "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
    "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
    "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32",
    "transformers_version": "4.42.4", "use_cache": True, "vocab_size": 256000,
}
HF_LAYER_TENSORS = ("input_layernorm", "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "post_attention_layernorm",
                    "post_feedforward_layernorm", "pre_feedforward_layernorm", "self_attn.k_proj",
                    "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj")

START = time.perf_counter()


def log(*args):
  print(f"[{time.perf_counter() - START:6.1f}s]", *args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- random weights


def random_bf16(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
  """Random bfloat16 values of magnitude in [2^-7, 2^-5) and random sign, straight from random bits
  (no float32 intermediate: a gemma-2-2b's worth takes a few seconds and no extra memory)."""
  raw = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
  raw &= 0x80FF  # sign, the exponent's lowest bit, the mantissa
  raw |= 0x3C00  # exponent 120 or 121
  return raw.view(ml_dtypes.bfloat16)


def gemma2_2b_bf16(**overrides) -> config_lib.GemmaConfig:
  return config_lib.gemma2_2b(dtype="bfloat16", param_dtype="bfloat16", **overrides)


def random_base(seed: int = BASE_SEED) -> base_model.BaseModel:
  """A gemma-2-2b of random bfloat16 params (on the device, as `load_base_model` leaves them), no
  tokenizer: the same params for the same seed, in every process."""
  cfg = gemma2_2b_bf16()
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  leaves, treedef = jax.tree_util.tree_flatten(shapes)
  params = []
  for i, leaf in enumerate(leaves):
    host = random_bf16(np.random.default_rng([seed, i]), leaf.shape)
    params.append(jax.device_put(host).block_until_ready())
    del host
    gc.collect()
  return base_model.BaseModel(cfg, treedef.unflatten(params), MissingTokenizer("random gemma-2-2b"),
                              "gemma-2-2b (random bfloat16 weights)")


def published_config(base: config_lib.GemmaConfig) -> doc_to_lora.DocToLoraConfig:
  prefix, suffix = sakana.CHAT_AFFIXES[BASE_NAME]
  return doc_to_lora.d2l_paper(base, chunk_prefix=prefix, chunk_suffix=suffix)


def random_published_variables(config: doc_to_lora.DocToLoraConfig, seed: int = HYPER_SEED) -> dict:
  """`doc_to_lora.init` as numpy float32, every all-zero leaf (the published init's zero scale_b,
  say) replaced by random values, so the conversion moves nonzero data everywhere."""
  variables = jax.tree.map(np.asarray, doc_to_lora.init(config, jax.random.key(seed)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: x if np.any(x) else (0.02 * rng.standard_normal(x.shape)).astype(np.float32),
                      variables)


def count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- workers (fresh processes)


def worker_checkpoint(scratch: Path) -> dict:
  """Writes their checkpoint of the published size with random float32 variables."""
  config = published_config(config_lib.gemma2_2b())
  start = time.perf_counter()
  variables = random_published_variables(config)
  init_s = time.perf_counter() - start
  params = count(variables["params"])
  if params != PUBLISHED_PARAMS:
    raise AssertionError(f"d2l_paper on gemma2_2b has {params} params, the published checkpoint {PUBLISHED_PARAMS}")
  start = time.perf_counter()
  path = sakana.write_checkpoint(scratch / "sakana", config, variables, base_name=BASE_NAME)
  write_s = time.perf_counter() - start
  # Their tensors at their shapes (the file is read back as the importer reads it).
  entries = sakana.read_checkpoint(path)
  shapes = {k: tuple(v.shape) for k, v in entries.items() if isinstance(v, np.ndarray)}
  if shapes != sakana.expected_shapes(config):
    raise AssertionError("the written checkpoint's tensors are not sakana.expected_shapes(config)")
  tensors = sum(math.prod(s) for s in shapes.values())
  return {"file": path.name, "file_bytes": path.stat().st_size, "tensors": len(shapes), "tensor_params": tensors,
          "params": params, "init_s": init_s, "write_s": write_s, "peak_rss_mb": common.peak_rss_mb()}


def worker_convert(scratch: Path, dtype: str) -> dict:
  """`published.import_sakana_d2l` of the checkpoint, with a random gemma-2-2b base in memory."""
  checkpoint = scratch / "sakana" / "pytorch_model.bin"
  out = scratch / f"converted_{dtype}"
  rss_start = common.rss_mb()
  start = time.perf_counter()
  base = random_base()
  base_s = time.perf_counter() - start
  gc.collect()
  rss_base = common.rss_mb()
  common.reset_peak_rss()
  start = time.perf_counter()
  identity = io.base_identity(base)  # cached on this BaseModel: the import below reuses it
  digest_s = time.perf_counter() - start
  digest_peak = common.peak_rss_mb() - rss_base
  gc.collect()
  before = common.rss_mb()
  reset = common.reset_peak_rss()
  start = time.perf_counter()
  published.import_sakana_d2l(checkpoint, base, out, dtype=dtype)
  convert_s = time.perf_counter() - start
  peak = common.peak_rss_mb()
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # since the reset too
  gc.collect()
  after = common.rss_mb()
  # Checked after the measurement: the folder loads against this base, as the published config.
  hyper = saved.load_hypernetwork(out, base)
  expected = published_config(base.config)
  if hyper.config != expected:
    raise AssertionError(f"the imported config is {hyper.config}, not d2l_paper with the chat affixes: {expected}")
  variables_file = out / saved.VARIABLES
  return {"dtype": dtype, "rss_start_mb": rss_start, "base_build_s": base_s,
          "base_rss_mb": rss_base - rss_start, "base_params_bytes": common.tree_bytes(base.params),
          "digest_s": digest_s, "digest_peak_growth_mb": digest_peak, "base_digest": identity.digest,
          "rss_before_mb": before, "peak_rss_mb": peak, "rss_after_mb": after, "peak_reset": reset,
          "convert_s": convert_s, "conversion_peak_growth_mb": peak - before,
          "ru_maxrss_mb": maxrss,
          "checkpoint_bytes": checkpoint.stat().st_size, "output_bytes": variables_file.stat().st_size,
          "loaded_params": count(hyper.variables["params"]), "config_is_d2l_paper": True}


def worker_internalize(scratch: Path, chunk_tokens: int, repeats: int) -> dict:
  rss_start = common.rss_mb()
  base = random_base()
  gc.collect()
  rss_base = common.rss_mb()
  folder = scratch / "converted_float32"
  if (folder / saved.MANIFEST).is_file():
    hyper = saved.load_hypernetwork(folder, base)  # checks the recorded base identity
    config, variables, source = hyper.config, hyper.variables, f"imported ({folder.name})"
  else:
    config = published_config(base.config)
    variables, source = random_published_variables(config), "random (no converted folder in this run)"
  if config != published_config(base.config):
    raise AssertionError(f"the hypernetwork's config is not the published one: {config}")
  variables = jax.device_put(variables)  # once, as the base params are (numpy would be copied in each call)
  gc.collect()
  rss_hyper = common.rss_mb()
  prefix, suffix = config.chunk_prefix, config.chunk_suffix
  ids = np.random.default_rng(2).integers(3, 30000, chunk_tokens - len(prefix) - len(suffix)).tolist()
  chunk = [*prefix, *ids, *suffix]
  documents = [[chunk]]
  padded = doc_to_lora.pad_chunks(documents, config=config)
  if padded.tokens.shape != (1, 1, chunk_tokens):
    raise AssertionError(f"the chunk is padded to {padded.tokens.shape}, not {chunk_tokens} tokens")
  run = lambda: doc_to_lora.internalize_chunk_ids(variables, base.params, documents, config=config)
  flops = common.matmul_flops(lambda v, p, t, m: doc_to_lora.adapter_from_chunks(v, p, t, m, config=config),
                              variables, base.params, jnp.asarray(padded.tokens), jnp.asarray(padded.mask))

  before = common.rss_mb()
  common.reset_peak_rss()
  start = time.perf_counter()
  adapter = jax.block_until_ready(run())
  first_s = time.perf_counter() - start
  first_growth = common.peak_rss_mb() - before
  finite = all(bool(jnp.isfinite(w).all()) for w in jax.tree.leaves(adapter.weights))
  shapes = {m: {k: list(w.shape) for k, w in ab.items()} for m, ab in adapter.weights.items()}
  del adapter
  gc.collect()
  times, growth = [], []
  for _ in range(repeats):
    before_call = common.rss_mb()
    common.reset_peak_rss()
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
    growth.append(common.peak_rss_mb() - before_call)
  steady = statistics.median(times)
  return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "chunk_tokens": chunk_tokens, "document_tokens": len(ids),
          "template_tokens": len(prefix) + len(suffix),
          "hypernetwork": source, "hypernetwork_params": count(variables["params"]),
          "hypernetwork_bytes": common.tree_bytes(variables), "base_params_bytes": common.tree_bytes(base.params),
          "base_compute_dtype": base.config.dtype, "perceiver_dtype": config.perceiver.dtype,
          "rss_start_mb": rss_start, "base_rss_mb": rss_base - rss_start, "hypernetwork_rss_mb": rss_hyper - rss_base,
          "rss_before_first_call_mb": before, "first_call_s": first_s, "first_call_peak_growth_mb": first_growth,
          "steady_s": steady, "steady_times_s": times, "steady_peak_growth_mb": max(growth),
          "peak_rss_mb_after_first_call": before + first_growth, "matmul_gflop": flops / 1e9,
          "achieved_gflops": flops / steady / 1e9, "adapter_shapes": shapes, "adapter_finite": finite}


def worker_xla_memory(scratch: Path, chunk_tokens: int) -> dict:
  """XLA's buffer assignment of the internalize program (compiled from shapes, nothing run) under
  this process's XLA_FLAGS."""
  base = gemma2_2b_bf16()
  config = published_config(base)
  params = jax.eval_shape(lambda: transformer.init_params(base, jax.random.key(0)))
  chunk = jax.ShapeDtypeStruct((1, 1, chunk_tokens), jnp.int32)
  compiled = doc_to_lora.adapter_from_chunks.lower(doc_to_lora.variable_shapes(config), params, chunk,
                                                   jax.ShapeDtypeStruct(chunk.shape, bool), config=config).compile()
  stats = compiled.memory_analysis()
  return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "chunk_tokens": chunk_tokens,
          "temp_mb": stats.temp_size_in_bytes / common.MB, "argument_mb": stats.argument_size_in_bytes / common.MB,
          "output_mb": stats.output_size_in_bytes / common.MB}


def _hf_layout_expected(name: str, w: np.ndarray, cfg: config_lib.GemmaConfig) -> np.ndarray:
  """A HF tensor in our layout, by index arithmetic (independent of the loader's transform):
  q/k/v [heads*h, d] -> [d, heads, h]; o [d, n*h] -> [n, h, d]; MLP [out, in] -> [in, out]."""
  h, d = cfg.head_dim, cfg.embed_dim
  if name.endswith(("q_proj", "k_proj", "v_proj")):
    return w.reshape(-1, h, d).transpose(2, 0, 1)
  if name.endswith("o_proj"):
    return w.reshape(d, -1, h).transpose(1, 2, 0)
  if name.startswith("mlp."):
    return w.T
  return w


_OUR_PATHS = {"input_layernorm": ("pre_attention_norm", "scale"),
              "post_attention_layernorm": ("post_attention_norm", "scale"),
              "pre_feedforward_layernorm": ("pre_ffw_norm", "scale"),
              "post_feedforward_layernorm": ("post_ffw_norm", "scale"), "mlp.down_proj": ("mlp", "down"),
              "mlp.gate_proj": ("mlp", "gate"), "mlp.up_proj": ("mlp", "up"), "self_attn.k_proj": ("attn", "k"),
              "self_attn.o_proj": ("attn", "o"), "self_attn.q_proj": ("attn", "q"), "self_attn.v_proj": ("attn", "v")}


def _hf_shape(name: str, cfg: config_lib.GemmaConfig) -> tuple[int, ...]:
  d, f, h = cfg.embed_dim, cfg.mlp_dim, cfg.head_dim
  return {"mlp.down_proj": (d, f), "mlp.gate_proj": (f, d), "mlp.up_proj": (f, d),
          "self_attn.q_proj": (cfg.num_heads * h, d), "self_attn.k_proj": (cfg.num_kv_heads * h, d),
          "self_attn.v_proj": (cfg.num_kv_heads * h, d), "self_attn.o_proj": (d, cfg.num_heads * h)}.get(name, (d,))


def write_hf_folder(folder: Path, layers: int) -> dict:
  """gemma-2-2b-it's config.json (`num_hidden_layers` = `layers`) and random bfloat16 weights under
  their HF names, in two shards (the last layer and the final norm in the second) with an index."""
  import safetensors.numpy

  folder.mkdir(parents=True, exist_ok=True)
  hf = {**GEMMA2_2B_IT_CONFIG, "num_hidden_layers": layers}
  (folder / "config.json").write_text(json.dumps(hf, indent=2))
  cfg = config_lib.gemma2_2b(num_layers=layers, sliding_layers=tuple(bool((i + 1) % 2) for i in range(layers)))
  tensor = lambda name, shape: random_bf16(np.random.default_rng([BASE_SEED, zlib.crc32(name.encode())]), shape)
  shards = [["model.embed_tokens.weight"] + [f"model.layers.{i}.{t}.weight" for i in range(layers - 1)
                                              for t in HF_LAYER_TENSORS],
            [f"model.layers.{layers - 1}.{t}.weight" for t in HF_LAYER_TENSORS] + ["model.norm.weight"]]
  files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  weight_map, total = {}, 0
  for names, file in zip(shards, files):
    tensors = {}
    for name in names:
      short = name.split(".", 3)[-1].removesuffix(".weight") if name.startswith("model.layers.") else name
      shape = ((cfg.vocab_size, cfg.embed_dim) if name == "model.embed_tokens.weight"
               else (cfg.embed_dim,) if name == "model.norm.weight" else _hf_shape(short, cfg))
      tensors[name] = tensor(name, shape)
      weight_map[name] = file
      total += tensors[name].nbytes
    safetensors.numpy.save_file(tensors, str(folder / file), metadata={"format": "pt"})
    del tensors
    gc.collect()
  (folder / "model.safetensors.index.json").write_text(
      json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
  return {"weights_bytes": total, "shards": files}


def worker_loader(scratch: Path, layers: int) -> dict:
  from safetensors import safe_open

  folder = scratch / f"hf_gemma2_2b_{layers}_layers"
  start = time.perf_counter()
  written = write_hf_folder(folder, layers)
  write_s = time.perf_counter() - start
  gc.collect()
  before = common.rss_mb()
  reset = common.reset_peak_rss()
  start = time.perf_counter()
  model = base_model.load_base_model(folder, dtype="bfloat16")
  load_s = time.perf_counter() - start
  peak = common.peak_rss_mb()
  gc.collect()
  after = common.rss_mb()

  expected = gemma2_2b_bf16(num_layers=layers, sliding_layers=tuple(bool((i + 1) % 2) for i in range(layers)))
  if model.config != expected:
    raise AssertionError(f"config read {model.config}\n!= expected {expected}")
  if not isinstance(model.tokenizer, MissingTokenizer):
    raise AssertionError(f"a folder without tokenizer.json gave {type(model.tokenizer).__name__}")
  params, checked, mismatched = model.params, 0, []
  bits = lambda x: np.asarray(x).view(np.uint16)
  for file in written["shards"]:
    with safe_open(str(folder / file), framework="numpy") as f:
      for name in f.keys():
        saved_tensor = f.get_tensor(name)
        if name == "model.embed_tokens.weight":
          ours = params["embedding"]
        elif name == "model.norm.weight":
          ours = params["final_norm"]["scale"]
        else:
          _, _, layer, short = name.removesuffix(".weight").split(".", 3)
          group, leaf = _OUR_PATHS[short]
          ours = params["layers"][group][leaf][int(layer)]
          saved_tensor = _hf_layout_expected(short, saved_tensor, model.config)
        if np.asarray(ours).dtype != np.dtype(jnp.bfloat16) or not np.array_equal(bits(ours), bits(saved_tensor)):
          mismatched.append(name)
        checked += 1
  if mismatched:
    raise AssertionError(f"loaded tensors differ from the saved ones: {mismatched[:5]}")
  return {"layers": layers, "weights_bytes": written["weights_bytes"], "write_s": write_s, "load_s": load_s,
          "rss_before_mb": before, "peak_rss_mb": peak, "rss_after_mb": after, "peak_reset": reset,
          "load_peak_growth_mb": peak - before, "params_bytes": common.tree_bytes(params),
          "tensors_checked": checked, "tensors_bit_equal": checked, "config_equals_gemma2_2b": True}


def full_config_check(scratch: Path) -> dict:
  """gemma-2-2b-it's config.json as published (26 layers), read by the loader's config path."""
  folder = scratch / "hf_gemma2_2b_config_only"
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(GEMMA2_2B_IT_CONFIG, indent=2))
  read = config_lib.load_hf_config(folder)
  if read != config_lib.gemma2_2b():
    raise AssertionError(f"gemma-2-2b-it's config.json reads as {read}, not config_lib.gemma2_2b()")
  return {"config_json_equals_gemma2_2b": True, "fields": {k: GEMMA2_2B_IT_CONFIG[k] for k in (
      "sliding_window", "attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar",
      "max_position_embeddings", "eos_token_id", "num_hidden_layers")}}


WORKERS = {"checkpoint": worker_checkpoint, "convert": worker_convert, "internalize": worker_internalize,
           "xla_memory": worker_xla_memory, "loader": worker_loader}
# XLA:CPU computes a bfloat16 matmul in float32, and its loop-invariant code motion then converts
# every layer's stacked weights to float32 once, before the layer loop: 8 GB of temporaries for
# gemma-2-2b (the whole base in float32, beside its bfloat16 copy). Without that pass the conversion
# stays per layer, inside the loop (the same work). The internalize part runs with this flag, and
# reports XLA's memory analysis with and without it.
NO_LICM = "--xla_disable_hlo_passes=while-loop-invariant-code-motion"


# ----------------------------------------------------------------------------- the parent


def _rss_of(pid: int) -> float:
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return 0.0


def run_worker(kind: str, scratch: Path, args: list[str], max_rss_mb: float, xla_flags: str = "") -> dict:
  """Runs `kind` in a fresh `python -m benchmarks.sakana_d2l` process (`xla_flags` added to its
  XLA_FLAGS); stops it (the result is then an error) if its RSS passes `max_rss_mb`: this machine is
  shared."""
  out = scratch / f"result_{kind}_{'_'.join(args) or 'x'}{'_flags' if xla_flags else ''}.json"
  command = [sys.executable, "-m", "benchmarks.sakana_d2l", "--_worker", kind, str(scratch), str(out), *args]
  env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()}
  log(f"worker {kind} {' '.join(args)} {xla_flags}")
  start = time.perf_counter()
  proc = subprocess.Popen(command, cwd=Path(__file__).parent.parent, env=env)
  highest, stopped = 0.0, False
  while proc.poll() is None:
    rss = _rss_of(proc.pid)
    highest = max(highest, rss)
    if rss > max_rss_mb:
      proc.kill()  # only the worker this process started
      proc.wait()
      stopped = True
      break
    time.sleep(0.2)
  wall = time.perf_counter() - start
  if stopped:
    return {"error": f"stopped: its RSS passed --max_rss_gb ({max_rss_mb / 1024:.1f} GiB)", "wall_s": wall}
  if proc.returncode or not out.is_file():
    return {"error": f"exit status {proc.returncode} (its traceback is above)", "wall_s": wall}
  result = json.loads(out.read_text())
  log(f"worker {kind} done in {wall:.0f} s")
  return {**result, "worker_wall_s": wall, "worker_highest_rss_polled_mb": highest}


def part_convert(scratch: Path, max_rss_mb: float) -> dict:
  weights = PUBLISHED_PARAMS * 4
  out: dict[str, Any] = {"weights_params": PUBLISHED_PARAMS, "weights_bytes_float32": weights,
                         "checkpoint": run_worker("checkpoint", scratch, [], max_rss_mb)}
  for dtype in ("float32", "bfloat16"):
    r = run_worker("convert", scratch, [dtype], max_rss_mb)
    if "conversion_peak_growth_mb" in r:
      r["peak_growth_over_weights"] = r["conversion_peak_growth_mb"] * common.MB / weights
    out[dtype] = r
  return out


def part_internalize(scratch: Path, chunk_tokens: int, repeats: int, max_rss_mb: float) -> dict:
  xla = {"default": run_worker("xla_memory", scratch, [str(chunk_tokens)], max_rss_mb),
         "no_licm": run_worker("xla_memory", scratch, [str(chunk_tokens)], max_rss_mb, NO_LICM)}
  return {**run_worker("internalize", scratch, [str(chunk_tokens), str(repeats)], max_rss_mb, NO_LICM),
          "xla_memory": xla}


def loader_model_mb(layers: int) -> dict[str, float]:
  """The loader's high point, from the code: the file's bfloat16 tensors as read, beside the
  bfloat16 params `params_from_hf` fills layer by layer (2 + 2 bytes a param). MiB."""
  cfg = gemma2_2b_bf16(num_layers=layers, sliding_layers=tuple(bool((i + 1) % 2) for i in range(layers)))
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  total = sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))
  return {"read_and_filled_bf16": 4 * total / common.MB, "bf16_weights": 2 * total / common.MB}


def part_loader(scratch: Path, layers: list[int], max_rss_mb: float) -> dict:
  rows = []
  for n in layers:
    rows.append({**run_worker("loader", scratch, [str(n)], max_rss_mb), "model_mb": loader_model_mb(n)})
    shutil.rmtree(scratch / f"hf_gemma2_2b_{n}_layers", ignore_errors=True)  # only its own worker needs it
  out: dict[str, Any] = {"full_config": full_config_check(scratch), "rows": rows}
  full = config_lib.gemma2_2b().num_layers
  out["model_mb_26_layers"] = loader_model_mb(full)
  measured = [(r["layers"], r["load_peak_growth_mb"]) for r in rows if "load_peak_growth_mb" in r]
  if len(measured) >= 2:
    # Linear in the layer count while one high point stays the higher (past 7 layers: the stacking).
    (n0, m0), (n1, m1) = measured[0], measured[-1]
    out["extrapolated_26_layers"] = {"from_layers": [n0, n1], "per_layer_mb": (m1 - m0) / (n1 - n0),
                                     "load_peak_growth_mb": m1 + (m1 - m0) / (n1 - n0) * (full - n1)}
  return out


def save(parts: dict[str, dict]) -> Path:
  """Keeps one entry per processor, and in it the latest result of each part."""
  path = common.RESULTS / f"{NAME}.json"
  data = json.loads(path.read_text()) if path.is_file() else {"benchmark": NAME, "runs": {}}
  machine = common.machine()
  entry = data["runs"].setdefault(machine["processor"], {})
  entry["machine"] = machine
  stamp = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": common.command(),
           "load_average_at_start": machine["load_average_at_start"],
           "load_average_at_end": machine["load_average_at_end"]}
  for name, result in parts.items():
    entry[name] = {**stamp, **result}
  data["latest_processor"] = machine["processor"]
  common.RESULTS.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data, indent=2, default=common._json_default) + "\n")
  return path


def table(parts: dict[str, dict]) -> str:
  lines = []
  c = parts.get("convert")
  if c:
    w = c["weights_bytes_float32"]
    lines += [f"convert: their checkpoint, {c['weights_params']:,} params = {w / GB:.2f} GB float32 "
              f"(file {c['checkpoint'].get('file_bytes', float('nan')) / GB:.2f} GB)",
              "| output | time | RSS before | peak growth | / weights | base model (its RSS, digest) |",
              "|---|---|---|---|---|---|"]
    for dtype in ("float32", "bfloat16"):
      r = c[dtype]
      if "error" in r:
        lines.append(f"| {dtype} | failed: {r['error']} | | | | |")
        continue
      lines.append(f"| {dtype} | {r['convert_s']:.1f} s | {r['rss_before_mb']:.0f} MiB "
                   f"| {r['conversion_peak_growth_mb']:.0f} MiB | {r['peak_growth_over_weights']:.2f}x "
                   f"| {r['base_rss_mb']:.0f} MiB, digest {r['digest_s']:.1f} s "
                   f"(+{r['digest_peak_growth_mb']:.0f} MiB) |")
  i = parts.get("internalize")
  if i:
    x = i["xla_memory"]
    temps = {k: f"{v['temp_mb']:.0f} MiB" if "temp_mb" in v else v.get("error") for k, v in x.items()}
    lines.append(f"internalize: XLA temporaries {temps['default']} with the default flags, {temps['no_licm']} without "
                 "loop-invariant code motion (the run below)")
    if "error" in i:
      lines.append(f"internalize: failed: {i['error']}")
    else:
      lines += [f"internalize: one {i['chunk_tokens']}-token chunk ({i['document_tokens']} document + "
                f"{i['template_tokens']} template tokens), base {i['base_compute_dtype']}, hypernetwork "
                f"float32 ({i['hypernetwork']})",
                f"  first call {i['first_call_s']:.1f} s (peak +{i['first_call_peak_growth_mb']:.0f} MiB), steady "
                f"{i['steady_s']:.1f} s (median of {len(i['steady_times_s'])}, "
                f"peak +{i['steady_peak_growth_mb']:.0f} MiB), "
                f"{i['achieved_gflops']:.0f} GFLOP/s of matmuls; resident: base {i['base_rss_mb']:.0f} MiB + "
                f"hypernetwork {i['hypernetwork_rss_mb']:.0f} MiB"]
  l = parts.get("loader")
  if l:
    for r in l["rows"]:
      if "error" in r:
        lines.append(f"loader: failed: {r['error']}")
        continue
      m = r["model_mb"]
      lines.append(f"loader: {r['layers']} layers ({r['weights_bytes'] / GB:.2f} GB bf16): load {r['load_s']:.1f} s, "
                   f"peak +{r['load_peak_growth_mb']:.0f} MiB (from the code: "
                   f"{m['read_and_filled_bf16']:.0f}), "
                   f"{r['tensors_checked']} tensors bit-equal, config == gemma2_2b")
    e, m = l.get("extrapolated_26_layers"), l["model_mb_26_layers"]
    if e:
      lines.append(f"loader, 26 layers (extrapolated from {e['from_layers']}): "
                   f"peak +{e['load_peak_growth_mb']:.0f} MiB "
                   f"(from the code: {m['read_and_filled_bf16']:.0f}) for "
                   f"{m['bf16_weights']:.0f} MiB of bf16 weights")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
  parser.add_argument("--chunk_tokens", type=int, default=512,
                      help="the chunk as the encoder reads it, template included")
  parser.add_argument("--repeats", type=int, default=3, help="timed internalize calls after the first")
  parser.add_argument("--loader_layers", type=int, nargs="+", default=[8, 10],
                      help="layer counts of the random HF folders (26: the whole model, ~18 GB to load)")
  parser.add_argument("--max_rss_gb", type=float, default=14.0, help="a worker past this RSS (GiB) is stopped")
  parser.add_argument("--scratch", default=None, help="folder for the scratch files (default: a new temporary one)")
  parser.add_argument("--keep_scratch", action="store_true")
  parser.add_argument("--_worker", nargs="+", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._worker:
    kind, scratch, out, *rest = args._worker
    typed = [int(x) if x.isdigit() else x for x in rest]
    result = WORKERS[kind](Path(scratch), *typed)
    Path(out).write_text(json.dumps(result, default=common._json_default))
    return

  scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="sakana_d2l_"))
  scratch.mkdir(parents=True, exist_ok=True)
  max_rss_mb = args.max_rss_gb * 1024
  parts: dict[str, dict] = {}
  try:
    if "convert" in args.parts:
      parts["convert"] = part_convert(scratch, max_rss_mb)
    if "internalize" in args.parts:
      parts["internalize"] = part_internalize(scratch, args.chunk_tokens, args.repeats, max_rss_mb)
    if "loader" in args.parts:
      parts["loader"] = part_loader(scratch, args.loader_layers, max_rss_mb)
  finally:
    if not args.keep_scratch:
      shutil.rmtree(scratch, ignore_errors=True)
  path = save(parts)
  print(table(parts))
  log(f"wrote {path}")


if __name__ == "__main__":
  main()
