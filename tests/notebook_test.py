"""The Colab notebook, executed headless (nbclient) on CPU on a tiny random base model: every cell
runs as on Colab, except the network install (LORA_HYPER_NOTEBOOK_SKIP_INSTALL=1)."""

from pathlib import Path

import nbclient
import nbformat

import xla_flags
from tiny_model import write_small_sakana_checkpoint, write_tiny_model


NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "lora_hyper_colab.ipynb"


def test_notebook_runs_headless_on_a_tiny_model(tmp_path, monkeypatch):
  model = write_tiny_model(tmp_path / "model")
  checkpoint = write_small_sakana_checkpoint(model, tmp_path / "sakana")
  for name, value in {"LORA_HYPER_NOTEBOOK_SKIP_INSTALL": "1", "LORA_HYPER_NOTEBOOK_TINY": "1",
                      "LORA_HYPER_NOTEBOOK_BASE": str(model), "LORA_HYPER_NOTEBOOK_SAKANA": str(checkpoint),
                      "JAX_PLATFORMS": "cpu",
                      "XLA_FLAGS": xla_flags.FAST_COMPILE}.items():
    monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.get("outputs", []))
  assert "base model:" in outputs and "with the adapter:" in outputs and "document in prompt:" in outputs
  assert "with the task adapter" in outputs and '"peft_type": "LORA"' in outputs
  assert "imported: " in outputs and "with the adapter:" in outputs.split("imported: ")[1]  # Sakana's format
  assert "the tiny test model has no trained doc_to_lora hypernetwork" in outputs  # the stand-in is announced
  assert sorted(p.name for p in (tmp_path / "peft_task_adapter").iterdir()) == [
      "adapter_config.json", "adapter_model.safetensors"]
  assert (tmp_path / "notes_adapter" / "adapter.safetensors").is_file()


def test_install_cell_asks_for_a_source_outside_a_checkout(tmp_path, monkeypatch):
  """On Colab with nothing to install from, the first cell stops with what to set (no pip call)."""
  import pytest

  install = next(c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
  assert "pip" in install.source
  monkeypatch.delenv("LORA_HYPER_NOTEBOOK_SKIP_INSTALL", raising=False)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(RuntimeError, match="set SOURCE"):
    exec(install.source, {})
