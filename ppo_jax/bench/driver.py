"""The benchmark's driver: the rows to measure, one fresh subprocess per run (interleaved and
repeated), and the figures of each row from its runs' per-batch marks."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from ppo_jax.bench.configs import (TUTORIAL, brax_settings, describe_config, scaled_config,
                                   torchrl_settings)
from ppo_jax.config import PPOConfig


# ----------------------------------------------------------------------------------------------
# rows
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    """One system at one configuration, measured ``repeats`` times."""

    key: str
    system: str  # torchrl | torchrl_cuda | ppo_jax | brax
    num_envs: int
    settings: dict[str, Any]
    description: str
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    skipped: str | None = None
    matched: bool = False  # ppo_jax from the same seed's TorchRL start (--matched)
    variant: str = ""  # ppo_jax's fields set by --ppo-jax-config, as FIELD=VALUE text

    @property
    def label(self) -> str:
        """The row's name in the tables."""
        if self.system.startswith("torchrl"):
            return "TorchRL tutorial" + (" (CUDA)" if self.system == "torchrl_cuda" else " (CPU)")
        name = "ppo_jax" if self.system == "ppo_jax" else "Brax PPO"
        label = f"{name}, {'tutorial config' if self.num_envs == 1 else f'{self.num_envs} envs'}"
        return (label + (", TorchRL's start" if self.matched else "")
                + (f" ({self.variant})" if self.variant else ""))


def torchrl_unavailable_reason() -> str | None:
    """Why the TorchRL rows cannot run here (None: they can)."""
    missing = [m for m in ("torch", "torchrl", "tensordict", "gymnasium", "mujoco")
               if importlib.util.find_spec(m) is None]
    if missing:
        return f"TorchRL rows skipped: {', '.join(missing)} not installed (pip install .[torchrl])"
    return None


def torch_cuda_available() -> bool:
    """Whether torch imports here and sees a CUDA device (a TorchRL CUDA row)."""
    try:
        import torch
    except Exception:  # noqa: BLE001  (any import failure means: no CUDA row)
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def brax_unavailable_reason() -> str | None:
    """Why the Brax rows cannot run here (None: they can)."""
    if importlib.util.find_spec("brax") is None:
        return "Brax rows skipped: brax not installed"
    return None


def plan_rows(args: argparse.Namespace, total_frames: int) -> tuple[list[Row], list[str]]:
    """The rows to measure, and one message per system skipped."""
    rows: list[Row] = []
    messages: list[str] = []
    evaluate = getattr(args, "evaluate", args.to_threshold is not None)
    eval_frames = args.eval_every_frames if evaluate else 0
    env = getattr(args, "env", TUTORIAL.env)
    configs = {n: scaled_config(n, total_frames, seed=args.seed, eval_every_frames=eval_frames,
                                matmul_precision=args.matmul_precision).replace(env=env)
               for n in args.env_counts}
    overrides = getattr(args, "ppo_jax_overrides", None) or {}
    variant = " ".join(f"{k}={v}" for k, v in overrides.items())
    ppo_configs = {n: cfg.replace(**overrides) for n, cfg in configs.items()}
    if "torchrl" in args.systems:
        rows += torchrl_rows(configs[1], args.torch_threads or None, messages)
    brax_reason = brax_unavailable_reason() if "brax" in args.systems else None
    if "brax" in args.systems and env != TUTORIAL.env:
        brax_reason = f"Brax rows skipped: they run the pendulum's adapter only, not {env}"
    if brax_reason:
        messages.append(brax_reason)
    for n, cfg in configs.items():
        if "ppo_jax" in args.systems:
            d = ppo_configs[n].to_dict()
            rows.append(Row(f"ppo_jax_{n}", "ppo_jax", n, d, describe_config("ppo_jax", d),
                            variant=variant))
        if "brax" in args.systems:
            st = brax_settings(cfg, evaluate=evaluate)
            rows.append(Row(f"brax_{n}", "brax", n, st, describe_config("brax", st),
                            skipped=brax_reason))
    if getattr(args, "matched", False) and "ppo_jax" in args.systems:
        d = ppo_configs[1].to_dict()
        torchrl_cpu = next((r for r in rows if r.system == "torchrl"), None)
        reason = (None if torchrl_cpu is not None and torchrl_cpu.skipped is None else
                  "matched starts skipped: they need the TorchRL (CPU) row")
        if reason:
            messages.append(reason)
        rows.append(Row("ppo_jax_matched", "ppo_jax", 1, d,
                        describe_config("ppo_jax", d) + "; TorchRL's initial networks and "
                        "normalization statistics", skipped=reason, matched=True,
                        variant=variant))
    return rows, messages


def torchrl_rows(tutorial: PPOConfig, threads: int | None, messages: list[str]) -> list[Row]:
    """The TorchRL tutorial on the CPU (and on CUDA when torch sees a GPU) at the one-env
    config ``tutorial``; one skipped row (and a message) when TorchRL is not installed, or
    for an env that is not one of Gymnasium's (the tutorial's loop runs Gymnasium's envs)."""
    from ppo_jax.envs.registry import PORTS

    reason = (f"TorchRL rows skipped: the tutorial's loop runs Gymnasium's MuJoCo envs "
              f"({', '.join(PORTS)}), not {tutorial.env}" if tutorial.env not in PORTS
              else torchrl_unavailable_reason())
    if reason:
        messages.append(reason)
        description = describe_config("torchrl", torchrl_settings(tutorial, device="cpu"))
        return [Row("torchrl", "torchrl", 1, {}, description, skipped=reason)]
    rows = []
    for dev in ["cpu"] + (["cuda"] if torch_cuda_available() else []):
        system = "torchrl" if dev == "cpu" else "torchrl_cuda"
        st = torchrl_settings(tutorial, device=dev, threads=threads)
        rows.append(Row(system, system, 1, st, describe_config(system, st)))
    return rows


# ----------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------
def _worker_env(shared: bool = False) -> dict[str, str]:
    """This environment, with this checkout first on ``PYTHONPATH``; ``shared`` (runs at
    once): JAX allocates GPU memory as it needs it, not 75% of it up front."""
    env = dict(os.environ)
    if shared:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_worker(spec: dict[str, Any], timeout: float, env: dict[str, str] | None = None
               ) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; raises RuntimeError on failure
    (``spec["shared"]``: other runs share the machine, see :func:`_worker_env`; ``env``:
    variables set for that process, e.g. ``JAX_PLATFORMS``)."""
    with tempfile.TemporaryDirectory(prefix="ppo_jax_bench_") as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        out_path = os.path.join(tmp, "result.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        cmd = [sys.executable, "-m", "ppo_jax.bench.worker", spec_path, out_path]
        try:
            proc = subprocess.run(cmd, env={**_worker_env(bool(spec.get("shared"))),
                                            **(env or {})},
                                  capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {timeout:g} s") from None
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-8:]
            raise RuntimeError(f"exit {proc.returncode}: " + " | ".join(tail))
        with open(out_path) as f:
            return json.load(f)


def _spec(row: Row, args: argparse.Namespace, seed: int | None = None) -> dict[str, Any]:
    """The worker's input for one run of ``row`` (``seed``: the run's seed instead of the
    row's)."""
    kind = "torchrl" if row.system.startswith("torchrl") else row.system
    spec: dict[str, Any] = {"kind": kind, "compile_cache": args.compile_cache,
                            "matmul_precision": args.matmul_precision,
                            "profile": bool(getattr(args, "profile", False))}
    settings = dict(row.settings)
    if seed is not None:
        settings["seed"] = seed
    spec["config" if kind == "ppo_jax" else "settings"] = settings
    return spec


def run_seeds(args: argparse.Namespace) -> list[int]:
    """The seeds every row runs (``--seeds``, else ``--seed``)."""
    return list(getattr(args, "seeds", None) or [args.seed])


def run_jobs(args: argparse.Namespace) -> int:
    """The runs at once (``--jobs``, default 1)."""
    return max(1, int(getattr(args, "jobs", 1) or 1))


def measure(rows: list[Row], args: argparse.Namespace, log=print) -> None:
    """Interleaved, repeated runs: repeat r runs every seed of every row once, starting at row
    r mod n (the matched rows last: each starts from its seed's TorchRL run of the repeat).
    ``args.jobs`` runs at once (default 1: each run has the machine to itself); a matched run
    waits for its TorchRL run."""
    with tempfile.TemporaryDirectory(prefix="ppo_jax_bench_starts") as starts:
        _measure(rows, args, log, starts)


def _measure(rows: list[Row], args: argparse.Namespace, log, starts: str) -> None:
    import concurrent.futures
    import threading

    active = [r for r in rows if r.skipped is None and not r.matched]
    matched = [r for r in rows if r.skipped is None and r.matched]
    seeds = run_seeds(args)
    tasks = []  # (row, repeat, seed, start file) in the order they start
    for rep, seed in ((r, s) for r in range(args.repeats) for s in seeds):
        order = active[rep % len(active):] + active[: rep % len(active)] if active else []
        start_file = os.path.join(starts, f"torchrl_start_seed{seed}_repeat{rep}.pt")
        tasks += [(row, rep, seed, start_file) for row in order + matched]
    lock = threading.Lock()
    stopped = threading.Event()  # --no-keep-going after a failure, or an interrupt
    torchrl_done: dict[str, threading.Event] = {t[3]: threading.Event() for t in tasks}
    counter = iter(range(1, len(tasks) + 1))

    def wait_for_start(start_file: str) -> None:
        """Until the TorchRL run has written its start (it does before its first batch) or
        has ended (without one, when it failed), or the measurement stops."""
        done = torchrl_done[start_file]
        while not done.wait(1.0) and not stopped.is_set():
            if os.path.exists(start_file):
                return

    def run_one(row: Row, rep: int, seed: int, start_file: str) -> None:
        seed_text = f", seed {seed}" if len(seeds) > 1 else ""
        try:
            if row.matched:  # its TorchRL run was submitted earlier
                wait_for_start(start_file)
            with lock:
                if row.skipped is not None or stopped.is_set():  # after a failure
                    return
                log(f"[{next(counter)}/{len(tasks)}] repeat {rep + 1}/{args.repeats}"
                    f"{seed_text}: {row.label} ({row.description})")
            try:
                summary = _one_run(row, args, seed, start_file, bool(matched))
            except (RuntimeError, ValueError) as e:
                with lock:
                    msg = f"repeat {rep + 1}{seed_text}: {e}"
                    row.errors.append(msg)
                    log(f"    {row.label}{seed_text} failed: {msg}")
                    if row.system == "brax" and not row.runs:
                        row.skipped = f"Brax PPO could not run: {e}"
                    if not args.keep_going and row.system != "brax":
                        stopped.set()
                return
        finally:
            if row.system == "torchrl":
                torchrl_done[start_file].set()
        with lock:
            summary.update(seed=seed, repeat=rep + 1)
            row.runs.append(summary)
            extra = f", compile {summary['compile_s']:.1f} s" if summary.get("compile_s") else ""
            log(f"    {row.label}{seed_text}: {summary['fps']:.0f} frames/s, start-up "
                f"{summary['startup_s']:.1f} s{extra}, peak RSS "
                f"{summary['peak_rss_mib']:.0f} MiB, load average "
                f"{summary['loadavg_1m'][0]:.1f} -> {summary['loadavg_1m'][1]:.1f}")
            for key in ("warning", "note"):
                if summary.get(key):
                    log(f"    {key}: {summary[key]}")

    jobs = run_jobs(args)
    if jobs == 1:
        for t in tasks:
            run_one(*t)
        return
    pool = concurrent.futures.ThreadPoolExecutor(jobs)  # FIFO: a TorchRL run starts first
    try:
        for f in [pool.submit(run_one, *t) for t in tasks]:
            f.result()
    except BaseException:  # an interrupt or a bug: the queued runs do not start
        stopped.set()
        for event in torchrl_done.values():
            event.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _one_run(row: Row, args: argparse.Namespace, seed: int, start_file: str,
             save_starts: bool) -> dict[str, Any]:
    """One run of ``row`` at ``seed`` (cold and, with ``--warm``, warm): its summary."""
    load_before = os.getloadavg()[0]
    spec = _spec(row, args, seed)
    spec["shared"] = run_jobs(args) > 1
    if save_starts and row.system == "torchrl":
        spec["settings"]["save_init"] = start_file
    if row.matched:
        if not os.path.exists(start_file):
            raise RuntimeError(f"no TorchRL start for seed {seed} (its run failed)")
        spec["init_from_torchrl"] = start_file
    warm = None
    if getattr(args, "warm", False) and row.system in ("ppo_jax", "brax"):
        with tempfile.TemporaryDirectory(prefix="ppo_jax_bench_cache") as cache:
            spec["compile_cache"] = cache
            result = run_worker(spec, args.timeout)  # cold: the cache is empty
            warm_spec = dict(spec, profile=False)
            warm = summarize_run(run_worker(warm_spec, args.timeout), args.to_threshold)
    else:
        result = run_worker(spec, args.timeout)
    summary = summarize_run(result, args.to_threshold)
    if warm is not None:
        summary["warm"] = {k: warm.get(k) for k in ("startup_s", "compile_s", "threshold_s", "fps")}
    summary["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    summary["raw"] = result
    if result.get("failed_batch") is not None:
        summary["note"] = f"NaN/Inf at batch {result['failed_batch']} (update discarded)"
    return summary


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------
def summarize_run(result: dict[str, Any], threshold: float | None) -> dict[str, Any]:
    """Throughput, start-up and time-to-threshold of one run from its per-batch marks.

    ``marks``: ``(frames done, seconds since the run started)`` at the end of each batch (or
    epoch of batches). fps = frames after the first mark / seconds after it; start-up = time
    of the first mark minus the time its frames take at that rate (compilation, env and
    network set-up, lazy init: what a longer run does not repeat).
    """
    marks = result["marks"]
    out: dict[str, Any] = {k: result.get(k) for k in
                           ("compile_s", "import_s", "peak_rss_mib", "device_peak_mib", "call_fps")}
    if len(marks) < 2:
        raise ValueError("a run needs at least two batch marks to measure throughput")
    (f1, t1), (fn, tn) = marks[0], marks[-1]
    fps = (fn - f1) / (tn - t1)
    out.update(fps=fps, startup_s=t1 - f1 / fps, frames=fn, run_s=tn)
    late = [c for c in result.get("compiles") or [] if t1 < c[0] <= tn]
    if late:
        out["warning"] = (f"{len(late)} XLA compilation(s) of >= 1 s during the measured batches "
                          f"({sum(d for _, d in late):.1f} s): frames/s is understated")
    per_batch = result.get("per_batch") or {}
    sat = [v for v in per_batch.get("saturation") or [] if v is not None]
    if sat:
        out["saturation"] = {"mean": statistics.fmean(sat), "max": max(sat),
                             "last10": statistics.fmean(sat[-10:])}
    if threshold is not None:
        hit = next(((f, t, r) for f, t, r in result["evals"] if r >= threshold), None)
        out["threshold_frames"] = hit[0] if hit else None
        # wall time from the process's start: imports included
        out["threshold_s"] = hit[1] + (result.get("import_s") or 0.0) if hit else None
        out["best_eval_return"] = max((r for _, _, r in result["evals"]), default=None)
    return out




def _stats(values: list[float | None]) -> dict[str, float] | None:
    """Median, min, max and count of the values that are not None (None: there are none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def aggregate(rows: list[Row], threshold: float | None) -> list[dict[str, Any]]:
    """Per row: medians and min-max of every figure, and ratios against TorchRL."""
    out = []
    for row in rows:
        d: dict[str, Any] = {
            "key": row.key, "system": row.system, "label": row.label, "num_envs": row.num_envs,
            "description": row.description, "config": row.settings, "skipped": row.skipped,
            "errors": row.errors, "repeats": len(row.runs), "matched": row.matched,
        }
        for name in ("fps", "startup_s", "compile_s", "peak_rss_mib", "device_peak_mib",
                     "call_fps", "threshold_s", "threshold_frames"):
            d[name] = _stats([r.get(name) for r in row.runs])
        for name in ("startup_s", "threshold_s"):
            d[f"warm_{name}"] = _stats([(r.get("warm") or {}).get(name) for r in row.runs])
        profiles = [r["raw"]["profile"] for r in row.runs if r["raw"].get("profile")]
        d["profile_ms"] = ({k: _stats([p.get(k) for p in profiles]) for k in profiles[0]}
                           if profiles else None)
        if threshold is not None:
            d["threshold_reached"] = sum(r.get("threshold_s") is not None for r in row.runs)
        d["runs"] = [{k: v for k, v in r.items() if k != "raw"} | {
            "batch_marks": r["raw"]["marks"], "evals": r["raw"]["evals"],
            "per_batch": r["raw"].get("per_batch"), "start_stats": r["raw"].get("start_stats"),
            "xla_compiles": r["raw"].get("compiles"), "device": r["raw"].get("device")}
            for r in row.runs]
        out.append(d)
    refs = {s: next((d["fps"]["median"] for d in out if d["system"] == s and d["fps"]), None)
            for s in ("torchrl", "torchrl_cuda")}
    for d in out:
        for s, ref in refs.items():
            d[f"ratio_vs_{s}"] = (d["fps"]["median"] / ref) if (d["fps"] and ref) else None
    return out


def headline(results: list[dict[str, Any]]) -> dict[str, Any]:
    """ppo_jax / TorchRL (CPU) frames per second at the tutorial config and the best env count."""
    jx = [d for d in results if d["system"] == "ppo_jax" and d["fps"] and not d.get("matched")]
    tut = next((d for d in jx if d["num_envs"] == 1), None)
    best = max(jx, key=lambda d: d["fps"]["median"], default=None)
    h: dict[str, Any] = {"reference": "torchrl"}
    h["tutorial_config"] = tut and {"num_envs": 1, "fps": tut["fps"]["median"],
                                    "ratio": tut["ratio_vs_torchrl"]}
    h["best_env_count"] = best and {"num_envs": best["num_envs"], "fps": best["fps"]["median"],
                                    "ratio": best["ratio_vs_torchrl"]}
    return h


def device_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The host's CPU and GPUs, and the devices the runs reported."""
    from ppo_jax.util import cpu_model

    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
            gpus = [g.strip() for g in q.stdout.splitlines() if g.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    jax_dev = next((r["device"] for d in results for r in d["runs"]
                    if d["system"] in ("ppo_jax", "brax") and r.get("device")), None)
    torch_dev = {d["system"]: r["device"] for d in results for r in d["runs"]
                 if d["system"].startswith("torchrl") and r.get("device")}
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "gpus": gpus, "jax_backend": jax_dev and jax_dev["backend"],
            "jax_devices": jax_dev and jax_dev["devices"], "torch": torch_dev or None}
