"""The trained hypernetworks shipped with the package for the embedded Gemma 3 270M: per kind, name ->
(folder here, what it is for); a kind's first is its default. Plain data, no JAX import, so that the
CLI's --help can say what each is for."""

from pathlib import Path

DIR = Path(__file__).parent

SHIPPED = {
    "doc_to_lora": {
        "general": ("d2l_gemma3_270m_general",
                    "a Doc-to-LoRA for short factual texts (a paragraph about a person, place, company, event, "
                    "product or organisation; experiments/doc_qa/recipe.gin): its adapters recall about two "
                    "thirds of a text's numbers, few of its other words and none of its made-up names"),
        "needle": ("d2l_gemma3_270m",
                   "a needle-in-a-haystack Doc-to-LoRA: it recalls a 'special magic number' hidden in filler "
                   "text up to 8K tokens and nothing else"),
    },
    "text_to_lora": {
        "tasks": ("t2l_gemma3_270m",
                  "a Text-to-LoRA trained on the library's 118 generated string/list/format/arithmetic/"
                  "classify/extract tasks; tasks unlike them mostly fail"),
    },
}


def default(kind: str) -> str:
  return next(iter(SHIPPED[kind]))


def folder(kind: str, name: str | None = None) -> Path:
  """The folder of the shipped hypernetwork `name` of `kind` (None: the default), existing or not."""
  name = default(kind) if name is None else name
  if name not in SHIPPED[kind]:
    raise ValueError(f"no shipped {kind} hypernetwork is called {name!r}; the shipped ones are "
                     f"{', '.join(SHIPPED[kind])}")
  return DIR / SHIPPED[kind][name][0]
