"""The benchmark's output: markdown tables, the headline and the notes.

The list of Brax's settings that differ from the tutorial is prose kept in this package's
``README.md`` (section :data:`BRAX_DIFFERENCES_SECTION`); the notes print it from there.
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
from typing import Any

from ppo_jax.bench.worker_brax import BRAX_PATCH_NOTE


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command a report records: ``prog`` and its arguments (``sys.argv``'s if None)."""
    return " ".join([prog] + list(argv if argv is not None else sys.argv[1:]))

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
BRAX_DIFFERENCES_SECTION = "Brax's settings that differ from the tutorial"


def markdown_bullets(text: str, heading: str) -> list[str]:
    """The bullets (``- ...``, continuation lines indented) of the section of ``text`` under
    the heading line ``## heading``, each joined into one line."""
    lines = text.splitlines()
    start = lines.index(f"## {heading}") + 1
    bullets: list[str] = []
    for line in lines[start:]:
        if line.startswith("#"):
            break
        if line.startswith("- "):
            bullets.append(line[2:].strip())
        elif line.startswith("  ") and line.strip() and bullets:
            bullets[-1] += " " + line.strip()
    return bullets


@functools.cache
def brax_differences() -> tuple[str, ...]:
    """Brax's settings that differ from the tutorial, from ``README.md``."""
    with open(README, encoding="utf-8") as f:
        return tuple(markdown_bullets(f.read(), BRAX_DIFFERENCES_SECTION))


def fmt_num(x: float | None, fmt: str = "{:,.0f}") -> str:
    """A figure as table text: ``fmt`` of ``x`` (default: whole, thousands separated); ``–``
    where there is none. The one number formatter of the benchmark's, the playground
    comparison's and the GPU check's reports."""
    return "–" if x is None else fmt.format(x)


def _fmt_stat(s: dict[str, float] | None, fmt: str = "{:.0f}") -> str:
    """``median (min–max)``, or the median alone when every run agrees; ``–``: no figure."""
    if not s:
        return fmt_num(None)
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt_num(s["median"], fmt)
    return f"{fmt_num(s['median'], fmt)} ({fmt_num(s['min'], fmt)}–{fmt_num(s['max'], fmt)})"


def _fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The tables: throughput, warm-up and memory, time to the threshold; the headline."""
    has_cuda_ref = any(d["system"] == "torchrl_cuda" and d["fps"] for d in results)
    has_dev_mem = any(d["device_peak_mib"] for d in results)
    threshold = meta["settings"]["threshold"]
    lines = []
    s = meta["settings"]
    n_seeds = len(s.get("seeds") or [s["seed"]])
    per_row = (f"{n_seeds} seeds x {s['repeats']} repeat(s)" if n_seeds > 1
               else f"{s['repeats']} repeat(s)")
    lines.append(f"Total frames per run: {s['total_frames']:,} (requested "
                 f"{s['requested_frames']:,}, rounded up to a multiple of every batch); "
                 f"{per_row} per row, interleaved; median (min–max).")
    dev = meta["device"]
    gpus = f"GPU: {', '.join(dev['gpus'])}" if dev["gpus"] else "no GPU"
    lines.append(f"Device: {dev['cpu']} ({dev['cpu_count']} cores); {gpus}; "
                 f"JAX backend: {dev.get('jax_backend') or '–'}.")
    lines.append("")
    lines.append("Throughput (collection + updates, after the first batch"
                 + (", evaluation included" if s.get("evaluate", threshold is not None)
                    else ", no evaluation") + "):")
    lines.append("")
    head = "| system | config | frames/s | × TorchRL CPU |"
    head += " × TorchRL CUDA |" if has_cuda_ref else ""
    lines.append(head)
    lines.append("| --- | --- | ---: | ---: |" + (" ---: |" if has_cuda_ref else ""))
    for d in results:
        if d["skipped"] or not d["fps"]:
            why = d["skipped"] or ("failed: " + d["errors"][-1] if d["errors"] else "no result")
            lines.append(f"| {d['label']} | {d['description']} | skipped | {why} |"
                         + (" |" if has_cuda_ref else ""))
            continue
        lines.append(f"| {d['label']} | {d['description']} | {_fmt_stat(d['fps'])} | "
                     f"{_fmt_ratio(d['ratio_vs_torchrl'])} |"
                     + (f" {_fmt_ratio(d['ratio_vs_torchrl_cuda'])} |" if has_cuda_ref else ""))
    lines.append("")
    lines.append("Warm-up (excluded from frames/s) and memory:")
    lines.append("")
    warm = meta["settings"].get("warm")
    head = "| system | config | start-up s | of which compile s |" + (
        " warm start-up s |" if warm else "") + " peak RSS MiB |" + (
        " peak device MiB |" if has_dev_mem else "")
    lines.append(head)
    lines.append("| --- | --- | ---: | ---: |" + (" ---: |" if warm else "") + " ---: |"
                 + (" ---: |" if has_dev_mem else ""))
    for d in results:
        if not d["fps"]:
            continue
        lines.append(f"| {d['label']} | {d['description']} | "
                     f"{_fmt_stat(d['startup_s'], '{:.1f}')} | "
                     f"{_fmt_stat(d['compile_s'], '{:.1f}')} |"
                     + (f" {_fmt_stat(d.get('warm_startup_s'), '{:.1f}')} |" if warm else "")
                     + f" {_fmt_stat(d['peak_rss_mib'])} |"
                     + (f" {_fmt_stat(d['device_peak_mib'])} |" if has_dev_mem else ""))
    if threshold is not None:
        lines.append("")
        lines.append(f"Time to the first eval return >= {threshold:g} (wall-clock from the start "
                     "of the run, start-up included):")
        lines.append("")
        lines.append("| system | config | reached | seconds (cold) |"
                     + (" seconds (warm) |" if warm else "") + " frames |")
        lines.append("| --- | --- | ---: | ---: |" + (" ---: |" if warm else "") + " ---: |")
        for d in results:
            if not d["fps"]:
                continue
            lines.append(f"| {d['label']} | {d['description']} | "
                         f"{d['threshold_reached']}/{d['repeats']} | "
                         f"{_fmt_stat(d['threshold_s'], '{:.0f}')} |"
                         + (f" {_fmt_stat(d.get('warm_threshold_s'), '{:.0f}')} |" if warm else "")
                         + f" {_fmt_stat(d['threshold_frames'], '{:.0f}')} |")
    lines += learning_tables(results, meta)
    profiled = [d for d in results if d.get("profile_ms")]
    if profiled:
        lines.append("")
        lines.append("Profile of one batch, ms (each phase compiled alone; evaluation per batch "
                     "= one episode / eval_every):")
        lines.append("")
        lines.append("| system | config | collect | GAE (1 pass) | update (all epochs) | "
                     "evaluation | eval episode |")
        lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for d in profiled:
            p = d["profile_ms"]
            cells = [_fmt_stat(p.get(k), "{:.1f}") for k in
                     ("collect", "gae", "update", "evaluate", "evaluate_ms_per_episode")]
            lines.append(f"| {d['label']} | {d['description']} | " + " | ".join(cells) + " |")
    h = meta["headline"]
    lines.append("")
    if h["tutorial_config"] and h["tutorial_config"]["ratio"] is not None:
        b = h["best_env_count"]
        lines.append(f"**Headline: ppo_jax / TorchRL frames per second = "
                     f"{h['tutorial_config']['ratio']:.2f}× at the tutorial configuration, "
                     f"{b['ratio']:.2f}× at the best env count ({b['num_envs']} "
                     f"env{'s' if b['num_envs'] > 1 else ''}).**")
    elif not {"torchrl", "ppo_jax"} <= set(meta["settings"].get("systems") or ()):
        lines.append("No headline ppo_jax / TorchRL ratio: --systems leaves "
                     + " and ".join(s for s in ("torchrl", "ppo_jax")
                                    if s not in (meta["settings"].get("systems") or ()))
                     + " out.")
    else:
        lines.append("Headline ppo_jax / TorchRL ratio unavailable (a system was skipped or "
                     "failed).")
    return "\n".join(lines)


def _by_seed(runs: list[dict[str, Any]], seeds: list[int], value) -> list[float | None]:
    """Per seed: the median of ``value(run)`` over that seed's runs (None: no figure)."""
    out = []
    for seed in seeds:
        vals = [v for v in (value(r) for r in runs if r.get("seed") == seed) if v is not None]
        out.append(statistics.median(vals) if vals else None)
    return out


def common_eval_frames(runs: list[dict[str, Any]]) -> list[int]:
    """The frame counts at which every run in ``runs`` evaluated, in order (TorchRL
    evaluates after batches 0, 10, 20, ..., ppo_jax after the last batch as well)."""
    sets = [{f for f, _, _ in r.get("evals") or []} for r in runs]
    return sorted(set.intersection(*sets)) if sets else []


def learning_tables(results: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """With evaluation: each row's evaluation return at the last frame count every run
    evaluated, the mean of the last five such evaluations, and the saturated-action share,
    by seed (the median of a seed's repeats), with their mean and sample standard deviation
    over the seeds. The saturation table alone without evaluation but with ``--seeds``;
    nothing otherwise."""
    st = meta["settings"]
    seeds = st.get("seeds") or [st["seed"]]
    if not st.get("evaluate") and len(seeds) < 2:
        return []
    rows = [d for d in results if d["runs"]]
    runs = [r for d in rows for r in d["runs"]]
    frames = common_eval_frames(runs) if st.get("evaluate") else []
    head = ("| system | config | " + " | ".join(f"seed {s}" for s in seeds)
            + " | mean | sd |")
    rule = "| --- | --- | " + " | ".join("---:" for _ in seeds) + " | ---: | ---: |"

    def table(value, fmt):
        out = [head, rule]
        for d in rows:
            vals = _by_seed(d["runs"], seeds, value)
            have = [v for v in vals if v is not None]
            mean = statistics.fmean(have) if have else None
            sd = statistics.stdev(have) if len(have) > 1 else None
            out.append(f"| {d['label']} | {d['description']} | "
                       + " | ".join(fmt_num(v, fmt) for v in vals)
                       + f" | {fmt_num(mean, fmt)} | {fmt_num(sd, fmt)} |")
        return out

    def returns_at(points):
        def value(r):
            by_frames = {f: ret for f, _, ret in r.get("evals") or []}
            vals = [by_frames[f] for f in points if f in by_frames]
            return statistics.fmean(vals) if len(vals) == len(points) else None
        return value

    lines: list[str] = []
    if frames:
        last5 = frames[-5:]
        lines += ["", f"Learning by seed: the return of the evaluation at {frames[-1]:,} "
                      f"frames, the last every run made (one deterministic episode):", ""]
        lines += table(returns_at(frames[-1:]), "{:,.0f}")
        lines += ["", f"The mean of the last {len(last5)} evaluations every run made "
                      f"({', '.join(f'{f:,}' for f in last5)} frames):", ""]
        lines += table(returns_at(last5), "{:,.0f}")
    if any(r.get("saturation") for r in runs):
        lines += ["", "Saturated actions by seed: the share of a batch's frames whose action "
                      "has an entry at tanh's clamp (|a| >= 1 - 1e-6 of the unit action), mean "
                      "over the run's batches, in %:", ""]
        lines += table(lambda r: (None if not r.get("saturation")
                                  else 100 * r["saturation"]["mean"]), "{:.3f}")
    return lines


def notes(meta: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    """The notes printed under the tables (and stored in the JSON)."""
    out = [
        "frames/s: frames between the first and the last per-batch mark / seconds between them "
        "(ppo_jax: the host loop between its per-batch program calls, as scripts/train.py; "
        "Brax: its progress_fn; TorchRL: Python loop); the first batch is warm-up.",
        "start-up: seconds to the end of the first batch minus what that batch takes at the "
        "steady rate (env and network set-up, TorchRL's init_stats, JAX compilation); "
        "peak RSS: ru_maxrss of the run's own process, imports included. 'of which compile': "
        "ppo_jax: its set-up before the first batch: the env built, its programs traced and "
        "compiled (or loaded from its cache) and the init program run (network init and the "
        "normalization statistics' env steps); "
        "Brax: "
        "its XLA compilations of >= 1 s before the first batch ended.",
        "configs: N envs x T steps per env = frames per batch; 'mb' = minibatches per epoch x "
        "minibatch size; 10 epochs everywhere; T = the largest divisor of total/N that is "
        "<= max(16, ceil(1000/N)) and leaves >= 2 batches; minibatch = batch // 15.",
    ]
    if any(d["system"] == "brax" and d["runs"] for d in results):  # a Brax run completed
        out.append(BRAX_PATCH_NOTE if meta.get("brax_patched") else
                   "Brax PPO ran unpatched.")
        out.append("Brax settings that differ from the tutorial: "
                   + "; ".join(brax_differences()) + ".")
    for d in results:
        for k, r in enumerate(d["runs"]):
            for key in ("warning", "note"):
                if r.get(key):
                    out.append(f"{d['label']}, run {k + 1}: {r[key]}")
    if meta["settings"].get("jobs", 1) > 1:
        out.append(f"{meta['settings']['jobs']} runs ran at once (--jobs): frames/s and "
                   "start-ups are those of runs sharing the cores, not of a run alone.")
    if meta["settings"].get("matched"):
        out.append("TorchRL's start: each run of that row took its seed's TorchRL run's "
                   "initial networks and normalization statistics (TorchRL's init_stats); "
                   "its own draws (resets, actions, minibatches) are ppo_jax's.")
    if meta["settings"]["compile_cache"]:
        out.append("A persistent compilation cache was on: start-up may be a cache load, not a "
                   "compile.")
    return out
