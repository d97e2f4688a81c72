"""Sakana AI's published Doc-to-LoRA checkpoints: read safely, converted exactly, written back.

Checkpoints here are written by torch.save in the format note's layout (keys, orientations, the
pickled config objects, with peft's real LoraConfig), and the reference forward pass is a PyTorch
transcription of the note on transformers' Gemma 2 (checked against the official code's own outputs
by benchmarks/sakana_parity.py)."""

import dataclasses
import os
import pickle
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lora_hyper import torch_checkpoint
from lora_hyper.hypernetworks import doc_to_lora, published, saved
from lora_hyper.hypernetworks.doc_to_lora import sakana
from lora_hyper.model import config as config_lib
from lora_hyper.model import transformer
from lora_hyper.model.base_model import BaseModel

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
import hf_reference  # noqa: E402  (imports torch)

pytestmark = pytest.mark.torch

LATENT, BLOCKS, RANK = 32, 9, 8
AFFIXES = ((2, 5, 6, 7), (8, 9, 10, 11, 12))  # a chat turn's ids within the tiny vocabulary


# ----------------------------------------------------------------------------- their layout, from the note


def note_shapes(layers: int, d: int, d_in: int, d_out: int, latent: int, blocks: int) -> dict[str, tuple]:
  """The format note's table of keys and shapes, in its order (one target module, down_proj)."""
  q, kv, f = 16 * 128, 4 * 128, 4 * latent
  block = {"input_latents_layernorm.weight": (latent,), "input_context_layernorm.weight": (latent,),
           "self_attn.q_proj.weight": (q, latent), "self_attn.k_proj.weight": (kv, latent),
           "self_attn.v_proj.weight": (kv, latent), "self_attn.o_proj.weight": (latent, q),
           "post_attention_layernorm.weight": (latent,), "pre_ff_layernorm.weight": (latent,),
           "post_ff_layernorm.weight": (latent,),  # a real file's order: the norms before the MLP
           "mlp.gate_proj.weight": (f, latent), "mlp.up_proj.weight": (f, latent), "mlp.down_proj.weight": (latent, f)}
  p = "aggregator.perceiver"
  shapes = {f"{p}.modality_projection.gate_proj.weight": (4 * d, d), f"{p}.modality_projection.up_proj.weight": (4 * d, d),
            f"{p}.modality_projection.down_proj.weight": (latent, 4 * d), f"{p}.encoder.latents_q": (8, latent)}
  for b in range(blocks):
    shapes |= {f"{p}.encoder.layers.{b}.{k}": s for k, s in block.items()}
  shapes |= {f"{p}.encoder.layernorm.weight": (latent,), f"{p}.decoder.latents_q": (RANK, latent)}
  shapes |= {f"{p}.decoder.layers.0.{k}": s for k, s in block.items()}
  shapes |= {f"{p}.decoder.layernorm.weight": (latent,),
             "layers.0.layers.0.weight": (latent,), "layers.0.layers.0.bias": (latent,),
             "layers.0.layers.1.weight": (layers, latent, f), "layers.0.layers.1.bias": (1, layers, 1, 1, f),
             "layers.0.layers.3.weight": (layers, f, latent), "layers.0.layers.3.bias": (1, layers, 1, 1, latent),
             "layers.0.layers.4.weight": (latent,), "layers.0.layers.4.bias": (latent,),
             "bias_A.down_proj": (layers, RANK, d_in), "bias_B.down_proj": (layers, RANK, d_out),
             "scaler_A.down_proj": (1, layers, RANK, 1), "scaler_B.down_proj": (1, layers, RANK, 1),
             "head.weight": (layers, latent, d_in + d_out)}
  return shapes


@dataclasses.dataclass
class HypernetConfig:
  latent_size: int
  use_light_weight_lora: bool
  light_weight_latent_size: int
  per_rank_gen: bool
  use_per_rank_bias: bool
  use_bias: bool
  per_layer_processing: bool
  use_token_mixing: bool
  num_pre_head_layers: int
  dropout_rate: float
  lora_config: object
  extra_modules: object
  base_hidden_size: int
  layer_indices: object
  feature_sizes: tuple
  aggregator_config: object


@dataclasses.dataclass
class AggregatorConfig:
  aggregator_type: str
  num_layers: int
  num_modules: int
  num_extra_modules: int
  output_size: int
  feature_size: int
  pooling_type: str
  num_latent_factor: int
  lora_r: int
  per_rank_gen: bool
  n_latent_queries: int
  num_blocks: int
  num_self_attn_per_block: int
  shared_weights: bool
  layer_to_layer_ctx_encoder: bool


@dataclasses.dataclass
class CtxEncoderArguments:
  ctx_encoder_model_name_or_path: object = None
  ctx_encoder_type: str = "per_layer_activations"
  layer_idx: int = 0
  quantize_ctx_encoder: bool = False
  ctx_encoder_last_layer: object = None


@pytest.fixture
def their_modules(monkeypatch):
  """Their config classes importable under their names, as when their package is installed."""
  homes = {"ctx_to_lora.modeling.hypernet": HypernetConfig, "ctx_to_lora.modeling.aggregator": AggregatorConfig,
           "ctx_to_lora.configs": CtxEncoderArguments}
  for name in ("ctx_to_lora", "ctx_to_lora.modeling", *homes):
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
  for module, cls in homes.items():
    monkeypatch.setattr(cls, "__module__", module)
    setattr(sys.modules[module], cls.__name__, cls)
  return homes


def their_entries(layers, d, d_in, d_out, *, base_name="google/gemma-2-2b-it", **changes):
  lora_config = peft.LoraConfig(r=RANK, lora_alpha=2 * RANK ** 1.5, target_modules=["down_proj"],
                                task_type="CAUSAL_LM", base_model_name_or_path=base_name)
  aggregator = AggregatorConfig("perceiver", layers, 1, 0, LATENT, d, "mean", 8, RANK, True, 8, BLOCKS, 0, False, True)
  hyper = HypernetConfig(LATENT, False, 128, True, False, True, True, False, 1, 0.0, lora_config, None, d,
                         torch.arange(layers), ({"down_proj": d_in}, {"down_proj": d_out}), aggregator)
  for name, value in changes.items():
    setattr(aggregator if hasattr(aggregator, name) else hyper, name, value)
  return {"base_model_name_or_path": base_name, "hypernet_config": hyper,
          "ctx_encoder_args": CtxEncoderArguments(layer_idx=layers // 4)}


def random_state(shapes, seed=0):
  """Non-trivial values: scalers and norm weights around 1, every adapter part nonzero."""
  gen = torch.Generator().manual_seed(seed)
  state = {}
  for key, shape in shapes.items():
    x = torch.randn(shape, generator=gen)
    if "scaler" in key or "layernorm" in key or key.endswith((".0.weight", ".4.weight")):
      x = 1 + 0.2 * x
    elif "weight" in key and len(shape) >= 2 and key != "head.weight":
      x = x / shape[-1] ** 0.5 if "layers.0.layers" not in key else x / shape[-2] ** 0.5
    else:
      x = 0.05 * x if key.startswith(("bias_", "head")) else x
    state[key] = x.float().contiguous()
  return state


def save_theirs(path, state, entries):
  torch.save({**state, **entries}, path)  # what their trainer's torch.save(state_dict) writes, configs included
  return path


# ----------------------------------------------------------------------------- a PyTorch transcription of the note


class NoteReference:
  """Doc-to-LoRA's published forward pass, read from the format note, on a transformers Gemma 2."""

  def __init__(self, state, hf_model, alpha):
    self.w, self.hf, self.alpha = state, hf_model, alpha

  def rms(self, x, key):
    return self.w[key] * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6))

  def lin(self, x, key):
    return x @ self.w[key].T

  def swiglu(self, x, p):
    return self.lin(torch.nn.functional.silu(self.lin(x, p + "gate_proj.weight")) * self.lin(x, p + "up_proj.weight"),
                    p + "down_proj.weight")

  def attend(self, latents, context, p):
    q = self.lin(latents, p + "q_proj.weight").view(latents.shape[0], 16, 128)
    k = self.lin(context, p + "k_proj.weight").view(context.shape[0], 4, 128).repeat_interleave(4, 1)
    v = self.lin(context, p + "v_proj.weight").view(context.shape[0], 4, 128).repeat_interleave(4, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / 128 ** 0.5
    return self.lin(torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(latents.shape[0], -1),
                    p + "o_proj.weight")

  def resampler(self, context, p, blocks):
    x = self.w[p + "latents_q"]
    for b in range(blocks):
      q = f"{p}layers.{b}."
      attn = self.attend(self.rms(x, q + "input_latents_layernorm.weight"),
                         self.rms(context, q + "input_context_layernorm.weight"), q + "self_attn.")
      x = x + self.rms(attn, q + "post_attention_layernorm.weight")
      x = x + self.rms(self.swiglu(self.rms(x, q + "pre_ff_layernorm.weight"), q + "mlp."), q + "post_ff_layernorm.weight")
    return self.rms(x, p + "layernorm.weight")

  def layer_norm(self, x, p):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), self.w[p + ".weight"], self.w[p + ".bias"], 1e-5)

  def features(self, ids):
    """[L, T, d]: embeddings * sqrt(d), raw residual streams, the last one through the final norm."""
    states = self.hf(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    layers = len(self.hf.model.layers)
    return torch.stack([*states[:layers - 1], self.hf.model.norm(states[layers - 1])], 1)[0]

  def chunk_lora(self, ids, d_in):
    a, b = [], []
    features = self.features(ids)
    for l in range(features.shape[0]):
      x = self.swiglu(features[l], "aggregator.perceiver.modality_projection.")
      x = self.resampler(self.resampler(x, "aggregator.perceiver.encoder.", BLOCKS), "aggregator.perceiver.decoder.", 1)
      h = torch.nn.functional.silu(self.layer_norm(x, "layers.0.layers.0") @ self.w["layers.0.layers.1.weight"][l]
                                   + self.w["layers.0.layers.1.bias"][0, l, 0, 0])
      x = x + self.layer_norm(h @ self.w["layers.0.layers.3.weight"][l] + self.w["layers.0.layers.3.bias"][0, l, 0, 0],
                              "layers.0.layers.4")
      out = (x / x.norm(dim=-1, keepdim=True)) @ self.w["head.weight"][l]
      a.append(out[:, :d_in] * self.w["scaler_A.down_proj"][0, l])
      b.append(out[:, d_in:] * self.w["scaler_B.down_proj"][0, l])
    return torch.stack(a), torch.stack(b)

  def document_lora(self, chunks, d_in):
    """Chunk LoRAs concatenated along the rank, then the unscaled bias block."""
    parts = [self.chunk_lora(c, d_in) for c in chunks]
    return (torch.cat([a for a, _ in parts] + [self.w["bias_A.down_proj"]], 1),
            torch.cat([b for _, b in parts] + [self.w["bias_B.down_proj"]], 1))

  def logits(self, ids, a, b):
    hooks = [layer.mlp.down_proj.register_forward_hook(
        lambda mod, inp, out, l=l: out + self.alpha * ((inp[0] @ a[l].T) @ b[l]))
        for l, layer in enumerate(self.hf.model.layers)]
    try:
      return self.hf(input_ids=torch.tensor([ids])).logits[0]
    finally:
      for hook in hooks:
        hook.remove()


@pytest.fixture(scope="module")
def gemma2():
  hf = hf_reference.tiny_hf_model("gemma2")
  cfg, params = hf_reference.ours_from_hf(hf)
  return hf, cfg, jax.device_put(params)


def test_imported_checkpoint_gives_the_reference_adapters_and_logits(gemma2, their_modules, tmp_path):
  hf, cfg, params = gemma2
  d_in, d_out = cfg.module_shape("down")
  state = random_state(note_shapes(cfg.num_layers, cfg.embed_dim, d_in, d_out, LATENT, BLOCKS))
  path = save_theirs(tmp_path / "pytorch_model.bin", state, their_entries(cfg.num_layers, cfg.embed_dim, d_in, d_out))
  config, variables = sakana.convert(sakana.read_checkpoint(path), cfg, affixes=AFFIXES)
  assert config == doc_to_lora.d2l_paper(cfg, perceiver={"latent_dim": LATENT, "mlp_dim": 4 * LATENT},
                                         pre_head_mlp_dim=4 * LATENT, chunk_prefix=AFFIXES[0], chunk_suffix=AFFIXES[1])
  reference = NoteReference(state, hf, config.scaling)

  rng = np.random.default_rng(0)
  short, long = rng.integers(13, 120, 20).tolist(), rng.integers(13, 120, 70).tolist()
  config = config.replace(chunk_len=32)  # the long document splits into 3 chat-turn chunks
  one, three = doc_to_lora.split_document(short, config), doc_to_lora.split_document(long, config)
  assert len(one) == 1 and len(three) == 3 and three[1][:4] == list(AFFIXES[0]) and three[1][-5:] == list(AFFIXES[1])
  adapters = doc_to_lora.internalize_chunk_ids(jax.tree.map(jnp.asarray, variables), params, [one, three],
                                               config=config)
  query = rng.integers(3, 120, 10).tolist()
  with torch.no_grad():
    for i, chunks in enumerate((one, three)):
      want_a, want_b = reference.document_lora(chunks, d_in)
      rows = want_a.shape[1]  # one-chunk documents are zero-padded to the batch's 3 chunks, bias block after
      a, b = (np.asarray(adapters.weights["down"][k][i]) for k in "ab")
      kept = np.r_[0:rows - RANK, a.shape[1] - RANK:a.shape[1]]
      np.testing.assert_allclose(a[:, kept], want_a.numpy(), rtol=1e-4, atol=1e-4 * np.abs(want_a.numpy()).max())
      np.testing.assert_allclose(b[:, kept], want_b.numpy(), rtol=1e-4, atol=1e-4 * np.abs(want_b.numpy()).max())
      assert np.abs(want_b.numpy()).max() > 1e-2  # generated B is not the zero of an untrained head
      ours = transformer.forward(params, jnp.asarray([query]), config=cfg,
                                 adapter=jax.tree.map(lambda w: w[i:i + 1], adapters)).logits[0]
      theirs = reference.logits(query, want_a, want_b).numpy()
      np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-3)
      assert np.abs(theirs - hf(input_ids=torch.tensor([query])).logits[0].numpy()).max() > 1e-2


def test_the_published_recipe_is_d2l_paper_on_gemma2_2b(their_modules):
  base = config_lib.gemma2_2b()
  layers, (d_in, d_out) = base.num_layers, base.module_shape("down")
  entries = their_entries(layers, base.embed_dim, d_in, d_out)
  entries["hypernet_config"].latent_size = entries["hypernet_config"].aggregator_config.output_size = 512
  entries = pickle.loads(pickle.dumps(entries))  # plain objects, as the reader gives them
  bags = {k: (_bag(v) if k != "base_model_name_or_path" else v) for k, v in entries.items()}
  config = sakana.config_from_checkpoint(bags, base)
  assert config == doc_to_lora.d2l_paper(base, chunk_prefix=(2, 106, 1645, 110), chunk_suffix=(107, 108, 106, 2516, 108))
  assert doc_to_lora.num_params(config) == 315_237_792
  assert sakana.expected_shapes(config) == note_shapes(layers, base.embed_dim, d_in, d_out, 512, BLOCKS)


def _bag(obj):
  """An object graph as the safe reader returns it: attribute bags, plain containers, numpy."""
  if dataclasses.is_dataclass(obj) or isinstance(obj, peft.LoraConfig):
    return torch_checkpoint.record_class(f"x.{type(obj).__name__}")({k: _bag(v) for k, v in vars(obj).items()})
  if isinstance(obj, torch.Tensor):
    return obj.numpy()
  if isinstance(obj, dict):
    return {k: _bag(v) for k, v in obj.items()}
  if isinstance(obj, tuple):
    return tuple(_bag(v) for v in obj)
  return obj


# ----------------------------------------------------------------------------- safety and damage


class _RunsCode:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused_before_it_runs(tmp_path):
  marker = tmp_path / "ran"
  path = tmp_path / "pytorch_model.bin"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("pytorch_model/data.pkl", pickle.dumps({"x": _RunsCode(marker)}, protocol=2))
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match=r"names the global '(posix|os)\.system'"):
    sakana.read_checkpoint(path)
  assert not marker.exists()
  # The same refusal inside a well-formed state dict, for a global a real file could name plausibly.
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("pytorch_model/data.pkl", pickle.dumps({"x": pickle.loads}, protocol=2))
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match="names the global 'pickle.loads'"):
    sakana.read_checkpoint(path)


@pytest.fixture
def small_checkpoint(gemma2, their_modules, tmp_path):
  _, cfg, _ = gemma2
  d_in, d_out = cfg.module_shape("down")
  state = random_state(note_shapes(cfg.num_layers, cfg.embed_dim, d_in, d_out, LATENT, BLOCKS))
  return state, their_entries(cfg.num_layers, cfg.embed_dim, d_in, d_out), tmp_path / "pytorch_model.bin"


def test_missing_unexpected_and_misshapen_tensors_are_listed(gemma2, small_checkpoint):
  _, cfg, _ = gemma2
  state, entries, path = small_checkpoint
  damaged = {k: v for k, v in state.items() if k != "bias_B.down_proj"}
  damaged["aggregator.perceiver.extra.weight"] = torch.zeros(2)
  damaged["head.weight"] = damaged["head.weight"][:, :, :-1].contiguous()
  save_theirs(path, damaged, entries)
  with pytest.raises(sakana.CheckpointMismatchError) as error:
    sakana.convert(sakana.read_checkpoint(path), cfg, affixes=AFFIXES, source=str(path))
  message = str(error.value)
  assert "missing: ['bias_B.down_proj']" in message and "unexpected: ['aggregator.perceiver.extra.weight']" in message
  assert "head.weight (4, 32, 95) (expected (4, 32, 96))" in message

  save_theirs(path, state, entries)  # sound, but for another base model
  other = config_lib.tiny_gemma2(num_layers=3, mlp_dim=48, sliding_layers=(True, False, True))
  with pytest.raises(sakana.CheckpointMismatchError, match=r"trained for another base model: layer_indices \[0, 1, 2, "
                                                           r"3\] \(the base model has 3 layers.*down_proj of shape "
                                                           r"\(64, 32\) \(the base model's is \(48, 32\)\)"):
    sakana.convert(sakana.read_checkpoint(path), other, affixes=AFFIXES)


def test_options_of_their_code_we_do_not_implement_are_named(gemma2, their_modules, tmp_path):
  _, cfg, _ = gemma2
  d_in, d_out = cfg.module_shape("down")
  entries = their_entries(cfg.num_layers, cfg.embed_dim, d_in, d_out, per_layer_processing=False, shared_weights=True)
  path = save_theirs(tmp_path / "pytorch_model.bin", {}, entries)
  with pytest.raises(sakana.CheckpointMismatchError, match=r"hypernet_config.per_layer_processing=False .*"
                                                           r"aggregator_config.shared_weights=True"):
    sakana.convert(sakana.read_checkpoint(path), cfg, affixes=AFFIXES)
  path.write_bytes(path.read_bytes()[:200])
  with pytest.raises(Exception, match="is not a torch zip checkpoint"):
    sakana.read_checkpoint(path)


def test_export_then_import_is_the_identity_and_torch_reads_the_export(gemma2, small_checkpoint, their_modules):
  _, cfg, params = gemma2
  state, entries, path = small_checkpoint
  save_theirs(path, state, entries)
  config, variables = sakana.convert(sakana.read_checkpoint(path), cfg, affixes=AFFIXES)
  exported = sakana.write_checkpoint(path.parent / "again", config, variables, base_name="google/gemma-2-2b-it")
  assert exported.name == "pytorch_model.bin"
  again_config, again = sakana.convert(sakana.read_checkpoint(exported), cfg, affixes=AFFIXES)
  assert again_config == config
  jax.tree.map(np.testing.assert_array_equal, again, variables)

  # torch (with their classes importable) loads what we wrote: their keys, order, shapes and values.
  loaded = torch.load(exported, weights_only=False, map_location="cpu")
  tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
  assert list(tensors) == list(state) and all(tensors[k].dtype == torch.float32 for k in tensors)
  for key in state:
    np.testing.assert_array_equal(tensors[key].numpy(), state[key].numpy())
  hyper = loaded["hypernet_config"]
  assert type(hyper) is their_modules["ctx_to_lora.modeling.hypernet"] and hyper.per_layer_processing
  assert hyper.layer_indices.tolist() == list(range(cfg.num_layers)) and hyper.aggregator_config.num_blocks == BLOCKS
  assert isinstance(hyper.lora_config.peft_type, peft.PeftType) and hyper.lora_config.target_modules == {"down_proj"}
  assert loaded["base_model_name_or_path"] == "google/gemma-2-2b-it"
  assert loaded["ctx_encoder_args"].ctx_encoder_type == "per_layer_activations"

  with pytest.raises(sakana.CheckpointMismatchError, match="context_encoder='early_exit'"):
    sakana.write_checkpoint(path.parent / "no", config.replace(context_encoder="early_exit"), variables, base_name="x")


def test_saved_folders_from_before_read_the_raw_last_layer(gemma2, tmp_path):
  """Hypernetworks saved before `last_feature` existed keep what they were trained on."""
  _, cfg, _ = gemma2
  config = doc_to_lora.d2l_tiny(cfg)
  folder = saved.save_hypernetwork(tmp_path / "h", config, doc_to_lora.init(config, jax.random.key(0)),
                                   base=published.io.BaseIdentity("tiny", "0" * 16))
  manifest = (folder / saved.MANIFEST)
  text = manifest.read_text().replace('  "last_feature": "final_norm",\n', "")
  assert "last_feature" not in text
  manifest.write_text(text)
  assert saved.load_hypernetwork(folder).config.last_feature == "residual"


def test_import_and_export_folders_without_a_tokenizer(gemma2, small_checkpoint):
  """A base folder without tokenizer.json converts and runs on token ids; text says what is missing."""
  _, cfg, params = gemma2
  state, entries, path = small_checkpoint
  save_theirs(path, state, entries)
  from lora_hyper.model.tokenizer import MissingTokenizer, MissingTokenizerError

  base = BaseModel(cfg, params, MissingTokenizer("gemma-2-folder"), "gemma-2-folder")
  with pytest.raises(sakana.CheckpointMismatchError, match="no chunk chat template known for the checkpoint's base "
                                                           "model 'x'"):
    entries["base_model_name_or_path"] = "x"
    save_theirs(path, state, entries)
    published.import_sakana_d2l(path, base, path.parent / "h")
  folder = published.import_sakana_d2l(path, base, path.parent / "h", chat_template="google/gemma-2-2b-it",
                                       dtype="bfloat16")
  hyper = saved.load_hypernetwork(folder, base)
  assert hyper.config.chunk_prefix == (2, 106, 1645, 110) and hyper.describe()["prompt"] == "chat"
  with pytest.raises(MissingTokenizerError, match="'gemma-2-folder' has no tokenizer.json"):
    doc_to_lora.internalize(hyper.variables, params, "some text", config=hyper.config, tokenizer=base.tokenizer)
  out = published.export_sakana_d2l(folder, path.parent / "served")
  assert out == path.parent / "served" / "pytorch_model.bin" and out.is_file()
