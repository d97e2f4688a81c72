"""The meta-training step of a gin config compiled ahead of time for a TPU topology, on a machine
without one: what each chip would hold, and whether it fits its HBM.

`jax.experimental.topologies` (with the `libtpu` wheel: `pip install -e '.[tpu-compile]'`) gives
devices of any slice shape to lower and compile for; XLA's memory analysis of the compiled step
says what every chip holds (arguments, outputs, temporaries) and its cost analysis what a step
costs. Nothing is allocated and no weights or data are read: the base model is named by
architecture (`lora_hyper.model.config.PRESETS`) and the batch comes from the same example
builders the trainer uses, run on a one-sentence placeholder record.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np

from lora_hyper import configurables  # noqa: F401  (registers the names gin files bind)
from lora_hyper import prompts, sharding
from lora_hyper.data import pipeline
from lora_hyper.hypernetworks import saved
from lora_hyper.model import config as config_lib
from lora_hyper.training import objectives, optimizer as optimizer_lib, program as program_lib, trainer

GiB = 2**30
REPLICATED_REPORT_BYTES = 100 * 10**6  # arrays above this held whole by every chip are listed


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_bytes: int  # nominal HBM per chip
  bf16_flops: float  # peak dense bfloat16 FLOP/s
  hbm_bandwidth: float  # bytes/s
  # libtpu's chip configuration: v4 and v5p VMs run their two cores as one device ("megacore"),
  # which JAX on those VMs does by default; without it a v4 slice compiles for one device a core.
  chip_config: str = "default"

  @property
  def usable_bytes(self) -> int:
    """What a program may use: the runtime keeps a little of the HBM (a v5e reports 15.75 GiB of 16)."""
    return int(self.hbm_bytes * 0.984)


# Public Cloud TPU figures, per chip.
CHIPS = {"v4": Chip(32 * GiB, 275e12, 1.2e12, "megacore"), "v5e": Chip(16 * GiB, 197e12, 0.819e12),
         "v5p": Chip(95 * GiB, 459e12, 2.765e12, "megacore"), "v6e": Chip(32 * GiB, 918e12, 1.64e12)}


def chip_of(topology: str) -> Chip:
  """The chip of a topology name such as 'v5e:4x4'."""
  generation = topology.split(":")[0]
  if generation not in CHIPS:
    raise ValueError(f"unknown TPU generation in {topology!r}; expected one of {sorted(CHIPS)}")
  return CHIPS[generation]


def topology_devices(topology: str) -> list[jax.Device]:
  """The devices of a TPU slice such as 'v5e:4x4' (v5e-16) or 'v4:2x2x4' (v4-32), for compiling only."""
  from jax.experimental import topologies  # needs libtpu

  # No TPU is touched: let libtpu load beside other processes that loaded it (its lock file is for
  # chips), and skip the cloud metadata queries a TPU VM would answer.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  chip = chip_of(topology)  # before libtpu: an unknown name fails with our message
  return list(topologies.get_topology_desc(topology, "tpu", chip_config_name=chip.chip_config).devices)


def train_settings() -> dict[str, Any]:
  """`lora_hyper.train`'s arguments as the parsed gin config binds them, defaults for the rest."""
  defaults = {name: p.default for name, p in inspect.signature(trainer.train).parameters.items()}
  return {**defaults, **gin.get_bindings(trainer.train)}


def base_architecture(base_model: Any, architecture: str | None) -> config_lib.GemmaConfig:
  """The base model's config without its weights: a named architecture, or a local HF folder's config.json."""
  if architecture is not None:
    if architecture not in config_lib.PRESETS:
      raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(config_lib.PRESETS)}")
    return config_lib.PRESETS[architecture]()
  if isinstance(base_model, str) and base_model in config_lib.PRESETS:
    return config_lib.PRESETS[base_model]()
  if base_model in (None, "gemma3-270m"):
    return config_lib.gemma3_270m()
  return config_lib.load_hf_config(base_model)


class _PlaceholderTokenizer:
  """Any text -> a few ids: the examples' shapes are fixed by the settings, not by the text."""

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    return [1] * min(len(text.split()), 4) + ([2] if add_bos else [])


def example_batch(program: program_lib.StepProgram, settings: dict[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
  """One global batch's shapes and shardings, from the trainer's own example builders."""
  record = {"document": "a short document", "query": "what?", "answer": "this", "description": "a task",
            "input": "an input", "output": "an output"}
  tokenizer, base = _PlaceholderTokenizer(), program.base_config
  if isinstance(program.objective, objectives.DocDistillation):
    example = pipeline.doc_example(record, tokenizer, program.hyper, settings["doc_shapes"])
  elif isinstance(program.objective, objectives.TaskSFT):
    example = pipeline.task_example(record, tokenizer, {"a task": np.zeros(program.hyper.emb_dim, np.float32)},
                                    base.bos_id, base.eos_id, base.pad_id, settings["task_shapes"],
                                    prompts.task_prompt)
  else:
    raise ValueError(f"compiling {type(program.objective).__name__} ahead of time is not supported: it reads "
                     "a task-LoRA library for its shapes")
  batch = settings["global_batch_size"]
  return {k: jax.ShapeDtypeStruct((batch, *np.shape(v)), np.asarray(v).dtype, sharding=program.batch_sharding)
          for k, v in example.items()}


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """Per-chip bytes of one compiled step and what it costs."""

  topology: str
  chips: int
  mesh: dict[str, int]
  argument_bytes: int
  output_bytes: int
  alias_bytes: int  # outputs that reuse their (donated) argument's buffer
  temp_bytes: int
  code_bytes: int
  usable_bytes: int
  flops: float  # per chip, per step
  bytes_accessed: float
  replicated: tuple[tuple[str, int], ...]  # (array, bytes) over REPLICATED_REPORT_BYTES on every chip
  largest: tuple[tuple[str, int], ...]  # the largest values in the compiled program (shape, bytes)
  compiled: bool  # False: XLA refused the program for exceeding HBM (its temporaries are what it reported)
  largest_at_batch: int | None = None  # refused: `largest` is of the step at this global batch

  @property
  def peak_bytes(self) -> int:
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

  @property
  def fits(self) -> bool:
    return self.peak_bytes <= self.usable_bytes

  def step_seconds(self) -> float:
    """A roofline lower bound: the slower of the chip's peak FLOPs and its HBM bandwidth (no collectives)."""
    chip = chip_of(self.topology)
    return max(self.flops / chip.bf16_flops, self.bytes_accessed / chip.hbm_bandwidth)

  def describe(self) -> str:
    gib = lambda b: f"{b / GiB:.2f} GiB"
    refused = "" if self.compiled else " (XLA refused to compile it: no cost analysis)"
    lines = [f"{self.topology} ({self.chips} chips, mesh {self.mesh}): per chip {gib(self.peak_bytes)} of "
             f"{gib(self.usable_bytes)} usable = arguments {gib(self.argument_bytes)} + outputs "
             f"{gib(self.output_bytes)} - donated {gib(self.alias_bytes)} + temporaries {gib(self.temp_bytes)} + "
             f"code {gib(self.code_bytes)}; {'fits' if self.fits else 'DOES NOT FIT'}{refused}"]
    at = "" if self.largest_at_batch is None else f" (compiled at global batch {self.largest_at_batch})"
    lines += [f"  largest value{at}: {shape} {gib(size)}" for shape, size in self.largest]
    lines += [f"  replicated on every chip: {name} {gib(size)}" for name, size in self.replicated]
    return "\n".join(lines)


def _saved_architecture(settings: dict[str, Any]) -> Any:
  """The config of `init_from`'s folder when no preset is named (the trainer then trains that architecture)."""
  if settings["init_from"] is None or settings["hypernetwork"] is not None:
    return None
  return saved.load_hypernetwork(settings["init_from"]).config


def compile_train_step(settings: dict[str, Any], devices: Sequence[jax.Device], topology: str,
                       base_config: config_lib.GemmaConfig) -> StepMemory:
  """Builds `train`'s step from `settings` (see `train_settings`) on a mesh of `devices` and compiles it."""
  mesh = sharding.make_mesh(*settings["mesh_shape"], devices=devices)
  program_lib.check_batch_splits(settings["global_batch_size"], mesh)
  program = program_lib.build(
      base_config.replace(dtype=settings["base_dtype"], param_dtype=settings["base_dtype"]), mesh,
      hypernetwork=settings["hypernetwork"], hyper_overrides=settings["hyper_overrides"],
      objective=settings["objective"], objective_overrides=settings["objective_overrides"],
      optimizer=optimizer_lib.for_steps(settings["optimizer"], settings["steps"]), remat=settings["remat"],
      compute_dtype=settings["compute_dtype"], seed=settings["seed"], architecture=_saved_architecture(settings))
  state = program.abstract_state()
  base_params = program.abstract_base_params(settings["base_dtype"])
  batch = example_batch(program, settings)
  common = dict(topology=topology, chips=len(devices), mesh=dict(mesh.shape),
                usable_bytes=chip_of(topology).usable_bytes,
                replicated=_replicated({"state": state, "base_params": base_params}))
  try:
    compiled = program.jit(batch).lower(state, base_params, batch).compile()
  except jax.errors.JaxRuntimeError as e:
    temporaries = _refused_temporaries(str(e))
    if temporaries is None:
      raise
    # XLA refuses a program over the chip's HBM and says only its temporaries: the rest is the
    # inputs' shards, and the new state reuses the donated old one.
    state_bytes = _bytes_per_chip(state)
    return StepMemory(**common, argument_bytes=_bytes_per_chip((state, base_params, batch)),
                      output_bytes=state_bytes, alias_bytes=state_bytes, temp_bytes=temporaries, code_bytes=0,
                      flops=float("nan"), bytes_accessed=float("nan"), compiled=False,
                      **_largest_at_one_example_a_chip(settings, devices, topology, base_config, mesh))
  memory = compiled.memory_analysis()
  cost = _cost(compiled)
  return StepMemory(**common, argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
                    alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
                    code_bytes=memory.generated_code_size_in_bytes, flops=cost.get("flops", 0.0),
                    bytes_accessed=cost.get("bytes accessed", 0.0), largest=largest_values(compiled.as_text()),
                    compiled=True)


def compile_generation_step(base_config: config_lib.GemmaConfig, devices: Sequence[jax.Device], topology: str, *,
                            batch: int, prompt_len: int, max_new_tokens: int, mesh_shape: Sequence[int] = (-1, 1, 1),
                            dtype: str = "bfloat16") -> StepMemory:
  """`prepare-data`'s generation step (`decoding.generate`: prefill, then greedy decoding with the KV
  cache) for `batch` prompts of `prompt_len` tokens on a mesh of `devices`, compiled: its per-chip memory.
  Params are placed by the model's sharding rules (replicated on a data-parallel mesh), prompts split
  over the data-parallel axes, as `data.prepare` places them."""
  from jax.sharding import PartitionSpec

  from lora_hyper.model import decoding, transformer

  mesh = sharding.make_mesh(*mesh_shape, devices=devices)
  if batch % (mesh.shape["data"] * mesh.shape["fsdp"]):
    raise ValueError(f"batch {batch} does not split over the mesh {dict(mesh.shape)}")
  config = base_config.replace(dtype=dtype, param_dtype=dtype)
  shapes = jax.eval_shape(lambda k: transformer.init_params(config, k), jax.random.key(0))
  param_sharding = sharding.logical_sharding(transformer.param_logical_axes(config), mesh)
  params = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, param_sharding)
  rows = sharding.logical_sharding(PartitionSpec("batch"), mesh)
  prompt = jax.ShapeDtypeStruct((batch, prompt_len), np.int32, sharding=rows)
  mask = jax.ShapeDtypeStruct((batch, prompt_len), np.bool_, sharding=rows)
  key = jax.eval_shape(lambda: jax.random.key(0))
  sampling = decoding.SamplingConfig(max_new_tokens=max_new_tokens)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    compiled = decoding.generate.lower(params, prompt, mask, key, config=config, sampling=sampling,
                                       stop_ids=(config.eos_id,)).compile()
  memory, cost = compiled.memory_analysis(), _cost(compiled)
  return StepMemory(topology=topology, chips=len(devices), mesh=dict(mesh.shape),
                    argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
                    alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
                    code_bytes=memory.generated_code_size_in_bytes, usable_bytes=chip_of(topology).usable_bytes,
                    flops=cost.get("flops", 0.0), bytes_accessed=cost.get("bytes accessed", 0.0),
                    replicated=_replicated({"base_params": params}), largest=largest_values(compiled.as_text()),
                    compiled=True)


def _largest_at_one_example_a_chip(settings, devices, topology, base_config, mesh) -> dict[str, Any]:
  """Where a refused step's memory goes: its largest values compiled at one example a chip (they
  grow with the batch), or none if even that is refused."""
  smallest = mesh.shape["data"] * mesh.shape["fsdp"]
  if settings["global_batch_size"] == smallest:
    return {"largest": (), "largest_at_batch": None}
  smaller = compile_train_step({**settings, "global_batch_size": smallest}, devices, topology, base_config)
  return {"largest": smaller.largest, "largest_at_batch": smallest if smaller.compiled else None}


_REFUSED = re.compile(r"Ran out of memory on HBM.*?HLO temporaries \(([\d.]+)G\)", re.DOTALL)


def _refused_temporaries(message: str) -> int | None:
  """The temporaries XLA's out-of-HBM refusal reports ('... HLO temporaries (26.22G) ...'), or None."""
  match = _REFUSED.search(message)
  return None if match is None else int(float(match.group(1)) * GiB)


def _bytes_per_chip(tree: Any) -> int:
  return sum(int(np.prod(leaf.sharding.shard_shape(leaf.shape))) * np.dtype(leaf.dtype).itemsize
             for leaf in jax.tree.leaves(tree))


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  return dict(cost or {})


def _replicated(tree: Any) -> tuple[tuple[str, int], ...]:
  """Arrays whose every chip holds the whole of them, over REPLICATED_REPORT_BYTES."""
  found = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    size = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    if size > REPLICATED_REPORT_BYTES and leaf.sharding.shard_shape(leaf.shape) == tuple(leaf.shape):
      found.append((jax.tree_util.keystr(path), size))
  return tuple(sorted(found, key=lambda x: -x[1]))


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
                "f64": 8, "s64": 8, "u64": 8}
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")


def largest_values(hlo_text: str, count: int = 5) -> tuple[tuple[str, int], ...]:
  """The largest array shapes in an optimized HLO module, each once: where the temporaries go."""
  sizes = {}
  for dtype, dims in _SHAPE.findall(hlo_text):
    if dtype in _DTYPE_BYTES:
      shape = f"{dtype}[{dims}]"
      sizes[shape] = int(np.prod([int(d) for d in dims.split(",") if d])) * _DTYPE_BYTES[dtype]
  return tuple(sorted(sizes.items(), key=lambda x: -x[1])[:count])


# ----------------------------------------------------------------------------- pod configs

_TOPOLOGY_LINE = re.compile(r"^# topology ([a-z0-9]+:[0-9x]+)( \([^)]*\))?:?.*$")
_RECIPE_LINE = re.compile(r"^# recipe ([a-z0-9]+:[0-9x]+)( \([^)]*\))?(?: \|(.*))?$")


@dataclasses.dataclass(frozen=True)
class PodPlan:
  """One way to run a pod config: the file as shipped on its topology, or a recipe's bindings on another."""

  gin_file: str
  topology: str
  slice_name: str  # the Cloud TPU accelerator type, e.g. v5e-16
  bindings: tuple[str, ...]  # gin bindings over the file (a recipe may have none: the file fits as it is)
  shipped: bool  # the file's own topology


def pod_plans(gin_file: str) -> list[PodPlan]:
  """The plans a pod config's header states: `# topology T (name): ...` for the file as shipped and
  `# recipe T (name) | binding | binding ...` for each recipe (`# recipe T (name)` alone: the file
  as shipped also fits T). A file without them is not for pods."""
  plans = []
  with open(gin_file) as f:
    for line in f:
      if recipe := _RECIPE_LINE.match(line.rstrip("\n")):
        bindings = tuple(b.strip() for b in (recipe.group(3) or "").split("|") if b.strip())
        plans.append(PodPlan(gin_file, recipe.group(1), (recipe.group(2) or "").strip(" ()"), bindings, False))
      elif topology := _TOPOLOGY_LINE.match(line.rstrip("\n")):
        plans.append(PodPlan(gin_file, topology.group(1), (topology.group(2) or "").strip(" ()"), (), True))
  if sum(plan.shipped for plan in plans) > 1:
    raise ValueError(f"{gin_file} names more than one '# topology' for itself")
  return plans


def parse_pod_config(plan: PodPlan, architecture: str | None = None) -> dict[str, Any]:
  """`train`'s settings for `plan` (gin is cleared and left holding this config)."""
  gin.clear_config()
  gin.add_config_file_search_path(os.path.dirname(os.path.abspath(plan.gin_file)))
  # Nothing is read from the workdir or the base model: bind what the file leaves required.
  required = ["lora_hyper.train.workdir = '/unused'"]
  if architecture is not None:
    required.append(f"lora_hyper.train.base_model = {architecture!r}")
  gin.parse_config_files_and_bindings([plan.gin_file], [*required, *plan.bindings])
  return train_settings()


def check_plan(plan: PodPlan, architecture: str | None = None) -> tuple[dict[str, Any], StepMemory]:
  """Compiles `plan`'s train step for its topology: (`train`'s settings for it, the step's memory).
  `architecture` names the base model when the file leaves it to the user (`gemma2_2b`)."""
  settings = parse_pod_config(plan, architecture)
  return settings, compile_train_step(settings, topology_devices(plan.topology), plan.topology,
                                      base_architecture(settings["base_model"], architecture))


def header_line(plan: PodPlan, memory: StepMemory) -> str:
  """The `# topology` line of a pod config, with what its compiled step needs."""
  return (f"# topology {plan.topology} ({plan.slice_name}): per chip {memory.peak_bytes / GiB:.2f} GiB of "
          f"{memory.usable_bytes / GiB:.2f} GiB; step >= {memory.step_seconds():.3f} s (XLA cost analysis, roofline)")


def rewrite_topology_line(gin_file: str, line: str) -> None:
  with open(gin_file) as f:
    lines = f.read().split("\n")
  lines = [line if _TOPOLOGY_LINE.match(old) else old for old in lines]
  with open(gin_file, "w") as f:
    f.write("\n".join(lines))
