"""Prompt formats, kept in one place so training, evaluation, the CLI and the experiments ask alike.

Doc-to-LoRA, a question about a document; the answer is completed as " {answer}":
  query_prompt(query)              "Question: {query}\\nAnswer:", without the document (the student,
                                   whose adapter carries the document)
  context_prompt(document, query)  "{document}\\n\\n" + query_prompt(query), the document in the prompt
                                   (the teacher, and the in-context baseline)
A published (chat-trained) Doc-to-LoRA's adapters are asked in Gemma's chat turn:
  chat_prompt(query)               "<start_of_turn>user\n{query}<end_of_turn>\n<start_of_turn>model\n"
  chat_context_prompt(document, query)  the same turn holding "{document}\n\n{query}" (their in-context form)
Text-to-LoRA, a task from the generated task library:
  task_prompt(task_input)          "Input: {input}\\nOutput:", which the base model completes with
  task_answer(output)              " {output}" (a leading space)
  task_context_prompt(description, input)  "{description}\n" + task_prompt(input): the base model
                                   told the task in its prompt (the in-context baseline)
  few_shot_prompt(pairs, input)    each worked example's prompt and answer, then a blank line,
                                   before the prompt of `input` (the few-shot baseline)
"""


def query_prompt(query: str) -> str:
  return f"Question: {query}\nAnswer:"


def context_prompt(document: str, query: str) -> str:
  return f"{document}\n\n{query_prompt(query)}"


def chat_prompt(query: str) -> str:
  return f"<start_of_turn>user\n{query}<end_of_turn>\n<start_of_turn>model\n"


def chat_context_prompt(document: str, query: str) -> str:
  return chat_prompt(f"{document.strip()}\n\n{query}")


def task_prompt(task_input: str) -> str:
  return f"Input: {task_input}\nOutput:"


def task_answer(output: str) -> str:
  return f" {output}"


def task_context_prompt(description: str, task_input: str) -> str:
  return f"{description}\n{task_prompt(task_input)}"


def few_shot_prompt(demonstrations, task_input: str, prompt=task_prompt) -> str:
  """`demonstrations`: (input, output) pairs of the task; `prompt`: how an input is asked."""
  return "".join(f"{prompt(i)}{task_answer(o)}\n\n" for i, o in demonstrations) + prompt(task_input)
