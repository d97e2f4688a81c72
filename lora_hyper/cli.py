"""The `lora-hyper` command line. Each subcommand is a small function over the library's API."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _log(message: str) -> None:
  print(f"[lora-hyper] {message}", file=sys.stderr, flush=True)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model", default=None,
                      help="base model: 'gemma3-270m' (the embedded default), a .gguf file, or a local "
                           "Hugging Face folder of a Gemma 2/3 text model (default: gemma3-270m)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="params and compute dtype (default: float32)")


def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (default: 64)")
  parser.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily (default: 0)")
  parser.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens; 0 = off")
  parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 = off")
  parser.add_argument("--seed", type=int, default=0, help="random seed for sampling (default: 0)")


def _cmd_generate(args: argparse.Namespace) -> int:
  from lora_hyper.model import base_model, decoding

  prompts = [sys.stdin.read() if p == "-" else p for p in args.prompts]
  if any(not p.strip() for p in prompts):
    _log("error: empty prompt")
    return EXIT_USAGE
  sampling = decoding.SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p)
  start = time.perf_counter()
  model = base_model.load_base_model(args.model, dtype=args.dtype, log=_log)
  _log(f"loaded {model.name} in {time.perf_counter() - start:.1f}s")
  start = time.perf_counter()
  texts = decoding.generate_text(model.params, model.config, model.tokenizer, prompts, sampling=sampling,
                                 seed=args.seed)
  _log(f"generated {len(texts)} continuation(s) in {time.perf_counter() - start:.1f}s")
  for prompt, text in zip(prompts, texts):
    print(prompt + text if len(prompts) == 1 else f"--- {prompt!r}\n{prompt}{text}")
  return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
  import gin

  from lora_hyper import configurables  # noqa: F401 pylint: disable=unused-import  (registers gin names)
  from lora_hyper.training import trainer

  missing = [f for f in args.gin_file if not os.path.isfile(f)]
  if missing:
    _log(f"error: gin file(s) not found: {', '.join(missing)}")
    return EXIT_USAGE
  for folder in dict.fromkeys(os.path.dirname(os.path.abspath(f)) for f in args.gin_file):
    gin.add_config_file_search_path(folder)  # `include 'x.gin'` resolves beside the including file
  try:
    gin.parse_config_files_and_bindings(args.gin_file, args.gin_param, finalize_config=True)
  except (ValueError, KeyError, IOError) as e:  # unknown or misspelt bindings stop before any compute
    _log(f"error in gin configuration: {e}")
    return EXIT_USAGE
  result = trainer.train()
  _log(f"stopped at step {result.step}" + (" (preempted; rerun the same command to resume)" if result.preempted
                                           else "") + f"; final loss {result.metrics.get('loss', float('nan')):.4f}")
  return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="lora-hyper",
      description="Turn documents and task descriptions into LoRA adapters for Gemma (JAX/Flax).")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  gen = sub.add_parser("generate", help="continue one or more prompts with the base model",
                       description="Continue prompts with the base model (greedy unless --temperature > 0).")
  gen.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompt text; '-' reads it from stdin")
  _add_model_args(gen)
  _add_sampling_args(gen)
  gen.set_defaults(run=_cmd_generate)

  tr = sub.add_parser("train", help="meta-train a hypernetwork from gin configs (resumes from its workdir)",
                      description="Meta-train Doc-to-LoRA or Text-to-LoRA. Every hyperparameter is a gin "
                                  "binding of lora_hyper.train; see gin_configs/. Rerunning the same command "
                                  "resumes from the last checkpoint in the workdir.")
  tr.add_argument("--gin_file", action="append", required=True, metavar="FILE",
                  help="gin config file (repeatable; later files override earlier ones)")
  tr.add_argument("--gin_param", action="append", default=[], metavar="BINDING",
                  help="one gin binding, e.g. \"lora_hyper.train.steps = 100\" (repeatable)")
  tr.set_defaults(run=_cmd_train)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.run(args)
  except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
    _log(f"error: {e}")
    return EXIT_ERROR


if __name__ == "__main__":
  sys.exit(main())
