"""Host driver of a training run (``scripts/train.py``, the benchmark's worker): compile the
run's programs (:mod:`ppo_jax.programs`), call them batch by batch, save checkpoints, write
``metrics.json`` and ``curves.png``.

The train state never leaves the device between batches: each call of the ``update`` program
takes the state (donated) and returns the next one; only the batch's metrics are read back,
one batch behind the device so that reading them never stalls it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from ppo_jax import checkpoint, reporting
from ppo_jax.config import PPOConfig
from ppo_jax.envs import ENV_ID
from ppo_jax.programs import Programs, build_programs
from ppo_jax.train import BatchMetrics, EvalMetrics, PPOState, Trainer, make_train, seed_keys


def _finite_or_none(x):
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (a reader sees the old file or the new one, never half)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_finite_or_none(payload), f)
    os.replace(tmp, path)


@dataclasses.dataclass
class RunLog:
    """What a run has produced so far, for ``metrics.json``: per-batch lists ``[K][n]``
    (``None`` for a seed's batches after its failure), evaluations per seed, timings."""

    config: PPOConfig
    num_seeds: int
    history: dict[str, Any] | None = None
    compile: dict[str, Any] = dataclasses.field(default_factory=dict)
    compile_seconds: float = 0.0
    from_cache: bool | None = None
    run_seconds: float = 0.0
    frames_trained: int = 0
    failed: list[int | None] = dataclasses.field(default_factory=list)
    marks: list[tuple[int, float]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.failed:
            self.failed = [None] * self.num_seeds
        if self.history is None:
            k = self.num_seeds
            self.history = {"batch": [], "frames": [],
                            **{name: [[] for _ in range(k)] for name in reporting.PER_BATCH},
                            "eval_frames": [[] for _ in range(k)],
                            "eval_return": [[] for _ in range(k)],
                            "eval_steps": [[] for _ in range(k)]}

    @property
    def all_failed(self) -> bool:
        return all(f is not None for f in self.failed)

    @property
    def batches(self) -> int:
        return len(self.history["batch"])

    def add_batch(self, i: int, m: BatchMetrics, ev: EvalMetrics | None) -> None:
        """Record batch ``i`` (metrics ``[K]`` as numpy); an evaluation when ``ev`` is given."""
        h, fpb = self.history, self.config.frames_per_batch
        frames = (i + 1) * fpb
        h["batch"].append(i)
        h["frames"].append(frames)
        finite = np.asarray(m.finite)
        for s in range(self.num_seeds):
            alive = self.failed[s] is None
            if alive and not finite[s]:
                self.failed[s] = i
            for name in reporting.PER_BATCH:
                value = np.asarray(getattr(m, name))[s].item()
                h[name][s].append(value if alive else None)
            if alive and finite[s]:
                self.frames_trained += fpb
                if ev is not None:
                    h["eval_frames"][s].append(frames)
                    h["eval_return"][s].append(float(np.asarray(ev.eval_return)[s]))
                    h["eval_steps"][s].append(int(np.asarray(ev.eval_steps)[s]))

    def summary(self) -> dict[str, Any]:
        h = self.history
        last = [s[-1] if s else None for s in h["eval_return"]]
        failed = [f for f in self.failed if f is not None]
        return {
            "env_id": ENV_ID,
            "total_frames": h["frames"][-1] if h["frames"] else 0,
            "num_seeds": self.num_seeds,
            "seeds": list(range(self.config.seed, self.config.seed + self.num_seeds)),
            "compile_seconds": round(self.compile_seconds, 3),
            "compiled_from_cache": self.from_cache,
            "compile": self.compile,
            "run_seconds": round(self.run_seconds, 3),
            "frames_per_second": (round(self.frames_trained / self.run_seconds, 1)
                                  if self.run_seconds > 0 else None),
            "last_eval_return": last[0] if self.num_seeds == 1 else last,
            "failed_batch": min(failed) if failed else None,
            "failed_batch_per_seed": self.failed,
            "config": self.config.to_dict(),
            "versions": reporting.versions(),
            "device": reporting.device_info(),
            **reporting.lists_to_json(h if h["batch"] else None, self.num_seeds),
        }

    def write(self, out: str, *, curves: bool) -> dict[str, Any]:
        summary = self.summary()
        write_json(os.path.join(out, "metrics.json"), summary)
        if curves and self.batches:
            frames = summary["total_frames"]
            reporting.plot_curves(self.history, os.path.join(out, "curves.png"),
                                  title=f"ppo_jax, {self.num_seeds} seed(s), {frames} frames")
        return summary


@dataclasses.dataclass
class Run:
    """A run ready to go: its trainer, programs, device state and log."""

    trainer: Trainer
    programs: Programs
    states: PPOState
    log: RunLog
    start: int


def prepare(
    config: PPOConfig,
    *,
    num_seeds: int = 1,
    resume_dir: str | None = None,
    announce: Callable[[str], None] | None = None,
    init_from: tuple[Any, Any] | None = None,
) -> Run:
    """Compile the programs and initialize (or restore from ``resume_dir``'s checkpoints) the
    device state. ``init_from`` = ``(Params, ObsNormStats)`` (e.g. from a TorchRL export)
    replaces every seed's freshly initialized networks and normalization statistics."""
    log = None
    if resume_dir is not None:
        trainer, states, meta = checkpoint.restore(os.path.join(resume_dir, "checkpoints"))
        num_seeds = int(meta["num_seeds"])
        start = int(meta["batches_done"])
        log = RunLog(config=trainer.config, num_seeds=num_seeds)
        path = os.path.join(resume_dir, "metrics.json")
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            history = reporting.lists_from_json(old, num_seeds, start)
            if history is not None:
                log.history = history
        log.failed = [None if f < 0 else int(f) for f in np.asarray(states.failed_batch)]
        need = ("update", "evaluate")
    else:
        trainer = make_train(config)
        start = 0
        need = ("init", "update", "evaluate")
    programs = build_programs(trainer, num_seeds, announce=announce, need=need)
    if log is None:
        log = RunLog(config=trainer.config, num_seeds=num_seeds)
    log.compile = programs.report()
    log.compile_seconds = programs.compile_seconds
    log.from_cache = programs.from_cache
    if resume_dir is None:
        t = time.perf_counter()
        states = programs.init(seed_keys(config.seed, num_seeds))
        if init_from is not None:
            params, stats = init_from

            def fill(x, v):
                return jax.numpy.broadcast_to(jax.numpy.asarray(v, x.dtype), x.shape)

            states = states.replace(
                params=jax.tree_util.tree_map(fill, states.params, params),
                obs_stats=jax.tree_util.tree_map(fill, states.obs_stats, stats))
        jax.block_until_ready(states)
        log.run_seconds += time.perf_counter() - t
    return Run(trainer=trainer, programs=programs, states=states, log=log, start=start)


def train_batches(
    run: Run,
    *,
    stop: int | None = None,
    on_batch: Callable[[int, BatchMetrics, EvalMetrics | None], None] | None = None,
    on_checkpoint: Callable[[Run], None] | None = None,
    checkpoint_every: int = 0,
) -> Run:
    """Run batches ``run.start ..`` up to ``stop`` (default: the config's last) or until every
    seed has failed. Each batch's metrics go to ``run.log`` and ``on_batch``; with
    ``checkpoint_every = N``, ``on_checkpoint(run)`` follows every N-th batch but the last."""
    cfg = run.trainer.config
    stop = cfg.num_batches if stop is None else min(stop, cfg.num_batches)
    update, evaluate = run.programs.update, run.programs.evaluate
    pending: list[tuple[int, Any, Any]] = []
    t0 = time.perf_counter()

    def drain(keep: int) -> None:
        while len(pending) > keep:
            j, m, ev = pending.pop(0)
            m, ev = jax.device_get((m, ev))
            if not run.log.all_failed:
                run.log.add_batch(j, m, ev)
                run.log.marks.append(((j + 1) * cfg.frames_per_batch, time.perf_counter() - t0))
                if on_batch is not None:
                    on_batch(j, m, ev)

    i = run.start
    try:
        while i < stop and not run.log.all_failed:
            states, m = update(run.states, np.int32(i))
            run.states = states
            ev = evaluate(states, np.int32(i)) if cfg.is_eval_batch(i) else None
            pending.append((i, m, ev))
            i += 1
            drain(keep=1)  # read batch i-1 while batch i runs
            if checkpoint_every and i % checkpoint_every == 0 and i < stop:
                drain(keep=0)
                run.start = i
                if on_checkpoint is not None and not run.log.all_failed:
                    on_checkpoint(run)
        drain(keep=0)
        jax.block_until_ready(run.states)
    finally:
        run.log.run_seconds += time.perf_counter() - t0
    run.start = i
    return run


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
    announce: Callable[[str], None] | None = None,
    init_from: tuple[Any, Any] | None = None,
) -> tuple[dict[str, Any], Run]:
    """Train (or continue) a run into ``out``; returns (the summary written to metrics.json,
    the finished :class:`Run`). Checkpoints every ``checkpoint_every`` batches (0: only at
    the end, if ``save_final``); metrics.json is rewritten at every checkpoint."""
    run = prepare(config, num_seeds=num_seeds, resume_dir=out if resume else None,
                  announce=announce, init_from=init_from)
    ckpt_dir = os.path.join(out, "checkpoints")
    progress = progress_factory(run.start) if progress_factory else None

    def save(r: Run) -> None:
        # metrics first: a run killed in between resumes from the older checkpoint and cuts
        # the metrics back to it; never the other way round (a checkpoint ahead of its metrics)
        r.log.write(out, curves=False)
        checkpoint.save(ckpt_dir, r.trainer, r.states, keep=keep,
                        extra_meta=checkpoint_meta(r.log))

    try:
        train_batches(run, on_batch=progress, on_checkpoint=save,
                      checkpoint_every=checkpoint_every)
    finally:
        if progress is not None:
            progress.close()
    if save_final:
        save(run)
    summary = run.log.write(out, curves=True)
    return summary, run


def checkpoint_meta(log: RunLog) -> dict[str, Any]:
    """Per-seed facts of a checkpoint that the state alone does not show."""
    return {
        "last_eval_return": [s[-1] if s else None for s in log.history["eval_return"]],
        "last_eval_frames": [s[-1] if s else None for s in log.history["eval_frames"]],
        "failed_batch": log.failed,
    }
