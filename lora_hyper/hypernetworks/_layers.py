"""Small layers shared by the hypernetworks; every param carries logical axis names.

Initialisers follow PyTorch's defaults (the reference implementations are PyTorch):
Linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), Embedding N(0, 1),
norm scales 1 and biases 0.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any
Init = Callable[..., Array]


def param(module: nn.Module, name: str, init: Init, shape: Sequence[int], axes: Sequence[str | None]) -> Array:
  """A float32 param named with logical axes (boxed at init, plain after `nn.unbox`)."""
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), jnp.float32)


# Random values are drawn flat and reshaped: XLA:CPU compiles a 3-D random draw several times
# slower than a 1-D one, and init compiles one draw per param.


def uniform_fan_in(fan_in: int) -> Init:
  """PyTorch's nn.Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)


def normal(std: float) -> Init:
  return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


class Dense(nn.Module):
  """x [..., d_in] -> [..., *features]; `axes` names (d_in, *features) of the kernel."""

  features: tuple[int, ...]
  axes: tuple[str | None, ...]
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d_in = x.shape[-1]
    kernel = param(self, "kernel", uniform_fan_in(d_in), (d_in, *self.features), self.axes)
    y = jnp.tensordot(x, kernel.astype(x.dtype), axes=1)
    if self.use_bias:
      bias = param(self, "bias", uniform_fan_in(d_in), self.features, self.axes[1:])
      y = y + bias.astype(y.dtype)
    return y


def dense(features: int, axes: tuple[str | None, str | None], *, use_bias: bool = False,
          name: str | None = None) -> Dense:
  return Dense((features,), axes, use_bias, name=name)


class RMSNorm(nn.Module):
  """x / rms(x) * scale with scale initialised to 1 (Llama / Idefics2 convention), in float32."""

  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = param(self, "scale", nn.initializers.ones_init(), (x.shape[-1],), ("norm",))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * scale).astype(x.dtype)


class LayerNorm(nn.Module):
  """PyTorch's nn.LayerNorm (eps 1e-5, learned scale and bias), in float32."""

  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    scale = param(self, "scale", nn.initializers.ones_init(), (d,), ("norm",))
    bias = param(self, "bias", nn.initializers.zeros_init(), (d,), ("norm",))
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias).astype(x.dtype)


def count_params(tree: PyTree) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))
