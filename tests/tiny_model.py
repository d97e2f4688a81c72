"""A tiny random Gemma 3 written as a Hugging Face folder (config.json, model.safetensors, a
character-level tokenizer.json), and tiny random hypernetworks saved beside it: what the CLI and
notebook tests load through the real code paths (`--model DIR`, `--hypernetwork DIR`)."""

import json
import string
from pathlib import Path

import jax
import numpy as np
import safetensors.numpy
import tokenizers
from tokenizers import AddedToken, decoders, models

from lora_hyper.adapters import io
from lora_hyper.hypernetworks import doc_to_lora, saved, text_to_lora
from lora_hyper.model import base_model, config as config_lib, transformer
from lora_hyper.model.tokenizer import Tokenizer

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
CHARS = list(string.printable[:95]) + ["\n"]  # digits, letters, punctuation, space, newline


def _tokenizer() -> Tokenizer:
  vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))  # one token per char
  backend.decoder = decoders.Fuse()
  backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
  return Tokenizer(backend, bos_id=2, eos_id=1, pad_id=0)


def _hf_tensors(params, cfg) -> dict[str, np.ndarray]:
  """Our params under HF names ([out, in] Linear layout), the inverse of weights.params_from_hf."""
  n, k, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.embed_dim
  layers, attn, mlp = params["layers"], params["layers"]["attn"], params["layers"]["mlp"]
  tensors = {"model.embed_tokens.weight": params["embedding"], "model.norm.weight": params["final_norm"]["scale"]}
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    tensors |= {
        p + "self_attn.q_proj.weight": attn["q"][i].reshape(d, n * h).T,
        p + "self_attn.k_proj.weight": attn["k"][i].reshape(d, k * h).T,
        p + "self_attn.v_proj.weight": attn["v"][i].reshape(d, k * h).T,
        p + "self_attn.o_proj.weight": attn["o"][i].reshape(n * h, d).T,
        p + "self_attn.q_norm.weight": attn["q_norm"]["scale"][i],
        p + "self_attn.k_norm.weight": attn["k_norm"]["scale"][i],
        p + "mlp.gate_proj.weight": mlp["gate"][i].T,
        p + "mlp.up_proj.weight": mlp["up"][i].T,
        p + "mlp.down_proj.weight": mlp["down"][i].T,
        p + "input_layernorm.weight": layers["pre_attention_norm"]["scale"][i],
        p + "post_attention_layernorm.weight": layers["post_attention_norm"]["scale"][i],
        p + "pre_feedforward_layernorm.weight": layers["pre_ffw_norm"]["scale"][i],
        p + "post_feedforward_layernorm.weight": layers["post_ffw_norm"]["scale"][i],
    }
  return {name: np.ascontiguousarray(np.asarray(t, np.float32)) for name, t in tensors.items()}


def write_tiny_model(folder: Path, seed: int = 0) -> Path:
  """A random tiny Gemma 3 (vocab 128, 3 layers, width 32, 2048-token context) as an HF folder."""
  cfg = config_lib.tiny_gemma3(max_seq_len=2048)
  params = transformer.init_params(cfg, jax.random.key(seed))
  folder.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(_hf_tensors(params, cfg), str(folder / "model.safetensors"))
  hf_config = {"model_type": "gemma3_text", "vocab_size": cfg.vocab_size, "hidden_size": cfg.embed_dim,
               "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.num_layers,
               "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
               "head_dim": cfg.head_dim, "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
               "sliding_window": cfg.sliding_window, "max_position_embeddings": cfg.max_seq_len,
               "layer_types": ["sliding_attention" if s else "full_attention" for s in cfg.sliding_layers],
               "rope_theta": cfg.rope_base_global, "rope_local_base_freq": cfg.rope_base_local}
  (folder / "config.json").write_text(json.dumps(hf_config))
  _tokenizer().save(folder)
  return folder


def _nonzero(params, seed: int):
  """Random-init hypernetworks emit exactly zero adapters (B scalers / head weights start at 0);
  give every all-zero leaf random values so their adapters change the model's outputs."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda w: rng.normal(0.0, 0.3, w.shape).astype(np.float32) if not np.any(w) else np.asarray(w),
                      params)


def write_tiny_hypernetworks(folder: Path, model: base_model.BaseModel) -> tuple[Path, Path]:
  """A tiny random Doc-to-LoRA (rank 2 on down, 32-token chunks) and Text-to-LoRA (rank 2 on q, v)."""
  identity = io.base_identity(model)
  d2l = doc_to_lora.d2l_tiny(model.config, chunk_len=32, max_chunks=64)
  t2l = text_to_lora.t2l_tiny(model.config)
  d2l_dir = saved.save_hypernetwork(folder / "d2l", d2l, _nonzero(doc_to_lora.init(d2l, jax.random.key(1)), 2), base=identity)
  t2l_dir = saved.save_hypernetwork(folder / "t2l", t2l, _nonzero(text_to_lora.init(t2l, jax.random.key(3)), 4), base=identity)
  return d2l_dir, t2l_dir


def write_all(folder: Path) -> dict[str, Path]:
  """The tiny model folder and both hypernetworks under `folder`."""
  model_dir = write_tiny_model(folder / "model")
  d2l_dir, t2l_dir = write_tiny_hypernetworks(folder, base_model.load_base_model(model_dir))
  return {"model": model_dir, "d2l": d2l_dir, "t2l": t2l_dir}


def write_talking_tiny_model(folder: Path, seed: int = 0) -> Path:
  """`write_tiny_model`, changed so that it writes text: a random tiny model puts nearly all its
  mass on the new line (so every first line is empty). Its output head is flattened (final norm
  scale 0.1) and the new line's embedding zeroed: sampled text varies, greedy text is not empty."""
  write_tiny_model(folder, seed)
  tensors = safetensors.numpy.load_file(str(folder / "model.safetensors"))
  tensors["model.norm.weight"] = np.full_like(tensors["model.norm.weight"], -0.9)
  tensors["model.embed_tokens.weight"][len(SPECIALS) + CHARS.index("\n")] = 0.0
  safetensors.numpy.save_file(tensors, str(folder / "model.safetensors"))
  return folder


def write_small_sakana_checkpoint(model_dir: Path, out: Path) -> Path:
  """A random Doc-to-LoRA of the published architecture (narrow) for the tiny model at `model_dir`, in
  Sakana's checkpoint format (its chunk template from the model's tokenizer): what import-d2l reads."""
  from lora_hyper.hypernetworks import published
  from lora_hyper.hypernetworks.doc_to_lora import sakana

  base = base_model.load_base_model(model_dir)
  prefix, suffix = published.gemma_chat_affixes(base)
  config = doc_to_lora.d2l_paper(base.config, perceiver={"latent_dim": 16, "mlp_dim": 64, "num_blocks": 2},
                                 pre_head_mlp_dim=64, chunk_prefix=prefix, chunk_suffix=suffix)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda w: rng.normal(0.0, 0.3, w.shape).astype(np.float32),
                           doc_to_lora.init(config, jax.random.key(0)))
  return sakana.write_checkpoint(out, config, variables, base_name=str(model_dir))
