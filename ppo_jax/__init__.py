"""ppo_jax: the TorchRL PPO tutorial as compiled JAX programs on MJX.

The library's public names (everything else is the commands, the benchmark and interop)::

    from ppo_jax import PPOConfig, make_train, fit, restore, load_policy

    states, metrics = fit(PPOConfig(total_frames=100_000))   # train as scripts/train.py does
    trainer = make_train(PPOConfig())                        # the pure pieces; trainer.train(key)
    trainer, states, meta = restore("runs/demo")              # a checkpoint, every run
    policy = load_policy("runs/demo"); action = policy(obs)  # obs -> action, plain numpy

Importing ``ppo_jax`` imports nothing heavy: each name loads its module when first used (so a
command can choose MuJoCo's GL backend and JAX's distributed runtime before they start).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PPOConfig": "ppo_jax.config",
    "make_train": "ppo_jax.train",
    "fit": "ppo_jax.runner",
    "restore": "ppo_jax.checkpoint",
    "load_policy": "ppo_jax.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ppo_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
