"""The one place that maps logical axis names to mesh axes.

Layers name the axes of their params and activations (`embed`, `heads`, `lora_rank`, ...);
`LOGICAL_AXIS_RULES` says which mesh axis shards each of them. A name absent from the rules
(or mapped to None) is replicated.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # Activations.
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", None),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    # Base-model params: fsdp shards the embedding dim, tensor the heads / mlp / vocab dims.
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", None),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    # Adapters and hypernetworks.
    ("lora_rank", None),
    ("lora_in", None),
    ("lora_out", None),
    ("chunk", None),
    ("latent", None),
    ("hyper_embed", "fsdp"),
    ("hyper_heads", "tensor"),
    ("hyper_mlp", "tensor"),
    # A hypernetwork's input features (base d_model, text-embedding width): the Perceiver's input
    # projection is its largest weight. Rules apply in this order, so in an array that also has
    # hyper_embed (T2L's task encoder) fsdp goes to hyper_embed and hyper_in stays whole.
    ("hyper_in", "fsdp"),
    ("hyper_kv_heads", None),
    ("hyper_head_dim", None),
    ("lora_features", None),  # max(d_in, d_out): T2L-M/S heads emit A and B rows padded to it
    ("lora_modules", None),
    ("segment", None),  # BERT's token-type rows (the sentence-embedding task encoder)
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axes over the first data*fsdp*tensor devices;
  `data=-1` takes all remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  if data == -1:
    if len(devices) % (fsdp * tensor):
      raise ValueError(f"{len(devices)} devices do not split into fsdp={fsdp} x tensor={tensor}")
    data = len(devices) // (fsdp * tensor)
  size = data * fsdp * tensor
  if size > len(devices):
    raise ValueError(f"mesh {data}x{fsdp}x{tensor} needs {size} devices, only {len(devices)} are available")
  return Mesh(np.asarray(devices[:size]).reshape(data, fsdp, tensor), MESH_AXES)


def logical_sharding(tree_of_specs, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """Logical PartitionSpecs (e.g. from `nn.get_partition_spec`) -> NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(tree_of_specs, mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


# ----------------------------------------------------------------------------- data-parallel batches


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A data-parallel mesh (fsdp = tensor = 1) over `devices`, by default this process's own: the
  evaluator's batches split over them while each process scores its own sweep points."""
  return make_mesh(devices=jax.local_devices() if devices is None else devices)


def batch_shards(mesh: Mesh) -> int:
  """How many parts the 'batch' axis splits into on `mesh`."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def pad_rows(tree, multiple: int):
  """Every leaf's leading axis padded to a multiple of `multiple` with copies of its last row: rows
  whose results the caller drops (a copy, not zeros, so no padding row sees an empty input)."""
  def pad(x):
    extra = -x.shape[0] % multiple
    return x if not extra else jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)])
  return jax.tree.map(pad, tree)


def shard_rows(tree, mesh: Mesh):
  """`tree` padded (`pad_rows`) and placed with every leaf's leading axis split over the mesh's
  batch axes, so a jitted function of it runs data-parallel (params it also takes: `replicated`)."""
  return jax.device_put(pad_rows(tree, batch_shards(mesh)), logical_sharding(PartitionSpec("batch"), mesh))


def replicate(tree, mesh: Mesh):
  """`tree` (params) copied whole onto every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))
