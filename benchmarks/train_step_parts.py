"""Where the train step's time goes, in pieces, ours (jitted JAX) against PyTorch (eager).

The vocabulary-sized parts of a step with logits at every position of 4 x 256 tokens, on random
float32 data of the real shapes (Gemma 3 270M: 640 wide, 262,144-token vocabulary, tied head):
  head_forward     logits = h E^T, h [N, 640], E [262144, 640]
  head_input_grad  the gradient wrt h: g E, g [N, 262144] (E frozen: no gradient of E)
  loss_grad        cross-entropy over the vocabulary and its gradient wrt the logits
Both sides use this machine's cores; contenders alternate round by round.

Run: python -m benchmarks.train_step_parts [--positions 1024] [--rounds 5]
Writes benchmarks/results/train_step_parts.json.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from lora_hyper.training import losses

VOCAB, WIDTH = 262_144, 640


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--positions", type=int, default=1024, help="N: batch x tokens with logits")
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()

  import torch
  import torch.nn.functional as F

  threads = common.torch_threads()
  n = args.positions
  rng = np.random.default_rng(0)
  h = rng.standard_normal((n, WIDTH), dtype=np.float32)
  e = rng.standard_normal((VOCAB, WIDTH), dtype=np.float32) * 0.02
  g = rng.standard_normal((n, VOCAB), dtype=np.float32)
  y = rng.integers(0, VOCAB, n)
  jh, je, jg, jy = map(jnp.asarray, (h, e, g, y))
  th, te, tg, ty = map(torch.tensor, (h, e, g, y))
  tl = torch.tensor(g, requires_grad=True)

  head = jax.jit(lambda h, e: h @ e.T)
  head_grad = jax.jit(lambda h, e, g: jax.vjp(lambda h: h @ e.T, h)[1](g)[0])
  mask = jnp.ones((1, n), bool)
  loss_grad = jax.jit(jax.grad(lambda logits, t: losses.cross_entropy(logits[None], t[None], mask)))

  def torch_loss_grad():
    tl.grad = None
    F.cross_entropy(tl, ty).backward()
    return tl.grad

  def no_grad(fn):
    def run():
      with torch.no_grad():
        return fn()
    return run

  contenders = {"jax_head_forward": lambda: head(jh, je), "torch_head_forward": no_grad(lambda: th @ te.T),
                "jax_head_input_grad": lambda: head_grad(jh, je, jg), "torch_head_input_grad": no_grad(lambda: tg @ te),
                "jax_loss_grad": lambda: loss_grad(jg, jy), "torch_loss_grad": torch_loss_grad}
  times = common.interleaved(contenders, args.rounds, warmup=1)
  s = {k: v["median_s"] for k, v in times.items()}
  parts = ("head_forward", "head_input_grad", "loss_grad")
  common.write_result("train_step_parts", {
      "positions": n, "vocab": VOCAB, "width": WIDTH, "dtype": "float32", "torch_threads": threads,
      "rounds": args.rounds, "seconds": s, "range": times,
      "torch_over_ours": {p: s[f"torch_{p}"] / s[f"jax_{p}"] for p in parts},
  })


if __name__ == "__main__":
  main()
