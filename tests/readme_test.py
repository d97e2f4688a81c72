"""Every command example in README.md that shows its answer (`# answers: `X`` after it) gives that
answer: a bash block's `lora-hyper` commands, up to its last annotated one, run in order on the
embedded model, and each annotated command prints exactly its answer."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANSWER = re.compile(r"#\s*answers:\s*`([^`]*)`")


def readme_examples(text: str) -> list[list[tuple[list[str], str | None]]]:
  """Per bash block with an answer annotation: its lora-hyper commands up to the last annotated one,
  each as (arguments, the answer shown or None). An annotation on a line of its own is the answer of
  the command before it."""
  blocks = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    commands: list[tuple[list[str], str | None]] = []
    for line in block.replace("\\\n", " ").splitlines():
      parts: list[list[str]] = [[]]  # the line's commands between &&; a # outside quotes starts a comment
      for word in shlex.split(line, comments=True):
        if word == "&&":
          parts.append([])
        else:
          parts[-1].append(word)
      for part in parts:
        names = [i for i, w in enumerate(part) if w.endswith("lora-hyper")]
        if names:
          commands.append((part[names[0] + 1:], None))
      shown = ANSWER.search(line)
      if shown and commands:
        commands[-1] = (commands[-1][0], shown.group(1))
    annotated = [i for i, (_, answer) in enumerate(commands) if answer is not None]
    if annotated:
      blocks.append(commands[:annotated[-1] + 1])
  return blocks


def test_answer_annotations_are_read_from_the_readme():
  text = ("```bash\npython3 -m venv .venv && .venv/bin/lora-hyper internalize a.txt --out x && "
          "lora-hyper ask --adapter x \"What? # not a comment\"\n# answers: `42`\n"
          "lora-hyper ask --adapter x \\\n  'Again?'   # answers: `no` (wrong)\nlora-hyper export x\n```\n"
          "```bash\nlora-hyper eval D2L_DIR\n```\n")
  assert readme_examples(text) == [[(["internalize", "a.txt", "--out", "x"], None),
                                    (["ask", "--adapter", "x", "What? # not a comment"], "42"),
                                    (["ask", "--adapter", "x", "Again?"], "no")]]
  assert len(readme_examples((ROOT / "README.md").read_text())) >= 2  # the main job, Text-to-LoRA's examples


@pytest.mark.real_model
@pytest.mark.parametrize("index", range(len(readme_examples((ROOT / "README.md").read_text()))))
def test_readme_commands_give_the_answers_they_show(index, tmp_path):
  commands = readme_examples((ROOT / "README.md").read_text())[index]
  (tmp_path / "experiments").symlink_to(ROOT / "experiments")  # the README's files, from the repository root
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  for args, answer in commands:
    done = subprocess.run([sys.executable, "-m", "lora_hyper.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"lora-hyper {shlex.join(args)}: {done.stderr[-2000:]}"
    if answer is not None:
      assert done.stdout.strip() == answer, f"lora-hyper {shlex.join(args)} printed {done.stdout!r}; README: {answer!r}"
