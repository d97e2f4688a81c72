"""The one place that maps logical axis names to mesh axes.

Layers name the axes of their params and activations (`embed`, `heads`, `lora_rank`, ...);
`LOGICAL_AXIS_RULES` says which mesh axis shards each of them. A name absent from the rules
(or mapped to None) is replicated.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
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
