"""Text <-> token ids: a thin wrapper over a `tokenizers.Tokenizer` (the HF Rust library).

Built from a Gemma GGUF's metadata (ids identical to transformers' GGUF tokenizer, without
importing transformers or torch) or from a Hugging Face folder's `tokenizer.json`.
BOS is added here, not by the backend's post-processor, so both sources behave alike.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers

from lora_hyper import files
from lora_hyper.errors import CorruptFileError

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"

# llama.cpp token types (gguf.TokenType).
_CONTROL, _USER_DEFINED = 3, 4
_GEMMA_ARCHITECTURES = ("gemma", "gemma2", "gemma3")
_SPECIAL_NAMES = ("bos", "eos", "pad")


class MissingTokenizerError(FileNotFoundError):
  """Text was given to a base model loaded without a tokenizer."""


@dataclasses.dataclass(frozen=True)
class MissingTokenizer:
  """Stands in for the tokenizer of a model folder that has none: the model still runs on token ids
  (e.g. `doc_to_lora.internalize_chunk_ids`), and anything that needs text says what is missing."""

  folder: str

  def __getattr__(self, name: str) -> Any:
    if name.startswith("__"):  # copy, pickle and friends probe for optional hooks
      raise AttributeError(name)
    raise MissingTokenizerError(
        f"base model {self.folder!r} has no tokenizer.json, so it cannot turn text into tokens ({name}): copy the "
        "model's tokenizer files (tokenizer.json, tokenizer_config.json) into that folder, or pass token ids")


@dataclasses.dataclass(frozen=True, eq=False)
class Tokenizer:
  """A backend tokenizer plus the special ids callers need. Build with `from_gguf`/`from_hf_dir`."""

  backend: tokenizers.Tokenizer
  bos_id: int | None
  eos_id: int | None
  pad_id: int | None
  add_bos: bool = True  # the checkpoint's default when `encode` is not told

  # ------------------------------------------------------------------------- loading and saving

  @classmethod
  def from_gguf(cls, path: str | os.PathLike, *, source_digest: str | None = None,
                log: Callable[[str], None] = lambda msg: None) -> Tokenizer:
    """The tokenizer in a Gemma GGUF; built once (~15 s), then read from the cache (~1.5 s).

    The cache folder is the one `weights.load_gguf` uses for the same file:
    `<cache>/models/<digest[:32]>/tokenizer{,_config}.json`. `source_digest` skips hashing the file.
    `log` hears when the cache is built or rebuilt.
    """
    path = Path(path)
    if not path.is_file():
      if path.is_dir():
        raise IsADirectoryError(f"GGUF file {str(path)!r} is a folder, not a file")
      raise FileNotFoundError(f"GGUF file {str(path)!r} does not exist")
    cached = files.cache_dir() / "models" / (source_digest or files.file_digest(path))[:32]
    return _load_or_build(cached, lambda: _from_gguf_metadata(path), log, source=path.name)

  @classmethod
  def from_hf_dir(cls, path: str | os.PathLike) -> Tokenizer:
    """A Hugging Face tokenizer folder: `tokenizer.json`, plus `tokenizer_config.json` and/or
    `special_tokens_map.json` for the bos/eos/pad tokens and `add_bos_token`."""
    path = Path(path)
    file = path / "tokenizer.json"
    if not file.is_file():
      if file.is_dir():
        raise IsADirectoryError(f"{str(file)!r} is a folder, not a file")
      where = "folder" if path.is_dir() else "folder (it does not exist)"
      raise FileNotFoundError(f"no tokenizer.json in tokenizer {where} {str(path)!r}")
    try:
      backend = tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on a damaged file.
      raise CorruptFileError(f"{str(file)!r} is not a valid tokenizer.json (truncated or overwritten?): {e}") from e
    # Some tokenizer.json files carry training-time truncation/padding; ids must not depend on it.
    backend.no_truncation()
    backend.no_padding()
    config = {**_read_json(path / "special_tokens_map.json"), **_read_json(path / "tokenizer_config.json")}
    ids = {name: _token_id(backend, config.get(f"{name}_token"), path) for name in _SPECIAL_NAMES}
    # Without the flag, add BOS when there is one (Llama 3 style); Qwen-style vocabularies have none.
    add_bos = bool(config.get("add_bos_token", ids["bos"] is not None))
    return cls(backend, ids["bos"], ids["eos"], ids["pad"], add_bos)

  def save(self, path: str | os.PathLike) -> None:
    """Writes `tokenizer.json` and `tokenizer_config.json` (each atomically) for `from_hf_dir`."""
    path = Path(path)
    config = {f"{name}_token": self._token(getattr(self, f"{name}_id")) for name in _SPECIAL_NAMES}
    config["add_bos_token"] = self.add_bos
    text = json.dumps(config, indent=1)
    files.atomic_write(path / "tokenizer_config.json", lambda tmp: Path(tmp).write_text(text))
    files.atomic_write(path / "tokenizer.json", self.backend.save)

  def _token(self, token_id: int | None) -> str | None:
    return None if token_id is None else self.backend.id_to_token(token_id)

  # ------------------------------------------------------------------------- special ids

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  @property
  def start_of_turn_id(self) -> int | None:
    return self.backend.token_to_id(START_OF_TURN)

  @property
  def end_of_turn_id(self) -> int | None:
    return self.backend.token_to_id(END_OF_TURN)

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """Ids that end generation: eos, and Gemma's end_of_turn when the vocabulary has it."""
    return tuple(dict.fromkeys(i for i in (self.eos_id, self.end_of_turn_id) if i is not None))

  # ------------------------------------------------------------------------- encode / decode

  def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
    """Token ids of `text`; special-token strings in it (e.g. `<start_of_turn>`) become single ids.

    `add_bos=None` follows the checkpoint (`add_bos_token`; True for Gemma). "" gives [bos].
    """
    _check_str(text, "encode")
    return self._with_bos(self.backend.encode(text, add_special_tokens=False).ids, add_bos)

  def encode_batch(self, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
    if isinstance(texts, str):
      raise TypeError("encode_batch expects a sequence of str, got one str; use encode")
    texts = list(texts)
    for text in texts:
      _check_str(text, "encode_batch")
    encodings = self.backend.encode_batch(texts, add_special_tokens=False)
    return [self._with_bos(e.ids, add_bos) for e in encodings]

  def _with_bos(self, ids: list[int], add_bos: bool | None) -> list[int]:
    if not (self.add_bos if add_bos is None else add_bos):
      return ids
    if self.bos_id is None:
      raise ValueError("add_bos=True, but this tokenizer has no bos token")
    return [self.bos_id, *ids]

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    """Text of `ids` (a list or a 1-D array); control tokens (bos, turn markers...) are dropped
    unless `skip_special_tokens=False`."""
    if isinstance(ids, (str, bytes)):
      raise TypeError(f"decode expects a sequence of int ids, got {type(ids).__name__}")
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def pad_batch(self, seqs: Sequence[Sequence[int]], side: str = "left",
                length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 [B, T], mask bool [B, T]); padding holds pad_id (0 when there is none)."""
    return pad_batch(seqs, 0 if self.pad_id is None else self.pad_id, side=side, length=length)


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, *, side: str = "left",
              length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Stacks id lists into (tokens int32 [B, T], mask bool [B, T]); T = `length` or the longest.

  Left padding keeps every prompt's last token in the last column, as generation wants.
  """
  if side not in ("left", "right"):
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")
  longest = max((len(s) for s in seqs), default=0)
  length = longest if length is None else length
  if longest > length:
    raise ValueError(f"a sequence of {longest} tokens does not fit length={length}; truncate it first")
  tokens = np.full((len(seqs), length), pad_id, np.int32)
  mask = np.zeros((len(seqs), length), bool)
  for row, seq in enumerate(seqs):
    start = length - len(seq) if side == "left" else 0
    tokens[row, start:start + len(seq)] = seq
    mask[row, start:start + len(seq)] = True
  return tokens, mask


def _check_str(text: Any, caller: str) -> None:
  if not isinstance(text, str):
    raise TypeError(f"{caller} expects text as str, got {type(text).__name__}")


# ----------------------------------------------------------------------------- HF folders


def _read_json(path: Path) -> dict[str, Any]:
  """A JSON object file's contents, {} when absent; CorruptFileError naming the file when damaged."""
  return files.read_json_file(path, "") if path.is_file() else {}


def _token_id(backend: tokenizers.Tokenizer, token: str | dict | None, folder: Path) -> int | None:
  """The id of a special token as HF configs spell it: a string, or an AddedToken dict."""
  if token is None:
    return None
  content = token["content"] if isinstance(token, dict) else token
  token_id = backend.token_to_id(content)
  if token_id is None:
    raise ValueError(f"special token {content!r} of {str(folder)!r} is not in its tokenizer.json vocabulary")
  return token_id


# ----------------------------------------------------------------------------- GGUF


def _from_gguf_metadata(path: Path) -> Tokenizer:
  from lora_hyper.model import weights  # reading the metadata takes ~10 s; only needed when the cache is cold

  reader = weights.open_gguf(path)

  def field(key: str) -> Any:
    found = reader.get_field(key)
    return None if found is None else weights.gguf_field_contents(found, key, path)

  architecture, model = field("general.architecture"), field("tokenizer.ggml.model")
  if model != "llama" or architecture not in _GEMMA_ARCHITECTURES:
    raise ValueError(f"{str(path)!r}: only Gemma sentencepiece vocabularies are supported "
                     f"(architecture {architecture!r}, tokenizer.ggml.model {model!r})")
  tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
  unk_id = field("tokenizer.ggml.unknown_token_id")
  if tokens is None or types is None or len(types) != len(tokens) or unk_id not in range(len(tokens)):
    raise CorruptFileError(f"{str(path)!r} is not a complete GGUF file: its tokenizer.ggml tokens, token types "
                           "and unknown token id are missing or do not match")
  backend = _gemma_backend(tokens, types, tokens[unk_id])
  ids = [field(f"tokenizer.ggml.{key}_token_id") for key in ("bos", "eos", "padding")]
  add_bos = field("tokenizer.ggml.add_bos_token")
  # llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise.
  return Tokenizer(backend, *ids, add_bos=True if add_bos is None else bool(add_bos))


def _gemma_backend(tokens: list[str], token_types: list[int], unk: str) -> tokenizers.Tokenizer:
  """transformers' `gemma_tokenizer` GGUF recipe (integrations/gguf/gguf_tokenizer_mapping.py)
  with `GemmaTokenizer`'s pipeline, rebuilt on `tokenizers` alone."""
  spelled = [_respell(t) for t in tokens]
  vocab = {token: index for index, token in enumerate(spelled)}
  backend = tokenizers.Tokenizer(models.BPE(
      vocab=vocab, merges=_merges_by_position(spelled, vocab), unk_token=unk, fuse_unk=True,
      byte_fallback=True))
  # GemmaTokenizer also sets a Split(" ") pre-tokenizer; after this normalizer it never splits.
  backend.normalizer = normalizers.Replace(" ", "\u2581")
  backend.decoder = decoders.Sequence(
      [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
  backend.add_special_tokens([
      AddedToken(t, normalized=False, special=True)
      for t, kind in zip(tokens, token_types) if kind == _CONTROL])
  # User-defined tokens (newline and tab runs, "[multimodal]", ...) always match whole, but are not
  # special. transformers checks the file's spelling against the respelled vocabulary, so the
  # space runs are not added: they are reached through merges instead.
  backend.add_tokens([
      AddedToken(t, normalized=False, special=False)
      for t, kind in zip(tokens, token_types) if kind == _USER_DEFINED and t in vocab])
  return backend


def _respell(token: str) -> str:
  """llama.cpp stores Gemma's whitespace-only tokens with real spaces; the model matches U+2581."""
  return "\u2581" * len(token) if " " in token and not token.strip() else token


def _merges_by_position(tokens: list[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
  """Every split of each token into two vocabulary tokens, best merge first.

  The file has no merges, and Gemma's scores do not follow merge order: file position does. Within
  one token the longer left piece comes first, as in transformers' `generate_merges`.
  """
  return [(token[:cut], token[cut:]) for token in tokens for cut in range(len(token) - 1, 0, -1)
          if token[:cut] in vocab and token[cut:] in vocab]


# ----------------------------------------------------------------------------- cache


def _load_or_build(folder: Path, build: Callable[[], Tokenizer], log: Callable[[str], None] = lambda msg: None,
                   source: str = "its source") -> Tokenizer:
  """The tokenizer saved in `folder`, or `build()`'s, saved there first when that is absent or unreadable;
  `log` says which of the two it builds."""
  if not (folder / "tokenizer.json").exists():
    log(f"building the tokenizer of {source} (done once, then cached in {folder})")
  else:
    try:
      return Tokenizer.from_hf_dir(folder)
    except Exception as e:  # noqa: BLE001 - any failure means: rebuild from the source.
      log(f"tokenizer cache in {folder} is unusable ({e}); rebuilding it from {source}")
  build().save(folder)
  return Tokenizer.from_hf_dir(folder)
