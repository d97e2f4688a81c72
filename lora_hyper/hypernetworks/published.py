"""Published hypernetwork checkpoints <-> lora-hyper's saved folders.

  import_sakana_d2l("checkpoint-80000/pytorch_model.bin", base, "d2l_gemma2")  # then --hypernetwork d2l_gemma2
  export_sakana_d2l("d2l_gemma2", "served/pytorch_model.bin")  # for their ModulatedPretrainedModel

The format mapping is `doc_to_lora.sakana`; this module adds the base model and the folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from lora_hyper.adapters import io
from lora_hyper.hypernetworks import saved
from lora_hyper.hypernetworks.doc_to_lora import sakana
from lora_hyper.model.base_model import BaseModel
from lora_hyper.model.tokenizer import MissingTokenizer

Affixes = sakana.Affixes
SAKANA_CHECKPOINT = "pytorch_model.bin"  # the file name their trainer writes


def gemma_chat_affixes(base: BaseModel) -> Affixes:
  """The chunk template of Sakana's pipeline for a Gemma base, from its own tokenizer:
  `<bos><start_of_turn>user\\n\\n\\n` (an empty system turn) and `<end_of_turn>\\n<start_of_turn>model\\n`."""
  tokenizer = base.tokenizer
  prefix = (tokenizer.bos_id, *tokenizer.encode("<start_of_turn>user\n\n\n", add_bos=False))
  return prefix, tuple(tokenizer.encode("<end_of_turn>\n<start_of_turn>model\n", add_bos=False))


def _affixes(checkpoint_base: str, chat_template: str | None, base: BaseModel) -> Affixes | None:
  """The chunk template: the one named, else the checkpoint's base model's, else the base's tokenizer's."""
  if chat_template is not None:
    if chat_template not in sakana.CHAT_AFFIXES:
      raise ValueError(f"no chat template known for {chat_template!r}; known: {sorted(sakana.CHAT_AFFIXES)}")
    return sakana.CHAT_AFFIXES[chat_template]
  if checkpoint_base in sakana.CHAT_AFFIXES or isinstance(base.tokenizer, MissingTokenizer):
    return None  # the table's, or an error naming the options
  return gemma_chat_affixes(base)


def import_sakana_d2l(checkpoint: str | os.PathLike, base: BaseModel, out: str | os.PathLike, *,
                      dtype: str = "float32", chat_template: str | None = None) -> Path:
  """Converts their `pytorch_model.bin` (or a folder holding it) for `base` into a saved
  hypernetwork folder that `internalize`, `ask`, `eval` and `load_hypernetwork` read.
  `chat_template` names the base model whose chunk template to use (default: the checkpoint's)."""
  entries = sakana.read_checkpoint(checkpoint)
  affixes = _affixes(str(entries["base_model_name_or_path"]), chat_template, base)
  config, variables = sakana.convert(entries, base.config, affixes=affixes, source=os.fspath(checkpoint))
  del entries
  return saved.save_hypernetwork(out, config, variables, base=io.base_identity(base), dtype=dtype)


def export_sakana_d2l(hypernetwork: str | os.PathLike, out: str | os.PathLike, *,
                      base_model_name_or_path: str | None = None) -> Path:
  """Writes a saved Doc-to-LoRA hypernetwork of the published architecture as their
  `pytorch_model.bin` (`out`: the file, or a folder for it). Their loader fetches the base model by
  `base_model_name_or_path` (default: the name the folder records)."""
  hyper = saved.load_hypernetwork(hypernetwork)
  if hyper.kind != "doc_to_lora":
    raise ValueError(f"{os.fspath(hypernetwork)!r} is a {hyper.kind} hypernetwork; only Doc-to-LoRA exports to "
                     "Sakana's format")
  name = base_model_name_or_path or hyper.base.name.split(" (")[0]
  return sakana.write_checkpoint(out, hyper.config, hyper.variables, base_name=name)
