"""Damaged adapter files and saved hypernetworks stop with a CorruptFileError that names the file and
the problem, never load as a different adapter or hypernetwork; good files load bit-identically."""

import json
import re

import jax
import numpy as np
import pytest
import safetensors
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_hyper import files
from lora_hyper.adapters import io, lora, peft
from lora_hyper.errors import CorruptFileError
from lora_hyper.hypernetworks import doc_to_lora, saved
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer
from lora_hyper.model.base_model import BaseModel
from lora_hyper.model.config import MODULES

CFG = config_lib.tiny_gemma3()
SOURCE = io.from_documents(["Ava has 3 cats."], ["cats.txt"], {"kind": "doc_to_lora", "digest": "0" * 16})
REMAKE = "make the adapter again"


@pytest.fixture(scope="module")
def base():
  return BaseModel(CFG, transformer.init_params(CFG, jax.random.key(0)), None, "tiny")


@pytest.fixture(scope="module")
def adapter():
  return lora.random(jax.random.key(2), CFG, MODULES, rank=2, scaling=2.5, std=0.1)


def _save(folder, adapter, base):
  return io.save_adapter(folder, adapter, base=io.base_identity(base), source=SOURCE)


def _contents(path):
  with safetensors.safe_open(str(path), "numpy") as f:
    return {k: np.array(f.get_tensor(k)) for k in f.keys()}, json.loads(f.metadata()["lora_hyper"])


def _rewrite(path, tensors, meta):
  """A valid safetensors container with these tensors and metadata (a str is written as is)."""
  text = meta if isinstance(meta, str) else json.dumps(meta)
  safetensors.numpy.save_file(tensors, str(path), metadata={"lora_hyper": text})


def _assert_same(loaded, adapter):
  assert loaded.scaling == adapter.scaling and loaded.modules == adapter.modules
  for m in adapter.modules:
    for f in ("a", "b"):
      got, want = np.asarray(loaded.weights[m][f]), np.asarray(adapter.weights[m][f])
      assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (m, f)


def _escaped(path) -> str:
  return re.escape(str(path))


def _data_start(path) -> int:
  """Where the tensor bytes begin: after the 8-byte header length and the JSON header."""
  return 8 + int.from_bytes(path.read_bytes()[:8], "little")


# ----------------------------------------------------------------------------- adapters


def test_a_good_file_loads_bit_identically_also_after_a_rewrite_of_its_container(base, adapter, tmp_path):
  path = _save(tmp_path, adapter, base)
  loaded, info = io.load_adapter(path, base)
  _assert_same(loaded, adapter)
  assert info.base == io.base_identity(base) and info.source == SOURCE
  tensors, meta = _contents(path)
  assert len(meta["content_digest"]) == 32
  # Another tool's rewrite: tensors in reverse order, the metadata re-spaced with its keys reversed.
  safetensors.numpy.save_file(dict(reversed(tensors.items())), str(path),
                              metadata={"lora_hyper": json.dumps(dict(reversed(meta.items())), indent=3)})
  _assert_same(io.load_adapter(path, base)[0], adapter)


@pytest.mark.parametrize("keep", [0, 5, 8, 200, -4000, -1])
def test_a_truncated_file_fails_clearly(base, adapter, tmp_path, keep):
  path = _save(tmp_path, adapter, base)
  data = path.read_bytes()
  path.write_bytes(data[:keep % len(data)])
  with pytest.raises(CorruptFileError, match=r"adapter.safetensors' is not a readable safetensors file "
                                             rf"\(truncated or corrupt\?\).*; {REMAKE}"):
    io.load_adapter(path, base)


def test_random_bytes_overwritten_at_the_same_size_fail(base, adapter, tmp_path):
  path = _save(tmp_path, adapter, base)
  data = bytearray(path.read_bytes())
  start = (_data_start(path) + len(data)) // 2
  data[start:start + 16] = np.random.default_rng(0).integers(0, 256, 16, np.uint8).tobytes()
  path.write_bytes(bytes(data))
  with pytest.raises(CorruptFileError, match=rf"adapter '{_escaped(path)}' is damaged: its tensors or metadata do "
                                             rf"not match the content_digest it was saved with .*; {REMAKE}"):
    io.load_adapter(path, base)


def test_nan_written_into_a_valid_container_fails(base, adapter, tmp_path):
  path = _save(tmp_path, adapter, base)
  tensors, meta = _contents(path)
  tensors["down.b"][1, 0, 3] = np.nan
  _rewrite(path, tensors, meta)  # the digest saved with the file
  with pytest.raises(CorruptFileError, match="do not match the content_digest"):
    io.load_adapter(path, base)
  _rewrite(path, tensors, {**meta, "content_digest": io.content_digest(tensors, meta)})  # a matching digest
  with pytest.raises(CorruptFileError, match=rf"'{_escaped(path)}' is damaged: tensor 'down.b' holds 1 NaN or "
                                             rf"infinite value\(s\); {REMAKE}"):
    io.load_adapter(path, base)


def test_files_from_before_the_digest_load_and_get_the_finiteness_check(base, adapter, tmp_path):
  path = _save(tmp_path, adapter, base)
  tensors, meta = _contents(path)
  del meta["content_digest"]
  _rewrite(path, tensors, meta)
  _assert_same(io.load_adapter(path, base)[0], adapter)
  tensors["q.a"][0, 0, 0] = -np.inf
  _rewrite(path, tensors, meta)
  with pytest.raises(CorruptFileError, match=r"tensor 'q.a' holds 1 NaN or infinite value\(s\)"):
    io.load_adapter(path, base)


def _without(d, key):
  return {k: v for k, v in d.items() if k != key}


FIELD = "metadata field"
METADATA_DAMAGE = {  # what is done to the metadata -> what the error says after "is damaged: its "
    "a JSON list": (lambda m: "[1, 2]", r"'lora_hyper' metadata must be a JSON object, got an array"),
    "not JSON": (lambda m: json.dumps(m)[:-9], r"'lora_hyper' metadata is not valid JSON"),
    "no base digest": (lambda m: {**m, "base": {"name": "tiny"}},
                       rf"{FIELD} 'base.digest' must be a string, got nothing"),
    "no base": (lambda m: _without(m, "base"), rf"{FIELD} 'base' must be an object \{{name, digest\}}, got nothing"),
    "base a list": (lambda m: {**m, "base": ["tiny"]}, rf"{FIELD} 'base' must be an object .*, got an array"),
    "base name a number": (lambda m: {**m, "base": {**m["base"], "name": 7}},
                           rf"{FIELD} 'base.name' must be a string, got a number"),
    "no modules": (lambda m: _without(m, "modules"), rf"{FIELD} 'modules' must be a non-empty array .*got nothing"),
    "modules a string": (lambda m: {**m, "modules": "q"}, rf"{FIELD} 'modules' must be .*got a string"),
    "rank a string": (lambda m: {**m, "rank": "2"}, rf"{FIELD} 'rank' must be a positive integer, got a string \"2\""),
    "rank true": (lambda m: {**m, "rank": True}, rf"{FIELD} 'rank' must be a positive integer, got a boolean"),
    "no num_layers": (lambda m: _without(m, "num_layers"),
                      rf"{FIELD} 'num_layers' must be a positive integer, got nothing"),
    "scaling null": (lambda m: {**m, "scaling": None}, rf"{FIELD} 'scaling' must be a finite number, got null"),
    "scaling huge": (lambda m: {**m, "scaling": 10**400}, rf"{FIELD} 'scaling' must be a finite number, got a number"),
    "source a list": (lambda m: {**m, "source": []}, rf"{FIELD} 'source' must be an object, got an array"),
    "digest a number": (lambda m: {**m, "content_digest": 5},
                        rf"{FIELD} 'content_digest' must be a string, got a number"),
}


@pytest.mark.parametrize("damage", list(METADATA_DAMAGE))
def test_metadata_errors_name_the_file_and_the_field(base, adapter, tmp_path, damage):
  change, message = METADATA_DAMAGE[damage]
  path = _save(tmp_path, adapter, base)
  tensors, meta = _contents(path)
  _rewrite(path, tensors, change(meta))
  with pytest.raises(CorruptFileError, match=rf"adapter '{_escaped(path)}' is damaged: its {message}.*; {REMAKE}"):
    io.load_adapter(path, base)


def test_a_peft_folder_with_nan_fails_and_nan_is_never_saved(base, adapter, tmp_path):
  peft.export_peft(adapter, tmp_path / "peft")
  _assert_same(io.load_adapter(tmp_path / "peft", base)[0], adapter)
  weights_file = tmp_path / "peft" / peft.WEIGHTS_FILE
  with safetensors.safe_open(str(weights_file), "numpy") as f:
    tensors, metadata = {k: np.array(f.get_tensor(k)) for k in f.keys()}, f.metadata()
  name = sorted(tensors)[0]
  tensors[name].flat[0] = np.nan
  safetensors.numpy.save_file(tensors, str(weights_file), metadata=metadata)
  with pytest.raises(CorruptFileError, match=rf"adapter '{_escaped(weights_file)}' is damaged: lora_. of module "
                                             r"'\w+' holds 1 NaN"):
    io.load_adapter(tmp_path / "peft", base)
  v = adapter.weights["v"]
  broken = lora.LoraAdapter({**adapter.weights, "v": {**v, "a": v["a"] * np.nan}}, adapter.scaling)
  with pytest.raises(ValueError, match="the adapter to save holds NaN or infinite values in 'v.a'"):
    _save(tmp_path / "nan", broken, base)
  assert not (tmp_path / "nan" / io.ADAPTER_FILE).exists()


# A small adapter (about 3 kB), so a random offset lands in the header, where the metadata is, a quarter of the time.
SMALL = lora.random(jax.random.key(5), CFG, ("q", "down"), rank=1, scaling=1.5, std=0.1)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
  folder = tmp_path_factory.mktemp("small")
  path = io.save_adapter(folder, SMALL, base=io.BaseIdentity("tiny", "0" * 16), source=SOURCE)
  return path.read_bytes(), io.load_adapter(path)[1], folder / "damaged" / io.ADAPTER_FILE


OFFSET = st.integers(0, 2**20)  # taken modulo the file's size (about 3 kB), which is known only once it is saved
DAMAGE = st.one_of(st.tuples(st.just("truncate"), OFFSET),
                   st.tuples(st.just("flip"), st.lists(st.tuples(OFFSET, st.integers(1, 255)), min_size=1, max_size=3)))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(damage=DAMAGE)
def test_damaged_bytes_never_load_as_another_adapter(small_file, damage):
  good, good_info, path = small_file
  how, where = damage
  if how == "truncate":
    data = good[:where % len(good)]
  else:
    where = [(offset % len(good), xor) for offset, xor in where]
    data = bytearray(good)
    for offset, xor in where:
      data[offset] ^= xor
    data = bytes(data)
  path.parent.mkdir(exist_ok=True)
  path.write_bytes(data)
  try:
    loaded, info = io.load_adapter(path)
  except CorruptFileError:
    return
  except (ValueError, FileNotFoundError):  # a header flip that reads as another valid value, e.g. a format
    changed = [o for o, _ in where] if how == "flip" else []
    assert changed and min(changed) < 8 + int.from_bytes(good[:8], "little"), "tensor bytes changed, not corrupt"
    return
  # It loaded: only bytes that mean nothing (JSON spacing in the header) may have changed.
  _assert_same(loaded, SMALL)
  assert info == good_info


# ----------------------------------------------------------------------------- saved hypernetworks


@pytest.fixture()
def hypernetwork(base, tmp_path):
  config = doc_to_lora.d2l_tiny(CFG)
  variables = doc_to_lora.init(config, jax.random.key(0))
  folder = saved.save_hypernetwork(tmp_path / "hyper", config, variables, base=io.base_identity(base))
  return folder, variables


def test_a_good_hypernetwork_loads_bit_identically(base, hypernetwork):
  folder, variables = hypernetwork
  loaded = saved.load_hypernetwork(folder, base)
  same = lambda x, y: np.asarray(x).tobytes() == np.asarray(y).tobytes()
  assert all(jax.tree.leaves(jax.tree.map(same, loaded.variables, variables)))


def test_hypernetwork_variables_overwritten_or_with_nan_fail(base, hypernetwork):
  folder, _ = hypernetwork
  file, manifest_file = folder / saved.VARIABLES, folder / saved.MANIFEST
  good = file.read_bytes()
  data = bytearray(good)
  data[len(data) // 2:len(data) // 2 + 8] = bytes(range(8))
  file.write_bytes(bytes(data))
  with pytest.raises(CorruptFileError, match="does not match the digest in hypernetwork.json"):
    saved.load_hypernetwork(folder, base)
  file.write_bytes(good)
  flat = {k: np.array(v) for k, v in safetensors.numpy.load_file(str(file)).items()}
  name = sorted(flat)[-1]
  flat[name].flat[-1] = np.nan
  safetensors.numpy.save_file(flat, str(file))
  manifest = json.loads(manifest_file.read_text())
  manifest_file.write_text(json.dumps({**manifest, "variables_digest": files.file_digest(file)}))
  with pytest.raises(CorruptFileError, match=rf"variables.safetensors': variable '{name}' holds 1 NaN or infinite "
                                             r"value\(s\); save the hypernetwork again"):
    saved.load_hypernetwork(folder, base)


MANIFEST_DAMAGE = {
    "a JSON list": (lambda m: [m], r"holds a JSON list, not an object"),
    "no kind": (lambda m: _without(m, "kind"), r"field 'kind' must be a string, got nothing"),
    "no config": (lambda m: _without(m, "config"), r"field 'config' must be an object, got nothing"),
    "config a list": (lambda m: {**m, "config": []}, r"field 'config' must be an object, got an array"),
    "no base": (lambda m: _without(m, "base"), r"field 'base' must be an object \{name, digest\}, got nothing"),
    "no base digest": (lambda m: {**m, "base": {"name": "tiny"}}, r"field 'base.digest' must be a string, got nothing"),
    "no variables_digest": (lambda m: _without(m, "variables_digest"),
                            r"field 'variables_digest' must be a string, got nothing"),
    "no format": (lambda m: _without(m, "format"), r"field 'format' must be a number, got nothing"),
    "task_encoder a string": (lambda m: {**m, "task_encoder": "minilm"},
                              r"field 'task_encoder' must be an object \{type, pooling\}, got a string"),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_manifest_errors_name_the_file_and_the_field(base, hypernetwork, damage):
  change, message = MANIFEST_DAMAGE[damage]
  folder, _ = hypernetwork
  manifest_file = folder / saved.MANIFEST
  manifest_file.write_text(json.dumps(change(json.loads(manifest_file.read_text()))))
  remedy = "" if damage == "a JSON list" else "; save the hypernetwork again"  # the JSON reader's own message
  with pytest.raises(CorruptFileError, match=rf"'{_escaped(manifest_file)}'.*{message}{remedy}"):
    saved.load_hypernetwork(folder, base)


def test_a_damaged_base_config_is_named_when_loading_without_a_base(hypernetwork):
  folder, _ = hypernetwork
  manifest_file = folder / saved.MANIFEST
  manifest = json.loads(manifest_file.read_text())
  for base_config, message in [(None, "field 'base_config' must be an object, got nothing"),
                               ({**manifest["base_config"], "family": "nope"}, "field 'base_config' is not a base")]:
    damaged = _without(manifest, "base_config") if base_config is None else {**manifest, "base_config": base_config}
    manifest_file.write_text(json.dumps(damaged))
    with pytest.raises(CorruptFileError, match=message):
      saved.load_hypernetwork(folder)
