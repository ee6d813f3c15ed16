"""``scripts/benchmark.py --playground [ENV]``: ppo_jax against MuJoCo Playground's own
Brax-PPO trainer on a Playground env (default ``CartpoleBalance``), side by side.

Playground's side is ``brax.training.agents.ppo.train`` called as Playground's
``learning/train_jax_ppo.py`` calls it (:mod:`ppo_jax.bench.worker_playground`) with
Playground's published parameters (``mujoco_playground.config.dm_control_suite_params.
brax_ppo_config(ENV)``), only shorter (:func:`brax_settings`). ppo_jax's side is
``scripts/train.py --env playground:ENV`` with a many-env config of
:func:`ppo_jax.bench.configs.scaled_config` at the same total frames (:func:`ppo_jax_config`).

Each system runs twice, each time in a fresh subprocess (:func:`ppo_jax.bench.driver.
run_worker`): cold (the whole run, from an empty compilation cache) and warm (the same spec
again with the cache the cold run filled, stopped after its first training step). The figures
(:func:`summarize`): cold and warm start (seconds from launching the subprocess to the end of
its first training step, and that minus the step's own time at the steady rate), training
frames/s (evaluation excluded) and frames/s as run (evaluation included), and the evaluation
returns at equal frames (:func:`returns_at_equal_frames`). The README beside this module says
what separates the two trainers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Callable

from ppo_jax.bench import configs
from ppo_jax.bench.report import command_line, fmt_num
from ppo_jax.config import PPOConfig

DEFAULT_ENV = "CartpoleBalance"
DEFAULT_PPO_JAX_ENVS = (256,)
PLAYGROUND_NUM_EVAL_ENVS = 128  # learning/train_jax_ppo.py's --num_eval_envs default
PLAYGROUND_SEED_NOTE = "learning/train_jax_ppo.py's --seed default is 1"
MAX_PPO_JAX_EVALS = 20  # ppo_jax's default evaluation cadence: at most ~20 per run
SCALED_KEYS = ("num_timesteps", "num_evals", "num_resets_per_eval")
DIFFERENCES_SECTION = "Playground's Brax-PPO against ppo_jax: what differs"

# the smoke test's sizes (--smoke): NOT Playground's parameters, only a check that runs
SMOKE_BRAX = dict(num_envs=16, batch_size=16, num_minibatches=4, unroll_length=8,
                  num_updates_per_batch=2, episode_length=50)
SMOKE_EVAL_ENVS = 2
SMOKE_PPO_JAX_ENVS = (16,)
SMOKE_TRAINING_STEPS = 8


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
def published_params(env_name: str) -> dict[str, Any]:
    """Playground's published Brax-PPO parameters of ``env_name`` (a DM Control Suite env),
    as plain JSON-able values."""
    from mujoco_playground.config import dm_control_suite_params

    params = dict(dm_control_suite_params.brax_ppo_config(env_name))
    if "network_factory" in params:  # none for the DM Control Suite's state envs
        raise ValueError(f"{env_name}: a network_factory in Playground's config is not "
                         "supported by this benchmark")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}


def frames_per_training_step(params: dict[str, Any]) -> int:
    """Env steps of one Brax training step: batch_size x unroll_length x num_minibatches x
    action_repeat (983,040 with Playground's DM Control Suite parameters)."""
    return (params["batch_size"] * params["unroll_length"] * params["num_minibatches"]
            * params.get("action_repeat", 1))


def published_run_frames(params: dict[str, Any]) -> int:
    """Frames Brax actually trains with ``params``: (num_evals - 1) x num_resets_per_eval
    epochs of ceil(num_timesteps / that / step) training steps (88,473,600 for 60M)."""
    step = frames_per_training_step(params)
    evals = max(params["num_evals"] - 1, 1)
    resets = max(params.get("num_resets_per_eval", 0), 1)
    per_epoch = math.ceil(params["num_timesteps"] / (evals * step * resets))
    return evals * resets * per_epoch * step


def total_frames(requested: int, params: dict[str, Any], env_counts) -> int:
    """The smallest multiple of Brax's training step (and of every ppo_jax env count) that is
    >= ``requested`` and holds at least two training steps (the first one compiles: the
    second gives the steady rate)."""
    step = frames_per_training_step(params)
    unit = math.lcm(step, *env_counts)
    want = max(int(requested), 2 * step)
    return -(-want // unit) * unit


def scale_envs(params: dict[str, Any], num_envs: int) -> dict[str, Any]:
    """``--brax-envs N``: Playground's num_envs and batch_size both scaled by N / num_envs,
    so that each env still runs the same unrolls per training step, a minibatch is still
    batch_size / num_envs of them from every env, and the epochs and minibatch count stay:
    the training step shrinks by the same factor (for a CPU). ``{"from": ..., "to": ...}``."""
    n0, b0 = params["num_envs"], params["batch_size"]
    if num_envs < 1 or (b0 * num_envs) % n0:
        raise ValueError(f"--brax-envs {num_envs}: Playground's batch_size {b0} x {num_envs} / "
                         f"num_envs {n0} is not a whole number")
    return {"from": {"num_envs": n0, "batch_size": b0},
            "to": {"num_envs": num_envs, "batch_size": b0 * num_envs // n0}}


def brax_settings(params: dict[str, Any], total: int, *, seed: int,
                  num_eval_envs: int = PLAYGROUND_NUM_EVAL_ENVS) -> dict[str, Any]:
    """Keyword arguments of ``ppo.train`` (besides the env, the network factory, the wrapper
    and the callbacks): Playground's ``params`` with the run scaled to ``total`` frames.

    ``total`` is a whole number S of training steps. Every other parameter is Playground's;
    the three that set the run's length change: ``num_timesteps = total``, ``num_evals = S +
    1`` (an evaluation before training and after every training step; Playground's 10 are
    spread over 90 steps) and ``num_resets_per_eval = 1`` when Playground's is > 0 (Brax runs
    that many training epochs per evaluation and resets every env after each; Playground's 10
    resets per evaluation of 1-step epochs also reset every env after every training step,
    so the S steps train exactly as the published run's first S). ``num_eval_envs`` and
    ``run_evals``: Playground's script's defaults (128, True); ``deterministic_eval`` stays
    Brax's default (False), as that script leaves it.
    """
    step = frames_per_training_step(params)
    if total % step:
        raise ValueError(f"total frames {total} is not a whole number of Brax training steps "
                         f"of {step}")
    steps = total // step
    s = dict(params)
    s.update(num_timesteps=total, num_evals=steps + 1,
             num_resets_per_eval=1 if params.get("num_resets_per_eval", 0) > 0 else 0,
             seed=seed, num_eval_envs=num_eval_envs, run_evals=True)
    return s


def ppo_jax_config(env_name: str, num_envs: int, total: int, *, seed: int,
                   eval_every_frames: int, matmul_precision: str = "highest") -> PPOConfig:
    """ppo_jax's run: :func:`configs.scaled_config` (``num_envs`` envs x T steps, 15
    minibatches, 10 epochs, the tutorial's other settings) on ``playground:ENV``, evaluating
    about every ``eval_every_frames`` frames."""
    if num_envs == 1:
        raise ValueError("1 env is the tutorial's 1000-frame batch: a run of whole Brax "
                         "training steps does not split into them; use --envs N with N > 1")
    return configs.scaled_config(num_envs, total, seed=seed, eval_every_frames=eval_every_frames,
                                 matmul_precision=matmul_precision).replace(
        env=f"playground:{env_name}")


def eval_every_default(step: int, frames_per_batch: int, total: int) -> int:
    """ppo_jax's evaluation interval (frames) when ``--eval-every-frames`` is not given: a
    whole fraction of Brax's training step (so that ppo_jax evaluates one batch after each of
    Brax's evaluations), the shortest one that gives at most :data:`MAX_PPO_JAX_EVALS`
    evaluations in the run (each is a sequential episode); ``total // MAX_PPO_JAX_EVALS``
    when the step is not a whole number of batches."""
    want = -(-total // MAX_PPO_JAX_EVALS)
    if step % frames_per_batch:
        return max(want, frames_per_batch)
    batches = step // frames_per_batch
    for d in range(batches, 0, -1):
        if batches % d == 0 and (batches // d) * frames_per_batch >= want:
            return (batches // d) * frames_per_batch
    return step


def describe_brax(s: dict[str, Any]) -> str:
    """One line of Brax's configuration."""
    step = frames_per_training_step(s)
    return (f"{s['num_envs']} envs, {step:,}/training step "
            f"({s['batch_size'] * s['num_minibatches'] // s['num_envs']} unrolls of "
            f"{s['unroll_length']} per env), {s['num_updates_per_batch']} epochs of "
            f"{s['num_minibatches']} mb x {s['batch_size']}x{s['unroll_length']}")


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """What runs: Brax's settings, ppo_jax's configs, the total frames, what was scaled."""
    env_name = args.playground
    params = published_params(env_name)
    published_frames = published_run_frames(params)
    env_counts = list(args.envs)
    scaled_from = None
    envs_scaled = None
    if getattr(args, "smoke", False):
        scaled_from = {k: params[k] for k in SMOKE_BRAX}
        params.update(SMOKE_BRAX)
    elif getattr(args, "brax_envs", None) and args.brax_envs != params["num_envs"]:
        envs_scaled = scale_envs(params, args.brax_envs)
        params.update(envs_scaled["to"])
    total = total_frames(args.total_frames, params, env_counts)
    brax = brax_settings(params, total, seed=args.seed,
                         num_eval_envs=SMOKE_EVAL_ENVS if scaled_from else
                         PLAYGROUND_NUM_EVAL_ENVS)
    step = frames_per_training_step(params)
    ppo = {}
    for n in env_counts:
        fpb = ppo_jax_config(env_name, n, total, seed=args.seed,
                             eval_every_frames=0).frames_per_batch
        every = args.eval_every_frames or (total // 2 if scaled_from else
                                           eval_every_default(step, fpb, total))
        ppo[n] = ppo_jax_config(env_name, n, total, seed=args.seed, eval_every_frames=every,
                                matmul_precision=args.matmul_precision)
    if scaled_from:
        ppo = {n: c.replace(max_episode_steps=SMOKE_BRAX["episode_length"],
                            eval_max_steps=SMOKE_BRAX["episode_length"], hidden_sizes=(16, 16),
                            init_stats_frames=50)
               for n, c in ppo.items()}
    return {
        "env": env_name, "requested_frames": args.total_frames, "total_frames": total,
        "frames_per_training_step": step, "training_steps": total // step,
        "published": {k: params[k] for k in SCALED_KEYS} if not scaled_from else None,
        "published_run_frames": None if scaled_from else published_frames,
        "smoke": scaled_from, "envs_scaled": envs_scaled,
        "brax": brax, "brax_description": describe_brax(brax),
        "ppo_jax": {n: c.to_dict() for n, c in ppo.items()},
        "ppo_jax_description": {n: configs.describe_config("ppo_jax", c.to_dict())
                                for n, c in ppo.items()},
        "eval_every_frames": {n: c.eval_every * c.frames_per_batch for n, c in ppo.items()},
    }


# ----------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------
def _specs(p: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, str, dict]]:
    """(key, label, worker spec) of every row: Brax first, then ppo_jax at each env count
    (``--systems``: ``brax`` is Playground's trainer here, ``torchrl`` has no row)."""
    systems = getattr(args, "systems", None) or ("brax", "ppo_jax")
    rows = []
    if "brax" in systems:
        rows.append(("brax_playground", "Playground Brax-PPO",
                     {"kind": "brax_playground", "env_name": p["env"], "settings": p["brax"],
                      "matmul_precision": args.matmul_precision}))
    if "ppo_jax" in systems:
        for n, cfg in p["ppo_jax"].items():
            rows.append((f"ppo_jax_{n}", f"ppo_jax, {n} envs",
                         {"kind": "ppo_jax", "config": cfg}))
    return rows


def _run(spec: dict[str, Any], timeout: float) -> tuple[dict[str, Any], float]:
    """One run in a fresh subprocess (the driver's ``run_worker``), told when it was launched;
    returns its result and the subprocess's wall seconds."""
    from ppo_jax.bench.driver import run_worker

    t = time.time()
    result = run_worker(dict(spec, launched_unix=t), timeout)
    return result, time.time() - t


def measure(p: dict[str, Any], args: argparse.Namespace,
            log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per row: the cold run (the whole run; an empty cache unless ``--compile-cache``) and
    the warm run (the same spec, the same cache, stopped after the first training step)."""
    out = []
    rows = _specs(p, args)
    for k, (key, label, spec) in enumerate(rows):
        row: dict[str, Any] = {"key": key, "label": label, "errors": []}
        with tempfile.TemporaryDirectory(prefix="ppo_jax_bench_pg_cache") as tmp:
            cache = args.compile_cache or tmp
            spec = dict(spec, compile_cache=cache)
            for mode in ("cold", "warm"):
                run_spec = spec if mode == "cold" else dict(
                    spec, **({"stop_after_steps": 1} if spec["kind"] == "brax_playground"
                             else {"stop": 1}))
                log(f"[{2 * k + (mode == 'warm') + 1}/{2 * len(rows)}] {label}: {mode} run"
                    + (" (the whole run)" if mode == "cold" else
                       " (the same cache, stopped after the first training step)"))
                try:
                    result, wall = _run(run_spec, args.timeout)
                except RuntimeError as e:
                    row["errors"].append(f"{mode}: {e}")
                    log(f"    failed: {e}")
                    if mode == "cold":
                        break
                    continue
                result["wall_s"] = wall
                row[mode] = result
                log(f"    {wall:.0f} s wall")
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------
def _launch(result: dict[str, Any]) -> float:
    """Seconds from launching the subprocess to the worker's t0 (its heavy imports)."""
    v = result.get("launch_to_t0_s")
    return float(v) if v is not None else float(result.get("import_s") or 0.0)


def _ppo_jax_train_fps(result: dict[str, Any], cfg: dict[str, Any]) -> float | None:
    """ppo_jax's frames/s over the batches that did not evaluate (a batch's mark is read one
    batch behind: a batch next to an evaluating one is left out too)."""
    c = PPOConfig.from_dict(cfg)
    marks = result["marks"]
    fpb = c.frames_per_batch
    frames = secs = 0.0
    for (f0, t0), (f1, t1) in zip(marks, marks[1:]):
        j = f1 // fpb - 1  # the batch whose mark is (f1, t1)
        if any(c.eval_every and c.is_eval_batch(b) for b in (j - 1, j, j + 1)):
            continue
        frames += f1 - f0
        secs += t1 - t0
    return frames / secs if secs > 0 else None


def summarize(row: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """The row's figures from its cold and warm runs."""
    cold, warm = row.get("cold"), row.get("warm")
    d: dict[str, Any] = {"key": row["key"], "label": row["label"], "errors": row["errors"]}
    if row["key"] == "brax_playground":
        d["description"] = p["brax_description"]
        step = p["frames_per_training_step"]
        first_frames = step
    else:
        n = row["key"].rsplit("_", 1)[1]  # p's keys as the JSON holds them: strings
        cfg = p["ppo_jax"][n]
        d["description"] = p["ppo_jax_description"][n]
        first_frames = cfg["frames_per_batch"]
    if cold is None:
        return d
    marks = cold["marks"]
    if row["key"] == "brax_playground":
        # Brax's own training/sps of each epoch after the first (the first one compiles)
        sps = [v for _, v in cold.get("sps") or []][1:]
        train_fps = sum(sps) / len(sps) if sps else None
    else:
        train_fps = _ppo_jax_train_fps(cold, cfg)
    (f1, t1), (fn, tn) = marks[0], marks[-1]
    run_fps = (fn - f1) / (tn - t1) if len(marks) > 1 and tn > t1 else None
    late = [c for c in cold.get("compiles") or [] if t1 < c[0] <= tn]
    if late:  # XLA compilations of >= 1 s between the first and the last step's end
        d["late_compiles"] = late
    d.update(
        train_fps=train_fps, run_fps=run_fps, frames=fn, run_wall_s=cold["wall_s"],
        peak_rss_mib=cold.get("peak_rss_mib"), compile_s=cold.get("compile_s"),
        evals=[(f, _launch(cold) + t, r) for f, t, r in cold["evals"]],
        marks=[(f, _launch(cold) + t) for f, t in marks],
    )
    for mode, res in (("cold", cold), ("warm", warm)):
        if res is None or not res.get("marks"):
            continue
        first = _launch(res) + res["marks"][0][1]
        d[f"{mode}_first_step_s"] = first
        d[f"{mode}_startup_s"] = first - first_frames / train_fps if train_fps else None
        d[f"{mode}_compile_s"] = res.get("compile_s")
        d[f"{mode}_import_s"] = _launch(res)
        if row["key"] == "brax_playground":
            d[f"{mode}_cache"] = res.get("cache")
            initial = next((t for f, t, _ in res["evals"] if f == 0), None)
            d[f"{mode}_initial_eval_end_s"] = None if initial is None else _launch(res) + initial
        else:
            d[f"{mode}_programs_from"] = {name: info.get("source") for name, info in
                                          (res.get("compile") or {}).items()} or None
    return d


def returns_at_equal_frames(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At each of Brax's evaluations: its return, and each ppo_jax row's evaluation nearest
    in frames (with its frames), with the seconds since launch of each."""
    brax = next((d for d in results if d["key"] == "brax_playground" and d.get("evals")), None)
    others = [d for d in results if d["key"] != "brax_playground" and d.get("evals")]
    points = []
    base = brax["evals"] if brax else (others[0]["evals"] if others else [])
    for f, t, r in base:
        row = {"frames": f, "brax": None if brax is None else {"return": r, "s": t}}
        for d in others:
            ff, tt, rr = min(d["evals"], key=lambda e: (abs(e[0] - f), e[0]))
            row[d["key"]] = {"frames": ff, "return": rr, "s": tt}
        points.append(row)
    return points


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------
def differences() -> tuple[str, ...]:
    """What separates the two trainers, from this package's README."""
    from ppo_jax.bench.report import README, markdown_bullets

    with open(README, encoding="utf-8") as f:
        return tuple(markdown_bullets(f.read(), DIFFERENCES_SECTION))


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The tables: start-up and throughput; evaluation returns at equal frames."""
    p = meta["plan"]
    lines = [f"MuJoCo Playground `{p['env']}`: Playground's own Brax-PPO trainer vs ppo_jax, "
             f"{p['total_frames']:,} frames each ({p['training_steps']} Brax training steps "
             f"of {p['frames_per_training_step']:,}; requested {p['requested_frames']:,})."]
    if p["smoke"]:
        lines.append("SMOKE SIZES: Brax's structure shrunk (" + ", ".join(
            f"{k} {v}" for k, v in sorted(SMOKE_BRAX.items())) + f", {SMOKE_EVAL_ENVS} eval "
            "envs) and ppo_jax's networks 16x16: a check that the command runs, not a "
            "measurement.")
    else:
        pub = p["published"]
        if p["envs_scaled"]:
            f, t = p["envs_scaled"]["from"], p["envs_scaled"]["to"]
            lines.append(
                f"NOT PLAYGROUND'S ENV COUNT (--brax-envs): num_envs {f['num_envs']} -> "
                f"{t['num_envs']} and batch_size {f['batch_size']} -> {t['batch_size']} (the "
                f"same unrolls per env, minibatches and epochs per training step; the step "
                f"{f['num_envs'] // t['num_envs']}x shorter, so "
                f"{f['num_envs'] // t['num_envs']}x more gradient steps per frame).")
        lines.append(
            f"Playground's published parameters except the run's length: its num_timesteps "
            f"{pub['num_timesteps']:,} (which Brax rounds up to {p['published_run_frames']:,} "
            f"frames), num_evals {pub['num_evals']}, num_resets_per_eval "
            f"{pub['num_resets_per_eval']} are scaled down to num_timesteps "
            f"{p['brax']['num_timesteps']:,}, num_evals {p['brax']['num_evals']}, "
            f"num_resets_per_eval {p['brax']['num_resets_per_eval']} (--total-frames).")
    dev = meta["device"]
    lines.append(f"Device: {dev['cpu']} ({dev['cpu_count']} cores); JAX backend "
                 f"{dev.get('jax_backend') or '–'}; load average "
                 f"{meta['loadavg'][0]:.1f} before, {meta['loadavg'][1]:.1f} after.")
    cache = meta["settings"]["compile_cache"]
    lines.append("Cold runs started from an empty compilation cache; warm runs from the cache "
                 "their cold run filled (ppo_jax: its program store + JAX's persistent cache; "
                 "Brax: JAX's persistent cache, enabled the same way)." if not cache else
                 f"The cold runs used the existing cache {cache} (not emptied): their "
                 "start-up is NOT a cold start.")
    lines.append("")
    lines.append("| system | config | cold: 1st training step done, s | cold start-up s | "
                 "warm: 1st training step done, s | warm start-up s | training frames/s | "
                 "frames/s with evaluations | cold run wall s | peak RSS MiB |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in results:
        if "train_fps" not in d:
            why = "; ".join(d["errors"]) or "no result"
            lines.append(f"| {d['label']} | {d['description']} | failed: {why[:200]} "
                         "| | | | | | | |")
            continue
        lines.append(
            f"| {d['label']} | {d['description']} "
            f"| {fmt_num(d.get('cold_first_step_s'), '{:.1f}')} "
            f"| {fmt_num(d.get('cold_startup_s'), '{:.1f}')} "
            f"| {fmt_num(d.get('warm_first_step_s'), '{:.1f}')} "
            f"| {fmt_num(d.get('warm_startup_s'), '{:.1f}')} | {fmt_num(d['train_fps'])} "
            f"| {fmt_num(d['run_fps'])} | {fmt_num(d['run_wall_s'])} "
            f"| {fmt_num(d['peak_rss_mib'])} |")
    points = returns_at_equal_frames(results)
    others = [d for d in results if d["key"] != "brax_playground" and d.get("evals")]
    if points:
        lines.append("")
        lines.append("Evaluation return at equal frames (Brax: mean of its "
                     f"{p['brax']['num_eval_envs']} stochastic eval episodes; ppo_jax: one "
                     "deterministic episode, its evaluation nearest in frames; in brackets: "
                     "seconds since the cold run's subprocess was launched):")
        lines.append("")
        head = "| frames | Playground Brax-PPO |" + "".join(
            f" {d['label']} | at frames |" for d in others)
        lines.append(head)
        lines.append("| ---: | ---: |" + " ---: | ---: |" * len(others))
        for pt in points:
            b = pt["brax"]
            cells = [f"{pt['frames']:,}",
                     "–" if b is None else f"{b['return']:.1f} ({b['s']:.0f} s)"]
            for d in others:
                e = pt[d["key"]]
                cells += [f"{e['return']:.1f} ({e['s']:.0f} s)", f"{e['frames']:,}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(results: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """The notes under the tables (and in the JSON)."""
    p = meta["plan"]
    out = [
        "1st training step done: seconds from launching the fresh subprocess to the end of "
        "the first training step (Brax: one training step of "
        f"{p['frames_per_training_step']:,} frames, after Playground's evaluation before "
        "training, which Brax runs first; ppo_jax: its first batch of "
        + ", ".join(f"{c['frames_per_batch']:,} frames" for c in p["ppo_jax"].values())
        + ", its first evaluation included). Start-up: that minus the step's own time at the "
        "training rate (imports, env set-up, tracing and compiling or loading, Brax's initial "
        "evaluation).",
        "training frames/s: evaluation excluded (Brax: its own training/sps of every training "
        "epoch after the first; ppo_jax: the batches that do not evaluate, after the first). "
        "frames/s with evaluations: frames between the first and the last training step's end "
        "/ seconds between them (Brax evaluates after every step here, "
        f"{p['brax']['num_eval_envs']} envs x {p['brax']['episode_length']} steps; ppo_jax: "
        + ", ".join(f"every {p['eval_every_frames'][n]:,} frames, 1 env x up to "
                    f"{c['eval_max_steps']} steps" for n, c in p["ppo_jax"].items()) + ").",
        "warm run: the same spec in a new subprocess with the cold run's cache, stopped after "
        "its first training step. ppo_jax's programs came from: "
        + "; ".join(f"{d['label']}: {d.get('warm_programs_from')}" for d in results
                    if d["key"] != "brax_playground" and "train_fps" in d)
        + ". Brax's JAX-cache hits/misses, cold then warm: "
        + "; ".join(f"{d.get('cold_cache')} then {d.get('warm_cache')}" for d in results
                    if d["key"] == "brax_playground" and "train_fps" in d) + ".",
        *[f"{d['label']}: {len(d['late_compiles'])} XLA compilation(s) of >= 1 s after the "
          f"first training step ({sum(c[1] for c in d['late_compiles']):.1f} s) count in its "
          "frames/s with evaluations"
          + (" (Brax compiles its evaluation program a second time after the first training "
             "step: the normalizer state it starts from holds a weak-typed scalar, which "
             "Brax's _strip_weak_type removes from the trained state)"
             if d["key"] == "brax_playground" else "") + "."
          for d in results if d.get("late_compiles")],
        "ppo_jax config: N envs x T steps per env = frames per batch; 'mb' = minibatches per "
        "epoch x minibatch size; 10 epochs; otherwise the TorchRL tutorial's settings "
        "(configs.scaled_config).",
    ]
    if meta.get("brax_patched"):
        from ppo_jax.bench.worker_brax import BRAX_PATCH_NOTE

        out.append(BRAX_PATCH_NOTE)
    out.append(f"Brax ran with seed {p['brax']['seed']} ({PLAYGROUND_SEED_NOTE}), no "
               "checkpoints saved (Playground's script saves one per evaluation), env config "
               "impl='jax' (Playground's default is MuJoCo Warp, which needs an NVIDIA GPU).")
    return out


def load_runs(path: str, p: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``--replay PATH``: the runs of an earlier ``--json`` (written after measuring or at the
    end), refused unless they were planned as ``p`` (the same flags); and its meta."""
    from ppo_jax.cli.common import CLIError
    from ppo_jax.util import JsonFileError, read_json_file

    try:
        saved = read_json_file(path)
    except JsonFileError as e:
        raise CLIError(f"--replay: {e}") from None
    if not isinstance(saved, dict) or "runs" not in saved or "plan" not in saved:
        raise CLIError(f"--replay {path}: not a --playground --json file")
    same = json.loads(json.dumps(p, default=str))
    for key in ("brax", "ppo_jax", "total_frames", "env"):
        if saved["plan"].get(key) != same.get(key):
            raise CLIError(f"--replay {path}: its runs were planned with other flags ({key} "
                           "differs); give the flags of the command that measured them")
    return saved["runs"], saved


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """``--playground``'s plan and, with ``--replay``, the runs it replays
    (:func:`load_runs`): every refusal of the command before anything is written."""
    try:
        p = plan(args)
    except ValueError as e:
        from ppo_jax.cli.common import CLIError

        raise CLIError(str(e)) from None
    p = json.loads(json.dumps(p, default=str))  # as the JSON holds it (env counts as keys)
    replay = getattr(args, "replay", None)
    return p, (load_runs(replay, p) if replay else None)


def run(args: argparse.Namespace, prog: str, argv: list[str] | None,
        prepared: tuple[dict[str, Any], Any] | None = None) -> int:
    """``--playground``: plan, measure (or ``--replay`` an earlier JSON's runs), print the
    tables and notes, write ``--json``; exit status 1 when a run failed. ``prepared``:
    :func:`prepare`'s (default: made here)."""
    from ppo_jax.bench.driver import device_summary
    from ppo_jax.util import PACKAGES, versions

    started = datetime.datetime.now(datetime.timezone.utc)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    p, replayed = prepared if prepared is not None else prepare(args)
    log(f"{p['env']}: {p['total_frames']:,} frames per run (requested "
        f"{p['requested_frames']:,}; {p['training_steps']} Brax training steps of "
        f"{p['frames_per_training_step']:,}); ppo_jax at "
        + ", ".join(f"{n} envs" for n in p["ppo_jax"]))
    replay = getattr(args, "replay", None)
    if replayed is not None:
        rows, saved = replayed
        loadavg = saved.get("loadavg")
        log(f"replaying the runs of {replay} (measured {saved.get('started_utc', '?')})")
    else:
        saved = {}
        load0 = os.getloadavg()[0]
        rows = measure(p, args, log)
        loadavg = [round(load0, 2), round(os.getloadavg()[0], 2)]
        if args.json:  # the raw runs first: a report that fails leaves them
            with open(args.json, "w") as f:
                json.dump({"plan": p, "runs": rows, "loadavg": loadavg,
                           "started_utc": started.isoformat(timespec="seconds")}, f,
                          default=str)
    results = [summarize(r, p) for r in rows]
    device = device_summary([{"system": "brax" if r["key"] == "brax_playground" else "ppo_jax",
                              "runs": [r.get("cold") or {}]} for r in rows])
    meta: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": saved.get("started_utc") or started.isoformat(timespec="seconds"),
        "command": command_line(prog, argv),
        "settings": {"playground": args.playground, "envs": list(args.envs),
                     "requested_frames": args.total_frames, "seed": args.seed,
                     "matmul_precision": args.matmul_precision,
                     "compile_cache": args.compile_cache, "smoke": bool(args.smoke),
                     "brax_envs": args.brax_envs, "systems": list(args.systems)},
        "plan": p, "versions": saved.get("versions") or versions(tuple(PACKAGES) + ("playground",)),
        "device": device, "loadavg": loadavg or [float("nan")] * 2, "replayed_from": replay,
        "brax_patched": any((r.get("cold") or {}).get("patched") for r in rows),
    }
    meta["returns_at_equal_frames"] = returns_at_equal_frames(results)
    meta["notes"] = notes(results, meta)
    meta["differences"] = list(differences())
    print(markdown(results, meta))
    print()
    for n in meta["notes"]:
        print(f"- {n}")
    print("- What separates the two trainers (ppo_jax/bench/README.md):")
    for n in meta["differences"]:
        print(f"  - {n}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(meta, rows=results, runs=rows), f, indent=1, default=str)
        print(f"\nwrote {args.json}")
    return 1 if any(d["errors"] for d in results) else 0
