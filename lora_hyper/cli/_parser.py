"""The argument parser: every option, its type and bounds (bad values exit 2 before any work), its help."""

from __future__ import annotations

import argparse
import json

from lora_hyper import pretrained
from lora_hyper.cli import _commands
from lora_hyper.cli._common import EXIT_CODES, add_out_arg, bounded_number, non_negative_int, positive_int


def _add_model_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model", default=None,
                      help="base model: 'gemma3-270m' (the embedded default), a .gguf file, or a local "
                           "Hugging Face folder of a Gemma 2/3 text model (default: gemma3-270m)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="params and compute dtype (default: float32)")


def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--max-new-tokens", type=positive_int("--max-new-tokens"), default=64,
                      help="tokens to generate at most, >= 1 (default: 64)")
  parser.add_argument("--temperature", type=bounded_number(float, "--temperature", 0.0), default=0.0,
                      help="sampling temperature >= 0; 0 decodes greedily (default: 0)")
  parser.add_argument("--top-k", type=non_negative_int("--top-k"), default=0,
                      help="sample from the k most likely tokens; 0 = off")
  parser.add_argument("--top-p", type=bounded_number(float, "--top-p", 0.0, 1.0, low_open=True), default=1.0,
                      help="nucleus sampling mass in (0, 1]; 1 = off")
  parser.add_argument("--seed", type=int, default=0, help="random seed for sampling (default: 0)")


def _shipped_document_limit() -> str:
  """max_chunks x (chunk_len - 1) of the default shipped Doc-to-LoRA, read from its manifest (no JAX import)."""
  manifest = pretrained.folder("doc_to_lora") / "hypernetwork.json"
  try:
    config = json.loads(manifest.read_text())["config"]
    return f"{config['max_chunks'] * (config['chunk_len'] - 1):,} tokens"
  except (OSError, ValueError, KeyError):
    return "none (no shipped hypernetwork)"


def _add_hypernetwork_arg(parser: argparse.ArgumentParser, kind: str) -> None:
  shipped = pretrained.SHIPPED[kind]
  names = "; ".join(f"'{name}'{' (the default)' if i == 0 else ''}: {use}"
                    for i, (name, (_, use)) in enumerate(shipped.items()))
  parser.add_argument("--hypernetwork", metavar="DIR_OR_NAME", default=None,
                      help=f"a saved {kind} hypernetwork folder (lora-hyper train --out DIR writes one) or the "
                           f"name of a shipped one: {names}")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="lora-hyper",
      description="Turn documents and task descriptions into LoRA adapters for Gemma (JAX/Flax).",
      epilog="Typical use: lora-hyper internalize notes.txt --out notes_adapter; "
             "lora-hyper ask --adapter notes_adapter \"What does it say about X?\". " + EXIT_CODES + ".")
  parser.add_argument("--debug", action="store_true",
                      help="print the traceback of every failure (also LORA_HYPER_DEBUG=1), not just one line")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=description, epilog=EXIT_CODES + ".")

  gen = add("generate", "continue one or more prompts with the base model",
            "Continue prompts with the base model (greedy unless --temperature > 0).")
  gen.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompt text; '-' reads it from stdin")
  _add_model_args(gen)
  _add_sampling_args(gen)
  gen.set_defaults(run=_commands.cmd_generate)

  intern = add("internalize", "turn documents into an adapter (Doc-to-LoRA)",
               "Internalize documents into a LoRA adapter with a Doc-to-LoRA hypernetwork, in one forward "
               "pass. Several documents become one adapter of all of them (each chunked on its own, their chunks' "
               "adapters concatenated along the rank axis). Prints the adapter folder.")
  intern.add_argument("documents", nargs="+", metavar="DOC",
                      help="a UTF-8 text file; '-' reads one from stdin. All of them together may make at most "
                           f"max_chunks chunks of chunk_len - 1 tokens, each document at least one: "
                           f"{_shipped_document_limit()} with the shipped hypernetwork")
  add_out_arg(intern, "adapter.safetensors")
  _add_hypernetwork_arg(intern, "doc_to_lora")
  intern.add_argument("--iterative", action="store_true",
                      help="encode one base layer at a time: less memory, same adapter, slower")
  _add_model_args(intern)
  intern.set_defaults(run=_commands.cmd_internalize)

  adapt = add("adapt", "turn a task description into an adapter (Text-to-LoRA)",
              "Generate a LoRA adapter for a task from its description with a Text-to-LoRA hypernetwork. "
              "Prints the adapter folder.")
  adapt.add_argument("--task", required=True, metavar="DESCRIPTION",
                     help="what the task is, in words, at most 1,024 tokens; '-' reads it from stdin")
  add_out_arg(adapt, "adapter.safetensors")
  _add_hypernetwork_arg(adapt, "text_to_lora")
  _add_model_args(adapt)
  adapt.set_defaults(run=_commands.cmd_adapt)

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
  ask.set_defaults(run=_commands.cmd_ask, max_new_tokens=48)

  export = add("export-peft", "write an adapter in the PEFT layout",
               "Export an adapter to the standard PEFT layout (adapter_config.json + adapter_model.safetensors) "
               "for transformers' Gemma2ForCausalLM / Gemma3ForCausalLM: peft.PeftModel.from_pretrained(model, "
               "DIR). Prints the folder.")
  export.add_argument("--adapter", required=True, metavar="DIR", help="an adapter folder from internalize or adapt")
  add_out_arg(export, "the PEFT files")
  export.add_argument("--base-model-name-or-path", default=None, metavar="NAME",
                      help="base_model_name_or_path for adapter_config.json (default: the adapter's base model)")
  export.set_defaults(run=_commands.cmd_export_peft)

  imp = add("import-d2l", "convert Sakana AI's published Doc-to-LoRA checkpoint",
            "Convert a Doc-to-LoRA checkpoint of Sakana AI's code (their pytorch_model.bin, e.g. "
            "trained_d2l/gemma_demo/checkpoint-80000 of SakanaAI/doc-to-lora) into a hypernetwork folder for "
            "--hypernetwork DIR. Reads it without torch and refuses any pickled code. Prints the folder.")
  imp.add_argument("checkpoint", metavar="CHECKPOINT", help="their pytorch_model.bin, or the folder holding it")
  imp.add_argument("--model", required=True, metavar="BASE",
                   help="the base model it was trained for (e.g. a local gemma-2-2b-it Hugging Face folder); "
                        "use the same --model with internalize and ask")
  add_out_arg(imp, "the hypernetwork")
  imp.add_argument("--save-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="dtype of the saved variables (bfloat16: half the size; default float32)")
  imp.add_argument("--chat-template", default=None, metavar="MODEL_NAME",
                   help="frame document chunks with this model's chat turn, as their pipeline does (default: the "
                        "checkpoint's base model's, else the base tokenizer's Gemma turn)")
  imp.set_defaults(run=_commands.cmd_import_d2l)

  exp = add("export-d2l", "write a Doc-to-LoRA hypernetwork in Sakana AI's checkpoint format",
            "Write a Doc-to-LoRA hypernetwork of the published architecture (one imported by import-d2l, or "
            "fine-tuned from one) as Sakana AI's pytorch_model.bin, for their ModulatedPretrainedModel."
            " Prints the file.")
  exp.add_argument("--hypernetwork", required=True, metavar="DIR", help="a saved Doc-to-LoRA hypernetwork folder")
  add_out_arg(exp, "pytorch_model.bin")
  exp.add_argument("--base-model-name-or-path", default=None, metavar="NAME",
                   help="the base model their loader fetches (default: the one the folder records)")
  exp.set_defaults(run=_commands.cmd_export_d2l)

  tr = add("train", "meta-train a hypernetwork from gin configs (resumes from its workdir)",
           "Meta-train Doc-to-LoRA or Text-to-LoRA. Every hyperparameter is a gin binding of lora_hyper.train; "
           "see gin_configs/. Rerunning the same command resumes from the last checkpoint in the workdir. On "
           "several hosts (a TPU pod, see tpu_launch.sh) every host runs the same command; the workdir (a local path "
           "or gs://bucket/...) must be one folder that every host sees, and only process 0 writes logs and --out.")
  tr.add_argument("--gin_file", action="append", required=True, metavar="FILE",
                  help="gin config file (repeatable; later files override earlier ones)")
  tr.add_argument("--gin_param", action="append", default=[], metavar="BINDING",
                  help="one gin binding, e.g. \"lora_hyper.train.steps = 100\" (repeatable)")
  add_out_arg(tr, "the trained hypernetwork when training finishes (for --hypernetwork DIR); checked before "
              "training starts", required=False)
  tr.add_argument("--resume-from-previous", action="store_true",
                  help="if the latest checkpoint cannot be restored, resume from the newest earlier one that can "
                       "(nothing is deleted)")
  tr.add_argument("--save-dtype", default="float32", choices=("float32", "bfloat16"),
                  help="dtype of the params saved with --out (bfloat16: half the size; default float32)")
  tr.set_defaults(run=_commands.cmd_train)

  prep = add("prepare-data", "write Doc-to-LoRA training data: queries, answers, teacher top-k (resumable)",
             "For every context: queries written by a query model from a template, the base model's greedy answers "
             "with the context in its prompt, and its top-k log-probs at those answers (the teacher), written as "
             "sharded ArrayRecord files that lora_hyper.PreparedQA reads for training. Every setting is a gin "
             "binding of lora_hyper.prepare_data; see gin_configs/prepare_data.gin. Rerunning the same command "
             "resumes: finished shards are kept. On several hosts every host runs the same command and writes its "
             "own shards into one shared folder. Prints the folder.")
  prep.add_argument("--gin_file", action="append", required=True, metavar="FILE",
                    help="gin config file (repeatable; later files override earlier ones)")
  prep.add_argument("--gin_param", action="append", default=[], metavar="BINDING",
                    help="one gin binding, e.g. \"lora_hyper.PrepareConfig.num_queries = 4\" (repeatable)")
  prep.set_defaults(run=_commands.cmd_prepare_data)

  ev = add("eval", "score a hypernetwork's adapters on held-out data",
           "Generate an adapter per document (or task description), answer its questions (or inputs) with "
           "it, and score the answers against the references (ROUGE-L F1 and whether the answer contains "
           "the reference), beside the bare base model and, for documents, the base model with the document "
           "in its prompt. Prints a JSON report.")
  ev.add_argument("--hypernetwork", metavar="DIR_OR_NAME", default=None,
                  help="a saved hypernetwork folder of either kind, or the name of a shipped one (default: the "
                       f"shipped Doc-to-LoRA '{pretrained.default('doc_to_lora')}')")
  ev.add_argument("--data", default="builtin", metavar="SOURCE",
                  help="'builtin' (held-out fictional documents, or held-out tasks with held-out descriptions) "
                       "or a JSONL file of {document, query, answer} / {description, input, output} records")
  ev.add_argument("--limit", type=positive_int("--limit"), default=60, help="records to evaluate at most (default: 60)")
  ev.add_argument("--batch-size", type=positive_int("--batch-size"), default=8,
                  help="documents or descriptions turned into adapters per batch (default: 8)")
  ev.add_argument("--max-new-tokens", type=positive_int("--max-new-tokens"), default=32,
                  help="answer tokens at most (default: 32)")
  ev.add_argument("--answers", metavar="FILE", default=None,
                  help="also write every answer, beside its reference and scores, to FILE (JSON Lines)")
  _add_model_args(ev)
  ev.add_argument("--gin_file", action="append", default=[], metavar="FILE",
                  help="evaluate from gin instead (repeatable): lora_hyper.EvalConfig says what to score and how, "
                       "lora_hyper.eval_sweep where to write it and over which grid of bindings; see "
                       "gin_configs/niah_chunk_sweep.gin. The options above are then bindings. A rerun skips the "
                       "points already written; on several hosts (tpu_launch.sh --eval) each scores its share")
  ev.add_argument("--gin_param", action="append", default=[], metavar="BINDING",
                  help="one gin binding, e.g. \"lora_hyper.EvalConfig.chunk_len = 512\" (repeatable)")
  ev.set_defaults(run=_commands.cmd_eval)
  return parser
