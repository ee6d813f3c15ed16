"""scripts/benchmark.py (``ppo_jax.bench``): the config rules, the figures from per-batch
marks, the notes, the skip path without TorchRL, and one --quick smoke run (a few minutes on 2
CPU cores; speed is never asserted, only that every figure is there and positive)."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest

from ppo_jax.bench import cli, configs, driver, report
from ppo_jax.config import PPOConfig
from ppo_jax.envs import ENV_ID


def test_total_frames_is_a_common_multiple():
    assert configs.common_total_frames(2000, [1, 16]) == 2000
    assert configs.common_total_frames(20_000, [1, 16, 256]) == 32_000
    assert configs.common_total_frames(1, [1]) == 2000  # at least two tutorial batches
    total = configs.common_total_frames(100_000, [1, 16, 256, 4096])
    for n in (1, 16, 256, 4096):
        cfg = configs.scaled_config(n, total)
        assert cfg.total_frames == total and cfg.num_batches >= 2


@pytest.mark.parametrize("envs,total", [([1, 16], 2000), ([1, 16, 256], 32_000),
                                        ([1, 100], 20_000), ([1, 4096], 512_000)])
def test_scaled_configs_and_brax_match(envs, total):
    tutorial = PPOConfig()
    for n in envs:
        cfg = configs.scaled_config(n, total)
        if n == 1:  # the tutorial
            assert cfg == PPOConfig(total_frames=total, eval_every=0)  # no evaluation
        else:
            assert cfg.num_minibatches == tutorial.num_minibatches
            assert cfg.num_epochs == tutorial.num_epochs
            assert cfg.frames_per_batch - cfg.num_minibatches * cfg.minibatch_size < 15
            assert cfg.steps_per_env <= max(16, -(-tutorial.frames_per_batch // n))
        b = configs.brax_settings(cfg, evaluate=False)
        frames = b["unroll_length"] * b["batch_size"] * b["num_minibatches"]
        assert frames == cfg.frames_per_batch  # the same batch
        assert (b["batch_size"] * b["num_minibatches"]) % n == 0  # Brax's own assertion
        assert cfg.steps_per_env % b["unroll_length"] == 0
        assert b["num_evals"] == cfg.num_batches + 1  # one progress callback per batch
        assert b["num_timesteps"] == total and b["num_updates_per_batch"] == tutorial.num_epochs


def test_torchrl_runs_the_tutorial_config():
    tutorial = PPOConfig(seed=3, eval_every=0)
    s = configs.torchrl_settings(tutorial, device="cpu", threads=1)
    assert s["env"] == ENV_ID
    assert (s["frames_per_batch"], s["total_frames"], s["sub_batch_size"], s["num_epochs"]) == (
        1000, 10_000, 64, 10)
    assert (s["lr"], s["max_grad_norm"], s["clip_epsilon"], s["gamma"], s["lmbda"]) == (
        3e-4, 1.0, 0.2, 0.99, 0.95)
    assert (s["entropy_eps"], s["critic_coeff"], s["loss_critic_type"]) == (1e-4, 1.0, "smooth_l1")
    assert (s["hidden_sizes"], s["init_stats_num_iter"], s["seed"]) == ([256] * 3, 1000, 3)
    assert configs.describe_config("torchrl", s) == "1 env, 1000/batch, 15 mb x 64, 1 torch thread"
    with pytest.raises(ValueError, match="1 env"):
        configs.torchrl_settings(configs.scaled_config(16, 32_000), device="cpu")


def test_brax_differences_are_read_from_the_readme():
    text = "## A\n- not this\n## B\n\nintro\n\n- one\n  two\n- three\n\n## C\n- no\n"
    assert report.markdown_bullets(text, "B") == ["one two", "three"]
    diffs = report.brax_differences()
    assert len(diffs) == 8 and all("\n" not in d and "  " not in d for d in diffs)
    assert diffs[0].startswith("observation normalization: Brax's running mean/std")
    meta = {"brax_patched": False, "settings": {"compile_cache": None}}
    rows = [{"system": "brax", "label": "Brax PPO", "runs": [{}]}]  # one run completed
    (line,) = [n for n in report.notes(meta, rows) if n.startswith("Brax settings")]
    assert line == "Brax settings that differ from the tutorial: " + "; ".join(diffs) + "."


def test_summarize_run_excludes_the_first_batch():
    result = {"marks": [(1000, 30.0), (2000, 31.0), (3000, 32.0)],
              "evals": [(1000, 30.0, 50.0), (3000, 32.0, 9100.0)],
              "compiles": [(25.0, 20.0)], "compile_s": 25.0, "peak_rss_mib": 100.0}
    s = driver.summarize_run(result, threshold=9000.0)
    assert s["fps"] == pytest.approx(1000.0)
    assert s["startup_s"] == pytest.approx(29.0)  # 30 s to the first mark, 1 s of it steady
    assert (s["threshold_frames"], s["threshold_s"]) == (3000, 32.0)
    assert "warning" not in s
    late = dict(result, compiles=[(25.0, 20.0), (31.5, 2.0)])
    assert "compilation" in driver.summarize_run(late, None)["warning"]


def test_without_torchrl_its_rows_are_skipped(monkeypatch, capsys, tmp_path):
    """Its rows say why in the table and the JSON while another system's are measured;
    asked alone, the command is refused in that line (nothing to measure)."""
    from ppo_jax.cli.common import CLIError

    reason = "TorchRL rows skipped: torchrl not installed (simulated)"
    monkeypatch.setattr(driver, "torchrl_unavailable_reason", lambda: reason)
    out = tmp_path / "skip.json"
    with pytest.raises(CLIError, match=re.escape(f"nothing to measure: every row of --systems "
                                                 f"torchrl is skipped: {reason}")):
        cli.main(["--quick", "--systems", "torchrl", "--json", str(out)])
    assert not out.exists()
    monkeypatch.setattr(driver, "run_worker", lambda spec, timeout: {
        "marks": [(1000, 1.0), (2000, 2.0)], "evals": [], "compile_s": 0.5,
        "peak_rss_mib": 1.0})
    code = cli.main(["--quick", "--envs", "1", "--systems", "torchrl,ppo_jax", "--json",
                     str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert reason in captured.err and reason in captured.out
    assert "| TorchRL tutorial (CPU) |" in captured.out and "skipped" in captured.out
    d = json.loads(out.read_text())
    assert d["skipped"] == [reason]
    row, measured = d["rows"]
    assert row["skipped"] == reason and row["fps"] is None and row["repeats"] == 0
    assert measured["system"] == "ppo_jax" and measured["fps"]["median"] == pytest.approx(1000)


@pytest.mark.slow
def test_quick_smoke(tmp_path, root_dir, compile_cache_dir):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, os.path.join(root_dir, "scripts", "benchmark.py"), "--quick",
           "--envs", "1", "--torch-threads", "1", "--json", str(out),
           "--compile-cache", compile_cache_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| system | config | frames/s |" in proc.stdout
    assert "Warm-up (excluded from frames/s)" in proc.stdout
    d = json.loads(out.read_text())
    for key in ("date", "command", "settings", "versions", "device", "rows", "headline", "notes"):
        assert key in d
    for pkg in ("jax", "jaxlib", "mujoco", "brax", "torch", "torchrl"):
        assert pkg in d["versions"]
    assert d["device"]["cpu"] and d["device"]["cpu_count"] >= 1
    assert d["settings"]["total_frames"] == 2000 and d["settings"]["repeats"] == 1
    rows = {r["key"]: r for r in d["rows"]}
    measured = [rows["ppo_jax_1"]]
    if driver.torchrl_unavailable_reason() is None:
        measured.append(rows["torchrl"])
        assert rows["ppo_jax_1"]["ratio_vs_torchrl"] > 0
        assert d["headline"]["tutorial_config"]["ratio"] > 0
    else:
        assert rows["torchrl"]["skipped"]
    if not rows["brax_1"]["skipped"]:
        measured.append(rows["brax_1"])
        import jax

        # this jax lacks device_put_replicated: the run must say it gave it back
        assert d["brax_patched"] == (not hasattr(jax, "device_put_replicated"))
        if d["brax_patched"]:
            assert "device_put_replicated" in proc.stdout
    for r in measured:
        assert r["repeats"] == 1 and not r["errors"], r["errors"]
        assert r["fps"]["median"] > 0 and r["startup_s"] is not None
        assert r["peak_rss_mib"]["median"] > 0
        assert r["config"]
    assert rows["ppo_jax_1"]["config"]["frames_per_batch"] == 1000
    assert rows["ppo_jax_1"]["compile_s"]["median"] > 0


def test_scaling_config_splits_over_every_device_count():
    from ppo_jax.bench.scaling import scaling_config

    cfg = scaling_config(256, 65536, seed=3)
    assert cfg.num_envs == 256 and cfg.steps_per_env == 64 and cfg.seed == 3
    assert cfg.num_batches == 4 and cfg.eval_every == 0
    assert cfg.num_minibatches == 15
    for d in (1, 2, 4, 8):
        assert cfg.num_envs % d == 0


@pytest.mark.parametrize("argv,envs", [
    (["--scaling", "1,2"], 256),
    (["--scaling", "1,2", "--envs", "16,256,4096"], 4096),  # the default list, given: taken
    (["--scaling", "1,2", "--envs", "64"], 64),
])
def test_scaling_runs_at_the_largest_given_env_count(argv, envs):
    assert cli.scaling_envs(cli.resolve_args(cli.build_parser().parse_args(argv))) == envs


def test_scaling_runs_the_env_given(monkeypatch, capsys, tmp_path):
    """The env and the matmul precision given; its --json records the command and the
    settings it ran with."""
    from ppo_jax.bench import scaling

    seen = []
    monkeypatch.setattr(scaling, "measure_scaling", lambda devices, config, *a: seen.append(
        config) or [])
    out = tmp_path / "s.json"
    assert cli.main(["--scaling", "1,2", "--envs", "16", "--env", "HalfCheetah-v4",
                     "--matmul-precision", "tf32", "--json", str(out)]) == 0
    (config,) = seen
    assert config.env == "HalfCheetah-v4" and config.num_envs == 16
    assert config.matmul_precision == "tf32"
    d = json.loads(out.read_text())
    assert "--matmul-precision tf32" in d["command"]
    assert d["settings"]["matmul_precision"] == "tf32" and d["settings"]["devices"] == [1, 2]


def test_a_benchmark_without_a_figure_fails_and_claims_no_brax_run(monkeypatch, tmp_path,
                                                                    capsys):
    """Every run failing (here Brax's, whose failures alone do not fail the command) exits
    1: no figure was measured; and the notes do not say how Brax ran when it never did. The
    headline says which system --systems left out."""
    monkeypatch.setattr(driver, "brax_unavailable_reason", lambda: None)

    def failing(spec, timeout):
        raise RuntimeError("exit 1: simulated")

    monkeypatch.setattr(driver, "run_worker", failing)
    out = tmp_path / "b.json"
    assert cli.main(["--systems", "brax", "--quick", "--json", str(out)]) == 1
    d = json.loads(out.read_text())
    assert not any("Brax PPO ran" in n or "Brax settings" in n for n in d["notes"])
    assert "No headline ppo_jax / TorchRL ratio: --systems leaves torchrl and ppo_jax out." in (
        capsys.readouterr().out)


@pytest.mark.parametrize("argv,words", [
    (["--seed", "1", "--seeds", "0,1"], "--seed and --seeds: give one of them"),
    (["--matched", "--systems", "ppo_jax"], "--matched compares ppo_jax with TorchRL"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--matched", "--systems", "torchrl,ppo_jax", "--ppo-jax-config", "obs_norm=running"],
     "obs_norm=running cannot take in"),
    (["--seeds", "0,1", "--scaling", "1,2"], "--seeds, --matched, --ppo-jax-config and --jobs go "
                                             "with the comparison"),
    (["--jobs", "2", "--playground"], "not with --playground or --scaling"),
    (["--seed", str(-(2**31) - 1)], "--seed must be in"),
    (["--seed", str(2**64)], "--seed must be in"),
    (["--timeout", "nan"], "--timeout must be a positive number"),
    (["--timeout", "-1"], "--timeout must be a positive number"),
    (["--json", "/tmp"], "is a directory"),
    (["--seed", "-1"], r"--seed must be in \[0, 4294967295\] with the TorchRL rows"),
    (["--seed", "-99999999999"], r"--seed must be in \[0, 4294967295\] with the TorchRL"),
    (["--scaling", "1", "--repeats", "0"], "--repeats: --scaling runs ppo_jax once"),
    (["--scaling", "1", "--playground"], "--scaling and --playground are two other"),
    (["--json", "bench.txt"], "--json must end in .json"),
    (["--to-threshold", "nan"], "--to-threshold must be a finite return"),
    (["--to-threshold", "inf"], "--to-threshold must be a finite return"),
    (["--ppo-jax-config", "lr=1e-4", "lr=3e-4"], "--ppo-jax-config lr is given twice"),
    (["--scaling", "1,2", "--systems", "torchrl", "--warm", "--repeats", "2"],
     "--systems, --repeats, --warm: --scaling runs ppo_jax once per device count"),
    (["--scaling", "1,2", "--to-threshold"], "--to-threshold: --scaling runs ppo_jax once"),
    (["--scaling", "1,2", "--profile", "--eval-every-frames", "10"],
     "--profile, --eval-every-frames: --scaling"),
    (["--scaling", "3", "--envs", "4"], "--scaling 3: 4 envs do not split"),
    (["--warm", "--compile-cache", "/tmp/x"], "--compile-cache cannot be used with it"),
    (["--torch-threads", "-1"], "--torch-threads must be >= 0"),
    (["--replay", "old.json"], "--replay goes with --playground"),
    (["--brax-envs", "64", "--replay", "old.json"], "--replay and --brax-envs go with"),
])
def test_seed_flags_are_checked(argv, words):
    from ppo_jax.cli.common import CLIError

    with pytest.raises(CLIError, match=words):
        cli.resolve_args(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize("text", ["0,0", "-1", "a", "", str(2**32)])
def test_seeds_must_be_distinct_non_negative(text, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["--seeds", text])
    assert e.value.code == 2 and "--seeds" in capsys.readouterr().err


def test_evaluation_follows_the_flags():
    """Evaluation runs for a threshold or when its interval is given; else frames/s are
    measured without it (as before --seeds)."""
    def resolved(*argv):
        return cli.resolve_args(cli.build_parser().parse_args(list(argv)))

    assert not resolved().evaluate
    assert resolved("--to-threshold").evaluate
    a = resolved("--eval-every-frames", "5000", "--seeds", "3,1", "--envs", "1")
    assert a.evaluate and a.eval_every_frames == 5000 and driver.run_seeds(a) == [3, 1]
    rows, _ = driver.plan_rows(a, 20_000)
    ppo = next(r for r in rows if r.key == "ppo_jax_1")
    assert ppo.settings["eval_every"] == 5
    assert driver._spec(ppo, a, seed=1)["config"]["seed"] == 1
    assert driver.run_seeds(resolved("--seed", "4")) == [4]


def test_learning_tables_by_seed():
    """Returns at the last frame count every run evaluated (TorchRL's last evaluation is
    after batch 190 of 200, ppo_jax's also after the last batch), their mean over the last
    five such, and the saturation share: by seed, with mean and sd over the seeds."""
    def run(seed, base, sat, last=False):
        evals = [(f, 0.0, base + f / 1000) for f in range(1000, 200_000, 10_000)]
        return {"seed": seed, "evals": evals + ([(200_000, 0.0, -1e6)] if last else []),
                "saturation": {"mean": sat, "max": sat, "last10": sat}}

    results = [{"label": "TorchRL tutorial (CPU)", "description": "d",
                "runs": [run(0, 4000.0, 0.01), run(1, 2000.0, 0.03)]},
               {"label": "ppo_jax, tutorial config", "description": "d",
                "runs": [run(1, 1000.0, 0.0, last=True)]}]
    meta = {"settings": {"seeds": [0, 1], "seed": 0, "evaluate": True}}
    text = "\n".join(report.learning_tables(results, meta))
    assert "evaluation at 191,000 frames" in text and "200,000" not in text
    assert "| TorchRL tutorial (CPU) | d | 4,191 | 2,191 | 3,191 | 1,414 |" in text
    assert "| ppo_jax, tutorial config | d | – | 1,191 | 1,191 | – |" in text
    # last five: 151k .. 191k, mean 171k
    assert "| TorchRL tutorial (CPU) | d | 4,171 | 2,171 | 3,171 | 1,414 |" in text
    assert "| TorchRL tutorial (CPU) | d | 1.000 | 3.000 | 2.000 | 1.414 |" in text
    no_eval = report.learning_tables(results, {"settings": dict(meta["settings"],
                                                                evaluate=False)})
    assert "Learning by seed" not in "\n".join(no_eval) and "Saturated" in "\n".join(no_eval)
    assert report.learning_tables(results, {"settings": {"seeds": None, "seed": 0,
                                                         "evaluate": False}}) == []


def test_matched_runs_wait_for_their_torchrl_start(monkeypatch, tmp_path):
    """With --jobs 2 a matched run starts only after its seed's TorchRL run, and takes the
    start that run saved; a failed TorchRL run leaves its matched run one error line."""
    import threading
    import time

    monkeypatch.setattr(driver, "torchrl_unavailable_reason", lambda: None)
    monkeypatch.setattr(driver, "torch_cuda_available", lambda: False)
    args = cli.resolve_args(cli.build_parser().parse_args(
        ["--systems", "torchrl,ppo_jax", "--envs", "1", "--seeds", "0,1", "--matched",
         "--jobs", "2", "--eval-every-frames", "1000", "--repeats", "1"]))
    rows, _ = driver.plan_rows(args, 2000)
    assert [r.key for r in rows] == ["torchrl", "ppo_jax_1", "ppo_jax_matched"]
    events, lock = [], threading.Lock()

    def fake_worker(spec, timeout):
        st = spec.get("settings") or spec["config"]
        name = spec["kind"] + ("_matched" if spec.get("init_from_torchrl") else "")
        with lock:
            events.append(("start", name, st["seed"]))
        if spec["kind"] == "torchrl":
            time.sleep(0.2)
            if st["seed"] == 1:
                raise RuntimeError("exit 1: simulated")
            with open(st["save_init"], "w") as f:
                f.write("start")
        else:
            assert spec.get("init_from_torchrl") is None or open(
                spec["init_from_torchrl"]).read() == "start"
        with lock:
            events.append(("end", name, st["seed"]))
        return {"marks": [(1000, 1.0), (2000, 2.0)], "evals": [(2000, 2.0, 5.0)],
                "per_batch": {"saturation": [0.0, 0.5]}, "peak_rss_mib": 1.0}

    monkeypatch.setattr(driver, "run_worker", fake_worker)
    driver.measure(rows, args, log=lambda m: None)
    assert events.index(("start", "ppo_jax_matched", 0)) > events.index(("end", "torchrl", 0))
    assert ("start", "ppo_jax_matched", 1) not in events
    by_key = {r.key: r for r in rows}
    assert [r["seed"] for r in by_key["ppo_jax_matched"].runs] == [0]
    assert by_key["ppo_jax_matched"].errors == ["repeat 1, seed 1: no TorchRL start for seed 1 "
                                                "(its run failed)"]
    assert sorted(r["seed"] for r in by_key["ppo_jax_1"].runs) == [0, 1]
    assert by_key["ppo_jax_1"].runs[0]["saturation"]["mean"] == pytest.approx(0.25)


@pytest.mark.slow
def test_seeds_and_matched_starts_end_to_end(tmp_path, root_dir, compile_cache_dir):
    """Two seeds with matched starts, the real workers: each matched run's initial
    normalization statistics are its seed's TorchRL run's (float32 of them), the plain
    runs' are their own, and the learning table has every seed."""
    if driver.torchrl_unavailable_reason():
        pytest.skip(driver.torchrl_unavailable_reason())
    out = tmp_path / "seeds.json"
    cmd = [sys.executable, os.path.join(root_dir, "scripts", "benchmark.py"), "--systems",
           "torchrl,ppo_jax", "--envs", "1", "--total-frames", "2000", "--repeats", "1",
           "--seeds", "0,1", "--matched", "--eval-every-frames", "1000", "--torch-threads", "1",
           "--compile-cache", compile_cache_dir, "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Learning by seed" in proc.stdout and "Saturated actions by seed" in proc.stdout
    rows = {r["key"]: r for r in json.loads(out.read_text())["rows"]}
    torch_stats = {r["seed"]: r["start_stats"] for r in rows["torchrl"]["runs"]}
    assert sorted(torch_stats) == [0, 1]
    for r in rows["ppo_jax_matched"]["runs"]:
        theirs = torch_stats[r["seed"]]
        for k in ("loc", "scale"):
            np.testing.assert_allclose(r["start_stats"][k], theirs[k], rtol=1e-6)
        assert r["evals"][-1][0] == 2000 and 0 <= r["saturation"]["mean"] <= 1
    for r in rows["ppo_jax_1"]["runs"]:
        assert not np.allclose(r["start_stats"]["loc"], torch_stats[r["seed"]]["loc"])


@pytest.mark.parametrize("spec,words", [
    ("obs_norm=nope", "obs_norm must be one of"), ("seed=3", "seed: the benchmark sets it"),
    ("hidden_sizes=3", "only single-valued fields"), ("init_stats_frames=x", "expected int"),
    ("foo=1", "foo: no such PPOConfig field"), ("lr", "expected FIELD=VALUE"),
    ("clip_epsilon=2", "clip_epsilon"), ("entropy_coeff=inf", "entropy_coeff must be finite"),
    ("critic_coeff=-1", "critic_coeff must be >= 0")])
def test_ppo_jax_config_is_checked(spec, words):
    from ppo_jax.cli.common import CLIError

    with pytest.raises(CLIError, match=words):
        configs.parse_overrides([spec])


def test_ppo_jax_config_sets_only_the_ppo_jax_rows():
    a = cli.resolve_args(cli.build_parser().parse_args(
        ["--envs", "1", "--ppo-jax-config", "init-stats-frames=10000", "obs_norm=safe"]))
    rows, _ = driver.plan_rows(a, 20_000)
    by_key = {r.key: r for r in rows}
    assert by_key["ppo_jax_1"].settings["init_stats_frames"] == 10_000
    assert by_key["ppo_jax_1"].settings["obs_norm"] == "safe"
    assert by_key["ppo_jax_1"].label.endswith("(init_stats_frames=10000 obs_norm=safe)")
    if not by_key["torchrl"].skipped:
        assert by_key["torchrl"].settings["init_stats_num_iter"] == 1000


def test_rows_that_cannot_run_an_env_are_refused_or_skipped_before_any_run(monkeypatch, capsys):
    """An env that is not a Gymnasium port (``brax:``, ``playground:``): the TorchRL rows
    are skipped with a note (its tutorial loop runs Gymnasium's envs), and
    ``eval_sim=mujoco`` is refused in one line, before any row runs."""
    from ppo_jax.cli.common import CLIError

    a = cli.resolve_args(cli.build_parser().parse_args(
        ["--env", "brax:reacher", "--systems", "torchrl,ppo_jax", "--envs", "1"]))
    rows, messages = driver.plan_rows(a, 2_000)
    by_key = {r.key: r for r in rows}
    assert "brax:reacher" in by_key["torchrl"].skipped and by_key["ppo_jax_1"].skipped is None
    assert any("TorchRL rows skipped" in m for m in messages)
    ran = []
    monkeypatch.setattr(driver, "measure", lambda *a, **k: ran.append(1))
    with pytest.raises(CLIError, match="brax:reacher has none"):
        cli.main(["--env", "brax:reacher", "--systems", "ppo_jax", "--envs", "1",
                  "--eval-every-frames", "1000", "--ppo-jax-config", "eval_sim=mujoco"])
    assert ran == []
    # without evaluation the runs never evaluate: nothing to refuse
    a = cli.resolve_args(cli.build_parser().parse_args(
        ["--env", "brax:reacher", "--systems", "ppo_jax", "--envs", "1", "--ppo-jax-config",
         "eval_sim=mujoco"]))
    assert not a.evaluate


def test_an_unusable_compile_cache_is_refused_before_any_run(monkeypatch, tmp_path):
    """After every other refusal (a refused command leaves no directory behind), before any
    row runs."""
    from ppo_jax.cli.common import CLIError

    ran = []
    monkeypatch.setattr(driver, "measure", lambda *a, **k: ran.append(1))
    with pytest.raises(CLIError, match="cannot write"):
        cli.main(["--systems", "ppo_jax", "--envs", "1", "--compile-cache",
                  "/proc/forbidden/cache"])
    with pytest.raises(CLIError, match="--torch-threads"):
        cli.main(["--compile-cache", str(tmp_path / "cache"), "--torch-threads", "-1"])
    with pytest.raises(CLIError, match="unknown env"):
        cli.main(["--compile-cache", str(tmp_path / "cache"), "--env", "Nope-v0"])
    with pytest.raises(CLIError, match="cannot write"):
        cli.main(["--systems", "ppo_jax", "--envs", "1", "--json", "/proc/forbidden/b.json"])
    json_dir = tmp_path / "json"
    for argv in (["--env", "Nope-v0"], ["--scaling", "3", "--envs", "4"],
                 ["--systems", "brax", "--env", "Hopper-v4"]):  # the last: no row to measure
        with pytest.raises(CLIError):
            cli.main(argv + ["--json", str(json_dir / "b.json"), "--compile-cache",
                             str(tmp_path / "cache")])
    assert ran == [] and not (tmp_path / "cache").exists() and not json_dir.exists()
    # --json's folder was made, then --compile-cache refused: that folder was left
    with pytest.raises(CLIError, match="cannot write"):
        cli.main(["--systems", "ppo_jax", "--envs", "1", "--json", str(json_dir / "b.json"),
                  "--compile-cache", "/proc/forbidden/cache"])
    # found after the whole benchmark (its results lost), or by a traceback before it
    long_json = str(tmp_path / ("a" * 300 + ".json"))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    rows = ["--systems", "ppo_jax", "--envs", "2"]
    for argv, words in [(rows + ["--json", long_json], "--json: the file name aaaaa"),
                        (rows + ["--total-frames", str(10**15)], "total_frames / "
                         "frames_per_batch must be at most 2147483647"),
                        (rows + ["--compile-cache", str(run / "checkpoints" / "c")],
                         "is inside the checkpoints/ of the run"),
                        (["--scaling", "1", "--total-frames", str(10**15)],
                         "total_frames / frames_per_batch must be at most 2147483647"),
                        (["--scaling", "1", "--envs", str(10**8)], "frames_per_batch must be ")]:
        with pytest.raises(CLIError, match=words):
            cli.main(["--json", str(json_dir / "b.json")] + argv)
    assert ran == [] and not json_dir.exists() and os.listdir(tmp_path) == ["run"]
    assert os.listdir(run / "checkpoints") == []


def test_a_negative_seed_is_taken_where_no_torchrl_row_runs():
    for argv in (["--seed", "-1", "--systems", "ppo_jax,brax"], ["--seed", "-1", "--scaling", "1"],
                 ["--seed", "-1", "--playground"]):
        assert cli.resolve_args(cli.build_parser().parse_args(argv)).seed == -1


def test_playground_refusals_leave_no_directory(monkeypatch, tmp_path):
    """--playground's plan and --replay's file are refused (one line) before the --json and
    --compile-cache directories are made."""
    from ppo_jax.bench import playground
    from ppo_jax.cli.common import CLIError
    from ppo_jax.envs import registry

    monkeypatch.setattr(registry, "check_env_id", lambda env_id: env_id)
    out = ["--json", str(tmp_path / "j" / "x.json"), "--compile-cache", str(tmp_path / "c")]

    def refused_plan(args):
        raise ValueError("--brax-envs 7: simulated refusal")

    monkeypatch.setattr(playground, "plan", refused_plan)
    with pytest.raises(CLIError, match="simulated refusal"):
        cli.main(["--playground", "--brax-envs", "7"] + out)
    monkeypatch.setattr(playground, "plan", lambda args: {"env": "x"})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    for replay, words in ((tmp_path / "missing.json", "--replay: cannot read {}"),
                          (bad, "--replay: {} is not JSON")):
        with pytest.raises(CLIError, match=re.escape(words.format(replay))):
            cli.main(["--playground", "--replay", str(replay)] + out)
    assert not (tmp_path / "j").exists() and not (tmp_path / "c").exists()


def test_a_stop_after_a_failure_ends_every_wait(monkeypatch):
    """--no-keep-going with matched starts: the first failure stops the measurement, and
    no matched run is left waiting for a TorchRL run that never starts (with and without
    --jobs)."""
    import threading

    monkeypatch.setattr(driver, "torchrl_unavailable_reason", lambda: None)
    monkeypatch.setattr(driver, "torch_cuda_available", lambda: False)

    def failing(spec, timeout):
        raise RuntimeError("exit 1: simulated")

    monkeypatch.setattr(driver, "run_worker", failing)
    for jobs in ("1", "2"):
        args = cli.resolve_args(cli.build_parser().parse_args(
            ["--systems", "torchrl,ppo_jax", "--envs", "1", "--seeds", "0,1", "--matched",
             "--no-keep-going", "--jobs", jobs, "--repeats", "2"]))
        rows, _ = driver.plan_rows(args, 2000)
        t = threading.Thread(target=driver.measure, args=(rows, args, lambda m: None),
                             daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive(), f"--jobs {jobs}: the measurement hangs"
        # the runs already under way when the first failed; none started after it
        assert 1 <= sum(len(r.errors) for r in rows) <= int(jobs)
