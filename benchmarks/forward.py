"""Our jitted forward against transformers' PyTorch forward on the embedded Gemma 3 270M.

Both run float32 on this machine's CPU, side by side in one process, on the same 512 tokens.
Run: python benchmarks/forward.py [--tokens 512] [--repeats 5]
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
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  import torch
  import transformers

  from lora_hyper.model import weights

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
      return hf(torch_ids, logits_to_keep=logits_to_keep).logits

  peak = common.matmul_peak_gflops()
  # Interleaved rounds, so background load on this shared machine hits every contender alike.
  rounds = {"jax_all_logits": lambda: full(params, tokens), "torch_all_logits": torch_forward,
            "jax_last_logit": lambda: last(params, tokens), "torch_last_logit": lambda: torch_forward(1)}
  timings = {name: [] for name in rounds}
  for _ in range(args.repeats):
    for name, fn in rounds.items():
      timings[name].append(common.median_seconds(fn, 1))
  seconds = {name: float(np.median(t)) for name, t in timings.items()}
  flops_all = forward_flops(cfg, args.tokens, args.tokens)
  flops_last = forward_flops(cfg, args.tokens, 1)
  result = {
      "model": model.name, "tokens": args.tokens, "dtype": "float32", "repeats": args.repeats,
      "matmul_peak_gflops": peak,
      "seconds": seconds,
      "gflops": {"all_logits": flops_all / 1e9, "last_logit": flops_last / 1e9},
      "achieved_gflops": {name: (flops_all if "all" in name else flops_last) / s / 1e9 for name, s in seconds.items()},
      "fraction_of_peak": {name: (flops_all if "all" in name else flops_last) / s / 1e9 / peak
                           for name, s in seconds.items()},
      "speedup_vs_torch": {"all_logits": seconds["torch_all_logits"] / seconds["jax_all_logits"],
                           "last_logit": seconds["torch_last_logit"] / seconds["jax_last_logit"],
                           "jax_last_vs_torch_all": seconds["torch_all_logits"] / seconds["jax_last_logit"]},
      "command": "python benchmarks/forward.py --tokens %d --repeats %d" % (args.tokens, args.repeats),
  }
  common.write_result("forward", result)


if __name__ == "__main__":
  main()
