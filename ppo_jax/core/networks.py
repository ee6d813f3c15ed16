"""Actor and critic MLPs with PyTorch's default ``nn.Linear`` initialization.

Both are ``obs -> Linear(h) -> Tanh -> ... -> Linear(out)`` with separate parameters (the
tutorial's 3 x 256). ``TorchLinear`` initializes weight and bias from
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, as ``nn.Linear``/``nn.LazyLinear`` do. The actor head
outputs ``2 * action_dim`` values, split into ``loc`` and a raw scale mapped by TorchRL's
``NormalParamExtractor`` (``biased_softplus_1.0``, floor 1e-4).

Parameter layout (flax): ``params["layers_i"]["kernel"]`` is ``[fan_in, fan_out]`` (the
transpose of torch's ``weight``), ``params["layers_i"]["bias"]`` is ``[fan_out]``.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

SCALE_LB = 1e-4  # NormalParamExtractor's scale_lb
SOFTPLUS_MIN = 0.01  # biased_softplus's min_val
SOFTPLUS_BIAS = math.log(math.expm1(1.0 - SOFTPLUS_MIN))  # softplus(0 + bias) + 0.01 == 1


def biased_softplus(x: jax.Array) -> jax.Array:
    """TorchRL's ``biased_softplus_1.0``: ``softplus(x + b) + 0.01`` with f(0) = 1."""
    return jax.nn.softplus(x + SOFTPLUS_BIAS) + SOFTPLUS_MIN


def normal_params(out: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``NormalParamExtractor``: ``[..., 2d] -> (loc [..., d], scale [..., d] >= 1e-4)``."""
    loc, raw = jnp.split(out, 2, axis=-1)
    return loc, jnp.maximum(biased_softplus(raw), SCALE_LB)


class TorchLinear(nn.Module):
    """``nn.Linear`` with PyTorch's default initialization."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)

        def init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        kernel = self.param("kernel", init, (fan_in, self.features))
        bias = self.param("bias", init, (self.features,))
        return jnp.dot(x, kernel.astype(x.dtype)) + bias.astype(x.dtype)


class MLP(nn.Module):
    """Tanh MLP: ``hidden_sizes`` hidden layers, then a linear layer of ``out_size``."""

    hidden_sizes: Sequence[int]
    out_size: int

    def setup(self):
        self.layers = [TorchLinear(h) for h in self.hidden_sizes] + [TorchLinear(self.out_size)]

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


class Actor(nn.Module):
    """``obs [..., obs_dim] -> (loc [..., action_dim], scale [..., action_dim])``."""

    hidden_sizes: Sequence[int]
    action_size: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return normal_params(MLP(self.hidden_sizes, 2 * self.action_size, name="net")(obs))


class Critic(nn.Module):
    """``obs [..., obs_dim] -> value [...]``."""

    hidden_sizes: Sequence[int]

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden_sizes, 1, name="net")(obs)[..., 0]
