"""The committed files name no machine's scratch folders (issue 63): results, saved configs and docs
name a folder relative to the repository, as runs/NAME or as WORKDIR/NAME (lora_hyper.files.portable_path),
so that they read the same on every checkout. tests/ is left out: its /tmp literals are test inputs."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]
# An absolute path below a scratch root, as files.portable_path sees one: a slash that continues no
# word, relative path, URL or shell expansion ($OUT/x, ${root}/x), then a folder's name.
SCRATCH = re.compile(r"(?<![\w.:/~$})\]])/(?:work|tmp|var/tmp|home|root)/[\w.@+$-]")


def committed_text_files() -> dict[str, str]:
  """Every committed file outside tests/ that is text (PNGs and other binaries hold no NUL-free UTF-8)."""
  listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
  texts = {}
  for name in filter(None, listed.decode().split("\0")):
    path = ROOT / name
    if name.startswith("tests/") or not path.is_file():
      continue
    data = path.read_bytes()
    if b"\0" in data:
      continue
    try:
      texts[name] = data.decode("utf-8")
    except UnicodeDecodeError:
      continue
  return texts


def scratch_paths(texts: dict[str, str]) -> list[str]:
  """`file:line: text` for every line that names an absolute scratch path."""
  return [f"{name}:{n}: {line.strip()[:160]}" for name, text in texts.items()
          for n, line in enumerate(text.splitlines(), 1) if SCRATCH.search(line)]


def test_the_pattern_finds_scratch_paths_and_nothing_else():
  found = scratch_paths({"a": "--out /work/runs/x\n'/tmp/qa/s1'\n`/home/u/x`\n/var/tmp/x\n/root/out/gpu.json",
                         "b": "runs/x WORKDIR/x $OUT/tmp/x ${root}/tmp/x gs://b/tmp/x a/tmp/x /tmp or /var/tmp"})
  assert [f.split(":")[:2] for f in found] == [["a", "1"], ["a", "2"], ["a", "3"], ["a", "4"], ["a", "5"]]


def test_no_committed_file_names_a_scratch_path():
  texts = committed_text_files()
  assert "README.md" in texts and "lora_hyper/pretrained/d2l_gemma3_270m/config.gin" in texts
  found = scratch_paths(texts)
  assert not found, (f"{len(found)} line(s) name a machine's scratch folder; name it relative to the repository "
                     "(runs/NAME) or as WORKDIR/NAME (lora_hyper.files.portable_path):\n" + "\n".join(found[:40]))
