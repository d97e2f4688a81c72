"""Tiny stand-ins for tests: a byte tokenizer and a random tiny base model."""

import dataclasses

import jax
import numpy as np

from lora_hyper.model import base_model, config as config_lib, tokenizer, transformer


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """Bytes mod (vocab - 3), shifted past pad/eos/bos: enough to exercise every pipeline."""

  vocab_size: int = 128
  bos_id: int = 2
  eos_id: int = 1
  pad_id: int = 0

  def encode(self, text, add_bos=True):
    ids = [3 + b % (self.vocab_size - 3) for b in text.encode()]
    return [self.bos_id, *ids] if add_bos else ids

  def encode_batch(self, texts, add_bos=True):
    return [self.encode(t, add_bos) for t in texts]

  def decode(self, ids, skip_special_tokens=True):
    return bytes(i - 3 for i in ids if i >= 3).decode(errors="replace")

  def pad_batch(self, seqs, side="left", length=None):
    return tokenizer.pad_batch(seqs, self.pad_id, side=side, length=length)

  @property
  def stop_ids(self):
    return (self.eos_id,)


def tiny_base(seed: int = 0) -> base_model.BaseModel:
  cfg = config_lib.tiny_gemma3(max_seq_len=512)
  return base_model.BaseModel(cfg, transformer.init_params(cfg, jax.random.key(seed)), ByteTokenizer(), "tiny")


def qa_records(n: int, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  names = ["Ava", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"]
  out = []
  for i in range(n):
    name, number = names[i % len(names)], int(rng.integers(10, 99))
    out.append({"document": f"{name} has {number} cats.", "query": f"How many cats has {name}?",
                "answer": str(number)})
  return out
