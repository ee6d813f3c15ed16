"""TensorBoard events: every per-batch metric and every evaluation of a run, read back with
TensorBoard's own reader, equal what metrics.json holds (frames as the step); one TensorBoard
run per run of the job; --no-tensorboard writes none."""

import json
import os
import time

import numpy as np
import pytest

from ppo_jax.run.events import EVAL, EVENTS_DIR, run_names
from ppo_jax.run.runs import Runs
from ppo_jax.run.metrics import PER_BATCH


def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of one TensorBoard run directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_events_equal_metrics_json(tiny_run, tiny_config):
    m = json.load(open(os.path.join(tiny_run, "metrics.json")))
    runs = os.listdir(os.path.join(tiny_run, EVENTS_DIR))
    assert runs == run_names(Runs(tiny_config)) == ["seed_0"]
    scalars = read_scalars(os.path.join(tiny_run, EVENTS_DIR, "seed_0"))
    assert set(scalars) == set(PER_BATCH) | set(EVAL)
    for name in PER_BATCH:
        steps, values = zip(*scalars[name])
        assert list(steps) == m["frames"], name
        np.testing.assert_array_equal(np.float32(values), np.float32(m[name]), err_msg=name)
    for name in EVAL:
        steps, values = zip(*scalars[name])
        assert list(steps) == m["eval_frames"], name
        np.testing.assert_array_equal(np.float32(values), np.float32(m[name]), err_msg=name)


def test_run_names_of_a_sweep(tiny_config):
    runs = Runs(tiny_config, 2, [{"lr": 1e-4}, {"lr": 3e-4}])
    assert run_names(runs) == ["lr=0.0001,seed_0", "lr=0.0001,seed_1",
                               "lr=0.0003,seed_0", "lr=0.0003,seed_1"]


def test_points_that_read_alike_at_six_digits_get_their_own_names(tiny_config):
    """Two points 1e-6 apart (distinct in float32) each get their own TensorBoard run, curve
    label and ranking row: their values take as many digits as tell them apart, and every
    point of that sweep the same number of digits."""
    from ppo_jax.cli.train import _ranking_table
    from ppo_jax.run.runs import labels

    sweep = [{"lr": 1e-4, "gamma": 0.99}, {"lr": 1.000001e-4, "gamma": 0.99}]
    runs = Runs(tiny_config, 1, sweep)
    assert run_names(runs) == ["lr=0.0001,gamma=0.99,seed_0",
                               "lr=0.0001000001,gamma=0.99,seed_0"]
    assert labels(sweep) == ["lr=0.0001 gamma=0.99", "lr=0.0001000001 gamma=0.99"]
    assert runs.describe(1) == "lr=0.0001000001 gamma=0.99, seed 0"
    rows = [{"rank": i + 1, "point": i, **p, "final_eval_return": 1.0,
             "final_eval_return_std": 0.0, "best_eval_return": 1.0, "seeds": 1,
             "failed_seeds": 0} for i, p in enumerate(sweep)]
    assert [line.split(" | ")[1:3] for line in _ranking_table(rows, 1).splitlines()[1:]] == [
        ["0.0001", "0.99"], ["0.0001000001", "0.99"]]
    assert labels([{"lr": 0.1}, {"lr": 0.1 + 2 ** -56}]) == ["lr=0.1", "lr=0.10000000000000002"]
    # points another field tells apart: each field's own values still read apart
    assert labels([{"lr": 1e-4, "gamma": 0.9}, {"lr": 1.000001e-4, "gamma": 0.99}]) == [
        "lr=0.0001 gamma=0.9", "lr=0.0001000001 gamma=0.99"]


def test_the_ranking_table_of_points_that_set_different_fields(tiny_config):
    """``fit(sweep=[{"lr": ...}, {"gamma": ...}])``: a column per field any point sets, the
    job's config's value where a point leaves the field to it."""
    from ppo_jax.cli.train import _ranking_table

    rows = [{"rank": i + 1, "point": i, **p, "final_eval_return": 1.0,
             "final_eval_return_std": 0.0, "best_eval_return": 1.0, "seeds": 1,
             "failed_seeds": 0} for i, p in enumerate([{"lr": 1e-4}, {"gamma": 0.9}])]
    table = _ranking_table(rows, 1, tiny_config).splitlines()
    assert table[0].startswith("rank | lr | gamma | ")
    assert [line.split(" | ")[1:3] for line in table[1:]] == [
        ["0.0001", f"{tiny_config.gamma:g}"], [f"{tiny_config.lr:g}", "0.9"]]


def test_no_tensorboard(tmp_path, tiny_flags, compile_cache_dir):
    from ppo_jax.cli import train

    out = str(tmp_path / "run")
    assert train.main([*tiny_flags, "--out", out, "--no-tensorboard", "--no-video",
                       "--no-progress", "--compile-cache-dir", compile_cache_dir]) == 0
    assert os.path.exists(os.path.join(out, "metrics.json"))
    assert not os.path.exists(os.path.join(out, EVENTS_DIR))


def test_the_writer_loads_without_torch_and_leaves_it_importable():
    """tensorboardX imports torch where it is installed (1-2 s of every run): the writer is
    loaded without it, and torch imports as usual afterwards; a torch imported before is
    left as it is (the same module object)."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: tensorboardX cannot import it anyway")
    fresh = ("import sys\n"
             "from ppo_jax.run.events import summary_writer_class\n"
             "summary_writer_class()\n"
             "assert 'tensorboardX' in sys.modules and 'torch' not in sys.modules\n"
             "import torch; torch.zeros(1)\n")
    before = ("import sys, torch\n"
              "from ppo_jax.run.events import summary_writer_class\n"
              "summary_writer_class()\n"
              "assert sys.modules['torch'] is torch and 'tensorboardX' in sys.modules\n")
    for code in (fresh, before):
        p = subprocess.run([sys.executable, "-c", code + "print('ok')"], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_a_metric_newer_than_the_file_resumes_as_unknown(tmp_path):
    """Resuming from a metrics.json written before a per-batch metric existed: its batches
    read as None for it (written as null, skipped by TensorBoard), the others unchanged."""
    import json

    from ppo_jax.run.metrics import read_history

    d = {"batch": [0, 1], "frames": [1000, 2000], "eval_frames": [1000],
         "eval_return": [5.0], "eval_steps": [4]}
    d.update({k: [1.0, 2.0] for k in PER_BATCH if k != "saturation"})
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(d))
    h = read_history(str(path), 1, 2)
    assert h["saturation"] == [[None, None]] and h["reward"] == [[1.0, 2.0]]


def test_a_history_that_starts_after_batch_0_is_cut_by_batch_index(tmp_path):
    """A run resumed once without the history before it (the refusal's advice) writes a
    metrics.json whose batches start at its checkpoint; resumed again from an earlier
    checkpoint than its last batch, that history is cut at the batch index, not after as
    many entries (which kept batches the resumed run then wrote again)."""
    import json

    from ppo_jax.run.metrics import read_history

    d = {"batch": [2, 3, 4, 5], "frames": [600, 800, 1000, 1200], "eval_frames": [600, 1000],
         "eval_return": [5.0, 6.0], "eval_steps": [4, 5]}
    d.update({k: [1.0, 2.0, 3.0, 4.0] for k in PER_BATCH})
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(d))
    h = read_history(str(path), 1, 4)
    assert h["batch"] == [2, 3] and h["frames"] == [600, 800] and h["reward"] == [[1.0, 2.0]]
    assert h["eval_frames"] == [[600]] and h["eval_return"] == [[5.0]]
    assert read_history(str(path), 1, 2)["batch"] == []
    assert read_history(str(path), 1, 6)["batch"] == [2, 3, 4, 5]


def test_a_run_stopped_by_an_exception_closes_its_event_writers(tmp_path, tiny_config):
    """An exception out of a callback (or the evaluations) stops ``fit`` with what was
    written kept, and the event writers' threads end with the run, as after a run that
    finished (a notebook goes on in the same process)."""
    import threading

    from ppo_jax import fit

    def stop(i, metrics, ev):
        if i == 1:
            raise RuntimeError("stop here")

    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="stop here"):
        fit(tiny_config, out=str(tmp_path / "run"), on_batch=stop)
    # A closed writer's queue hands its last events to the pipe in a feeder thread that ends
    # on its own a moment later (tensorboardX closes the queue without joining it, after a
    # finished run too); a writer left open keeps its threads for good.
    deadline = time.monotonic() + 10
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(threading.enumerate()) - before == set()
    scalars = read_scalars(os.path.join(tmp_path, "run", EVENTS_DIR, "seed_0"))
    assert [step for step, _ in scalars["reward"]] == [200]  # batch 0 (1 stopped in its call)
