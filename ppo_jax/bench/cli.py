"""The benchmark's command line: flags, defaults, and ``main`` (``scripts/benchmark.py``)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import sys
from typing import Any

from ppo_jax.bench import configs, driver, report
from ppo_jax.bench.configs import common_total_frames
from ppo_jax.cli.common import (ArgumentParser, CLIError, check_compile_cache_dir,
                                 check_output_file, ensure_writable_dir, nonempty,
                                 require_float32, user_errors)
from ppo_jax.run.run_dir import taken_back_if_empty
from ppo_jax.config import MATMUL_PRECISIONS, SEED_MAX, check_seed
from ppo_jax.util import versions

SYSTEMS = ("torchrl", "ppo_jax", "brax")
DEFAULT_ENVS = (16, 256, 4096)
QUICK_ENVS = (1, 16)
QUICK_TOTAL_FRAMES = 2000
DEFAULT_TOTAL_FRAMES = 20_000
DEFAULT_THRESHOLD = 9000.0


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")


def parse_int_list(text: str) -> list[int]:
    """``--envs``: positive integers separated by commas."""
    vals = _ints(text)
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def parse_seed_list(text: str) -> list[int]:
    """``--seeds``: distinct non-negative integers separated by commas."""
    vals = _ints(text)
    if not vals or min(vals) < 0 or max(vals) > SEED_MAX or len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(
            f"expected distinct integers in [0, {SEED_MAX}], got {text!r}")
    return vals


def parse_systems(text: str) -> list[str]:
    """``--systems``: a comma-separated subset of :data:`SYSTEMS`."""
    vals = [v for v in text.replace(" ", "").split(",") if v]
    bad = [v for v in vals if v not in SYSTEMS]
    if bad or not vals:
        raise argparse.ArgumentTypeError(
            f"unknown system(s) {', '.join(bad) or text!r}; choose from {', '.join(SYSTEMS)}")
    return vals


def build_parser(prog: str = "benchmark.py") -> argparse.ArgumentParser:
    """The flags of ``scripts/benchmark.py``."""
    p = ArgumentParser(prog=prog, description=(
        "Frames per second of the whole PPO training loop: the TorchRL tutorial vs ppo_jax "
        "(tutorial config and more envs) vs Brax's PPO trainer, same total frames, interleaved "
        "and repeated runs, each in a fresh subprocess."))
    p.add_argument("--systems", type=parse_systems, default=list(SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all; torchrl "
                        "adds a CUDA row when torch sees a GPU)")
    p.add_argument("--env", metavar="ID", default="InvertedDoublePendulum-v4",
                   help="the env of every row, --scaling's too (default: the tutorial's; "
                        "the Brax rows run only on it: their adapter is the pendulum's; the "
                        "TorchRL rows only on the Gymnasium ports)")
    p.add_argument("--envs", type=parse_int_list, default=None,
                   help=f"env counts for ppo_jax and Brax besides the tutorial's 1 "
                        f"(default {','.join(map(str, DEFAULT_ENVS))}; --quick: "
                        f"{','.join(map(str, QUICK_ENVS))})")
    p.add_argument("--total-frames", type=int, default=None,
                   help=f"frames per run, rounded up to a multiple of lcm(1000, env counts) "
                        f"so every row splits it into whole batches (with 4096 envs: a "
                        f"multiple of 512,000) (default {DEFAULT_TOTAL_FRAMES}; --quick: "
                        f"{QUICK_TOTAL_FRAMES})")
    p.add_argument("--repeats", type=int, default=None, help="runs per row (default 3; --quick: 1)")
    p.add_argument("--to-threshold", type=float, nargs="?", const=DEFAULT_THRESHOLD, default=None,
                   metavar="R", help="evaluate during the runs and report seconds and frames "
                                     f"until the eval return first reaches R (default R "
                                     f"{DEFAULT_THRESHOLD:g}); frames/s then include evaluation")
    p.add_argument("--eval-every-frames", type=int, default=None,
                   help="evaluate about every this many frames (the tutorial: every 10 "
                        "batches of 1000; default with --to-threshold 10000; given alone it "
                        "turns evaluation on); with "
                        "--playground: ppo_jax's evaluations (default: 10 per Brax training "
                        "step, 98,304 frames)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of every run (default 0; at least 0 with the TorchRL rows)")
    p.add_argument("--seeds", type=parse_seed_list, default=None, metavar="S1,S2,...",
                   help="run every row once per seed (instead of --seed; --repeats then "
                        "defaults to 1); with evaluation "
                        "(--to-threshold or --eval-every-frames) a table of each seed's "
                        "last evaluation return and saturated-action share follows")
    p.add_argument("--ppo-jax-config", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="set fields of every ppo_jax row's config (e.g. init_stats_frames=10000 "
                        "obs_norm=safe); the TorchRL rows keep the tutorial's; the fields the "
                        "benchmark sets (env, envs, frames, evaluation, seed, precision) have "
                        "their own flags")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs at once (default 1: each run has the machine to itself; more "
                        "suits learning tables, not speed: the runs then share the cores)")
    p.add_argument("--matched", action="store_true",
                   help="add a ppo_jax row at the tutorial config that starts from the same "
                        "seed's TorchRL run: its initial networks and normalization statistics "
                        "(as scripts/train.py --init-from-torchrl); needs the torchrl system")
    p.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default="highest",
                   help="JAX matmul precision of the ppo_jax and Brax runs (default highest: "
                        "full float32, as PyTorch)")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke scale: 2000 frames, envs 1,16, 1 repeat (explicit flags win)")
    p.add_argument("--json", metavar="PATH", type=nonempty,
                   help="write every figure, versions, device and configs")
    p.add_argument("--compile-cache", metavar="DIR", default=None, type=nonempty,
                   help="JAX persistent compilation cache for the JAX runs (off by default, so "
                        "start-up includes a full compilation)")
    p.add_argument("--warm", action="store_true",
                   help="run each JAX row twice per repeat: cold (a fresh, empty compilation "
                        "cache) and warm (the cache the cold run filled); reports both start-ups")
    p.add_argument("--profile", action="store_true",
                   help="after each ppo_jax run, time the phases of a batch (collect, GAE, "
                        "update, evaluation), each compiled alone")
    p.add_argument("--torch-threads", type=int, default=0, metavar="N",
                   help="torch intra-op threads of the TorchRL runs (0: torch's default, as the "
                        "tutorial; 1 is steadier on a machine shared with other work)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds allowed per run (default 3600)")
    p.add_argument("--scaling", type=parse_int_list, default=None, metavar="D1,D2,...",
                   help="instead of the comparison: ppo_jax on D1, D2, ... devices (its envs "
                        "split over them; on a CPU, forced host devices that share the cores), "
                        "at the largest --envs count (default 256)")
    p.add_argument("--playground", nargs="?", const="CartpoleBalance", default=None,
                   metavar="ENV",
                   help="instead of the comparison: MuJoCo Playground's own Brax-PPO trainer "
                        "(Playground's published parameters, the run scaled to --total-frames: "
                        "rounded up to whole Brax training steps, at least 2) against ppo_jax "
                        "on playground:ENV at --envs env counts (default 256), each cold and "
                        "warm in fresh subprocesses (default ENV CartpoleBalance)")
    p.add_argument("--brax-envs", type=int, default=None, metavar="N",
                   help="with --playground: Brax's num_envs N instead of Playground's 2048, "
                        "its batch_size scaled alike (a training step of N x 480 frames "
                        "instead of 983,040; NOT Playground's parameters, the output says so)")
    p.add_argument("--replay", metavar="JSON", default=None, type=nonempty,
                   help="with --playground: print the tables again from the runs of an "
                        "earlier --json of the same flags instead of measuring")
    p.add_argument("--smoke", action="store_true",
                   help="with --playground: tiny sizes (Brax's structure and ppo_jax's networks "
                        "shrunk), a check that the command runs, not a measurement")
    p.add_argument("--keep-going", action=argparse.BooleanOptionalAction, default=True,
                   help="after a failed run, go on with the others (default: yes)")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on ``--quick`` (and ``--playground``); ``env_counts``: 1
    and ``--envs``, sorted."""
    args.envs_given = args.envs is not None  # before the defaults fill it in
    if getattr(args, "seeds", None) is not None and args.seed is not None:
        raise CLIError("--seed and --seeds: give one of them")
    if args.seed is None:
        args.seed = 0
    if (args.seed < 0 and "torchrl" in args.systems and not args.scaling
            and not getattr(args, "playground", None)):
        raise CLIError(f"--seed must be in [0, {SEED_MAX}] with the TorchRL rows (Gymnasium, "
                       f"which they seed, takes no negative seed; as --seeds), got {args.seed}")
    try:
        check_seed(args.seed, "--seed")
    except ValueError as e:
        raise CLIError(str(e)) from None
    if args.to_threshold is not None and not math.isfinite(args.to_threshold):
        raise CLIError(f"--to-threshold must be a finite return, got {args.to_threshold}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise CLIError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.json is not None:  # its directory is made in main, after every refusal
        check_output_file(args.json, "--json", (".json",), create=False)
    if args.torch_threads < 0:
        raise CLIError(f"--torch-threads must be >= 0 (0: torch's default), got "
                       f"{args.torch_threads}")
    if ((args.seeds or args.matched or args.ppo_jax_config or args.jobs != 1)
            and (getattr(args, "playground", None) or args.scaling)):
        raise CLIError("--seeds, --matched, --ppo-jax-config and --jobs go with the "
                       "comparison, not with --playground or --scaling")
    if args.scaling and getattr(args, "playground", None):
        raise CLIError("--scaling and --playground are two other measurements: give one")
    if args.scaling:  # one ppo_jax run per device count, without evaluation: say what it drops
        given = [flag for flag, on in (
            ("--systems", set(args.systems) != set(SYSTEMS)),
            ("--repeats", args.repeats is not None),
            ("--warm", args.warm), ("--profile", args.profile),
            ("--to-threshold", args.to_threshold is not None),
            ("--eval-every-frames", args.eval_every_frames is not None)) if on]
        if given:
            raise CLIError(f"{', '.join(given)}: --scaling runs ppo_jax once per device "
                           "count, without evaluation; these go with the comparison")
    if args.warm and args.compile_cache and not getattr(args, "playground", None):
        raise CLIError("--warm compiles each JAX row in a fresh cache, then starts it again "
                       "from that cache: --compile-cache cannot be used with it")
    if getattr(args, "playground", None):
        from ppo_jax.bench import playground

        if args.envs is None:
            args.envs = list(playground.SMOKE_PPO_JAX_ENVS if args.smoke
                             else playground.DEFAULT_PPO_JAX_ENVS)
        if args.total_frames is None:  # rounded up to two Brax training steps (smoke: 8)
            args.total_frames = 1 if not args.smoke else (
                playground.SMOKE_TRAINING_STEPS * playground.frames_per_training_step(
                    playground.SMOKE_BRAX))
        if args.total_frames < 1 or (args.eval_every_frames is not None
                                     and args.eval_every_frames < 1):
            raise CLIError("--total-frames and --eval-every-frames must be >= 1")
        if 1 in args.envs:
            raise CLIError("--playground: 1 env is the tutorial's 1000-frame batch, which a run "
                           "of whole Brax training steps does not split into; use N > 1 envs")
        args.env_counts = sorted(set(args.envs))
        return args
    if args.smoke:
        raise CLIError("--smoke goes with --playground (the comparison's smoke size is --quick)")
    given = [f for f, v in (("--replay", args.replay), ("--brax-envs", args.brax_envs))
             if v is not None]
    if given:
        raise CLIError(f"{' and '.join(given)} {'go' if len(given) > 1 else 'goes'} with "
                       "--playground")
    args.ppo_jax_overrides = configs.parse_overrides(args.ppo_jax_config)
    if args.jobs < 1:
        raise CLIError(f"--jobs must be >= 1, got {args.jobs}")
    if args.matched and not {"torchrl", "ppo_jax"} <= set(args.systems):
        raise CLIError("--matched compares ppo_jax with TorchRL: --systems needs both")
    if args.matched and args.ppo_jax_overrides.get("obs_norm") == "running":
        raise CLIError("--matched starts ppo_jax from TorchRL's fixed statistics, which "
                       "obs_norm=running cannot take in (it keeps the moments they came from)")
    # evaluation during the runs: for the threshold, or asked for by its interval
    args.evaluate = args.to_threshold is not None or args.eval_every_frames is not None
    if args.eval_every_frames is None:
        args.eval_every_frames = 10_000
    if args.envs is None:
        args.envs = list(QUICK_ENVS if args.quick else DEFAULT_ENVS)
    if args.total_frames is None:
        args.total_frames = QUICK_TOTAL_FRAMES if args.quick else DEFAULT_TOTAL_FRAMES
    if args.repeats is None:  # a seed's repeats repeat its learning: one by default
        args.repeats = 1 if (args.quick or args.seeds) else 3
    if args.repeats < 1 or args.total_frames < 1 or args.eval_every_frames < 1:
        raise CLIError("--repeats, --total-frames and --eval-every-frames must be >= 1")
    args.env_counts = sorted(set([1] + list(args.envs)))
    if args.scaling:
        num_envs = scaling_envs(args)
        bad = [d for d in args.scaling if num_envs % d]
        if bad:
            raise CLIError(f"--scaling {','.join(map(str, bad))}: {num_envs} envs do not split "
                           f"over that many devices")
    return args


def main(argv: list[str] | None = None, prog: str = "benchmark.py") -> int:
    """Plan, measure, print the tables and notes (and write ``--json``); exit status 1 when a
    TorchRL or ppo_jax row failed, or when no row gave a figure."""
    args = resolve_args(build_parser(prog).parse_args(argv))
    jax_rows = set(args.systems) & {"ppo_jax", "brax"} or args.scaling
    if jax_rows or getattr(args, "playground", None):
        require_float32()  # (the JAX workers' own refusal came after every row had started)
    from ppo_jax.envs.registry import PORTS, check_env_id

    try:
        check_env_id(f"playground:{args.playground}" if args.playground else args.env)
    except ValueError as e:
        raise CLIError(str(e)) from None
    overrides = getattr(args, "ppo_jax_overrides", None) or {}
    if (overrides.get("eval_sim") == "mujoco" and args.env not in PORTS
            and getattr(args, "evaluate", False)):
        # (its own check calls into JAX, which this process leaves to its workers)
        raise CLIError(f"--ppo-jax-config eval_sim=mujoco evaluates in MuJoCo C, which only "
                       f"the Gymnasium MuJoCo ports have ({', '.join(PORTS)}); {args.env} "
                       f"has none")
    prepared = None
    if args.playground:  # its plan and --replay's file: refused before any directory is made
        from ppo_jax.bench import playground

        prepared = playground.prepare(args)
    elif args.scaling:
        with user_errors(ValueError):  # a config it cannot run (counts past int32, ...)
            prepared = _scaling_config(args)
    else:
        total = common_total_frames(args.total_frames, args.env_counts)
        with user_errors(ValueError):  # a config no row can run (counts past int32, ...)
            rows, messages = driver.plan_rows(args, total)
        if not any(r.skipped is None for r in rows):
            reasons = list(dict.fromkeys(r.skipped for r in rows if r.skipped))
            raise CLIError(f"nothing to measure: every row of --systems "
                           f"{','.join(args.systems)} is skipped: " + "; ".join(reasons))
    if args.compile_cache:
        check_compile_cache_dir(args.compile_cache, "--compile-cache")
    # the folders of --json and --compile-cache (the JAX rows' workers write there): after the
    # other refusals and before any row runs; a refused command leaves none of them
    outputs = []
    if args.json is not None:
        outputs.append((os.path.dirname(os.path.abspath(args.json)),
                        lambda: check_output_file(args.json, "--json", (".json",))))
    if args.compile_cache:
        outputs.append((os.path.abspath(args.compile_cache),
                        lambda: ensure_writable_dir(args.compile_cache)))
    with contextlib.ExitStack() as made:
        for folder, make in outputs:
            made.enter_context(taken_back_if_empty(folder))  # a later refusal takes it back
            make()
    if args.playground:
        return playground.run(args, prog, argv, prepared)
    if args.scaling:
        return _scaling(args, prog, argv, prepared)
    for m in messages:
        print(m, file=sys.stderr)
    started = datetime.datetime.now(datetime.timezone.utc)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log(f"total frames per run: {total:,} (requested {args.total_frames:,}); "
        f"{sum(r.skipped is None for r in rows)} row(s) x {args.repeats} repeat(s)")
    driver.measure(rows, args, log)
    results = driver.aggregate(rows, args.to_threshold)

    meta: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": report.command_line(prog, argv),
        "settings": {
            "env": args.env, "systems": args.systems, "envs": args.env_counts,
            "requested_frames": args.total_frames,
            "total_frames": total, "repeats": args.repeats, "threshold": args.to_threshold,
            "eval_every_frames": args.eval_every_frames if args.evaluate else None,
            "seed": args.seed, "seeds": driver.run_seeds(args), "matched": args.matched,
            "jobs": args.jobs, "ppo_jax_config": args.ppo_jax_overrides,
            "evaluate": args.evaluate,
            "matmul_precision": args.matmul_precision, "quick": args.quick,
            "compile_cache": args.compile_cache, "warm": args.warm, "profile": args.profile,
        },
        "versions": versions(),
        "device": driver.device_summary(results),
        "brax_patched": any(r["raw"].get("patched") for row in rows for r in row.runs
                            if row.system == "brax"),
        "skipped": messages + [f"{d['label']}: {d['skipped']}" for d in results
                               if d["skipped"] and d["skipped"] not in messages],
    }
    meta["headline"] = driver.headline(results)
    meta["notes"] = report.notes(meta, results)
    print(report.markdown(results, meta))
    print()
    for n in meta["notes"]:
        print(f"- {n}")
    for m in meta["skipped"]:
        print(f"- skipped: {m}")
    if args.json:
        payload = dict(meta, rows=results)
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1, default=str)
        print(f"\nwrote {args.json}")
    failed = [d for d in results if d["system"] != "brax" and not d["skipped"] and d["errors"]]
    measured = any(d["runs"] for d in results)  # e.g. every Brax run failed: no figure at all
    return 1 if failed or not measured else 0


def scaling_envs(args: argparse.Namespace) -> int:
    """``--scaling``'s env count: the largest given ``--envs`` (``--quick``'s own without
    it), else 256."""
    return max(args.envs) if args.envs_given or args.quick else 256


def _scaling_config(args: argparse.Namespace):
    """``--scaling``'s one config (a ``ValueError`` for one it cannot run)."""
    from ppo_jax.bench import scaling

    return scaling.scaling_config(scaling_envs(args), args.total_frames, args.seed).replace(
        env=args.env, matmul_precision=args.matmul_precision)


def _scaling(args: argparse.Namespace, prog: str, argv: list[str] | None, cfg) -> int:
    """``--scaling``: the device-count table (and ``--json``, with the command and the
    settings it ran with), for ``cfg`` (:func:`_scaling_config`)."""
    from ppo_jax.bench import scaling

    rows = scaling.measure_scaling(sorted(args.scaling), cfg, args.compile_cache,
                                   args.timeout, lambda m: print(m, file=sys.stderr, flush=True))
    print(scaling.markdown(rows, cfg))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "command": report.command_line(prog, argv),
                "settings": {"env": args.env, "devices": sorted(args.scaling),
                             "num_envs": cfg.num_envs, "requested_frames": args.total_frames,
                             "seed": args.seed, "matmul_precision": args.matmul_precision,
                             "compile_cache": args.compile_cache, "quick": args.quick},
                "scaling": rows, "config": cfg.to_dict(), "versions": versions()}, f,
                indent=1, default=str)
        print(f"\nwrote {args.json}")
    return 1 if any("error" in r for r in rows) else 0


def run() -> None:
    """Console entry point (``ppo-jax-benchmark``, ``scripts/benchmark.py``)."""
    from ppo_jax.cli.common import run_main

    run_main(main)
