"""Benchmark worker: Brax's own PPO trainer (``brax.training.agents.ppo.train``) on ppo_jax's
MJX env, timed per batch through Brax's ``progress_fn`` (runs in a fresh subprocess, see
:mod:`ppo_jax.bench.worker`). Its settings: :func:`ppo_jax.bench.configs.brax_settings`."""

from __future__ import annotations

import time
from typing import Any

from ppo_jax.bench import probes

BRAX_PATCH_NOTE = (
    "brax 0.14's ppo.train calls jax.device_put_replicated, which this jax no longer has: the "
    "benchmark gave jax that function back before calling it: each leaf stacked along a new "
    "leading axis (one slice per device) and placed by an identity pmap over Brax's axis name "
    "'i', so that Brax's training epoch compiles once (placed with another sharding, it "
    "compiled a second time on its second call)."
)


def _patch_device_put_replicated(axis_name: str = "i") -> bool:
    """Give jax ``device_put_replicated`` back if it is gone (brax 0.14 calls it).

    The tree is stacked along a new leading axis (one slice per device) and placed by an
    identity ``pmap`` over ``axis_name`` (Brax's pmap axis name), so it carries the same
    sharding as the outputs of Brax's pmapped training epoch. Placed any other way (even by a
    pmap with another axis name) the first and the second epoch see different input shardings
    and Brax's training epoch is compiled twice.
    """
    import jax

    if hasattr(jax, "device_put_replicated"):
        return False
    import jax.numpy as jnp

    def device_put_replicated(x, devices):
        devices = list(devices)
        stacked = jax.tree_util.tree_map(lambda a: jnp.stack([jnp.asarray(a)] * len(devices)), x)
        return jax.pmap(lambda t: t, axis_name=axis_name, devices=devices)(stacked)

    jax.device_put_replicated = device_put_replicated
    return True


def worker_brax(spec: dict[str, Any]) -> dict[str, Any]:
    """Brax's ``ppo.train`` with ``spec["settings"]``; a mark per training epoch."""
    t_import = time.perf_counter()
    import functools

    import jax

    probes.enable_cache(spec.get("compile_cache"))
    precision = spec.get("matmul_precision", "highest")
    from ppo_jax.core.train import MATMUL

    if MATMUL.get(precision):
        jax.config.update("jax_default_matmul_precision", MATMUL[precision])
    import brax.envs
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    patched = _patch_device_put_replicated(getattr(ppo, "_PMAP_AXIS_NAME", "i"))

    from ppo_jax.bench.brax_env import BRAX_ENV_NAME

    s = dict(spec["settings"])
    hidden = tuple(s.pop("hidden_sizes"))
    s.pop("activation")
    s.pop("batches_per_epoch")
    marks: list[tuple[int, float]] = []
    evals: list[tuple[int, float, float]] = []
    compiles = probes.CompileLog()
    t0 = compiles.t0 = time.perf_counter()
    env = brax.envs.get_environment(BRAX_ENV_NAME)

    def progress_fn(step, metrics):
        t = time.perf_counter() - t0
        step = int(step)
        if step == 0:  # Brax's evaluation before training
            return
        marks.append((step, t))
        if "eval/episode_reward" in metrics:
            evals.append((step, t, float(metrics["eval/episode_reward"])))

    network_factory = functools.partial(
        ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=hidden,
        value_hidden_layer_sizes=hidden, activation=jax.nn.tanh)
    ppo.train(environment=env, network_factory=network_factory, progress_fn=progress_fn, **s)
    before_first = [d for t, d in compiles.events if marks and t <= marks[0][1]]
    return dict(
        marks=marks, evals=evals, import_s=t0 - t_import, compiles=compiles.events,
        compile_s=sum(before_first) if before_first else None, patched=patched,
        peak_rss_mib=probes.rss_mib(), device_peak_mib=probes.jax_device_peak_mib(),
        device=probes.jax_device_info(),
    )
