"""Reference outputs of Sakana AI's OFFICIAL Doc-to-LoRA PyTorch code, on a tiny random setup.

Standalone: it does not import lora_hyper. It runs in a separate virtualenv that has the official
code's own dependency versions (their uv.lock: transformers 4.51.3, peft 0.15.2, einops 0.8.1,
jaxtyping 0.3.2, datasets 3.6.0, accelerate 1.6.0) with torch 2.13.0 (CPU), and with their `src`
(SakanaAI/doc-to-lora at commit baa85db) given by --src. SAKANA_VENV, SAKANA_SRC and SAKANA_REF stand
for folders of your choosing outside the repository: that virtualenv, their extracted code, and the
reference this script writes (benchmarks/sakana_parity.py reads it):

  python3.11 -m venv SAKANA_VENV
  SAKANA_VENV/bin/pip install torch==2.13.0
  SAKANA_VENV/bin/pip install transformers==4.51.3 peft==0.15.2 einops==0.8.1 \
      jaxtyping==0.3.2 datasets==3.6.0 accelerate==1.6.0 numpy pyyaml
  git -C <mirror of SakanaAI/doc-to-lora> archive HEAD -- src | tar -x -C SAKANA_SRC
  SAKANA_VENV/bin/python benchmarks/sakana_official_reference.py \
      --src SAKANA_SRC/src --out SAKANA_REF

What it does (every hypernetwork step goes through their classes and functions):
 1. A tiny random Gemma-2 causal LM (transformers' Gemma2ForCausalLM, float32, eager attention),
    saved with save_pretrained to OUT/base (config.json + model.safetensors, no tokenizer).
 2. Their hypernetwork for it, built the way their train.py builds it (get_lora_config ->
    get_model -> get_hypernet_config -> ModulatedPretrainedModel), in the "small" shapes
    (latent 32, 8 latent queries, 9 encoder blocks + 1 decoder block, per-layer processing,
    layer-to-layer per-layer-activations ctx encoder, not quantized). Every hypernetwork tensor is
    then overwritten with seeded random values, and the checkpoint is written as their trainer
    writes it: torch.save(ModulatedPretrainedModel.state_dict()) to OUT/pytorch_model.bin
    (HF Trainer._save for a non-PreTrainedModel with save_safetensors=False).
 3. That file is reloaded with their loader (torch.load(weights_only=False) +
    ModulatedPretrainedModel.from_state_dict) and, with the reloaded model only:
    a. a one-chunk templated document -> ctx features (ctx_encoder), generate_weights, combine_lora;
    b. a longer templated document split by their split_too_long_ctx (eval mode, chunk length 32),
       right-padded as their generation_collator pads chunks -> generate_weights, combine_lora;
    c. logits of a 12-token query through the base model with their patched down_proj LoRA
       forward (ModulatedPretrainedModel.forward with n_queries=1; cross-checked against the
       last-position logits of their generate()), for both documents, and the plain base logits.
 4. OUT/reference.npz with all arrays and OUT/reference.json describing them.

Runtime patches (their source files are not modified; all are applied to module attributes
here, after import, and are listed in reference.json):
 * Their perceiver (ctx_to_lora/modeling/idefics2.py) only has a flash-attention-2 path: it calls
   flash_attn.bert_padding.unpad_input and transformers' _flash_attention_forward, which calls
   flash_attn_varlen_func. flash-attn needs CUDA, so exact PyTorch equivalents of those two
   flash-attn functions are installed (non-causal, no dropout, no window, no softcap: the only
   arguments their code passes); transformers' own _flash_attention_forward still runs, and so
   does the check that refuses flash-attention without the package (patched on their
   Idefics2PreTrainedModel class only).
 * Their get_model hard-codes device_map="cuda" and bfloat16 defaults; it is wrapped to load on the
   CPU in float32 (the ctx encoder copy is built inside ModulatedPretrainedModel with those
   defaults, so base_model_kwargs cannot reach it).
Nothing else is stubbed: bitsandbytes and vllm are not imported on this path, and flash-attn is
only imported by their code when transformers reports it available.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

SEED = 1234
R = 8  # LoRA rank
LATENT = 32  # hypernetwork latent size D
N_LATENT_QUERIES = 8
N_BLOCKS = 9
MAX_CHUNK_LEN = 32  # split_too_long_ctx's max_chunk_len for document (b)
GEMMA_AFFIX_MODEL = "google/gemma-2-2b-it"  # key of their CTX_AFFIXES table
PREFIX = [2, 106, 1645, 110]  # <bos><start_of_turn>user\n + "" + \n\n (their CTX_AFFIXES)
SUFFIX = [107, 108, 106, 2516, 108]  # <end_of_turn>\n<start_of_turn>model\n

BASE_CONFIG = dict(
  hidden_size=64,
  intermediate_size=128,
  num_hidden_layers=3,
  num_attention_heads=4,
  num_key_value_heads=2,
  head_dim=16,
  vocab_size=4096,
  sliding_window=8,
  attn_logit_softcapping=50.0,
  final_logit_softcapping=30.0,
  query_pre_attn_scalar=16,
  max_position_embeddings=256,
  initializer_range=0.1,  # larger than the default 0.02: activations and softcaps not negligible
  torch_dtype="float32",
)


# ----------------------------------------------------------------------------------------------
# Runtime patches (see the module docstring).
# ----------------------------------------------------------------------------------------------


def _unpad_input(hidden_states, attention_mask, unused_mask=None):
  """PyTorch copy of flash_attn.bert_padding.unpad_input (flash-attn >= 2.6, 5 outputs)."""
  all_masks = (attention_mask + unused_mask) if unused_mask is not None else attention_mask
  seqlens_in_batch = all_masks.sum(dim=-1, dtype=torch.int32)
  used_seqlens_in_batch = attention_mask.sum(dim=-1, dtype=torch.int32)
  indices = torch.nonzero(all_masks.flatten(), as_tuple=False).flatten()
  max_seqlen_in_batch = seqlens_in_batch.max().item()
  cu_seqlens = F.pad(torch.cumsum(seqlens_in_batch, dim=0, dtype=torch.int32), (1, 0))
  flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
  return flat[indices], indices, cu_seqlens, max_seqlen_in_batch, used_seqlens_in_batch


def _flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None,
                            max_seqlen_k=None, dropout_p=0.0, softmax_scale=None, causal=False,
                            **kwargs):
  """Exact softmax attention with flash_attn_varlen_func's interface and semantics.

  q [total_q, H, hd], k/v [total_k, Hkv, hd]; segment i is rows cu_seqlens[i]:cu_seqlens[i+1]
  of q and of k/v. q head h reads kv head h // (H // Hkv). Only what their perceiver uses.
  """
  del max_seqlen_q, max_seqlen_k
  unsupported = {key: val for key, val in kwargs.items() if key != "deterministic"}
  if causal or dropout_p or unsupported:
    raise NotImplementedError(f"stub: causal={causal} dropout={dropout_p} {unsupported}")
  n_heads, head_dim = q.shape[1], q.shape[2]
  if k.shape[1] != n_heads:
    k = k.repeat_interleave(n_heads // k.shape[1], dim=1)
    v = v.repeat_interleave(n_heads // v.shape[1], dim=1)
  scale = softmax_scale if softmax_scale is not None else head_dim**-0.5
  out = torch.empty_like(q)
  for i in range(len(cu_seqlens_q) - 1):
    qs, qe = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
    ks, ke = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
    scores = torch.einsum("qhd,khd->hqk", q[qs:qe].float(), k[ks:ke].float()) * scale
    probs = torch.softmax(scores, dim=-1)
    out[qs:qe] = torch.einsum("hqk,khd->qhd", probs, v[ks:ke].float()).to(q.dtype)
  return out


def _flash_attn_func(*args, **kwargs):
  raise NotImplementedError("stub: their perceiver only uses the varlen path")


def install_patches(device: str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
  """Applies the runtime patches; returns their descriptions for reference.json."""
  import transformers.modeling_flash_attention_utils as fa_utils
  from ctx_to_lora.modeling import hypernet, idefics2

  # transformers' _flash_attention_forward resolves these module globals at call time.
  fa_utils.flash_attn_varlen_func = _flash_attn_varlen_func
  fa_utils.flash_attn_func = _flash_attn_func
  fa_utils._flash_supports_window_size = False
  # idefics2.py imports these two names only `if is_flash_attn_2_available()`.
  idefics2.unpad_input = _unpad_input
  idefics2._flash_attention_forward = fa_utils._flash_attention_forward

  def _accept_flash_attn_2(cls, config, *args, hard_check_only=False, **kwargs):
    if not hard_check_only:
      config._attn_implementation = "flash_attention_2"
    return config

  idefics2.Idefics2PreTrainedModel._check_and_enable_flash_attn_2 = classmethod(
    _accept_flash_attn_2)

  # get_model(..., device="cuda", dtype=torch.bfloat16) defaults -> CPU float32.
  if not getattr(hypernet.get_model, "_cpu_fp32", False):
    wrapped = functools.partial(hypernet.get_model, device=device, dtype=dtype)
    wrapped._cpu_fp32 = True
    hypernet.get_model = wrapped

  return [
    "transformers.modeling_flash_attention_utils.flash_attn_varlen_func := exact PyTorch "
    "varlen softmax attention (non-causal, no dropout); flash_attn_func := raises",
    "ctx_to_lora.modeling.idefics2.unpad_input := PyTorch copy of "
    "flash_attn.bert_padding.unpad_input; idefics2._flash_attention_forward := transformers' own",
    "Idefics2PreTrainedModel._check_and_enable_flash_attn_2 := accept flash_attention_2 "
    "without the flash_attn package",
    f"ctx_to_lora.modeling.hypernet.get_model := get_model(device={device!r}, dtype={dtype})",
  ]


# ----------------------------------------------------------------------------------------------
# 1. Tiny random Gemma-2 base model.
# ----------------------------------------------------------------------------------------------


def make_base(out_dir: str) -> str:
  from transformers import Gemma2Config, Gemma2ForCausalLM

  torch.manual_seed(SEED)
  config = Gemma2Config(**BASE_CONFIG, attn_implementation="eager")
  model = Gemma2ForCausalLM(config).to(torch.float32).eval()
  # Gemma's RMSNorm scales by (1 + w) and inits w = 0: make w nonzero so that the (1 + w)
  # convention is exercised.
  gen = torch.Generator().manual_seed(SEED + 1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(0.3 * torch.randn(p.shape, generator=gen))
  base_dir = os.path.abspath(os.path.join(out_dir, "base"))
  model.save_pretrained(base_dir, safe_serialization=True)
  return base_dir


# ----------------------------------------------------------------------------------------------
# 2. Their hypernetwork, randomised, saved as their trainer saves it.
# ----------------------------------------------------------------------------------------------


def build_modulated_model(base_dir: str):
  """Follows train.py's model setup (not from_pretrained_checkpoint) for the small shapes."""
  from ctx_to_lora.configs import AggregatorArguments, CtxEncoderArguments, HypernetArguments
  from ctx_to_lora.model_loading import get_lora_config
  from ctx_to_lora.modeling import hypernet

  peft_config = get_lora_config(base_dir, target_modules=["down_proj"], lora_r=R,
                                lora_dropout=0.0)
  base_model = hypernet.get_model(base_dir, train=False, requires_grad=False,
                                  use_flash_attn=False, peft_config=peft_config)
  hypernet_args = HypernetArguments(latent_size=LATENT, per_rank_gen=True,
                                    per_layer_processing=True)
  aggregator_args = AggregatorArguments(aggregator_type="perceiver",
                                        n_latent_queries=N_LATENT_QUERIES,
                                        num_blocks=N_BLOCKS, num_self_attn_per_block=0)
  ctx_encoder_args = CtxEncoderArguments(ctx_encoder_model_name_or_path=None,
                                         ctx_encoder_type="per_layer_activations",
                                         quantize_ctx_encoder=False)
  hypernet_config = hypernet.get_hypernet_config(base_model, base_model.config, hypernet_args,
                                                 aggregator_args, ctx_encoder_args)
  # train.py sets layer_idx after get_hypernet_config (unused by per_layer_activations).
  ctx_encoder_args.layer_idx = base_model.config.num_hidden_layers // 4
  return hypernet.ModulatedPretrainedModel(base_model, hypernet_config, ctx_encoder_args)


def randomise_hypernet(hyper: torch.nn.Module) -> dict[str, str]:
  """Overwrites every hypernetwork tensor with seeded values; returns the rule used per key."""
  gen = torch.Generator().manual_seed(SEED + 2)

  def normal(shape, mean, std):
    return mean + std * torch.randn(shape, generator=gen)

  rules = {}
  with torch.no_grad():
    for name, p in sorted(hyper.named_parameters()):
      shape = p.shape
      if name.startswith(("scaler_A.", "scaler_B.")):
        rule, val = "1 + 0.2 N", normal(shape, 1.0, 0.2)
      elif name.startswith(("bias_A.", "bias_B.")):
        rule, val = "0.05 N", normal(shape, 0.0, 0.05)
      elif name == "head.weight":  # [L, D, d_in + d_out]
        rule, val = "0.05 N", normal(shape, 0.0, 0.05)
      elif name.endswith("latents_q"):
        rule, val = "N", normal(shape, 0.0, 1.0)
      elif "layernorm" in name or name in ("layers.0.layers.0.weight", "layers.0.layers.4.weight"):
        rule, val = "1 + 0.2 N (norm scale)", normal(shape, 1.0, 0.2)
      elif name in ("layers.0.layers.0.bias", "layers.0.layers.4.bias"):
        rule, val = "0.1 N (LayerNorm bias)", normal(shape, 0.0, 0.1)
      elif name in ("layers.0.layers.1.weight", "layers.0.layers.3.weight"):  # EinMix [L, in, out]
        rule, val = "N / sqrt(in)", normal(shape, 0.0, 1.0 / math.sqrt(shape[1]))
      elif name in ("layers.0.layers.1.bias", "layers.0.layers.3.bias"):
        rule, val = "0.1 N", normal(shape, 0.0, 0.1)
      elif name.endswith("_proj.weight"):  # nn.Linear [out, in]
        rule, val = "N / sqrt(in)", normal(shape, 0.0, 1.0 / math.sqrt(shape[1]))
      else:
        raise ValueError(f"no randomisation rule for hypernetwork tensor {name} {tuple(shape)}")
      p.copy_(val.to(p.dtype))
      rules[name] = rule
  # Buffers would be saved too: there are none, but fail loudly if a new version adds some.
  assert not list(hyper.named_buffers()), list(hyper.named_buffers())
  return rules


# ----------------------------------------------------------------------------------------------
# 3. Inputs and their computations.
# ----------------------------------------------------------------------------------------------


def pad_chunks(chunks: list[list[int]]):
  """The ctx part of their generation_collator: right-pad with 0, attention mask of ones."""
  ids = [torch.tensor(c) for c in chunks]
  mask = [torch.ones_like(x) for x in ids]
  ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=0)
  mask = torch.nn.utils.rnn.pad_sequence(mask, batch_first=True, padding_value=0)
  return ids, mask


def lora_for_document(model, ctx_ids, ctx_mask):
  """generate_weights + combine_lora for one document of ctx_ids.shape[0] chunks."""
  from ctx_to_lora.modeling.lora_merger import combine_lora

  n_chunks = torch.tensor([ctx_ids.shape[0]], dtype=torch.int32)
  with torch.no_grad():
    loras, _ = model.generate_weights(ctx_ids, ctx_mask)
    combined = combine_lora(loras, n_chunks, lora_bias=model.hypernet.get_head_bias())
  return loras["down_proj"], combined["down_proj"], n_chunks


def adapted_logits(model, ctx_ids, ctx_mask, n_chunks, query):
  """Logits of `query` with the document's generated LoRA, through their forward() and generate()."""
  q = torch.tensor([query])
  q_mask = torch.ones_like(q)
  with torch.no_grad():
    out = model(ctx_ids=ctx_ids, ctx_attn_mask=ctx_mask, n_ctx_chunks=n_chunks,
                n_queries=torch.ones(1, dtype=torch.int32), input_ids=q, attention_mask=q_mask)
  logits = out.logits[0].float()
  # Their inference entry point: generate() (generate_weights, combine_lora, patched forward).
  gen = model.generate(ctx_ids=ctx_ids, ctx_attn_mask=ctx_mask, n_ctx_chunks=n_chunks,
                       input_ids=q, attention_mask=q_mask, max_new_tokens=1, do_sample=False,
                       output_logits=True, return_dict_in_generate=True, pad_token_id=0)
  last = gen.logits[0][0].float()
  err = (last - logits[-1]).abs().max().item()
  assert err < 1e-4, f"generate() and forward() disagree on the last position: {err}"
  return logits


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--src", required=True, help="the official repository's src/ folder")
  parser.add_argument("--out", required=True, help="output folder")
  args = parser.parse_args()
  sys.path.insert(0, os.path.abspath(args.src))
  torch.set_num_threads(1)
  os.makedirs(args.out, exist_ok=True)
  out_dir = os.path.abspath(args.out)

  import transformers
  import peft
  from ctx_to_lora.data.processing import split_too_long_ctx
  from ctx_to_lora.modeling.hypernet import ModulatedPretrainedModel

  patches = install_patches()

  # ---- 1 + 2: base model, hypernetwork, checkpoint.
  base_dir = make_base(out_dir)
  model = build_modulated_model(base_dir)
  rules = randomise_hypernet(model.hypernet)
  ckpt_path = os.path.join(out_dir, "pytorch_model.bin")  # transformers' WEIGHTS_NAME
  written = model.state_dict()
  torch.save(written, ckpt_path)
  written = {k: v.clone() for k, v in written.items() if isinstance(v, torch.Tensor)}
  del model

  # ---- 3: reload with their loader; everything below uses the reloaded model only.
  sd = torch.load(ckpt_path, weights_only=False, map_location="cpu")
  n_tensors = sum(isinstance(v, torch.Tensor) for v in sd.values())
  model = ModulatedPretrainedModel.from_state_dict(sd, train=False, use_sequence_packing=False,
                                                   use_flash_attn=False)
  model.eval()
  reloaded = model.hypernet.state_dict()
  assert reloaded.keys() == written.keys()
  assert all(torch.equal(reloaded[k], written[k]) for k in written), "reload changed tensors"
  cfg = model.hypernet_config
  n_layers = len(cfg.layer_indices)
  d_in, d_out = cfg.feature_sizes[0]["down_proj"], cfg.feature_sizes[1]["down_proj"]

  rng = np.random.default_rng(SEED + 3)
  body_a = rng.integers(200, 4000, size=40).tolist()
  body_b = rng.integers(200, 4000, size=70).tolist()
  query = [2] + rng.integers(200, 4000, size=11).tolist()  # <bos> + 11 random ids, no template
  ids_a = PREFIX + body_a + SUFFIX
  ids_b = PREFIX + body_b + SUFFIX

  # (a) one chunk.
  ctx_a = torch.tensor([ids_a])
  mask_a = torch.ones_like(ctx_a)
  with torch.no_grad():
    features_a = model.ctx_encoder(input_ids=ctx_a, attention_mask=mask_a)  # [1, L, T, d]
  chunk_a, comb_a, nch_a = lora_for_document(model, ctx_a, mask_a)

  # (b) several chunks, as their evaluation splits and pads them.
  split = split_too_long_ctx({"ctx_ids": ids_b}, model_name_or_path=GEMMA_AFFIX_MODEL,
                             num_chunk_probs=None, max_chunk_len=MAX_CHUNK_LEN, min_chunk_len=0,
                             max_num_split=None, is_train=False)
  chunks_b = split["ctx_ids"]
  assert split["n_ctx_chunks"] == len(chunks_b) > 1
  ctx_b, mask_b = pad_chunks(chunks_b)
  with torch.no_grad():
    features_b = model.ctx_encoder(input_ids=ctx_b, attention_mask=mask_b)  # [n, L, T, d]
  chunk_b, comb_b, nch_b = lora_for_document(model, ctx_b, mask_b)

  # (c) logits.
  logits_a = adapted_logits(model, ctx_a, mask_a, nch_a, query)
  logits_b = adapted_logits(model, ctx_b, mask_b, nch_b, query)
  base = transformers.AutoModelForCausalLM.from_pretrained(
    base_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
  with torch.no_grad():
    logits_base = base(input_ids=torch.tensor([query])).logits[0].float()
    model.reset()  # their reset(): restores the peft (disabled-adapter) down_proj forward
    logits_reset = model.base_model(input_ids=torch.tensor([query])).logits[0].float()
  assert (logits_reset - logits_base).abs().max() < 1e-5

  # ---- 4: write.
  A_a, B_a = comb_a["A"][0], comb_a["B"][0]
  A_b, B_b = comb_b["A"][0], comb_b["B"][0]
  arrays = {
    "ctx_ids_a": (np.array(ids_a, np.int32),
                  "document (a): templated ctx ids, PREFIX + 40 random body ids + SUFFIX",
                  "script input"),
    "ctx_body_b": (np.array(body_b, np.int32), "document (b): the 70 random body ids",
                   "script input"),
    "ctx_ids_b_templated": (np.array(ids_b, np.int32),
                            "document (b) before splitting: PREFIX + body + SUFFIX",
                            "script input"),
    "ctx_ids_b_padded": (ctx_b.numpy().astype(np.int32),
                         "document (b) chunks, right-padded with 0 as generation_collator pads",
                         "ctx_to_lora.data.processing.split_too_long_ctx(is_train=False, "
                         f"max_chunk_len={MAX_CHUNK_LEN}, model_name_or_path={GEMMA_AFFIX_MODEL!r})"),
    "ctx_mask_b": (mask_b.numpy().astype(np.int32), "1 = real token of that chunk, 0 = padding",
                   "generation_collator's padding"),
    "query_ids": (np.array(query, np.int32), "query: <bos> + 11 random ids, no chat template",
                  "script input"),
    "features_a": (features_a[0].numpy(),
                   "per-layer ctx features of document (a): entry l feeds the LoRA of layer l "
                   "(0 = scaled embeddings, 1..L-2 = residual outputs, L-1 = final-normed)",
                   "ModulatedPretrainedModel.ctx_encoder (PerLayerActivations)"),
    "features_b": (features_b.numpy(),
                   "per-layer ctx features of document (b) chunks (padded positions: "
                   "whatever the encoder gives there; the perceiver drops them)",
                   "ModulatedPretrainedModel.ctx_encoder (PerLayerActivations)"),
    "A_a": (A_a.numpy(), "combined LoRA A of document (a): rows 0..r-1 generated, "
            "r..2r-1 the bias block (bias_A, no scaler)",
            "ModulatedPretrainedModel.generate_weights + lora_merger.combine_lora"),
    "B_a": (B_a.numpy(), "combined LoRA B of document (a), stored [rank, d_out]",
            "ModulatedPretrainedModel.generate_weights + lora_merger.combine_lora"),
    "A_b": (A_b.numpy(), "combined LoRA A of document (b): chunk c -> rows c*r..c*r+r-1, "
            "then the bias block", "generate_weights + combine_lora"),
    "B_b": (B_b.numpy(), "combined LoRA B of document (b)", "generate_weights + combine_lora"),
    "chunk_A_b": (chunk_b["A"].numpy(), "per-chunk generated A of document (b) before "
                  "combine_lora (scaler_A applied)", "ModulatedPretrainedModel.generate_weights"),
    "chunk_B_b": (chunk_b["B"].numpy(), "per-chunk generated B of document (b) before "
                  "combine_lora (scaler_B applied)", "ModulatedPretrainedModel.generate_weights"),
    "logits_a": (logits_a.numpy(), "query logits with document (a)'s LoRA on every down_proj",
                 "ModulatedPretrainedModel.forward(n_queries=[1]) (patched lora_forward); last "
                 "position checked against generate(output_logits=True)"),
    "logits_b": (logits_b.numpy(), "query logits with document (b)'s LoRA",
                 "ModulatedPretrainedModel.forward(n_queries=[1]); checked against generate()"),
    "logits_base": (logits_base.numpy(), "query logits of the plain base model",
                    "transformers Gemma2ForCausalLM.from_pretrained(base); equal to the "
                    "reloaded model's base after ModulatedPretrainedModel.reset()"),
  }
  np.savez(os.path.join(out_dir, "reference.npz"), **{k: v[0] for k, v in arrays.items()})

  base_cfg = json.load(open(os.path.join(base_dir, "config.json")))
  desc = {
    "produced_by": "benchmarks/sakana_official_reference.py",
    "official_code": "SakanaAI/doc-to-lora baa85db (src/ctx_to_lora)",
    "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                 "peft": peft.__version__, "numpy": np.__version__},
    "seed": SEED,
    "files": {"base": "base/ (config.json, model.safetensors)",
              "checkpoint": "pytorch_model.bin (their format: hypernet state dict + "
                            "base_model_name_or_path, hypernet_config, ctx_encoder_args)"},
    "checkpoint_tensors": n_tensors,
    "base_model_name_or_path": base_dir,  # as stored in the checkpoint (from_state_dict pops it)
    "base_config": base_cfg,
    "sliding_layers": [i for i in range(n_layers) if i % 2 == 0],
    "hypernet": {"L": n_layers, "r": R, "D": LATENT, "d_in": d_in, "d_out": d_out,
                 "n_latent_queries": N_LATENT_QUERIES, "num_blocks": N_BLOCKS,
                 "lora_alpha": model.peft_config.lora_alpha,
                 "lora_scale_in_forward": "lora_alpha (not alpha / r)"},
    "randomisation": rules,
    "document_b_chunks": {"n_chunks": len(chunks_b), "lengths": [len(c) for c in chunks_b]},
    "runtime_patches": patches,
    "precision": "float32 everywhere on CPU; the published model runs bf16 with flash-attention "
                 "and a 4-bit ctx encoder, so these are the exact-math reference values",
    "arrays": {name: {"shape": list(v[0].shape), "dtype": str(v[0].dtype), "meaning": v[1],
                      "produced_by": v[2]} for name, v in arrays.items()},
  }
  with open(os.path.join(out_dir, "reference.json"), "w") as f:
    json.dump(desc, f, indent=1)

  # ---- sanity checks: non-trivial outputs.
  for name in ("A_a", "B_a", "A_b", "B_b", "logits_a", "logits_b", "logits_base", "features_a"):
    assert np.isfinite(arrays[name][0]).all(), name
  assert np.abs(B_a.numpy()[:, :R]).max() > 1e-3 and np.abs(B_b.numpy()).max() > 1e-3
  for name in ("logits_a", "logits_b"):
    diff = np.abs(arrays[name][0] - logits_base.numpy()).max()
    assert diff > 1e-3, f"{name} equals the base logits"
  assert np.abs(logits_a.numpy() - logits_b.numpy()).max() > 1e-3
  for name, (arr, _, _) in arrays.items():
    stat = f"absmax {np.abs(arr).max():.4g}" if arr.dtype.kind == "f" else ""
    print(f"{name:22s} {str(arr.shape):18s} {stat}")
  for name in ("logits_a", "logits_b"):
    print(f"max |{name} - logits_base| = {np.abs(arrays[name][0] - logits_base.numpy()).max():.4g}")
  print(f"wrote {out_dir}/reference.npz, reference.json, pytorch_model.bin, base/")


if __name__ == "__main__":
  main()
