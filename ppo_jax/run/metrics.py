"""A run's metrics on the host: ``metrics.json``'s format (and the upgrade of older files) and
the tutorial's four-panel curves."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


PER_BATCH = (
    "reward step_count lr loss loss_objective loss_critic loss_entropy entropy "
    "clip_fraction kl_approx ESS grad_norm saturation"
).split()
SHARED = ("batch", "frames")
# metrics.json's format. /1 (no "format" key) named the per-run failures
# "failed_batch_per_seed"; it is read under the current name.
METRICS_FORMAT = "ppo_jax.metrics/2"
RENAMED = {"failed_batch_per_seed": "failed_batch_per_run"}


def upgrade_metrics(d: dict[str, Any]) -> dict[str, Any]:
    """A ``metrics.json`` dict of any format with the current key names."""
    out = dict(d)
    for old, new in RENAMED.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


def read_history(path: str, num_runs: int, batches: int) -> dict[str, Any] | None:
    """The per-batch lists of the ``metrics.json`` at ``path`` cut to its first ``batches``
    batches (for a resume), or None when there is no such file or no batch in it."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        d = upgrade_metrics(json.load(f))
    return lists_from_json(d, num_runs, batches)


def lists_to_json(history: dict[str, Any] | None, num_runs: int) -> dict[str, Any]:
    """Internal lists -> metrics.json layout: one run: flat ``[batches]`` lists (as the
    TorchRL reference files); R runs (seeds, times a sweep's points): every per-batch list
    is ``[R][batches]``."""
    if not history:
        return {}
    out = {}
    for key, val in history.items():
        if key in SHARED:
            out[key] = val if num_runs == 1 else [list(val) for _ in range(num_runs)]
        else:
            out[key] = val[0] if num_runs == 1 else val
    return out


def lists_from_json(d: dict[str, Any], num_runs: int, batches: int) -> dict[str, Any] | None:
    """metrics.json -> internal lists, cut to the first ``batches`` batches (for --resume)."""
    if "reward" not in d:
        return None
    out: dict[str, Any] = {}
    for key in SHARED:
        v = d[key] if num_runs == 1 else d[key][0]
        out[key] = list(v[:batches])
    last_frame = batches * (out["frames"][0] // max(out["batch"][0] + 1, 1)) if out["frames"] else 0
    for key in PER_BATCH:
        if key not in d:  # a metric newer than the file: unknown for its batches
            out[key] = [[None] * len(out["batch"]) for _ in range(num_runs)]
            continue
        v = [d[key]] if num_runs == 1 else d[key]
        out[key] = [list(s[:batches]) for s in v]
    ef = [d["eval_frames"]] if num_runs == 1 else d["eval_frames"]
    out["eval_frames"] = [[f for f in s if f <= last_frame] for s in ef]
    for key in ("eval_return", "eval_steps"):
        v = [d[key]] if num_runs == 1 else d[key]
        out[key] = [list(s[: len(f)]) for s, f in zip(v, out["eval_frames"])]
    return out


PANELS = (
    ("reward", "frames", "training rewards (average)"),
    ("step_count", "frames", "Max step count (training)"),
    ("eval_return", "eval_frames", "Return (test)"),
    ("eval_steps", "eval_frames", "Max step count (test)"),
)


def _seed_matrix(xs: list, ys: list) -> tuple[np.ndarray, np.ndarray]:
    """x ``[n]`` and y ``[K, n]`` of K seeds cut to their common length (None -> NaN)."""
    n = min(len(y) for y in ys)
    x = np.asarray(xs[:n], float)
    y = np.asarray([[np.nan if v is None else v for v in row[:n]] for row in ys], float)
    return x, y


def plot_panels(series: list[tuple[str, dict[str, Any]]], path: str, title: str = "") -> None:
    """The tutorial's four panels for several labelled runs. Each run's lists are ``[K][n]``
    per seed (``eval_frames`` per seed, ``frames`` shared); one seed is a line, several a mean
    line and a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 10))
    for ax, (key, xkey, name) in zip(axes.flat, PANELS):
        for label, lists in series:
            ys = [row for row in lists[key] if len(row)]
            if not ys:
                continue
            xs = max(lists[xkey], key=len) if xkey == "eval_frames" else lists[xkey]
            x, y = _seed_matrix(xs, ys)
            marker = "o" if len(x) <= 30 else None  # a single evaluation is still visible
            if y.shape[0] == 1:
                ax.plot(x, y[0], marker=marker, label=label)
            else:
                line, = ax.plot(x, np.nanmean(y, 0), marker=marker,
                                label=f"{label} (mean of {y.shape[0]} seeds)")
                ax.fill_between(x, np.nanmin(y, 0), np.nanmax(y, 0), alpha=0.25,
                                color=line.get_color())
        ax.set_title(name)
        ax.set_xlabel("frames")
        if len(series) > 1 or any(len(lists["reward"]) > 1 for _, lists in series):
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)

