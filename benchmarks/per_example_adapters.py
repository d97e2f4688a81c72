"""Per-example adapters in one batch against one shared merged adapter: throughput.

A batch of B sequences, each with its own adapter (`LoraAdapter` with a leading batch axis,
applied as x W + s (x A_b^T) B_b per example, never merged), against the same batch with one
adapter merged into the weights (W + s A^T B: no per-token adapter cost, but one adapter for
all). Also: one shared adapter applied unmerged, and the bare base model. Adapters are
Doc-to-LoRA-shaped (down_proj, rank 8 per chunk + 8: rank 16 is a one-chunk document).

Measured for the prefill (forward over B x T prompt tokens, logits at the last position) and
for greedy decoding (`--new_tokens` steps in one jitted loop with the KV cache carried in
place). Contenders alternate round by round.

Run: python -m benchmarks.per_example_adapters [--batch 8] [--tokens 128] [--ranks 16 136] [--rounds 4]
Writes benchmarks/results/per_example_adapters.json.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from lora_hyper.adapters import lora
from lora_hyper.model import transformer


def log(*args):
  print(*args, file=sys.stderr, flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--tokens", type=int, default=128)
  parser.add_argument("--new_tokens", type=int, default=16)
  parser.add_argument("--ranks", type=int, nargs="+", default=[16, 136])
  parser.add_argument("--rounds", type=int, default=4)
  args = parser.parse_args()

  model = common.base()
  cfg, params = model.config, model.params
  b, t = args.batch, args.tokens
  tokens = jnp.asarray(np.random.default_rng(0).integers(1000, 30000, (b, t)), jnp.int32).at[:, 0].set(cfg.bos_id)
  last = jnp.full((b, 1), t - 1)
  prefill = jax.jit(lambda p, x, a: transformer.forward(p, x, config=cfg, adapter=a, logits_at=last).logits)
  prefill_cache = jax.jit(lambda p, x, a, c: transformer.forward(p, x, config=cfg, adapter=a, cache=c,
                                                                 logits=False).cache)
  decode = common.decode_loop(cfg, args.new_tokens)

  def decoder(p, adapter):
    cache = transformer.KVCache.empty(cfg, b, t + args.new_tokens)
    state = {"cache": jax.block_until_ready(prefill_cache(p, tokens, adapter, cache))}
    token, position = tokens[:, -1:], jnp.full((b, 1), t, jnp.int32)

    def run():
      state["cache"], out = decode(p, state["cache"].replace(index=jnp.asarray(t, jnp.int32)), token, position,
                                   adapter)
      return out

    return run

  rows = []
  for rank in args.ranks:
    # std 0.02 A and B: non-zero deltas of realistic size (the hypernetwork's are of this order).
    per_example = lora.random(jax.random.key(rank), cfg, ("down",), rank, batch=b, scaling=2.0)
    shared = lora.take(per_example, 0)
    merged = lora.merged_params(params, shared)
    setups = {"per_example": (params, per_example), "shared_merged": (merged, None),
              "shared_unmerged": (params, shared), "base": (params, None)}
    prefill_times = common.interleaved({k: (lambda p=p, a=a: prefill(p, tokens, a)) for k, (p, a) in setups.items()},
                                       args.rounds)
    decoders = {k: decoder(p, a) for k, (p, a) in setups.items()}
    decode_times = common.interleaved(decoders, args.rounds)
    del decoders
    prefill_tps = {k: b * t / v["median_s"] for k, v in prefill_times.items()}
    decode_tps = {k: b * args.new_tokens / v["median_s"] for k, v in decode_times.items()}
    # Bytes a decoding step reads: every weight once, plus each example's own A/B (per-example) or
    # one A/B for the batch (shared, unmerged). Decoding on a CPU is bound by these reads.
    mb = lambda tree: common.tree_bytes(tree) / common.MB
    row = {"rank": rank, "mb_read_per_decode_step": {"base_params": mb(params),
                                                     "per_example_adapters": mb(dict(per_example.weights)),
                                                     "shared_adapter": mb(dict(shared.weights))},
           "prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps,
           "prefill_ratio_per_example_to_merged": prefill_tps["per_example"] / prefill_tps["shared_merged"],
           "decode_ratio_per_example_to_merged": decode_tps["per_example"] / decode_tps["shared_merged"]}
    log(f"rank {rank}: prefill {row['prefill_ratio_per_example_to_merged']:.3f}, "
        f"decode {row['decode_ratio_per_example_to_merged']:.3f}")
    rows.append(row)
    del merged

  common.write_result("per_example_adapters", {
      "model": model.name, "dtype": "float32", "batch": b, "prompt_tokens": t, "new_tokens": args.new_tokens,
      "rounds": args.rounds, "modules": ["down"], "rows": rows,
      "goal": "per-example adapters >= 0.8x the throughput of one shared merged adapter",
      "min_ratio": min(min(r["prefill_ratio_per_example_to_merged"], r["decode_ratio_per_example_to_merged"])
                       for r in rows),
  })


if __name__ == "__main__":
  main()
