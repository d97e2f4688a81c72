"""The commands: each takes the parsed options, calls the library, prints results (stdout) and progress (stderr)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from lora_hyper.cli._common import (
    EXIT_OK,
    EXIT_PREEMPTED,
    UsageError,
    check_output,
    hypernetwork_dir,
    load_base,
    load_hypernetwork,
    log,
    read_text,
)


def cmd_generate(args: argparse.Namespace) -> int:
  from lora_hyper.model import base_model, decoding

  prompts = [sys.stdin.read() if p == "-" else p for p in args.prompts]
  if any(not p.strip() for p in prompts):
    raise UsageError("empty prompt")
  sampling = decoding.SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p)
  start = time.perf_counter()
  model = base_model.load_base_model(args.model, dtype=args.dtype, log=log)
  log(f"loaded {model.name} in {time.perf_counter() - start:.1f}s")
  start = time.perf_counter()
  texts = decoding.generate_text(model.params, model.config, model.tokenizer, prompts, sampling=sampling,
                                 seed=args.seed)
  log(f"generated {len(texts)} continuation(s) in {time.perf_counter() - start:.1f}s")
  for prompt, text in zip(prompts, texts):
    print(prompt + text if len(prompts) == 1 else f"--- {prompt!r}\n{prompt}{text}")
  return EXIT_OK


def _parse_gin(args: argparse.Namespace, bindings: list[str]) -> None:
  """Reads --gin_file / --gin_param (and `bindings`) into gin; a bad configuration is a usage error."""
  import gin

  from lora_hyper import configurables  # noqa: F401 pylint: disable=unused-import  (registers gin names)

  missing = [f for f in args.gin_file if not os.path.isfile(f)]
  if missing:
    raise UsageError(f"gin file(s) not found: {', '.join(missing)}")
  for folder in dict.fromkeys(os.path.dirname(os.path.abspath(f)) for f in args.gin_file):
    gin.add_config_file_search_path(folder)  # `include 'x.gin'` resolves beside the including file
  try:
    gin.parse_config_files_and_bindings(args.gin_file, [*args.gin_param, *bindings], finalize_config=True)
  except (ValueError, KeyError, IOError, SyntaxError) as e:  # unknown, misspelt or malformed bindings
    raise UsageError(f"in the gin configuration: {e}") from None


def _binds(name: str) -> bool:
  import gin

  try:
    gin.query_parameter(name)
  except ValueError:  # not bound
    return False
  return True


def _train_study(args: argparse.Namespace) -> int:
  """`train --gin_file F` where F binds lora_hyper.train_study.stages: every stage, in order."""
  from lora_hyper.training import stages

  if args.out is not None or args.save_dtype != "float32":
    raise UsageError("a study saves each stage to ROOT/STAGE/hypernetwork: instead of --out / --save-dtype, bind "
                     "lora_hyper.train_study.root / save_dtype")
  if not _binds("lora_hyper.train_study.root"):
    raise UsageError("the gin configuration binds no lora_hyper.train_study.root (the study's folder), e.g. "
                     "--gin_param \"lora_hyper.train_study.root = 'runs/study'\"")
  try:
    result = stages.train_study()
  except stages.StudyError as e:
    raise UsageError(str(e)) from None
  if result.preempted:
    log(f"stage {result.preempted} was preempted; rerun the same command to resume it")
    return EXIT_PREEMPTED
  last = list(result.outputs.values())[-1] if not result.trained else result.outputs[result.trained[-1]]
  log(f"trained {', '.join(result.trained) or 'no stage'}" +
      (f" (already saved: {', '.join(result.skipped)})" if result.skipped else "") +
      (f" (left out by lora_hyper.train_study.only: {', '.join(result.left_out)})" if result.left_out else "") +
      f"; the last stage is {last}")
  print(last)
  return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
  import gin

  from lora_hyper.training import distributed, trainer

  if args.out is not None:  # checked first, before the configuration is read
    from lora_hyper.hypernetworks import saved

    check_output(args.out, {saved.MANIFEST, saved.VARIABLES, saved.GIN}, args.overwrite)
  _parse_gin(args, ["lora_hyper.train.resume_from_previous = True"] if args.resume_from_previous else [])
  # Before gin builds train's arguments (data sources may touch JAX): on a pod, joining the run must
  # come before anything initialises a JAX backend.
  distributed.maybe_initialize()
  if _binds("lora_hyper.train_study.stages"):
    return _train_study(args)
  result = trainer.train()
  loss = f"; final loss {result.metrics['loss']:.4g}" if "loss" in result.metrics else "; no step run"
  log(f"stopped at step {result.step}" + (" (preempted; rerun the same command to resume)" if result.preempted
                                          else "") + loss)
  if result.preempted:
    if args.out:
      log(f"the hypernetwork is saved to {args.out} when training ends")
    return EXIT_PREEMPTED
  if args.out and not distributed.is_main_process():
    log(f"process 0 saves the hypernetwork to {args.out}")
  elif args.out:
    from lora_hyper.hypernetworks import saved

    folder = saved.save_hypernetwork(args.out, result.config, result.variables, base=result.base,
                                     gin_config=gin.operative_config_str(), dtype=args.save_dtype,
                                     task_encoder=result.task_encoder)
    log(f"saved the trained hypernetwork to {folder} (use it with --hypernetwork {folder})")
    print(folder)
  return EXIT_OK


def cmd_prepare_data(args: argparse.Namespace) -> int:
  from lora_hyper.data import prepare
  from lora_hyper.training import distributed

  _parse_gin(args, [])
  distributed.maybe_initialize()  # before gin builds the contexts (a source may touch JAX)
  result = prepare.prepare_data()
  if result.report is not None:
    print(result.folder)
  return EXIT_OK


def cmd_internalize(args: argparse.Namespace) -> int:
  from lora_hyper.adapters import io
  from lora_hyper.hypernetworks import doc_to_lora

  if args.documents.count("-") > 1:
    raise UsageError("'-' (stdin) can be given once")
  check_output(args.out, {io.ADAPTER_FILE}, args.overwrite)
  named = [read_text(item, "document") for item in args.documents]
  hyper_dir = hypernetwork_dir(args.hypernetwork, "doc_to_lora")
  base = load_base(args.model, args.dtype)
  hyper = load_hypernetwork(hyper_dir, "doc_to_lora", base)
  # Several documents become one adapter of them all (each chunked on its own, the chunks' rank blocks
  # side by side): ask about any of them at once.
  start = time.perf_counter()
  adapter = doc_to_lora.internalize(hyper.variables, base.params, [t for _, t in named], config=hyper.config,
                                    tokenizer=base.tokenizer, iterative=args.iterative, stack=True)
  source = io.from_documents([t for _, t in named], [n for n, _ in named], hyper.describe())
  path = io.save_adapter(args.out, adapter, base=io.base_identity(base), source=source)
  log(f"internalized {len(named)} document(s) in {adapter.rank // hyper.config.rank - 1} chunk(s) of "
       f"{hyper.config.chunk_len} tokens (rank {adapter.rank}) in {time.perf_counter() - start:.1f}s; wrote {path}")
  print(args.out)
  return EXIT_OK


def cmd_adapt(args: argparse.Namespace) -> int:
  from lora_hyper.adapters import io
  from lora_hyper.hypernetworks import text_to_lora

  description = sys.stdin.read() if args.task == "-" else args.task
  if not description.strip():
    raise UsageError("the task description is empty")
  check_output(args.out, {io.ADAPTER_FILE}, args.overwrite)
  hyper_dir = hypernetwork_dir(args.hypernetwork, "text_to_lora")
  base = load_base(args.model, args.dtype)
  hyper = load_hypernetwork(hyper_dir, "text_to_lora", base)
  start = time.perf_counter()
  adapter = text_to_lora.generate_adapter(hyper.variables, description.strip(), config=hyper.config,
                                          encoder=hyper.task_encoder(base))
  path = io.save_adapter(args.out, adapter, base=io.base_identity(base),
                         source=io.from_task(description.strip(), hyper.describe()))
  log(f"generated the adapter in {time.perf_counter() - start:.1f}s; wrote {path}")
  print(args.out)
  return EXIT_OK


def _prompt(question: str, task_format: bool, context: str | None, chat: bool = False) -> str:
  """The QA prompt of the data pipeline, the task format for Text-to-LoRA adapters, or the chat turn
  for adapters of a published (chat-trained) Doc-to-LoRA."""
  from lora_hyper import prompts
  from lora_hyper.hypernetworks import kinds

  if chat:
    return prompts.chat_prompt(question) if context is None else prompts.chat_context_prompt(context, question)
  prompt = (kinds.TEXT_TO_LORA if task_format else kinds.DOC_TO_LORA).prompt(question)
  return prompt if context is None else f"{context}\n\n{prompt}"


def cmd_ask(args: argparse.Namespace) -> int:
  if args.adapter is None and not args.no_adapter:
    raise UsageError("give --adapter DIR (made by internalize, adapt or a PEFT export), or --no-adapter")
  if bool(args.questions) == args.interactive:
    raise UsageError("give QUESTION(s) ('-' reads one from stdin) or --interactive, not both")
  questions = [sys.stdin.read().strip() if q == "-" else q.strip() for q in args.questions]
  if any(not q for q in questions):
    raise UsageError("empty question")
  context = read_text(args.context, "context")[1] if args.context else None

  from lora_hyper import qa
  from lora_hyper.adapters import io
  from lora_hyper.model import decoding

  sampling = decoding.SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p)
  base = load_base(args.model, args.dtype)
  adapter, task_format, chat = None, False, False
  if args.adapter is not None:
    adapter, info = io.load_adapter(args.adapter, base)
    task_format = info.source.get("method") == "text_to_lora"
    chat = info.source.get("hypernetwork", {}).get("prompt") == "chat"
    log(f"loaded adapter {args.adapter} (rank {info.rank} on {', '.join(info.modules)})"
         + ("; asking in the task format 'Input: ...\\nOutput:'" if task_format else ""))
  if args.no_adapter:
    adapter = None

  def answer(batch: list[str]) -> list[str]:
    return qa.complete(base, [_prompt(q, task_format, context, chat) for q in batch], adapter=adapter,
                       sampling=sampling, seed=args.seed)

  if not args.interactive:
    start = time.perf_counter()
    answers = answer(questions)
    log(f"answered {len(questions)} question(s) in {time.perf_counter() - start:.1f}s")
    for text in answers:
      print(text, flush=True)
    return EXIT_OK
  log("ask one question per line; end of input (Ctrl-D), 'exit' or 'quit' ends the chat")
  tty = sys.stdin.isatty()
  while True:
    if tty:
      print("> ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line or line.strip() in ("exit", "quit"):
      return EXIT_OK
    if line.strip():
      print(answer([line.strip()])[0], flush=True)


def cmd_export_peft(args: argparse.Namespace) -> int:
  from lora_hyper.adapters import io, peft

  check_output(args.out, {peft.CONFIG_FILE, peft.WEIGHTS_FILE}, args.overwrite)
  adapter, info = io.load_adapter(args.adapter)
  # The embedded default is named "<HF id> (<variant>)"; PEFT wants the HF id.
  name = args.base_model_name_or_path or info.base.name.split(" (")[0]
  folder = peft.export_peft(adapter, args.out, base_model_name_or_path=name)
  log(f"wrote a PEFT adapter (r={info.rank}, lora_alpha={info.scaling * info.rank:g}, "
       f"{', '.join(info.modules)}) for {name} to {folder}")
  print(folder)
  return EXIT_OK


def cmd_import_d2l(args: argparse.Namespace) -> int:
  from lora_hyper.hypernetworks import published, saved

  check_output(args.out, {saved.MANIFEST, saved.VARIABLES, saved.GIN}, args.overwrite)
  # The base model gives the shapes to check and its identity (hashed in bfloat16 whatever the
  # dtype): loading it in bfloat16 halves the memory this takes.
  base = load_base(args.model, "bfloat16")
  start = time.perf_counter()
  folder = published.import_sakana_d2l(args.checkpoint, base, args.out, dtype=args.save_dtype,
                                       chat_template=args.chat_template)
  log(f"converted {args.checkpoint} in {time.perf_counter() - start:.1f}s; use it with --hypernetwork {folder} "
      f"--model {args.model}")
  print(folder)
  return EXIT_OK


def cmd_export_d2l(args: argparse.Namespace) -> int:
  from lora_hyper.hypernetworks import published

  check_output(args.out, {published.SAKANA_CHECKPOINT}, args.overwrite)
  path = published.export_sakana_d2l(args.hypernetwork, Path(args.out) / published.SAKANA_CHECKPOINT,
                                     base_model_name_or_path=args.base_model_name_or_path)
  log(f"wrote {path}: torch.load(..., weights_only=False) and ModulatedPretrainedModel.from_state_dict read it")
  print(path)
  return EXIT_OK


# ----------------------------------------------------------------------------- eval


# The argparse options of `eval` without --gin_file, with their defaults: with gin they are bindings.
_EVAL_OPTIONS = {"hypernetwork": ("--hypernetwork", None, "lora_hyper.EvalConfig.hypernetwork"),
                 "data": ("--data", "builtin", "lora_hyper.EvalConfig.data"),
                 "limit": ("--limit", 60, "the data source's limit"),
                 "batch_size": ("--batch-size", 8, "lora_hyper.EvalConfig.batch_size"),
                 "max_new_tokens": ("--max-new-tokens", 32, "lora_hyper.EvalConfig.max_new_tokens"),
                 "answers": ("--answers", None, "lora_hyper.eval_sweep.out (answers.jsonl)"),
                 "model": ("--model", None, "lora_hyper.EvalConfig.base_model"),
                 "dtype": ("--dtype", "float32", "lora_hyper.EvalConfig.dtype")}


def cmd_eval(args: argparse.Namespace) -> int:
  if args.gin_file or args.gin_param:
    return _eval_from_gin(args)
  from lora_hyper import evaluation, files
  from lora_hyper.model import decoding

  hyper_dir = hypernetwork_dir(args.hypernetwork, "doc_to_lora")
  base = load_base(args.model, args.dtype)
  hyper = load_hypernetwork(hyper_dir, None, base)
  records = evaluation.read_records(args.data, hyper.kind, args.limit)
  log(f"evaluating {len(records)} record(s) with {hyper_dir}")
  result = evaluation.evaluate(hyper, base, records, batch_size=args.batch_size,
                               sampling=decoding.SamplingConfig(max_new_tokens=args.max_new_tokens))
  log("  ".join(f"{c}: ROUGE-L {m['rouge_l']:.3f}, contains {m['contains']:.3f}"
                 for c, m in result.report["scores"].items()))
  if args.answers:
    files.write_json_lines(args.answers, result.answers)
    log(f"wrote {len(result.answers)} answers to {args.answers}")
  print(json.dumps({**result.report, "data": args.data}, indent=1))
  return EXIT_OK


def _eval_from_gin(args: argparse.Namespace) -> int:
  """`eval --gin_file F`: lora_hyper.eval_sweep, every setting a binding."""
  import gin

  given = [f"{flag} (bind {binding})" for key, (flag, default, binding) in _EVAL_OPTIONS.items()
           if getattr(args, key) != default]
  if given:
    raise UsageError(f"with --gin_file every setting is a gin binding; instead of {', '.join(given)}")
  _parse_gin(args, [])
  from lora_hyper.evaluation import study
  from lora_hyper.training import distributed

  try:
    gin.query_parameter("lora_hyper.eval_sweep.out")
  except ValueError:
    raise UsageError("the gin configuration binds no lora_hyper.eval_sweep.out (the results folder)") from None
  distributed.maybe_initialize()  # a sweep on a pod: every host runs this command and takes its share of points
  try:
    summary = study.eval_sweep()
  except study.ConfigError as e:
    raise UsageError(str(e)) from None
  if summary is not None:
    log(f"wrote {', '.join(summary['files'])}")
    print(summary["out"])
  return EXIT_OK
