"""Documents -> adapters: tokenize, chunk, encode every chunk with the frozen base model (one batched
call), run the hypernetwork per (chunk, layer), and concatenate the K chunk adapters along the rank
axis, followed by the learned bias block:

  rank = K * r + r,   scaling = alpha (applied directly; published: alpha = 2 * r**1.5).

Context encoders (`DocToLoraConfig.context_encoder`): `per_layer_activations` reads Z_0 .. Z_{L-1}
(the input of every decoder layer; Z_l feeds the adapter of layer l; published: Z_{L-1} through the
final norm, `last_feature`); `early_exit` reads only
Z_{exit_layer} (the base model truncated after that many layers), and the decoder then has one
output latent per (layer, module, rank).

`variables` are the hypernetwork's Flax variables: {"params": ...} and, with
`experimental.center_momentum`, the running statistics {"code_stats": ...}.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from lora_hyper import sharding
from lora_hyper.adapters import lora
from lora_hyper.hypernetworks.doc_to_lora import chunking, experimental
from lora_hyper.hypernetworks.doc_to_lora.config import DocToLoraConfig
from lora_hyper.hypernetworks.doc_to_lora.modules import DocToLora
from lora_hyper.hypernetworks.task_encoders import TextTokenizer
from lora_hyper.model import transformer

Array = jax.Array
PyTree = Any


def encode_context(base_params: PyTree, tokens: Array, mask: Array, *, config: DocToLoraConfig) -> Array:
  """Frozen base-model activations of chunks [B, T] -> features [F, B, T, D] (no gradient)."""
  base = config.base
  norm_scales = base_params["layers"]["pre_attention_norm"]["scale"]  # [layers, D]
  if config.context_encoder == "early_exit":
    k = config.feature_layer  # only the first k layers run
    hidden = transformer.layer_input(base_params, tokens, k, config=base, mask=mask)[None]
    norm_scales = norm_scales[k:k + 1]
  else:
    hidden = transformer.forward(base_params, tokens, config=base, mask=mask, logits=False).per_layer_hidden
    if config.last_feature == "final_norm":  # the published encoder's last hidden state is final-normed
      last = transformer.rms_norm(hidden[-1], base_params["final_norm"]["scale"], base.rms_norm_eps)
      hidden = hidden.at[-1].set(last)
  if config.experimental.normalize_features:
    hidden = transformer.rms_norm(hidden, norm_scales[:, None, None, :], base.rms_norm_eps)
  return jax.lax.stop_gradient(hidden)


def _check_variables(variables: PyTree, config: DocToLoraConfig) -> None:
  if not isinstance(variables, dict) or "params" not in variables:
    raise ValueError("Doc-to-LoRA takes the hypernetwork's variables {'params': ...} (what `init` and "
                     f"`load_hypernetwork(...).variables` give), got {type(variables).__name__}")
  if config.experimental.center_momentum is not None and experimental.STATS not in variables:
    raise ValueError(f"this hypernetwork centres its codes (experimental.center_momentum) and needs its "
                     f"'{experimental.STATS}' variables beside 'params' (what `init` and `load_hypernetwork` give)")


def chunk_codes(variables: PyTree, features: Array, mask: Array, *, config: DocToLoraConfig,
                iterative: bool = False) -> Array:
  """features [F, B, T, D] of B chunks -> codes [B, L, modules, r, d], the heads' inputs before
  normalisation. `iterative` runs the Perceiver one feature layer at a time (`lax.map`): its
  activations then take 1/F of the memory, and the result is the same. Under a gradient each layer's
  pass is recomputed in the backward pass (`jax.checkpoint`) rather than kept for it, so training
  holds one layer's activations too, for about one more forward pass of the Perceiver."""
  chex.assert_rank(features, 4)
  chex.assert_shape(mask, features.shape[1:3])
  chex.assert_equal(features.shape[0], config.num_feature_layers)
  apply = functools.partial(DocToLora(config).apply, variables)
  if iterative:
    latents = jax.lax.map(jax.checkpoint(lambda f: apply(f, mask, method=DocToLora.encode)), features)
  else:
    latents = apply(features, mask)
  return apply(latents, method=DocToLora.codes)


def combine(variables: PyTree, chunk_weights: dict[str, dict[str, Array]], chunk_valid: Array, *,
            config: DocToLoraConfig) -> lora.LoraAdapter:
  """Per-chunk factors [N, K, L, r, d] -> one adapter per document [N, L, K*r + r, d].

  Chunks are concatenated along the rank axis in document order, then the bias block. Chunk
  slots that a shorter document does not fill (chunk_valid [N, K] False) become exact zeros.
  """
  bias = DocToLora(config).apply(variables, method=DocToLora.bias_block)
  weights = {}
  for m, ab in chunk_weights.items():
    weights[m] = {}
    for key, w in ab.items():
      n, k, layers, r, d = w.shape
      w = jnp.where(chunk_valid[:, :, None, None, None], w, 0.0)
      w = jnp.transpose(w, (0, 2, 1, 3, 4)).reshape(n, layers, k * r, d)
      weights[m][key] = jnp.concatenate([w, jnp.broadcast_to(bias[m][key], (n, layers, r, d))], axis=-2)
  return lora.LoraAdapter(weights, config.scaling)


def _document_codes(variables: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                    config: DocToLoraConfig, iterative: bool = False) -> tuple[Array, Array]:
  """Chunked documents tokens/mask [N, K, T] -> (codes [N*K, L, modules, r, d], chunk_valid [N, K])."""
  chex.assert_rank(tokens, 3)
  chex.assert_equal_shape([tokens, mask])
  n, k, t = tokens.shape
  flat_tokens, flat_mask = tokens.reshape(n * k, t), mask.reshape(n * k, t)
  features = encode_context(base_params, flat_tokens, flat_mask, config=config)
  return chunk_codes(variables, features, flat_mask, config=config, iterative=iterative), mask.any(axis=-1)


class GeneratedAdapters(NamedTuple):
  """What `document_adapters` returns."""

  adapter: lora.LoraAdapter  # one per document [N, L, K*r + r, d]
  stats: PyTree  # train only: the variables' statistics after this batch ({} without any); else None
  gates: dict[str, Array] | None  # chunk_gate only: {module: gate [N, K, L]}, 0 on empty chunk slots


def document_adapters(variables: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                      config: DocToLoraConfig, iterative: bool = False, train: bool = False) -> GeneratedAdapters:
  """Chunked documents tokens/mask [N, K, T] -> their adapters, and what training needs besides.

  `train` (meta-training): codes are centred on this batch's mean (`experimental.center_momentum`),
  and the updated running statistics are returned; otherwise on the running mean.
  """
  _check_variables(variables, config)
  codes, chunk_valid = _document_codes(variables, base_params, tokens, mask, config=config, iterative=iterative)
  return adapters_from_codes(variables, codes, chunk_valid, config=config, train=train)


def adapters_from_codes(variables: PyTree, codes: Array, chunk_valid: Array, *, config: DocToLoraConfig,
                        train: bool = False) -> GeneratedAdapters:
  """Chunk codes [N*K, L, modules, r, d] (chunk_valid [N, K]) -> adapters: heads, gates, concatenation."""
  n, k = chunk_valid.shape
  model = DocToLora(config)
  stats = None
  if train:
    (weights, gates), updated = model.apply(variables, codes, chunk_valid, True, method=DocToLora.decode,
                                            mutable=[experimental.STATS])
    stats = dict(updated)
  else:
    weights, gates = model.apply(variables, codes, chunk_valid, method=DocToLora.decode)
  weights = jax.tree.map(lambda w: w.reshape(n, k, *w.shape[1:]), weights)
  if gates is not None:
    gates = {m: jnp.where(chunk_valid[:, :, None], g.reshape(n, k, -1), 0.0) for m, g in gates.items()}
  return GeneratedAdapters(combine(variables, weights, chunk_valid, config=config), stats, gates)


@functools.partial(jax.jit, static_argnames=("config", "iterative"))
def adapter_from_chunks(variables: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                        config: DocToLoraConfig, iterative: bool = False) -> lora.LoraAdapter:
  """Chunked documents tokens/mask [N, K, T] -> adapters [N, L, K*r + r, d], all chunks in one batch."""
  return document_adapters(variables, base_params, tokens, mask, config=config, iterative=iterative).adapter


# Generation runs the base model and the Perceiver over the documents' real chunks in groups of this
# many, then the rest in one group: one [K, T] program was compiled for each new chunk count K (2-6 s
# each on a CPU), where these are at most CHUNK_GROUP programs for every document length (a document
# needs one or two; fewer than CHUNK_GROUP chunks run in one batch as before). Groups of 8 chunks of
# 128 tokens keep the CPU's matmuls as fast as one batch of all K (measured on 2 cores at 2K tokens:
# 66 ms a chunk against 67; a lone chunk 79). On an accelerator one batch of all K may be faster. Empty chunk slots of shorter documents in a batch are not computed.
CHUNK_GROUP = 8


def group_sizes(count: int, group: int = CHUNK_GROUP) -> list[int]:
  """`count` chunks -> the sizes of the groups they run in: full groups, then the rest together."""
  return [group] * (count // group) + ([count % group] if count % group else [])


@functools.partial(jax.jit, static_argnames=("config", "iterative"))
def _group_codes(variables: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                 config: DocToLoraConfig, iterative: bool = False) -> Array:
  """Chunks tokens/mask [G, T] -> codes [G, L, modules, r, d]: the base model's features, the Perceiver."""
  features = encode_context(base_params, tokens, mask, config=config)
  return chunk_codes(variables, features, mask, config=config, iterative=iterative)


@functools.partial(jax.jit, static_argnames=("config", "single"))
def _assemble(variables: PyTree, group_codes: tuple[Array, ...], slots: Array, chunk_valid: Array, *,
              config: DocToLoraConfig, single: bool) -> lora.LoraAdapter:
  """Codes of the real chunks, in groups, placed in their slots (index into N*K; chunk_valid [N, K])
  -> adapters [N, L, K*r + r, d], or the one adapter [L, K*r + r, d] if `single`. Empty slots get
  zero codes, which `combine` then replaces by exact zeros, as it does any empty slot's factors."""
  codes = jnp.concatenate(group_codes)
  if codes.shape[0] != chunk_valid.size:
    codes = jnp.zeros((chunk_valid.size, *codes.shape[1:]), codes.dtype).at[slots].set(codes)
  adapter = adapters_from_codes(variables, codes, chunk_valid, config=config).adapter
  return lora.take(adapter, 0) if single else adapter


def generate(variables: PyTree, base_params: PyTree, chunks: chunking.Chunks, *, config: DocToLoraConfig,
             iterative: bool = False, single: bool = False, mesh: Mesh | None = None) -> lora.LoraAdapter:
  """Chunked documents (tokens/mask [N, K, T]) -> adapters [N, L, K*r + r, d] (or [L, K*r + r, d] for
  one document if `single`), as `adapter_from_chunks` gives them, within float rounding: the real
  chunks run in `CHUNK_GROUP` groups and the rest, so a new document length compiles the small
  `_assemble` (and a group size not run before, at most CHUNK_GROUP of them). `mesh`: each group's
  chunks split over its batch axes (padded with copies of the last chunk, whose codes are dropped);
  the variables and base params should be replicated on it (`sharding.replicate`)."""
  _check_variables(variables, config)
  chunk_valid = chunks.mask.any(axis=-1)
  slots = np.flatnonzero(chunk_valid)
  width = chunks.tokens.shape[-1]
  tokens, mask = chunks.tokens.reshape(-1, width)[slots], chunks.mask.reshape(-1, width)[slots]
  group_codes, start = [], 0
  shards = 1 if mesh is None else sharding.batch_shards(mesh)
  for size in group_sizes(len(slots), -(-CHUNK_GROUP // shards) * shards):  # full groups fill every device
    group = (tokens[start:start + size], mask[start:start + size])
    if mesh is not None:
      group = sharding.shard_rows(group, mesh)
    codes = _group_codes(variables, base_params, *group, config=config, iterative=iterative)
    group_codes.append(codes[:size])
    start += size
  return _assemble(variables, tuple(group_codes), slots.astype(np.int32), chunk_valid, config=config, single=single)


def internalize(variables: PyTree, base_params: PyTree, documents: str | Sequence[str | Sequence[str]], *,
                config: DocToLoraConfig, tokenizer: TextTokenizer, iterative: bool = False, stack: bool = False,
                mesh: Mesh | None = None) -> lora.LoraAdapter:
  """Document(s) -> adapter: tokenize, chunk, encode, generate.

  One string gives an unbatched adapter [L, K*r + r, d]; a list gives one per item [N, L, K*r + r, d],
  an item being a document or a stack of them (a list of strings): one adapter of them all, each
  document chunked on its own and every chunk's rank block side by side (`chunking.stack_documents`).
  `stack`: the list is one stack, and its adapter is unbatched. Time it with
  `jax.block_until_ready(internalize(...))`. `mesh`: the chunks encoded data-parallel over it (`generate`).
  """
  single = isinstance(documents, str) or stack
  items = [documents] if isinstance(documents, str) else [list(documents)] if stack else list(documents)
  stacked = stack or any(not isinstance(item, str) for item in items)
  stacks = [[item] if isinstance(item, str) else list(item) for item in items]
  for n, texts in enumerate(stacks):
    for i, text in enumerate(texts):
      if not isinstance(text, str) or not text.strip():
        where = f"stack {n}, document {i}" if stacked and len(stacks) > 1 else f"document {i if stacked else n}"
        raise ValueError(f"{where} is empty or not a string: {text!r}")
  # A templated (published) hypernetwork reads the text as a chat turn, which trims it.
  encode = lambda text: tokenizer.encode(text.strip() if config.templated else text, add_bos=False)
  if stacked:
    chunks = chunking.stack_documents([[encode(t) for t in texts] for texts in stacks], config=config)
  else:
    chunks = chunking.chunk_documents([encode(texts[0]) for texts in stacks], config=config)
  return generate(variables, base_params, chunks, config=config, iterative=iterative, single=single, mesh=mesh)


def internalize_chunk_ids(variables: PyTree, base_params: PyTree, documents: Sequence[Sequence[Sequence[int]]], *,
                          config: DocToLoraConfig, iterative: bool = False) -> lora.LoraAdapter:
  """Documents given as their chunks' token ids, framed as the encoder reads them (BOS, or the chat
  template of a published hypernetwork, e.g. from the official pipeline) -> adapters [N, L, K*r + r, d].
  No tokenizer needed."""
  chunks = chunking.pad_chunks(documents, config=config)
  return generate(variables, base_params, chunks, config=config, iterative=iterative)


# ----------------------------------------------------------------------------- experimental options


@functools.partial(jax.jit, static_argnames="config")
def chunk_gates(variables: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                config: DocToLoraConfig) -> dict[str, Array]:
  """Chunked documents tokens/mask [N, K, T] -> {module: gate [N, K, L]}: how much of each chunk's
  B the adapter keeps (`chunk_gate`; 0 for empty chunk slots and, with `chunk_gate_cut`, for
  dropped chunks). Shows which chunks a document's adapter is made of."""
  if not config.experimental.chunk_gate:
    raise ValueError("this hypernetwork has no chunk gates (experimental.chunk_gate=False)")
  return document_adapters(variables, base_params, tokens, mask, config=config).gates


@functools.partial(jax.jit, static_argnames="config")
def _mean_code(variables: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
               config: DocToLoraConfig) -> Array:
  return experimental.mean_code(*_document_codes(variables, base_params, tokens, mask, config=config))


def recompute_center(variables: PyTree, base_params: PyTree, tokens: Array, mask: Array, *,
                     config: DocToLoraConfig, batch_size: int = 16) -> PyTree:
  """Variables whose running mean is the exact mean code of these chunked documents [N, K, T] under
  these params, as batch-norm statistics are recalibrated after training: a running mean trails
  codes that move, and the codes' per-document parts are small next to their common part."""
  if config.experimental.center_momentum is None:
    raise ValueError("this hypernetwork does not centre its codes (center_momentum=None): nothing to recompute")
  total, count = 0.0, 0
  for start in range(0, tokens.shape[0], batch_size):
    batch_tokens, batch_mask = tokens[start:start + batch_size], mask[start:start + batch_size]
    chunks = int(jnp.sum(jnp.any(batch_mask, axis=-1)))
    total = total + chunks * _mean_code(variables, base_params, batch_tokens, batch_mask, config=config)
    count += chunks
  if count == 0:
    raise ValueError("recompute_center needs at least one non-empty document")
  centre = {"ema": jnp.asarray(total / count, jnp.float32), "weight": jnp.ones((), jnp.float32)}
  return {**variables, experimental.STATS: {"centre": centre}}
