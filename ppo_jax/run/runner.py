"""Host driver of a training run (``scripts/train.py``, the benchmark's worker): compile the
run's programs (:mod:`ppo_jax.run.programs`), call them batch by batch, save checkpoints, write
``metrics.json`` and ``curves.png``.

The train state never leaves the device between batches: each call of the ``update`` program
takes the state (donated) and returns the next one; only the batch's metrics are read back,
one batch behind the device so that reading them never stalls it.

A :class:`Job` is R runs (:class:`~ppo_jax.core.hyper.Runs`: seeds times sweep points) trained
together, laid out over a device mesh (:mod:`ppo_jax.run.parallel`); :func:`prepare` makes one,
new (from :class:`~ppo_jax.core.hyper.Runs`) or resumed (from a :class:`~ppo_jax.run.checkpoint.Saved`
checkpoint), and :func:`train_batches` drives it. In a multi-process job every process
runs this driver on the same programs; only process 0 writes ``metrics.json`` and
``curves.png``, and all of them take part in saving checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from ppo_jax.run import checkpoint, metrics
from ppo_jax.config import PPOConfig
from ppo_jax import util
from ppo_jax.util import write_json
from ppo_jax.run.runs import Runs, label
from ppo_jax.core.optim import anneal_rate
from ppo_jax.run.parallel import barrier, choose_devices, gather, make_layout
from ppo_jax.run.programs import Programs, build_programs
from ppo_jax.core.train import BatchMetrics, EvalMetrics, PPOState, Trainer, make_train


@dataclasses.dataclass
class RunLog:
    """What a job has produced so far, for ``metrics.json``: per-batch lists ``[R][n]``
    (``None`` for a run's batches after its failure), evaluations per run, timings."""

    runs: Runs
    env_id: str = ""
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
                            **{name: [[] for _ in range(k)] for name in metrics.PER_BATCH},
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
        scalars = m.scalars()
        for s in range(self.num_runs):
            alive = self.failed[s] is None
            if alive and not finite[s]:
                self.failed[s] = i
            for name in metrics.PER_BATCH:
                value = np.asarray(scalars[name])[s].item()
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
            "format": metrics.METRICS_FORMAT,
            "env_id": self.env_id,
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
            "failed_batch_per_run": self.failed,
            "config": self.config.to_dict(),
            "versions": util.versions(),
            "device": util.device_info(),
            **metrics.lists_to_json(h if h["batch"] else None, runs.num_runs),
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
            lists = {k: (v if k in metrics.SHARED else [v[r] for r in rows])
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
            metrics.plot_panels(self.point_series(), os.path.join(out, "curves.png"),
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
class Job:
    """A job ready to go: its runs, trainer, programs, device state and log; ``start`` is
    the next batch to run."""

    runs: Runs
    trainer: Trainer
    programs: Programs
    states: PPOState
    log: RunLog
    start: int


def prepare(
    start: Runs | checkpoint.Saved,
    *,
    devices: int | str | None = None,
    announce: Callable[[str], None] | None = None,
    init_from: tuple[Any, Any] | None = None,
    env: Any = None,
) -> Job:
    """Compile the programs and initialize the device state of a new job (``start``: its
    :class:`~ppo_jax.core.hyper.Runs`), or restore a saved one (``start``: a
    :class:`~ppo_jax.run.checkpoint.Saved` checkpoint; its run directory's ``metrics.json``
    gives the history so far), over ``devices`` devices (see
    :func:`ppo_jax.run.parallel.choose_devices`; raises its ``LayoutError``). ``init_from`` =
    ``(Params, ObsNormStats)`` (e.g. from a TorchRL export) replaces every new run's freshly
    initialized networks and normalization statistics. ``env``: an env object of the user's
    own (it must meet :mod:`ppo_jax.envs.base`'s protocol; None: the registry's
    ``config.env``)."""
    if jax.config.jax_enable_x64:
        raise ValueError("ppo_jax's programs are float32: train with JAX_ENABLE_X64 unset")
    resume = isinstance(start, checkpoint.Saved)
    if resume and init_from is not None:
        raise ValueError("init_from starts a new job: it cannot be used to resume one")
    runs = start.runs if resume else start
    n_dev = choose_devices(devices, runs.num_runs, runs.config.num_envs)
    layout = make_layout(runs.num_runs, runs.config.num_envs, n_dev)
    if resume:
        trainer, states, _ = checkpoint.restore(start, layout=layout, env=env)
        first = start.step
        need = ("update", "evaluate")
    else:
        trainer = make_train(runs.config, layout, env)
        first = 0
        need = ("init", "update", "evaluate")
    programs = build_programs(trainer, runs.num_runs, announce=announce, need=need)
    barrier("programs_ready")  # the processes of a job start the first batch together
    log = RunLog(runs=runs, env_id=trainer.env.env_id)
    log.layout = None if layout is None else layout.describe()
    log.compile = programs.report()
    log.compile_seconds = programs.compile_seconds
    log.from_cache = programs.from_cache
    if resume:
        path = os.path.join(os.path.dirname(start.directory), "metrics.json")
        history = metrics.read_history(path, runs.num_runs, first)
        if history is not None:
            log.history = history
        log.failed = [None if f < 0 else int(f) for f in gather(states.failed_batch)]
    else:
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
    return Job(runs=runs, trainer=trainer, programs=programs, states=states, log=log,
               start=first)


def train_batches(
    job: Job,
    *,
    stop: int | None = None,
    on_batch: Callable[[int, BatchMetrics, EvalMetrics | None], None] | None = None,
    on_checkpoint: Callable[[Job], None] | None = None,
    checkpoint_every: int = 0,
    interrupted: Callable[[], bool] | None = None,
) -> Job:
    """Run batches ``job.start ..`` up to ``stop`` (default: the config's last), until every
    run has failed, or until ``interrupted()`` says so (asked before each batch; the batches
    already started finish and are recorded). Each batch's metrics go to ``job.log`` and
    ``on_batch``; with ``checkpoint_every = N``, ``on_checkpoint(job)`` follows every N-th
    batch but the last. ``job.start`` is then the next batch to run."""
    cfg = job.trainer.config
    stop = cfg.num_batches if stop is None else min(stop, cfg.num_batches)
    update, evaluate = job.programs.update, job.programs.evaluate
    layout = job.trainer.layout
    scalar = (lambda x: x) if layout is None else lambda x: layout.put(x, layout.replicated)
    rate = scalar(anneal_rate(cfg))  # the lr schedule's phase step: an input of `update`
    pending: list[tuple[int, Any, Any]] = []
    t0 = clock = time.perf_counter()

    def count_time() -> None:  # run_seconds up to now, as a checkpoint's metrics.json reports
        nonlocal clock
        now = time.perf_counter()
        job.log.run_seconds += now - clock
        clock = now

    def drain(keep: int) -> None:
        while len(pending) > keep:
            j, m, ev = pending.pop(0)
            m, ev = jax.device_get((m, ev))
            if not job.log.all_failed:
                job.log.add_batch(j, m, ev)
                job.log.marks.append(((j + 1) * cfg.frames_per_batch, time.perf_counter() - t0))
                if on_batch is not None:
                    on_batch(j, m, ev)

    i = job.start
    try:
        while i < stop and not job.log.all_failed and not (interrupted and interrupted()):
            states, m = update(job.states, scalar(np.int32(i)), rate)
            job.states = states
            ev = evaluate(states, scalar(np.int32(i))) if cfg.is_eval_batch(i) else None
            pending.append((i, m, ev))
            i += 1
            drain(keep=1)  # read batch i-1 while batch i runs
            if checkpoint_every and i % checkpoint_every == 0 and i < stop:
                drain(keep=0)
                job.start = i
                if on_checkpoint is not None and not job.log.all_failed:
                    count_time()
                    on_checkpoint(job)
        drain(keep=0)
        jax.block_until_ready(job.states)
    finally:
        count_time()
    job.start = i
    return job


def run_training(
    start: Runs | checkpoint.Saved,
    *,
    out: str,
    devices: int | str | None = None,
    checkpoint_every: int = 0,
    keep: int = 3,
    save_final: bool = True,
    tensorboard: bool = True,
    progress_factory: Callable[[int], Any] | None = None,
    announce: Callable[[str], None] | None = None,
    init_from: tuple[Any, Any] | None = None,
    interrupted: Callable[[], bool] | None = None,
    env: Any = None,
) -> tuple[dict[str, Any], Job]:
    """Train a new job (``start``: its runs) or continue a saved one (``start``: its
    checkpoint) into the run directory ``out``; returns (the summary written to
    metrics.json, the finished :class:`Job`). Checkpoints every ``checkpoint_every`` batches
    (0: only at the end, if ``save_final``); metrics.json is rewritten at every checkpoint.
    With ``tensorboard`` process 0 writes TensorBoard events under ``out/tensorboard/``
    (:mod:`ppo_jax.run.events`). When ``interrupted()`` stops the job early (see
    :func:`train_batches`), the last completed batch is checkpointed whatever
    ``checkpoint_every`` and ``save_final`` say, and everything else is written as at the end
    (``job.start < config.num_batches`` then tells)."""
    job = prepare(start, devices=devices, announce=announce, init_from=init_from, env=env)
    ckpt_dir = checkpoint.run_checkpoints(out)
    progress = progress_factory(job.start) if progress_factory else None
    events = None  # made at the first batch: a job stopped before it leaves no files
    first = job.start

    def on_batch(i, m, ev):
        nonlocal events
        if progress is not None:
            progress(i, m, ev)
        if tensorboard and jax.process_index() == 0:
            if events is None:
                from ppo_jax.run.events import EventLog

                events = EventLog(out, job.runs, first * job.trainer.config.frames_per_batch)
            events.add_latest(job.log)

    def save(j: Job) -> None:
        # metrics first: a run killed in between resumes from the older checkpoint and cuts
        # the metrics back to it; never the other way round (a checkpoint ahead of its metrics)
        j.log.write(out, curves=False)
        if events is not None:
            events.flush()
        checkpoint.save(ckpt_dir, j.trainer, j.states, runs=j.runs, keep=keep,
                        extra_meta=checkpoint_meta(j.log))

    try:
        train_batches(job, on_batch=on_batch, on_checkpoint=save,
                      checkpoint_every=checkpoint_every, interrupted=interrupted)
    finally:
        if progress is not None:
            progress.close()
    stopped_early = job.start < job.trainer.config.num_batches and not job.log.all_failed
    if stopped_early and job.start == first:  # stopped before its first batch: nothing new
        return job.log.summary(), job
    if save_final or stopped_early:
        save(job)
    summary = job.log.write(out, curves=True)
    if events is not None:
        events.close()
    return summary, job


def checkpoint_meta(log: RunLog) -> dict[str, Any]:
    """Per-run facts of a checkpoint that the state alone does not show."""
    return {
        "last_eval_return": [s[-1] if s else None for s in log.history["eval_return"]],
        "last_eval_frames": [s[-1] if s else None for s in log.history["eval_frames"]],
        "failed_batch": log.failed,
    }


def fit(
    config: PPOConfig | None = None,
    *,
    num_seeds: int = 1,
    sweep: list[dict[str, Any]] | None = None,
    out: str | None = None,
    devices: int | str | None = None,
    checkpoint_every: int = 0,
    tensorboard: bool = True,
    on_batch: Callable[[int, BatchMetrics, EvalMetrics | None], None] | None = None,
    announce: Callable[[str], None] | None = None,
    env: Any = None,
) -> tuple[PPOState, dict[str, Any]]:
    """Train like ``scripts/train.py`` and return ``(states [R, ...], metrics)``: the final
    train state of every run (R = ``num_seeds`` times the points of ``sweep``) and the dict
    ``metrics.json`` holds. With ``out`` the run directory is written as the command writes
    it (metrics.json, curves.png, checkpoints); without, nothing is written. ``on_batch(i,
    metrics [R], eval [R] or None)`` is called after each batch, between program calls;
    ``tensorboard``: with ``out``, also write TensorBoard events there. ``env``: an env
    object of your own (see :func:`ppo_jax.core.train.make_train`); None: ``config.env``."""
    config = config or PPOConfig()
    if env is not None:
        config = config.replace(env=env.env_id)
    runs = Runs(config, num_seeds, sweep)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        summary, job = run_training(runs, out=out, devices=devices,
                                    checkpoint_every=checkpoint_every, announce=announce,
                                    tensorboard=tensorboard, env=env,
                                    progress_factory=None if on_batch is None
                                    else (lambda _: _Callback(on_batch)))
        return job.states, summary
    job = prepare(runs, devices=devices, announce=announce, env=env)
    train_batches(job, on_batch=on_batch)
    return job.states, job.log.summary()


class _Callback:
    """A plain ``on_batch`` function in the place of a progress bar."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, i, m, ev):
        self.fn(i, m, ev)

    def close(self):
        pass
