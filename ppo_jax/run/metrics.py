"""A run's metrics on the host: ``metrics.json``'s format (and the upgrade of older files) and
the tutorial's four-panel curves."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from ppo_jax.config import FLOAT32_MAX  # a run's metrics are float32 (TorchRL's too)
from ppo_jax.util import written_in_place


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


class MetricsError(ValueError):
    """A metrics file that cannot be read, or whose lists do not fit together (one line)."""


def check_lists(d: dict[str, Any], num_runs: int, path: str,
                required: tuple[str, ...] = ()) -> None:
    """:class:`MetricsError` unless the lists of a metrics dict (``metrics.json`` or a
    TorchRL reference run, ``num_runs`` runs) are numbers of the shapes its format gives:
    per batch ``[batches]`` (one run) or ``[R][batches]``, per evaluation ``[evals]`` or
    ``[R][evals]`` (``None``: a number not known, except in the counts: :data:`COUNTS`).
    ``required``: keys besides the frames."""
    for key in ("frames", "eval_frames", *required):
        if key not in d:
            raise MetricsError(f"{path}: no {key!r} list")
    per_batch = ("batch", "reward", "step_count", *PER_BATCH)
    lengths: dict[str, list[int]] = {}
    for key in ("frames", "eval_frames", *(k for k in per_batch if k in d),
                *(k for k in ("eval_return", "eval_steps") if k in d)):
        rows = _rows_of(d[key], num_runs, allow_none=key not in COUNTS)
        if rows is None:
            raise MetricsError(f"{path}: {key!r} is not "
                               + ("a flat list" if num_runs == 1 else
                                  f"{num_runs} lists (one per run)") + " of numbers"
                               + (" (no null)" if key in COUNTS else ""))
        big = next((c for r in ([d[key]] if num_runs == 1 else d[key]) for c in r
                    if c is not None and FLOAT32_MAX < abs(c) < math.inf), None)
        if big is not None:  # (matplotlib cannot place ticks near float64's own limit)
            shown = (repr(big) if isinstance(big, float) or abs(big) < 10**24
                     else f"an integer of {len(str(abs(big)))} digits")
            raise MetricsError(f"{path}: {key!r} holds {shown}, beyond float32's range: not "
                               "a number a run records")
        along = key if key in ("frames", "eval_frames") else (
            "frames" if key in per_batch else "eval_frames")
        if key == along:
            lengths[key] = rows
        elif rows != lengths[along]:
            raise MetricsError(f"{path}: {key!r} has {_describe(rows)} entries where "
                               f"{along!r} has {_describe(lengths[along])}")


# the lists that place the others (batch indices, frame counts): a number in every entry
COUNTS = ("batch", "frames", "eval_frames")


def _rows_of(v: Any, num_runs: int, allow_none: bool = True) -> list[int] | None:
    """The lengths of ``v``'s rows of numbers (one row, flat, for one run); None where ``v``
    has not that shape or holds something else than numbers (and None, ``allow_none``)."""
    rows = [v] if num_runs == 1 else v
    if not isinstance(rows, list) or len(rows) != num_runs:
        return None
    for r in rows:
        if not isinstance(r, list) or not all(_is_entry(c, allow_none) for c in r):
            return None
    return [len(r) for r in rows]


def _is_entry(c: Any, allow_none: bool) -> bool:
    """A number (a count: a finite one), or None where ``allow_none``."""
    if c is None:
        return allow_none
    return (isinstance(c, (int, float)) and not isinstance(c, bool)
            and (allow_none or isinstance(c, int) or math.isfinite(c)))


def _describe(rows: list[int]) -> str:
    return str(rows[0]) if len(set(rows)) == 1 else "/".join(map(str, rows))


def num_runs_of(d: dict[str, Any], path: str) -> int:
    """A metrics dict's number of runs (``num_runs``, or the older ``num_seeds``; 1 where
    neither is given); :class:`MetricsError` where it is not a positive count."""
    v = d.get("num_runs") or d.get("num_seeds") or 1
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise MetricsError(f"{path}: num_runs must be a positive count, got {v!r}")
    return v


def read_json(path: str) -> dict[str, Any]:
    """The metrics dict in the file at ``path`` (a ``metrics.json`` or a TorchRL reference
    run), upgraded to the current key names; :class:`MetricsError` (one line) where it cannot
    be read or is not a JSON object."""
    from ppo_jax.util import JsonFileError, read_json_file

    try:
        d = read_json_file(path)
    except JsonFileError as e:
        raise MetricsError(str(e)) from None
    if not isinstance(d, dict):
        raise MetricsError(f"{path} is not a metrics.json (not a JSON object)")
    return upgrade_metrics(d)


def read_history(path: str, num_runs: int, batches: int) -> dict[str, Any] | None:
    """The per-batch lists of the ``metrics.json`` at ``path`` cut to its first ``batches``
    batches (for a resume), or None when there is no such file or no batch in it;
    :class:`MetricsError` (one line) where it cannot be read or does not hold ``num_runs``
    runs' lists."""
    if not os.path.exists(path):
        return None
    d = read_json(path)
    if "reward" not in d:
        return None
    check_lists(d, num_runs, path, required=("batch", "eval_return", "eval_steps"))
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


def lists_from_json(d: dict[str, Any], num_runs: int,
                    batches: int | None = None) -> dict[str, Any] | None:
    """metrics.json -> internal lists, cut to the batches before batch index ``batches`` (for
    --resume; None: every batch)."""
    if "reward" not in d:
        return None
    out: dict[str, Any] = {}
    # the entries of the batches before ``batches``, by batch index (a history may start
    # after batch 0: a run resumed once without the history before it)
    frames = d["frames"] if num_runs == 1 else d["frames"][0]
    if "batch" in d:
        batch = d["batch"] if num_runs == 1 else d["batch"][0]
    else:  # a TorchRL reference run's lists: one entry per batch from the first
        batch = list(range(len(frames)))
    kept = len(batch) if batches is None else sum(
        1 for b in batch if b is not None and b < batches)
    out["batch"], out["frames"] = list(batch[:kept]), list(frames[:kept])
    if batches is None:
        last_frame = float("inf")
    else:
        last_frame = (batches * (out["frames"][0] // max(out["batch"][0] + 1, 1))
                      if out["frames"] else 0)
    for key in PER_BATCH:
        if key not in d:  # a metric newer than the file: unknown for its batches
            out[key] = [[None] * len(out["batch"]) for _ in range(num_runs)]
            continue
        v = [d[key]] if num_runs == 1 else d[key]
        out[key] = [list(s[:kept]) for s in v]
    ef = [d["eval_frames"]] if num_runs == 1 else d["eval_frames"]
    out["eval_frames"] = [[f for f in s if f <= last_frame] for s in ef]
    for key in ("eval_return", "eval_steps"):
        v = [d[key]] if num_runs == 1 else d[key]
        out[key] = [list(s[: len(f)]) for s, f in zip(v, out["eval_frames"])]
    return out


def split_points(history: dict[str, Any], labels: list[str], num_seeds: int
                 ) -> list[tuple[str, dict[str, Any]]]:
    """Internal lists of a sweep (run ``r`` = point ``r // num_seeds``) as one
    ``(label, lists of that point's seeds)`` per point, in ``labels``' order."""
    series = []
    for p, name in enumerate(labels):
        rows = range(p * num_seeds, (p + 1) * num_seeds)
        series.append((name, {k: (v if k in SHARED else [v[r] for r in rows])
                              for k, v in history.items()}))
    return series


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
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, xkey, name) in zip(axes.flat, PANELS):
        for index, (label, lists) in enumerate(series):
            ys = [row for row in lists[key] if len(row)]
            if not ys:  # (its colour stays its own: a series keeps one colour in every panel)
                continue
            color = cycle[index % len(cycle)]
            xs = max(lists[xkey], key=len) if xkey == "eval_frames" else lists[xkey]
            x, y = _seed_matrix(xs, ys)
            marker = "o" if len(x) <= 30 else None  # a single evaluation is still visible
            if y.shape[0] == 1:
                ax.plot(x, y[0], marker=marker, label=label, color=color)
            else:
                with warnings.catch_warnings():  # a batch where every seed had stopped (NaN
                    warnings.simplefilter("ignore", RuntimeWarning)  # or ended): a gap
                    mean, low, high = np.nanmean(y, 0), np.nanmin(y, 0), np.nanmax(y, 0)
                ax.plot(x, mean, marker=marker, color=color,
                        label=f"{label} (mean of {y.shape[0]} seeds)")
                ax.fill_between(x, low, high, alpha=0.25, color=color)
        ax.set_title(name)
        ax.set_xlabel("frames")
        if ax.get_lines() and (len(series) > 1
                               or any(len(lists["reward"]) > 1 for _, lists in series)):
            ax.legend(fontsize=8)  # (a panel with nothing drawn, e.g. no evaluation: none)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with written_in_place(path) as tmp:  # the old figure until the new one is whole
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)

