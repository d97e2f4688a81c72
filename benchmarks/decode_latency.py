"""Decode latency per token: with a Doc-to-LoRA adapter against with the document in context.

For each document length the base model continues a short query (greedy, one sequence):
  in_context  the document and the query were prefilled; every new token attends over the
              document's cache (`transformer.KVCache`, window-aware: the sliding layers keep their
              512-position window, the global layers every position);
  in_context_full  the same with every layer caching every position (`windowed=False`, the cache
              before issue 66), for comparison;
  adapter     only the query was prefilled; the adapter `internalize` made from the document
              (rank 8 per 1,024-token chunk + 8, on down_proj) is applied at every step;
  bare        neither (the floor).
Caches are really prefilled; each timing is `--new_tokens` greedy steps in one jitted loop that
carries the cache in place, divided by that count. Contenders alternate round by round.
The hypernetwork is untrained (random init): its adapter has the real shapes and costs.

Beyond the lengths run here, `computed` rows give the matmul FLOPs of one decoding step, counted
from the jaxpr of the same forward on abstract shapes (`common.matmul_flops`), for documents of
1K to 128K tokens: with the adapter (its rank grows by 8 per 1,024-token chunk), with the
document in our cache (global layers attend over every cached position, sliding layers over their
window) and in the full cache (every layer over every position).

Run: python -m benchmarks.decode_latency [--lengths 256 1024 4096] [--new_tokens 32] [--rounds 5]
Writes benchmarks/results/decode_latency.json.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from benchmarks import common
from lora_hyper.adapters import lora
from lora_hyper.hypernetworks import doc_to_lora
from lora_hyper.model import transformer
from lora_hyper.prompts import query_prompt


def log(*args):
  print(*args, file=sys.stderr, flush=True)


COMPUTED_LENGTHS = [1024 * 2**k for k in range(8)]  # 1K .. 128K


def step_flops(cfg, params, cache_len: int, adapter_rank: int | None, *, windowed: bool = True) -> float:
  """Matmul FLOPs of one greedy decoding step (one token, batch 1) over a cache of `cache_len` columns.

  In a window-aware cache each scanned layer picks its stack with `lax.cond`, whose branches a jaxpr
  count cannot tell apart (it counts the dearest). Layers differ only in the slots they attend over,
  so the step is counted as the layer-weighted mix of two caches of one stack each: every layer
  windowed, every layer full."""
  adapter = None if adapter_rank is None else jax.eval_shape(lambda: lora.zeros(cfg, ("down",), adapter_rank))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  one = jax.ShapeDtypeStruct((1, 1), jnp.int32)

  def count(config, windowed):
    cache = jax.eval_shape(lambda: transformer.KVCache.empty(config, 1, cache_len, windowed=windowed))
    cache = cache.replace(fresh=False)  # a step after the prefill, which reads the cache
    fn = lambda p, c, a, t: transformer.forward(p, t, config=config, positions=t, adapter=a, cache=c).logits
    return common.matmul_flops(fn, abstract, cache, adapter, one)

  full = count(cfg, False)
  if not windowed:
    return full
  share = sum(cfg.sliding_layers) / cfg.num_layers
  return share * count(cfg.replace(sliding_layers=(True,) * cfg.num_layers), True) + (1 - share) * full


def computed(cfg, params, hyper, query_tokens: int, new_tokens: int) -> list[dict]:
  rows = []
  for length in COMPUTED_LENGTHS:
    rank = doc_to_lora.chunk_documents([[1] * length], config=hyper).tokens.shape[1] * hyper.rank + hyper.rank
    in_context = 1 + length + query_tokens + new_tokens
    flops = {"in_context": step_flops(cfg, params, in_context, None),
             "in_context_full": step_flops(cfg, params, in_context, None, windowed=False),
             "adapter": step_flops(cfg, params, 1 + query_tokens + new_tokens, rank),
             "bare": step_flops(cfg, params, 1 + query_tokens + new_tokens, None)}
    rows.append({"doc_tokens": length, "adapter_rank": rank, "gflop_per_token": {k: v / 1e9 for k, v in flops.items()},
                 "adapter_over_bare": flops["adapter"] / flops["bare"],
                 "in_context_over_adapter": flops["in_context"] / flops["adapter"],
                 "in_context_full_over_adapter": flops["in_context_full"] / flops["adapter"]})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
  parser.add_argument("--new_tokens", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()

  model = common.base()
  cfg, params, tok = model.config, model.params, model.tokenizer
  hyper = doc_to_lora.d2l_small(cfg, max_chunks=256, experimental=common.D2L_OPTIONS)
  hyper_variables = doc_to_lora.init(hyper, jax.random.key(0))
  decode = common.decode_loop(cfg, args.new_tokens)
  prefill = jax.jit(lambda p, t, c: transformer.forward(p, t, config=cfg, cache=c, logits=False).cache)

  def prepared(prompt_ids, adapter, windowed=True):
    """A prefilled cache with room for the new tokens, and a contender that decodes from it."""
    cache = transformer.KVCache.empty(cfg, 1, len(prompt_ids) + args.new_tokens, windowed=windowed)
    cache = jax.block_until_ready(prefill(params, jnp.asarray([prompt_ids], jnp.int32), cache))
    start = int(cache.index)
    state = {"cache": cache}
    token = jnp.asarray([[prompt_ids[-1]]], jnp.int32)
    position = jnp.asarray([[len(prompt_ids)]], jnp.int32)

    def run():
      # Rewind to just after the prompt: every round decodes the same slots (the window's ring then
      # holds the previous round's last keys: other values, the same work).
      state["cache"], last = decode(params, state["cache"].replace(index=jnp.asarray(start, jnp.int32)), token, position, adapter)
      return last

    return run

  rows = []
  for length in args.lengths:
    ids, record = common.document_tokens(tok, length)
    query = tok.encode(query_prompt(record["query"]), add_bos=False)
    context = tok.encode("\n\n", add_bos=False)
    chunks = doc_to_lora.chunk_documents([ids], config=hyper)
    adapter = doc_to_lora.adapter_from_chunks(hyper_variables, params, jnp.asarray(chunks.tokens),
                                              jnp.asarray(chunks.mask), config=hyper)
    adapter = lora.take(adapter, 0)
    in_context = [cfg.bos_id, *ids, *context, *query]
    contenders = {
        "in_context": prepared(in_context, None),
        "in_context_full": prepared(in_context, None, windowed=False),
        "adapter": prepared([cfg.bos_id, *query], adapter),
        "bare": prepared([cfg.bos_id, *query], None),
    }
    times = common.interleaved(contenders, args.rounds)
    per_token = {name: t["median_s"] / args.new_tokens for name, t in times.items()}
    row = {"doc_tokens": length, "adapter_rank": adapter.rank,
           "cache_positions": {"in_context": 2 + len(ids) + len(context) + len(query) - 1 + args.new_tokens,
                               "adapter": 1 + len(query) + args.new_tokens},
           "ms_per_token": {k: 1e3 * v for k, v in per_token.items()},
           "ms_per_token_range": {k: [1e3 * t["min_s"] / args.new_tokens, 1e3 * t["max_s"] / args.new_tokens]
                                  for k, t in times.items()},
           "in_context_over_adapter": per_token["in_context"] / per_token["adapter"],
           "in_context_full_over_adapter": per_token["in_context_full"] / per_token["adapter"]}
    log(f"{length}: {row['ms_per_token']}")
    rows.append(row)
    del contenders

  query_tokens = len(tok.encode(query_prompt(record["query"]), add_bos=False))
  flops = computed(cfg, params, hyper, query_tokens, args.new_tokens)
  first, last = rows[0]["ms_per_token"], rows[-1]["ms_per_token"]
  common.write_result("decode_latency", {
      "model": model.name, "dtype": "float32", "batch": 1, "new_tokens": args.new_tokens, "rounds": args.rounds,
      "rows": rows, "computed": flops,
      "how": {"rows": "measured: median wall time of --new_tokens greedy steps / new_tokens",
              "computed": "matmul GFLOP per decoded token from the jaxpr of the same forward (shapes only)"},
      "goal": "decode latency with an adapter flat in document length",
      "adapter_growth_first_to_last": last["adapter"] / first["adapter"],
      "in_context_growth_first_to_last": last["in_context"] / first["in_context"],
      "in_context_full_growth_first_to_last": last["in_context_full"] / first["in_context_full"],
      "computed_at_128k": {"adapter_over_bare": flops[-1]["adapter_over_bare"],
                           "in_context_over_adapter": flops[-1]["in_context_over_adapter"],
                           "in_context_full_over_adapter": flops[-1]["in_context_full_over_adapter"]},
  })


if __name__ == "__main__":
  main()
