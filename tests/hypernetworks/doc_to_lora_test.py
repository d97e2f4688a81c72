"""Doc-to-LoRA: published size, zero init, chunking equivalences, gradients and input errors."""

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from lora_hyper.adapters import lora
from lora_hyper.hypernetworks import doc_to_lora
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer

ENCODERS = doc_to_lora.CONTEXT_ENCODERS
# Every experimental option on, as the shipped needle hypernetwork has them.
EVERY_OPTION = {"normalize_features": True, "center_momentum": 0.9, "zero_b_init": "head", "generated_factors": "b",
                "chunk_gate": True, "chunk_gate_cut": True}


def _tiny(base_cfg, encoder="per_layer_activations", **experimental):
  # The tiny base has 3 layers, so L // 4 would read the embeddings; layer 1 exercises truncation.
  exit_layer = 1 if encoder == "early_exit" else None
  return doc_to_lora.d2l_tiny(base_cfg, context_encoder=encoder, exit_layer=exit_layer, experimental=experimental)


def _chunk_arrays(chunks):
  return jnp.asarray(chunks.tokens), jnp.asarray(chunks.mask)


def _trained_like(variables):
  """Variables as after some training: B scalers on and a non-zero bias B, so every param matters."""
  def edit(path, w):
    name = jax.tree_util.keystr(path)
    if "scale_b" in name:
      return jnp.ones_like(w)
    if "bias_b" in name:
      return 0.1 * np.random.default_rng(7).standard_normal(w.shape, np.float32)
    return w
  return jax.tree_util.tree_map_with_path(edit, variables)


def _with(variables, module, **leaves):
  """`variables` with some params of one module replaced."""
  params = variables["params"]
  return {**variables, "params": {**params, module: {**params[module], **leaves}}}


def _random_b_head(variables, seed=3):
  head_b = variables["params"]["heads_down"]["head_b"]
  return _trained_like(_with(variables, "heads_down", head_b=jax.random.normal(jax.random.key(seed), head_b.shape)))


# ----------------------------------------------------------------------------- the published design


def test_paper_config_is_the_published_hypernetwork():
  """d2l_paper on gemma-2-2b: the official code's tensors (shared/SAKANA_D2L_FORMAT.md) in our layout, and
  its 315,237,792 parameters (REFERENCE.md); no statistics; every experimental option off."""
  cfg = doc_to_lora.d2l_paper(config_lib.gemma2_2b())
  assert cfg.experimental == doc_to_lora.Experimental() and cfg.context_encoder == "per_layer_activations"
  assert doc_to_lora.num_params(cfg) == 315_237_792  # eval_shape only: nothing is allocated
  assert cfg.scaling == pytest.approx(2 * 8 ** 1.5)
  variables = doc_to_lora.variable_shapes(cfg)
  assert set(variables) == {"params"}  # statistics only with the experimental centring
  shapes = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(variables["params"])}
  d, latent, layers, d_in, rank, hidden = 2304, 512, 26, 9216, 8, 2048
  block = {"['latents_norm']['scale']": (latent,), "['context_norm']['scale']": (latent,),
           "['attn']['q']['kernel']": (latent, 16, 128), "['attn']['k']['kernel']": (latent, 4, 128),
           "['attn']['v']['kernel']": (latent, 4, 128), "['attn']['o']": (16, 128, latent),
           "['post_attention_norm']['scale']": (latent,), "['pre_mlp_norm']['scale']": (latent,),
           "['mlp']['gate']['kernel']": (latent, 4 * latent), "['mlp']['up']['kernel']": (latent, 4 * latent),
           "['mlp']['down']['kernel']": (4 * latent, latent), "['post_mlp_norm']['scale']": (latent,)}
  expected = {
      "['perceiver']['input_projection']['gate']['kernel']": (d, 4 * d),
      "['perceiver']['input_projection']['up']['kernel']": (d, 4 * d),
      "['perceiver']['input_projection']['down']['kernel']": (4 * d, latent),
      "['perceiver']['encoder']['latents']": (8, latent), "['perceiver']['encoder']['final_norm']['scale']": (latent,),
      "['perceiver']['decoder']['latents']": (rank, latent),  # one query per rank row, shared by all layers
      "['perceiver']['decoder']['final_norm']['scale']": (latent,),
      **{f"['perceiver']['encoder']['block_{b}']{k}": v for b in range(9) for k, v in block.items()},
      **{f"['perceiver']['decoder']['block_0']{k}": v for k, v in block.items()},
      "['pre_head_0']['pre_norm']['scale']": (latent,), "['pre_head_0']['pre_norm']['bias']": (latent,),
      "['pre_head_0']['w1']": (layers, latent, hidden), "['pre_head_0']['b1']": (layers, hidden),
      "['pre_head_0']['w2']": (layers, hidden, latent), "['pre_head_0']['b2']": (layers, latent),
      "['pre_head_0']['post_norm']['scale']": (latent,), "['pre_head_0']['post_norm']['bias']": (latent,),
      "['heads_down']['head_a']": (layers, latent, d_in), "['heads_down']['head_b']": (layers, latent, d),
      "['heads_down']['scale_a']": (layers, rank), "['heads_down']['scale_b']": (layers, rank),
      "['heads_down']['bias_a']": (layers, rank, d_in), "['heads_down']['bias_b']": (layers, rank, d),
  }
  assert shapes == expected


def test_switching_every_experimental_option_off_gives_the_published_hypernetwork(base_cfg):
  """The shipped options (B-only heads, chunk gates, centring, normalised features) each add or remove
  their own variables; all off again, the variables and the adapters are exactly d2l_paper's."""
  published = doc_to_lora.d2l_tiny(base_cfg)
  every = published.replace(experimental=EVERY_OPTION)
  assert set(doc_to_lora.variable_shapes(every)) == {"params", "code_stats"}
  heads = doc_to_lora.param_shapes(every)["heads_down"]
  assert set(heads) == {"head_b", "scale_b", "bias_a", "bias_b"} and "gates_down" in doc_to_lora.param_shapes(every)
  off = every.replace(experimental={name: getattr(doc_to_lora.Experimental(), name) for name in EVERY_OPTION})
  assert off == published == doc_to_lora.DocToLoraConfig(base=base_cfg, **{
      f: getattr(published, f) for f in ("perceiver", "rank", "pre_head_mlp_dim", "chunk_len", "max_chunks")})
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               doc_to_lora.init(off, jax.random.key(0)), doc_to_lora.init(published, jax.random.key(0)))
  assert doc_to_lora.d2l_paper(config_lib.gemma2_2b()) == doc_to_lora.DocToLoraConfig(base=config_lib.gemma2_2b())


def test_small_config_for_270m_is_about_a_tenth_of_the_base():
  n = doc_to_lora.num_params(doc_to_lora.d2l_small(config_lib.gemma3_270m()))
  assert 25e6 < n < 40e6, n


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_variable_has_logical_axes(base_cfg, encoder, check_logical_axes):
  cfg = _tiny(base_cfg, encoder)
  check_logical_axes(doc_to_lora.param_shapes(cfg), doc_to_lora.param_specs(cfg))
  cfg = _tiny(base_cfg, encoder, **EVERY_OPTION)
  check_logical_axes(doc_to_lora.param_shapes(cfg), doc_to_lora.param_specs(cfg))
  stats = doc_to_lora.abstract_variables(cfg)[doc_to_lora.STATS]
  check_logical_axes(nn.unbox(stats), nn.get_partition_spec(stats))


def test_sub_configs_take_dicts_and_unknown_fields_are_named(base_cfg):
  cfg = doc_to_lora.d2l_tiny(base_cfg, perceiver={"dtype": "bfloat16"}, experimental={"chunk_gate": True})
  assert cfg.perceiver.dtype == "bfloat16" and cfg.perceiver.latent_dim == 16 and cfg.experimental.chunk_gate
  with pytest.raises(ValueError, match=r"Experimental has no field\(s\) \['lookahead'\]"):
    cfg.replace(experimental={"lookahead": 2})
  with pytest.raises(ValueError, match="generated_factors must be one of"):
    cfg.replace(experimental={"generated_factors": "b+a"})


# ----------------------------------------------------------------------------- behaviour


def test_context_encoders_read_the_frozen_base_model(base_cfg, base_params):
  tokens = jnp.asarray([[2, 5, 6, 7, 0]], jnp.int32)
  full = transformer.forward(base_params, tokens, config=base_cfg, mask=tokens > 0, logits=False).per_layer_hidden
  residual = _tiny(base_cfg).replace(last_feature="residual")
  per_layer = doc_to_lora.encode_context(base_params, tokens, tokens > 0, config=residual)
  early = doc_to_lora.encode_context(base_params, tokens, tokens > 0, config=_tiny(base_cfg, "early_exit"))
  np.testing.assert_array_equal(np.asarray(per_layer), np.asarray(full))  # Z_0 .. Z_{L-1}
  # Published: the last one is the official encoder's last hidden state, Z_{L-1} through the final norm.
  published = np.asarray(doc_to_lora.encode_context(base_params, tokens, tokens > 0, config=_tiny(base_cfg)))
  np.testing.assert_array_equal(published[:-1], np.asarray(full[:-1]))
  last = np.asarray(full[-1], np.float64)
  final_scale = np.asarray(base_params["final_norm"]["scale"], np.float64)
  expected_last = last / np.sqrt((last ** 2).mean(-1, keepdims=True) + base_cfg.rms_norm_eps) * (1 + final_scale)
  np.testing.assert_allclose(published[-1], expected_last, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(early), np.asarray(full[1:2]), atol=1e-6)  # Z_1 from 1 of 3 layers
  exit_at_0 = _tiny(base_cfg, "early_exit").replace(exit_layer=0)
  embeddings = doc_to_lora.encode_context(base_params, tokens, tokens > 0, config=exit_at_0)
  np.testing.assert_allclose(np.asarray(embeddings), np.asarray(full[:1]), atol=1e-6)
  # Normalised (experimental): each Z_l as layer l's attention reads it, through its pre-attention norm.
  scales = np.asarray(base_params["layers"]["pre_attention_norm"]["scale"])
  full = np.asarray(full, np.float64)
  expected = full / np.sqrt((full ** 2).mean(-1, keepdims=True) + base_cfg.rms_norm_eps) * (1 + scales[:, None, None])
  normed = doc_to_lora.encode_context(base_params, tokens, tokens > 0,
                                      config=_tiny(base_cfg, normalize_features=True).replace(last_feature="residual"))
  np.testing.assert_allclose(np.asarray(normed), expected, rtol=1e-5, atol=1e-5)
  assert doc_to_lora.d2l_paper(config_lib.gemma2_2b(), context_encoder="early_exit").feature_layer == 26 // 4


@pytest.mark.parametrize("encoder,options", [(e, {}) for e in ENCODERS]
                         + [(ENCODERS[0], {"zero_b_init": "head"}), (ENCODERS[1], EVERY_OPTION)])
def test_zero_initialised_adapter_leaves_logits_unchanged(base_cfg, base_params, tokenizer, encoder, options):
  cfg = _tiny(base_cfg, encoder, **options)
  variables = doc_to_lora.init(cfg, jax.random.key(1))
  adapter = doc_to_lora.internalize(variables, base_params, ["A first document, long enough for chunks.", "Two."],
                                    config=cfg, tokenizer=tokenizer)
  lora.validate(adapter, base_cfg, batch_size=2)
  assert adapter.rank == (6 + 1) * cfg.rank  # 41 tokens in chunks of 7, then the bias block
  assert float(jnp.abs(adapter.weights["down"]["a"]).max()) > 0
  tokens = jax.random.randint(jax.random.key(2), (2, 9), 3, base_cfg.vocab_size)
  plain = transformer.forward(base_params, tokens, config=base_cfg).logits
  adapted = transformer.forward(base_params, tokens, config=base_cfg, adapter=adapter).logits
  np.testing.assert_array_equal(np.asarray(adapted), np.asarray(plain))


@pytest.mark.parametrize("options", [{}, EVERY_OPTION])
def test_batched_chunks_equal_a_per_chunk_loop(base_cfg, base_params, options):
  """Reference: each chunk encoded on its own, unpadded, its rank block concatenated by hand."""
  cfg = _tiny(base_cfg, **options)
  params = _trained_like(doc_to_lora.init(cfg, jax.random.key(1)))
  if options:  # a running mean and gates that keep some chunks and cut others
    params = _random_b_head(params)
    gates = params["params"]["gates_down"]
    params = _with(params, "gates_down", w=jax.random.normal(jax.random.key(4), gates["w"].shape) / 8)
    params = {**params, "code_stats": jax.tree.map(lambda x: x + 0.1, params["code_stats"])}
  ids = list(range(3, 41))  # 38 tokens: five chunks of 7 and one of 3 (padded in the batch)
  batch = doc_to_lora.chunk_documents([ids, ids[:10]], config=cfg)
  batched = doc_to_lora.adapter_from_chunks(params, base_params, *_chunk_arrays(batch), config=cfg)
  r, blocks = cfg.rank, []
  for start in range(0, len(ids), 7):
    chunk = jnp.asarray([[[base_cfg.bos_id, *ids[start:start + 7]]]], jnp.int32)
    single = doc_to_lora.adapter_from_chunks(params, base_params, chunk, jnp.ones(chunk.shape, bool), config=cfg)
    blocks.append(lora.LoraAdapter(jax.tree.map(lambda w: w[0, :, :r], single.weights), single.scaling))
  bias = lora.LoraAdapter(jax.tree.map(lambda w: w[0, :, r:], single.weights), single.scaling)
  expected = lora.concat(blocks + [bias])
  chex_tree_close(lora.take(batched, 0).weights, expected.weights, atol=1e-5)


def test_padding_the_last_chunk_changes_nothing(base_cfg, base_params):
  cfg = _tiny(base_cfg)
  params = _trained_like(doc_to_lora.init(cfg, jax.random.key(1)))
  chunk = [base_cfg.bos_id, 5, 6, 7]
  tokens = jnp.asarray([[chunk]], jnp.int32)
  padded = jnp.asarray([[chunk + [base_cfg.pad_id] * 4]], jnp.int32)
  unpadded_ad = doc_to_lora.adapter_from_chunks(params, base_params, tokens, tokens > 0, config=cfg)
  padded_ad = doc_to_lora.adapter_from_chunks(params, base_params, padded, padded > 0, config=cfg)
  chex_tree_close(padded_ad.weights, unpadded_ad.weights, atol=1e-5)


def test_iterative_equals_batched(base_cfg, base_params, tokenizer):
  cfg = _tiny(base_cfg)  # early_exit reads one layer: there is nothing to iterate over
  params = _trained_like(doc_to_lora.init(cfg, jax.random.key(1)))
  docs = ["Iterative mode: one layer at a time, same.", "Short doc."]  # 6 chunks
  run = functools.partial(doc_to_lora.internalize, params, base_params, docs, config=cfg, tokenizer=tokenizer)
  chex_tree_close(run(iterative=True).weights, run(iterative=False).weights, atol=1e-6)


def test_different_documents_give_different_adapters_in_one_batch(base_cfg, base_params, tokenizer):
  cfg = _tiny(base_cfg)
  params = doc_to_lora.init(cfg, jax.random.key(1))
  docs = ["The sky is blue and the grass is green.", "Magic number 4242."]  # 39 and 18 tokens: 6 and 3 chunks
  r = cfg.rank
  a = doc_to_lora.internalize(params, base_params, docs, config=cfg, tokenizer=tokenizer).weights["down"]["a"]
  assert not np.allclose(a[0, :, :r], a[1, :, :r])
  # Chunk slots the shorter document does not fill are exact zeros; both share the bias block.
  np.testing.assert_array_equal(np.asarray(a[1, :, 3 * r:6 * r]), 0.0)
  np.testing.assert_array_equal(np.asarray(a[0, :, -r:]), np.asarray(a[1, :, -r:]))
  b = doc_to_lora.internalize(_trained_like(params), base_params, docs, config=cfg,
                              tokenizer=tokenizer).weights["down"]["b"]
  assert not np.allclose(b[0, :, :r], b[1, :, :r])


@pytest.mark.parametrize("encoder,options", [(ENCODERS[0], {}), (ENCODERS[1], EVERY_OPTION)])
def test_generating_in_chunk_groups_equals_one_batch(base_cfg, base_params, encoder, options):
  """`generate` (what `internalize` runs) encodes the real chunks in CHUNK_GROUP groups, then the rest,
  and skips empty slots: its adapters are `adapter_from_chunks`'s one batch of all [N, K] slots, rank
  K*r + r, empty slots exact zeros."""
  cfg = _tiny(base_cfg, encoder, **options).replace(max_chunks=32)
  variables = _random_b_head(doc_to_lora.init(cfg, jax.random.key(1)))
  if options:  # a running mean, and gates that keep some chunks and cut others
    gates = variables["params"]["gates_down"]
    variables = _with(variables, "gates_down", w=jax.random.normal(jax.random.key(4), gates["w"].shape) / 8)
    variables = {**variables, "code_stats": jax.tree.map(lambda x: x + 0.1, variables["code_stats"])}
  ids = list(range(3, 3 + 7 * 19))  # 19 chunks of 7: two groups of 8, then one of 3
  assert doc_to_lora.generation.group_sizes(19) == [8, 8, 3]
  chunks = doc_to_lora.chunk_documents([ids, ids[:30]], config=cfg)  # the second: 5 chunks, 14 empty slots
  expected = doc_to_lora.adapter_from_chunks(variables, base_params, *_chunk_arrays(chunks), config=cfg)
  batched = doc_to_lora.generate(variables, base_params, chunks, config=cfg)
  single = doc_to_lora.generate(variables, base_params, doc_to_lora.chunk_documents([ids], config=cfg),
                                config=cfg, single=True)
  assert batched.rank == single.rank == expected.rank == 20 * cfg.rank
  # Within float rounding (XLA's CPU matmuls round a batch of 8 rows and of 19 differently: 3e-6 seen),
  # the tolerance of the per-chunk equivalence above.
  chex_tree_close(batched.weights, expected.weights, atol=1e-5)
  chex_tree_close(single.weights, lora.take(expected, 0).weights, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(batched.weights["down"]["b"][1, :, 5 * cfg.rank:-cfg.rank]), 0.0)


def test_a_new_document_length_compiles_no_new_encoder(base_cfg, base_params):
  """The base model and Perceiver run in groups of CHUNK_GROUP chunks and the rest: a document with a
  chunk count not seen before compiles only the adapter's assembly once its group sizes ran (an
  [N, K, T] program was compiled for every K)."""
  cfg = _tiny(base_cfg, "early_exit").replace(max_chunks=32)
  variables = doc_to_lora.init(cfg, jax.random.key(1))
  make = lambda k: doc_to_lora.generate(variables, base_params, doc_to_lora.chunk_documents(
      [list(range(3, 3 + 7 * k))], config=cfg), config=cfg, single=True)
  assert make(17).rank == 18 * cfg.rank
  compiled = doc_to_lora.generation._group_codes._cache_size()
  assert make(25).rank == 26 * cfg.rank and make(9).rank == 10 * cfg.rank  # groups 8, 8, 8, 1 and 8, 1
  assert doc_to_lora.generation._group_codes._cache_size() == compiled


# ----------------------------------------------------------------------------- experimental options


def test_generating_b_only_gives_every_chunk_the_bias_blocks_a(base_cfg, base_params, tokenizer):
  """generated_factors='b': A is learned but document-independent, so each document's adapter is
  linear in its codes (B) and the chunks differ only in B."""
  cfg = _tiny(base_cfg, generated_factors="b", zero_b_init="head")
  variables = doc_to_lora.init(cfg, jax.random.key(1))
  assert set(variables["params"]["heads_down"]) == {"head_b", "scale_b", "bias_a", "bias_b"}
  variables = _random_b_head(variables)
  docs = ["A first document, long enough for chunks.", "Two."]
  weights = doc_to_lora.internalize(variables, base_params, docs, config=cfg, tokenizer=tokenizer).weights["down"]
  r, bias_a = cfg.rank, np.asarray(variables["params"]["heads_down"]["bias_a"])
  for doc, chunks in ((0, 6), (1, 1)):
    for k in range(chunks):
      np.testing.assert_array_equal(np.asarray(weights["a"][doc, :, k * r:(k + 1) * r]), bias_a)
  np.testing.assert_array_equal(np.asarray(weights["a"][0, :, -r:]), bias_a)
  assert not np.allclose(weights["b"][0, :, :r], weights["b"][1, :, :r])
  with pytest.raises(ValueError, match="generated_factors"):
    cfg.replace(experimental={"generated_factors": "a"})


def test_chunk_gate_starts_at_one_and_scales_each_chunks_b_by_one_number_per_layer(base_cfg, base_params, tokenizer):
  """chunk_gate: at init the adapters are exactly those without it (so a trained hypernetwork can
  take one on); a gate reading the code scales every (chunk, layer) B block by its own factor in
  (0, 2); a closed gate removes the chunks and leaves the bias block."""
  cfg = _tiny(base_cfg, generated_factors="b", zero_b_init="head")
  gated = cfg.replace(experimental={"chunk_gate": True})
  variables = _random_b_head(doc_to_lora.init(cfg, jax.random.key(1)))
  gates = doc_to_lora.init(gated, jax.random.key(1))["params"]["gates_down"]
  assert set(doc_to_lora.param_shapes(gated)) - set(variables["params"]) == {"gates_down"}
  assert set(gates) == {"w", "c"}
  with_gates = lambda **g: {**variables, "params": {**variables["params"], "gates_down": {**gates, **g}}}
  docs = ["A first document, long enough for chunks.", "Two."]
  b = lambda v, c: np.asarray(doc_to_lora.internalize(v, base_params, docs, config=c, tokenizer=tokenizer)
                              .weights["down"]["b"])
  plain = b(variables, cfg)
  np.testing.assert_array_equal(b(with_gates(), gated), plain)

  w = jax.random.normal(jax.random.key(4), gates["w"].shape) / 8
  read = b(with_gates(w=w), gated)
  r, layers = cfg.rank, base_cfg.num_layers
  factors = np.zeros((6, layers))
  for k in range(6):  # document 0's six chunks: each (chunk, layer) block is its plain block times one number
    for layer in range(layers):
      block, plain_block = read[0, layer, k * r:(k + 1) * r], plain[0, layer, k * r:(k + 1) * r]
      factors[k, layer] = np.sum(block * plain_block) / np.sum(plain_block ** 2)
      np.testing.assert_allclose(block, factors[k, layer] * plain_block, rtol=1e-5, atol=1e-7)
  assert np.all((factors > 0) & (factors < 2)) and np.ptp(factors) > 0.5, factors
  tokens, mask = _chunk_arrays(doc_to_lora.chunk_documents(
      [tokenizer.encode(d, add_bos=False) for d in docs], config=gated))
  reported = doc_to_lora.chunk_gates(with_gates(w=w), base_params, tokens, mask, config=gated)["down"]
  np.testing.assert_allclose(np.asarray(reported[0]), factors, rtol=1e-4)
  np.testing.assert_array_equal(np.asarray(reported[1, 1:]), 0.0)  # document 1 fills one chunk slot of six
  with pytest.raises(ValueError, match="no chunk gates"):
    doc_to_lora.chunk_gates(variables, base_params, tokens, mask, config=cfg)
  np.testing.assert_array_equal(read[:, :, -r:], plain[:, :, -r:])  # the bias block is never gated

  closed = b(with_gates(c=jnp.full_like(gates["c"], -2.0)), gated)
  assert np.abs(closed[:, :, :-r]).max() < 1e-9 * np.abs(plain).max()
  np.testing.assert_array_equal(closed[:, :, -r:], plain[:, :, -r:])


def test_chunk_gate_cut_drops_the_chunks_a_gate_attenuates_and_still_trains_their_gates(base_cfg, base_params,
                                                                                         tokenizer):
  """chunk_gate_cut: a (chunk, layer) block whose soft gate is below 1 is zero, the others keep their
  soft gate; the gradient is the soft gate's (straight-through), so even a fully cut chunk's gate
  learns."""
  cfg = _tiny(base_cfg, generated_factors="b", zero_b_init="head", chunk_gate=True)
  cut = cfg.replace(experimental={"chunk_gate_cut": True})
  variables = _random_b_head(doc_to_lora.init(cfg, jax.random.key(1)))
  gates = variables["params"]["gates_down"]
  variables = _with(variables, "gates_down", w=jax.random.normal(jax.random.key(4), gates["w"].shape) / 8)
  tokens, mask = _chunk_arrays(doc_to_lora.chunk_documents(
      [tokenizer.encode("A first document, long enough for chunks.", add_bos=False)], config=cfg))
  soft = np.asarray(doc_to_lora.chunk_gates(variables, base_params, tokens, mask, config=cfg)["down"][0])  # [K, L]
  assert (soft < 1).any() and (soft > 1).any(), soft
  cut_gates = np.asarray(doc_to_lora.chunk_gates(variables, base_params, tokens, mask, config=cut)["down"][0])
  np.testing.assert_allclose(cut_gates, np.where(soft < 1, 0.0, soft), rtol=1e-6)
  b = lambda c: np.asarray(doc_to_lora.adapter_from_chunks(variables, base_params, tokens, mask, config=c)
                           .weights["down"]["b"][0])
  gated, kept = b(cfg), b(cut)
  r = cfg.rank
  for k in range(soft.shape[0]):
    for layer in range(base_cfg.num_layers):
      expect = 0.0 if soft[k, layer] < 1 else 1.0
      np.testing.assert_allclose(kept[layer, k * r:(k + 1) * r], expect * gated[layer, k * r:(k + 1) * r], atol=1e-7)
  np.testing.assert_array_equal(kept[:, -r:], gated[:, -r:])  # the bias block is never gated

  closed = _with(variables, "gates_down", c=jnp.full_like(gates["c"], -1.0))

  def loss(params, c):
    adapter = doc_to_lora.adapter_from_chunks({"params": params}, base_params, tokens, mask, config=c)
    return jnp.sum(jnp.sin(lora.merged_delta(adapter, "down")))
  closed_b = doc_to_lora.adapter_from_chunks(closed, base_params, tokens, mask, config=cut).weights["down"]["b"]
  assert float(jnp.abs(closed_b[..., :-r, :]).max()) == 0.0  # every chunk cut: the forward pass has none
  grad_c = jax.grad(loss)(closed["params"], cut)["gates_down"]["c"]
  assert float(jnp.abs(grad_c).max()) > 0
  with pytest.raises(ValueError, match="chunk_gate_cut=True needs chunk_gate=True"):
    cfg.replace(experimental={"chunk_gate": False, "chunk_gate_cut": True})


@pytest.mark.parametrize("options", [{}, {"generated_factors": "b"}, EVERY_OPTION])
def test_generator_jits_and_its_gradients_are_finite_and_non_zero(base_cfg, base_params, options):
  # early_exit differs only in its inputs; its jitted path runs in the tests above
  cfg = _tiny(base_cfg, **options)
  tokens, mask = _chunk_arrays(doc_to_lora.chunk_documents([list(range(3, 15)), [9, 8, 7]], config=cfg))
  variables = doc_to_lora.init(cfg, jax.random.key(1))

  def grad(variables):  # a smooth function of the full weight deltas (the base-model path is tested above)
    def loss(params):
      adapter = doc_to_lora.document_adapters({**variables, "params": params}, base_params, tokens, mask,
                                              config=cfg, train=True).adapter
      return jnp.sum(jnp.sin(lora.merged_delta(adapter, "down")))
    return jax.jit(jax.grad(loss))(variables["params"])

  grads = grad(variables)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))  # at init: the B side only
  for path, g in jax.tree_util.tree_leaves_with_path(grad(_random_b_head(variables))):
    assert bool(jnp.isfinite(g).all()), jax.tree_util.keystr(path)
    assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)  # every param learns; statistics are not params


@pytest.mark.parametrize("zero_b_init", ("scale", "head"))
def test_which_b_factor_starts_at_zero_decides_what_learns_first(base_cfg, base_params, zero_b_init):
  """The published init (scale_b = 0) gives the B head no gradient at first: B = scale_b * head_b(x)
  starts as a product of two factors, each moved only through the other. A zero B head with
  scale_b = 1 gives it one from the first step."""
  cfg = _tiny(base_cfg, zero_b_init=zero_b_init)
  tokens, mask = _chunk_arrays(doc_to_lora.chunk_documents([list(range(3, 15)), [9, 8, 7]], config=cfg))
  params = doc_to_lora.init(cfg, jax.random.key(1))["params"]
  head = params["heads_down"]
  assert float(jnp.abs(head["scale_b"] if zero_b_init == "scale" else head["head_b"]).max()) == 0

  def loss(p):
    adapter = doc_to_lora.adapter_from_chunks({"params": p}, base_params, tokens, mask, config=cfg)
    return jnp.sum(jnp.sin(lora.merged_delta(adapter, "down")))

  grads = jax.grad(loss)(params)["heads_down"]
  assert (float(jnp.abs(grads["head_b"]).max()) > 0) == (zero_b_init == "head")
  assert (float(jnp.abs(grads["scale_b"]).max()) > 0) == (zero_b_init == "scale")


def test_generation_centred_on_the_running_mean_equals_meta_training_centred_on_the_batch(base_cfg, base_params):
  cfg = _tiny(base_cfg, center_momentum=0.9)
  tokens, mask = _chunk_arrays(doc_to_lora.chunk_documents([list(range(3, 15)), [9, 8, 7]], config=cfg))
  variables = _trained_like(doc_to_lora.init(cfg, jax.random.key(1)))
  trained, stats, _ = doc_to_lora.document_adapters(variables, base_params, tokens, mask, config=cfg, train=True)
  # The short document's second chunk slot is padding: it must not enter the mean.
  flat_tokens, flat_mask = tokens.reshape(-1, tokens.shape[-1]), mask.reshape(-1, mask.shape[-1])
  features = doc_to_lora.encode_context(base_params, flat_tokens, flat_mask, config=cfg)
  codes = np.asarray(doc_to_lora.chunk_codes(variables, features, flat_mask, config=cfg))
  real = np.asarray(flat_mask.any(-1))
  # One update of the zero running mean (momentum 0.9): 0.1 x the batch mean, with weight 0.1 to debias it.
  centre = stats[doc_to_lora.STATS]["centre"]
  np.testing.assert_allclose(np.asarray(centre["ema"]), 0.1 * codes[real].mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(centre["weight"]), 0.1, rtol=1e-6)
  # Before any update the running mean is zero; one debiased update makes it the batch mean exactly.
  uncentred = doc_to_lora.adapter_from_chunks(variables, base_params, tokens, mask, config=cfg)
  assert not np.allclose(np.asarray(uncentred.weights["down"]["a"]), np.asarray(trained.weights["down"]["a"]))
  generated = doc_to_lora.adapter_from_chunks({**variables, **stats}, base_params, tokens, mask, config=cfg)
  for key in ("a", "b"):
    np.testing.assert_allclose(np.asarray(generated.weights["down"][key]), np.asarray(trained.weights["down"][key]),
                               rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="needs its 'code_stats' variables"):
    doc_to_lora.adapter_from_chunks({"params": variables["params"]}, base_params, tokens, mask, config=cfg)


def test_a_recomputed_centre_makes_generation_equal_batch_centred_meta_training(base_cfg, base_params):
  cfg = _tiny(base_cfg, center_momentum=0.9)
  tokens, mask = _chunk_arrays(doc_to_lora.chunk_documents([list(range(3, 15)), [9, 8, 7], [4, 5, 6, 7]], config=cfg))
  variables = _trained_like(doc_to_lora.init(cfg, jax.random.key(1)))
  variables = {**variables, "code_stats": {"centre": {"ema": jnp.ones_like(variables["code_stats"]["centre"]["ema"]),
                                                      "weight": jnp.ones(())}}}  # a stale mean
  trained = doc_to_lora.document_adapters(variables, base_params, tokens, mask, config=cfg, train=True).adapter
  stale = doc_to_lora.adapter_from_chunks(variables, base_params, tokens, mask, config=cfg)
  assert not np.allclose(np.asarray(stale.weights["down"]["a"]), np.asarray(trained.weights["down"]["a"]))
  for batch_size in (16, 2):  # batches of 2 documents (2 + 1 real chunks, then 1): weighted by their chunks
    recentred = doc_to_lora.recompute_center(variables, base_params, tokens, mask, config=cfg, batch_size=batch_size)
    generated = doc_to_lora.adapter_from_chunks(recentred, base_params, tokens, mask, config=cfg)
    for key in ("a", "b"):
      np.testing.assert_allclose(np.asarray(generated.weights["down"][key]),
                                 np.asarray(trained.weights["down"][key]), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="does not centre its codes"):
    doc_to_lora.recompute_center(variables, base_params, tokens, mask, config=_tiny(base_cfg))


# ----------------------------------------------------------------------------- bad input


def test_stacked_documents_are_their_own_chunk_adapters_side_by_side(base_cfg, base_params, tokenizer):
  """Reference: each document internalized alone; the stack holds their chunk blocks in order, then one
  bias block, and no chunk straddles two documents."""
  cfg = _tiny(base_cfg, "early_exit", **EVERY_OPTION)
  params = _random_b_head(doc_to_lora.init(cfg, jax.random.key(1)))
  docs = ["Sky is blue", "Number 4242."]  # 2 chunks each
  r = cfg.rank
  alone = [doc_to_lora.internalize(params, base_params, d, config=cfg, tokenizer=tokenizer) for d in docs]
  stacked = doc_to_lora.internalize(params, base_params, docs, config=cfg, tokenizer=tokenizer, stack=True)
  blocks = [lora.LoraAdapter(jax.tree.map(lambda w: w[:, :-r], a.weights), a.scaling) for a in alone]
  bias = lora.LoraAdapter(jax.tree.map(lambda w: w[:, -r:], alone[0].weights), alone[0].scaling)
  expected = lora.concat(blocks + [bias])
  assert stacked.rank == expected.rank == sum(a.rank - r for a in alone) + r
  chex_tree_close(stacked.weights, expected.weights, atol=1e-5)
  ids = [tokenizer.encode(d, add_bos=False) for d in docs]
  layout = doc_to_lora.stack_documents([ids], config=cfg)
  assert layout.tokens.shape[:2] == (1, sum(-(-len(i) // (cfg.chunk_len - 1)) for i in ids))
  # A batch of stacks: each row the stack's adapter, a lone document a stack of one.
  batch = doc_to_lora.internalize(params, base_params, [docs, docs[1]], config=cfg, tokenizer=tokenizer)
  chex_tree_close(lora.take(batch, 0).weights, stacked.weights, atol=1e-5)
  short = lora.take(batch, 1)
  chex_tree_close(jax.tree.map(lambda w: w[:, :alone[1].rank - r], short.weights),
                  jax.tree.map(lambda w: w[:, :-r], alone[1].weights), atol=1e-5)
  with pytest.raises(ValueError, match="stack 1, document 0 is empty"):
    doc_to_lora.internalize(params, base_params, [docs, [" "]], config=cfg, tokenizer=tokenizer)
  with pytest.raises(ValueError, match="^document 1 is empty"):
    doc_to_lora.stack_documents([[ids[0], []]], config=cfg)
  with pytest.raises(ValueError, match=r"2 documents make 7 chunks .* max_chunks=6"):
    doc_to_lora.stack_documents([[list(range(3, 31)), list(range(3, 24))]], config=cfg)


def test_empty_or_too_long_documents_are_rejected(base_cfg, base_params, tokenizer):
  cfg = _tiny(base_cfg)
  variables = doc_to_lora.init(cfg, jax.random.key(1))
  with pytest.raises(ValueError, match="document 1 is empty"):
    doc_to_lora.internalize(variables, base_params, ["fine", "   "], config=cfg, tokenizer=tokenizer)
  with pytest.raises(ValueError, match="document 0 is empty"):
    doc_to_lora.chunk_documents([[]], config=cfg)
  with pytest.raises(ValueError, match="no documents"):
    doc_to_lora.chunk_documents([], config=cfg)
  too_long = "x" * (cfg.max_chunks * (cfg.chunk_len - 1) + 1)
  with pytest.raises(ValueError, match=r"max_chunks=6 \(42 tokens\)"):
    doc_to_lora.internalize(variables, base_params, too_long, config=cfg, tokenizer=tokenizer)


def test_chunking_layout(base_cfg):
  cfg = _tiny(base_cfg)
  chunks = doc_to_lora.chunk_documents([list(range(3, 12)), [5]], config=cfg, num_chunks=3)
  assert chunks.tokens.shape == (2, 3, 8)
  np.testing.assert_array_equal(chunks.tokens[0, :, 0], [base_cfg.bos_id, base_cfg.bos_id, base_cfg.pad_id])
  np.testing.assert_array_equal(chunks.tokens[0, 1, :3], [base_cfg.bos_id, 10, 11])
  np.testing.assert_array_equal(chunks.mask.sum(-1), [[8, 3, 0], [2, 0, 0]])


def chex_tree_close(actual, expected, atol):
  jax.tree.map(lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol, rtol=0),
               actual, expected)
