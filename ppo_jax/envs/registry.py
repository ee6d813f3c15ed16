"""Env ids: the Gymnasium MuJoCo ports by their Gymnasium id, and two prefixes for any MJX env
of another registry (``brax:NAME``: ``brax.envs``; ``playground:NAME``: MuJoCo Playground).

``make_env(env_id, max_episode_steps=None)`` builds one; an unknown id raises ``ValueError``
with one line that lists the valid ids and prefixes.
"""

from __future__ import annotations

import importlib

DEFAULT_ENV = "InvertedDoublePendulum-v4"

# Gymnasium id -> "module:Class" under ppo_jax.envs (imported on demand)
PORTS = {
    "InvertedDoublePendulum-v4": "inverted_double_pendulum:InvertedDoublePendulum",
    "InvertedPendulum-v4": "inverted_pendulum:InvertedPendulum",
    "HalfCheetah-v4": "half_cheetah:HalfCheetah",
    "Hopper-v4": "hopper:Hopper",
    "Walker2d-v4": "walker2d:Walker2d",
    "Swimmer-v4": "swimmer:Swimmer",
    "Reacher-v4": "reacher:Reacher",
    "Ant-v4": "ant:Ant",
}
PREFIXES = {"brax:": "ppo_jax.envs.external:BraxEnv",
            "playground:": "ppo_jax.envs.external:PlaygroundEnv"}


def valid_ids() -> str:
    return ", ".join(list(PORTS) + [f"{p}NAME" for p in PREFIXES])


def _load(target: str, package: str | None = None):
    module, name = target.split(":")
    return getattr(importlib.import_module(module if package is None else
                                           f"{package}.{module}"), name)


def env_class(env_id: str):
    if env_id in PORTS:
        return _load(PORTS[env_id], "ppo_jax.envs")
    raise ValueError(f"unknown env {env_id!r}; valid: {valid_ids()}")


def is_registered(env_id: str) -> bool:
    """``env_id`` names a port or a prefix and a name (whether that name exists in the
    prefix's registry is :func:`check_env_id`'s to say)."""
    return env_id in PORTS or any(env_id.startswith(p) and env_id[len(p):] for p in PREFIXES)


def check_env_id(env_id: str) -> str:
    """``env_id`` if it names a port, or a name in the registry of its prefix (that registry
    is imported, nothing is built); else one ``ValueError`` line (the valid ids and prefixes,
    the prefix registry's names, or the pip extra that is missing)."""
    if env_id in PORTS:
        return env_id
    if is_registered(env_id):
        from ppo_jax.envs.external import check_name

        return check_name(env_id)
    raise ValueError(f"unknown env {env_id!r}; valid: {valid_ids()}")


def make_env(env_id: str = DEFAULT_ENV, max_episode_steps: int | None = None):
    """The env ``env_id`` with its time limit (None: the env's own). An env of another
    registry is checked against the protocol (:func:`ppo_jax.envs.base.check_env`, which
    traces its reset and step: ~1 s a build); the ports are not checked at every build:
    ``tests/test_env_swap.py`` checks each of them."""
    from ppo_jax.envs.base import check_env

    if env_id not in PORTS and not any(env_id.startswith(p) for p in PREFIXES):
        check_env_id(env_id)
    for prefix, target in PREFIXES.items():
        if env_id.startswith(prefix):
            return check_env(_load(target)(env_id[len(prefix):], max_episode_steps))
    return env_class(env_id)(max_episode_steps=max_episode_steps)
