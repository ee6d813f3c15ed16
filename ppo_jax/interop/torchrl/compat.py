"""Move weights and normalization statistics between TorchRL modules and ppo_jax.

Optional layer: ``torch`` / ``torchrl`` / ``tensordict`` are imported lazily, inside the
functions that need them, so importing this module (or any other part of ``ppo_jax``)
never imports torch.

The TorchRL side is the PPO tutorial's networks::

    actor_net = nn.Sequential(LazyLinear(256), Tanh(), LazyLinear(256), Tanh(),
                              LazyLinear(256), Tanh(), LazyLinear(2 * action_dim),
                              NormalParamExtractor())
    value_net = nn.Sequential(LazyLinear(256), Tanh(), ..., LazyLinear(1))

passed either bare or wrapped in TorchRL modules (``ProbabilisticActor``,
``TensorDictModule``, ``ValueOperator``): the ``nn.Sequential`` inside is found. Lazy
layers must have been materialized (one forward pass) before conversion.

ppo_jax layout (:mod:`ppo_jax.core.networks`, ``Actor``/``Critic``)::

    {"params": {"net": {"layers_0": {"kernel": [in, out], "bias": [out]}, "layers_1": ...}}}

``kernel`` is the transpose of torch's ``weight`` (``[out, in]``).

The tutorial's TorchRL objects themselves are built by :mod:`ppo_jax.interop.torchrl.reference`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

__all__ = [
    "actor_params_from_torch",
    "critic_params_from_torch",
    "actor_params_to_torch",
    "critic_params_to_torch",
    "obs_norm_from_torch",
    "linear_tree_from_torch",
    "numpy_torch_default_params",
]


# --------------------------------------------------------------------------- module search
def _is_mlp_sequential(module) -> bool:
    from torch import nn

    return isinstance(module, nn.Sequential) and any(
        isinstance(m, nn.Linear) for m in module.children()
    )


def _find_sequential(module):
    """The ``nn.Sequential`` holding the MLP: ``module`` itself or the first one inside it."""
    from torch import nn

    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch nn.Module, got {type(module).__name__}")
    if _is_mlp_sequential(module):
        return module
    for sub in module.modules():
        if _is_mlp_sequential(sub):
            return sub
    raise ValueError(
        f"no nn.Sequential with Linear layers found inside {type(module).__name__}"
    )


def _linear_layers(seq, *, actor: bool) -> list:
    """Linear layers of ``seq``, after checking the ``Linear, Tanh, ..., Linear[, NPE]`` shape."""
    from torch import nn
    from torch.nn.parameter import UninitializedParameter

    children = list(seq.children())
    if actor:
        from tensordict.nn.distributions import NormalParamExtractor

        if not children or not isinstance(children[-1], NormalParamExtractor):
            raise ValueError("actor network must end with a NormalParamExtractor")
        _check_param_extractor(children[-1])
        children = children[:-1]
    if not children or len(children) % 2 != 1:
        raise ValueError(
            f"expected Linear, Tanh, ..., Linear; got {[type(c).__name__ for c in children]}"
        )
    layers = children[0::2]
    acts = children[1::2]
    for lin in layers:
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"expected nn.Linear, got {type(lin).__name__}")
        if isinstance(lin.weight, UninitializedParameter):
            raise ValueError(
                "LazyLinear layer not materialized yet: run one forward pass before converting"
            )
        if lin.bias is None:
            raise ValueError("Linear layers without bias are not supported")
    for act in acts:
        if not isinstance(act, nn.Tanh):
            raise ValueError(f"ppo_jax networks use Tanh activations, got {type(act).__name__}")
    return layers


def _check_param_extractor(npe) -> None:
    """The extractor must be the one ``ppo_jax.core.networks.normal_params`` implements."""
    from ppo_jax.core import networks

    mapping = npe.scale_mapping
    bias = float(getattr(mapping, "bias", float("nan")))
    min_val = float(getattr(mapping, "min_val", float("nan")))
    ok = (
        type(mapping).__name__ == "biased_softplus"
        and math.isclose(bias, networks.SOFTPLUS_BIAS, rel_tol=1e-6)
        and math.isclose(min_val, networks.SOFTPLUS_MIN, rel_tol=1e-6)
        and math.isclose(float(npe.scale_lb), networks.SCALE_LB, rel_tol=1e-6)
    )
    if not ok:
        raise ValueError(
            "NormalParamExtractor must use scale_mapping='biased_softplus_1.0' and "
            f"scale_lb=1e-4 (got {type(mapping).__name__}, bias={bias}, min_val={min_val}, "
            f"scale_lb={npe.scale_lb})"
        )


# --------------------------------------------------------------------------- torch -> jax
def _tree(layers, *, grad: bool) -> dict:
    out = {}
    for i, lin in enumerate(layers):
        w, b = (lin.weight.grad, lin.bias.grad) if grad else (lin.weight, lin.bias)
        if w is None or b is None:
            raise ValueError(f"layer {i} has no gradient (call backward() first)")
        # np.array(copy=True): jnp.asarray may alias a numpy buffer on CPU, and torch
        # updates its parameters in place.
        out[f"layers_{i}"] = {
            "kernel": jnp.asarray(np.array(w.detach().cpu().numpy().T, np.float32, copy=True)),
            "bias": jnp.asarray(np.array(b.detach().cpu().numpy(), np.float32, copy=True)),
        }
    return {"params": {"net": out}}


def linear_tree_from_torch(module, *, actor: bool, grad: bool = False) -> dict:
    """Weights (or, with ``grad=True``, their ``.grad``) of ``module`` in ppo_jax layout."""
    return _tree(_linear_layers(_find_sequential(module), actor=actor), grad=grad)


def actor_params_from_torch(actor_net) -> dict:
    """Flax params of :class:`ppo_jax.core.networks.Actor` from the tutorial's actor.

    ``actor_net``: the ``nn.Sequential`` (Linear/Tanh ... Linear, NormalParamExtractor) or a
    TorchRL module wrapping it (``ProbabilisticActor``, ``TensorDictModule``).
    """
    return linear_tree_from_torch(actor_net, actor=True)


def critic_params_from_torch(value_net) -> dict:
    """Flax params of :class:`ppo_jax.core.networks.Critic` from the tutorial's value network
    (the ``nn.Sequential`` or the ``ValueOperator`` wrapping it)."""
    return linear_tree_from_torch(value_net, actor=False)


# --------------------------------------------------------------------------- jax -> torch
def _copy_into(params: dict, layers) -> None:
    import torch

    net = params["params"]["net"] if "params" in params else params["net"]
    names = sorted(net, key=lambda k: int(k.rsplit("_", 1)[1]))
    if names != [f"layers_{i}" for i in range(len(layers))]:
        raise ValueError(
            f"parameter tree has layers {names}, torch module has {len(layers)} Linear layers"
        )
    with torch.no_grad():
        for name, lin in zip(names, layers):
            kernel = np.asarray(net[name]["kernel"])
            bias = np.asarray(net[name]["bias"])
            if kernel.T.shape != tuple(lin.weight.shape) or bias.shape != tuple(lin.bias.shape):
                raise ValueError(
                    f"{name}: kernel {kernel.shape} / bias {bias.shape} do not fit torch "
                    f"weight {tuple(lin.weight.shape)} / bias {tuple(lin.bias.shape)}"
                )
            lin.weight.copy_(torch.as_tensor(kernel.T.copy(), dtype=lin.weight.dtype))
            lin.bias.copy_(torch.as_tensor(bias.copy(), dtype=lin.bias.dtype))


def actor_params_to_torch(params: dict, actor_net) -> None:
    """Copy ppo_jax actor params into ``actor_net`` (or the module wrapping it), in place."""
    _copy_into(params, _linear_layers(_find_sequential(actor_net), actor=True))


def critic_params_to_torch(params: dict, value_net) -> None:
    """Copy ppo_jax critic params into ``value_net`` (or the ``ValueOperator``), in place."""
    _copy_into(params, _linear_layers(_find_sequential(value_net), actor=False))


# --------------------------------------------------------------------------- normalization
def obs_norm_from_torch(observation_norm_transform):
    """:class:`ppo_jax.core.normalization.ObsNormStats` of an initialized ``ObservationNorm``.

    ppo_jax applies ``obs * scale + loc`` (TorchRL's ``standard_normal=False`` form, the
    tutorial's). A ``standard_normal=True`` transform (``(obs - loc) / scale``) is converted
    to that form. ``loc``/``scale`` are returned as float32 (TorchRL keeps the dtype of the
    data ``init_stats`` saw: float64 for Gymnasium observations).
    """
    from ppo_jax.core.normalization import ObsNormStats

    t = observation_norm_transform
    if not getattr(t, "initialized", True):
        raise ValueError("ObservationNorm is not initialized (call init_stats first)")
    loc = t.loc.detach().cpu().double().numpy()
    scale = t.scale.detach().cpu().double().numpy()
    if t.standard_normal:
        loc, scale = -loc / scale, 1.0 / scale
    return ObsNormStats(
        loc=jnp.asarray(loc.astype(np.float32)), scale=jnp.asarray(scale.astype(np.float32))
    )


# --------------------------------------------------------------------------- fixtures
def numpy_torch_default_params(
    in_size: int, hidden_sizes: Sequence[int], out_size: int, seed: int
) -> dict[str, Any]:
    """Reproducible weights with PyTorch's default ``nn.Linear`` distribution.

    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for kernels and biases, drawn (layer by layer,
    kernel then bias) from numpy's legacy ``RandomState(seed)``, whose stream numpy keeps
    stable across versions. Used by the TorchRL parity fixture, which stores the seed instead
    of the weights. Returns numpy float32 arrays in ppo_jax layout.
    """
    rng = np.random.RandomState(seed)
    sizes = [in_size, *hidden_sizes, out_size]
    net = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / math.sqrt(fan_in)
        kernel = rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)
        bias = rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32)
        net[f"layers_{i}"] = {"kernel": kernel, "bias": bias}
    return {"params": {"net": net}}
