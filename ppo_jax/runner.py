"""Host driver of a training run (``scripts/train.py``, the benchmark's worker): compile the
run's programs (:mod:`ppo_jax.programs`), call them batch by batch, save checkpoints, write
``metrics.json`` and ``curves.png``.

The train state never leaves the device between batches: each call of the ``update`` program
takes the state (donated) and returns the next one; only the batch's metrics are read back,
one batch behind the device so that reading them never stalls it.

A job is R runs (:class:`~ppo_jax.hyper.Runs`: seeds times sweep points) trained together,
laid out over a device mesh (:mod:`ppo_jax.parallel`). In a multi-process job every process
runs this driver on the same programs; only process 0 writes ``metrics.json`` and
``curves.png``, and all of them take part in saving checkpoints.
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
from ppo_jax.hyper import Runs, label
from ppo_jax.parallel import barrier, choose_devices, gather, make_layout
from ppo_jax.programs import Programs, build_programs
from ppo_jax.train import BatchMetrics, EvalMetrics, PPOState, Trainer, make_train


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
    """What a job has produced so far, for ``metrics.json``: per-batch lists ``[R][n]``
    (``None`` for a run's batches after its failure), evaluations per run, timings."""

    runs: Runs
    history: dict[str, Any] | None = None
    compile: dict[str, Any] = dataclasses.field(default_factory=dict)
    compile_seconds: float = 0.0
    from_cache: bool | None = None
    run_seconds: float = 0.0
    frames_trained: int = 0
    failed: list[int | None] = dataclasses.field(default_factory=list)
    marks: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    layout: str | None = None

    @property
    def config(self) -> PPOConfig:
        return self.runs.config

    @property
    def num_runs(self) -> int:
        return self.runs.num_runs

    def __post_init__(self):
        if not self.failed:
            self.failed = [None] * self.num_runs
        if self.history is None:
            k = self.num_runs
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
        """Record batch ``i`` (metrics ``[R]`` as numpy); an evaluation when ``ev`` is given."""
        h, fpb = self.history, self.config.frames_per_batch
        frames = (i + 1) * fpb
        h["batch"].append(i)
        h["frames"].append(frames)
        finite = np.asarray(m.finite)
        for s in range(self.num_runs):
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
        runs = self.runs
        out = {
            "env_id": ENV_ID,
            "total_frames": h["frames"][-1] if h["frames"] else 0,
            "num_seeds": runs.num_seeds,
            "seeds": list(range(self.config.seed, self.config.seed + runs.num_seeds)),
            "num_runs": runs.num_runs,
            "runs": runs.to_meta()["runs"],
            "layout": self.layout,
            "compile_seconds": round(self.compile_seconds, 3),
            "compiled_from_cache": self.from_cache,
            "compile": self.compile,
            "run_seconds": round(self.run_seconds, 3),
            "frames_per_second": (round(self.frames_trained / self.run_seconds, 1)
                                  if self.run_seconds > 0 else None),
            "last_eval_return": last[0] if runs.num_runs == 1 else last,
            "failed_batch": min(failed) if failed else None,
            "failed_batch_per_seed": self.failed,
            "config": self.config.to_dict(),
            "versions": reporting.versions(),
            "device": reporting.device_info(),
            **reporting.lists_to_json(h if h["batch"] else None, runs.num_runs),
        }
        if runs.is_sweep:
            out["sweep"] = runs.sweep
            out["sweep_ranking"] = sweep_ranking(runs, h["eval_return"])
        return out

    def point_series(self) -> list[tuple[str, dict[str, Any]]]:
        """The history split by sweep point: ``[(label, lists of that point's seeds)]``."""
        runs, h = self.runs, self.history
        if not runs.is_sweep:
            return [("ppo_jax", h)]
        series = []
        for p, overrides in enumerate(runs.sweep):
            rows = range(p * runs.num_seeds, (p + 1) * runs.num_seeds)
            lists = {k: (v if k in reporting.SHARED else [v[r] for r in rows])
                     for k, v in h.items()}
            series.append((label(overrides), lists))
        return series

    def write(self, out: str, *, curves: bool) -> dict[str, Any]:
        summary = self.summary()
        if jax.process_index() != 0:  # one writer per job
            return summary
        write_json(os.path.join(out, "metrics.json"), summary)
        if curves and self.batches:
            frames = summary["total_frames"]
            what = (f"{self.runs.num_points} configs x {self.runs.num_seeds} seed(s)"
                    if self.runs.is_sweep else f"{self.runs.num_seeds} seed(s)")
            reporting.plot_panels(self.point_series(), os.path.join(out, "curves.png"),
                                  title=f"ppo_jax, {what}, {frames} frames")
        return summary


def sweep_ranking(runs: Runs, eval_returns: list[list[float]]) -> list[dict[str, Any]]:
    """The sweep's points ranked by final evaluation return (mean over seeds), then by best:
    the highest seed-mean over the evaluation points."""
    rows = []
    for p, overrides in enumerate(runs.sweep):
        seeds = [eval_returns[r] for r in range(p * runs.num_seeds, (p + 1) * runs.num_seeds)]
        n = min((len(s) for s in seeds), default=0)
        if n == 0:
            final = best = std = None
        else:
            curve = np.mean([s[:n] for s in seeds], axis=0)
            finals = [s[n - 1] for s in seeds]
            final, best, std = float(curve[-1]), float(curve.max()), float(np.std(finals))
        rows.append({"point": p, **overrides, "final_eval_return": final,
                     "final_eval_return_std": std, "best_eval_return": best})
    key = (lambda r: (-(r["final_eval_return"] if r["final_eval_return"] is not None
                        else -np.inf), -(r["best_eval_return"] or -np.inf)))
    ranked = sorted(rows, key=key)
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    return ranked


@dataclasses.dataclass
class Run:
    """A job ready to go: its runs, trainer, programs, device state and log."""

    runs: Runs
    trainer: Trainer
    programs: Programs
    states: PPOState
    log: RunLog
    start: int


def prepare(
    config: PPOConfig,
    *,
    num_seeds: int = 1,
    sweep: list[dict[str, Any]] | None = None,
    devices: int | str | None = None,
    resume_dir: str | None = None,
    announce: Callable[[str], None] | None = None,
    init_from: tuple[Any, Any] | None = None,
) -> Run:
    """Compile the programs and initialize (or restore from ``resume_dir``'s checkpoints) the
    device state of ``num_seeds`` seeds times the points of ``sweep``, over ``devices``
    devices (see :func:`ppo_jax.parallel.choose_devices`; raises its ``LayoutError``).
    ``init_from`` = ``(Params, ObsNormStats)`` (e.g. from a TorchRL export) replaces every
    run's freshly initialized networks and normalization statistics."""
    log = None
    if resume_dir is not None:
        ckpt = os.path.join(resume_dir, "checkpoints")
        _, meta = checkpoint.read_meta(ckpt)
        runs = checkpoint.runs_from_meta(meta)
    else:
        runs = Runs(config, num_seeds, sweep)
    n_dev = choose_devices(devices, runs.num_runs, runs.config.num_envs)
    layout = make_layout(runs.num_runs, runs.config.num_envs, n_dev)
    if resume_dir is not None:
        trainer, states, meta = checkpoint.restore(ckpt, layout=layout)
        start = int(meta["batches_done"])
        log = RunLog(runs=runs)
        path = os.path.join(resume_dir, "metrics.json")
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            history = reporting.lists_from_json(old, runs.num_runs, start)
            if history is not None:
                log.history = history
        log.failed = [None if f < 0 else int(f) for f in gather(states.failed_batch)]
        need = ("update", "evaluate")
    else:
        trainer = make_train(runs.config, layout)
        start = 0
        need = ("init", "update", "evaluate")
    programs = build_programs(trainer, runs.num_runs, announce=announce, need=need)
    barrier("programs_ready")  # the processes of a job start the first batch together
    if log is None:
        log = RunLog(runs=runs)
    log.layout = None if layout is None else layout.describe()
    log.compile = programs.report()
    log.compile_seconds = programs.compile_seconds
    log.from_cache = programs.from_cache
    if resume_dir is None:
        t = time.perf_counter()
        keys, hypers = runs.keys(), runs.hypers()
        if layout is not None:
            keys = layout.put(keys, layout.runs())
            hypers = layout.put(hypers, jax.tree_util.tree_map(lambda _: layout.runs(), hypers))
        states = programs.init(keys, hypers)
        if init_from is not None:
            params, stats = init_from

            def fill(x, v):
                full = np.broadcast_to(np.asarray(v, x.dtype), x.shape)
                return full if layout is None else layout.put(full, x.sharding)

            states = states.replace(
                params=jax.tree_util.tree_map(fill, states.params, params),
                obs_stats=jax.tree_util.tree_map(fill, states.obs_stats, stats))
        jax.block_until_ready(states)
        log.run_seconds += time.perf_counter() - t
    return Run(runs=runs, trainer=trainer, programs=programs, states=states, log=log,
               start=start)


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
    layout = run.trainer.layout
    batch_index = (np.int32 if layout is None
                   else lambda i: layout.put(np.int32(i), layout.replicated))
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
            states, m = update(run.states, batch_index(i))
            run.states = states
            ev = evaluate(states, batch_index(i)) if cfg.is_eval_batch(i) else None
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
    sweep: list[dict[str, Any]] | None = None,
    devices: int | str | None = None,
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
    run = prepare(config, num_seeds=num_seeds, sweep=sweep, devices=devices,
                  resume_dir=out if resume else None, announce=announce, init_from=init_from)
    ckpt_dir = os.path.join(out, "checkpoints")
    progress = progress_factory(run.start) if progress_factory else None

    def save(r: Run) -> None:
        # metrics first: a run killed in between resumes from the older checkpoint and cuts
        # the metrics back to it; never the other way round (a checkpoint ahead of its metrics)
        r.log.write(out, curves=False)
        checkpoint.save(ckpt_dir, r.trainer, r.states, runs=r.runs, keep=keep,
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
