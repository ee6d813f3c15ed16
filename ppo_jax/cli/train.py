#!/usr/bin/env python
"""Train PPO on an MJX env (InvertedDoublePendulum-v4 unless --env) as compiled JAX programs.

    python scripts/train.py --out runs/demo                       # the tutorial: 10k frames
    python scripts/train.py --env HalfCheetah-v4 --total-frames 1000000 --out runs/hc  # another env
    python scripts/train.py --total-frames 1000000 --out runs/1M  # a full run
    python scripts/train.py --num-envs 16 --frames-per-batch 16000 --minibatch-size 1024 \
        --total-frames 1008000 --num-seeds 4 --out runs/16envs
    python scripts/train.py --checkpoint-every 10 --out runs/ck ; python scripts/train.py --resume runs/ck
    python scripts/train.py --preset fast --num-seeds 5 --out runs/fast        # 1024 envs
    python scripts/train.py --sweep lr=1e-4,3e-4 --sweep clip_epsilon=0.1,0.2 --num-seeds 2 \
        --out runs/sweep                                                       # 4 configs x 2 seeds

Writes OUT/metrics.json, OUT/curves.png, OUT/tensorboard/, OUT/policy.mp4 and the final
checkpoint under OUT/checkpoints/ (more with --checkpoint-every): docs/outputs.md.
Where JAX sees a GPU, a job with many envs trains there and a latency-bound one (few envs)
on the CPU (``--device``). ``scripts/train.py`` and the
``ppo-jax-train`` console script run :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import threading
from typing import Any, Callable

import numpy as np

from ppo_jax.cli import common as cli
from ppo_jax.run import distributed
from ppo_jax.run.run_dir import (RUN_FOLDERS, RunDirBusy, events_problem, first_missing,
                                  held_by_the_job, remove_empty)
from ppo_jax.config import PRESETS, PPOConfig
from ppo_jax.eval.gl import default_offscreen_backend


DEFAULT_OUT = "runs/train"


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(
        prog="train.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=cli.DefaultsHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument("--out", default=argparse.SUPPRESS,
                     help=f"output directory (default: {DEFAULT_OUT}; with --resume: DIR)")
    run.add_argument("--preset", choices=tuple(PRESETS), default=None,
                     help="base configuration, which the PPOConfig flags then change: "
                          + "; ".join(f"{k}: {v[0]}" for k, v in PRESETS.items()))
    run.add_argument("--num-seeds", type=int, default=None,
                     help="train seeds seed..seed+K-1 together in one vmapped program "
                          "(default 1, or the saved number with --resume)")
    run.add_argument("--sweep", action="append", default=[], metavar="FIELD=V1,V2,...",
                     help="train every value of FIELD (repeat for a grid; times the seeds) in "
                          "the same program: lr, clip_epsilon, gamma, lmbda, entropy_coeff, "
                          "critic_coeff, max_grad_norm")
    run.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                     help="where to train: auto takes the CPU for a latency-bound job (fewer "
                          "than ~32 envs per device, an estimate) even where a GPU is present, "
                          "else JAX's default device; cpu and gpu force one (docs/devices.md)")
    run.add_argument("--devices", default=None, metavar="N|all",
                     help="devices to split the runs and envs over (default: every GPU/TPU "
                          "the job splits over; 1 on a CPU)")
    run.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                     help="save a checkpoint every N batches (default 0: one call for the "
                          "whole run; with --resume, the run's own)")
    run.add_argument("--keep", type=int, default=None, metavar="K",
                     help="checkpoints to keep (default 3; with --resume, the run's own)")
    run.add_argument("--save-final", action=argparse.BooleanOptionalAction,
                     default=None, help="save a checkpoint at the end of the run (without "
                                        "it, the last batch is saved only where it falls on "
                                        "--checkpoint-every's schedule; default: save; with "
                                        "--resume, as the run did)")
    run.add_argument("--resume", metavar="DIR", type=cli.nonempty,
                     help="continue the run saved in DIR (its --out) to its total_frames")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                     help="write TensorBoard events of every run under OUT/tensorboard/ while "
                          "training (tensorboard --logdir OUT)")
    run.add_argument("--video", action=argparse.BooleanOptionalAction, default=True,
                     help="write OUT/policy.mp4: the final policy's evaluation episode (needs an "
                          "offscreen GL context: MUJOCO_GL=egl, or osmesa with libosmesa6)")
    run.add_argument("--init-from-torchrl", metavar="FILE", type=cli.nonempty,
                     help="start from the actor, critic and ObservationNorm statistics of a "
                          "TorchRL export (scripts/export_torchrl.py's format; torchrl extra)")
    cli.add_compile_cache_flags(p)
    distributed.add_flags(p)
    cli.add_config_flags(p)
    return p


class Progress:
    """tqdm bar over frames, described like the tutorial's; updated between batches. Its
    numbers are the mean over the runs ``metrics.json`` records them for: with the job's
    ``log`` (:class:`~ppo_jax.run.runner.RunLog`), a run stopped at NaN/Inf counts in the
    batch it failed at (its numbers there are what went non-finite) and is left out after
    it, and its evaluations from that batch on."""

    def __init__(self, config: PPOConfig, start_batch: int, enabled: bool, log=None):
        self.config = config
        self.log = log
        self.bar = None
        self.init_reward = None
        self.init_eval = None
        self.eval_str = ""
        self.batch_str = ""
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=config.total_frames, initial=start_batch * config.frames_per_batch,
                            unit="frames", dynamic_ncols=True)

    def __call__(self, i, m, ev):
        """After batch ``i``: metrics ``m`` ``[K]``, evaluation ``ev`` ``[K]`` or None."""
        if self.bar is None:
            return
        live = self._live(i, len(np.asarray(m.reward)), at_batch=True)
        if ev is not None:
            evaluated = self._live(i, len(np.asarray(ev.eval_return)))
            if evaluated.any():  # (none: the last runs failed at this batch)
                self._eval(ev, evaluated)
        if live.any():
            r = float(np.nanmean(np.asarray(m.reward)[live]))
            if self.init_reward is None:
                self.init_reward = r
            self.batch_str = ", ".join((
                f"average reward={r: 4.4f} (init={self.init_reward: 4.4f})",
                f"step count (max): {int(np.max(np.asarray(m.step_count)[live]))}",
                f"lr policy: {float(np.mean(np.asarray(m.lr)[live])): 4.4f}",
            ))
        self.bar.set_description(self._desc())
        self.bar.update(self.config.frames_per_batch)

    def add_eval(self, i, ev):
        """An evaluation (after batch ``i``) that landed after its batch (``--eval-sim
        mujoco``): shown from now on."""
        if self.bar is None:
            return
        live = self._live(i, len(np.asarray(ev.eval_return)))
        if live.any():
            self._eval(ev, live)
            self.bar.set_description(self._desc())

    def _live(self, i: int, runs: int, at_batch: bool = False) -> np.ndarray:
        """``[runs]``: the runs ``metrics.json`` records batch ``i``'s evaluation for (those
        that batch left training), or (``at_batch``) its metrics for (also a run that failed
        at it)."""
        if self.log is None:
            return np.ones(runs, bool)
        return np.array([f is None or f > i or (at_batch and f == i)
                         for f in self.log.failed], bool)

    def _eval(self, ev, live):
        er = float(np.mean(np.asarray(ev.eval_return)[live]))
        if self.init_eval is None:
            self.init_eval = er
        self.eval_str = (f"eval cumulative reward: {er: 4.4f} (init: {self.init_eval: 4.4f}), "
                         f"eval step-count: {int(np.max(np.asarray(ev.eval_steps)[live]))}")

    def _desc(self) -> str:
        return ", ".join(s for s in (self.eval_str, self.batch_str) if s)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class StopRequest:
    """SIGINT and SIGTERM while a single-process job trains: the first asks it to stop after
    the batch in progress (it then saves everything, see ``runner.run_training``); a second
    exits at once, leaving what was saved intact (every file is written atomically; orbax
    lists a checkpoint only once it is complete). Called (before each batch), it says
    whether a stop was asked. A signal before the first call (while the programs compile or
    the runs initialize, when nothing has been written and there is nothing to save) exits
    at once: a Ctrl-C does not wait minutes for a compile to finish.

    A multi-process job keeps Python's default handling: its processes would see a signal at
    different batches and wait on each other's collectives."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True, before_early_exit: Callable[[], None] | None = None):
        self.enabled = enabled
        self.before_early_exit = before_early_exit  # e.g. remove the --out this command made
        self.signum: int | None = None
        self.training = False  # called once: the first batch is about to start
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False

    def __call__(self) -> bool:
        self.training = True
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if not self.training:  # compiling or initializing: nothing to save
            if self.before_early_exit is not None:
                with contextlib.suppress(Exception):
                    self.before_early_exit()
            cli.exit_with_one_line(
                f"train.py: interrupted: {signal.Signals(signum).name} before the first batch "
                "(while compiling or initializing): nothing was written", 128 + signum)
        if self.signum is not None:
            cli.exit_with_one_line(
                f"train.py: interrupted: {signal.Signals(signum).name} again: stopped at once; "
                f"the last saved checkpoint is intact", 128 + signum)
        self.signum = signum

    def interrupted(self, job, out: str) -> cli.Interrupted:
        """The one line (and exit status 128 + signal) of a job stopped by the signal."""
        name = signal.Signals(self.signum).name
        code = 128 + self.signum
        if job.log.batches == 0:
            return cli.Interrupted(f"{name} before the first batch: nothing was written", code)
        frames = job.start * job.trainer.config.frames_per_batch
        return cli.Interrupted(
            f"{name}: saved {out} after batch {job.start - 1} ({frames} frames); continue with: "
            f"python scripts/train.py --resume {shlex.quote(out)}", code)


def _devices_flag(value: str | None) -> int | str | None:
    if value is None or value == "all":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise cli.CLIError(f"--devices must be a positive count or 'all', got {value!r}")
    return n


def _params_digest(states) -> str:
    """sha256 of this process's copy of every run's parameters (the same on every process
    of a job whose programs agree)."""
    import hashlib

    import jax

    from ppo_jax.run.parallel import gather

    h = hashlib.sha256()
    for x in jax.tree_util.tree_leaves(states.params):
        local = x.addressable_data(0) if x.is_fully_replicated else gather(x)
        h.update(np.ascontiguousarray(np.asarray(local)).tobytes())
    return h.hexdigest()[:16]


def main(argv=None) -> int:
    """``scripts/train.py``: check the flags, choose the device, start (or resume) the job,
    train it, report."""
    default_offscreen_backend()  # before anything imports mujoco
    args = build_parser().parse_args(argv)
    overrides = cli.config_overrides(args)
    devices = _check_flags(args)
    _choose_device(args, overrides, devices)
    try:
        job = distributed.initialize(args)
    except distributed.DistributedError as e:
        raise cli.CLIError(str(e), code=1) from None
    import jax

    lead = jax.process_index() == 0  # the process that writes files and prints progress
    if job:
        print(job, flush=True)
    cli.require_float32()
    with contextlib.ExitStack() as hold:  # the run directory, this process's until it ends
        return _run(args, overrides, devices, lead, hold)


def _run(args: argparse.Namespace, overrides: dict[str, Any], devices, lead: bool,
         hold: contextlib.ExitStack) -> int:
    """Start (or resume) the job, train it, report (the run directory held in ``hold``)."""
    import jax

    new_out = None if args.resume else os.path.abspath(args.out)
    made = None if new_out is None else first_missing(new_out)
    holding: list[str] = []  # the run directory, once this job holds it

    def take_back() -> None:
        # the empty folders of --out that it made, only while it holds them: they may be
        # another run's, made after this one looked (refused, it holds nothing)
        if made is not None and lead and holding:
            remove_empty(new_out, made)

    try:
        start, config, out = _start(args, overrides, hold, holding)
        if args.resume and _nothing_to_train(start, config, out):
            return 0
        init_from = _init_from_torchrl(args, config)
        cli.apply_compile_cache_flags(args)
        stop = StopRequest(enabled=jax.process_count() == 1, before_early_exit=take_back)
        result, job = _train(args, start, config, out, devices, lead, stop, init_from)
    except BaseException:
        # a refusal or a failure before anything was written leaves no empty --out behind
        take_back()
        raise
    from ppo_jax.run.parallel import barrier

    if stop.signum is not None and job.start < config.num_batches and not job.log.all_failed:
        take_back()  # stopped before its first batch: no empty --out
        raise stop.interrupted(job, out)
    barrier("finished")  # the processes of a job leave together (JAX's shutdown has a deadline)
    if jax.process_count() > 1:
        print(f"process {jax.process_index()}: final parameters sha256 "
              f"{_params_digest(job.states)}", flush=True)
    last = stop.signum  # a signal during the last batch: the run is complete and saved
    skipped = last is not None and args.video
    if lead:
        args.video = args.video and last is None  # no minutes of rendering after the signal
        _report(args, result, job, out)
    if last is not None:
        raise cli.Interrupted(
            f"{signal.Signals(last).name} during the last batch: the run is complete, saved in "
            f"{out}" + ("; its video was not rendered" if skipped else ""), 128 + last)
    return 0


def _check_flags(args: argparse.Namespace) -> int | str | None:
    """The flags that no config check sees; returns ``--devices`` as a count, 'all' or None."""
    if args.num_seeds is not None and args.num_seeds < 1:
        raise cli.CLIError(f"--num-seeds must be >= 1, got {args.num_seeds}")
    if ((args.checkpoint_every is not None and args.checkpoint_every < 0)
            or (args.keep is not None and args.keep < 1)):
        raise cli.CLIError("--checkpoint-every must be >= 0 and --keep >= 1")
    devices = _devices_flag(args.devices)
    args.out = getattr(args, "out", None)
    if args.resume:
        from ppo_jax.run.checkpoint import run_directory

        args.resume = run_directory(args.resume)  # RUN or RUN/checkpoints: it continues in RUN
        if args.out is not None and (  # the same directory however spelled (links too)
                os.path.realpath(run_directory(args.out)) != os.path.realpath(args.resume)):
            raise cli.CLIError(f"--resume continues the run in {args.resume}, where it "
                               f"writes: --out {args.out} cannot move it")
        if args.init_from_torchrl:  # refused even where the run is finished
            raise cli.CLIError("--init-from-torchrl starts a new run: it cannot be used with "
                               "--resume")
    if args.out is None:
        args.out = args.resume or DEFAULT_OUT
    if not args.no_compile_cache:  # this run's own folders (another run's: with the cache)
        cache = os.path.realpath(args.compile_cache_dir)
        for folder in RUN_FOLDERS:
            own = os.path.join(os.path.realpath(args.out), folder)
            if cache == own or cache.startswith(own + os.sep):
                raise cli.CLIError(f"--compile-cache-dir {args.compile_cache_dir} is inside the "
                                   f"{folder}/ of this run's --out, which the run keeps for "
                                   "itself: choose another place")
    from ppo_jax.run.runs import sweep_field

    swept = {sweep_field(spec) for spec in args.sweep}
    both = sorted(swept & set(cli.config_overrides(args)))
    if both:
        raise cli.CLIError(f"{', '.join(cli.flag(n) for n in both)}: the field is also swept "
                           "(--sweep): give its values once")
    return devices


def _choose_device(args: argparse.Namespace, overrides: dict[str, Any],
                   devices: int | str | None) -> None:
    """``--device``: the platform, set before JAX starts (one line when it is worth saying)."""
    from ppo_jax.run import device

    num_runs, num_envs = 1, 1
    if args.resume:
        from ppo_jax.run.checkpoint import peek_meta

        meta = peek_meta(args.resume)
        try:
            num_runs, num_envs = int(meta.get("num_runs", 1)), int(meta["config"]["num_envs"])
        except (AttributeError, KeyError, TypeError, ValueError):
            pass  # unreadable: _start's open_saved says what is wrong, in one line
    else:
        base = PPOConfig.from_preset(args.preset) if args.preset else PPOConfig()
        config = cli.make_config(base, overrides)
        from ppo_jax.run.runs import parse_sweep

        with cli.user_errors(ValueError):
            points = len(parse_sweep(args.sweep, config)) if args.sweep else 1
        num_runs, num_envs = (args.num_seeds or 1) * points, config.num_envs
    # a multi-process job: --num-processes, or at least two where --distributed auto leaves
    # the count to the cluster
    processes = args.num_processes or (2 if distributed.requested(args) else 1)
    known = bool(args.num_processes) or not distributed.requested(args)  # (2: at least)
    with cli.user_errors(device.DeviceError):
        per_device = device.envs_per_device(max(1, num_runs), max(1, num_envs), devices,
                                            processes)
        message = device.apply(device.choose(
            args.device, per_device, device.gpus_asked(devices, processes),
            asked_by=device.gpus_asked_by(devices, processes, processes_known=known),
            envs_at_most=not known and devices is None))
    if message:
        print(message, flush=True)


def _job_clashes(args: argparse.Namespace, overrides: dict[str, Any], saved) -> list[str]:
    """What ``--preset`` and ``--sweep`` given with ``--resume`` contradict in the saved job
    (the same command line again, ``--resume`` added, continues it): the preset's value of
    each field not given by its own flag, and the sweep's points, in their order."""
    from ppo_jax.run import checkpoint
    from ppo_jax.run.runs import labels, parse_sweep

    out = []
    if args.preset:
        preset = PPOConfig.from_preset(args.preset)
        implied = {f.name: getattr(preset, f.name) for f in dataclasses.fields(PPOConfig)
                   if f.name not in overrides}
        differ = checkpoint.clashes(saved, implied)
        if differ:
            out.append(f"--preset {args.preset} sets " + ", ".join(
                f"{k} {v!r} (saved: {was!r})" for k, v, was in differ))
    if args.sweep:
        with cli.user_errors(ValueError, prefix="--resume: "):
            points = parse_sweep(args.sweep, saved.config, distinct=False)
        if points != saved.runs.sweep:
            given = labels(points + saved.runs.sweep)  # one precision: both read apart
            out.append(f"--sweep's points {', '.join(given[:len(points)])} (saved: "
                       f"{', '.join(given[len(points):])})")
    return out


def _start(args: argparse.Namespace, overrides: dict[str, Any], hold: contextlib.ExitStack,
           holding: list[str]):
    """``(start, config, out)``: the saved job (``--resume``) or the new one's runs, its
    config and its output directory (a new run's must not hold another run), held in
    ``hold`` (:func:`ppo_jax.run.run_dir.held_by_the_job`; added to ``holding`` then)."""
    from ppo_jax.run import checkpoint

    def held(out: str) -> None:
        with cli.user_errors(RunDirBusy, prefix="--resume: " if args.resume else ""):
            hold.enter_context(held_by_the_job(out, None if args.resume else "--out"))
        holding.append(out)

    if args.resume:
        held(args.resume)  # before its checkpoint is read: another resume may be writing it
        with cli.user_errors(checkpoint.CheckpointError, prefix="--resume: "):
            saved = checkpoint.open_saved(args.resume)
            clash = [f"{cli.flag(k)} {v!r} (saved: {was!r})"
                     for k, v, was in checkpoint.clashes(saved, overrides, args.num_seeds)]
            clash += _job_clashes(args, overrides, saved)
        if clash:
            raise cli.CLIError("--resume: flags contradict the saved config: " + "; ".join(clash))
        if saved.step >= saved.config.num_batches:  # finished: nothing is read or written
            return saved, saved.config, os.path.abspath(args.resume)
        saved = checkpoint.with_changes(saved, overrides)  # e.g. --eval-sim
        from ppo_jax.eval.host import MujocoEvaluator
        from ppo_jax.run import host_eval

        with cli.user_errors(ValueError, prefix="--resume: "):  # before anything is compiled
            host_eval.check_eval_sim(saved.config, factory=MujocoEvaluator)

        from ppo_jax.run.runner import check_resumable

        with cli.user_errors(ValueError, prefix="--resume: "):  # its history, what it writes
            check_resumable(saved, os.path.dirname(saved.directory), video=args.video)
        out = cli.ensure_writable_dir(args.resume)
        _check_event_dir(out, args.tensorboard)
        every, keep = checkpoint.checkpointing(saved)  # unless the flags say otherwise
        args.checkpoint_every = every if args.checkpoint_every is None else args.checkpoint_every
        args.keep = keep if args.keep is None else args.keep
        if args.save_final is None:
            args.save_final = checkpoint.saves_final(saved)
        return saved, saved.config, out
    base = PPOConfig.from_preset(args.preset) if args.preset else PPOConfig()
    config = cli.make_config(base, overrides)
    from ppo_jax.envs.registry import check_env_id

    from ppo_jax.eval.host import MujocoEvaluator
    from ppo_jax.run import host_eval

    from ppo_jax.run.runner import run_files_in
    from ppo_jax.run.runs import Runs, parse_sweep

    with cli.user_errors(ValueError):  # before anything is written or compiled
        check_env_id(config.env)
        host_eval.check_eval_sim(config, factory=MujocoEvaluator)
        sweep = parse_sweep(args.sweep, config) if args.sweep else None
        runs = Runs(config, args.num_seeds or 1, sweep)
    cli.check_not_in_a_run(args.out, "--out")
    out = cli.ensure_writable_dir(args.out)
    held(out)  # before it is looked into: no other run starts there after this one did
    own, files = run_files_in(out)
    if own:
        resume = (f"continue it with --resume {out}, or " if checkpoint.CHECKPOINTS in own
                  else "")  # a run without checkpoints (--no-save-final) cannot be resumed
        raise cli.CLIError(f"{out} already holds a run ({', '.join(own)}): {resume}choose "
                           "another --out")
    if files:
        raise cli.CLIError(f"{out} holds files a run writes ({', '.join(files)}), which this "
                           "run would replace: move them away or choose another --out")
    _check_event_dir(out, args.tensorboard)
    args.checkpoint_every = args.checkpoint_every or 0
    args.keep = checkpoint.DEFAULT_KEEP if args.keep is None else args.keep
    args.save_final = True if args.save_final is None else args.save_final
    return runs, config, out


def _check_event_dir(out: str, tensorboard: bool) -> None:
    """One line, before compiling, where the TensorBoard events cannot be written
    (:func:`ppo_jax.run.run_dir.events_problem`)."""
    problem = events_problem(out) if tensorboard else None
    if problem is not None:
        raise cli.CLIError(f"{problem}, or train with --no-tensorboard")


def _init_from_torchrl(args: argparse.Namespace, config: PPOConfig):
    """``--init-from-torchrl``: the TorchRL export's networks and statistics, or None."""
    if not args.init_from_torchrl:
        return None
    from ppo_jax.interop.torchrl import export

    try:
        return export.load_torchrl_export(args.init_from_torchrl, config)
    except export.ExportError as e:
        raise cli.CLIError(f"--init-from-torchrl: {e}") from None


def _train(args, start, config: PPOConfig, out: str, devices, lead: bool, stop: StopRequest,
           init_from):
    """Compile (or load) the programs and train; a failure to write becomes one line."""
    from ppo_jax.envs.base import EnvError
    from ppo_jax.eval.host import MujocoEvaluator
    from ppo_jax.run import checkpoint, runner
    from ppo_jax.run.parallel import LayoutError

    def announce(line: str) -> None:
        if lead:
            print(line, flush=True)

    try:
        with stop:
            return runner.run_training(
                start,
                out=out,
                devices=devices,
                checkpoint_every=args.checkpoint_every,
                keep=args.keep,
                save_final=args.save_final,
                tensorboard=args.tensorboard,
                written_by="scripts/train.py",
                progress_factory=lambda job: Progress(config, job.start,
                                                      lead and not args.no_progress, job.log),
                announce=announce,
                init_from=init_from,
                init_from_label=(None if init_from is None else
                                 f"torchrl:{os.path.abspath(args.init_from_torchrl)}"),
                interrupted=stop,
                host_evaluator=MujocoEvaluator,
            )
    except (LayoutError, EnvError) as e:  # EnvError: an env that cannot be built or traced
        raise cli.CLIError(str(e)) from None
    except runner.InitFromError as e:
        raise cli.CLIError(f"--init-from-torchrl {args.init_from_torchrl}: {e}") from None
    except (OSError, checkpoint.CheckpointWriteError) as e:  # disk full, directory gone
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise cli.CLIError(
            f"cannot write the run's files in {out}: {reason}; metrics.json and the "
            f"checkpoints written before this are intact", code=1) from None
    except checkpoint.CheckpointError as e:  # the resumed checkpoint, read before compiling
        raise cli.CLIError(f"--resume: {e}" if args.resume else str(e)) from None


def _nothing_to_train(saved, config: PPOConfig, out: str) -> bool:
    """A resumed job with nothing left to train, every run finished or stopped at NaN/Inf:
    says so and leaves its files as they are (True; a stopped run ends the command in one
    line and exit 1, as the job itself ended); False where there is a batch to train."""
    from ppo_jax.run.checkpoint import run_progress

    runs = saved.runs
    failed = [(r, b) for r in range(runs.num_runs)
              if (b := run_progress(saved.meta, r)[2]) is not None]
    if saved.step < config.num_batches and len(failed) < runs.num_runs:
        return False
    unchanged = "nothing to train; its files are unchanged"
    if failed:
        which = "; ".join(f"{runs.describe(r)} at batch {b}" for r, b in failed)
        others = ", the other runs finished" if len(failed) < runs.num_runs else ""
        raise cli.CLIError(f"--resume: {out}'s training stopped at NaN/Inf ({which}){others}: "
                           f"{unchanged}", code=1)
    print(f"{out} is finished ({config.num_batches} of {config.num_batches} batches): "
          f"{unchanged}", flush=True)
    return True


def _report(args: argparse.Namespace, result: dict[str, Any], job, out: str) -> None:
    """The summary line, the sweep's ranking, the video; a run that hit NaN ends in one line."""
    import jax

    summary = {k: result[k] for k in ("total_frames", "compile_seconds", "compiled_from_cache",
                                      "run_seconds", "frames_per_second", "last_eval_return")}
    print(json.dumps(summary))
    if "sweep_ranking" in result:
        print(_ranking_table(result["sweep_ranking"], job.runs.num_seeds, job.runs.config))
    print(f"wrote {os.path.join(out, 'metrics.json')} and {os.path.join(out, 'curves.png')}")
    if args.video and result["failed_batch_per_run"][0] is None and jax.process_count() == 1:
        from ppo_jax.eval import render

        run0 = jax.tree_util.tree_map(lambda x: x[0], job.states)
        video = render.write_policy_video(
            job.trainer, run0, os.path.join(out, "policy.mp4"),
            on_unavailable=lambda why: print(f"no video: {why} (or pass --no-video)"))
        if video:
            print(f"wrote {video}")
    failed = [(r, b) for r, b in enumerate(result["failed_batch_per_run"]) if b is not None]
    if failed:
        which = "; ".join(f"{job.runs.describe(r)} at batch {b}" for r, b in failed)
        raise cli.CLIError(
            f"training stopped: NaN/Inf in the loss or parameters"
            f"{' or observation moments' if job.trainer.config.obs_norm == 'running' else ''} "
            f"({which}); kept the last "
            f"good state in {out}", code=1)


def _ranking_table(rows: list[dict], num_seeds: int, base: PPOConfig | None = None) -> str:
    """The sweep's points ranked (``metrics.json``'s ``sweep_ranking``) as a text table: a
    column per field any point sets; a point that leaves a field to the job's config shows
    ``base``'s value there (without ``base``: ``-``)."""
    from ppo_jax.core.hyper import SWEEPABLE
    from ppo_jax.run.runs import label_digits, value_texts

    fields = list(dict.fromkeys(k for r in rows for k in r if k in SWEEPABLE))
    points = [{f: r[f] if f in r else getattr(base, f) for f in fields
               if f in r or base is not None} for r in rows]
    digits = label_digits(points)

    def fmt(v):
        return "-" if v is None else f"{v:.1f}"

    failures = any(r.get("failed_seeds") for r in rows)
    head = ["rank", *fields, f"final eval return (mean of {num_seeds})", "std", "best",
            *(["failed seeds"] if failures else [])]
    lines = [" | ".join(head)]
    for r, point in zip(rows, points):
        # a point some of whose seeds failed: the mean of the others
        mean = fmt(r["final_eval_return"]) + (
            f" (of {r['seeds']})" if r.get("failed_seeds") and r["seeds"] else "")
        texts = value_texts(point, digits)
        lines.append(" | ".join([str(r["rank"]), *(texts.get(f, "-") for f in fields), mean,
                                 fmt(r["final_eval_return_std"]), fmt(r["best_eval_return"]),
                                 *([str(r.get("failed_seeds", 0))] if failures else [])]))
    return "\n".join(lines)


def run() -> None:
    """Console entry point (``ppo-jax-train``, ``scripts/train.py``)."""
    cli.run_main(main, oom_hint=cli.OUT_OF_MEMORY_HINT)


if __name__ == "__main__":
    run()
