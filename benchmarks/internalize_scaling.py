"""Internalize on long documents: the shipped Doc-to-LoRA's `internalize` against its floor.

The shipped hypernetwork (`lora_hyper/pretrained/d2l_gemma3_270m`) reads the document through an
early exit: the base model's first L/4 layers (4 of Gemma 3 270M's 18) over every 128-token chunk.
That forward is the floor: whatever `internalize` spends beyond it is tokenizing, chunking, the
hypernetwork (Perceiver, heads), building the adapter, and dispatch. Per document length:

  internalize       the whole call as a user makes it (text in, adapter out), compile excluded;
  floor             the jitted `transformer.layer_input` of the first L/4 layers over the same [K, T]
                    chunk tokens, in the same interleaved rounds;
  parts             tokenize and chunk (Python, timed apart), and two separately jitted pieces of the
                    generation: `encode_context` (the floor plus the feature norm) and the Perceiver,
                    heads and adapter assembly on its features;
  first_call_s      the first `internalize` of that length (its compiles included);
  new_length_s      then the first call on a document one chunk longer (a length not seen before):
                    what a warm process pays for a new length;
  one_batch         `internalize` as it was before issue 66 part 3 (one jitted program over all [1, K, T]
                    chunk slots, compiled for every chunk count K), in the same rounds, with its own
                    first call and new length.

The shipped config allows 64 chunks (8K tokens); longer documents are measured with max_chunks
raised (`config.replace(max_chunks=...)`), which changes no weight. Float32 on this CPU.

`--label` names the code path measured (e.g. "before" on the commit before a change, "after"):
benchmarks/results/internalize_scaling.json keeps the latest run of each label, all on one
processor (a run on another CPU drops the labels measured elsewhere: ratios compare within a CPU).

Run: python -m benchmarks.internalize_scaling [--lengths 2048 4096 8192 16384] [--rounds 3] [--label after]
Writes benchmarks/results/internalize_scaling.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time

import jax

from benchmarks import common
from lora_hyper.adapters import lora
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.hypernetworks.doc_to_lora import generation
from lora_hyper.hypernetworks.doc_to_lora.modules import DocToLora
from lora_hyper.model import transformer

NAME = "internalize_scaling"


def log(*args):
  print(*args, file=sys.stderr, flush=True)


def python_seconds(fn, repeats: int = 5) -> float:
  """Median wall time of a host-only call (tokenizer, chunking)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def perceiver_heads(variables, features, mask, *, config):
  """What `internalize` runs after the base model's features: Perceiver, heads, adapter assembly."""
  codes = generation.chunk_codes(variables, features, mask, config=config)
  valid = mask.any(axis=-1)[None]
  weights, _ = DocToLora(config).apply(variables, codes, valid, method=DocToLora.decode)
  return generation.combine(variables, jax.tree.map(lambda w: w[None], weights), valid, config=config)


def one_batch_internalize(variables, params, text, *, config, tokenizer):
  """`internalize` before issue 66 part 3: tokenize, chunk, `adapter_from_chunks` (one program for all
  [1, K, T] slots), then the document's adapter taken outside the program."""
  chunks = doc_to_lora.chunk_documents([tokenizer.encode(text, add_bos=False)], config=config)
  adapter = doc_to_lora.adapter_from_chunks(variables, params, jax.numpy.asarray(chunks.tokens),
                                            jax.numpy.asarray(chunks.mask), config=config)
  return lora.take(adapter, 0)


def long_config(shipped: saved.SavedHypernetwork, lengths) -> "doc_to_lora.DocToLoraConfig":
  """The shipped config with room for the longest length and one chunk more. One config for every
  length: max_chunks is part of the programs' jit key, so one per length would recompile them all."""
  per_chunk = shipped.config.chunk_len - 1
  needed = -(-(max(lengths) + 2 * per_chunk) // per_chunk)  # + decoding's drift + the one-chunk-longer doc
  return shipped.config.replace(max_chunks=max(shipped.config.max_chunks, needed))


def measure(length: int, shipped: saved.SavedHypernetwork, model, rounds: int, config) -> dict:
  tok, params, variables = model.tokenizer, model.params, shipped.variables
  ids, _ = common.document_tokens(tok, length)
  text = tok.decode(ids)
  doc_ids = tok.encode(text, add_bos=False)
  per_chunk = shipped.config.chunk_len - 1
  chunks = doc_to_lora.chunk_documents([doc_ids], config=config)
  k, t = chunks.tokens.shape[1:]
  tokens, mask = jax.numpy.asarray(chunks.tokens[0]), jax.numpy.asarray(chunks.mask[0])

  internalize = lambda doc=text: doc_to_lora.internalize(variables, params, doc, config=config, tokenizer=tok)
  one_batch = lambda doc=text: one_batch_internalize(variables, params, doc, config=config, tokenizer=tok)
  first_call_s, adapter = common.timed(internalize)
  one_batch_first_call_s, _ = common.timed(one_batch)
  floor = jax.jit(functools.partial(transformer.layer_input, layer=config.feature_layer, config=config.base))
  encode = jax.jit(functools.partial(generation.encode_context, config=config))
  features = encode(params, tokens, mask)
  hyper = jax.jit(functools.partial(perceiver_heads, config=config))
  timings = common.interleaved({
      "internalize": internalize,
      "floor": lambda: floor(params, tokens, mask=mask),
      "encode_context": lambda: encode(params, tokens, mask),
      "perceiver_heads": lambda: hyper(variables, features, mask),
      "one_batch": one_batch,
  }, rounds)
  longer, _ = common.document_tokens(tok, length + per_chunk)
  longer_text = tok.decode(longer)
  new_length_s, _ = common.timed(lambda: internalize(longer_text))
  one_batch_new_length_s, _ = common.timed(lambda: one_batch(longer_text))
  row = {
      "doc_tokens": len(doc_ids), "chunks": k, "chunk_len": t, "max_chunks": config.max_chunks,
      "adapter_rank": adapter.weights[config.modules[0]]["b"].shape[-2],
      "tokenize_s": python_seconds(lambda: tok.encode(text, add_bos=False)),
      "chunk_s": python_seconds(lambda: doc_to_lora.chunk_documents([doc_ids], config=config)),
      **{f"{name}_s": v for name, v in timings.items()},
      "first_call_s": first_call_s,
      "compile_s": first_call_s - timings["internalize"]["median_s"],
      "new_length_chunks": len(doc_to_lora.chunk_documents([tok.encode(longer_text, add_bos=False)],
                                                           config=config).tokens[0]),
      "new_length_s": new_length_s,
      "ratio_to_floor": timings["internalize"]["median_s"] / timings["floor"]["median_s"],
      "one_batch_first_call_s": one_batch_first_call_s,
      "one_batch_compile_s": one_batch_first_call_s - timings["one_batch"]["median_s"],
      "one_batch_new_length_s": one_batch_new_length_s,
      "one_batch_ratio_to_floor": timings["one_batch"]["median_s"] / timings["floor"]["median_s"],
  }
  log(f"{row['doc_tokens']} tokens, {k} chunks: internalize {timings['internalize']['median_s']:.3f} s, floor "
      f"{timings['floor']['median_s']:.3f} s ({row['ratio_to_floor']:.3f}x); encode "
      f"{timings['encode_context']['median_s']:.3f} s, perceiver+heads {timings['perceiver_heads']['median_s']:.3f} s; "
      f"first call {first_call_s:.2f} s, new length {new_length_s:.2f} s; one batch "
      f"{timings['one_batch']['median_s']:.3f} s ({row['one_batch_ratio_to_floor']:.3f}x), first call "
      f"{one_batch_first_call_s:.2f} s, new length {one_batch_new_length_s:.2f} s")
  return row


def compile_seconds(jitted, *args, **kwargs) -> float:
  """Time to lower and compile `jitted` for these shapes (ahead of time: the jit cache is not used)."""
  start = time.perf_counter()
  jitted.lower(*args, **kwargs).compile()
  return time.perf_counter() - start


def measure_compiles(length: int, shipped: saved.SavedHypernetwork, model, config) -> dict:
  """What a document of `length` tokens compiles on each path, timed ahead of time (first-call times
  are too noisy under load for a second of compile within a 10 s call)."""
  tok, params, variables = model.tokenizer, model.params, shipped.variables
  ids, _ = common.document_tokens(tok, length)
  chunks = doc_to_lora.chunk_documents([ids], config=config)
  k, t = chunks.tokens.shape[1:]
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)
  codes = lambda g: spec((g, config.base.num_layers, len(config.modules), config.rank, config.perceiver.latent_dim),
                         jax.numpy.float32)
  sizes = generation.group_sizes(k)
  return {
      "doc_tokens": len(ids), "chunks": k, "group_sizes": sizes,
      "one_batch_s": compile_seconds(doc_to_lora.adapter_from_chunks, variables, params, spec((1, k, t), "int32"),
                                     spec((1, k, t), bool), config=config),
      "assemble_s": compile_seconds(generation._assemble, variables, tuple(codes(g) for g in sizes),
                                    spec((k,), "int32"), spec((1, k), bool), config=config, single=True),
      "group_s": {g: compile_seconds(generation._group_codes, variables, params, spec((g, t), "int32"),
                                     spec((g, t), bool), config=config) for g in sorted(set(sizes))},
  }


def previous_runs() -> dict:
  """The labels already recorded on this processor (others are dropped: see the docstring)."""
  path = common.RESULTS / f"{NAME}.json"
  if not path.exists():
    return {}
  runs = json.loads(path.read_text()).get("runs", {})
  here = common.cpu_model()
  return {label: r for label, r in runs.items() if r["machine"].get("processor") == here}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--label", default="after", help="the code path measured, e.g. before / after")
  parser.add_argument("--compile_only", action="store_true",
                      help="only time each path's compiles ahead of time, added to the label's recorded run")
  args = parser.parse_args()

  model = common.base()
  shipped = saved.load_hypernetwork(saved.shipped("doc_to_lora", "needle"), model)
  config = long_config(shipped, args.lengths)
  if args.compile_only:
    compiles = [measure_compiles(length, shipped, model, config) for length in args.lengths]
    log(json.dumps(compiles))
    d = json.loads((common.RESULTS / f"{NAME}.json").read_text())
    d["runs"][args.label]["compiles"] = {"command": common.command(), "machine": common.machine(), "rows": compiles}
    (common.RESULTS / f"{NAME}.json").write_text(json.dumps(d, indent=2) + "\n")
    return
  rows = [measure(length, shipped, model, args.rounds, config) for length in args.lengths]
  run = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": common.machine(), "command": common.command(),
         "rows": rows, "max_ratio_to_floor": max(r["ratio_to_floor"] for r in rows),
         "max_one_batch_ratio_to_floor": max(r["one_batch_ratio_to_floor"] for r in rows)}
  runs = {**previous_runs(), args.label: run}
  common.write_result(NAME, {
      "model": model.name, "dtype": "float32", "label": args.label,
      "shipped_hypernetwork": {**shipped.describe(), "path": "lora_hyper/pretrained/d2l_gemma3_270m",
                               "context_encoder": shipped.config.context_encoder,
                               "feature_layer": shipped.config.feature_layer, "chunk_len": shipped.config.chunk_len,
                               "max_chunks": shipped.config.max_chunks},
      "goal": "internalize / floor (the jitted first L/4 layers over the same chunks): reported, the closer to 1 "
              "the better",
      "runs": runs,
  })


if __name__ == "__main__":
  main()
