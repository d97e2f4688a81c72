"""The real embedded Gemma 3 270M against transformers loading the same GGUF file (float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the test extra: the PyTorch references
import transformers

from lora_hyper.model import decoding, transformer, weights

pytestmark = [pytest.mark.real_model, pytest.mark.torch]


@pytest.fixture(scope="module")
def hf_model():
  path, _ = weights.embedded_gguf_path()
  return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()


def test_long_prompt_logits_and_greedy_continuation_match(embedded_model, hf_model):
  config, params = embedded_model
  rng = np.random.default_rng(0)
  prompt = np.concatenate([[config.bos_id], rng.integers(1000, 30000, 599)])  # > the 512-token window
  with torch.no_grad():
    ref = hf_model(torch.tensor(prompt[None])).logits[0].numpy()
    ref_tokens = hf_model.generate(torch.tensor(prompt[None]), max_new_tokens=16, do_sample=False,
                                   eos_token_id=None)[0, len(prompt):].tolist()
  ours = np.asarray(transformer.forward(params, jnp.asarray(prompt[None], jnp.int32), config=config).logits[0])
  np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)
  tokens, _ = decoding.generate(params, jnp.asarray(prompt[None], jnp.int32), jnp.ones((1, len(prompt)), bool),
                                jnp.zeros((2,), jnp.uint32), config=config,
                                sampling=decoding.SamplingConfig(max_new_tokens=16), stop_ids=(-1,))
  assert tokens[0].tolist() == ref_tokens


def test_conversion_matches_the_cache(tmp_path, monkeypatch, embedded_model):
  monkeypatch.setenv("LORA_HYPER_CACHE", str(tmp_path))
  path, digest = weights.embedded_gguf_path()
  messages = []
  config, params = weights.load_gguf(path, source_digest=digest, log=messages.append)
  assert any("converting" in m for m in messages)
  assert config == embedded_model[0]
  for ours, cached in zip(jax.tree.leaves(params), jax.tree.leaves(embedded_model[1])):
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(cached))
