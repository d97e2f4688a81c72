"""Baselines the hypernetworks are measured against (gradient context distillation, task LoRAs)."""

from lora_hyper.baselines import context_distillation

__all__ = ["context_distillation"]
