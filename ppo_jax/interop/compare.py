"""ppo_jax runs against TorchRL runs on the tutorial's four panels (``scripts/compare.py``).

Both sides are read from files: a ppo_jax run directory's ``metrics.json`` (one seed: flat
lists; ``--num-seeds K``: ``[K][batches]``) and TorchRL runs in the reference format (flat
per-batch ``frames``, ``reward``, ``step_count`` and per-evaluation ``eval_frames``,
``eval_return``, ``eval_steps``), as in ``ppo_jax/data/torchrl_reference/`` (the tutorial run
with TorchRL 0.14.1 on 2 CPU cores, seeds 0-2) and in ``scripts/benchmark.py --json`` runs.
Several TorchRL files are drawn as the seeds of one curve (mean and min-max band).
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from typing import Any, Callable

from ppo_jax.run import metrics

KEYS = ("reward", "step_count", "eval_return", "eval_steps")
TUTORIAL_REFERENCE = "tutorial"  # --reference tutorial: the three packaged reference runs
TUTORIAL_ENV = "InvertedDoublePendulum-v4"  # the env of the packaged runs


class CompareError(Exception):
    """A file that is missing or not in a format compare reads (one line)."""


def _load(path: str) -> dict[str, Any]:
    try:
        d = metrics.read_json(path)
        if not all(k in d for k in ("frames", *KEYS, "eval_frames")):
            if isinstance(d, dict) and str(d.get("format", "")).startswith("ppo_jax.metrics"):
                raise CompareError(f"{path} records no batch (its run stopped before the "
                                   "first batch ended): nothing to draw")
            raise CompareError(f"{path} has no per-batch frames/reward/step_count and "
                               "evaluation lists: not a metrics.json or a TorchRL reference run")
        metrics.check_lists(d, metrics.num_runs_of(d, path), path, required=KEYS)
    except metrics.MetricsError as e:
        raise CompareError(str(e)) from None
    return d


def run_lists(run_dir: str) -> dict[str, Any]:
    """A ppo_jax run directory's metrics as ``[K][n]`` lists per run."""
    return _run_lists(run_dir)[0]


def _run_lists(run_dir: str) -> tuple[dict[str, Any], list[str] | None, int]:
    """:func:`run_lists`, with the run's sweep point labels (None: not a sweep) and seeds."""
    path = os.path.join(run_dir, "metrics.json") if os.path.isdir(run_dir) else run_dir
    d = _load(path)
    k = metrics.num_runs_of(d, path)
    lists = metrics.lists_from_json(d, k)
    sweep, seeds = d.get("sweep"), d.get("num_seeds")
    if (isinstance(sweep, list) and sweep != [{}] and all(isinstance(p, dict) for p in sweep)
            and isinstance(seeds, int) and len(sweep) * seeds == k):
        from ppo_jax.run.runs import labels

        try:
            return lists, labels(sweep), seeds
        except (TypeError, ValueError):  # a point that is not numbers: drawn as one curve
            pass
    return lists, None, k


def run_series(run_dir: str, name: str) -> list[tuple[str, dict[str, Any]]]:
    """A run directory's curves: one (``name``, its seeds), or one per sweep point (``name``
    and the point's values), as the run's own curves.png draws them."""
    lists, points, seeds = _run_lists(run_dir)
    if points is None:
        return [(name, lists)]
    return [(f"{name} {p}", part) for p, part in metrics.split_points(lists, points, seeds)]


def reference_paths(names: list[str]) -> list[str]:
    """``--reference`` values: files, ``tutorial`` for the packaged TorchRL runs, ``none``
    for none (as no value)."""
    out = []
    for name in names:
        if name == "none":
            continue
        if name == TUTORIAL_REFERENCE:
            folder = resources.files("ppo_jax.data").joinpath("torchrl_reference")
            out += sorted(str(p) for p in folder.iterdir() if p.name.endswith(".json"))
        else:
            out.append(name)
    return out


def reference_lists(paths: list[str], max_frames: int | None = None) -> dict[str, Any]:
    """TorchRL runs (one seed each) as the seeds of one ``[K][n]`` series, cut to
    ``max_frames``."""
    runs = [_load(p) for p in paths]
    for p, d in zip(paths, runs):
        if metrics.num_runs_of(d, p) != 1:
            raise CompareError(f"{p} holds {metrics.num_runs_of(d, p)} runs: a reference is "
                               "one TorchRL run (flat lists); give each as its own file")
    out: dict[str, Any] = {"frames": [], "eval_frames": [], **{k: [] for k in KEYS}}
    for d in runs:
        n = len(d["frames"]) if max_frames is None else sum(f <= max_frames for f in d["frames"])
        m = (len(d["eval_frames"]) if max_frames is None
             else sum(f <= max_frames for f in d["eval_frames"]))
        if len(d["frames"][:n]) > len(out["frames"]):
            out["frames"] = list(d["frames"][:n])
        out["reward"].append(list(d["reward"][:n]))
        out["step_count"].append(list(d["step_count"][:n]))
        out["eval_frames"].append(list(d["eval_frames"][:m]))
        out["eval_return"].append(list(d["eval_return"][:m]))
        out["eval_steps"].append(list(d["eval_steps"][:m]))
    return out


def reference_label(paths: list[str]) -> str:
    """The references' legend label: "TorchRL tutorial" for the packaged runs, else the
    files' names (their number, past three)."""
    packaged = _packaged()
    if all(os.path.abspath(p) in packaged for p in paths):
        return "TorchRL tutorial"
    names = [("TorchRL tutorial" if os.path.abspath(p) in packaged
              else os.path.splitext(os.path.basename(p))[0]) for p in paths]
    names = list(dict.fromkeys(names))  # the packaged runs named once
    return ("reference " + ", ".join(names) if len(names) <= 3
            else f"reference ({len(paths)} files)")


def _packaged() -> set[str]:
    return {os.path.abspath(p) for p in reference_paths([TUTORIAL_REFERENCE])}


def env_of(path: str) -> str | None:
    """The env a (read and checked) metrics file's run trained on: ``env_id`` (a reference
    file's ``env_id`` or ``env``; the packaged tutorial runs': the pendulum); None where the
    file does not say."""
    if os.path.abspath(path) in _packaged():
        return TUTORIAL_ENV
    d = metrics.read_json(os.path.join(path, "metrics.json") if os.path.isdir(path) else path)
    env = d.get("env_id", d.get("env"))
    return env if isinstance(env, str) else None


def compare(run_dirs: list[str], references: list[str], out: str,
            labels: list[str] | None = None,
            note: Callable[[str], None] | None = None) -> str:
    """Draw the runs and the references (their frames cut to the runs' longest) into ``out``.

    A reference of another env than a run's is refused (:class:`CompareError`); the title
    names the runs' env. ``note`` gets a line where the references are cut to nothing (the
    runs end before their first batch; default: printed to stderr)."""
    note = note or (lambda line: print(line, file=sys.stderr))
    if labels and len(labels) > len(run_dirs):
        raise CompareError(f"--labels: {len(labels)} labels for {len(run_dirs)} run(s): give "
                           "one per run, in their order")
    for label in labels or ():
        if not label.strip() or label.startswith("_"):
            raise CompareError(f"--labels: {label!r} cannot name a run: a legend leaves out "
                               "an empty label and one that starts with '_'")
    series = []
    for i, d in enumerate(run_dirs):
        path = os.path.abspath(d)  # a run directory, or its metrics.json: the run's name
        name = os.path.basename(os.path.dirname(path) if os.path.isfile(path) else path)
        label = labels[i] if labels and i < len(labels) else f"ppo_jax {name}"
        series += run_series(d, label)
    longest = max((s[1]["frames"][-1] for s in series if s[1]["frames"]), default=None)
    paths = reference_paths(references)
    ref = reference_lists(paths, longest) if paths else None  # read and checked first
    run_envs = {d: env_of(d) for d in run_dirs}
    envs = sorted({e for e in run_envs.values() if e})
    for p in paths:
        ref_env = env_of(p)
        for d, env in run_envs.items():
            if ref_env and env and env != ref_env:
                what = "the tutorial's runs" if os.path.abspath(p) in _packaged() else p
                raise CompareError(
                    f"{d} trained {env}, but the reference ({what}) is {ref_env}'s: give "
                    f"TorchRL runs of {env} (--reference FILE ...), or --reference alone for "
                    "none")
        envs = envs or ([ref_env] if ref_env else [])
    title = "ppo_jax"
    if ref is not None:
        name = reference_label(paths)
        series.append((name, ref))
        if ref["frames"]:
            title = f"ppo_jax vs {name}"
        else:
            note(f"the reference is not drawn: the runs end at {longest:,} frames, before its "
                 "first batch")
    metrics.plot_panels(series, out, title=f"{title}, {', '.join(envs)}" if envs else title)
    return os.path.abspath(out)
