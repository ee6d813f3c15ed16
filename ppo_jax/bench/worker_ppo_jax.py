"""Benchmark worker: ppo_jax's run exactly as ``scripts/train.py`` drives it (the programs of
:mod:`ppo_jax.run.programs`, called batch by batch by :func:`ppo_jax.run.runner.train_batches`),
timed at the end of each batch (runs in a fresh subprocess, see :mod:`ppo_jax.bench.worker`)."""

from __future__ import annotations

import time
from typing import Any

from ppo_jax.bench import probes
from ppo_jax.config import PPOConfig


def worker_ppo_jax(spec: dict[str, Any]) -> dict[str, Any]:
    """ppo_jax's run of ``spec["config"]``; optional: ``stop`` (run only that many batches),
    ``launched_unix`` (when the driver launched this process: ``launch_to_t0_s``)."""
    t_import = time.perf_counter()
    launched = spec.get("launched_unix")
    if spec.get("force_host_devices"):  # CPU "devices" for --scaling (before jax starts)
        import os

        flag = f"--xla_force_host_platform_device_count={int(spec['force_host_devices'])}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    import jax

    probes.enable_cache(spec.get("compile_cache"))
    from ppo_jax.run import runner

    compiles = probes.CompileLog()
    t0 = compiles.t0 = time.perf_counter()
    launch_to_t0 = (time.time() - launched) if launched else None
    cfg = PPOConfig.from_dict(spec["config"])
    evals: list[tuple[int, float, float]] = []
    fpb = cfg.frames_per_batch

    from ppo_jax.run.runs import Runs

    job = runner.prepare(Runs(cfg), devices=spec.get("devices"))
    compile_s = time.perf_counter() - t0

    def on_batch(i, m, ev):
        if ev is not None:
            evals.append(((i + 1) * fpb, time.perf_counter() - t0, float(ev.eval_return[0])))

    t_call = time.perf_counter()
    runner.train_batches(job, on_batch=on_batch, stop=spec.get("stop"))
    call_s = time.perf_counter() - t_call
    offset = t_call - t0  # train_batches' marks count from its own start
    profile = None
    if spec.get("profile"):
        from ppo_jax.bench.profile import profile_batch

        profile = profile_batch(job.trainer, jax.tree_util.tree_map(lambda x: x[0], job.states))
    marks = [(f, t + offset) for f, t in job.log.marks]
    failed = job.log.failed[0]
    return dict(
        marks=marks, evals=evals, import_s=t0 - t_import, launch_to_t0_s=launch_to_t0,
        compile_s=compile_s,
        compiled_from_cache=job.programs.from_cache, compile=job.programs.report(),
        call_s=call_s, call_fps=job.start * fpb / call_s, compiles=compiles.events,
        failed_batch=failed,
        peak_rss_mib=probes.rss_mib(), device_peak_mib=probes.jax_device_peak_mib(),
        device=probes.jax_device_info(), profile=profile, layout=job.log.layout,
    )
