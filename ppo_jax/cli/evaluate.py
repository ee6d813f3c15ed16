#!/usr/bin/env python
"""Evaluate a checkpoint: restore policy and normalizer, run episodes vectorized on the device.

    python scripts/evaluate.py runs/demo                  # latest checkpoint, 10 episodes
    python scripts/evaluate.py runs/demo --step 10 --episodes 100 --json
    python scripts/evaluate.py runs/demo --stochastic --seed 3
    python scripts/evaluate.py runs/demo --sim both       # MJX and MuJoCo C side by side
    MUJOCO_GL=osmesa python scripts/evaluate.py runs/demo --video episode.mp4   # or .gif

Without --seed, the episodes start where training's evaluations after the checkpoint's
last batch start: episode 0 replays the evaluation logged then (training always evaluates
after its final batch; for an intermediate checkpoint whose last batch was not evaluated the
output says there is nothing to replay). --sim mujoco runs the same episodes (start states,
policy noise) in MuJoCo C (ppo_jax.envs.mujoco_c, through ppo_jax.eval.evaluate).
``scripts/evaluate.py`` and the
``ppo-jax-evaluate`` console script run :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from ppo_jax.cli import common as cli
from ppo_jax.config import INT32_MAX, check_seed
from ppo_jax.eval.gl import default_offscreen_backend


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="a run directory written by train.py (or its checkpoints/)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--episodes", type=int, default=10,
                   help="episodes to run (MJX runs them side by side, in chunks whose memory "
                   "is bounded)")
    p.add_argument("--stochastic", action="store_true", help="sample actions (training policy)")
    p.add_argument("--eval-action", choices=("mean", "tanh_loc"), default=None,
                   help="deterministic action (default: the run's eval_action); tanh_loc is "
                   "TorchRL's ExplorationType.DETERMINISTIC")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the episodes' start states (default: the run's eval keys)")
    cli.add_run_index_flag(p, "evaluate")
    p.add_argument("--max-steps", type=int, default=None,
                   help="step limit per episode (default: the run's eval_max_steps)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--env", metavar="ID", type=cli.nonempty,
                   help="the env the checkpoint was trained on (default: the checkpoint's own; "
                        "a different id is refused)")
    p.add_argument("--sim", choices=("mjx", "mujoco", "both"), default="mjx",
                   help="simulator: MJX (the training env), MuJoCo C (Gymnasium v4's, as the "
                   "TorchRL tutorial), or both side by side from the same start states")
    p.add_argument("--video", metavar="FILE", type=cli.nonempty,
                   help="render episode 0 to FILE (.mp4 or .gif; MuJoCo C's with --sim mujoco)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (shown on stderr when the episodes take more than one "
                   "chunk in MJX, or more than one episode in MuJoCo C)")
    cli.add_compile_cache_flags(p)
    return p


def _run_of(meta: dict[str, Any], run_index: int) -> dict[str, Any] | None:
    """The checkpoint's record of run ``run_index`` (``{"seed": 0}``, with a sweep point's
    values), or None where its metadata has none."""
    runs = meta.get("runs")
    if isinstance(runs, list) and run_index < len(runs) and isinstance(runs[run_index], dict):
        return runs[run_index]
    return None


def main(argv=None) -> int:
    default_offscreen_backend()  # before anything imports mujoco
    args = build_parser().parse_args(argv)
    if not args.video:
        return _evaluate(args)
    from ppo_jax.run.run_dir import taken_back_if_empty

    # the folders --video makes are taken back where the command fails or is interrupted
    with taken_back_if_empty(os.path.dirname(os.path.abspath(args.video))):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    if not 1 <= args.episodes <= INT32_MAX:
        raise cli.CLIError(f"--episodes must be in [1, {INT32_MAX}], got {args.episodes}")
    if args.max_steps is not None and not 1 <= args.max_steps <= INT32_MAX:
        raise cli.CLIError(f"--max-steps must be in [1, {INT32_MAX}], got {args.max_steps}")
    if args.seed is not None:
        with cli.user_errors(ValueError):
            check_seed(args.seed, "--seed")
    if args.video:  # a file (not a directory), .mp4 or .gif: its directory is made later
        cli.check_output_file(args.video, "--video", (".mp4", ".gif"), create=False)
    if args.stochastic and args.eval_action:
        raise cli.CLIError("--stochastic and --eval-action exclude each other")

    cli.apply_compile_cache_flags(args)
    cli.require_float32()
    import jax

    from ppo_jax.run import checkpoint
    from ppo_jax.eval import evaluate

    with cli.user_errors(checkpoint.CheckpointError):
        if args.env:  # checked on the metadata, before the restore builds the env
            saved_env = checkpoint.open_saved(args.dir, args.step).config.env
            if args.env != saved_env:
                raise cli.CLIError(
                    f"--env {args.env} contradicts the checkpoint, trained on {saved_env} "
                    "(evaluate reads the env from the checkpoint: drop --env)")
        trainer, state, meta = checkpoint.restore_run(args.dir, args.step, args.run_index)
    cfg = trainer.config
    # the run's own batches (behind the checkpoint's step where it stopped at NaN/Inf)
    step, run_frames, failed = checkpoint.run_progress(meta, args.run_index)
    mode = "sample" if args.stochastic else (args.eval_action or cfg.eval_action)
    max_steps = args.max_steps or cfg.eval_max_steps

    logged = None  # the evaluation training logged after the checkpoint's last batch
    logged_sim = None  # where it ran ("mujoco", "mjx:<platform>"; None: not recorded)
    if args.seed is None and step > 0 and cfg.is_eval_batch(step - 1):
        returns_logged = meta.get("last_eval_return") or []
        frames_logged = meta.get("last_eval_frames") or []
        if args.run_index < min(len(returns_logged), len(frames_logged)) and \
                returns_logged[args.run_index] is not None and \
                frames_logged[args.run_index] == step * cfg.frames_per_batch:
            logged = returns_logged[args.run_index]
            logged_sim = (meta.get("last_eval_sim") or [None] * (args.run_index + 1))[
                args.run_index]
    if args.seed is None:
        keys = evaluate.episode_keys(state.eval_key, step, args.episodes)
    else:
        keys = jax.random.split(jax.random.PRNGKey(args.seed), args.episodes)

    # what can fail after the episodes is checked before them: a refusal loses no work
    sim_env = None
    if args.sim in ("mujoco", "both"):
        from ppo_jax.envs.mujoco_c import MujocoCEnv

        with cli.user_errors(ValueError):  # an env without a MuJoCo C simulator
            sim_env = MujocoCEnv(trainer.env, max_episode_steps=trainer.env.max_episode_steps)
    if args.video:
        check_rendering(trainer.env)
        # the checkpoint is read: its directory is made (and checked) now, before the episodes
        cli.check_output_file(args.video, "--video", (".mp4", ".gif"))

    results = {}
    width = evaluate.episode_width(trainer.env, args.episodes)
    bar = progress_bar(args, width)
    mujoco_episodes = []
    try:
        if args.sim in ("mjx", "both"):
            results["mjx"] = evaluate.mjx_episodes(trainer, state, keys, max_steps, mode,
                                                   width=width, progress=bar)
        if args.sim in ("mujoco", "both"):
            keep = 1 if args.video else 0  # only episode 0 is rendered
            mujoco_episodes = evaluate.mujoco_episodes(
                trainer, state, keys, max_steps, mode, env=sim_env, keep_states=keep,
                progress=bar)
            results["mujoco"] = (np.array([e.episode_return for e in mujoco_episodes]),
                                 np.array([e.length for e in mujoco_episodes]))
    finally:
        if bar is not None:
            bar.close()  # its line cleared, also before an error's one line
    first, *rest = results  # "mjx" (when run) at the top level, "mujoco" beside it
    # which of these episodes replays training's logged evaluation: one run as it ran (with
    # another step limit too, where the episode ended before either limit)
    def replays(name):
        ended_before = int(results[name][1][0]) < min(max_steps, cfg.eval_max_steps)
        return (logged is not None and mode == cfg.eval_action
                and logged_sim in (None, _sim_label(name))
                and (max_steps == cfg.eval_max_steps or ended_before))

    replayed_in = next((name for name in results if replays(name)), None)
    out = {
        "checkpoint": os.path.abspath(checkpoint.locate_checkpoints(args.dir)),
        "checkpoint_step": int(meta["batches_done"]),
        "run_index": args.run_index,  # which run of the job, and its seed (and sweep point)
        "run": _run_of(meta, args.run_index),
        "frames": run_frames,
        "failed_batch": failed,
        "policy": mode,
        "episodes": args.episodes,
        "sim": first,
        "replays_logged_eval": replayed_in is not None,
        "replayed_in": replayed_in,
        "logged_eval_return": logged,
        "logged_eval_sim": logged_sim,
        **summary(*results[first]),
    }
    for name in rest:
        out[name] = summary(*results[name])
    if args.video:
        if args.sim == "mujoco":
            out["video"] = render_states(trainer, mujoco_episodes[0], args.video)
        else:
            out["video"] = render_video(trainer, state, mode, keys[0], max_steps, args.video)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"checkpoint {out['checkpoint']} step {out['checkpoint_step']} "
              f"({out['frames']} frames), policy: {mode}")
        note = checkpoint.describe_stop(args.run_index, failed)
        if note:
            print(note)
        print_table(results)
        if out["replays_logged_eval"]:
            where = "" if replayed_in == first else f" in {SIM_NAMES[replayed_in]}"
            print(f"episode 0{where} replays the evaluation logged in training after batch "
                  f"{step - 1} (return {logged:.2f})")
        elif args.seed is None:
            print(_no_replay(step, logged, mode, max_steps, cfg,
                             (logged_sim, _sim_label(first))))
    return 0


def _sim_label(sim: str) -> str:
    """Where this command's ``sim`` episodes run, as a run records where its evaluations ran
    (:func:`ppo_jax.run.runner.eval_sim_label`): MuJoCo C, or MJX on JAX's default device."""
    import jax

    from ppo_jax.run.runner import eval_sim_label

    return eval_sim_label(sim, jax.default_backend())


def _described_sim(label: str) -> str:
    return "MuJoCo C" if label == "mujoco" else f"MJX on the {label.partition(':')[2]}"


def _no_replay(step, logged, mode, max_steps, cfg, sims=(None, None)) -> str:
    """Why episode 0 (its start state that of training's evaluation after the checkpoint's
    last batch) does not replay an evaluation logged in training; ``sims``: where that one
    ran (None: not recorded) and where these episodes ran."""
    if logged is None:
        return (f"batch {step - 1} has no evaluation logged in training: nothing to replay"
                if step > 0 else "no batch trained yet: nothing to replay")
    differs = [f"{what} {ours} (training's {theirs})"
               for what, ours, theirs in (("policy", mode, cfg.eval_action),
                                          ("max steps", max_steps, cfg.eval_max_steps))
               if ours != theirs]
    theirs, ours = sims
    if theirs is not None and theirs != ours:
        platform = theirs.partition(":")[2]
        cure = (f"; JAX_PLATFORMS={platform} evaluates there" if platform
                and ours.startswith("mjx:") else "; --sim mujoco replays it"
                if theirs == "mujoco" else "")
        differs.append(f"simulated in {_described_sim(ours)} (training's in "
                       f"{_described_sim(theirs)}: the same episode, other rounding{cure})")
    return (f"episode 0 starts as training's evaluation after batch {step - 1} (return "
            f"{logged:.2f}) but does not replay it: {', '.join(differs)}")


SIM_NAMES = {"mjx": "MJX", "mujoco": "MuJoCo C"}


class _Bar:
    """A tqdm bar over episodes (on stderr); called with the episodes that landed."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.tqdm = tqdm(total=total, unit="episodes", dynamic_ncols=True, leave=False)

    def __call__(self, n: int) -> None:
        self.tqdm.update(n)

    def close(self) -> None:
        self.tqdm.close()


def progress_bar(args, width: int) -> _Bar | None:
    """The bar where it tells something: MJX's episodes in more than one chunk of ``width``,
    or more than one MuJoCo C episode (each a host loop); None with ``--no-progress``."""
    mjx = args.sim in ("mjx", "both") and args.episodes > width
    mujoco = args.sim in ("mujoco", "both") and args.episodes > 1
    if args.no_progress or not (mjx or mujoco):
        return None
    return _Bar(args.episodes * (2 if args.sim == "both" else 1))


def summary(returns, lengths) -> dict:
    """Statistics of episode returns / lengths ``[E]``."""
    returns = np.asarray(returns, np.float64)
    lengths = np.asarray(lengths)
    return {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "mean_steps": float(lengths.mean()),
        "returns": returns.tolist(),
        "steps": [int(n) for n in lengths],
    }


def print_table(results: dict) -> None:
    """One row per episode, a return and a step column per simulator, then the means."""
    head = f"{'episode':>7}"
    for name in results:
        head += f" {SIM_NAMES[name] + ' return':>16} {'steps':>6}"
    print(head)
    rows = zip(*[zip(*results[name]) for name in results])
    for i, row in enumerate(rows):
        print(f"{i:>7}" + "".join(f" {r:>16.2f} {int(n):>6}" for r, n in row))
    for name, (returns, lengths) in results.items():
        print(f"{SIM_NAMES[name]}: mean return {np.mean(returns):.2f} +- {np.std(returns):.2f}, "
              f"mean steps {np.mean(lengths):.1f}")


def check_rendering(env) -> None:
    """CLIError (one line) unless MuJoCo's renderer can draw ``env`` here: a GL context
    and a MuJoCo model (a tiny renderer, made and closed)."""
    import warnings

    from ppo_jax.eval import render

    model = getattr(env, "mj_model", None)
    if model is None:
        raise cli.CLIError(f"--video: {getattr(env, 'env_id', type(env).__name__)} has no "
                           "MuJoCo model to render")
    with warnings.catch_warnings():  # a GL backend that cannot start warns before it fails
        warnings.simplefilter("ignore")
        try:
            render.make_renderer(model, 8, 8).close()
        except render.RenderUnavailable as e:
            raise cli.CLIError(f"--video: {e}") from None


def render_states(trainer, episode, path) -> str:
    """Render a MuJoCo C episode's states to ``path``; CLIError when it cannot."""
    from ppo_jax.eval import render

    env = trainer.env
    return _render(lambda: render.render_episode(env.mj_model, episode.qpos, episode.qvel,
                                                 env.dt, path, getattr(env, "camera", None)),
                   path)


def render_video(trainer, state, mode, key, max_steps, path) -> str:
    """Render the MJX episode of ``key`` (one jitted rollout) to ``path``; CLIError (one
    line: how to get an offscreen GL context) when it cannot."""
    from ppo_jax.eval import render

    return _render(lambda: render.render_policy_episode(trainer, state, key, max_steps, path,
                                                        mode), path)


def _render(draw, path) -> str:
    """``draw()``, its failures as one line."""
    from ppo_jax.eval import render
    from ppo_jax.util import first_line

    try:
        return draw()
    except render.RenderUnavailable as e:
        raise cli.CLIError(f"--video: {e}") from None
    except (OSError, ValueError, RuntimeError) as e:
        raise cli.CLIError(f"--video: could not write {path}: "
                           f"{first_line(e) or type(e).__name__}") from None


def run() -> None:
    """Console entry point (``ppo-jax-evaluate``, ``scripts/evaluate.py``)."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
