"""Benchmark worker: MuJoCo Playground's own Brax-PPO training, called as Playground's
``learning/train_jax_ppo.py`` calls it (runs in a fresh subprocess, see
:mod:`ppo_jax.bench.worker`; the settings: :func:`ppo_jax.bench.playground.brax_settings`).

Playground's script, for a DM Control Suite env without flags: ``env =
registry.load(name, config=registry.get_default_config(name))``, ``ppo.train(**dict(
dm_control_suite_params.brax_ppo_config(name)), network_factory=ppo_networks.
make_ppo_networks, seed=..., wrap_env_fn=wrapper.wrap_for_brax_training,
num_eval_envs=128, run_evals=True, environment=env, eval_env=registry.load(name,
config=...), progress_fn=..., policy_params_fn=...)``. Here the env config's ``impl`` is
``"jax"`` (MJX on XLA: MuJoCo Warp, the default, needs an NVIDIA GPU), no checkpoint is saved,
and the scaled-down ``num_timesteps``/``num_evals``/``num_resets_per_eval`` come in the spec.

Marks (seconds since the worker started, and since the subprocess was launched when the spec
says when): ``policy_params_fn`` is called right after each training epoch (before Brax's
evaluation), so it marks the end of every training step; ``progress_fn`` marks each
evaluation (the one before training included) with its ``eval/episode_reward``.
"""

from __future__ import annotations

import time
from typing import Any

from ppo_jax.bench import probes


class StopAfterFirst(Exception):
    """Raised from ``policy_params_fn`` to end a warm run after its first training step."""


def worker_brax_playground(spec: dict[str, Any]) -> dict[str, Any]:
    """Playground's Brax-PPO on ``spec["env_name"]`` with ``spec["settings"]``."""
    t_import = time.perf_counter()
    launched = spec.get("launched_unix")
    import jax

    probes.enable_cache(spec.get("compile_cache"))
    from ppo_jax.core.train import MATMUL

    precision = spec.get("matmul_precision", "highest")
    if MATMUL.get(precision):
        jax.config.update("jax_default_matmul_precision", MATMUL[precision])
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo
    from mujoco_playground import registry, wrapper

    from ppo_jax.bench.worker_brax import _patch_device_put_replicated

    patched = _patch_device_put_replicated(getattr(ppo, "_PMAP_AXIS_NAME", "i"))
    cache = probes.CacheCounter()
    compiles = probes.CompileLog()
    t0 = compiles.t0 = time.perf_counter()
    offset = (time.time() - launched) if launched else None  # launch -> t0
    name = spec["env_name"]
    env_cfg = registry.get_default_config(name)
    if "impl" in env_cfg:
        env_cfg.impl = spec.get("impl", "jax")
    env = registry.load(name, config=env_cfg)
    eval_env = registry.load(name, config=env_cfg)
    env_loaded_s = time.perf_counter() - t0

    marks: list[tuple[int, float]] = []  # end of each training step (before its evaluation)
    evals: list[tuple[int, float, float]] = []  # (frames, t, eval/episode_reward)
    sps: list[tuple[int, float]] = []  # Brax's training/sps of each epoch (evaluation excluded)
    stop_after = spec.get("stop_after_steps")

    def policy_params_fn(step, *_):
        step = int(step)
        if step == 0:  # before training, after the initial evaluation
            return
        marks.append((step, time.perf_counter() - t0))
        if stop_after and len(marks) >= stop_after:
            raise StopAfterFirst

    def progress_fn(step, metrics):
        t = time.perf_counter() - t0
        step = int(step)
        if "eval/episode_reward" in metrics:
            evals.append((step, t, float(metrics["eval/episode_reward"])))
        if "training/sps" in metrics:
            sps.append((step, float(metrics["training/sps"])))

    s = dict(spec["settings"])
    try:
        ppo.train(environment=env, eval_env=eval_env,
                  network_factory=ppo_networks.make_ppo_networks,
                  wrap_env_fn=wrapper.wrap_for_brax_training,
                  progress_fn=progress_fn, policy_params_fn=policy_params_fn, **s)
        stopped = False
    except StopAfterFirst:
        stopped = True
    before_first = [d for t, d in compiles.events if marks and t <= marks[0][1]]
    return dict(
        marks=marks, evals=evals, sps=sps, import_s=t0 - t_import, launch_to_t0_s=offset,
        env_loaded_s=env_loaded_s, compiles=compiles.events,
        compile_s=sum(before_first) if before_first else None, cache=cache.counts(),
        stopped_after_first=stopped, patched=patched,
        peak_rss_mib=probes.rss_mib(), device_peak_mib=probes.jax_device_peak_mib(),
        device=probes.jax_device_info(),
    )
