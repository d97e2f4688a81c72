"""Every command example in README.md that shows its answer (`# answers: X` after it) gives that
answer: the block's `lora-hyper` commands up to the annotation run in order, on the embedded model,
and the last one's output must hold X."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANSWER = re.compile(r"#\s*answers:\s*(.+?)\s*$")


def _code(line: str) -> str:
  """The line without its trailing comment (a # outside quotes)."""
  quote = None
  for i, c in enumerate(line):
    if c in "'\"" and quote in (None, c):
      quote = None if quote else c
    elif c == "#" and quote is None:
      return line[:i]
  return line


def readme_examples(text: str) -> list[tuple[list[list[str]], str]]:
  """(the lora-hyper commands of a bash block up to an answer annotation, as argument lists; the answer)."""
  examples = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    commands: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
      for part in _code(line).split("&&"):
        words = shlex.split(part)
        names = [i for i, w in enumerate(words) if w.endswith("lora-hyper")]
        if names:
          commands.append(words[names[0] + 1:])
      shown = ANSWER.search(line)
      if shown:
        examples.append((list(commands), shown.group(1)))
  return examples


def test_answer_annotations_are_read_from_the_readme():
  text = ("```bash\npython3 -m venv .venv && .venv/bin/lora-hyper internalize a.txt --out x && "
          "lora-hyper ask --adapter x \"What? # not a comment\"\n# answers: 42\n"
          "lora-hyper ask --adapter x \\\n  'Again?'   # answers: 43\n```\n")
  assert readme_examples(text) == [
      ([["internalize", "a.txt", "--out", "x"], ["ask", "--adapter", "x", "What? # not a comment"]], "42"),
      ([["internalize", "a.txt", "--out", "x"], ["ask", "--adapter", "x", "What? # not a comment"],
        ["ask", "--adapter", "x", "Again?"]], "43")]
  assert len(readme_examples((ROOT / "README.md").read_text())) >= 3  # the main job and the Text-to-LoRA examples


@pytest.mark.real_model
@pytest.mark.parametrize("index", range(len(readme_examples((ROOT / "README.md").read_text()))))
def test_readme_command_gives_the_answer_it_shows(index, tmp_path):
  commands, answer = readme_examples((ROOT / "README.md").read_text())[index]
  (tmp_path / "experiments").symlink_to(ROOT / "experiments")  # the README's files, from the repository root
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  for args in commands:
    done = subprocess.run([sys.executable, "-m", "lora_hyper.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"lora-hyper {shlex.join(args)}: {done.stderr[-2000:]}"
  assert answer in done.stdout, f"lora-hyper {shlex.join(commands[-1])} printed {done.stdout!r}, README shows {answer!r}"
