"""Tiny random transformers Gemma models (the PyTorch references) and our params from them."""

import torch
import transformers

from lora_hyper.model import config as config_lib
from lora_hyper.model import weights

TINY_HF = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
               max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=1)


def tiny_hf_model(family: str = "gemma3"):
  """A fresh float32 Gemma3ForCausalLM / Gemma2ForCausalLM (seed 0) in eval mode."""
  torch.manual_seed(0)
  if family == "gemma3":
    hf_cfg = transformers.Gemma3TextConfig(**TINY_HF, sliding_window_pattern=2, rope_theta=1_000_000.0)
    model = transformers.Gemma3ForCausalLM(hf_cfg)
  else:
    hf_cfg = transformers.Gemma2Config(**TINY_HF)
    model = transformers.Gemma2ForCausalLM(hf_cfg)
  model = model.float().eval()
  # Non-trivial norm weights, so the (1 + w) convention is exercised.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.normal_(0.0, 0.3)
  return model


def ours_from_hf(model):
  """(our config, our params) converted from a transformers model's config and state dict."""
  cfg = config_lib.from_hf_config(model.config.to_dict())
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return cfg, weights.params_from_hf(state, cfg)
