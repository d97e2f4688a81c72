"""One LoRA training step, ours (jitted JAX) against transformers + PEFT (PyTorch eager).

The same Gemma 3 270M (transformers loads the same GGUF), float32, same CPU, same inputs: a batch
of B sequences of T tokens whose last A tokens are the answer; a rank-8 LoRA on down_proj of
every layer (scaling 2 = alpha 16 / r 8, A Kaiming-uniform, B zero); one Adam step (lr 1e-4) on
the answer tokens' next-token cross-entropy, base frozen. What each side computes:

  jax_answer_logits    ours as used in training (`context_distillation.make_step`, objective
                       "ce"): decoder over B x T, output head only at the B x A answer positions.
  jax_all_logits       the same step with the output head at every position (B x T x 262,144
                       logits), loss still on the answers only: the framework, not the trick.
  torch_all_logits     the standard reference: PEFT model(input_ids, labels) with -100 outside the
                       answers; transformers computes all B x T logits and the shifted loss.
  torch_answer_logits  PyTorch given the same trick: decoder hidden states, lm_head on the answer
                       positions only, cross-entropy.

Like for like: on the PyTorch side only the LoRA factors require gradients (PEFT freezes every
base param, including the embedding that the output head shares; checked below), so neither side
computes a base weight's gradient; PyTorch runs as many intra-op threads as XLA (the machine's
cores) and builds no KV cache (`use_cache=False`, as training does). Both start from B = 0, so
the first loss of every contender is the bare base model's (recorded: `first_loss`, a check that
both compute the same thing; torch_answer_logits shares its LoRA with torch_all_logits, so its
first step comes one small update later). Contenders alternate round by round, after three
untimed warm-up steps each. The goal compares jax_answer_logits with torch_all_logits (the
reference as people run it); the like-for-like ratios are reported too.

Run: python -m benchmarks.train_step [--shapes 8x64x16 4x256x32] [--rounds 5] [--torch_threads N]
Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from lora_hyper.baselines import context_distillation as cd

RANK, SCALING, LR = 8, 2.0, 1e-4


def log(*args):
  print(*args, file=sys.stderr, flush=True)


def torch_model(cfg):
  import peft
  import torch
  import transformers

  from lora_hyper.model import weights

  path, _ = weights.embedded_gguf_path()
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
  model = peft.get_peft_model(hf, peft.LoraConfig(r=RANK, lora_alpha=RANK * SCALING, lora_dropout=0.0,
                                                  target_modules=["down_proj"]))
  model.train()  # no dropout in Gemma 3 or in this LoRA: train and eval modes compute the same
  inner = model.base_model.model
  embedding, head = inner.model.embed_tokens.weight, inner.lm_head.weight
  trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
  if (head is not embedding or embedding.requires_grad or not all("lora_" in n for n in trainable)
      or sum(p.numel() for p in trainable.values()) != cfg.num_layers * RANK * (cfg.mlp_dim + cfg.embed_dim)):
    raise AssertionError(f"PyTorch side is not a frozen, tied base with a rank-{RANK} down_proj LoRA: "
                         f"{sorted(trainable)[:4]}...")
  return model, torch.optim.Adam(list(trainable.values()), lr=LR)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--shapes", nargs="+", default=["8x64x16", "4x256x32"], help="BATCHxTOKENSxANSWER")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--torch_threads", type=int, default=0, help="0: this machine's cores")
  args = parser.parse_args()

  import torch
  import torch.nn.functional as F

  threads = common.torch_threads(args.torch_threads)

  model = common.base()
  cfg, params = model.config, model.params
  hf, opt = torch_model(cfg)
  decoder, lm_head = hf.base_model.model.model, hf.base_model.model.lm_head
  tx = optax.adam(LR)
  step = cd.make_step(cfg, SCALING, "ce", tx)

  rows = []
  for shape in args.shapes:
    b, t, a = map(int, shape.split("x"))
    ids = np.random.default_rng(0).integers(1000, 30000, (b, t))
    ids[:, 0] = cfg.bos_id
    answer_at = np.tile(np.arange(t - a - 1, t - 1), (b, 1))  # positions predicting the last A tokens
    answer = {"tokens": ids.astype(np.int32), "mask": np.ones((b, t), bool), "logits_at": answer_at.astype(np.int32),
              "loss_mask": np.ones((b, a), bool), "targets": ids[:, t - a:].astype(np.int32)}
    targets_all = np.concatenate([ids[:, 1:], np.zeros((b, 1), ids.dtype)], axis=1)
    loss_all = np.zeros((b, t), bool)
    loss_all[:, t - a - 1:t - 1] = True
    every = {**answer, "logits_at": np.tile(np.arange(t, dtype=np.int32), (b, 1)), "loss_mask": loss_all,
             "targets": targets_all.astype(np.int32)}
    answer, every = ({k: jnp.asarray(v) for k, v in d.items()} for d in (answer, every))
    jax_state = {}
    for name in ("answer", "all"):
      w = dict(cd.init_adapter(jax.random.key(0), cfg, ("down",), RANK, scaling=SCALING).weights)
      jax_state[name] = [w, tx.init(w)]
    # The matmul work of each step (forward + backward, from its jaxpr): the most the answer-only
    # logits can save; the rest of any ratio is how fast each framework runs the same work.
    gflop = {name: common.matmul_flops(step, *jax_state[name], params, batch) / 1e9
             for name, batch in (("answer", answer), ("all", every))}

    def jax_step(name, batch):
      state = jax_state[name]
      state[0], state[1], loss = step(state[0], state[1], params, batch)
      return loss

    input_ids = torch.tensor(ids)
    labels = torch.full((b, t), -100)
    labels[:, t - a:] = input_ids[:, t - a:]
    rows_t, cols_t = torch.arange(b)[:, None], torch.tensor(answer_at)
    targets_t = input_ids[:, t - a:]

    def torch_step(all_logits: bool):
      opt.zero_grad(set_to_none=True)
      if all_logits:
        loss = hf(input_ids=input_ids, labels=labels, use_cache=False).loss
      else:
        hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
        logits = lm_head(hidden[rows_t, cols_t])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets_t.reshape(-1))
      loss.backward()
      opt.step()
      return loss.detach()

    first_loss = {}

    def recording(name, fn):
      def run():
        loss = fn()
        first_loss.setdefault(name, float(loss))
        return loss
      return run

    # Fresh PyTorch LoRA (B = 0, as on the JAX side) for this shape.
    for module in hf.modules():
      if hasattr(module, "reset_lora_parameters") and "default" in getattr(module, "lora_A", {}):
        module.reset_lora_parameters("default", True)
    opt.state.clear()
    contenders = {"jax_answer_logits": lambda: jax_step("answer", answer),
                  "jax_all_logits": lambda: jax_step("all", every),
                  "torch_all_logits": lambda: torch_step(True),
                  "torch_answer_logits": lambda: torch_step(False)}
    contenders = {name: recording(name, fn) for name, fn in contenders.items()}
    times = common.interleaved(contenders, args.rounds, warmup=3)
    s = {k: v["median_s"] for k, v in times.items()}
    row = {"batch": b, "tokens": t, "answer_tokens": a, "seconds": s, "range": times, "first_loss": first_loss,
           "matmul_gflop": {"answer_logits": gflop["answer"], "all_logits": gflop["all"]},
           "speedup": {"goal_jax_answer_vs_torch_all": s["torch_all_logits"] / s["jax_answer_logits"],
                       "like_for_like_answer": s["torch_answer_logits"] / s["jax_answer_logits"],
                       "like_for_like_all": s["torch_all_logits"] / s["jax_all_logits"]}}
    log(f"{shape}: {s} -> {row['speedup']}")
    rows.append(row)

  common.write_result("train_step", {
      "model": model.name, "dtype": "float32", "lora": {"modules": ["down"], "rank": RANK, "scaling": SCALING},
      "optimizer": f"Adam lr {LR}", "torch_threads": threads,
      "torch_trainable": "LoRA factors only (base frozen, embedding tied to the head and frozen)",
      "torch_attention": hf.base_model.model.config._attn_implementation, "rounds": args.rounds, "rows": rows,
      "goal": "our step >= 1.5x faster than the PyTorch reference (ours computing logits only where the loss needs them)",
      "min_goal_speedup": min(r["speedup"]["goal_jax_answer_vs_torch_all"] for r in rows),
  })


if __name__ == "__main__":
  main()
