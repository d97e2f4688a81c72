"""What a record names a folder by (files.portable_path and the helpers built on it): the same on
every machine, relative to the repository or to WORKDIR."""

import shlex

import pytest

from lora_hyper import files


@pytest.fixture(autouse=True)
def _no_workdir(monkeypatch, tmp_path):
  # Neither the caller's $WORKDIR nor its current directory (the repository, under pytest) decides.
  monkeypatch.delenv("WORKDIR", raising=False)
  monkeypatch.chdir(tmp_path)


def test_a_path_in_the_repository_is_relative_to_it():
  assert files.portable_path(files.REPOSITORY / "lora_hyper" / "pretrained" / "d2l") == "lora_hyper/pretrained/d2l"
  assert files.portable_path(f"{files.REPOSITORY}/runs/x/../d2l/") == "runs/d2l"


def test_a_path_under_workdir_names_it(monkeypatch):
  monkeypatch.setenv("WORKDIR", "/data/me/runs")
  assert files.portable_path("/data/me/runs/qa/s1/hypernetwork") == "WORKDIR/qa/s1/hypernetwork"
  assert files.portable_path("/data/me/runs") == "WORKDIR"
  assert files.portable_path("/data/me/other/x") == "WORKDIR/other/x"  # outside it: the scratch rule


@pytest.mark.parametrize("path, portable", [
    ("/tmp/qa_curriculum/s3", "WORKDIR/qa_curriculum/s3"),
    ("/var/tmp/x", "WORKDIR/x"),
    ("/work/runs/t2l_shared/a/hypernetwork", "WORKDIR/t2l_shared/a/hypernetwork"),
    ("/work/scratch/qa_lookahead/k", "WORKDIR/qa_lookahead/k"),
    ("/home/u/x", "WORKDIR/x"),
    ("/root/out/gpu.json", "WORKDIR/gpu.json"),
    ("/work/sakana_ref", "WORKDIR/sakana_ref"),  # two names: the last one stays
])
def test_any_other_absolute_path_keeps_what_lies_below_its_scratch_root(path, portable):
  assert files.portable_path(path) == portable


@pytest.mark.parametrize("path", ["runs/d2l", "lora_hyper/pretrained/d2l_gemma3_270m", "gs://bucket/run",
                                  "/usr/bin/python3", "/dev/null"])
def test_relative_paths_urls_and_system_folders_are_left_alone(path):
  assert files.portable_path(path) == path


def test_a_path_in_the_current_directory_is_relative_to_it(tmp_path):
  assert files.portable_path(tmp_path / "runs" / "d2l") == "runs/d2l"


def test_a_command_makes_every_path_in_it_portable_and_reads_back_as_typed():
  argv = ["lora-hyper", "train", "--gin_param", "lora_hyper.train.workdir = '/tmp/d2l'",
          "--out", "/work/runs/d2l/hypernetwork", "--hypernetwork", "drill, 300 steps=/tmp/qa_copy/c1/hypernetwork",
          "--hypernetwork", "runs/x", "--note", "it's $HOME"]
  command = files.portable_command(argv)
  assert command == ("lora-hyper train --gin_param \"lora_hyper.train.workdir = 'WORKDIR/d2l'\" "
                     "--out WORKDIR/d2l/hypernetwork --hypernetwork 'drill, 300 steps=WORKDIR/qa_copy/c1/hypernetwork' "
                     "--hypernetwork runs/x --note 'it'\"'\"'s $HOME'")
  assert shlex.split(command)[3] == "lora_hyper.train.workdir = 'WORKDIR/d2l'"
  assert shlex.split(command)[-1] == "it's $HOME"


def test_text_and_records_keep_what_is_not_an_absolute_path():
  gin_text = ("train.workdir = '/work/runs/niah_stage3'\ntrain.init_from = \"/tmp/a/hypernetwork\"\n"
              "train.root = '${root}/s1/x'  # $OUT/x/y, https://host/x/y, a/b/c and 1/2/3 stay; ${1:-/tmp/r/s}\n")
  assert files.portable_text(gin_text) == (
      "train.workdir = 'WORKDIR/niah_stage3'\ntrain.init_from = \"WORKDIR/a/hypernetwork\"\n"
      "train.root = '${root}/s1/x'  # $OUT/x/y, https://host/x/y, a/b/c and 1/2/3 stay; ${1:-WORKDIR/r/s}\n")
  assert files.portable_text("cp a /tmp/x/ && ls /work/runs/y/") == "cp a WORKDIR/x/ && ls WORKDIR/y/"
  record = {"command": "run --x /tmp/a/b", "paths": ("/tmp/c/d", 3), "/tmp/e/f": {"n": 1.5, "none": None}}
  assert files.portable_record(record) == {"command": "run --x WORKDIR/a/b", "paths": ["WORKDIR/c/d", 3],
                                           "WORKDIR/e/f": {"n": 1.5, "none": None}}
