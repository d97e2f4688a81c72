"""Sakana AI's published Doc-to-LoRA checkpoints (SakanaAI/doc-to-lora, `pytorch_model.bin`) in and out.

`import_checkpoint` reads their file without torch and without running pickled code
(`torch_checkpoint`, admitting exactly the globals their format holds), reaches our config from
theirs (`d2l_paper`'s architecture, their chat-templated chunks), maps every tensor to our variables
and saves a lora-hyper hypernetwork folder. `export_checkpoint` writes such a folder back in their
layout, so a hypernetwork fine-tuned here is served by their PyTorch code. The layout and forward
pass are stated in the format note this follows (key names, `[out, in]` Linear weights, `[L, in,
out]` EinMix weights with `[1, L, 1, 1, out]` biases, one head `[L, D, d_in + d_out]`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from lora_hyper import torch_checkpoint
from lora_hyper.hypernetworks.doc_to_lora.config import DocToLoraConfig
from lora_hyper.hypernetworks.perceiver import PerceiverConfig
from lora_hyper.model.config import GemmaConfig

Affixes = tuple[tuple[int, ...], tuple[int, ...]]  # (prefix ids, suffix ids) around each chunk

# The globals of their file, each read as an inert stand-in.
HYPERNET_CONFIG = "ctx_to_lora.modeling.hypernet.HypernetConfig"
AGGREGATOR_CONFIG = "ctx_to_lora.modeling.aggregator.AggregatorConfig"
CTX_ENCODER_ARGS = "ctx_to_lora.configs.CtxEncoderArguments"
LORA_CONFIG = "peft.tuners.lora.config.LoraConfig"
LORA_RUNTIME_CONFIG = "peft.tuners.lora.config.LoraRuntimeConfig"
PEFT_TYPE = "peft.utils.peft_types.PeftType"
_RECORDS = {name: torch_checkpoint.record_class(name)
            for name in (HYPERNET_CONFIG, AGGREGATOR_CONFIG, CTX_ENCODER_ARGS, LORA_CONFIG, LORA_RUNTIME_CONFIG)}
ALLOWED_GLOBALS = {**_RECORDS, PEFT_TYPE: str}
NON_TENSOR_ENTRIES = ("base_model_name_or_path", "hypernet_config", "ctx_encoder_args")

# Their chunk framing per base model (`CTX_AFFIXES` of their data definitions): the chat turn
# `<bos><start_of_turn>user\n\n\n` ... `<end_of_turn>\n<start_of_turn>model\n` for Gemma 2.
CHAT_AFFIXES = {
    "google/gemma-2-2b-it": ((2, 106, 1645, 110), (107, 108, 106, 2516, 108)),
    "mistralai/Mistral-7B-Instruct-v0.2": ((1, 733, 16289, 28793, 28705, 13, 13), (733, 28748, 16289, 28793)),
    "Qwen/Qwen3-4B-Instruct-2507": ((151644, 8948, 198, 151645, 198, 151644, 872, 198),
                                    (151645, 198, 151644, 77091, 198)),
}
EVAL_CHUNK_LEN = 8192  # their published evaluation's --max_ctx_chunk_len

# Fixed by their code rather than configured: the Idefics2 perceiver's attention and widths.
PERCEIVER_HEADS, PERCEIVER_KV_HEADS, PERCEIVER_HEAD_DIM, WIDTH_FACTOR = 16, 4, 128, 4

_OUR_MODULES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
                "down_proj": "down"}
_THEIR_MODULES = {ours: theirs for theirs, ours in _OUR_MODULES.items()}

# What their HypernetConfig / AggregatorConfig / CtxEncoderArguments must say for the network to be
# the one lora-hyper implements (the published recipe); anything else is refused by name.
_REQUIRED = {
    "hypernet_config": {"use_light_weight_lora": False, "per_rank_gen": True, "use_per_rank_bias": False,
                        "use_bias": True, "per_layer_processing": True, "use_token_mixing": False},
    "aggregator_config": {"aggregator_type": "perceiver", "num_extra_modules": 0, "per_rank_gen": True,
                          "num_self_attn_per_block": 0, "shared_weights": False, "layer_to_layer_ctx_encoder": True},
    "ctx_encoder_args": {"ctx_encoder_model_name_or_path": None, "ctx_encoder_type": "per_layer_activations",
                         "ctx_encoder_last_layer": None},
}

# peft 0.15.2's LoraConfig fields in its order (the version their lock file pins), for files we
# write; None marks the ones `_hypernet_config` fills in.
_LORA_CONFIG_FIELDS = {
    "task_type": "CAUSAL_LM", "peft_type": None, "auto_mapping": None, "base_model_name_or_path": None,
    "revision": None, "inference_mode": False, "r": None, "target_modules": None, "exclude_modules": None,
    "lora_alpha": None, "lora_dropout": 0.0, "fan_in_fan_out": False, "bias": "none", "use_rslora": False,
    "modules_to_save": None, "init_lora_weights": True, "layers_to_transform": None, "layers_pattern": None,
    "rank_pattern": {}, "alpha_pattern": {}, "megatron_config": None, "megatron_core": "megatron.core",
    "trainable_token_indices": None, "loftq_config": {}, "eva_config": None, "corda_config": None, "use_dora": False,
    "layer_replication": None, "runtime_config": None, "lora_bias": False, "_custom_modules": None,
}


class CheckpointMismatchError(ValueError):
  """The checkpoint's tensors or config do not fit the architecture or the base model."""


# ----------------------------------------------------------------------------- config


def _state(obj: Any, what: str) -> dict[str, Any]:
  if not isinstance(obj, torch_checkpoint.PickledObject):
    raise CheckpointMismatchError(f"{what} is a {type(obj).__name__}, not the config object their checkpoints hold")
  return obj.state


def _field(state: Mapping[str, Any], name: str, what: str) -> Any:
  if name not in state:
    raise CheckpointMismatchError(f"{what} has no field {name!r}")
  return state[name]


def config_from_checkpoint(entries: Mapping[str, Any], base: GemmaConfig, *,
                           affixes: Affixes | None = None) -> DocToLoraConfig:
  """Their checkpoint's config objects -> our `DocToLoraConfig` on `base` (which must be the base
  model it was trained for, in shape). `affixes` (prefix, suffix ids) override the chunk template
  looked up by the checkpoint's base model name."""
  hyper = _state(entries["hypernet_config"], "hypernet_config")
  aggregator = _state(_field(hyper, "aggregator_config", "hypernet_config"), "hypernet_config.aggregator_config")
  lora_config = _state(_field(hyper, "lora_config", "hypernet_config"), "hypernet_config.lora_config")
  sections = {"hypernet_config": hyper, "aggregator_config": aggregator,
              "ctx_encoder_args": _state(entries["ctx_encoder_args"], "ctx_encoder_args")}
  unsupported = [f"{section}.{name}={sections[section].get(name, '<missing>')!r} (lora-hyper implements {want!r})"
                 for section, required in _REQUIRED.items() for name, want in required.items()
                 if sections[section].get(name, "<missing>") != want]
  if hyper.get("extra_modules"):
    unsupported.append(f"hypernet_config.extra_modules={hyper['extra_modules']!r} (generated layer norms: none)")
  if unsupported:
    raise CheckpointMismatchError("this checkpoint's hypernetwork is not the published design lora-hyper "
                                  "implements: " + "; ".join(unsupported))

  targets = sorted(_field(lora_config, "target_modules", "lora_config"))
  unknown = [t for t in targets if t not in _OUR_MODULES]
  if unknown:
    raise CheckpointMismatchError(f"lora_config.target_modules {unknown} are not Gemma linear layers "
                                  f"{sorted(_OUR_MODULES)}")
  modules = tuple(_OUR_MODULES[t] for t in targets)
  layer_indices = np.asarray(_field(hyper, "layer_indices", "hypernet_config")).tolist()
  d_in, d_out = _field(hyper, "feature_sizes", "hypernet_config")
  problems = []
  if layer_indices != list(range(base.num_layers)):
    problems.append(f"layer_indices {layer_indices} (the base model has {base.num_layers} layers; every one must "
                    "carry an adapter)")
  if aggregator.get("feature_size") != base.embed_dim or hyper.get("base_hidden_size") != base.embed_dim:
    problems.append(f"hidden size {aggregator.get('feature_size')} (the base model's is {base.embed_dim})")
  for theirs, ours in zip(targets, modules):
    if (d_in.get(theirs), d_out.get(theirs)) != base.module_shape(ours):
      problems.append(f"{theirs} of shape {(d_in.get(theirs), d_out.get(theirs))} (the base model's is "
                      f"{base.module_shape(ours)})")
  if problems:
    raise CheckpointMismatchError("this checkpoint was trained for another base model: " + "; ".join(problems))

  base_name = entries.get("base_model_name_or_path")
  if affixes is None:
    if base_name not in CHAT_AFFIXES:
      raise CheckpointMismatchError(
          f"no chunk chat template known for the checkpoint's base model {base_name!r} (known: "
          f"{sorted(CHAT_AFFIXES)}); name one of those, or give the prefix and suffix ids")
    affixes = CHAT_AFFIXES[base_name]
  latent, rank = int(_field(hyper, "latent_size", "hypernet_config")), int(_field(lora_config, "r", "lora_config"))
  alpha = float(_field(lora_config, "lora_alpha", "lora_config"))
  perceiver = PerceiverConfig(
      latent_dim=latent, num_latents=int(aggregator["n_latent_queries"]), num_blocks=int(aggregator["num_blocks"]),
      decoder_blocks=1, num_heads=PERCEIVER_HEADS, num_kv_heads=PERCEIVER_KV_HEADS, head_dim=PERCEIVER_HEAD_DIM,
      mlp_dim=WIDTH_FACTOR * latent, input_mlp_factor=WIDTH_FACTOR)
  return DocToLoraConfig(
      base=base, perceiver=perceiver, target_modules=modules, rank=rank,
      alpha=None if alpha == 2 * rank ** 1.5 else alpha, context_encoder="per_layer_activations",  # None: published
      pre_head_blocks=int(_field(hyper, "num_pre_head_layers", "hypernet_config")),
      pre_head_mlp_dim=WIDTH_FACTOR * latent, last_feature="final_norm", chunk_len=EVAL_CHUNK_LEN,
      chunk_prefix=tuple(affixes[0]), chunk_suffix=tuple(affixes[1]))


def check_exportable(config: DocToLoraConfig) -> None:
  """Raises, listing every difference, unless `config` is a network their code builds."""
  p, latent = config.perceiver, config.perceiver.latent_dim
  want = {"context_encoder": (config.context_encoder, "per_layer_activations"),
          "last_feature": (config.last_feature, "final_norm"),
          "experimental": (config.experimental, type(config.experimental)()),
          "pre_head_mlp_dim": (config.pre_head_mlp_dim, WIDTH_FACTOR * latent),
          "perceiver.num_heads": (p.num_heads, PERCEIVER_HEADS),
          "perceiver.num_kv_heads": (p.num_kv_heads, PERCEIVER_KV_HEADS),
          "perceiver.head_dim": (p.head_dim, PERCEIVER_HEAD_DIM),
          "perceiver.mlp_dim": (p.mlp_dim, WIDTH_FACTOR * latent),
          "perceiver.input_mlp_factor": (p.input_mlp_factor, WIDTH_FACTOR),
          "perceiver.decoder_blocks": (p.decoder_blocks, 1),
          "perceiver.rms_eps": (p.rms_eps, 1e-6)}
  wrong = [f"{name}={got!r} (theirs: {need!r})" for name, (got, need) in want.items() if got != need]
  if wrong:
    raise CheckpointMismatchError("this hypernetwork has no counterpart in Sakana's code: " + "; ".join(wrong))


# ----------------------------------------------------------------------------- tensors


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One tensor of theirs: its key, shape, and where its values live in our variables."""

  key: str
  shape: tuple[int, ...]
  path: tuple[str, ...]  # in our params
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_theirs: Callable[[np.ndarray], np.ndarray]


def _linear(key: str, path: tuple[str, ...], ours: tuple[int, ...], n_in: int = 1) -> _Tensor:
  """torch Linear weight [out, in] <-> our kernel [*in, *out], the first `n_in` axes being inputs."""
  fan_in = math.prod(ours[:n_in])
  return _Tensor(key, (math.prod(ours) // fan_in, fan_in), path, lambda w: w.T.reshape(ours),
                 lambda x: x.reshape(fan_in, -1).T)


def _same(key: str, path: tuple[str, ...], shape: tuple[int, ...]) -> _Tensor:
  return _Tensor(key, shape, path, lambda w: w, lambda x: x)


def _reshaped(key: str, path: tuple[str, ...], theirs: tuple[int, ...], ours: tuple[int, ...]) -> _Tensor:
  return _Tensor(key, theirs, path, lambda w: w.reshape(ours), lambda x: x.reshape(theirs))


def _block_tensors(prefix: str, path: tuple[str, ...], p: PerceiverConfig) -> Iterator[_Tensor]:
  """One Idefics2 cross-attention block, in the order of their state dict (norms before the MLP)."""
  d, n, k, h, f = p.latent_dim, p.num_heads, p.num_kv_heads, p.head_dim, p.mlp_dim
  norm = lambda theirs, ours: _same(f"{prefix}.{theirs}.weight", (*path, ours, "scale"), (d,))
  yield norm("input_latents_layernorm", "latents_norm")
  yield norm("input_context_layernorm", "context_norm")
  for name, heads in (("q", n), ("k", k), ("v", k)):
    yield _linear(f"{prefix}.self_attn.{name}_proj.weight", (*path, "attn", name, "kernel"), (d, heads, h))
  yield _linear(f"{prefix}.self_attn.o_proj.weight", (*path, "attn", "o"), (n, h, d), n_in=2)
  yield norm("post_attention_layernorm", "post_attention_norm")
  yield norm("pre_ff_layernorm", "pre_mlp_norm")
  yield norm("post_ff_layernorm", "post_mlp_norm")
  for name, shape in (("gate", (d, f)), ("up", (d, f)), ("down", (f, d))):
    yield _linear(f"{prefix}.mlp.{name}_proj.weight", (*path, "mlp", name, "kernel"), shape)


def _layout(config: DocToLoraConfig) -> list[_Tensor]:
  """Every tensor of their state dict except the head, in their order."""
  p, base, r = config.perceiver, config.base, config.rank
  d, latent, layers, f = base.embed_dim, p.latent_dim, base.num_layers, config.pre_head_mlp_dim
  hidden = p.input_mlp_factor * d
  out = [_linear(f"aggregator.perceiver.modality_projection.{name}_proj.weight",
                 ("perceiver", "input_projection", name, "kernel"), shape)
         for name, shape in (("gate", (d, hidden)), ("up", (d, hidden)), ("down", (hidden, latent)))]
  for part, blocks, queries in (("encoder", p.num_blocks, p.num_latents),
                                ("decoder", p.decoder_blocks, config.num_output_latents)):
    prefix = f"aggregator.perceiver.{part}"
    out.append(_same(f"{prefix}.latents_q", ("perceiver", part, "latents"), (queries, latent)))
    for b in range(blocks):
      out += _block_tensors(f"{prefix}.layers.{b}", ("perceiver", part, f"block_{b}"), p)
    out.append(_same(f"{prefix}.layernorm.weight", ("perceiver", part, "final_norm", "scale"), (latent,)))
  for i in range(config.pre_head_blocks):
    prefix, path = f"layers.{i}.layers", (f"pre_head_{i}",)
    out += [_same(f"{prefix}.0.weight", (*path, "pre_norm", "scale"), (latent,)),
            _same(f"{prefix}.0.bias", (*path, "pre_norm", "bias"), (latent,)),
            _same(f"{prefix}.1.weight", (*path, "w1"), (layers, latent, f)),
            _reshaped(f"{prefix}.1.bias", (*path, "b1"), (1, layers, 1, 1, f), (layers, f)),
            _same(f"{prefix}.3.weight", (*path, "w2"), (layers, f, latent)),
            _reshaped(f"{prefix}.3.bias", (*path, "b2"), (1, layers, 1, 1, latent), (layers, latent)),
            _same(f"{prefix}.4.weight", (*path, "post_norm", "scale"), (latent,)),
            _same(f"{prefix}.4.bias", (*path, "post_norm", "bias"), (latent,))]
  for theirs, ours, shape in (("bias_A", "bias_a", lambda m: (layers, r, base.module_shape(m)[0])),
                              ("bias_B", "bias_b", lambda m: (layers, r, base.module_shape(m)[1]))):
    out += [_same(f"{theirs}.{_THEIR_MODULES[m]}", (f"heads_{m}", ours), shape(m)) for m in _sorted_modules(config)]
  for theirs, ours in (("scaler_A", "scale_a"), ("scaler_B", "scale_b")):
    out += [_reshaped(f"{theirs}.{_THEIR_MODULES[m]}", (f"heads_{m}", ours), (1, layers, r, 1), (layers, r))
            for m in _sorted_modules(config)]
  return out


def _sorted_modules(config: DocToLoraConfig) -> list[str]:
  """Our module names in their order (sorted by their names), which also orders the decoder queries."""
  return sorted(config.modules, key=lambda m: _THEIR_MODULES[m])


def _head_shape(config: DocToLoraConfig) -> tuple[int, ...]:
  layers, latent = config.base.num_layers, config.perceiver.latent_dim
  d_lora = max(sum(config.base.module_shape(m)) for m in config.modules)
  return (layers, latent, d_lora) if len(config.modules) == 1 else (layers, len(config.modules), latent, d_lora)


def expected_shapes(config: DocToLoraConfig) -> dict[str, tuple[int, ...]]:
  """Their state dict's keys and shapes for `config`, in their order."""
  return {**{t.key: t.shape for t in _layout(config)}, "head.weight": _head_shape(config)}


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]) -> np.ndarray:
  for key in path:
    tree = tree[key]
  return np.asarray(tree, np.float32)


def _check_tensors(state: Mapping[str, Any], config: DocToLoraConfig, source: str) -> None:
  want = expected_shapes(config)
  got = {k: tuple(np.shape(v)) for k, v in state.items() if isinstance(v, np.ndarray)}
  missing = [k for k in want if k not in got]
  unexpected = [k for k in got if k not in want]
  wrong = [f"{k} {got[k]} (expected {want[k]})" for k in want if k in got and got[k] != want[k]]
  non_float = [k for k in want if k in got and state[k].dtype != np.float32]
  if missing or unexpected or wrong or non_float:
    parts = [f"{label}: {items}" for label, items in (("missing", missing), ("unexpected", unexpected),
                                                       ("wrong shapes", wrong), ("not float32", non_float)) if items]
    raise CheckpointMismatchError(f"{source!r} does not hold the tensors of its own config on this base model; "
                                  + "; ".join(parts))


def variables_from_state(state: dict[str, Any], config: DocToLoraConfig) -> dict[str, Any]:
  """Their tensors -> our variables {'params': ...} (numpy float32). Pops each tensor it converts
  from `state`, so the conversion holds one copy of the weights and one tensor more."""
  params: dict = {}
  for tensor in _layout(config):
    _set(params, tensor.path, np.ascontiguousarray(tensor.to_ours(state.pop(tensor.key)), np.float32))
  head = state.pop("head.weight")
  for i, m in enumerate(_sorted_modules(config)):
    d_in, d_out = config.base.module_shape(m)
    module_head = head if len(config.modules) == 1 else head[:, i]
    _set(params, (f"heads_{m}", "head_a"), np.ascontiguousarray(module_head[..., :d_in], np.float32))
    _set(params, (f"heads_{m}", "head_b"), np.ascontiguousarray(module_head[..., d_in:d_in + d_out], np.float32))
  del head
  if list(config.modules) != _sorted_modules(config):  # decoder query blocks: their module order -> ours
    queries = params["perceiver"]["decoder"]["latents"].reshape(len(config.modules), config.rank, -1)
    order = [_sorted_modules(config).index(m) for m in config.modules]
    params["perceiver"]["decoder"]["latents"] = np.ascontiguousarray(queries[order].reshape(-1, queries.shape[-1]))
  return {"params": params}


def state_from_variables(variables: Mapping[str, Any], config: DocToLoraConfig) -> collections.OrderedDict:
  """`variables_from_state`'s inverse: our variables -> their state dict (float32 numpy, their key
  order). The head's columns past a module's d_in + d_out (several modules of different sizes) are 0."""
  params = variables["params"]
  if list(config.modules) != _sorted_modules(config):
    params = {**params, "perceiver": {**params["perceiver"], "decoder": dict(params["perceiver"]["decoder"])}}
    queries = np.asarray(params["perceiver"]["decoder"]["latents"]).reshape(len(config.modules), config.rank, -1)
    order = [config.modules.index(m) for m in _sorted_modules(config)]
    params["perceiver"]["decoder"]["latents"] = queries[order].reshape(-1, queries.shape[-1])
  state = collections.OrderedDict((t.key, np.ascontiguousarray(t.to_theirs(_get(params, t.path)), np.float32))
                                  for t in _layout(config))
  head = np.zeros(_head_shape(config), np.float32)
  for i, m in enumerate(_sorted_modules(config)):
    d_in, d_out = config.base.module_shape(m)
    module_head = head if len(config.modules) == 1 else head[:, i]
    module_head[..., :d_in] = _get(params, (f"heads_{m}", "head_a"))
    module_head[..., d_in:d_in + d_out] = _get(params, (f"heads_{m}", "head_b"))
  state["head.weight"] = head
  return state


# ----------------------------------------------------------------------------- files


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
  """Their `pytorch_model.bin` -> its entries (tensors as numpy, configs as attribute bags), safely."""
  source = os.fspath(path)
  if os.path.isdir(source):
    source = os.path.join(source, "pytorch_model.bin")
  if not os.path.isfile(source):
    raise FileNotFoundError(f"no Doc-to-LoRA checkpoint at {source!r} (their pytorch_model.bin)")
  entries = torch_checkpoint.read(source, ALLOWED_GLOBALS)
  if not isinstance(entries, dict):
    raise CheckpointMismatchError(f"{source!r} holds a {type(entries).__name__}, not a state dict")
  missing = [k for k in NON_TENSOR_ENTRIES if k not in entries]
  if missing:
    raise CheckpointMismatchError(f"{source!r} lacks the entries {missing} that their trainer writes beside the "
                                  "tensors: is it a Doc-to-LoRA checkpoint?")
  # Their loader strips the prefix torch.compile would add.
  return {k.removeprefix("_orig_mod."): v for k, v in entries.items()}


def convert(entries: dict[str, Any], base: GemmaConfig, *, affixes: Affixes | None = None,
            source: str = "the checkpoint") -> tuple[DocToLoraConfig, dict]:
  """`read_checkpoint`'s entries -> (our config on `base`, our variables as numpy float32). Takes
  the tensors out of `entries` as it converts them (one copy of the weights at a time)."""
  config = config_from_checkpoint(entries, base, affixes=affixes)
  state = {k: entries.pop(k) for k in [k for k in entries if k not in NON_TENSOR_ENTRIES]}
  _check_tensors(state, config, source)
  return config, variables_from_state(state, config)


def _hypernet_config(config: DocToLoraConfig, base_name: str) -> torch_checkpoint.PickledObject:
  base, r, targets = config.base, config.rank, sorted(_THEIR_MODULES[m] for m in config.modules)
  lora_config = _RECORDS[LORA_CONFIG]({
      **_LORA_CONFIG_FIELDS, "peft_type": torch_checkpoint.Reduce(PEFT_TYPE, ("LORA",)),
      "base_model_name_or_path": base_name, "r": r, "target_modules": set(targets), "lora_alpha": config.scaling,
      "runtime_config": _RECORDS[LORA_RUNTIME_CONFIG]({"ephemeral_gpu_offload": False})})
  aggregator = _RECORDS[AGGREGATOR_CONFIG]({
      "aggregator_type": "perceiver", "num_layers": base.num_layers, "num_modules": len(targets),
      "num_extra_modules": 0, "output_size": config.perceiver.latent_dim, "feature_size": base.embed_dim,
      "pooling_type": "mean", "num_latent_factor": 8, "lora_r": r, "per_rank_gen": True,
      "n_latent_queries": config.perceiver.num_latents, "num_blocks": config.perceiver.num_blocks,
      "num_self_attn_per_block": 0, "shared_weights": False, "layer_to_layer_ctx_encoder": True})
  shapes = {t: base.module_shape(_OUR_MODULES[t]) for t in targets}
  return _RECORDS[HYPERNET_CONFIG]({
      "latent_size": config.perceiver.latent_dim, "use_light_weight_lora": False, "light_weight_latent_size": 128,
      "per_rank_gen": True, "use_per_rank_bias": False, "use_bias": True, "per_layer_processing": True,
      "use_token_mixing": False, "num_pre_head_layers": config.pre_head_blocks, "dropout_rate": 0.0,
      "lora_config": lora_config, "extra_modules": None, "base_hidden_size": base.embed_dim,
      "layer_indices": np.arange(base.num_layers, dtype=np.int64),
      "feature_sizes": ({t: s[0] for t, s in shapes.items()}, {t: s[1] for t, s in shapes.items()}),
      "aggregator_config": aggregator})


def write_checkpoint(path: str | os.PathLike, config: DocToLoraConfig, variables: Mapping[str, Any], *,
                     base_name: str) -> Path:
  """Writes their `pytorch_model.bin` (a file path, or a folder to hold one) for `torch.load` +
  `ModulatedPretrainedModel.from_state_dict`; `base_name` is the model their loader fetches."""
  check_exportable(config)
  target = Path(path)
  if target.is_dir() or not target.suffix:
    target = target / "pytorch_model.bin"
  target.parent.mkdir(parents=True, exist_ok=True)
  state = state_from_variables(variables, config)
  state["base_model_name_or_path"] = base_name
  state["hypernet_config"] = _hypernet_config(config, base_name)
  state["ctx_encoder_args"] = _RECORDS[CTX_ENCODER_ARGS]({
      "ctx_encoder_model_name_or_path": None, "ctx_encoder_type": "per_layer_activations",
      "layer_idx": config.base.num_layers // 4, "quantize_ctx_encoder": False, "ctx_encoder_last_layer": None})
  tmp = target.with_name(target.name + ".tmp")
  torch_checkpoint.write(tmp, state, archive_name=target.stem)
  os.replace(tmp, target)
  return target
