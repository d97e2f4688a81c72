"""The two hypernetworks shipped then (the needle Doc-to-LoRA, the Text-to-LoRA) give the adapters
they gave before the hypernetwork package was reorganised (and their folders converted to format 2):
the reference is a fingerprint of each adapter written by the code of commit eb54505 on the format-1
folders (every factor projected onto 4 fixed random directions of its feature axis,
tests/hypernetworks/data/shipped_adapters.npz)."""

from pathlib import Path

import numpy as np
import pytest

from lora_hyper.hypernetworks import doc_to_lora, saved, text_to_lora

pytestmark = pytest.mark.real_model

REFERENCE = Path(__file__).parent / "data" / "shipped_adapters.npz"
HAYSTACK = Path(__file__).parents[2] / "experiments" / "niah" / "haystack.txt"


def _project(w):
  rng = np.random.default_rng(w.shape[-1])  # the reference's directions
  return np.asarray(w, np.float64) @ rng.standard_normal((w.shape[-1], 4))


def test_shipped_hypernetworks_give_the_adapters_they_gave_before(embedded_base):
  base = embedded_base
  haystack = HAYSTACK.read_text()
  documents = [" ".join([haystack] * 5), "Mira Vantel founded the Glasswick Observatory in 1887. It sits on Harrow Hill."]
  descriptions = ["Reverse the letters of the word.", "Add the two numbers."]
  d2l = saved.load_hypernetwork(saved.shipped("doc_to_lora", "needle"), base)
  t2l = saved.load_hypernetwork(saved.shipped("text_to_lora"), base)
  d = doc_to_lora.internalize(d2l.variables, base.params, documents, config=d2l.config, tokenizer=base.tokenizer)
  t = text_to_lora.generate_adapter(t2l.variables, descriptions, config=t2l.config, encoder=t2l.task_encoder(base))
  got = {f"d2l/{m}/{f}": _project(d.weights[m][f]) for m in d.weights for f in "ab"}
  got.update({f"t2l/{m}/{f}": _project(t.weights[m][f]) for m in t.weights for f in "ab"})
  reference = np.load(REFERENCE)
  assert sorted(got) == sorted(reference.files)
  assert d.rank == 6 * 8  # five chunks of the long document (its gates cut some of them) and the bias block
  for name, expected in reference.items():
    np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max(), err_msg=name)
  assert np.abs(reference["d2l/down/b"][0, :, :40]).max() > 0  # the chunks' B is in the reference, not just zeros
