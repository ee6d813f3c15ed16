"""``scripts/benchmark.py --playground``: Playground's own Brax-PPO trainer against ppo_jax on
a Playground env. The plan (Playground's published parameters, only the run's length
scaled), the figures and the table from fake runs, and one smoke run of the whole command at
tiny sizes (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("mujoco_playground")
pytest.importorskip("brax")

from ppo_jax.bench import cli, playground  # noqa: E402
from ppo_jax.config import PPOConfig  # noqa: E402

STEP = 983_040  # 1024 x 30 x 32: one Brax training step with Playground's parameters


def _args(*flags):
    return cli.resolve_args(cli.build_parser().parse_args(["--playground", *flags]))


def test_plan_keeps_playgrounds_parameters_and_scales_the_length():
    published = playground.published_params("CartpoleBalance")
    assert playground.frames_per_training_step(published) == STEP
    assert playground.published_run_frames(published) == 90 * STEP  # 60M rounds up to 90 steps
    p = playground.plan(_args("--total-frames", "1000000"))
    assert p["total_frames"] == 2 * STEP and p["training_steps"] == 2  # at least 2 steps
    b = p["brax"]
    scaled = set(playground.SCALED_KEYS)
    assert {k: v for k, v in b.items() if k in published and k not in scaled} == {
        k: v for k, v in published.items() if k not in scaled}
    assert (b["num_timesteps"], b["num_evals"], b["num_resets_per_eval"]) == (2 * STEP, 3, 1)
    assert (b["num_eval_envs"], b["run_evals"]) == (128, True)
    assert "deterministic_eval" not in b  # Brax's default (False), as Playground's script
    assert p["published"] == {"num_timesteps": 60_000_000, "num_evals": 10,
                              "num_resets_per_eval": 10}
    (n, cfg), = p["ppo_jax"].items()
    c = PPOConfig.from_dict(cfg)
    assert n == 256 and c.env == "playground:CartpoleBalance" and c.total_frames == 2 * STEP
    assert (c.num_envs, c.frames_per_batch, c.minibatch_size, c.num_epochs) == (256, 4096, 273, 10)
    assert c.eval_every == 24  # ~10 evaluations per Brax training step
    assert playground.total_frames(3 * STEP + 1, published, [256]) == 4 * STEP
    with pytest.raises(cli.CLIError, match="1 env"):
        _args("--envs", "1,256")


def _fake_runs():
    """Canned worker results: Brax 2 training steps; ppo_jax 480 batches of 4096."""
    brax_cold = {
        "marks": [[STEP, 300.0], [2 * STEP, 620.0]],
        "evals": [[0, 50.0, 120.0], [STEP, 310.0, 600.0], [2 * STEP, 630.0, 850.0]],
        "sps": [[STEP, 3300.0], [2 * STEP, 3400.0]], "launch_to_t0_s": 8.0,
        "compile_s": 40.0, "cache": {"hits": 0, "misses": 9}, "patched": True,
        "peak_rss_mib": 3000.0, "device": {"backend": "cpu", "devices": ["cpu"]},
    }
    brax_warm = dict(brax_cold, marks=[[STEP, 280.0]], evals=[[0, 40.0, 120.0]],
                     sps=[], cache={"hits": 9, "misses": 0})
    fpb = 4096
    cfg = PPOConfig(env="playground:CartpoleBalance", num_envs=256, frames_per_batch=fpb,
                    minibatch_size=273, total_frames=2 * STEP, eval_every=24)
    marks = [[(i + 1) * fpb, 30.0 + 2.0 * i + (0.5 * (i // 24))] for i in range(480)]
    evals = [[(i + 1) * fpb, marks[i][1], float(i)] for i in range(480) if cfg.is_eval_batch(i)]
    ppo_cold = {"marks": marks, "evals": evals, "launch_to_t0_s": 5.0, "compile_s": 25.0,
                "compile": {"update": {"source": "compiled"}}, "peak_rss_mib": 1500.0,
                "device": {"backend": "cpu", "devices": ["cpu"]}}
    ppo_warm = dict(ppo_cold, marks=marks[:1], evals=evals[:1], compile_s=2.0,
                    compile={"update": {"source": "ppo_programs"}})
    return {"brax_playground": (brax_cold, brax_warm), "ppo_jax": (ppo_cold, ppo_warm)}


def test_table_and_json_from_fake_runs(monkeypatch, capsys, tmp_path):
    fake = _fake_runs()
    calls = []

    def run(spec, timeout):
        calls.append(spec)
        cold, warm = fake[spec["kind"]]
        warm_run = spec.get("stop") == 1 or spec.get("stop_after_steps") == 1
        assert spec["compile_cache"]
        return (warm if warm_run else cold), 100.0

    monkeypatch.setattr(playground, "_run", run)
    out = tmp_path / "pg.json"
    assert cli.main(["--playground", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert [(c["kind"], "stop" in c or "stop_after_steps" in c) for c in calls] == [
        ("brax_playground", False), ("brax_playground", True), ("ppo_jax", False),
        ("ppo_jax", True)]
    assert calls[0]["compile_cache"] == calls[1]["compile_cache"]  # warm reuses cold's cache
    assert calls[0]["compile_cache"] != calls[2]["compile_cache"]  # each system starts empty
    assert "scaled down to num_timesteps 1,966,080, num_evals 3, num_resets_per_eval 1" in text
    assert "| Playground Brax-PPO | 2048 envs, 983,040/training step" in text
    assert "| ppo_jax, 256 envs | 256 envs x 16, 4096/batch, 15 mb x 273 |" in text
    assert "- What separates the two trainers" in text and "\n  - reward scaling:" in text
    d = json.loads(out.read_text())
    rows = {r["key"]: r for r in d["rows"]}
    b, j = rows["brax_playground"], rows["ppo_jax_256"]
    assert b["train_fps"] == pytest.approx(3400.0)  # the epochs after the first
    assert b["cold_first_step_s"] == pytest.approx(308.0)  # launch -> t0 + first mark
    assert b["cold_startup_s"] == pytest.approx(308.0 - STEP / 3400.0)
    assert b["warm_first_step_s"] == pytest.approx(288.0)
    assert b["run_fps"] == pytest.approx(STEP / 320.0)
    assert j["train_fps"] == pytest.approx(4096 / 2.0)  # batches away from evaluations
    assert j["cold_first_step_s"] == pytest.approx(35.0)
    assert j["warm_programs_from"] == {"update": "ppo_programs"}
    pts = d["returns_at_equal_frames"]
    assert [pt["frames"] for pt in pts] == [0, STEP, 2 * STEP]
    assert [pt["ppo_jax_256"]["frames"] for pt in pts] == [4096, 241 * 4096, 2 * STEP]
    assert pts[1]["brax"]["return"] == 600.0 and pts[2]["ppo_jax_256"]["return"] == 479.0
    assert d["versions"]["playground"] and d["plan"]["published_run_frames"] == 90 * STEP
    assert d["differences"] == list(playground.differences()) and len(d["differences"]) >= 12
    # --replay prints the same tables from the JSON's runs, measuring nothing
    monkeypatch.setattr(playground, "_run", None)
    again = tmp_path / "again.json"
    assert cli.main(["--playground", "--replay", str(out), "--json", str(again)]) == 0
    replayed = capsys.readouterr().out
    assert replayed.split("\n- ")[0] == text.split("\n- ")[0]
    assert json.loads(again.read_text())["rows"] == d["rows"]
    with pytest.raises(cli.CLIError, match="other flags"):
        cli.main(["--playground", "--envs", "128", "--replay", str(out)])


@pytest.mark.slow
@pytest.mark.parametrize("system,key", [("brax", "brax_playground"), ("ppo_jax", "ppo_jax_16")])
def test_playground_smoke(system, key, tmp_path, root_dir, compile_cache_dir):
    """The whole command at tiny sizes, one system per test (its cold and its warm run, the
    table, the JSON): minutes cold on 2 cores, about a minute warm (the session's cache
    serves the "cold" runs too, so they are not cold)."""
    out = tmp_path / "pg.json"
    cmd = [sys.executable, os.path.join(root_dir, "scripts", "benchmark.py"), "--playground",
           "--smoke", "--systems", system, "--json", str(out),
           "--compile-cache", compile_cache_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SMOKE SIZES" in proc.stdout and "NOT a cold start" in proc.stdout
    d = json.loads(out.read_text())
    (r,) = d["rows"]
    assert r["key"] == key and not r["errors"], r["errors"]
    assert r["train_fps"] > 0 and r["run_fps"] > 0
    assert r["cold_first_step_s"] > 0 and r["warm_first_step_s"] > 0
    (run,) = d["runs"]
    assert len(run["warm"]["marks"]) == 1  # the warm run stopped after one step
    frames = [pt["frames"] for pt in d["returns_at_equal_frames"]]
    assert frames[:2] == ([0, 512] if system == "brax" else [512, 2560])
