"""Host driver of a training run: compile, call the program (per checkpoint segment),
save checkpoints, write ``metrics.json`` and ``curves.png``. Used by ``scripts/train.py``."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from ppo_jax import checkpoint, reporting
from ppo_jax.config import PPOConfig
from ppo_jax.train import make_train, seed_keys


def _finite_or_none(x):
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_metrics(path: str, payload: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_finite_or_none(payload), f)
    os.replace(tmp, path)


def _timed_compile(fn, *args):
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t


def run_training(
    config: PPOConfig,
    *,
    out: str,
    num_seeds: int = 1,
    checkpoint_every: int = 0,
    keep: int = 3,
    save_final: bool = True,
    resume: bool = False,
    progress_factory: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Train (or continue) a run into ``out``; returns the summary written to metrics.json.

    Without checkpoints the whole run (init included) is ONE compiled call. With
    ``checkpoint_every = N`` the same compiled segment program runs N batches per call.
    """
    ckpt_dir = os.path.join(out, "checkpoints")
    metrics_path = os.path.join(out, "metrics.json")
    history = None
    compile_s = 0.0
    if resume:
        trainer, states, meta = checkpoint.restore(ckpt_dir)
        num_seeds = int(meta["num_seeds"])
        if os.path.exists(metrics_path):
            with open(metrics_path) as f:
                old = json.load(f)
            history = reporting.lists_from_json(old, num_seeds, int(meta["batches_done"]))
            compile_s = float(old.get("compile_seconds") or 0.0)
        start = int(np.max(np.asarray(states.batches_done)))
    else:
        trainer = make_train(config)
        start = 0
    total = config.num_batches
    progress = progress_factory(start) if progress_factory else None
    run_s = 0.0
    run_frames = 0
    failed = None
    t_all = time.perf_counter()

    def handle(states, metrics, first):
        nonlocal history, failed, run_frames
        metrics = jax.device_get(metrics)
        n_valid = max(0, min(metrics.reward.shape[0], total - first))
        run_frames += n_valid * config.frames_per_batch * num_seeds
        history = reporting.merge_lists(
            history, reporting.metrics_to_lists(config, metrics, first, n_valid)
        )
        fb = np.asarray(states.failed_batch)
        if (fb >= 0).any():
            failed = int(fb[fb >= 0].min())

    try:
        if not resume and checkpoint_every == 0:
            keys = seed_keys(config.seed, num_seeds)
            program, compile_s = _timed_compile(
                lambda k: trainer.train_many(k, progress), keys
            )
            t = time.perf_counter()
            states, metrics = program(keys)
            jax.block_until_ready(metrics)
            run_s += time.perf_counter() - t
            handle(states, metrics, 0)
        else:
            if not resume:
                keys = seed_keys(config.seed, num_seeds)
                init, c0 = _timed_compile(trainer.init_many, keys)
                compile_s += c0
                t = time.perf_counter()
                states = init(keys)
                jax.block_until_ready(states)
                run_s += time.perf_counter() - t
            length = checkpoint_every if checkpoint_every > 0 else max(total - start, 1)
            segment, c1 = _timed_compile(
                lambda s, i: trainer.run(s, i, length, progress), states, np.int32(start)
            )
            compile_s += c1
            i = start
            while i < total and failed is None:
                t = time.perf_counter()
                states, metrics = segment(states, np.int32(i))
                jax.block_until_ready(metrics)
                run_s += time.perf_counter() - t
                handle(states, metrics, i)
                i += length
                if checkpoint_every > 0 and (i < total or save_final):
                    checkpoint.save(ckpt_dir, trainer, states, keep=keep)
                    _write(out, config, num_seeds, history, compile_s, run_s, run_frames, failed, False)
    finally:
        if progress is not None:
            progress.close()

    if save_final and (checkpoint_every == 0 or failed is not None):
        checkpoint.save(ckpt_dir, trainer, states, keep=keep)
    summary = _write(out, config, num_seeds, history, compile_s, run_s, run_frames, failed, True)
    summary["wall_seconds"] = time.perf_counter() - t_all
    return summary


def _write(out, config, num_seeds, history, compile_s, run_s, run_frames, failed, final):
    frames_done = history["frames"][-1] if history and history["frames"] else 0
    evals = history["eval_return"][0] if history else []
    summary = {
        "env_id": "InvertedDoublePendulum-v4",
        "total_frames": frames_done,
        "num_seeds": num_seeds,
        "seeds": list(range(config.seed, config.seed + num_seeds)),
        "compile_seconds": round(compile_s, 3),
        "run_seconds": round(run_s, 3),
        "frames_per_second": round(run_frames / run_s, 1) if run_s > 0 else None,
        "last_eval_return": evals[-1] if evals else None,
        "failed_batch": failed,
        "config": config.to_dict(),
        "versions": reporting.versions(),
        "device": reporting.device_info(),
        **reporting.lists_to_json(history, num_seeds),
    }
    write_metrics(os.path.join(out, "metrics.json"), summary)
    if final and history:
        reporting.plot_curves(history, os.path.join(out, "curves.png"),
                              title=f"ppo_jax, {num_seeds} seed(s), {frames_done} frames")
    return summary
