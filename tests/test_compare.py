"""scripts/compare.py: ppo_jax runs against TorchRL reference runs (the packaged tutorial runs
and files in the same format), bad files as one line."""

import json
import re
import warnings

import numpy as np
import pytest

from ppo_jax.interop import compare
from ppo_jax.cli.common import CLIError
from ppo_jax.cli import compare as compare_cmd


def test_packaged_reference_is_the_tutorial_runs():
    paths = compare.reference_paths(["tutorial"])
    assert len(paths) == 3
    ref = compare.reference_lists(paths, max_frames=150_000)
    assert len(ref["reward"]) == 3 and len(ref["frames"]) == 150
    assert all(len(r) == 150 for r in ref["reward"])
    assert ref["eval_frames"][0][:2] == [1000, 11000]  # evaluations after batches 0, 10, ...
    # seed 0 first reaches 9,000 at 71k frames (the reference README's figure)
    first = next(f for f, r in zip(ref["eval_frames"][0], ref["eval_return"][0]) if r >= 9000)
    assert first == 71_000


def test_compare_draws_runs_against_the_reference(tiny_run, tmp_path):
    out = tmp_path / "cmp.png"
    assert compare_cmd.main([tiny_run, "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    lists = compare.run_lists(tiny_run)
    assert lists["frames"] == [200, 400, 600] and len(lists["reward"]) == 1
    np.testing.assert_allclose(lists["reward"][0],
                               json.load(open(f"{tiny_run}/metrics.json"))["reward"])


def test_a_reference_of_another_env_is_refused(tmp_path, capsys, monkeypatch):
    """A run of another env than the reference's is one line, not the pendulum's curves
    under the pendulum's title; the title names the runs' env; a reference cut to nothing
    says so."""
    run = tmp_path / "swimmer"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({**_one_run(), "env_id": "Swimmer-v4"}))
    with pytest.raises(CLIError, match=re.escape(
            "trained Swimmer-v4, but the reference (the tutorial's runs) is "
            "InvertedDoublePendulum-v4's")):
        compare_cmd.main([str(run), "--out", str(tmp_path / "x.png")])
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({**_one_run(), "env": "Hopper-v4"}))
    with pytest.raises(CLIError, match="is Hopper-v4's"):
        compare_cmd.main([str(run), "--reference", str(ref), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
    titles, legends = [], []

    def plot_panels(series, out, title):
        titles.append(title)
        legends.append([label for label, _ in series])

    monkeypatch.setattr(compare.metrics, "plot_panels", plot_panels)
    compare.compare([str(run)], [], str(tmp_path / "a.png"))
    # a run given as its metrics.json is named as its directory; "none": no reference
    compare.compare([str(run / "metrics.json")], ["none"], str(tmp_path / "a.png"))
    ref.write_text(json.dumps({**_one_run(), "env": "Swimmer-v4"}))
    compare.compare([str(run)], [str(ref)], str(tmp_path / "a.png"))
    pendulum = tmp_path / "pendulum"
    pendulum.mkdir()
    (pendulum / "metrics.json").write_text(json.dumps(
        {**_one_run(), "env_id": "InvertedDoublePendulum-v4"}))
    capsys.readouterr()
    compare.compare([str(pendulum)], ["tutorial"], str(tmp_path / "a.png"))
    # a reference is labelled by what it is: the tutorial's runs, or the files given; the
    # title names it only where it is drawn
    assert titles == ["ppo_jax, Swimmer-v4", "ppo_jax, Swimmer-v4",
                      "ppo_jax vs reference ref, Swimmer-v4", "ppo_jax, InvertedDoublePendulum-v4"]
    assert legends == [["ppo_jax swimmer"], ["ppo_jax swimmer"],
                       ["ppo_jax swimmer", "reference ref"],
                       ["ppo_jax pendulum", "TorchRL tutorial"]]
    assert "the reference is not drawn: the runs end at 600 frames" in capsys.readouterr().err
    long = tmp_path / "long"
    long.mkdir()
    (long / "metrics.json").write_text(json.dumps({**_one_run(), "frames": [1000, 2000, 3000]}))
    compare.compare([str(long)], ["tutorial"], str(tmp_path / "a.png"))
    assert titles[-1] == "ppo_jax vs TorchRL tutorial, InvertedDoublePendulum-v4"
    with pytest.raises(compare.CompareError, match="3 labels for 1 run"):
        compare.compare([str(long)], [], str(tmp_path / "a.png"), labels=["a", "b", "c"])
    # matplotlib's legend leaves these out (an empty label warns): refused, nothing drawn
    for label in ("", " ", "_a"):
        with pytest.raises(compare.CompareError, match=f"--labels: {label!r} cannot name a "
                           "run: a legend leaves out an empty label and one that starts"):
            compare.compare([str(long)], [], str(tmp_path / "b.png"), labels=[label])
    assert not (tmp_path / "b.png").exists()


def test_a_series_keeps_its_colour_in_every_panel(tmp_path, monkeypatch):
    """A series with no evaluation (drawn in the training panels only) does not shift the
    colours of those after it in the evaluation panels."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    no_eval = {**_one_run(), "eval_frames": [], "eval_return": [], "eval_steps": []}
    lists = [{k: ([v] if k not in ("frames", "batch", "num_runs") else v)
              for k, v in run.items()} for run in (no_eval, _one_run())]
    compare.metrics.plot_panels([("a", lists[0]), ("b", lists[1])], str(tmp_path / "p.png"))
    (fig,) = figures
    colour = {(i, line.get_label()): line.get_color()
              for i, ax in enumerate(fig.axes) for line in ax.get_lines()}
    assert (2, "a") not in colour
    assert colour[0, "b"] == colour[2, "b"] == colour[3, "b"] != colour[0, "a"]


def test_a_batch_where_every_seed_stopped_is_a_gap_without_warnings(tmp_path):
    """Two seeds that both stopped at NaN (null in metrics.json) from batch 1: the mean line
    and band leave a gap there, and numpy's empty-slice warnings stay out of the output."""
    run = _one_run()
    two = {**{k: [v, v] for k, v in run.items() if k not in ("frames", "batch", "num_runs")},
           "frames": run["frames"], "batch": run["batch"], "num_runs": 2}
    two["reward"] = [[1.0, None, None], [2.0, None, None]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare.metrics.plot_panels([("two seeds", two)], str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 0


def test_bad_reference_is_one_line(tiny_run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"frames": [1]}))
    with pytest.raises(CLIError, match="not a metrics.json or a TorchRL reference run"):
        compare_cmd.main([tiny_run, "--reference", str(bad), "--out", str(tmp_path / "x.png")])
    empty = tmp_path / "empty"  # a run whose job stopped before its first batch ended
    empty.mkdir()
    (empty / "metrics.json").write_text(json.dumps({"format": "ppo_jax.metrics/2",
                                                    "total_frames": 0, "failed_batch": 0}))
    with pytest.raises(CLIError, match="records no batch .* nothing to draw"):
        compare_cmd.main([tiny_run, str(empty), "--out", str(tmp_path / "x.png")])
    with pytest.raises(CLIError, match="cannot read"):
        compare_cmd.main([str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")])
    # refused: the folders --out would have been written in are not left behind, empty
    with pytest.raises(CLIError, match="cannot read"):
        compare_cmd.main([str(tmp_path / "missing"), "--out", str(tmp_path / "new/dir/x.png")])
    assert not (tmp_path / "new").exists()


def _one_run(n=3, m=2):
    """A one-run metrics dict in metrics.json's layout (flat lists)."""
    return {"num_runs": 1, "batch": list(range(n)), "frames": [200 * (i + 1) for i in range(n)],
            "reward": [1.0] * n, "step_count": [5] * n, "eval_frames": [200, 600][:m],
            "eval_return": [3.0] * m, "eval_steps": [9] * m}


@pytest.mark.parametrize("change,words", [
    ({"reward": "abc"}, "'reward' is not a flat list of numbers"),
    ({"reward": ["abc", 1.0, 2.0]}, "'reward' is not a flat list of numbers"),
    ({"frames": 5}, "'frames' is not a flat list"),
    ({"reward": [1.0, 2.0]}, "'reward' has 2 entries where 'frames' has 3"),
    ({"eval_steps": [1]}, "'eval_steps' has 1 entries where 'eval_frames' has 2"),
    ({"num_runs": "x"}, "num_runs must be a positive count"),
    ({"num_runs": 0, "num_seeds": -1}, "num_runs must be a positive count"),
    ({"num_runs": 2}, "is not 2 lists (one per run)"),
    # beyond float32 (a run's metrics are float32): matplotlib failed to place its ticks
    ({"eval_return": [1e308, 3.0]}, "'eval_return' holds 1e+308, beyond float32's range"),
    ({"reward": [1.0, -4e38, 1.0]}, "'reward' holds -4e+38, beyond float32's range"),
    ({"reward": [1.0, 10**400, 1.0]}, "'reward' holds an integer of 401 digits, beyond"),
    ({"frames": [200, 10**400, 600]}, "'frames' holds an integer of 401 digits, beyond"),
])
def test_malformed_metrics_are_one_line(change, words, tmp_path):
    """Lists of the wrong shape or kind, in a run's metrics.json or a reference file."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({**_one_run(), **change}))
    with pytest.raises(CLIError, match=re.escape(words)):
        compare_cmd.main([str(run), "--reference", "--out", str(tmp_path / "x.png")])
    good = tmp_path / "good"
    good.mkdir()
    (good / "metrics.json").write_text(json.dumps(_one_run()))
    with pytest.raises(CLIError, match=re.escape(words)):
        compare_cmd.main([str(good), "--reference", str(run / "metrics.json"),
                          "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_several_runs_and_a_reference_of_several_runs(tmp_path):
    """A metrics.json of 2 runs draws as 2 seeds; as a reference (one TorchRL run) it is
    refused in one line."""
    two = {k: ([v, v] if isinstance(v, list) else v) for k, v in _one_run().items()}
    two.update(num_runs=2, batch=[0, 1, 2])
    two["batch"] = [[0, 1, 2], [0, 1, 2]]
    run = tmp_path / "two"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(two))
    assert compare_cmd.main([str(run), "--reference", "--out", str(tmp_path / "a.png")]) == 0
    with pytest.raises(CLIError, match="holds 2 runs: a reference is one TorchRL run"):
        compare_cmd.main([str(run), "--reference", str(run / "metrics.json"),
                          "--out", str(tmp_path / "b.png")])


@pytest.mark.parametrize("out,words", [
    ("x.txt", "must end in one of .avif, .eps"), ("", "must name a file"),
    ("DIR", "is a directory"), ("/proc/forbidden/x.png", "cannot write"),
])
def test_bad_out_is_refused_before_reading(out, words, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_one_run()))
    out = str(tmp_path) if out == "DIR" else (out if out.startswith("/") or not out
                                              else str(tmp_path / out))
    with pytest.raises(CLIError, match=re.escape(words)):
        compare_cmd.main([str(run), "--reference", "--out", out])


def test_out_in_any_image_format_or_none(tmp_path):
    """Every image format matplotlib writes; no suffix writes a PNG and says so."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_one_run()))
    for name in ("a.eps", "a.svg", "a.tiff"):
        assert compare_cmd.main([str(run), "--reference", "--out", str(tmp_path / name)]) == 0
        assert (tmp_path / name).stat().st_size > 1000
    assert compare_cmd.main([str(run), "--reference", "--out", str(tmp_path / "plain")]) == 0
    assert (tmp_path / "plain.png").is_file() and not (tmp_path / "plain").exists()


def test_a_sweep_draws_one_curve_per_point_and_a_reference_file_draws_as_a_run(
        tmp_path, monkeypatch):
    """A sweep's metrics.json (2 points x 2 seeds) draws as one curve per point, each the
    mean of its own seeds, labelled with the point's values (as the run's curves.png): not
    one curve averaging configs. A TorchRL reference file given as a run (no ``batch``
    list) draws as one run."""
    runs = [[1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [10.0, 10.0, 10.0], [30.0, 30.0, 30.0]]
    four = {k: ([v] * 4 if isinstance(v, list) else v) for k, v in _one_run().items()}
    four.update(num_runs=4, num_seeds=2, reward=runs,
                sweep=[{"lr": 0.001}, {"lr": 0.0003}],
                runs=[{"seed": s, "lr": lr} for lr in (0.001, 0.0003) for s in (0, 1)])
    run = tmp_path / "sweep"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(four))
    drawn = []
    monkeypatch.setattr(compare.metrics, "plot_panels",
                        lambda series, out, title: drawn.append(series))
    compare.compare([str(run)], [], str(tmp_path / "a.png"))
    (series,) = drawn
    assert [label for label, _ in series] == ["ppo_jax sweep lr=0.001", "ppo_jax sweep lr=0.0003"]
    assert [lists["reward"] for _, lists in series] == [runs[:2], runs[2:]]
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({k: v for k, v in _one_run().items() if k != "batch"}))
    compare.compare([str(ref)], [], str(tmp_path / "b.png"))
    assert drawn[1][0][1]["frames"] == [200, 400, 600]
    two = {**four, "num_runs": 2, "sweep": [{"lr": 0.001}], "reward": runs[:2],
           **{k: v[:2] for k, v in four.items() if isinstance(v, list) and len(v) == 4}}
    (run / "metrics.json").write_text(json.dumps(two))  # a sweep of one point is labelled too
    compare.compare([str(run)], [], str(tmp_path / "c.png"))
    assert [label for label, _ in drawn[2]] == ["ppo_jax sweep lr=0.001"]
