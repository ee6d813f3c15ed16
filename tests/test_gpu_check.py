"""The GPU check (``scripts/gpu_check.sh``, :mod:`scripts.gpu_check`): its test
selection names tests that exist, its report draws partial results, it refuses a CPU without
``--smoke``, and ``--smoke`` runs every step at tiny sizes on the CPU (the slow test), so
that a typo shows up here rather than on a lent GPU."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from scripts.gpu_check import check as gpu_check


def test_selections_name_tests_that_exist():
    plans = (gpu_check.GPU_PLAN, gpu_check.SMOKE_PLAN)
    selected = {t for p in plans for t in (*p.tests, *p.learning_tests)}
    assert gpu_check.missing_tests(tuple(sorted(selected))) == []
    assert gpu_check.missing_tests(("tests/test_train.py::no_such_test",
                                    "tests/no_such_file.py")) == [
        "tests/test_train.py::no_such_test", "tests/no_such_file.py"]


def test_plans_measure_what_they_list():
    for plan in (gpu_check.GPU_PLAN, gpu_check.SMOKE_PLAN):
        rows = {f"train_{n}" for n, _ in plan.train}
        assert rows <= set(plan.order) and {"env_speed", "preset_fast", "matmul"} <= set(plan.order)
        assert plan.matmul_envs in dict(plan.train)
        for n, batches in plan.train:
            cfg = gpu_check.row_config(n, batches, plan)
            assert cfg.num_batches == batches and cfg.eval_every == 0
    assert gpu_check.GPU_PLAN.threshold_config["num_envs"] == 1024
    assert gpu_check.threshold_config(gpu_check.GPU_PLAN).eval_every == 1


def test_outcomes_of_a_pytest_log():
    log = ("tests/test_a.py::test_one PASSED                 [ 33%]\n"
           "tests/test_a.py::test_two FAILED                 [ 66%]\n"
           "tests/test_b.py::test_three PASSED               [100%]\n"
           "tests/test_b.py::test_three ERROR                [100%]\n"
           "tests/test_c.py::test_four SKIPPED (no gym)      [100%]\n")
    assert gpu_check.outcomes(log) == {
        "tests/test_a.py::test_one": "PASSED", "tests/test_a.py::test_two": "FAILED",
        "tests/test_b.py::test_three": "ERROR", "tests/test_c.py::test_four": "SKIPPED"}


def test_report_of_a_partial_check():
    """Skipped, failed and partial steps still give a table with every env count."""
    plan = dataclasses.replace(gpu_check.SMOKE_PLAN, env_speed=((1, 50), (4, 50)))
    steps = [
        gpu_check.Step("probe", "ok", 1.0, 0.0, {"backend": "gpu", "devices": ["NVIDIA H200"],
                                                 "versions": {"jax": "0.11.2"}}),
        gpu_check.Step("env_speed", "partial", 9.0, 1.0, {"rows": [
            {"envs": 1, "steps": 50, "steps_per_s": 1234.4},
            {"envs": 4, "steps": 50, "skipped": "~9 s needed, 2 s left"}]}, "skipped 4 envs"),
        gpu_check.Step("train_4", "skipped", 0.0, 10.0, None, "needs ~75 s, 3 s left"),
        gpu_check.Step("preset_fast", "failed", 2.0, 10.0, None, None, "exit 1: boom | bad"),
        gpu_check.Step("matmul", "skipped", 0.0, 12.0, None, "needs ~60 s, 1 s left"),
    ]
    payload = {"started_utc": "2026-12-01T00:00:00+00:00", "smoke": False, "budget_s": 480,
               "elapsed_s": 12.0, "command": "bash scripts/gpu_check.sh --out o",
               "plan": dataclasses.asdict(plan),
               "steps": [dataclasses.asdict(s) for s in steps]}
    rows = gpu_check.table_rows(payload)
    assert [r["envs"] for r in rows] == [1, 4]
    assert rows[0]["env_steps_per_s"] == 1234.4 and rows[0]["why"] == "not in the plan"
    assert rows[1]["fps"] is None and "needs ~75 s" in rows[1]["why"]
    md = gpu_check.markdown(payload)
    assert "NVIDIA H200" in md and "bash scripts/gpu_check.sh --out o" in md
    assert "| 1 | 1,234 | not in the plan |" in md
    assert "| 4 | skipped (~9 s needed, 2 s left) | skipped: needs ~75 s, 3 s left |" in md
    assert "| preset_fast | failed | 2.0 | exit 1: boom / bad |" in md
    assert "| tf32 | needs ~60 s, 1 s left | – |" in md
    assert "first evaluation >= 1: s from process start" in md  # the plan's threshold


def test_cpu_without_smoke_is_refused(root_dir, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-m", "scripts.gpu_check", "--out", str(out)],
                       cwd=root_dir, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("no GPU: jax sees only cpu; use --smoke"), err
    assert not out.exists()


@pytest.mark.slow  # ~2.5 min on 2 CPU cores: three cold compiles of the training programs
def test_smoke_runs_every_step(root_dir, tmp_path):
    out = tmp_path / "out"  # given relative to where the command runs, not the repo root
    p = subprocess.run(["bash", os.path.join(root_dir, "scripts", "gpu_check.sh"), "--smoke",
                        "--out", "out"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    report = json.loads((out / "gpu_check.json").read_text())
    md = (out / "gpu_check.md").read_text()
    plan = gpu_check.SMOKE_PLAN
    names = ["install", "probe", "pytest", *plan.order, "learning"]
    assert [s["name"] for s in report["steps"]] == names
    assert {s["name"]: s["status"] for s in report["steps"]} == {n: "ok" for n in names}
    assert report["smoke"] and report["elapsed_s"] <= report["budget_s"]
    assert report["steps"][1]["result"]["backend"] == "cpu"
    assert all(v == "PASSED" for v in report["steps"][2]["result"]["tests"].values())
    # the table has a row for every env count it claims, with the figures measured
    rows = {r["envs"]: r for r in report["table"]}
    assert set(rows) == {n for n, _ in plan.env_speed} | {n for n, _ in plan.train}
    for n, r in rows.items():
        assert r["env_steps_per_s"] > 0
        assert md.count(f"\n| {n:,} | {r['env_steps_per_s']:,.0f} |") == 1
    for n, _ in plan.train:
        assert rows[n]["fps"] > 0 and rows[n]["warm_from_store"] is True
        assert rows[n]["startup_warm_s"] < rows[n]["startup_cold_s"]
    threshold = next(s for s in report["steps"] if s["name"] == "preset_fast")["result"]
    assert threshold["reached"] and threshold["threshold_s"] > 0
    assert f"| {threshold['label']} |" in md
    matmul = next(s for s in report["steps"] if s["name"] == "matmul")["result"]
    assert matmul["tf32"]["fps"] > 0 and matmul["highest_fps"] == rows[plan.matmul_envs]["fps"]
    assert "| tf32 |" in md and report["command"] in md
    for log in ("gpu_check.log", "pytest.log", "learning.log"):
        assert (out / log).stat().st_size > 0
