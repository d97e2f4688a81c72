"""Our jitted forward against transformers' PyTorch forward on the embedded Gemma 3 270M.

Both run float32 on this machine's CPU, side by side in one process, on the same 512 tokens,
PyTorch with as many intra-op threads as the machine has cores (as XLA); contenders alternate
round by round (`common.interleaved`). Two ways: all logits ([1, T, 262,144]) and the last
position's only (transformers' `logits_to_keep=1`, our `logits_at`); neither side builds a KV cache.
Run: python -m benchmarks.forward [--tokens 512] [--repeats 5] [--torch_threads N]
Writes benchmarks/results/forward.json.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from lora_hyper.model import base_model, transformer
from lora_hyper.model.config import GemmaConfig


def forward_flops(cfg: GemmaConfig, tokens: int, logit_positions: int) -> float:
  """Matmul FLOPs of one forward: projections, attention (causal, windowed) and the output head."""
  d, q, kv = cfg.embed_dim, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  per_token_proj = 2 * (d * (q + 2 * kv) + q * d + 3 * d * cfg.mlp_dim)
  attn = 0.0
  for sliding in cfg.sliding_layers:
    span = min(tokens, cfg.sliding_window) if sliding else tokens
    keys_per_query = sum(min(t + 1, span) for t in range(tokens))
    attn += 2 * 2 * keys_per_query * q  # q.k and p.v
  return cfg.num_layers * per_token_proj * tokens + attn + 2 * d * cfg.vocab_size * logit_positions


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--tokens", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
  parser.add_argument("--torch_threads", type=int, default=0, help="0: this machine's cores")
  args = parser.parse_args()

  import torch
  import transformers

  from lora_hyper.model import weights

  threads = common.torch_threads(args.torch_threads)
  model = base_model.load_base_model()
  cfg, params = model.config, model.params
  path, _ = weights.embedded_gguf_path()
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                         dtype=torch.float32).eval()
  ids = np.random.default_rng(0).integers(1000, 30000, (1, args.tokens))
  ids[0, 0] = cfg.bos_id
  tokens = jnp.asarray(ids, jnp.int32)
  torch_ids = torch.tensor(ids)

  full = jax.jit(lambda p, t: transformer.forward(p, t, config=cfg).logits)
  last = jax.jit(lambda p, t: transformer.forward(p, t, config=cfg, logits_at=jnp.full((1, 1), t.shape[1] - 1)).logits)

  def torch_forward(logits_to_keep=0):
    with torch.inference_mode():
      return hf(torch_ids, logits_to_keep=logits_to_keep, use_cache=False).logits

  # The peak: a 2048^3 float32 `jnp.dot`, timed in the same rounds (under the same load) as the forwards.
  n = 2048
  x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  contenders = {"matmul_peak": lambda: dot(x, x),
                "jax_all_logits": lambda: full(params, tokens), "torch_all_logits": torch_forward,
                "jax_last_logit": lambda: last(params, tokens), "torch_last_logit": lambda: torch_forward(1)}
  # The same computation: the last position's logits agree (float32; the tests hold them within 1e-3).
  diff = float(np.max(np.abs(np.asarray(last(params, tokens))[0, -1] - torch_forward(1)[0, -1].numpy())))
  times = common.interleaved(contenders, args.repeats, warmup=2)
  peak = 2 * n**3 / times.pop("matmul_peak")["median_s"] / 1e9
  seconds = {name: t["median_s"] for name, t in times.items()}
  flops_all = forward_flops(cfg, args.tokens, args.tokens)
  flops_last = forward_flops(cfg, args.tokens, 1)
  result = {
      "model": model.name, "tokens": args.tokens, "dtype": "float32", "repeats": args.repeats,
      "torch_threads": threads, "matmul_peak_gflops": peak,
      "max_abs_diff_last_logit": diff, "seconds": seconds, "range": times,
      "gflops": {"all_logits": flops_all / 1e9, "last_logit": flops_last / 1e9},
      "achieved_gflops": {name: (flops_all if "all" in name else flops_last) / s / 1e9 for name, s in seconds.items()},
      "fraction_of_peak": {name: (flops_all if "all" in name else flops_last) / s / 1e9 / peak
                           for name, s in seconds.items()},
      "speedup_vs_torch": {"all_logits": seconds["torch_all_logits"] / seconds["jax_all_logits"],
                           "last_logit": seconds["torch_last_logit"] / seconds["jax_last_logit"],
                           "jax_last_vs_torch_all": seconds["torch_all_logits"] / seconds["jax_last_logit"]},
      "goal": "our jitted forward at least as fast as transformers' PyTorch forward (both ways)",
  }
  common.write_result("forward", result)


if __name__ == "__main__":
  main()
