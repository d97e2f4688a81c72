"""The pieces of the ahead-of-time compile check that need no TPU: the pod configs' headers, the
placeholder batch, and reading XLA's reports. (tpu_compile_test.py compiles for real topologies.)"""

import functools
import math
from pathlib import Path

import gin
import jax
import numpy as np
import pytest

from lora_hyper import sharding
from lora_hyper.data import pipeline
from lora_hyper.training import aot, program as program_lib
from lora_hyper.training.optimizer import OptimizerConfig

from fakes import qa_records, tiny_base

ROOT = Path(__file__).parents[2]
POD_CONFIGS = ["gin_configs/d2l_gemma2_2b.gin", "gin_configs/t2l_gemma2_2b.gin"]
PAPER_EXAMPLES_PER_UPDATE = {"d2l_gemma2_2b.gin": 256, "t2l_gemma2_2b.gin": 8}


def _chips(topology: str) -> int:
  return math.prod(int(d) for d in topology.split(":")[1].split("x"))


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


@pytest.mark.parametrize("gin_file", POD_CONFIGS)
def test_every_recipe_splits_its_batch_and_keeps_the_paper_batch_per_update(gin_file):
  plans = aot.pod_plans(str(ROOT / gin_file))
  assert sum(p.shipped for p in plans) == 1 and len(plans) >= 4
  assert {p.topology.split(":")[0] for p in plans} >= {"v5e", "v4", "v5p"}
  for plan in plans:
    settings = aot.parse_pod_config(plan, "gemma2_2b")
    mesh = settings["mesh_shape"]
    chips = _chips(plan.topology)
    data_parallel = chips // (mesh[1] * mesh[2]) * mesh[1]
    assert chips % (mesh[1] * mesh[2]) == 0, plan
    assert settings["global_batch_size"] % data_parallel == 0, plan
    accumulation = settings["optimizer"].accumulation_steps
    assert settings["global_batch_size"] * accumulation == PAPER_EXAMPLES_PER_UPDATE[Path(gin_file).name], plan
    assert settings["optimizer"].total_steps * accumulation == settings["steps"], plan


def test_header_lines_are_parsed_and_rewritten(tmp_path):
  gin_file = tmp_path / "pod.gin"
  gin_file.write_text("# topology v5e:4x4 (v5e-16): old numbers\n"
                      "# recipe v4:2x2x4 (v4-32) | lora_hyper.train.global_batch_size = 32 | a.b = 1\n"
                      "lora_hyper.train.steps = 3\n")
  gin_file.write_text(gin_file.read_text() + "# recipe v5p:2x2x1 (v5p-8)\n")
  shipped, recipe, as_it_is = aot.pod_plans(str(gin_file))
  assert (shipped.topology, shipped.slice_name, shipped.bindings, shipped.shipped) == ("v5e:4x4", "v5e-16", (), True)
  assert (recipe.topology, recipe.slice_name, recipe.shipped) == ("v4:2x2x4", "v4-32", False)
  assert (as_it_is.topology, as_it_is.bindings, as_it_is.shipped) == ("v5p:2x2x1", (), False)
  assert recipe.bindings == ("lora_hyper.train.global_batch_size = 32", "a.b = 1")
  aot.rewrite_topology_line(str(gin_file), "# topology v5e:4x4 (v5e-16): new numbers")
  assert gin_file.read_text().splitlines() == [
      "# topology v5e:4x4 (v5e-16): new numbers",
      "# recipe v4:2x2x4 (v4-32) | lora_hyper.train.global_batch_size = 32 | a.b = 1",
      "lora_hyper.train.steps = 3",
      "# recipe v5p:2x2x1 (v5p-8)"]


def test_a_config_may_name_only_one_topology_for_itself(tmp_path):
  gin_file = tmp_path / "pod.gin"
  gin_file.write_text("# topology v5e:4x4: a\n# topology v4:2x2x4: b\n")
  with pytest.raises(ValueError, match="more than one"):
    aot.pod_plans(str(gin_file))


def test_xla_refusal_is_read_as_temporaries():
  message = ("RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: Ran out of memory on HBM, the total memory required "
             "for HLO temporaries (26.22G) exceeds available HBM (15.75G). HLO module: jit_train_step.")
  assert aot._refused_temporaries(message) == int(26.22 * aot.GiB)
  older = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (26.13G) "
           "exceeds available HBM (15.75G).")  # libtpu 0.0.42's words
  assert aot._refused_temporaries(older) == int(26.13 * aot.GiB)
  assert aot._refused_temporaries("INTERNAL: something else") is None


def test_largest_values_reads_shapes_from_hlo():
  hlo = ("%a = f32[104,512,9216]{2,1,0} multiply(%b, %c)\n%d = bf16[256000,2304]{1,0} all-gather(%e)\n"
         "%f = s32[] constant(1)\n%g = f32[104,512,9216]{2,1,0} add(%a, %a)")
  assert aot.largest_values(hlo, count=2) == (("f32[104,512,9216]", 104 * 512 * 9216 * 4),
                                              ("bf16[256000,2304]", 256000 * 2304 * 2))


def test_placeholder_batch_has_the_trainers_shapes_and_sharding():
  """The compile check's batch (placeholder record) equals what the trainer builds from real data."""
  base = tiny_base()
  mesh = sharding.make_mesh(4, 2, 1)
  shapes = pipeline.DocExampleShapes(num_chunks=2, student_len=48, teacher_len=72, answer_len=4)
  program = program_lib.build(base.config, mesh, hypernetwork="d2l_tiny",
                              hyper_overrides={"chunk_len": 16, "max_chunks": 2}, objective="d2l_kl",
                              objective_overrides=None, optimizer=OptimizerConfig(total_steps=10), remat=False,
                              compute_dtype="float32", seed=0)
  settings = {"doc_shapes": shapes, "global_batch_size": 16}
  placeholder = aot.example_batch(program, settings)
  to_example = functools.partial(pipeline.doc_example, tokenizer=base.tokenizer, hyper=program.hyper, shapes=shapes)
  real = next(iter(pipeline.batches(qa_records(32), to_example, global_batch_size=16, seed=0)))
  assert {k: (v.shape, v.dtype) for k, v in placeholder.items()} == \
      {k: (v.shape, np.asarray(v).dtype) for k, v in real.items()}
  assert all(v.sharding == program.batch_sharding for v in placeholder.values())
  # And it compiles on this machine's 8 CPU devices into the step the trainer runs.
  compiled = program.jit(placeholder).lower(program.abstract_state(), program.abstract_base_params("float32"),
                                            placeholder).compile()
  assert compiled.memory_analysis().temp_size_in_bytes > 0
  assert len(jax.devices()) == 8


def test_replicated_lists_only_whole_arrays_over_the_threshold():
  mesh = sharding.make_mesh(4, 2, 1)
  whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  big = (200 * 10**6 // 4,)
  tree = {"a": jax.ShapeDtypeStruct(big, np.float32, sharding=whole),
          "b": jax.ShapeDtypeStruct(big, np.float32, sharding=split),
          "c": jax.ShapeDtypeStruct((8,), np.float32, sharding=whole)}
  assert aot._replicated(tree) == (("['a']", 200 * 10**6),)


def test_generation_step_holds_the_model_on_every_chip_when_data_parallel():
  """prepare-data's generation step compiled on 8 CPU devices: data-parallel, each holds the whole
  model and its share of the prompts; fsdp=2 halves the embedding-dimension params it holds."""
  from lora_hyper.model import config as config_lib, transformer

  config = config_lib.tiny_gemma3(max_seq_len=256)
  params = sum(x.size * 4 for x in jax.tree.leaves(jax.eval_shape(
      lambda k: transformer.init_params(config, k), jax.random.key(0))))
  prompts = 16 * 64 * (4 + 1) // 8  # int32 ids and bool mask, 2 prompts a device
  data = aot.compile_generation_step(config, jax.devices(), "v5e:2x4", batch=16, prompt_len=64, max_new_tokens=8,
                                     dtype="float32")
  assert data.mesh == {"data": 8, "fsdp": 1, "tensor": 1} and data.compiled
  assert data.argument_bytes == params + prompts + 8  # the key's 2 uint32
  assert data.replicated == ()  # nothing of a tiny model is over 100 MB
  fsdp = aot.compile_generation_step(config, jax.devices(), "v5e:2x4", batch=16, prompt_len=64, max_new_tokens=8,
                                     mesh_shape=(4, 2, 1), dtype="float32")
  assert fsdp.argument_bytes < data.argument_bytes
  with pytest.raises(ValueError, match="batch 12 does not split over the mesh"):
    aot.compile_generation_step(config, jax.devices(), "v5e:2x4", batch=12, prompt_len=64, max_new_tokens=8)
