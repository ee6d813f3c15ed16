"""TensorBoard event files of a job, written while it trains.

``OUT/tensorboard/<run>/`` holds one TensorBoard run per run of the job (``seed_0``, or
``lr=0.001,clip_epsilon=0.1,seed_0`` for a point of a sweep), so ``tensorboard --logdir
runs/`` draws the runs of every job side by side, live. Each per-batch metric and each
evaluation is a scalar under its ``metrics.json`` name, with the frames as the step, and with
exactly the value ``metrics.json`` holds (:class:`EventLog` reads them from the job's
:class:`~ppo_jax.run.runner.RunLog` after each batch). The writer is tensorboardX's (a Brax
dependency); events are written between program calls, like the progress bar, never from
inside a compiled program. A resumed job's writers purge the events past its checkpoint (a
run killed after its last checkpoint had written some), so the curves never fold back.
"""

from __future__ import annotations

import math
import os
import re
import sys

from ppo_jax.run.metrics import PER_BATCH
from ppo_jax.run.runs import label_digits, value_texts

EVENTS_DIR = "tensorboard"
EVAL = ("eval_return", "eval_steps")


def run_names(runs) -> list[str]:
    """A directory name for each run of ``runs`` (:class:`~ppo_jax.run.runs.Runs`)."""
    names = []
    digits = label_digits(runs.sweep)
    for r in range(runs.num_runs):
        point = value_texts(runs.sweep[runs.point_of(r)], digits)
        parts = [f"{k}={v}" for k, v in point.items()] + [f"seed_{runs.seed_of(r)}"]
        names.append(re.sub(r"[^\w.=,+-]", "_", ",".join(parts)))
    return names


def summary_writer_class():
    """tensorboardX's ``SummaryWriter``, imported without torch: tensorboardX imports torch at
    import time where it is installed (the TorchRL extra), only to accept torch tensors,
    which ppo_jax never logs; that import costs every run 1-2 s. While tensorboardX loads
    (~0.1 s, once per process, before training starts), ``import torch`` fails, in another
    thread too; torch is importable as before right after, and an already imported torch
    (or tensorboardX) is left as it is."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch`: ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class EventLog:
    """One tensorboardX writer per run under ``out/tensorboard/``; ``start_frames``: the
    frames of the checkpoint a resumed job starts from (0 for a new job)."""

    def __init__(self, out: str, runs, start_frames: int = 0):
        SummaryWriter = summary_writer_class()
        root = os.path.join(out, EVENTS_DIR)
        purge = start_frames + 1 if start_frames else None
        self.writers = [SummaryWriter(os.path.join(root, name), purge_step=purge)
                        for name in run_names(runs)]

    def add_latest(self, log) -> None:
        """Write the batch ``log`` (a :class:`~ppo_jax.run.runner.RunLog`) recorded last, and
        its evaluation when there was one, for every run that recorded a value."""
        h = log.history
        frames = h["frames"][-1]
        for r, writer in enumerate(self.writers):
            for name in PER_BATCH:
                value = h[name][r][-1]
                if value is not None and math.isfinite(value):
                    writer.add_scalar(name, value, frames)
            if h["eval_frames"][r] and h["eval_frames"][r][-1] == frames:
                for name in EVAL:
                    writer.add_scalar(name, h[name][r][-1], frames)

    def add_eval(self, log, i: int) -> None:
        """Write the evaluation after batch ``i`` that ``log`` recorded after the batch itself
        (a host evaluation, :meth:`~ppo_jax.run.runner.RunLog.add_eval`), at that batch's
        frames, for every run that recorded it."""
        h = log.history
        frames = (i + 1) * log.config.frames_per_batch
        for r, writer in enumerate(self.writers):
            if frames in h["eval_frames"][r]:
                at = h["eval_frames"][r].index(frames)
                for name in EVAL:
                    writer.add_scalar(name, h[name][r][at], frames)

    def flush(self) -> None:
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
