"""TfdsQASource error paths: it never downloads and says what to install or prepare."""

import sys

import pytest

from lora_hyper.data import tfds_source


def test_missing_data_says_how_to_prepare_it(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"tfds build squad --data_dir .* --file_format=array_record"):
    tfds_source.TfdsQASource("squad", "train", tmp_path)
  (tmp_path / "squad").mkdir()  # present but empty counts as missing
  with pytest.raises(FileNotFoundError, match="tfds build squad/v1.1"):
    tfds_source.TfdsQASource("squad/v1.1:3.0.0", "train", tmp_path)


def test_missing_package_says_what_to_install(tmp_path, monkeypatch):
  (tmp_path / "squad" / "v1.1").mkdir(parents=True)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail even where installed
  with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
    tfds_source.TfdsQASource("squad", "validation", tmp_path)
