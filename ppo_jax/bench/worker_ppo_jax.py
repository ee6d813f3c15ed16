"""Benchmark worker: ppo_jax's whole run as one compiled program, timed per batch by a host
callback (runs in a fresh subprocess, see :mod:`ppo_jax.bench.worker`)."""

from __future__ import annotations

import time
from typing import Any

from ppo_jax.bench import probes
from ppo_jax.config import PPOConfig


def worker_ppo_jax(spec: dict[str, Any]) -> dict[str, Any]:
    t_import = time.perf_counter()
    import jax

    probes.enable_cache(spec.get("compile_cache"))
    from ppo_jax.train import make_train, seed_keys

    compiles = probes.CompileLog()
    t0 = compiles.t0 = time.perf_counter()
    cfg = PPOConfig.from_dict(spec["config"])
    marks: list[tuple[int, float]] = []
    evals: list[tuple[int, float, float]] = []
    nb, fpb = cfg.num_batches, cfg.frames_per_batch

    def progress(i, reward, step_count, lr, evaluated, eval_return, eval_steps, finite):
        t = time.perf_counter() - t0
        i = int(i)
        if i < nb:
            marks.append(((i + 1) * fpb, t))
            if bool(evaluated[0]):
                evals.append(((i + 1) * fpb, t, float(eval_return[0])))

    tr = make_train(cfg)
    keys = seed_keys(cfg.seed, 1)
    program = jax.jit(lambda k: tr.train_many(k, progress)).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t_call = time.perf_counter()
    states, metrics = program(keys)
    jax.block_until_ready((states, metrics))
    call_s = time.perf_counter() - t_call
    failed = int(states.failed_batch[0])
    return dict(
        marks=marks, evals=evals, import_s=t0 - t_import, compile_s=compile_s,
        call_s=call_s, call_fps=cfg.total_frames / call_s, compiles=compiles.events,
        failed_batch=failed if failed >= 0 else None,
        peak_rss_mib=probes.rss_mib(), device_peak_mib=probes.jax_device_peak_mib(),
        device=probes.jax_device_info(),
    )
