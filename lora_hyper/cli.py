"""The `lora-hyper` command line. Each subcommand is a small function over the library's API.

Results go to stdout (an adapter folder, one answer per line, a JSON report), progress and
errors to stderr, so scripts can rely on both. Exit codes: 0 done, 1 failed (a missing or
invalid file, an adapter made for another base model, ...), 2 bad usage (unknown or missing
options, empty input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_CODES = "exit codes: 0 done, 1 failed (missing or invalid files, wrong base model, ...), 2 bad usage"


class UsageError(Exception):
  """Bad command-line input, found after parsing (empty text, conflicting options): exit code 2."""


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
  loss = f"; final loss {result.metrics['loss']:.4f}" if "loss" in result.metrics else "; no step run"
  _log(f"stopped at step {result.step}" + (" (preempted; rerun the same command to resume)" if result.preempted
                                           else "") + loss)
  if args.out and result.preempted:
    _log(f"the hypernetwork is saved to {args.out} when training ends")
  elif args.out:
    from lora_hyper.hypernetworks import saved

    folder = saved.save_hypernetwork(args.out, result.config, result.variables, base=result.base,
                                     gin_config=gin.operative_config_str(), dtype=args.save_dtype,
                                     task_encoder=result.task_encoder)
    _log(f"saved the trained hypernetwork to {folder} (use it with --hypernetwork {folder})")
    print(folder)
  return EXIT_OK


# ----------------------------------------------------------------------------- adapter workflow


def _read_text(item: str, what: str) -> tuple[str, str]:
  """(name, text) of a file path, or of stdin for '-'."""
  if item == "-":
    name, text = "<stdin>", sys.stdin.read()
  else:
    path = Path(item)
    if not path.is_file():
      raise FileNotFoundError(f"{what} file {item!r} does not exist")
    name, text = path.name, path.read_text()
  if not text.strip():
    raise UsageError(f"{what} {name} is empty")
  return name, text


def _load_base(source: str | None, dtype: str):
  from lora_hyper.model import base_model

  start = time.perf_counter()
  model = base_model.load_base_model(source, dtype=dtype, log=_log)
  _log(f"loaded base model {model.name} in {time.perf_counter() - start:.1f}s")
  return model


def _load_hypernetwork(folder: str, kind: str | None, base):
  """The hypernetwork in `folder`, checked against `kind` (None: either) and `base`."""
  from lora_hyper.hypernetworks import saved

  start = time.perf_counter()
  hyper = saved.load_hypernetwork(folder, base)
  if kind is not None and hyper.kind != kind:
    raise ValueError(f"{folder} holds a {hyper.kind} hypernetwork; this command needs a {kind} one")
  _log(f"loaded {hyper.kind} hypernetwork {folder} in {time.perf_counter() - start:.1f}s")
  return hyper


def _hypernetwork_dir(arg: str | None, kind: str) -> str:
  """--hypernetwork, else the shipped one; checked before the (slow) base model loads."""
  from lora_hyper.hypernetworks import saved

  return arg or str(saved.shipped(kind))


def _cmd_internalize(args: argparse.Namespace) -> int:
  from lora_hyper.adapters import io
  from lora_hyper.hypernetworks import doc_to_lora

  if args.documents.count("-") > 1:
    raise UsageError("'-' (stdin) can be given once")
  named = [_read_text(item, "document") for item in args.documents]
  hyper_dir = _hypernetwork_dir(args.hypernetwork, "doc_to_lora")
  base = _load_base(args.model, args.dtype)
  hyper = _load_hypernetwork(hyper_dir, "doc_to_lora", base)
  # Several documents become one adapter of their concatenation: ask about all of them at once.
  text = "\n\n".join(t for _, t in named)
  start = time.perf_counter()
  adapter = doc_to_lora.internalize(hyper.variables, base.params, text, config=hyper.config, tokenizer=base.tokenizer,
                                    iterative=args.iterative)
  source = io.from_documents([t for _, t in named], [n for n, _ in named], hyper.describe())
  path = io.save_adapter(args.out, adapter, base=io.base_identity(base), source=source)
  _log(f"internalized {len(named)} document(s) in {adapter.rank // hyper.config.rank - 1} chunk(s) of "
       f"{hyper.config.chunk_len} tokens (rank {adapter.rank}) in {time.perf_counter() - start:.1f}s; wrote {path}")
  print(args.out)
  return EXIT_OK


def _cmd_adapt(args: argparse.Namespace) -> int:
  from lora_hyper.adapters import io
  from lora_hyper.hypernetworks import text_to_lora

  description = sys.stdin.read() if args.task == "-" else args.task
  if not description.strip():
    raise UsageError("the task description is empty")
  hyper_dir = _hypernetwork_dir(args.hypernetwork, "text_to_lora")
  base = _load_base(args.model, args.dtype)
  hyper = _load_hypernetwork(hyper_dir, "text_to_lora", base)
  start = time.perf_counter()
  adapter = text_to_lora.generate_adapter(hyper.variables, description.strip(), config=hyper.config,
                                          encoder=hyper.task_encoder(base))
  path = io.save_adapter(args.out, adapter, base=io.base_identity(base),
                         source=io.from_task(description.strip(), hyper.describe()))
  _log(f"generated the adapter in {time.perf_counter() - start:.1f}s; wrote {path}")
  print(args.out)
  return EXIT_OK


def _prompt(question: str, task_format: bool, context: str | None) -> str:
  """The QA prompt of the data pipeline, or the task format for Text-to-LoRA adapters."""
  from lora_hyper.hypernetworks import kinds

  prompt = (kinds.TEXT_TO_LORA if task_format else kinds.DOC_TO_LORA).prompt(question)
  return prompt if context is None else f"{context}\n\n{prompt}"


def _cmd_ask(args: argparse.Namespace) -> int:
  if args.adapter is None and not args.no_adapter:
    raise UsageError("give --adapter DIR (made by internalize, adapt or a PEFT export), or --no-adapter")
  if bool(args.questions) == args.interactive:
    raise UsageError("give QUESTION(s) ('-' reads one from stdin) or --interactive, not both")
  questions = [sys.stdin.read().strip() if q == "-" else q.strip() for q in args.questions]
  if any(not q for q in questions):
    raise UsageError("empty question")
  context = _read_text(args.context, "context")[1] if args.context else None

  from lora_hyper import qa
  from lora_hyper.adapters import io
  from lora_hyper.model import decoding

  sampling = decoding.SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p)
  base = _load_base(args.model, args.dtype)
  adapter, task_format = None, False
  if args.adapter is not None:
    adapter, info = io.load_adapter(args.adapter, base)
    task_format = info.source.get("method") == "text_to_lora"
    _log(f"loaded adapter {args.adapter} (rank {info.rank} on {', '.join(info.modules)})"
         + ("; asking in the task format 'Input: ...\\nOutput:'" if task_format else ""))
  if args.no_adapter:
    adapter = None

  def answer(batch: list[str]) -> list[str]:
    return qa.complete(base, [_prompt(q, task_format, context) for q in batch], adapter=adapter,
                       sampling=sampling, seed=args.seed)

  if not args.interactive:
    start = time.perf_counter()
    answers = answer(questions)
    _log(f"answered {len(questions)} question(s) in {time.perf_counter() - start:.1f}s")
    for text in answers:
      print(text, flush=True)
    return EXIT_OK
  _log("ask one question per line; end of input (Ctrl-D), 'exit' or 'quit' ends the chat")
  tty = sys.stdin.isatty()
  while True:
    if tty:
      print("> ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line or line.strip() in ("exit", "quit"):
      return EXIT_OK
    if line.strip():
      print(answer([line.strip()])[0], flush=True)


def _cmd_export_peft(args: argparse.Namespace) -> int:
  from lora_hyper.adapters import io, peft

  adapter, info = io.load_adapter(args.adapter)
  # The embedded default is named "<HF id> (<variant>)"; PEFT wants the HF id.
  name = args.base_model_name_or_path or info.base.name.split(" (")[0]
  folder = peft.export_peft(adapter, args.out, base_model_name_or_path=name)
  _log(f"wrote a PEFT adapter (r={info.rank}, lora_alpha={info.scaling * info.rank:g}, "
       f"{', '.join(info.modules)}) for {name} to {folder}")
  print(folder)
  return EXIT_OK


# ----------------------------------------------------------------------------- eval


def _cmd_eval(args: argparse.Namespace) -> int:
  from lora_hyper import evaluation, files
  from lora_hyper.model import decoding

  if args.limit < 1 or args.batch_size < 1:
    raise UsageError("--limit and --batch-size must be at least 1")
  hyper_dir = _hypernetwork_dir(args.hypernetwork, "doc_to_lora")
  base = _load_base(args.model, args.dtype)
  hyper = _load_hypernetwork(hyper_dir, None, base)
  records = evaluation.read_records(args.data, hyper.kind, args.limit)
  _log(f"evaluating {len(records)} record(s) with {hyper_dir}")
  result = evaluation.evaluate(hyper, base, records, batch_size=args.batch_size,
                               sampling=decoding.SamplingConfig(max_new_tokens=args.max_new_tokens))
  _log("  ".join(f"{c}: ROUGE-L {m['rouge_l']:.3f}, contains {m['contains']:.3f}"
                 for c, m in result.report["scores"].items()))
  if args.answers:
    files.write_json_lines(args.answers, result.answers)
    _log(f"wrote {len(result.answers)} answers to {args.answers}")
  print(json.dumps({**result.report, "data": args.data}, indent=1))
  return EXIT_OK


# ----------------------------------------------------------------------------- parser


def _add_hypernetwork_arg(parser: argparse.ArgumentParser, kind: str) -> None:
  parser.add_argument("--hypernetwork", metavar="DIR", default=None,
                      help=f"a saved {kind} hypernetwork folder (lora-hyper train --out DIR writes one); "
                           "default: the one shipped with lora-hyper, if any")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="lora-hyper",
      description="Turn documents and task descriptions into LoRA adapters for Gemma (JAX/Flax).",
      epilog="Typical use: lora-hyper internalize notes.txt --out notes_adapter; "
             "lora-hyper ask --adapter notes_adapter \"What does it say about X?\". " + EXIT_CODES + ".")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=description, epilog=EXIT_CODES + ".")

  gen = add("generate", "continue one or more prompts with the base model",
            "Continue prompts with the base model (greedy unless --temperature > 0).")
  gen.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompt text; '-' reads it from stdin")
  _add_model_args(gen)
  _add_sampling_args(gen)
  gen.set_defaults(run=_cmd_generate)

  intern = add("internalize", "turn documents into an adapter (Doc-to-LoRA)",
               "Internalize documents into a LoRA adapter with a Doc-to-LoRA hypernetwork, in one forward "
               "pass. Several documents become one adapter of all of them. Prints the adapter folder.")
  intern.add_argument("documents", nargs="+", metavar="DOC", help="a text file; '-' reads one from stdin")
  intern.add_argument("--out", required=True, metavar="DIR", help="folder to write adapter.safetensors into")
  _add_hypernetwork_arg(intern, "doc_to_lora")
  intern.add_argument("--iterative", action="store_true",
                      help="encode one base layer at a time: less memory, same adapter, slower")
  _add_model_args(intern)
  intern.set_defaults(run=_cmd_internalize)

  adapt = add("adapt", "turn a task description into an adapter (Text-to-LoRA)",
              "Generate a LoRA adapter for a task from its description with a Text-to-LoRA hypernetwork. "
              "Prints the adapter folder.")
  adapt.add_argument("--task", required=True, metavar="DESCRIPTION",
                     help="what the task is, in words; '-' reads it from stdin")
  adapt.add_argument("--out", required=True, metavar="DIR", help="folder to write adapter.safetensors into")
  _add_hypernetwork_arg(adapt, "text_to_lora")
  _add_model_args(adapt)
  adapt.set_defaults(run=_cmd_adapt)

  ask = add("ask", "ask the base model questions, with an adapter",
            "Answer questions with the base model and an adapter (no document in the prompt): one answer "
            "per line, each ending at the end of its first line. Prompts are 'Question: ...\\nAnswer:', or "
            "'Input: ...\\nOutput:' for adapters made by `adapt`.")
  ask.add_argument("questions", nargs="*", metavar="QUESTION", help="a question; '-' reads one from stdin")
  ask.add_argument("--adapter", metavar="DIR", default=None,
                   help="an adapter folder from internalize or adapt, or a PEFT adapter folder")
  ask.add_argument("--no-adapter", action="store_true", help="answer with the bare base model, for comparison")
  ask.add_argument("--context", metavar="FILE", default=None,
                   help="put this document in the prompt too (the in-context reference an adapter is "
                        "measured against)")
  ask.add_argument("-i", "--interactive", action="store_true",
                   help="chat: read one question per line from stdin until EOF, 'exit' or 'quit'")
  _add_model_args(ask)
  _add_sampling_args(ask)
  ask.set_defaults(run=_cmd_ask, max_new_tokens=48)

  export = add("export-peft", "write an adapter in the PEFT layout",
               "Export an adapter to the standard PEFT layout (adapter_config.json + adapter_model.safetensors) "
               "for transformers' Gemma2ForCausalLM / Gemma3ForCausalLM: peft.PeftModel.from_pretrained(model, "
               "DIR). Prints the folder.")
  export.add_argument("--adapter", required=True, metavar="DIR", help="an adapter folder from internalize or adapt")
  export.add_argument("--out", required=True, metavar="DIR", help="folder to write the PEFT files into")
  export.add_argument("--base-model-name-or-path", default=None, metavar="NAME",
                      help="base_model_name_or_path for adapter_config.json (default: the adapter's base model)")
  export.set_defaults(run=_cmd_export_peft)

  tr = add("train", "meta-train a hypernetwork from gin configs (resumes from its workdir)",
           "Meta-train Doc-to-LoRA or Text-to-LoRA. Every hyperparameter is a gin binding of lora_hyper.train; "
           "see gin_configs/. Rerunning the same command resumes from the last checkpoint in the workdir.")
  tr.add_argument("--gin_file", action="append", required=True, metavar="FILE",
                  help="gin config file (repeatable; later files override earlier ones)")
  tr.add_argument("--gin_param", action="append", default=[], metavar="BINDING",
                  help="one gin binding, e.g. \"lora_hyper.train.steps = 100\" (repeatable)")
  tr.add_argument("--out", default=None, metavar="DIR",
                  help="when training finishes, save the hypernetwork here for --hypernetwork DIR")
  tr.add_argument("--save-dtype", default="float32", choices=("float32", "bfloat16"),
                  help="dtype of the params saved with --out (bfloat16: half the size; default float32)")
  tr.set_defaults(run=_cmd_train)

  ev = add("eval", "score a hypernetwork's adapters on held-out data",
           "Generate an adapter per document (or task description), answer its questions (or inputs) with "
           "it, and score the answers against the references (ROUGE-L F1 and whether the answer contains "
           "the reference), beside the bare base model and, for documents, the base model with the document "
           "in its prompt. Prints a JSON report.")
  ev.add_argument("--hypernetwork", metavar="DIR", default=None,
                  help="a saved hypernetwork folder of either kind (default: the shipped Doc-to-LoRA one, if any)")
  ev.add_argument("--data", default="builtin", metavar="SOURCE",
                  help="'builtin' (held-out fictional documents, or held-out tasks with held-out descriptions) "
                       "or a JSONL file of {document, query, answer} / {description, input, output} records")
  ev.add_argument("--limit", type=int, default=60, help="records to evaluate at most (default: 60)")
  ev.add_argument("--batch-size", type=int, default=8,
                  help="documents or descriptions turned into adapters per batch (default: 8)")
  ev.add_argument("--max-new-tokens", type=int, default=32, help="answer tokens at most (default: 32)")
  ev.add_argument("--answers", metavar="FILE", default=None,
                  help="also write every answer, beside its reference and scores, to FILE (JSON Lines)")
  _add_model_args(ev)
  ev.set_defaults(run=_cmd_eval)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.run(args)
  except UsageError as e:
    _log(f"error: {e}")
    return EXIT_USAGE
  except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
    _log(f"error: {e}")
    return EXIT_ERROR


if __name__ == "__main__":
  sys.exit(main())
