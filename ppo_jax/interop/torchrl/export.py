"""A trained policy as a file the TorchRL tutorial loads, and back.

The file (``torch.save`` of a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"format": "ppo_jax.torchrl_export/1",
     "actor":    state_dict of the tutorial's actor_net (nn.Sequential: Linear, Tanh, ...,
                 Linear(2 * action_dim), NormalParamExtractor): "0.weight" [h0, 11], "0.bias", ...
     "critic":   state_dict of the tutorial's value_net (..., Linear(1))
     "obs_norm": state_dict of the tutorial's ObservationNorm: "loc", "scale" [11] float64
                 (TorchRL's stored form: applied as obs * scale + loc, scale = 1 / std,
                 loc = -mean / std), "standard_normal" False
     "meta":     {"env_id", "observation_size", "action_size", "hidden_sizes", "eval_action",
                  "source"}}

The tutorial's objects load it with ``actor_net.load_state_dict(d["actor"])``,
``value_net.load_state_dict(d["critic"])`` and ``env.transform[0].load_state_dict(d["obs_norm"])``
(after the tutorial's ``init_stats``, which gives the buffers their shape). The networks are
moved with :mod:`ppo_jax.interop.torchrl.compat`. torch is imported only inside the functions here.
Everything that goes wrong with a file is an :class:`ExportError` with a one-line message.
"""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np

from ppo_jax.util import write_atomic

FORMAT = "ppo_jax.torchrl_export/1"
TORCH_HINT = "install the torchrl extra: pip install -e '.[torchrl]' (torch, torchrl, tensordict)"


class ExportError(Exception):
    """A file that is not an export, does not fit the config, or cannot be read/written."""


def require_torch():
    """Import torch, torchrl and tensordict; :class:`ExportError` (:data:`TORCH_HINT`) if
    any is missing. Returns the ``torch`` module."""
    try:
        import tensordict  # noqa: F401
        import torch
        import torchrl  # noqa: F401
    except ImportError as e:
        raise ExportError(f"{TORCH_HINT} ({e.name or e} is missing)") from None
    return torch


def expected_shapes(
    obs_size: int, hidden_sizes: Sequence[int], out_size: int
) -> dict[str, tuple[int, ...]]:
    """``state_dict`` shapes of ``nn.Sequential(Linear, Tanh, ..., Linear(out_size))``:
    ``{"0.weight": (h0, obs_size), "0.bias": (h0,), "2.weight": ..., ...}``."""
    sizes = [obs_size, *hidden_sizes, out_size]
    shapes = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"{2 * i}.weight"] = (fan_out, fan_in)
        shapes[f"{2 * i}.bias"] = (fan_out,)
    return shapes


def _modules(obs_size: int, action_size: int, hidden_sizes: Sequence[int], low=-1.0, high=1.0):
    from ppo_jax.interop.torchrl.reference import tutorial_modules

    return tutorial_modules(obs_size, action_size, tuple(hidden_sizes), low=low, high=high)


def to_torchrl(
    params, obs_stats, config, observation_size: int, action_size: int, source=None,
    env=None,
) -> dict[str, Any]:
    """The export dict (see the module docstring) of ``params`` (:class:`Params`) and
    ``obs_stats`` (:class:`ObsNormStats`, ``[obs_dim]``) for ``config``'s networks; ``env``
    (default: ``config.env``'s id with bounds [-1, 1]) gives the id and the action bounds
    of the actor's ``TanhNormal(low, high)``."""
    require_torch()
    from ppo_jax.interop.torchrl.compat import actor_params_to_torch, critic_params_to_torch

    low = [-1.0] * action_size if env is None else np.asarray(env.action_low).tolist()
    high = [1.0] * action_size if env is None else np.asarray(env.action_high).tolist()
    m = _modules(observation_size, action_size, config.hidden_sizes, low, high)
    actor_params_to_torch(params.actor, m.actor_net)
    critic_params_to_torch(params.critic, m.value_net)
    return _export(m, obs_stats.loc, obs_stats.scale, False,
                   config.env if env is None else env.env_id, low, high, config.hidden_sizes,
                   config.eval_action, source)


def from_tutorial_modules(modules, observation_norm, env_id: str, hidden_sizes, low=None,
                          high=None, source=None, eval_action: str = "mean") -> dict[str, Any]:
    """The export dict of the TorchRL tutorial's own objects as they are now:
    ``modules`` (:class:`~ppo_jax.interop.torchrl.reference.TutorialModules`) and its env's
    initialized ``ObservationNorm`` (e.g. a TorchRL run's start, which
    ``scripts/train.py --init-from-torchrl`` then takes); ``low``/``high``: the action
    bounds (default [-1, 1])."""
    action_size = int(modules.actor_net[-2].out_features) // 2
    low = np.broadcast_to(np.asarray(-1.0 if low is None else low, float), action_size)
    high = np.broadcast_to(np.asarray(1.0 if high is None else high, float), action_size)
    loc, scale = (observation_norm.loc.detach().cpu().numpy(),
                  observation_norm.scale.detach().cpu().numpy())
    return _export(modules, loc, scale, bool(observation_norm.standard_normal), env_id, low,
                   high, hidden_sizes, eval_action, source)


def _export(modules, loc, scale, standard_normal: bool, env_id: str, low, high, hidden_sizes,
            eval_action: str, source) -> dict[str, Any]:
    """The export dict (module docstring) of the tutorial's ``modules`` (actor_net,
    value_net) and an ObservationNorm's ``loc``/``scale``."""
    torch = require_torch()

    def sd(module):
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def f64(x):
        return torch.as_tensor(np.asarray(x, np.float64).reshape(-1).copy())

    low, high = [float(x) for x in np.asarray(low).reshape(-1)], [
        float(x) for x in np.asarray(high).reshape(-1)]
    return {
        "format": FORMAT,
        "actor": sd(modules.actor_net),
        "critic": sd(modules.value_net),
        "obs_norm": {"loc": f64(loc), "scale": f64(scale),
                     "standard_normal": torch.tensor(bool(standard_normal))},
        "meta": {
            "env_id": env_id,
            "observation_size": int(modules.actor_net[0].in_features),
            "action_size": len(low),
            "action_low": low,
            "action_high": high,
            "hidden_sizes": [int(h) for h in hidden_sizes],
            "eval_action": eval_action,
            "source": dict(source or {}),
        },
    }


def save(export: dict[str, Any], path: str) -> str:
    """``torch.save`` the export dict to ``path``, atomically (serialized in memory, written
    to a temporary file beside it, then renamed): a failure (a full disk) leaves no file, and
    an existing one untouched; its absolute path."""
    torch = require_torch()
    buffer = io.BytesIO()
    torch.save(export, buffer)
    try:
        write_atomic(path, buffer.getvalue())
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}") from None
    return os.path.abspath(path)


def read(path: str) -> dict[str, Any]:
    """Load and check an export file (format marker, its three state dicts of tensors)."""
    torch = require_torch()
    if not os.path.isfile(path):
        raise ExportError(f"no such file: {path}")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, weights_only refusals
        raise ExportError(
            f"{path} is not a ppo_jax TorchRL export (torch.load failed: {type(e).__name__})"
        ) from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ExportError(f"{path} is not a ppo_jax TorchRL export (no {FORMAT!r} marker)")
    for key in ("actor", "critic", "obs_norm"):
        if not isinstance(d.get(key), dict):
            raise ExportError(f"{path}: export has no {key!r} state dict")
        for k, v in d[key].items():
            if not torch.is_tensor(v):
                raise ExportError(f"{path}: {key} {k} is a {type(v).__name__}, not a tensor")
    return d


def check_shapes(d: dict[str, Any], path: str, obs_size: int, action_size: int, hidden_sizes):
    """:class:`ExportError` naming the first entry whose key set or shape does not fit."""
    want = {
        "actor": expected_shapes(obs_size, hidden_sizes, 2 * action_size),
        "critic": expected_shapes(obs_size, hidden_sizes, 1),
        "obs_norm": {"loc": (obs_size,), "scale": (obs_size,), "standard_normal": ()},
    }
    for part, shapes in want.items():
        got = {k: tuple(v.shape) for k, v in d[part].items()}
        if set(got) != set(shapes):
            raise ExportError(
                f"{path}: {part} has entries {sorted(got)}, hidden sizes "
                f"{list(hidden_sizes)} need {sorted(shapes)}"
            )
        for k, shape in shapes.items():
            if got[k] != shape:
                raise ExportError(
                    f"{path}: {part} {k} has shape {got[k]}, hidden sizes "
                    f"{list(hidden_sizes)} need {shape}"
                )


def load_torchrl_export(path: str, config, observation_size: int | None = None,
                        action_size: int | None = None):
    """``(params, obs_stats)`` for ``config`` (its ``hidden_sizes``) from an export file.

    ``observation_size``/``action_size``: the sizes the file must have (None: its own, from
    its tensors). ``params``: :class:`ppo_jax.core.losses.Params` (flax trees, float32);
    ``obs_stats``: :class:`ppo_jax.core.normalization.ObsNormStats` (float32; a
    ``standard_normal`` norm is converted to ``obs * scale + loc``). Raises
    :class:`ExportError` (one line).
    """
    d = read(path)
    meta = d.get("meta") if isinstance(d.get("meta"), dict) else {}
    exported_for = meta.get("env_id")
    if isinstance(exported_for, str) and exported_for != config.env:
        raise ExportError(f"{path} holds networks and statistics of {exported_for}, not of "
                          f"{config.env}, which this run trains")
    if observation_size is None or action_size is None:
        try:  # the file's own: its statistics' length, its actor's output layer over 2
            last = max((k for k in d["actor"] if k.endswith(".bias")),
                       key=lambda k: int(k.split(".")[0]))
            observation_size = observation_size or int(d["obs_norm"]["loc"].shape[-1])
            action_size = action_size or int(d["actor"][last].shape[0]) // 2
        except (KeyError, AttributeError, IndexError, ValueError):
            raise ExportError(f"{path}: cannot tell its observation and action sizes") from None
    check_shapes(d, path, observation_size, action_size, config.hidden_sizes)
    from torchrl.envs import ObservationNorm

    from ppo_jax.core.losses import Params
    from ppo_jax.interop.torchrl.compat import (
        actor_params_from_torch,
        critic_params_from_torch,
        obs_norm_from_torch,
    )

    m = _modules(observation_size, action_size, config.hidden_sizes)
    m.actor_net.load_state_dict(d["actor"])
    m.value_net.load_state_dict(d["critic"])
    norm = d["obs_norm"]
    stats = obs_norm_from_torch(
        ObservationNorm(
            loc=norm["loc"],
            scale=norm["scale"],
            standard_normal=bool(norm["standard_normal"]),
            in_keys=["observation"],
        )
    )
    params = Params(actor=actor_params_from_torch(m.actor_net),
                    critic=critic_params_from_torch(m.value_net))
    return params, stats
