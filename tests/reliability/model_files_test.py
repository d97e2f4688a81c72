"""Damaged base-model files: truncated or header-only GGUF files, truncated or NaN-holding safetensors,
folders where files are expected. Each stops with one error naming the file and the problem, never a raw
traceback or a silently different model; caches of the converted weights and tokenizer are rebuilt, and say so."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import gguf
import jax
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_hyper.errors import CorruptFileError
from lora_hyper.model import base_model, transformer, weights
from lora_hyper.model import config as config_lib
from lora_hyper.model.tokenizer import Tokenizer
from tiny_model import CHARS, SPECIALS, _hf_tensors, write_tiny_model

CFG = config_lib.tiny_gemma3()
INCOMPLETE_GGUF = "is not a complete GGUF file"


@pytest.fixture(scope="module", autouse=True)
def module_cache(tmp_path_factory):
  """A lora-hyper cache of this module's own: nothing here reads or writes the user's cache."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("LORA_HYPER_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch) -> Path:
  """An empty cache for one test."""
  path = tmp_path_factory.mktemp("cache")
  monkeypatch.setenv("LORA_HYPER_CACHE", str(path))
  return path


def _leaves(params):
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def _assert_same_params(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------- a tiny GGUF


def write_tiny_gguf(path: Path, nan_tensor: str | None = None) -> Path:
  """The tiny random Gemma 3 as llama.cpp writes Gemma GGUFs: float32 tensors under GGUF names (norms
  with the +1 offset) and a sentencepiece-style vocabulary; `nan_tensor` gets a NaN."""
  params = transformer.init_params(CFG, jax.random.key(0))
  to_gguf = {hf: short for short, hf in weights._GGUF_LAYER_NAMES.items()}
  writer = gguf.GGUFWriter(str(path), "gemma3")
  writer.add_block_count(CFG.num_layers)
  writer.add_context_length(CFG.max_seq_len)
  writer.add_embedding_length(CFG.embed_dim)
  writer.add_feed_forward_length(CFG.mlp_dim)
  writer.add_head_count(CFG.num_heads)
  writer.add_head_count_kv(CFG.num_kv_heads)
  writer.add_key_length(CFG.head_dim)
  writer.add_value_length(CFG.head_dim)
  writer.add_sliding_window(CFG.sliding_window)
  tokens = SPECIALS + CHARS
  tokens += [f"<unused{i}>" for i in range(CFG.vocab_size - len(tokens))]
  writer.add_tokenizer_model("llama")
  writer.add_token_list(tokens)
  writer.add_token_types([3 if len(t) > 1 and t.startswith("<") else 1 for t in tokens])
  writer.add_unk_token_id(3)
  writer.add_bos_token_id(2)
  writer.add_eos_token_id(1)
  writer.add_pad_token_id(0)
  for hf_name, w in _hf_tensors(params, CFG).items():
    short = hf_name.removeprefix("model.").removesuffix(".weight")
    if short in ("embed_tokens", "norm"):
      name = {"embed_tokens": "token_embd", "norm": "output_norm"}[short]
    else:
      _, layer, rest = short.split(".", 2)
      name = f"blk.{layer}.{to_gguf[rest]}"
    w = w + 1.0 if name.endswith("norm") else w.copy()
    if f"{name}.weight" == nan_tensor:
      w.flat[5] = np.nan
    writer.add_tensor(f"{name}.weight", w)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
  return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_tiny_gguf_loads_as_the_model_it_holds(tiny_gguf):
  model = base_model.load_base_model(tiny_gguf)
  assert model.config.num_layers == CFG.num_layers and model.config.vocab_size == CFG.vocab_size
  want = transformer.init_params(CFG, jax.random.key(0))
  for ours, theirs in zip(_leaves(model.params), _leaves(want)):
    np.testing.assert_allclose(ours, theirs, atol=1e-6)  # norms went through GGUF's +1 and back
  assert model.tokenizer.decode(model.tokenizer.encode("hello world")) == "hello world"


def _gguf_landmarks(path: Path) -> dict[str, int]:
  """Where to cut a GGUF file: inside the fixed header, the metadata, right before the tensor data
  (header-only), inside and at the last byte of the data."""
  reader = gguf.GGUFReader(str(path))
  data_start = min(t.data_offset for t in reader.tensors)
  data_end = max(t.data_offset + t.n_bytes for t in reader.tensors)
  return {"empty": 0, "magic": 4, "version": 8, "counts": 24, "metadata": data_start // 2,
          "header_only": data_start, "data": (data_start + data_end) // 2, "last_byte": data_end - 1}


@pytest.mark.parametrize("cut", ["empty", "magic", "version", "counts", "metadata", "header_only", "data",
                                 "last_byte"])
def test_truncated_gguf_names_the_file(tiny_gguf, tmp_path, cut):
  damaged = tmp_path / "model.gguf"
  damaged.write_bytes(tiny_gguf.read_bytes()[:_gguf_landmarks(tiny_gguf)[cut]])
  with pytest.raises(CorruptFileError, match=re.escape(str(damaged)) + ".*" + INCOMPLETE_GGUF):
    base_model.load_base_model(damaged)
  with pytest.raises(CorruptFileError, match=re.escape(str(damaged)) + ".*" + INCOMPLETE_GGUF):
    Tokenizer.from_gguf(damaged)  # the tokenizer reads the same file when its cache is cold


@pytest.mark.real_model
@pytest.mark.parametrize("length", [4, 24, 1 << 20])
def test_prefix_of_the_real_gguf_names_the_file(tmp_path, length):
  path, _ = weights.embedded_gguf_path()
  damaged = tmp_path / "gemma.gguf"
  with open(path, "rb") as f:
    damaged.write_bytes(f.read(length))
  with pytest.raises(CorruptFileError, match=re.escape(str(damaged)) + ".*" + INCOMPLETE_GGUF):
    base_model.load_base_model(damaged)


def test_gguf_with_a_nan_names_the_tensor(tmp_path):
  path = write_tiny_gguf(tmp_path / "nan.gguf", nan_tensor="blk.1.ffn_up.weight")
  with pytest.raises(CorruptFileError, match=r"'blk\.1\.ffn_up\.weight' in '" + re.escape(str(path)) + "'.*NaN"):
    base_model.load_base_model(path)


def test_gguf_with_a_damaged_tensor_offset_names_the_file(tiny_gguf, tmp_path):
  """A flipped offset that still lies inside the file would read another tensor's bytes as this one's."""
  reader = gguf.GGUFReader(str(tiny_gguf))
  first, second = sorted(reader.tensors, key=lambda t: t.data_offset)[:2]
  offset_field = second.field.parts[-1]  # a view of the file's bytes
  at = offset_field.__array_interface__["data"][0] - reader.data.__array_interface__["data"][0]
  data = bytearray(tiny_gguf.read_bytes())
  data[at:at + 8] = first.field.parts[-1].tobytes()  # the second tensor now starts where the first does
  damaged = tmp_path / "model.gguf"
  damaged.write_bytes(bytes(data))
  with pytest.raises(CorruptFileError, match=re.escape(str(damaged)) + "' is not a complete GGUF file: the data "
                     "of tensors .* overlap") as error:
    base_model.load_base_model(damaged)
  assert f"'{first.name}'" in str(error.value) and f"'{second.name}'" in str(error.value)


def test_gguf_paths_that_are_folders_or_missing(tmp_path):
  (tmp_path / "folder.gguf").mkdir()
  with pytest.raises(IsADirectoryError, match="folder.gguf' is a folder, not a file"):
    base_model.load_base_model(tmp_path / "folder.gguf")
  with pytest.raises(FileNotFoundError, match="nope.gguf' does not exist"):
    base_model.load_base_model(tmp_path / "nope.gguf")


# ----------------------------------------------------------------------------- caches say when they rebuild


def test_weight_and_tokenizer_caches_are_rebuilt_and_say_so(tiny_gguf, cache):
  messages = []
  first = base_model.load_base_model(tiny_gguf, log=messages.append)
  assert any("converting tiny.gguf" in m for m in messages)
  assert any("building the tokenizer of tiny.gguf" in m for m in messages)
  messages.clear()
  base_model.load_base_model(tiny_gguf, log=messages.append)
  assert messages == []  # both caches hit: nothing to say
  (folder,) = (cache / "models").iterdir()

  (folder / "tokenizer.json").write_text('{"version": "1.0", "trunc')
  again = base_model.load_base_model(tiny_gguf, log=messages.append)
  assert len(messages) == 1 and messages[0].startswith(
      f"tokenizer cache in {folder} is unusable ('{folder / 'tokenizer.json'}' is not a valid tokenizer.json")
  assert messages[0].endswith("; rebuilding it from tiny.gguf")
  assert again.tokenizer.encode("a cat") == first.tokenizer.encode("a cat")

  messages.clear()
  (folder / "manifest.json").unlink()  # killed between the cache's two atomic writes
  again = base_model.load_base_model(tiny_gguf, log=messages.append)
  assert messages[0] == f"weight cache in {folder} is incomplete; rebuilding it"
  _assert_same_params(again.params, first.params)

  messages.clear()
  params_file = folder / "params.safetensors"
  params_file.write_bytes(params_file.read_bytes()[:-100])
  again = base_model.load_base_model(tiny_gguf, log=messages.append)
  assert "is unusable" in messages[0] and "rebuilding it" in messages[0]
  _assert_same_params(again.params, first.params)


@pytest.mark.real_model
def test_a_partial_assembled_embedded_gguf_is_rebuilt(tmp_path, monkeypatch):
  """The embedded default's GGUF is assembled once into ~/.cache; a partial copy (a killed assembly) is
  rebuilt with a log line instead of failing on its sha256."""
  real, digest = weights.embedded_gguf_path()
  monkeypatch.setenv("HOME", str(tmp_path))
  messages = []
  path, _ = weights.embedded_gguf_path(log=messages.append)
  assert path.is_relative_to(tmp_path) and "assembling the embedded GGUF" in messages[0]
  with open(path, "r+b") as f:
    f.truncate(1 << 20)
  messages.clear()
  again, _ = weights.embedded_gguf_path(log=messages.append)
  assert again == path and f"the assembled embedded GGUF {path} is not complete" in messages[0]
  with open(again, "rb") as f:
    assert hashlib.file_digest(f, "sha256").hexdigest() == digest
  assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left beside it
  path.unlink()  # 250 MB: do not keep it among pytest's last temporary folders


# ----------------------------------------------------------------------------- Hugging Face folders


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
  return write_tiny_model(tmp_path_factory.mktemp("hf") / "model")


@pytest.fixture()
def hf_copy(hf_folder, tmp_path) -> Path:
  return Path(shutil.copytree(hf_folder, tmp_path / "model"))


def _header_end(data: bytes) -> int:
  return 8 + int.from_bytes(data[:8], "little")


@pytest.mark.parametrize("cut", ["empty", "length", "header", "header_end", "data", "last_byte"])
def test_truncated_safetensors_names_the_file(hf_copy, cut):
  file = hf_copy / "model.safetensors"
  data = file.read_bytes()
  length = {"empty": 0, "length": 7, "header": _header_end(data) // 2, "header_end": _header_end(data),
            "data": len(data) // 2, "last_byte": len(data) - 1}[cut]
  file.write_bytes(data[:length])
  with pytest.raises(CorruptFileError, match=re.escape(str(file)) + "' is not a complete safetensors file"):
    base_model.load_base_model(hf_copy)


def test_safetensors_with_a_nan_names_the_tensor(hf_copy):
  file = hf_copy / "model.safetensors"
  tensors = safetensors.numpy.load_file(str(file))
  tensors["model.layers.1.mlp.up_proj.weight"][3, 4] = np.nan
  safetensors.numpy.save_file(tensors, str(file))
  with pytest.raises(CorruptFileError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight' in '" + re.escape(str(file))):
    base_model.load_base_model(hf_copy)
  tensors["model.layers.1.mlp.up_proj.weight"][3, 4] = -np.inf
  safetensors.numpy.save_file(tensors, str(file))
  with pytest.raises(CorruptFileError, match="NaN or infinite"):
    base_model.load_base_model(hf_copy)


def test_integer_weights_are_refused(hf_copy):
  """A header byte flip can turn F32 into I32 (same size): read as floats, that is a different model."""
  file = hf_copy / "model.safetensors"
  data = bytearray(file.read_bytes())
  at = data.index(b'"F32"', 0, _header_end(data))
  data[at + 1:at + 2] = b"I"
  file.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="holds int32 values, not floating-point weights"):
    base_model.load_base_model(hf_copy)


def test_hf_folder_problems_name_the_file(hf_copy):
  config = hf_copy / "config.json"
  text = config.read_text()
  config.write_text(text[:len(text) // 2])
  with pytest.raises(CorruptFileError, match=re.escape(str(config)) + "' is not valid JSON"):
    base_model.load_base_model(hf_copy)
  config.write_text(json.dumps({**json.loads(text), "model_type": "llama"}))
  with pytest.raises(ValueError, match=re.escape(str(config)) + "': unsupported model_type 'llama'"):
    base_model.load_base_model(hf_copy)
  config.write_text(json.dumps({k: v for k, v in json.loads(text).items() if k != "hidden_size"}))
  with pytest.raises(ValueError, match=re.escape(str(config)) + "' lacks 'hidden_size'"):
    base_model.load_base_model(hf_copy)
  config.write_text(text)

  tokenizer = hf_copy / "tokenizer.json"
  tokenizer.write_text(tokenizer.read_text()[:100])
  with pytest.raises(CorruptFileError, match=re.escape(str(tokenizer)) + "' is not a valid tokenizer.json"):
    base_model.load_base_model(hf_copy)
  tokenizer.unlink()  # runs on token ids; text says what is missing
  without_tokenizer = base_model.load_base_model(hf_copy)
  with pytest.raises(FileNotFoundError, match=re.escape(repr(str(hf_copy))) + " has no tokenizer.json"):
    without_tokenizer.tokenizer.encode("text")

  (hf_copy / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match=r"has no \*\.safetensors weights"):
    base_model.load_base_model(hf_copy)
  (hf_copy / "model.safetensors").mkdir()
  with pytest.raises(IsADirectoryError, match="model.safetensors' is a folder, not a file"):
    base_model.load_base_model(hf_copy)

  config.unlink()
  with pytest.raises(FileNotFoundError, match="is a folder with no config.json in it"):
    base_model.load_base_model(hf_copy)


def test_paths_say_what_they_are(tmp_path, tiny_gguf):
  """`--model DIR` of the wrong folder says it is a folder without config.json, not that it does not exist."""
  with pytest.raises(FileNotFoundError, match=re.escape(repr(str(tmp_path))) + " is a folder with no config.json"):
    base_model.load_base_model(tmp_path)
  shutil.copy(tiny_gguf, tmp_path / "tiny.gguf")
  with pytest.raises(FileNotFoundError, match="it holds 'tiny.gguf': pass that file instead"):
    base_model.load_base_model(tmp_path)
  with pytest.raises(FileNotFoundError, match="'.*missing' does not exist"):
    base_model.load_base_model(tmp_path / "missing")
  (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
  with pytest.raises(ValueError, match="weights.bin' is a file without the .gguf suffix"):
    base_model.load_base_model(tmp_path / "weights.bin")


# ----------------------------------------------------------------------------- property: never a raw error


@pytest.fixture(scope="module")
def fuzz(hf_folder, tmp_path_factory):
  """A copy of the tiny folder whose model.safetensors each example overwrites, the original bytes, and
  the params they load as."""
  folder = Path(shutil.copytree(hf_folder, tmp_path_factory.mktemp("fuzz") / "model"))
  return folder, (hf_folder / "model.safetensors").read_bytes(), base_model.load_base_model(hf_folder).params


_at = st.floats(0, 1, exclude_max=True)
_DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), _at),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.sampled_from(["header", "data"]), _at, st.integers(1, 255)),
                                        min_size=1, max_size=3)))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(damage=_DAMAGE)
def test_damaged_safetensors_loads_identically_or_fails_clearly(fuzz, damage):
  """Truncating model.safetensors anywhere, or xor-ing up to three bytes, either loads the same model or
  raises CorruptFileError / ValueError / FileNotFoundError. safetensors keeps no checksum, so a flip inside
  the tensor data can change a weight unnoticed; it still loads finite values of the right shapes."""
  folder, data, want = fuzz
  kind, where = damage
  touched_data = False
  if kind == "truncate":
    damaged = data[:int(where * len(data))]
  else:
    damaged, end = bytearray(data), _header_end(data)
    for region, at, xor in where:
      i = int(at * end) if region == "header" else end + int(at * (len(data) - end))
      damaged[i] ^= xor
      touched_data |= region == "data"
  (folder / "model.safetensors").write_bytes(bytes(damaged))
  try:
    got = base_model.load_base_model(folder).params
  except (CorruptFileError, ValueError, FileNotFoundError):
    return
  if not touched_data:
    _assert_same_params(got, want)
  else:
    assert jax.tree.map(np.shape, got) == jax.tree.map(np.shape, want)
    assert all(np.isfinite(x).all() for x in _leaves(got))
