"""The GPU check (``scripts/gpu_check.sh``, :mod:`scripts.gpu_check`): the tests it runs are
the ones marked ``gpu``; its pytest plugin records each outcome and failure message as it
happens and a test past its cap is stopped while the rest still run; ``--steps`` chooses
steps and refuses unknown ones in one line; its report draws partial results; each XLA flag
lever is measured in a process of its own against XLA's defaults, and XLA parses its flags;
the crossover step trains the GPU rows' configs on the host's CPU and finds where the GPU
starts to win; it refuses a CPU without ``--smoke``; and ``--smoke`` runs every step at tiny
sizes on the CPU (the slow test), with an injected failing test and an injected slow test
whose message and cap must reach the report, so that a typo shows up here rather than on a
GPU."""

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from ppo_jax.bench import trace as trace_lib
from ppo_jax.cli.common import CLIError
from scripts.gpu_check import check as gpu_check
from scripts.gpu_check import injected_tests
from tests import test_trace

INJECTED_FAILURE = f"{gpu_check.INJECTED}::test_injected_failure"
INJECTED_SLOW = f"{gpu_check.INJECTED}::test_injected_slow"


def test_gpu_tests_are_the_marked_ones():
    marked = gpu_check.marked_tests()
    names = {n.split("::")[-1] for n in marked}
    assert {"test_fixture_loss_and_grads", "test_fixture_optimizer_step",
            "test_whole_run_is_one_compilation",
            "test_shipped_programs_compile_once_and_equal_train"} <= names
    assert all(n.startswith("tests/") for n in marked), marked  # never the injected ones
    # the check's pytest imports only the modules that name the mark: all that hold one
    files = gpu_check.marked_files((gpu_check.TESTS_DIR,))
    assert {n.split("::")[0] for n in marked} <= set(files)
    assert "tests/test_config.py" not in files
    assert gpu_check.GPU_PLAN.tests == (gpu_check.TESTS_DIR,)
    assert gpu_check.GPU_PLAN.marker == gpu_check.SMOKE_PLAN.marker == gpu_check.GPU_MARK


def test_smoke_selection_names_tests_that_exist():
    plan = gpu_check.SMOKE_PLAN
    assert gpu_check.missing_tests((*plan.tests, *plan.learning_tests)) == []
    assert gpu_check.missing_tests(("tests/test_train.py::no_such_test",
                                    "tests/no_such_file.py")) == [
        "tests/test_train.py::no_such_test", "tests/no_such_file.py"]
    assert set(plan.expected) == {INJECTED_FAILURE, INJECTED_SLOW} <= set(plan.tests)


def test_plans_measure_what_they_list():
    for plan in (gpu_check.GPU_PLAN, gpu_check.SMOKE_PLAN):
        rows = {f"train_{n}" for n, _, _ in plan.train}
        assert rows <= set(plan.order)
        assert {"pytest", "env_speed", "matmul", "brax", "preset_fast",
                "learning"} <= set(plan.order)
        assert plan.matmul_envs in {n for n, _, _ in plan.train}
        assert plan.brax_envs in {n for n, _, _ in plan.train}
        assert set(plan.graph_envs) <= {n for n, _, _ in plan.train}  # against their rows
        assert set(plan.shares) <= set(plan.order)
        assert sum(plan.shares.values()) <= 1.0
        for n, batches, _ in plan.train:
            cfg = gpu_check.row_config(n, batches, plan)
            assert cfg.num_batches == batches and cfg.eval_every == 0
    gpu = gpu_check.GPU_PLAN
    order = gpu.order
    # the 4,096-env row and Brax before anything at 1 or 64 envs, both at 4,096; the time
    # to 9,000 has a share of its own, tf32 runs on what is left after it
    first_small = min(order.index(n) for n in ("train_1", "train_64", "env_speed"))
    assert order.index("train_4096") < first_small and order.index("brax") < first_small
    assert order.index("preset_fast") < order.index("matmul") and "matmul" not in gpu.shares
    assert gpu.matmul_envs == gpu.brax_envs == 4096 and gpu.env_speed[0] == 4096
    # the env-count curve: 1,024 to 65,536 envs
    assert {1024, 4096, 16384, 65536} <= {n for n, _, _ in gpu.train}
    assert gpu.threshold_config["num_envs"] == 1024
    assert gpu_check.threshold_config(gpu).eval_every == 1
    # the trace: rows measured before it (their stores make it a warm start)
    for plan in (gpu, gpu_check.SMOKE_PLAN):
        assert plan.trace_envs and set(plan.trace_envs) <= {n for n, _, _ in plan.train}
        assert all(plan.order.index(f"train_{n}") < plan.order.index("trace")
                   for n in plan.trace_envs)


def test_choose_steps():
    plan = gpu_check.GPU_PLAN
    assert gpu_check.choose_steps(None, plan) == plan.order
    # in the check's order, whatever the order given
    assert gpu_check.choose_steps("train_1, pytest", plan) == ("pytest", "train_1")
    with pytest.raises(CLIError, match="unknown steps nope, train_2; choose from pytest,"):
        gpu_check.choose_steps("pytest,nope,train_2", plan)
    with pytest.raises(CLIError, match="no step named"):
        gpu_check.choose_steps(",", plan)


def test_linalg_reaches_every_training_and_env_speed_row():
    plan = gpu_check.GPU_PLAN
    assert gpu_check.with_linalg(plan, None) is plan
    inline = gpu_check.with_linalg(plan, "inline")
    assert inline.linalg == "inline" and plan.linalg == "library"
    assert gpu_check.row_config(4096, 2, inline).linalg == "inline"
    assert gpu_check.row_config(4096, 2, plan).linalg == "library"
    assert gpu_check.threshold_config(inline).linalg == "inline"
    assert gpu_check.threshold_config(plan).linalg == "library"
    # a report written before the field existed still lends its rows (the default's)
    old = gpu_check.row_config(4096, 2, plan).to_dict()
    del old["linalg"]
    assert gpu_check._config_of(old) == gpu_check.row_config(4096, 2, plan)
    assert gpu_check._config_of(old) != gpu_check.row_config(4096, 2, inline)
    assert gpu_check._config_of({"no_such_field": 1}) is None
    # the levers: the defaults, then both inline levers first
    assert [lv[2] for lv in plan.levers[:3]] == ["library", "inline", "inline"]
    assert plan.levers[0] == ("default", "", "library") and plan.levers[-1][1:] == ("", "library")


@pytest.mark.parametrize("flags,words", [
    (["--steps", "pytest,trian_4"], "--steps: unknown step trian_4; choose from pytest,train_4,"),
    (["--linalg", "lapack"], "argument --linalg: invalid choice: 'lapack'"),
    (["--gpu-rows", "no/such/gpu_check.json"], "/no/such/gpu_check.json: No such file or "
                                                "directory"),
    (["--gpu-rows", "OUT/gpu_check.json"], "/out/gpu_check.json is the report this run writes "
                                           "(--out): give this run another --out")])
def test_bad_input_is_one_line(root_dir, tmp_path, flags, words):
    flags = [f.replace("OUT", str(tmp_path / "out")) for f in flags]
    p = subprocess.run([sys.executable, "-m", "scripts.gpu_check", "--smoke", *flags,
                        "--out", str(tmp_path / "out")], cwd=root_dir,
                       capture_output=True, text=True, timeout=300)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1, p.stderr[-2000:]
    assert words in err[0]
    assert not (tmp_path / "out").exists()


def test_shares_of_chosen_steps():
    """A second run of fewer steps gives them the plan's shares, scaled up."""
    check = gpu_check.Check.__new__(gpu_check.Check)
    check.plan = gpu_check.GPU_PLAN
    check.budget = gpu_check.Budget(540.0, 0.0)
    check.chosen = check.plan.order
    total = sum(check.plan.shares.values())
    assert check.share_s("pytest") == pytest.approx(check.plan.shares["pytest"] * 540)
    # every training row and time-to-9,000 has a share of its own; learning takes what is left
    assert {"train_4096", "train_1024", "train_64", "train_1", "brax", "env_speed",
            "preset_fast"} <= set(check.plan.shares) and total <= 1.0
    assert check.share_s("learning") is None
    check.chosen = ("train_64", "train_1", "learning")
    two = check.plan.shares["train_64"] + check.plan.shares["train_1"]
    assert check.share_s("train_1") == pytest.approx(
        check.plan.shares["train_1"] * total / two * 540)


def test_phase_reports_make_one_outcome():
    def merged(*phases):
        entry = {}
        for when, outcome, msg, xfail in phases:
            gpu_check._merge(entry, {"when": when, "outcome": outcome, "duration": 0.5,
                                     "message": msg, "wasxfail": xfail})
        return entry

    ok = ("setup", "passed", None, None)
    down = ("teardown", "passed", None, None)
    assert merged(ok, ("call", "passed", None, None), down)["outcome"] == "PASSED"
    e = merged(ok, ("call", "failed", "AssertionError: boom", None),
               ("teardown", "failed", "OSError: later", None))
    assert (e["outcome"], e["message"], e["seconds"]) == ("FAILED", "AssertionError: boom", 1.5)
    assert merged(("setup", "failed", "fixture broke", None), down)["outcome"] == "ERROR"
    e = merged(("setup", "skipped", "no gym", None), down)
    assert (e["outcome"], e["message"]) == ("SKIPPED", "no gym")
    assert merged(ok, ("call", "skipped", None, "known"), down)["outcome"] == "XFAIL"
    assert merged(ok, ("call", "passed", None, None),
                  ("teardown", "failed", "x", None))["outcome"] == "ERROR"


def test_outcomes_as_they_happen_and_a_cap(tmp_path):
    """The plugin's events give each outcome and the failure's message; the slow test is
    stopped at its cap and pytest goes on with the test after it."""
    from scripts.gpu_check.worker import child_env

    log, events = tmp_path / "pytest.log", tmp_path / "events.jsonl"
    seen = []
    after = "tests/test_config.py::test_defaults_are_the_tutorial"
    res = gpu_check.run_tests(
        (INJECTED_FAILURE, INJECTED_SLOW, after), None, log_path=str(log),
        events_path=str(events), env=child_env(gpu_check.INJECT_ENV), allow_s=240.0,
        cap_s=3.0, on_change=lambda r: seen.append(dict(r["tests"])))
    tests = res["tests"]
    assert list(tests) == [INJECTED_FAILURE, INJECTED_SLOW, after]
    assert tests[INJECTED_FAILURE]["outcome"] == "FAILED"
    assert injected_tests.FAILURE_MESSAGE in tests[INJECTED_FAILURE]["message"]
    assert "assert 1 == 2" in tests[INJECTED_FAILURE]["longrepr"]
    assert tests[INJECTED_SLOW]["outcome"] == "CAPPED" and tests[INJECTED_SLOW]["cap_s"] == 3.0
    assert tests[after]["outcome"] == "PASSED"
    assert [r["stopped"] for r in res["runs"]] == ["capped", None]
    # the failure was known before the slow test was stopped
    assert any(INJECTED_FAILURE in s and INJECTED_SLOW not in s for s in seen)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [(e["event"], e.get("nodeid")) for e in lines]
    assert ("start", INJECTED_SLOW) in kinds and ("finish", INJECTED_SLOW) not in kinds
    assert "CAPPED" in log.read_text()


def test_a_failed_run_is_its_error_line():
    """A worker's failure in one line: its exit status and its error, not JAX's note."""
    tail = ("exit 1: Traceback (most recent call last): | ValueError: 4 envs on 3 devices | "
            "-------------------- | For simplicity, JAX has removed its internal frames from "
            "the traceback of the following exception. Set JAX_TRACEBACK_FILTERING=off to "
            "include these.")
    assert gpu_check.one_line(RuntimeError(tail)) == "exit 1: ValueError: 4 envs on 3 devices"
    assert gpu_check.one_line(OSError("disk full")) == "OSError: disk full"


def test_injected_tests_skip_unless_injected():
    env = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_INJECT"}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-rs", gpu_check.INJECTED], cwd=gpu_check.ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "2 skipped" in p.stdout, p.stdout[-2000:]


def test_report_of_a_partial_check():
    """Skipped, failed and partial steps still give a table with every env count; a test's
    failure message and a capped test's cap are in it."""
    plan = dataclasses.replace(gpu_check.SMOKE_PLAN, env_speed=(1, 4))
    details = {"tests/test_a.py::test_one": {"outcome": "FAILED", "seconds": 1.0,
                                              "message": "AssertionError: off by 3 | x\nmore"},
               "tests/test_a.py::test_two": {"outcome": "CAPPED", "seconds": 75.0,
                                              "cap_s": 75.0, "message": "stopped"},
               "tests/test_b.py::test_three": {"outcome": "not run", "seconds": 0.0}}
    steps = [
        gpu_check.Step("probe", "ok", 1.0, 0.0, {"backend": "gpu", "devices": ["NVIDIA H200"],
                                                 "versions": {"jax": "0.11.2"}}),
        gpu_check.Step("pytest", "failed", 80.0, 1.0,
                       {"tests": {k: v["outcome"] for k, v in details.items()},
                        "details": details, "counts": {"FAILED": 1}, "log": "pytest.log"},
                       None, "2 of 3 test(s) not as they should be"),
        gpu_check.Step("env_speed", "partial", 9.0, 1.0, {"rows": [
            {"envs": 1, "steps_per_s": 1234.4},
            {"envs": 4, "skipped": "~9 s needed, 2 s left"}]}, "skipped 4 envs"),
        gpu_check.Step("train_4", "skipped", 0.0, 10.0, None, "needs ~75 s, 3 s left"),
        gpu_check.Step("preset_fast", "failed", 2.0, 10.0, None, None, "exit 1: boom | bad"),
        gpu_check.Step("matmul", "skipped", 0.0, 12.0, None, "needs ~60 s, 1 s left"),
        gpu_check.Step("brax", "skipped", 0.0, 12.0, {"envs": 4, "description": "4 envs"},
                       "Brax rows skipped: brax not installed"),
    ]
    payload = {"started_utc": "2026-12-01T00:00:00+00:00", "smoke": False, "budget_s": 540,
               "elapsed_s": 12.0, "command": "bash scripts/gpu_check.sh --out o",
               "plan": dataclasses.asdict(plan), "steps_chosen": list(plan.order),
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
    assert "| Brax ppo.train | 4 envs | Brax rows skipped: brax not installed | – | – |" in md
    assert "| tests/test_a.py::test_one | FAILED | 1.0 | AssertionError: off by 3 / x more |" in md
    assert "| tests/test_a.py::test_two | CAPPED | 75.0 | capped at 75 s |" in md
    assert "| tests/test_b.py::test_three | not run | 0.0 |" in md
    assert "first evaluation >= 1: s from process start" in md  # the plan's threshold
    assert "The pytest steps ran with" in md
    # without a pytest step the notes say nothing of one
    payload["steps"] = [s for s in payload["steps"] if s["name"] != "pytest"]
    assert "pytest" not in gpu_check.markdown(payload)


def test_levers_each_against_xla_s_defaults(monkeypatch, tmp_path):
    """Each lever runs in a process of its own with its flags after the given XLA_FLAGS;
    every row gets its ratio to the first (default) lever's; a lever that fails leaves its
    error line and one cut off its missing rows, and the others still run; the report draws
    each lever's row; with too little time every lever is skipped, saying why."""
    from scripts.gpu_check import worker as gpu_worker

    plan = dataclasses.replace(gpu_check.SMOKE_PLAN, lever_envs=(1, 8), lever_guess_s=15.0,
                               levers=(("default", "", "library"),
                                       ("faster", "--xla_a=1", "inline"),
                                       ("broken", "--xla_b=2", "library"),
                                       ("slow", "--xla_c=3", "library")))
    seen = []

    def fake_call(spec, timeout, env=None):
        flags = env["XLA_FLAGS"]
        seen.append((spec["kind"], spec["envs"], flags, spec["linalg"]))
        assert timeout <= spec["deadline_s"] + 10.0
        if "--xla_b=2" in flags:
            raise RuntimeError("exit 1: F1204 Unknown flag | For simplicity, JAX has removed")
        k = 2.5 if "--xla_a=1" in flags else 1.0
        rows = [{"envs": n, "steps_per_s": 100.0 * n * k, "compile_s": 3.0}
                for n in spec["envs"]]
        if "--xla_c=3" in flags:  # cut off after its first row
            return {"rows": rows[:1], "timed_out": True}
        return {"rows": rows}

    monkeypatch.setattr(gpu_worker, "call", fake_call)
    monkeypatch.setenv("XLA_FLAGS", "--given=1")
    args = gpu_check.build_parser().parse_args(["--smoke", "--out", str(tmp_path)])
    check = gpu_check.Check(args, [], plan, ("levers",))
    try:
        step = check.run("levers", lambda s: gpu_check.levers_step(check, s, 300.0))
        given = f"--given=1 {plan.xla_flags}"
        assert seen == [("env_speed", [1, 8], f"{given} {flags}".strip(), linalg)
                        for _, flags, linalg in plan.levers]
        assert step.status == "partial"
        assert step.reason == "not measured in full: broken, slow"
        default, faster, broken, slow = step.result["levers"]
        assert step.result["given_xla_flags"] == given
        assert [r["x_default"] for r in default["rows"]] == [1.0, 1.0]
        assert [r["x_default"] for r in faster["rows"]] == [2.5, 2.5]
        assert broken["error"] == "exit 1: F1204 Unknown flag" and "rows" not in broken
        assert slow["timed_out"] and slow["rows"][0]["x_default"] == 1.0
        assert slow["rows"][1]["skipped"].startswith("cut off at ")
        md = (tmp_path / "gpu_check.md").read_text()
        assert "| faster | 250 (2.50) | 3.0 | 2,000 (2.50) | 3.0 | inline | --xla_a=1 |" in md
        assert ("| broken | exit 1: F1204 Unknown flag | – | exit 1: F1204 Unknown flag | – "
                "| library | --xla_b=2 |") in md
        assert "| slow | 100 (1.00) | 3.0 | cut off at " in md
        assert ("| default | 100 (1.00) | 3.0 | 800 (1.00) | 3.0 | library | (none added) |"
                in md)
        assert f"Every lever ran with the XLA_FLAGS given to the check first: `{given}`." in md
        # too little time for one lever: each skipped, saying so
        short = check.run("levers", lambda s: gpu_check.levers_step(check, s, 12.0))
        assert short.status == "skipped" and short.reason.startswith("needs ~")
        assert all(lv["skipped"].startswith("needs ~") for lv in short.result["levers"])
        assert len(seen) == len(plan.levers)
        # every lever failed (not for lack of time): the step failed
        check.plan = dataclasses.replace(plan, levers=(("broken", "--xla_b=2", "library"),))
        failed = check.run("levers", lambda s: gpu_check.levers_step(check, s, 300.0))
        assert failed.status == "failed"
        assert failed.error == "broken: exit 1: F1204 Unknown flag"
    finally:
        check.close()
    assert os.environ["XLA_FLAGS"] == "--given=1"


def test_trace_step(monkeypatch, tmp_path):
    """Each env count: the training row's config, from the row's store where it ran, 2
    batches timed and then the traced ones; too little time or an error is recorded per
    row, and the step is partial, skipped or failed as the rows say."""
    plan = dataclasses.replace(gpu_check.SMOKE_PLAN, trace_envs=(4, 8, 16), trace_batches=3,
                               trace_overrides={})
    calls = []

    def fake_bench_run(check, cfg, cache, timeout, env=None, extra=None):
        calls.append((cfg.num_envs, cfg.num_batches, os.path.basename(cache), extra["stop"],
                      extra["trace"]["batches"]))
        if cfg.num_envs == 16:
            raise RuntimeError("worker exited 1: boom")
        summary = trace_lib.summarize_trace(test_trace.gpu_like_trace(), batches=3)
        return {"fps": 100.0 * cfg.num_envs, "startup_s": 1.0,
                "compiled_from_cache": cfg.num_envs == 4,
                "trace": {"batches": 3, "batches_s": 0.3, "first_batch": 2,
                          "summary": summary}}

    monkeypatch.setattr(gpu_check, "bench_run", fake_bench_run)
    args = gpu_check.build_parser().parse_args(["--smoke", "--out", str(tmp_path)])
    check = gpu_check.Check(args, [], plan, ("trace",))
    try:
        os.makedirs(os.path.join(check.work, "cache_train_4"))
        open(os.path.join(check.work, "cache_train_4", "x"), "w").close()
        step = check.run("trace", lambda s: gpu_check.trace_step(check, s, 300.0))
        assert calls == [(4, 5, "cache_train_4", 2, 3), (8, 5, "cache_trace_8", 2, 3),
                         (16, 5, "cache_trace_16", 2, 3)]
        assert step.status == "partial" and step.reason == "16 envs: worker exited 1: boom"
        four, eight, sixteen = step.result["rows"]
        assert four["warm_start"] is True and eight["warm_start"] is False
        assert sixteen["error"] == "worker exited 1: boom"
        md = (tmp_path / "gpu_check.md").read_text()
        assert ("Where a batch's time goes: JAX's profiler over 3 batches, after 2 timed "
                "ones:") in md
        assert "- 4 envs (" in md and "400 frames/s timed, warm start):" in md
        assert "the device busy 38% of the window, 1.7 kernels a batch" in md
        assert "- 16 envs: worker exited 1: boom" in md
        # a row left out for lack of time is said in the report, the step is not partial
        check.plan = dataclasses.replace(plan, trace_envs=(4, 8))
        check.costs["cold"] = 1e4
        timed = check.run("trace", lambda s: gpu_check.trace_step(check, s, 300.0))
        assert timed.status == "ok" and timed.reason is None
        assert timed.result["rows"][1]["skipped"].startswith("needs ~10000 s")
        check.costs.pop("cold")
        check.plan = plan
        short = check.run("trace", lambda s: gpu_check.trace_step(check, s, 1.0))
        assert short.status == "skipped" and short.reason.startswith("no trace: 4 envs: needs ~")
        check.plan = dataclasses.replace(plan, trace_envs=(16,))
        failed = check.run("trace", lambda s: gpu_check.trace_step(check, s, 300.0))
        assert failed.status == "failed"
        assert failed.error == "no trace: 16 envs: worker exited 1: boom"
    finally:
        check.close()


def test_time_to_the_threshold_cold_then_warm(monkeypatch, tmp_path):
    """The threshold step runs cold in a fresh cache, then warm with the same cache on the
    time left; a cold run cut off, a warm run with no time left, or one that compiled, is
    partial and says why."""
    calls = []

    def run(frames_s, compiled=None):
        return {"fps": 5e4, "reached": frames_s is not None, "threshold_s": frames_s,
                "threshold_frames": 491520, "startup_s": 4.0, "compile_s": 3.0,
                "best_eval_return": 9350.0, "stopped": "reached" if frames_s else "deadline",
                "process_s": 30.0, "compiled_from_cache": compiled}

    outcomes = []

    def fake(cfg, goal, cache, allow):
        calls.append((os.path.basename(cache), round(allow)))
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    monkeypatch.setattr(gpu_check, "_to_threshold", fake)
    args = gpu_check.build_parser().parse_args(["--smoke", "--out", str(tmp_path)])
    check = gpu_check.Check(args, [], gpu_check.SMOKE_PLAN, ("preset_fast",))
    try:
        outcomes[:] = [run(20.0, False), run(8.5, True)]
        step = check.run("preset_fast", lambda s: gpu_check.threshold_step(check, s, 300.0))
        assert [c[0] for c in calls] == ["cache_threshold"] * 2
        assert step.status == "ok" and step.result["threshold_s"] == 20.0
        assert step.result["warm"]["threshold_s"] == 8.5
        md = (tmp_path / "gpu_check.md").read_text()
        assert "| tiny config (smoke), warm | (the same) | 8.5 (491,520) | 4.0 (3.0) |" in md
        # the cold run's 27 s besides its compile, a warm start (15 s until one is measured)
        # and the run's 10-s margin: 25 s do not cover the warm run
        check.costs["cold"] = 10.0  # a cold run measured before: 25 s may start one
        outcomes[:] = [run(20.0, False)]
        step = check.run("preset_fast", lambda s: gpu_check.threshold_step(check, s, 25.0))
        assert step.status == "partial" and "warm" not in step.result
        assert step.reason == "no time left for the warm run (needs ~52 s, 25 s left)"
        # neither reached: both say so; a warm run that compiled is not a warm start
        outcomes[:] = [run(None, False), run(None, False)]
        step = check.run("preset_fast", lambda s: gpu_check.threshold_step(check, s, 300.0))
        assert step.reason == ("cold: not reached within 30 s (deadline); "
                               "warm: not reached (deadline)")
        outcomes[:] = [run(20.0, False), run(8.5, False)]
        step = check.run("preset_fast", lambda s: gpu_check.threshold_step(check, s, 300.0))
        assert step.reason == "the warm run did not load its programs"
        # a warm run cut off, or one that crashed: the cold row stands
        outcomes[:] = [run(20.0, False), {"reached": False, "stopped": "timed out after 270 s"}]
        step = check.run("preset_fast", lambda s: gpu_check.threshold_step(check, s, 300.0))
        assert step.status == "partial" and step.result["threshold_s"] == 20.0
        assert step.reason == "warm: not reached (timed out after 270 s)"
        md = (tmp_path / "gpu_check.md").read_text()
        assert "| tiny config (smoke), warm | (the same) | timed out after 270 s | – |" in md
        outcomes[:] = [run(20.0, False), RuntimeError("exit 1: boom")]
        step = check.run("preset_fast", lambda s: gpu_check.threshold_step(check, s, 300.0))
        assert step.status == "partial" and step.reason == "warm: not reached (exit 1: boom)"
        # the cold run cut off by the timeout
        outcomes[:] = [{"reached": False, "stopped": "timed out after 300 s"}]
        step = check.run("preset_fast", lambda s: gpu_check.threshold_step(check, s, 300.0))
        assert step.reason == "not reached within 300 s (timed out after 300 s)"
    finally:
        check.close()


def test_crossover_takes_gpu_rows_from_an_earlier_report(monkeypatch, tmp_path):
    """--gpu-rows: a second short run takes the GPU rows it did not measure from an earlier
    report of the same device, JAX and plan (a row of another config is not taken), says so,
    and refuses a report from another device; an unreadable file is one line."""
    plan = dataclasses.replace(gpu_check.SMOKE_PLAN, crossover_envs=(1, 64),
                               train=((1, 2, False), (64, 3, False)))
    probed = {"backend": "gpu", "devices": ["NVIDIA H200"], "versions": {"jax": "0.11.2"}}
    other_64 = gpu_check.row_config(64, 5, plan).to_dict()  # not this plan's 64-env row
    given = os.environ.get("XLA_FLAGS")  # as this test's checks are given them
    earlier = {"started_utc": "2026-12-06T10:00:00+00:00", "smoke": True,
               "environment": {"XLA_FLAGS": given}, "steps": [
        {"name": "probe", "result": probed},
        {"name": "train_1", "result": {"config": gpu_check.row_config(1, 2, plan).to_dict(),
                                       "cold": {"fps": 200.0}}},
        {"name": "train_64", "result": {"config": other_64, "cold": {"fps": 9e4}}}]}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    monkeypatch.setattr(gpu_check, "bench_run", lambda check, cfg, cache, timeout, env=None: {
        "fps": 4000.0, "startup_s": 9.0, "wall_s": 20.0, "device": {"backend": "cpu"}})

    def crossover(device):
        out = tmp_path / device.split()[-1]
        args = gpu_check.build_parser().parse_args(
            ["--smoke", "--out", str(out), "--gpu-rows", str(path)])
        check = gpu_check.Check(args, [], plan, ("crossover",))
        check.earlier = gpu_check.read_gpu_rows(str(path))
        try:
            gpu_check.adopt_gpu_rows(check, dict(probed, devices=[device]))
            step = check.run("crossover", lambda s: gpu_check.crossover_step(check, s, 500.0))
        finally:
            check.close()
        return step, (out / "gpu_check.md").read_text()

    step, md = crossover("NVIDIA H200")
    one, sixty_four = step.result["rows"]
    assert one["gpu_over_cpu"] == 0.05
    assert one["gpu_from"] == "--gpu-rows (2026-12-06T10:00:00+00:00)"
    assert sixty_four["skipped"] == "train_64 not measured (--gpu-rows has it with another config)"
    assert (f"The GPU figures at 1 env come from {path} (the check of "
            "2026-12-06T10:00:00+00:00 on this device).") in md
    step, md = crossover("NVIDIA H100")
    assert step.status == "skipped"
    assert step.result["rows"][0]["skipped"] == (
        "train_1 not measured (--gpu-rows not used: devices ['NVIDIA H200'] there, "
        "['NVIDIA H100'] here)")
    # another JAX, a smoke report beside a full run, other XLA flags: not this device's rows
    other = gpu_check._other_device
    assert other(earlier, probed, True, given) is None
    assert other(earlier, dict(probed, versions={"jax": "0.12.0"}), True, given) \
        == "JAX 0.11.2 there, 0.12.0 here"
    assert other(earlier, probed, False, given) == "smoke True there, False here"
    assert other(earlier, probed, True, "--xla_gpu_autotune_level=0") \
        == f"XLA_FLAGS {given} there, --xla_gpu_autotune_level=0 here"
    for text in ("{", json.dumps({"steps": 3}), json.dumps({"started_utc": "x", "steps": [1]})):
        path.write_text(text)
        with pytest.raises(CLIError, match=r"^--gpu-rows: "):
            gpu_check.read_gpu_rows(str(path))


def test_crossover_of_gpu_over_cpu_ratios():
    def cross(*pairs):
        return gpu_check.crossover([{"envs": n, "gpu_over_cpu": r} for n, r in pairs])

    # 0.1 at 1 env, 10 at 100 envs: log-log midway is 10 envs
    c = cross((100, 10.0), (1, 0.1))
    assert c == {"envs": pytest.approx(10.0), "between": [1, 100]}
    # rows without a ratio are left out
    c = gpu_check.crossover([{"envs": 1, "gpu_over_cpu": 0.05},
                             {"envs": 64, "gpu_over_cpu": 0.5}, {"envs": 256},
                             {"envs": 1024, "gpu_over_cpu": 2.0}])
    assert c == {"envs": pytest.approx(256.0), "between": [64, 1024]}
    assert cross((64, 1.0), (1024, 3.0)) == {"below": 64}  # a tie counts for the GPU
    assert cross((1, 0.2), (64, 0.9)) == {"above": 64}
    # not monotonic: the crossing after the widest count where the CPU wins, flagged
    assert cross((1, 1.1), (64, 0.8), (1024, 2.0)) == {
        "envs": pytest.approx(64 * 16 ** (math.log(1.25) / math.log(2.5))),
        "between": [64, 1024], "non_monotonic": True}
    assert cross((1, 0.5), (64, 1.2), (1024, 0.8)) == {"above": 1024, "non_monotonic": True}
    assert gpu_check.crossover([{"envs": 1, "error": "exit 1: boom"}]) == {}


def test_crossover_step_trains_on_the_host_cpu_beside_the_gpu_rows(monkeypatch, tmp_path):
    """The CPU rows run the GPU rows' configs with JAX_PLATFORMS=cpu in fresh caches; each
    gets its GPU / CPU ratio; a count without a GPU row is skipped without training, a failed
    one keeps its error line, one that ran on another backend gets no ratio; the report says
    where the GPU starts to win."""
    plan = dataclasses.replace(
        gpu_check.SMOKE_PLAN, crossover_envs=(1, 16, 64, 256, 1024),
        train=((1, 2, False), (16, 2, False), (64, 3, False), (256, 2, False),
               (1024, 2, False)))
    runs = []

    def fake_bench_run(check, cfg, cache, timeout, env=None):
        runs.append((cfg.num_envs, cfg.total_frames, os.path.basename(cache), env))
        if cfg.num_envs == 1024:
            raise RuntimeError("exit 1: MemoryError")
        return {"fps": {1: 4000.0, 64: 16000.0, 256: 20000.0}[cfg.num_envs], "startup_s": 9.0,
                "wall_s": 20.0, "device": {"backend": "gpu" if cfg.num_envs == 256 else "cpu"}}

    monkeypatch.setattr(gpu_check, "bench_run", fake_bench_run)
    args = gpu_check.build_parser().parse_args(["--smoke", "--out", str(tmp_path)])
    check = gpu_check.Check(args, [], plan, ("crossover",))
    try:
        for n, fps in ((1, 200.0), (64, 32000.0), (256, 1e5), (1024, 400000.0)):  # no 16
            check.steps.append(gpu_check.Step(f"train_{n}", "ok", 1.0, 0.0,
                                              {"cold": {"fps": fps}}))
        step = check.run("crossover", lambda s: gpu_check.crossover_step(check, s, 500.0))
        md = (tmp_path / "gpu_check.md").read_text()
        check.plan = dataclasses.replace(plan, crossover_envs=(1024,))  # its CPU row fails
        failed = check.run("crossover", lambda s: gpu_check.crossover_step(check, s, 500.0))
    finally:
        check.close()
    assert failed.status == "failed"
    assert failed.error == "no GPU / CPU ratio: 1,024 envs: exit 1: MemoryError"
    runs.pop()
    assert runs == [(n, gpu_check.row_config(n, b, plan).total_frames, f"cache_cpu_{n}",
                     {"JAX_PLATFORMS": "cpu"}) for n, b, _ in plan.train if n != 16]
    one, sixteen, sixty_four, wrong, wide = step.result["rows"]
    assert one["gpu_over_cpu"] == 0.05 and sixty_four["gpu_over_cpu"] == 2.0
    assert sixteen["skipped"] == "train_16 not measured" and "cpu_fps" not in sixteen
    assert wrong["error"] == "the CPU row ran on gpu" and "gpu_over_cpu" not in wrong
    assert wide["error"] == "exit 1: MemoryError" and "gpu_over_cpu" not in wide
    assert step.status == "partial"
    assert step.reason == "no GPU / CPU ratio at 16, 256, 1024 envs"
    c = step.result["crossover"]
    assert c["between"] == [1, 64] and 1 < c["envs"] < 64
    assert "| 1 env | 200 | 4,000 | 0.05 | 9.0 |" in md
    assert "| 16 envs | – | train_16 not measured | – | – |" in md
    assert "| 256 envs | 100,000 | the CPU row ran on gpu | – | 9.0 |" in md
    assert "| 1,024 envs | 400,000 | exit 1: MemoryError | – | – |" in md
    assert ("Crossover on this machine (steady-state frames/s, start-up left out): the GPU "
            f"trains faster from ~{c['envs']:,.0f} envs per device (between 1 and 64, "
            "interpolated in log-log).") in md


def test_graphs_train_against_the_default_rows(monkeypatch, tmp_path):
    """Each env count of the ``graphs`` step: a cold run in a fresh cache with the env's
    linear algebra inline and loops in command buffers after the given XLA_FLAGS, its ratio
    to the default row at the same count; a count the time left does not cover is skipped,
    saying so; an error is that count's line; the report draws each row."""
    plan = dataclasses.replace(gpu_check.SMOKE_PLAN, graph_envs=(4, 8, 16),
                               train=((4, 3, True), (8, 3, False), (16, 3, False)))
    calls = []

    def fake_bench_run(check, cfg, cache, timeout, env=None, extra=None):
        calls.append((cfg.num_envs, cfg.linalg, os.path.basename(cache), env["XLA_FLAGS"]))
        if cfg.num_envs == 8:
            raise RuntimeError("worker exited 1: boom")
        return {"fps": 300.0 * cfg.num_envs, "startup_s": 2.0, "compile_s": 1.5,
                "wall_s": 5.0}

    monkeypatch.setattr(gpu_check, "bench_run", fake_bench_run)
    monkeypatch.setenv("XLA_FLAGS", "--given=1")
    args = gpu_check.build_parser().parse_args(["--smoke", "--out", str(tmp_path)])
    check = gpu_check.Check(args, [], plan, ("train_4", "graphs"))
    try:
        check.run("train_4", lambda s: setattr(s, "result", {"cold": {"fps": 1000.0}}))
        step = check.run("graphs", lambda s: gpu_check.graphs_step(check, s, 300.0))
        flags = f"--given=1 {plan.xla_flags} {gpu_check.GRAPHS[0]}"
        assert calls == [(n, "inline", f"cache_graphs_{n}", flags) for n in (4, 8, 16)]
        assert step.status == "partial"
        four, eight, sixteen = step.result["rows"]
        assert four["fps"] == 1200.0 and four["x_default"] == pytest.approx(1.2)
        assert eight["error"] == "worker exited 1: boom"
        assert sixteen["fps"] == 4800.0 and sixteen["x_default"] is None  # no default row
        assert step.reason == "8 envs: worker exited 1: boom"
        md = (tmp_path / "gpu_check.md").read_text()
        assert "| 4 envs | 1,200 | 1.20 | 1,000 | 2.0 (1.5) |" in md
        assert "| 8 envs | worker exited 1: boom | – | – | – |" in md
        # too little time: skipped, saying so
        short = check.run("graphs", lambda s: gpu_check.graphs_step(check, s, 3.0))
        assert short.status == "skipped" and short.reason.startswith("needs ~")
        assert len(calls) == 3
    finally:
        check.close()


def test_every_lever_s_flags_are_xla_s(root_dir):
    """XLA parses every lever's flags (on any backend: a misspelt one fails on the CPU too,
    as the control shows), so no lever is lost to a typo on a GPU."""
    code = "import jax.numpy as jnp; jnp.ones(2).block_until_ready()"
    control = ("misspelt", "--xla_gpu_enable_command_buffer=FUSION,WHILST")
    graphs = ("one CUDA graph a batch", *gpu_check.GRAPHS)
    for name, flags, _ in (*gpu_check.LEVERS, graphs, control + ("library",)):
        p = subprocess.run([sys.executable, "-c", code], cwd=root_dir, capture_output=True,
                           text=True, timeout=120,
                           env=dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu"))
        assert (p.returncode == 0) == (name != "misspelt"), (name, p.stderr[-2000:])


def test_cpu_without_smoke_is_refused(root_dir, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-m", "scripts.gpu_check", "--out", str(out)],
                       cwd=root_dir, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("no GPU: jax sees only cpu; use --smoke"), err
    assert not out.exists()


@pytest.mark.slow  # minutes on 2 CPU cores: four cold compiles (three ppo_jax, one Brax)
def test_smoke_runs_every_step(root_dir, tmp_path):
    out = tmp_path / "out"  # given relative to where the command runs, not the repo root
    p = subprocess.run(["bash", os.path.join(root_dir, "scripts", "gpu_check.sh"), "--smoke",
                        "--out", "out"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    report = json.loads((out / "gpu_check.json").read_text())
    md = (out / "gpu_check.md").read_text()
    plan = gpu_check.SMOKE_PLAN
    names = ["install", "probe", *plan.order]
    assert [s["name"] for s in report["steps"]] == names
    have_brax = importlib.util.find_spec("brax") is not None
    want = {n: "ok" for n in names} | ({} if have_brax else {"brax": "skipped"})
    assert {s["name"]: s["status"] for s in report["steps"]} == want
    assert report["smoke"] and report["elapsed_s"] <= report["budget_s"]
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["probe"]["result"]["backend"] == "cpu"
    # the injected failure's message and the injected slow test's cap reach the report
    tests = steps["pytest"]["result"]["details"]
    failure, slow = tests[INJECTED_FAILURE], tests[INJECTED_SLOW]
    assert failure["outcome"] == "FAILED"
    assert injected_tests.FAILURE_MESSAGE in failure["message"]
    assert slow["outcome"] == "CAPPED" and slow["cap_s"] == plan.test_cap_s
    assert f"| {INJECTED_FAILURE} | FAILED (injected: expected FAILED) |" in md
    assert injected_tests.FAILURE_MESSAGE in md
    assert f"| {INJECTED_SLOW} | CAPPED (injected: expected CAPPED) |" in md
    assert f"capped at {plan.test_cap_s:g} s" in md
    real = [t for t in tests if t not in plan.expected]
    assert real and all(tests[t]["outcome"] == "PASSED" for t in real)  # run after the cap
    events = (out / "pytest_events.jsonl").read_text().splitlines()
    assert any(json.loads(e).get("nodeid") == INJECTED_FAILURE for e in events)
    # the table has a row for every env count it claims, with the figures measured
    rows = {r["envs"]: r for r in report["table"]}
    assert set(rows) == set(plan.env_speed) | {n for n, _, _ in plan.train}
    for n, r in rows.items():
        assert r["env_steps_per_s"] > 0
        assert md.count(f"\n| {n:,} | {r['env_steps_per_s']:,.0f} |") == 1
    for n, _, warm in plan.train:
        assert rows[n]["fps"] > 0
        if warm:
            assert rows[n]["warm_from_store"] is True
            assert rows[n]["startup_warm_s"] < rows[n]["startup_cold_s"]
    # where start-up went: every phase, each program, for the cold and the warm run
    train = steps[f"train_{plan.train[0][0]}"]["result"]
    for label in ("cold", "warm"):
        phases = train[label]["startup_phases"]
        assert set(phases["programs"]) == {"init", "update"}
        assert phases["backend_init_s"] >= 0 and phases["env_build_s"] > 0
        assert phases["programs_s"] > 0 and phases["init_run_s"] > 0
        assert f"| train_{plan.train[0][0]} {label} |" in md
    assert {v["source"] for v in train["warm"]["startup_phases"]["programs"].values()} \
        == {"ppo_programs"}
    threshold = steps["preset_fast"]["result"]
    assert threshold["reached"] and threshold["threshold_s"] > 0
    assert "warm" in threshold, steps["preset_fast"]["reason"]
    assert threshold["compiled_from_cache"] is False
    assert f"| {threshold['label']}, cold | {threshold['description']} |" in md
    warm = threshold["warm"]  # a second process with the cache the first one filled
    assert warm["reached"] and warm["threshold_s"] > 0 and warm["compiled_from_cache"] is True
    assert f"| {threshold['label']}, warm | (the same) | {warm['threshold_s']:.1f} (" in md
    matmul = steps["matmul"]["result"]
    assert matmul["tf32"]["fps"] > 0 and matmul["highest_fps"] == rows[plan.matmul_envs]["fps"]
    assert "| tf32 |" in md and report["command"] in md
    if have_brax:
        brax = steps["brax"]["result"]
        assert brax["brax"]["fps"] > 0
        assert brax["ppo_jax_over_brax"] == pytest.approx(rows[plan.brax_envs]["fps"]
                                                          / brax["brax"]["fps"])
        assert f"| Brax ppo.train | {brax['description']} |" in md
    crossing = steps["crossover"]["result"]
    for r in crossing["rows"]:  # on the CPU both sides are the CPU: the plumbing only
        assert r["cpu_fps"] > 0 and r["gpu_fps"] == rows[r["envs"]]["fps"]
        assert r["gpu_over_cpu"] == pytest.approx(r["gpu_fps"] / r["cpu_fps"])
        assert r["cpu_device"] == "cpu"
    assert "Crossover on this machine (steady-state frames/s, start-up left out): " in md
    levers = steps["levers"]["result"]["levers"]
    assert [lv["name"] for lv in levers] == [n for n, _, _ in plan.levers]
    assert [lv["linalg"] for lv in levers] == [linalg for _, _, linalg in plan.levers]
    for lever in levers:
        assert [r["envs"] for r in lever["rows"]] == list(plan.lever_envs)
        assert all(r["steps_per_s"] > 0 and r["x_default"] > 0 for r in lever["rows"])
        assert f"| {lever['name']} | {lever['rows'][0]['steps_per_s']:,.0f} (" in md
    traced = steps["trace"]["result"]
    assert [r["envs"] for r in traced["rows"]] == list(plan.trace_envs)
    for r in traced["rows"]:
        assert r["fps"] > 0 and r["trace"]["first_batch"] == gpu_check.TRACE_TIMED
        assert r["trace"]["batches"] == plan.trace_batches
        assert r["trace"]["summary"]["events"] > 0 and r["trace"]["summary"]["window_ms"] > 0
    assert (f"Where a batch's time goes: JAX's profiler over {plan.trace_batches} batch, "
            f"after {gpu_check.TRACE_TIMED} timed ones:") in md
    for log in ("gpu_check.log", "pytest.log", "learning.log"):
        assert (out / log).stat().st_size > 0
