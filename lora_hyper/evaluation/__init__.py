"""Evaluation: one evaluator that the CLI (`lora-hyper eval`) and the experiments call.

  evaluator.py  `evaluate(hyper, base, records, ...)`: adapters per document / description, the
                conditions (adapter, base, context, few_shot, a fixed or per-task saved LoRA, the
                other/random-source controls, gradient context distillation) and per-answer scores,
                overall and per record group
  metrics.py    the scores by name: rouge_l, contains, exact_match, digit_accuracy of generated
                answers; exact_match_eos, exact_match_line_end, token_accuracy teacher-forced
  data.py       record sources: BuiltinData, JsonlData, TfdsData, NiahData (haystacks by length),
                TaskData (the Text-to-LoRA task library's held-out or training tasks, by task)
  study.py      gin's view: EvalConfig, and `eval_sweep`, a grid over bindings written point by
                point (resumable, spread over processes) into one table, plot and answers file
"""

from lora_hyper.evaluation.data import builtin_records, read_records
from lora_hyper.evaluation.evaluator import CONDITIONS, Evaluation, evaluate, make_adapters
from lora_hyper.evaluation.metrics import METRICS

__all__ = ["CONDITIONS", "METRICS", "Evaluation", "builtin_records", "evaluate", "make_adapters", "read_records"]
