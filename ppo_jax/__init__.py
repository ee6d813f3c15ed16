"""ppo_jax: the TorchRL PPO tutorial as compiled JAX programs on MJX.

The library's public names (everything else is the commands, the benchmark and interop)::

    from ppo_jax import PPOConfig, make_train, fit, resume, restore, load_policy

    states, metrics = fit(PPOConfig(total_frames=100_000))   # train as scripts/train.py does
    states, metrics = resume("runs/api")                      # continue a stopped run
    trainer = make_train(PPOConfig())                        # the pure pieces; trainer.train(key)
    trainer, states, meta = restore("runs/demo")              # a checkpoint, every run
    policy = load_policy("runs/demo"); action = policy(obs)  # obs -> action, plain numpy

The package's layers (see the README's layout map): ``core`` (the numerical core), ``envs``,
``run`` (programs, the program store, devices, the host loop, checkpoints), ``eval``,
``interop`` (TorchRL, ONNX), ``cli`` (the commands) and ``bench`` (the benchmark). The flat
module paths of earlier releases (``ppo_jax.train``, ``ppo_jax.evaluate``, ...) still import:
each is the module at its new place (:data:`MOVED`).

Importing ``ppo_jax`` imports nothing heavy: each name loads its module when first used (so a
command can choose MuJoCo's GL backend and JAX's distributed runtime before they start).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

_EXPORTS = {
    "PPOConfig": "ppo_jax.config",
    "make_train": "ppo_jax.core.train",
    "fit": "ppo_jax.run.runner",
    "resume": "ppo_jax.run.runner",
    "restore": "ppo_jax.run.checkpoint",
    "load_policy": "ppo_jax.eval.evaluate",
}

__all__ = sorted(_EXPORTS)

# Where the flat modules of earlier releases live now (one module each). Modules that were
# split are in SPLIT: importing one fails with a line that names the new places.
MOVED = {
    **{f"ppo_jax.{m}": f"ppo_jax.core.{m}" for m in (
        "networks", "distributions", "normalization", "gae", "losses", "optim", "acting",
        "train")},
    **{f"ppo_jax.{m}": f"ppo_jax.run.{m}" for m in (
        "programs", "compile_cache", "parallel", "distributed", "runner", "checkpoint",
        "events")},
    **{f"ppo_jax.{m}": f"ppo_jax.eval.{m}" for m in ("evaluate", "render", "gl")},
    "ppo_jax.compare": "ppo_jax.interop.compare",
    "ppo_jax.onnx_export": "ppo_jax.interop.onnx_export",
    "ppo_jax.export": "ppo_jax.interop.torchrl.export",
    "ppo_jax.torchrl_compat": "ppo_jax.interop.torchrl.compat",
    "ppo_jax.torchrl_reference": "ppo_jax.interop.torchrl.reference",
    "ppo_jax.mujoco_sim": "ppo_jax.envs.mujoco_c",
    "ppo_jax.files": "ppo_jax.util",
    "ppo_jax.commands": "ppo_jax.cli",
    **{f"ppo_jax.commands.{m}": f"ppo_jax.cli.{m}" for m in (
        "train", "evaluate", "export_torchrl", "export_onnx", "compare")},
    "ppo_jax.envs.brax_env": "ppo_jax.bench.brax_env",
}
SPLIT = {
    "ppo_jax.hyper": "Hyper is in ppo_jax.core.hyper; Runs and parse_sweep in ppo_jax.run.runs",
    "ppo_jax.reporting": "metrics.json and the curves are in ppo_jax.run.metrics; versions, "
                         "device_info and first_line in ppo_jax.util",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old flat path as the module at its new place (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in SPLIT:
            return importlib.machinery.ModuleSpec(fullname, self)
        if fullname in MOVED:  # its origin: the file at the new place (python -m's argv[0])
            origin = importlib.util.find_spec(MOVED[fullname]).origin
            return importlib.machinery.ModuleSpec(fullname, self, origin=origin)
        return None

    def create_module(self, spec):
        if spec.name in SPLIT:
            raise ImportError(f"{spec.name} was split: {SPLIT[spec.name]}")
        module = importlib.import_module(MOVED[spec.name])
        spec.moved_spec = module.__spec__  # the import system sets __spec__ to this one next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.moved_spec  # the module keeps its own spec

    def get_code(self, fullname):
        """``python -m`` of an old path runs the module at its new place."""
        if fullname in SPLIT:
            raise ImportError(f"{fullname} was split: {SPLIT[fullname]}")
        return importlib.util.find_spec(MOVED[fullname]).loader.get_code(MOVED[fullname])


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ppo_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
