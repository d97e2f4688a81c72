"""A generated Text-to-LoRA task library: small deterministic tasks a 270M base model does not
do out of the box, each with many natural-language descriptions.

Every `Task` has a stable id ("category/member"), a category (string, list, format, arithmetic,
classify, extract, compose), a family (the parameterised template it instantiates, e.g. "rot_k"),
a function input -> output, a seeded input generator and 24 descriptions: 4 core phrasings of
the task, each in 6 framings ("Please ...", "Task: ...", ...), core-major.

Held-out splits, both fixed:
  tasks         `HELD_OUT_TASK_IDS`: one member of a seen family with an unseen parameter
                (rot-7 while rot-1..6 and 8..13 train, add 7, mod 7, the <em> tag, ...) and one
                unseen combination of seen string operations.
  descriptions  the first 3/4 of each task's descriptions train, the last 1/4 are held out;
                being core-major, the held-out quarter is the 4th core phrasing, never seen in
                training for that task.

Prompt format, used everywhere: the base model reads `lora_hyper.prompts.task_prompt(input)`
("Input: {input}\\nOutput:") and completes `task_answer(output)` (" {output}", a leading space).

Modules: `_inputs` (word lists, input generators), `_functions` (the task functions), `_catalogue`
(`Task`, descriptions, the tasks and the held-out split), `_examples` (`TaskExamples`).
"""

from lora_hyper.data.tasks._catalogue import (
    HELD_OUT_TASK_IDS,
    Task,
    all_tasks,
    get_task,
    held_out_tasks,
    split_tasks,
    train_tasks,
)
from lora_hyper.data.tasks._examples import TaskExamples

__all__ = [
    "HELD_OUT_TASK_IDS",
    "Task",
    "TaskExamples",
    "all_tasks",
    "get_task",
    "held_out_tasks",
    "split_tasks",
    "train_tasks",
]
