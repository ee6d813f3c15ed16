#!/usr/bin/env python
"""Train PPO on InvertedDoublePendulum-v4 (MJX) as one compiled JAX program.

    python scripts/train.py --out runs/demo                       # the tutorial: 10k frames
    python scripts/train.py --total-frames 1000000 --out runs/1M  # a full run
    python scripts/train.py --num-envs 16 --frames-per-batch 16000 --minibatch-size 1024 \
        --total-frames 1008000 --num-seeds 4 --out runs/16envs
    python scripts/train.py --checkpoint-every 10 --out runs/ck ; python scripts/train.py --resume runs/ck

Writes OUT/metrics.json, OUT/curves.png and (with --checkpoint-every) OUT/checkpoints/.
Runs on the GPU when JAX sees one, else on the CPU. ``scripts/train.py`` and the
``ppo-jax-train`` console script run :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from ppo_jax import cli
from ppo_jax.config import PPOConfig


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(
        prog="train.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument("--out", default="runs/train", help="output directory")
    run.add_argument("--num-seeds", type=int, default=None,
                     help="train seeds seed..seed+K-1 together in one vmapped program "
                          "(default 1, or the saved number with --resume)")
    run.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                     help="save a checkpoint every N batches (0: one call for the whole run)")
    run.add_argument("--keep", type=int, default=3, metavar="K", help="checkpoints to keep")
    run.add_argument("--save-final", action=argparse.BooleanOptionalAction,
                     default=True, help="save a checkpoint at the end of the run")
    run.add_argument("--resume", metavar="DIR",
                     help="continue the run saved in DIR (its --out) to its total_frames")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--video", action=argparse.BooleanOptionalAction, default=True,
                     help="write OUT/policy.mp4: the final policy's evaluation episode (needs an "
                          "offscreen GL context: MUJOCO_GL=egl, or osmesa with libosmesa6)")
    run.add_argument("--init-from-torchrl", metavar="FILE",
                     help="start from the actor, critic and ObservationNorm statistics of a "
                          "TorchRL export (scripts/export_torchrl.py's format; torchrl extra)")
    cli.add_compile_cache_flags(p)
    cli.add_config_flags(p)
    return p


class Progress:
    """tqdm bar over frames, described like the tutorial's; updated between batches."""

    def __init__(self, config: PPOConfig, start_batch: int, enabled: bool):
        self.config = config
        self.bar = None
        self.init_reward = None
        self.init_eval = None
        self.eval_str = ""
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=config.total_frames, initial=start_batch * config.frames_per_batch,
                            unit="frames", dynamic_ncols=True)

    def __call__(self, i, m, ev):
        """After batch ``i``: metrics ``m`` ``[K]``, evaluation ``ev`` ``[K]`` or None."""
        if self.bar is None:
            return
        r = float(np.nanmean(m.reward))
        if self.init_reward is None:
            self.init_reward = r
        if ev is not None:
            er = float(np.mean(ev.eval_return))
            if self.init_eval is None:
                self.init_eval = er
            self.eval_str = (f"eval cumulative reward: {er: 4.4f} (init: {self.init_eval: 4.4f}), "
                             f"eval step-count: {int(np.max(ev.eval_steps))}")
        desc = ", ".join(s for s in (
            self.eval_str,
            f"average reward={r: 4.4f} (init={self.init_reward: 4.4f})",
            f"step count (max): {int(np.max(m.step_count))}",
            f"lr policy: {float(np.mean(m.lr)): 4.4f}",
        ) if s)
        self.bar.set_description(desc)
        self.bar.update(self.config.frames_per_batch)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    overrides = cli.config_overrides(args)
    if args.num_seeds is not None and args.num_seeds < 1:
        raise cli.CLIError(f"--num-seeds must be >= 1, got {args.num_seeds}")
    if args.checkpoint_every < 0 or args.keep < 1:
        raise cli.CLIError("--checkpoint-every must be >= 0 and --keep >= 1")

    resume_meta = None
    if args.resume:
        from ppo_jax import checkpoint

        try:
            _, resume_meta = checkpoint.read_meta(os.path.join(args.resume, "checkpoints"))
        except checkpoint.CheckpointError as e:
            raise cli.CLIError(f"--resume: {e}") from None
        saved = checkpoint.config_from_meta(resume_meta)
        clash = [f"{cli.flag(k)} {v!r} (saved: {getattr(saved, k)!r})"
                 for k, v in overrides.items() if getattr(saved, k) != v]
        if args.num_seeds is not None and args.num_seeds != resume_meta["num_seeds"]:
            clash.append(f"--num-seeds {args.num_seeds} (saved: {resume_meta['num_seeds']})")
        if clash:
            raise cli.CLIError("--resume: flags contradict the saved config: " + "; ".join(clash))
        config = saved
        out = cli.ensure_writable_dir(args.resume)
    else:
        config = cli.make_config(PPOConfig(), overrides)
        out = cli.ensure_writable_dir(args.out)
        held = [n for n in ("metrics.json", "checkpoints") if os.path.exists(os.path.join(out, n))]
        if held:
            raise cli.CLIError(f"{out} already holds a run ({', '.join(held)}): continue it with "
                               f"--resume {out}, or choose another --out")

    init_from = None
    if args.init_from_torchrl:
        if args.resume:
            raise cli.CLIError("--init-from-torchrl starts a new run: it cannot be used with "
                               "--resume")
        from ppo_jax import export

        try:
            init_from = export.load_torchrl_export(args.init_from_torchrl, config)
        except export.ExportError as e:
            raise cli.CLIError(f"--init-from-torchrl: {e}") from None

    cli.apply_compile_cache_flags(args)

    from ppo_jax import checkpoint, runner

    def announce(line: str) -> None:
        print(line, flush=True)

    try:
        result, run = runner.run_training(
            config,
            out=out,
            num_seeds=resume_meta["num_seeds"] if resume_meta else (args.num_seeds or 1),
            checkpoint_every=args.checkpoint_every,
            keep=args.keep,
            save_final=args.save_final,
            resume=args.resume is not None,
            progress_factory=lambda start: Progress(config, start, not args.no_progress),
            announce=announce,
            init_from=init_from,
        )
    except (OSError, checkpoint.CheckpointError) as e:  # disk full, directory gone mid-run
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise cli.CLIError(
            f"cannot write the run's files in {out}: {reason}; metrics.json and the "
            f"checkpoints written before this are intact", code=1) from None
    summary = {k: result[k] for k in ("total_frames", "compile_seconds", "compiled_from_cache",
                                      "run_seconds", "frames_per_second", "last_eval_return")}
    print(json.dumps(summary))
    print(f"wrote {os.path.join(out, 'metrics.json')} and {os.path.join(out, 'curves.png')}")
    if args.video and result["failed_batch_per_seed"][0] is None:
        import jax

        from ppo_jax import render

        seed0 = jax.tree_util.tree_map(lambda x: x[0], run.states)
        video = render.write_policy_video(
            run.trainer, seed0, os.path.join(out, "policy.mp4"),
            on_unavailable=lambda why: print(f"no video: {why} (or pass --no-video)"))
        if video:
            print(f"wrote {video}")
    failed = [(s, b) for s, b in enumerate(result["failed_batch_per_seed"]) if b is not None]
    if failed:
        seeds = "; ".join(f"seed {config.seed + s} at batch {b}" for s, b in failed)
        raise cli.CLIError(
            f"training stopped: NaN/Inf in the loss or parameters ({seeds}); kept the last "
            f"good state in {out}", code=1)
    return 0


def run() -> None:
    """Console entry point (``ppo-jax-train``, ``scripts/train.py``)."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
