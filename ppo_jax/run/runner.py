"""Host driver of a training run (``scripts/train.py``, the benchmark's worker): compile the
run's programs (:mod:`ppo_jax.run.programs`), call them batch by batch, save checkpoints, write
``metrics.json`` and ``curves.png``.

The train state never leaves the device between batches: each call of the ``update`` program
takes the state (donated) and returns the next one; only the batch's metrics are read back,
one batch behind the device so that reading them never stalls it.

A :class:`Job` is R runs (:class:`~ppo_jax.run.runs.Runs`: seeds times sweep points) trained
together, laid out over a device mesh (:mod:`ppo_jax.run.parallel`); :func:`prepare` makes one,
new (from :class:`~ppo_jax.run.runs.Runs`) or resumed (from a
:class:`~ppo_jax.run.checkpoint.Saved`
checkpoint), and :func:`train_batches` drives it. In a multi-process job every process
runs this driver on the same programs; only process 0 writes ``metrics.json`` and
``curves.png``, and all of them take part in saving checkpoints.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from ppo_jax.run import checkpoint, host_eval, metrics, run_dir
from ppo_jax.run import device as device_choice
from ppo_jax.config import PPOConfig, check_config
from ppo_jax.envs.base import check_env_attributes
from ppo_jax import util
from ppo_jax.util import write_json
from ppo_jax.run.runs import Runs, labels
from ppo_jax.run.host_eval import HostEvaluatorFactory
from ppo_jax.core.normalization import describe_residue, residue_entries
from ppo_jax.core.optim import cosine_phase_step
from ppo_jax.run.parallel import barrier, check_fits, choose_devices, gather, make_layout
from ppo_jax.run.programs import Programs, build_programs, run_init
from ppo_jax.core.train import BatchMetrics, EvalMetrics, PPOState, Trainer, build_trainer


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
    written_by: str = "run_training"  # metrics.json's "written_by": what wrote the run
    init_from: str | None = None  # what the networks started from (None: initialized fresh)
    # where this job's evaluations run (eval_sim_label), and where each run's latest logged
    # one ran (a resumed job's may be from before it): evaluate.py replays it only there
    eval_sim: str | None = None
    last_eval_sim: list[str | None] = dataclasses.field(default_factory=list)
    # where the seconds before the first batch went: the env and networks built (or the
    # checkpoint restored), the programs loaded or compiled, the init program's run
    startup: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def config(self) -> PPOConfig:
        return self.runs.config

    @property
    def num_runs(self) -> int:
        return self.runs.num_runs

    def __post_init__(self):
        if not self.failed:
            self.failed = [None] * self.num_runs
        if not self.last_eval_sim:
            self.last_eval_sim = [None] * self.num_runs
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
                    self.last_eval_sim[s] = self.eval_sim

    def add_eval(self, i: int, ev: EvalMetrics) -> None:
        """Record the evaluation ``ev`` (``[R]`` as numpy) after batch ``i`` that landed
        after the batch itself was recorded (a host evaluation): at batch ``i``'s frames,
        in frame order, for every run that batch ``i`` left alive and finite (as
        :meth:`add_batch` records one)."""
        h = self.history
        frames = (i + 1) * self.config.frames_per_batch
        for s in range(self.num_runs):
            if self.failed[s] is not None and self.failed[s] <= i:
                continue
            at = bisect.bisect_right(h["eval_frames"][s], frames)
            h["eval_frames"][s].insert(at, frames)
            h["eval_return"][s].insert(at, float(np.asarray(ev.eval_return)[s]))
            h["eval_steps"][s].insert(at, int(np.asarray(ev.eval_steps)[s]))
            if at == len(h["eval_frames"][s]) - 1:
                self.last_eval_sim[s] = self.eval_sim

    def summary(self) -> dict[str, Any]:
        h = self.history
        last = [s[-1] if s else None for s in h["eval_return"]]
        failed = [f for f in self.failed if f is not None]
        runs = self.runs
        end = h["frames"][-1] if h["frames"] else 0
        fpb = self.config.frames_per_batch
        out = {
            "format": metrics.METRICS_FORMAT,
            "env_id": self.env_id,
            "written_by": self.written_by,
            "init_from": self.init_from,
            "eval_sim": self.eval_sim,
            # the most frames a run trained: a run stopped at NaN/Inf trained none of its
            # failed batch (its update was discarded)
            "total_frames": max(end if f is None else min(f * fpb, end) for f in self.failed),
            "num_seeds": runs.num_seeds,
            "seeds": list(range(self.config.seed, self.config.seed + runs.num_seeds)),
            "num_runs": runs.num_runs,
            "runs": runs.to_meta()["runs"],
            "layout": self.layout,
            "compile_seconds": round(self.compile_seconds, 3),
            "compiled_from_cache": self.from_cache,
            "compile": self.compile,
            "startup_seconds": {k: round(v, 3) for k, v in self.startup.items()},
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
            out["sweep_ranking"] = sweep_ranking(runs, h["eval_return"], self.failed)
        return out

    def point_series(self) -> list[tuple[str, dict[str, Any]]]:
        """The history split by sweep point: ``[(label, lists of that point's seeds)]``."""
        runs, h = self.runs, self.history
        if not runs.is_sweep:
            return [("ppo_jax", h)]
        return metrics.split_points(h, labels(runs.sweep), runs.num_seeds)

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


def sweep_ranking(runs: Runs, eval_returns: list[list[float]],
                  failed: list[int | None] | None = None) -> list[dict[str, Any]]:
    """The sweep's points ranked by final evaluation return (the mean over the point's seeds
    that trained to the end), then by best (the highest such seed-mean over the evaluation
    points). A seed stopped at NaN/Inf (``failed[r]`` not None) is left out of its point's
    numbers and counted in ``failed_seeds``; a point with a failed seed ranks after every
    point without one (it is the less stable setting), and a point with none left has no
    numbers. ``seeds``: how many seeds each point's numbers are the mean of."""
    failed = failed or [None] * runs.num_runs
    rows = []
    for p, overrides in enumerate(runs.sweep):
        members = range(p * runs.num_seeds, (p + 1) * runs.num_seeds)
        seeds = [eval_returns[r] for r in members if failed[r] is None]
        n = min((len(s) for s in seeds), default=0)
        if n == 0:
            final = best = std = None
        else:
            curve = np.mean([s[:n] for s in seeds], axis=0)
            finals = [s[n - 1] for s in seeds]
            final, best, std = float(curve[-1]), float(curve.max()), float(np.std(finals))
        rows.append({"point": p, **overrides, "final_eval_return": final,
                     "final_eval_return_std": std, "best_eval_return": best,
                     "seeds": len(seeds), "failed_seeds": runs.num_seeds - len(seeds)})

    def key(r):
        final, best = r["final_eval_return"], r["best_eval_return"]
        return (r["failed_seeds"] > 0, -(final if final is not None else -np.inf),
                -(best if best is not None else -np.inf))

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
    platform: str = "cpu"  # where its programs run: with the config, where it evaluates


def prepare(
    start: Runs | checkpoint.Saved,
    *,
    devices: int | str | None = None,
    announce: Callable[[str], None] | None = None,
    init_from: tuple[Any, Any] | None = None,
    env: Any = None,
    host_evaluator: HostEvaluatorFactory | None = None,
    init_from_label: str | None = None,
) -> Job:
    """Compile the programs and initialize the device state of a new job (``start``: its
    :class:`~ppo_jax.run.runs.Runs`), or restore a saved one (``start``: a
    :class:`~ppo_jax.run.checkpoint.Saved` checkpoint; its run directory's ``metrics.json``
    gives the history so far), over ``devices`` devices (see
    :func:`ppo_jax.run.parallel.choose_devices`; raises its ``LayoutError``, and
    ``MemoryNeedError``, a ``LayoutError``, where the runs cannot fit the devices' memory:
    checked before compiling, after a resumed job's states are restored). ``init_from`` =
    ``(Params, ObsNormStats)`` (e.g. from a TorchRL export) replaces every new run's freshly
    initialized networks and normalization statistics (``init_from_label``: what they came
    from, for ``metrics.json`` and the checkpoints). ``env``: an env object of the user's
    own (it must meet :mod:`ppo_jax.envs.base`'s protocol; None: the registry's
    ``config.env``). ``host_evaluator``: the factory :func:`train_batches` will be given (it
    decides which evaluation program the job needs)."""
    if jax.config.jax_enable_x64:
        raise ValueError("ppo_jax's programs are float32: train with JAX_ENABLE_X64 unset")
    resume = isinstance(start, checkpoint.Saved)
    if resume and init_from is not None:
        raise ValueError("init_from starts a new job: it cannot be used to resume one")
    runs = start.runs if resume else start
    n_dev = choose_devices(devices, runs.num_runs, runs.config.num_envs)
    layout = make_layout(runs.num_runs, runs.config.num_envs, n_dev)
    t = time.perf_counter()
    if resume:
        trainer, states, _ = checkpoint.restore(start, layout=layout, env=env)
        first = start.step
        need = ("update", "evaluate")
    else:
        trainer = build_trainer(runs.config, layout, env)  # (its runs were checked)
        first = 0
        need = ("init", "update", "evaluate")
    platform = jax.default_backend()
    if not host_eval.on_device(runs.config, platform):  # evaluated on the host
        sim = host_eval.decide(runs.config, trainer.env, platform, host_evaluator)
        # one line, before compiling, where it cannot run (also for a caller that did not
        # check, as fit and run_training do; train_batches may be given the evaluator)
        host_eval.check_eval_sim(runs.config, trainer.env, host_evaluator, factory_later=True)
        need = tuple(n for n in need if n != "evaluate") + (
            ("evaluate_cpu",) if sim == "mjx-cpu" else ())
    check_fits(runs.num_runs, trainer.least_bytes_per_run(), n_dev)
    startup = {"restore_s" if resume else "env_build_s": time.perf_counter() - t}
    if init_from is not None:
        check_init_from(trainer, init_from)
    t = time.perf_counter()
    programs = build_programs(trainer, runs.num_runs, announce=announce, need=need)
    startup["programs_s"] = time.perf_counter() - t
    barrier("programs_ready")  # the processes of a job start the first batch together
    log = RunLog(runs=runs, env_id=trainer.env.env_id)
    log.layout = None if layout is None else layout.describe()
    log.compile = programs.report()
    log.compile_seconds = programs.compile_seconds
    log.from_cache = programs.from_cache
    log.startup = startup
    log.init_from = start.meta.get("init_from") if resume else (
        None if init_from is None else init_from_label or "given networks")
    if resume and start.meta.get("last_eval_sim"):  # (checked: one text or null per run)
        log.last_eval_sim = list(start.meta["last_eval_sim"])
    if resume:
        path = os.path.join(os.path.dirname(start.directory), "metrics.json")
        history = metrics.read_history(path, runs.num_runs, first)
        if history is not None:
            log.history = history
        log.failed = [None if f < 0 else int(f) for f in gather(states.failed_batch)]
    else:
        t = time.perf_counter()
        states, stats_s = run_init(programs, trainer, runs)
        if stats_s is not None:
            log.startup["host_stats_s"] = stats_s
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
        log.startup["init_run_s"] = time.perf_counter() - t
        if announce is not None and jax.process_count() == 1:
            residue = residue_entries(states.obs_stats)  # [R, obs_dim], read once
            if residue:
                announce(f"note: {describe_residue(residue)}")
    return Job(runs=runs, trainer=trainer, programs=programs, states=states, log=log,
               start=first, platform=platform)


class InitFromError(ValueError):
    """``init_from``'s networks or statistics do not fit the job's (one line)."""


def check_init_from(trainer, init_from: tuple[Any, Any]) -> None:
    """:class:`InitFromError` naming the first entry of ``init_from`` = ``(Params,
    ObsNormStats)`` whose shape is not the job's (e.g. an export of another env), or
    refusing it for ``obs_norm="running"`` (fixed statistics carry no moments to update)."""
    params, stats = init_from
    if trainer.running_stats:
        raise InitFromError("a TorchRL start carries fixed statistics, not the observation "
                            "moments that obs_norm 'running' keeps updating: use 'reference' "
                            "or 'safe'")
    want = jax.eval_shape(trainer.init_params, jax.random.key(0))
    env = trainer.env
    got_obs = tuple(np.shape(stats.loc))
    if got_obs != (env.observation_size,):
        raise InitFromError(
            f"its normalization statistics are for {got_obs[0] if got_obs else '?'} "
            f"observation entries; {env.env_id} has {env.observation_size}")
    flat_want = jax.tree_util.tree_flatten_with_path(want)[0]
    flat_got = jax.tree_util.tree_leaves(params)
    if len(flat_want) != len(flat_got):
        raise InitFromError("its networks have another structure than the config's")
    for (path, w), g in zip(flat_want, flat_got):
        if tuple(np.shape(g)) != tuple(w.shape):
            raise InitFromError(
                f"network entry {jax.tree_util.keystr(path)} has shape {tuple(np.shape(g))}; "
                f"the config's networks on {env.env_id} need {tuple(w.shape)}")


def train_batches(
    job: Job,
    *,
    stop: int | None = None,
    on_batch: Callable[[int, BatchMetrics, EvalMetrics | None], None] | None = None,
    on_checkpoint: Callable[[Job], None] | None = None,
    checkpoint_every: int = 0,
    interrupted: Callable[[], bool] | None = None,
    host_evaluator: HostEvaluatorFactory | None = None,
    on_eval: Callable[[int, EvalMetrics], None] | None = None,
) -> Job:
    """Run batches ``job.start ..`` up to ``stop`` (default: the config's last), until every
    run has failed, or until ``interrupted()`` says so (asked before each batch; the batches
    already started finish and are recorded). Each batch's metrics go to ``job.log`` and
    ``on_batch``; with ``checkpoint_every = N``, ``on_checkpoint(job)`` follows every N-th
    batch but the last. ``job.start`` is then the next batch to run.

    Where the config's ``eval_sim`` puts the evaluations on the host
    (:mod:`ppo_jax.run.host_eval`; ``host_evaluator``: the factory of the evaluator, e.g.
    :class:`ppo_jax.eval.host.MujocoEvaluator`), ``on_batch`` gets ``None`` for an
    evaluation batch's evaluation, and each evaluation goes to ``job.log`` and
    ``on_eval(i, eval [R])`` when it lands, after its batch's metrics; the outstanding ones
    are waited for before each checkpoint and at the end."""
    cfg = job.trainer.config
    stop = cfg.num_batches if stop is None else min(stop, cfg.num_batches)
    update, evaluate = job.programs.update, job.programs.evaluate
    layout = job.trainer.layout
    scalar = (lambda x: x) if layout is None else lambda x: layout.put(x, layout.replicated)
    rate = scalar(cosine_phase_step(cfg))  # the lr schedule's phase step: an input of `update`
    pending: list[tuple[int, Any, Any]] = []
    host = None  # the host evaluations in flight (eval_sim): None while MJX evaluates
    sim = host_eval.choose(cfg, job.trainer.env, job.platform, host_evaluator)
    job.log.eval_sim = eval_sim_label(sim, job.platform) if cfg.evaluates else None
    if sim != "mjx":
        host = host_eval.HostEvaluations(
            host_evaluator(job.trainer, job.runs.num_runs) if sim == "mujoco" else
            host_eval.MjxCpuEvaluator(job.trainer, job.runs.num_runs,
                                      program=job.programs.evaluate_cpu))
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

    def land(wait: bool) -> None:  # record the host evaluations landed (all: wait)
        if host is None:
            return
        recorded = job.log.history["batch"]
        for j, ev in host.landed(recorded[-1] if recorded else None, wait):
            job.log.add_eval(j, ev)
            if on_eval is not None:
                on_eval(j, ev)

    i = job.start
    try:
        while i < stop and not job.log.all_failed and not (interrupted and interrupted()):
            states, m = update(job.states, scalar(np.int32(i)), rate)
            job.states = states
            ev = None
            if cfg.is_eval_batch(i) and host is not None:
                host.submit(states, i)  # before the next update donates `states`
            elif cfg.is_eval_batch(i):
                ev = evaluate(states, scalar(np.int32(i)))
            pending.append((i, m, ev))
            i += 1
            drain(keep=1)  # read batch i-1 while batch i runs
            land(wait=False)
            if checkpoint_every and i % checkpoint_every == 0 and i < stop:
                drain(keep=0)
                land(wait=True)  # a checkpoint's metrics.json holds its evaluations
                job.start = i
                if on_checkpoint is not None and not job.log.all_failed:
                    count_time()
                    on_checkpoint(job)
        drain(keep=0)
        land(wait=True)
        jax.block_until_ready(job.states)
    finally:
        if host is not None:
            host.close()  # nothing outstanding, unless the loop stopped on an exception
        count_time()
    job.start = i
    return job


def run_training(
    start: Runs | checkpoint.Saved,
    *,
    out: str,
    devices: int | str | None = None,
    checkpoint_every: int = 0,
    keep: int = checkpoint.DEFAULT_KEEP,
    save_final: bool = True,
    tensorboard: bool = True,
    progress_factory: Callable[[Job], Any] | None = None,
    announce: Callable[[str], None] | None = None,
    init_from: tuple[Any, Any] | None = None,
    interrupted: Callable[[], bool] | None = None,
    env: Any = None,
    host_evaluator: HostEvaluatorFactory | None = None,
    written_by: str = "run_training",
    init_from_label: str | None = None,
) -> tuple[dict[str, Any], Job]:
    """Train a new job (``start``: its runs) or continue a saved one (``start``: its
    checkpoint) into the run directory ``out``; returns (the summary written to
    metrics.json, the finished :class:`Job`). Checkpoints every ``checkpoint_every`` batches,
    the last batch included where it falls on that schedule, and at the end if ``save_final``
    (``checkpoint_every`` 0: only then); metrics.json is rewritten at every checkpoint.
    With ``tensorboard`` process 0 writes TensorBoard events under ``out/tensorboard/``
    (:mod:`ppo_jax.run.events`). When ``interrupted()`` stops the job early (see
    :func:`train_batches`), the last completed batch is checkpointed whatever
    ``checkpoint_every`` and ``save_final`` say, and everything else is written as at the end
    (``job.start < config.num_batches`` then tells). ``host_evaluator``: see
    :func:`train_batches` (an evaluation that lands late reaches the progress bar's
    ``add_eval(i, eval)``, TensorBoard and metrics.json then). ``progress_factory(job)``:
    the progress bar, made once the job is prepared. ``written_by``: what
    metrics.json says wrote the run (``"scripts/train.py"``, ``"fit"``);
    ``init_from_label``: as :func:`prepare`'s."""
    host_eval.check_eval_sim(start.config, env, host_evaluator)
    job = prepare(start, devices=devices, announce=announce, init_from=init_from, env=env,
                  host_evaluator=host_evaluator, init_from_label=init_from_label)
    job.log.written_by = written_by
    ckpt_dir = checkpoint.run_checkpoints(out)
    progress = progress_factory(job) if progress_factory else None
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

    def on_eval(i, ev):  # a host evaluation landed, after its batch
        if progress is not None and hasattr(progress, "add_eval"):
            progress.add_eval(i, ev)
        if events is not None:
            events.add_eval(job.log, i)

    def save(j: Job) -> None:
        # metrics first: a run killed in between resumes from the older checkpoint and cuts
        # the metrics back to it; never the other way round (a checkpoint ahead of its metrics)
        j.log.write(out, curves=False)
        if events is not None:
            events.flush()
        checkpoint.save(ckpt_dir, j.trainer, j.states, runs=j.runs, keep=keep,
                        extra_meta={**checkpoint_meta(j.log), checkpoint.CHECKPOINTING: {
                            "every": checkpoint_every, "keep": keep,
                            "save_final": bool(save_final)}})

    try:
        try:
            train_batches(job, on_batch=on_batch, on_checkpoint=save,
                          checkpoint_every=checkpoint_every, interrupted=interrupted,
                          host_evaluator=host_evaluator, on_eval=on_eval)
        finally:
            if progress is not None:
                progress.close()
        stopped_early = job.start < job.trainer.config.num_batches and not job.log.all_failed
        if stopped_early and job.start == first:  # stopped before its first batch: nothing new
            return job.log.summary(), job
        # the last batch, where it falls on checkpoint_every's schedule, is saved whatever
        # save_final says (the loop leaves that one to this save)
        on_schedule = (checkpoint_every and job.start > first and not job.log.all_failed
                       and job.start % checkpoint_every == 0)
        if save_final or stopped_early or on_schedule:
            save(job)
        summary = job.log.write(out, curves=True)
    except BaseException:
        if events is not None:  # its writer threads end with it; the exception is the news
            with contextlib.suppress(Exception):
                events.close()
        raise
    if events is not None:
        events.close()
    return summary, job


def eval_sim_label(sim: str, platform: str) -> str:
    """Where evaluations of ``sim`` (:func:`ppo_jax.run.host_eval.choose`) run, for a job
    training on ``platform``: ``"mujoco"`` (MuJoCo C), or ``"mjx:<platform>"`` for the MJX
    program and the device it runs on (``mjx-cpu``: ``"mjx:cpu"``), which its rounding
    depends on."""
    if sim == "mujoco":
        return "mujoco"
    return f"mjx:{'cpu' if sim == 'mjx-cpu' else platform}"


def checkpoint_meta(log: RunLog) -> dict[str, Any]:
    """Per-run facts of a checkpoint that the state alone does not show."""
    return {
        "last_eval_return": [s[-1] if s else None for s in log.history["eval_return"]],
        "last_eval_frames": [s[-1] if s else None for s in log.history["eval_frames"]],
        "last_eval_sim": log.last_eval_sim,
        "failed_batch": log.failed,
        "init_from": log.init_from,  # (a resumed run's metrics.json says it still)
    }


# what a run writes in its directory once it ends, besides metrics.json and its checkpoints: a
# new run does not write over them (TensorBoard's events/ may be a crashed run's: they add up)
RUN_FILES = ("curves.png", "policy.mp4")


def run_files_in(out: str) -> tuple[list[str], list[str]]:
    """``(held, files)`` of the directory ``out``, which a new run must not write into when
    either is non-empty: ``held``, what marks a run there (``metrics.json``, the checkpoints;
    in a multi-process job only ``metrics.json``, which process 0 writes at the end, since
    the other processes may have made the checkpoints' directory already), and ``files``,
    the :data:`RUN_FILES` it holds."""
    held = [n for n in ("metrics.json", checkpoint.CHECKPOINTS)
            if os.path.exists(os.path.join(out, n))]
    if jax.process_count() > 1:
        held = [n for n in held if n == "metrics.json"]
    return held, [n for n in RUN_FILES if os.path.exists(os.path.join(out, n))]


def fit(
    config: PPOConfig | None = None,
    *,
    num_seeds: int = 1,
    sweep: list[dict[str, Any]] | None = None,
    out: str | None = None,
    devices: int | str | None = None,
    device: str = "auto",
    checkpoint_every: int = 0,
    keep: int = checkpoint.DEFAULT_KEEP,
    tensorboard: bool = True,
    on_batch: Callable[[int, BatchMetrics, EvalMetrics | None], None] | None = None,
    announce: Callable[[str], None] | None = None,
    env: Any = None,
    host_evaluator: HostEvaluatorFactory | None = None,
    on_eval: Callable[[int, EvalMetrics], None] | None = None,
) -> tuple[PPOState, dict[str, Any]]:
    """Train as ``scripts/train.py`` does and return every run's final state and metrics.

    Args:
      config: the configuration (None: the tutorial's, ``PPOConfig()``).
      num_seeds: seeds ``config.seed ..`` trained together in one vmapped program.
      sweep: grid points of sweepable fields, each a dict such as ``{"lr": 1e-4}``
        (:func:`ppo_jax.run.runs.parse_sweep` makes them from ``--sweep``'s specs; checked by
        :func:`ppo_jax.run.runs.check_sweep`), each trained with every seed; R =
        ``num_seeds`` x points runs in all.
      out: a run directory (a ``str`` or ``os.PathLike`` path) to write as the command
        writes it (metrics.json, curves.png, checkpoints); None writes nothing. ValueError
        where it holds a run, or lies inside a run's ``checkpoints/`` or ``tensorboard/``;
        :class:`~ppo_jax.run.run_dir.RunDirBusy` (a ValueError) where another process
        writes a run there (a run holds its directory while it writes).
      devices: how many devices to split the runs and envs over (a count, ``"all"``, None).
      device: ``"auto"``, ``"cpu"`` or ``"gpu"``, as ``--device`` (:mod:`ppo_jax.run.device`);
        chosen only before JAX starts its backends: then ``"auto"`` keeps the started one and
        a forced choice that differs raises :class:`~ppo_jax.run.device.DeviceError`. A job
        joined with ``jax.distributed.initialize`` before ``fit`` counts every process's GPUs.
      checkpoint_every: with ``out``, a checkpoint every N batches (0: at the end only).
      keep: with ``out``, the checkpoints kept (the last ``keep``; older ones are deleted as
        new ones are saved), as ``--keep``.
      tensorboard: with ``out``, also write TensorBoard events there.
      on_batch: ``on_batch(i, metrics [R], eval [R] or None)`` after each batch, between
        program calls. An exception it (or ``on_eval``) raises stops the run and reaches
        the caller; with ``out``, what was written before it stays (the checkpoints of
        ``checkpoint_every``), nothing more is.
      announce: gets the one-line messages (what ``auto`` chose, what is compiled).
      env: an env object of your own (see :func:`ppo_jax.core.train.make_train`); None:
        ``config.env``.
      host_evaluator: the factory of the host's evaluator
        (:class:`ppo_jax.eval.host.MujocoEvaluator`) for ``config.eval_sim`` ``'mujoco'``, or
        ``'auto'`` on an accelerator; without one, ``'auto'`` there evaluates with MJX on
        the host's CPU (``'mjx-cpu'``).
      on_eval: ``on_eval(i, eval [R])`` when a host evaluation lands (``on_batch`` then gets
        None for it).

    Returns:
      ``(states [R, ...], metrics)``: the final ``PPOState`` of every run and the dict
      ``metrics.json`` holds. A run stopped at NaN/Inf raises nothing (the others go on):
      its state is its last good one, and ``metrics["failed_batch_per_run"]`` says which
      runs stopped and at which batch (``scripts/train.py`` exits 1 then).
    """
    config = check_config(config)
    if env is not None:
        config = config.replace(env=check_env_attributes(env))
    runs = Runs(config, num_seeds, sweep)  # checked before JAX's platform is chosen
    checkpoint_every, keep, devices = _check_fit_arguments(
        checkpoint_every, keep, devices, tensorboard, on_batch=on_batch, on_eval=on_eval,
        announce=announce, host_evaluator=host_evaluator)
    if out is not None:
        out = _check_out(out, tensorboard)
    _choose_device(device, runs.num_runs, config.num_envs, devices, announce)
    if out is not None:
        # refused after it was made (the env, the devices, ...): no empty out left behind
        with run_dir.taken_back_if_empty(os.path.abspath(out),
                                         lead=jax.process_index() == 0), \
                run_dir.held_by_the_job(_made(out)):
            # held before it is looked into: no other run starts there after this one
            own, files = run_files_in(out)
            if own:
                cure = "" if checkpoint.CHECKPOINTS not in own else (
                    ", or continue it with resume(out" + (", env=...)" if env is not None
                                                          else ") or scripts/train.py --resume"))
                raise ValueError(f"{out} already holds a run ({', '.join(own)}): choose "
                                 f"another out{cure}")
            if files:
                raise ValueError(f"{out} holds files a run writes ({', '.join(files)}), which "
                                 "this run would replace: move them away or choose another out")
            summary, job = run_training(
                runs, out=out, devices=devices, checkpoint_every=checkpoint_every, keep=keep,
                announce=announce, tensorboard=tensorboard, env=env,
                host_evaluator=host_evaluator, written_by="fit",
                progress_factory=None if on_batch is None and on_eval is None
                else (lambda _: _Callback(on_batch, on_eval)))
        return job.states, summary
    host_eval.check_eval_sim(config, env, host_evaluator)
    job = prepare(runs, devices=devices, announce=announce, env=env,
                  host_evaluator=host_evaluator)
    train_batches(job, on_batch=on_batch, host_evaluator=host_evaluator, on_eval=on_eval)
    return job.states, job.log.summary()


def _made(out: str) -> str:
    """``out``, made (ValueError, one line, where it cannot be)."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:  # a file on its path, no permission, ...
        raise ValueError(f"cannot make the run directory {out}: "
                         f"{run_dir.not_made_because(out, e)}") from None
    return out


def _choose_device(device: str, num_runs: int, num_envs: int, devices, announce) -> None:
    """``device`` applied to JAX (:mod:`ppo_jax.run.device`), before it starts its backends;
    a job the caller joined with ``jax.distributed.initialize`` spans every process's GPUs."""
    processes = device_choice.joined_processes()
    per_device = device_choice.envs_per_device(num_runs, num_envs, devices, processes)
    message = device_choice.apply(device_choice.choose(
        device, per_device, device_choice.gpus_asked(devices, processes), what="device",
        asked_by=device_choice.gpus_asked_by(devices, processes, flag="devices=")))
    if message and announce is not None:
        announce(message)


def resume(
    out: str,
    *,
    env: Any = None,
    devices: int | str | None = None,
    device: str = "auto",
    checkpoint_every: int | None = None,
    keep: int | None = None,
    tensorboard: bool = True,
    on_batch: Callable[[int, BatchMetrics, EvalMetrics | None], None] | None = None,
    announce: Callable[[str], None] | None = None,
    host_evaluator: HostEvaluatorFactory | None = None,
    on_eval: Callable[[int, EvalMetrics], None] | None = None,
) -> tuple[PPOState, dict[str, Any]]:
    """Continue the run saved in ``out`` from its latest checkpoint to its ``total_frames``,
    as ``scripts/train.py --resume`` does (bit-identical to a run that was not stopped), for
    a run of any env: a run of an env of your own continues with ``env=``, the env object it
    trained on (which the command cannot build).

    Args:
      out: the run directory (or its ``checkpoints/``) that ``fit(out=...)`` or the command
        wrote, stopped by Ctrl-C, a signal, an exception of ``on_batch`` or a crash after a
        checkpoint; it continues there.
      checkpoint_every, keep: as :func:`fit`'s; None: as the run checkpointed.
      env, devices, device, tensorboard, on_batch, announce, host_evaluator, on_eval: as
        :func:`fit`'s (the config is the checkpoint's).

    Returns:
      ``(states [R, ...], metrics)`` as :func:`fit`: the whole run's metrics, the batches
      before the checkpoint included. A finished run (or one whose runs all stopped at
      NaN/Inf) is not trained further: its saved states and ``metrics.json`` as they are.

    Raises:
      CheckpointError: no checkpoint in ``out``, or one that does not fit (one line).
      ValueError: where the run cannot continue there (one line, before anything compiles).
    """
    if not isinstance(out, (str, os.PathLike)) or not isinstance(os.fspath(out), str):
        raise TypeError(f"out must be a path (a str or os.PathLike), got {out!r}")
    out = checkpoint.run_directory(os.fspath(out))
    every, kept, devices = _check_fit_arguments(
        0 if checkpoint_every is None else checkpoint_every, 1 if keep is None else keep,
        devices, tensorboard, on_batch=on_batch, on_eval=on_eval, announce=announce,
        host_evaluator=host_evaluator)
    # the device first (reading the checkpoint starts JAX): from its metadata, read as JSON
    meta = checkpoint.peek_meta(out)
    try:
        runs, envs = int(meta.get("num_runs", 1)), int(meta["config"]["num_envs"])
    except (AttributeError, KeyError, TypeError, ValueError):
        runs, envs = 1, 1  # unreadable: open_saved says what is wrong, in one line
    _choose_device(device, max(1, runs), max(1, envs), devices, announce)
    with run_dir.held_by_the_job(out, None):  # before its checkpoint is read
        return _resume(out, every, kept, env=env, devices=devices,
                       checkpoint_every=checkpoint_every, keep=keep, tensorboard=tensorboard,
                       on_batch=on_batch, announce=announce, host_evaluator=host_evaluator,
                       on_eval=on_eval)


def _resume(out, every, kept, *, env, devices, checkpoint_every, keep, tensorboard,
            on_batch, announce, host_evaluator, on_eval):
    saved = checkpoint.open_saved(out)
    failed = [checkpoint.run_progress(saved.meta, r)[2] for r in range(saved.runs.num_runs)]
    if saved.step >= saved.config.num_batches or all(f is not None for f in failed):
        _, states, _ = checkpoint.restore(saved, env=env)
        path = os.path.join(out, "metrics.json")  # (the job wrote it before the checkpoint)
        return states, metrics.read_json(path) if os.path.exists(path) else {}
    host_eval.check_eval_sim(saved.config, env, host_evaluator)
    problem = run_dir.events_problem(out) if tensorboard else None
    if problem is not None:
        raise ValueError(f"{problem}, or pass tensorboard=False")
    check_resumable(saved, out)
    saved_every, saved_keep = checkpoint.checkpointing(saved)
    save_final = checkpoint.saves_final(saved)
    summary, job = run_training(
        saved, out=out, devices=devices,
        checkpoint_every=saved_every if checkpoint_every is None else every,
        keep=saved_keep if keep is None else kept, save_final=save_final,
        announce=announce, tensorboard=tensorboard,
        env=env, host_evaluator=host_evaluator, written_by="resume",
        progress_factory=None if on_batch is None and on_eval is None
        else (lambda _: _Callback(on_batch, on_eval)))
    return job.states, summary


def check_resumable(saved: checkpoint.Saved, out: str, video: bool = False) -> None:
    """ValueError (one line, before anything compiles) where the job saved in ``out`` cannot
    continue there: a ``metrics.json`` whose history it would extend cannot be read, a
    folder named like a checkpoint that is not one (where it saves, or what orbax would count
    and delete), a folder where it writes a file at its end (``policy.mp4``: with
    ``video``)."""
    path = os.path.join(out, "metrics.json")
    try:
        metrics.read_history(path, saved.runs.num_runs, saved.step)
    except checkpoint.CheckpointError as e:
        raise ValueError(str(e)) from None
    except metrics.MetricsError as e:
        raise ValueError(f"{e} (the checkpoints are intact: move it away to resume without "
                         "the history before them)") from None
    foreign = checkpoint.foreign_steps(saved.directory)
    if foreign:
        raise ValueError(f"{os.path.join(saved.directory, foreign[0])} is not a checkpoint but "
                         "is named like one, where the run saves its own: move it away")
    for name in run_dir.RUN_OWN_FILES:
        if os.path.isdir(os.path.join(out, name)) and (video or name != "policy.mp4"):
            raise ValueError(f"{os.path.join(out, name)} is a directory, where the run writes "
                             "its file: move it away")


def _check_fit_arguments(checkpoint_every, keep, devices, tensorboard, **functions):
    """:func:`fit`'s counts as plain ints (a numpy integer is not JSON: the metadata), its
    switch and its functions, or one line naming the argument that is wrong (before anything
    is written)."""
    if not isinstance(tensorboard, (bool, np.bool_)):  # "no" would be true
        raise TypeError(f"tensorboard must be True or False, got {tensorboard!r}")
    for name, value, least in (("checkpoint_every", checkpoint_every, 0), ("keep", keep, 1)):
        if not util.is_whole_number(value) or value < least:
            raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    named = devices is None or (isinstance(devices, str) and devices == "all")
    if not (named or (util.is_whole_number(devices) and devices >= 1)):
        raise ValueError(f"devices must be a whole number >= 1, 'all' or None, got "
                         f"{devices!r}")
    for name, fn in functions.items():
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a function or None, got {fn!r}")
    return int(checkpoint_every), int(keep), devices if named else int(devices)


def _check_out(out: Any, tensorboard: bool) -> str:
    """:func:`fit`'s ``out`` as a ``str``, or one line where a run cannot be written there
    (before anything is written): not a text path, inside another run's own folders, a
    TensorBoard folder it cannot write into."""
    if not isinstance(out, (str, os.PathLike)) or not isinstance(os.fspath(out), str):
        raise TypeError(f"out must be a path (a str or os.PathLike), got {out!r}")
    out = os.fspath(out)
    if not out.strip():
        raise ValueError("out must not be empty (None writes nothing)")
    # (not UTF-8: orbax could not save its checkpoint, after the whole run)
    for problem in (run_dir.utf8_problem(out, "out"), run_dir.inside_a_run(out, "out")):
        if problem is not None:
            raise ValueError(problem)
    problem = run_dir.events_problem(out) if tensorboard else None
    if problem is not None:
        raise ValueError(f"{problem}, or pass tensorboard=False")
    return out


class _Callback:
    """Plain ``on_batch`` / ``on_eval`` functions in the place of a progress bar."""

    def __init__(self, fn, on_eval=None):
        self.fn, self.on_eval = fn, on_eval

    def __call__(self, i, m, ev):
        if self.fn is not None:
            self.fn(i, m, ev)

    def add_eval(self, i, ev):
        if self.on_eval is not None:
            self.on_eval(i, ev)

    def close(self):
        pass
