"""The GPU in one shot: every GPU check of ppo_jax in one command, within a time budget.

``bash scripts/gpu_check.sh [--out DIR] [--smoke] [--budget-s S]`` installs the carried wheels
(offline) and runs ``python -m scripts.gpu_check``, which runs these steps in order,
each timed, each failure recorded while the rest still run:

1. ``pytest``: the GPU-relevant tests (:data:`GPU_TESTS`), in a subprocess, output in
   ``OUT/pytest.log``;
2. the GPU table, in fresh subprocesses: env steps/s of the MJX env alone (``env_speed``);
   training frames/s at each env count through the benchmark's own worker
   (:mod:`ppo_jax.bench.worker_ppo_jax`, the programs ``scripts/train.py`` runs), each run
   twice, cold (a fresh compile cache) and warm (the cache the cold run filled)
   (``train_<N>``); ``--preset fast``'s wall time to its first evaluation >= 9,000, one seed
   (``preset_fast``); ``--matmul-precision tf32`` against ``highest`` (``matmul``);
3. ``learning``: the learning test (:data:`LEARNING_TESTS`), when the time left allows it.

The training rows are measured in order of value for a GPU (many envs first, see
:data:`GPU_PLAN`); the table lists them by env count. After every step ``OUT/gpu_check.json``
(every figure, the device, versions, each step's status and seconds) and
``OUT/gpu_check.md`` (the tables, with the command that made them) are rewritten, so a run
cut short still leaves what it measured. A step that no longer fits the budget is skipped
and says why. ``--smoke`` runs the same steps at tiny sizes on the CPU, so that a typo shows
up in CI instead of on a lent GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from ppo_jax.config import PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ----------------------------------------------------------------------------------------------
# what is checked (edit here)
# ----------------------------------------------------------------------------------------------
# The GPU-relevant tests, run in this order (tests of one module together: their module
# fixtures are built once). Left out on purpose: the x64 parity tests (float64 is not what
# runs on a GPU), test_env's rolled-RK4 bit-equality with mjx.step (XLA fuses differently on
# a GPU: equal to rounding, not bit for bit), test_parallel's store test (needs 4 devices),
# the live TorchRL tests (the fixture tests compare the same components, without torchrl).
GPU_TESTS: tuple[str, ...] = (
    # the executables the CLI ships hold no host callback (JAX never caches such a program)
    "tests/test_train.py::test_shipped_programs_hold_no_host_callback",
    # the program store on this device: scripts/train.py twice in a fresh cache, the second
    # loads every program and reports compiled_from_cache true in metrics.json
    "tests/test_cli.py::test_second_process_finds_its_programs_in_the_cache",
    # each PPO component against TorchRL's (fixtures), float32
    "tests/test_torchrl_fixtures.py::test_fixture_param_layout_matches_networks",
    "tests/test_torchrl_fixtures.py::test_fixture_networks",
    "tests/test_torchrl_fixtures.py::test_fixture_log_prob",
    "tests/test_torchrl_fixtures.py::test_fixture_gae",
    "tests/test_torchrl_fixtures.py::test_fixture_loss_and_grads",
    "tests/test_torchrl_fixtures.py::test_fixture_optimizer_step",
    # the MJX env against MuJoCo C (Gymnasium's v4 and mujoco_sim), float32
    "tests/test_env_parity.py::test_per_step_parity_float32",
    "tests/test_mujoco_c.py::test_mjx_agrees_with_mujoco_c_float32",
    # a whole run is one compilation; the shipped programs give what train(key) gives
    "tests/test_train.py::test_whole_run_is_one_compilation",
    "tests/test_train.py::test_shipped_programs_compile_once_and_equal_train",
)
# The learning test: up to 100k frames of the tutorial config (it stops at its first
# evaluation that holds; 1 env: latency-bound on a GPU), so it runs last, when the time left
# allows it. Its estimate takes all 100k.
LEARNING_TESTS: tuple[str, ...] = ("tests/test_learning.py",)
LEARNING_FRAMES = 100_000
# Environment of the pytest steps: JAX_PLATFORMS "" lets JAX pick the GPU (conftest.py
# defaults to the CPU); the test that starts scripts/train.py runs two JAX processes at once
# (no preallocation); the parity tests compare float32 arithmetic (JAX's default matmul
# precision may be TF32 on NVIDIA GPUs); none of the tests renders.
PYTEST_ENV_GPU = {"JAX_PLATFORMS": "", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
                  "JAX_DEFAULT_MATMUL_PRECISION": "highest", "MUJOCO_GL": "disable"}
PYTEST_ENV_CPU = dict(PYTEST_ENV_GPU, JAX_PLATFORMS="cpu")

THRESHOLD = 9000.0
TINY = dict(hidden_sizes=(16, 16), num_epochs=2, init_stats_frames=100, eval_max_steps=50)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes of a check (:data:`GPU_PLAN`, or :data:`SMOKE_PLAN` for ``--smoke``)."""

    tests: tuple[str, ...]
    env_speed: tuple[tuple[int, int], ...]  # (envs, steps of each env per timed call)
    train: tuple[tuple[int, int], ...]  # (envs, batches) per training row
    order: tuple[str, ...]  # the table's measurements, in the order measured
    matmul_envs: int  # tf32 against highest at this env count
    threshold: float
    threshold_config: dict[str, Any]  # PPOConfig fields of the preset_fast step
    threshold_label: str
    learning_tests: tuple[str, ...]
    learning_frames: int  # what the learning tests train (sizes their time estimate)
    overrides: dict[str, Any]  # PPOConfig fields changed in every training row
    shares: dict[str, float]  # the most of the budget a step may take: pytest, env_speed, ...
    xla_flags: str = ""  # added to XLA_FLAGS of the measuring subprocesses (not of pytest)


GPU_PLAN = Plan(
    tests=GPU_TESTS,
    env_speed=((1, 1000), (64, 1000), (1024, 500), (4096, 250)),
    train=((1, 4), (64, 8), (1024, 8), (4096, 6)),
    order=("env_speed", "train_1024", "train_4096", "preset_fast", "matmul", "train_64",
           "train_1"),
    matmul_envs=1024,
    threshold=THRESHOLD,
    threshold_config=dict(PRESETS["fast"][1]),
    threshold_label="--preset fast",
    learning_tests=LEARNING_TESTS,
    learning_frames=LEARNING_FRAMES,
    overrides={},
    shares={"pytest": 0.4, "env_speed": 0.15, "preset_fast": 0.35},
)
SMOKE_PLAN = Plan(
    tests=("tests/test_torchrl_fixtures.py::test_fixture_networks",),
    env_speed=((4, 50),),  # one env count: the smoke checks the plumbing
    train=((4, 3),),
    order=("env_speed", "train_4", "preset_fast", "matmul"),
    matmul_envs=4,
    threshold=1.0,
    threshold_config=dict(TINY, num_envs=4, frames_per_batch=200, minibatch_size=40,
                          total_frames=600, eval_every=1),
    threshold_label="tiny config (smoke)",
    learning_tests=("tests/test_config.py::test_defaults_are_the_tutorial",),
    learning_frames=0,
    overrides=TINY,
    shares={},  # no step is capped: all of them must run
    # the least optimizing CPU compile (the smoke checks the plumbing, not the speed)
    xla_flags="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
)

# Guesses before anything is measured, seconds.
COLD_GUESS_S, WARM_GUESS_S = 60.0, 15.0
RESERVE_S = 5.0  # kept back for writing the reports
STEP_STATUSES = ("ok", "partial", "skipped", "failed")


class Skip(Exception):
    """A step that does not fit (its reason in ``args[0]``)."""


# ----------------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------------
def row_config(num_envs: int, batches: int, plan: Plan, matmul_precision: str = "highest"):
    """A training row's config: the benchmark's rules (:func:`~ppo_jax.bench.configs.
    scaled_config`: 1 env is the tutorial's; more envs keep a batch of ~1000 frames but at
    least 16 steps per env, 15 minibatches per epoch), ``batches`` batches, no evaluation."""
    from ppo_jax.bench.configs import MIN_STEPS_PER_ENV, TUTORIAL_FRAMES_PER_BATCH, scaled_config

    if num_envs == 1:
        per_batch = TUTORIAL_FRAMES_PER_BATCH
    else:
        per_batch = num_envs * max(MIN_STEPS_PER_ENV, -(-TUTORIAL_FRAMES_PER_BATCH // num_envs))
    cfg = scaled_config(num_envs, per_batch * batches, matmul_precision=matmul_precision)
    return cfg.replace(**plan.overrides)


def threshold_config(plan: Plan):
    """The ``preset_fast`` step's config (seed 0)."""
    from ppo_jax.config import PPOConfig

    return PPOConfig(**plan.threshold_config)


# ----------------------------------------------------------------------------------------------
# the record of a check
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Step:
    """One step's outcome: ``status`` in :data:`STEP_STATUSES`, ``reason`` for skipped and
    partial, ``error`` (one line) for failed."""

    name: str
    status: str = "pending"
    seconds: float = 0.0
    started_s: float | None = None
    result: Any = None
    reason: str | None = None
    error: str | None = None


class Budget:
    """Seconds since ``started`` (epoch time) against ``total_s``."""

    def __init__(self, total_s: float, started: float):
        self.total_s, self.started = float(total_s), started

    def elapsed(self) -> float:
        return time.time() - self.started

    def left(self) -> float:
        return self.total_s - self.elapsed()

    def allow(self, share: float | None = None) -> float:
        """Seconds a step may take: what is left (less :data:`RESERVE_S`), at most ``share``
        of the whole budget (None: no cap)."""
        left = self.left() - RESERVE_S
        return left if share is None else min(left, share * self.total_s)


def _start_time() -> float:
    """When the check started: ``GPU_CHECK_STARTED`` (set by scripts/gpu_check.sh before it
    installs the wheels) when it is sane, else now."""
    now = time.time()
    try:
        t = float(os.environ.get("GPU_CHECK_STARTED", ""))
    except ValueError:
        return now
    return t if 0 <= now - t < 3600 else now


class Check:
    """A check in progress: its plan, budget, steps, and the reports written after each step."""

    def __init__(self, args: argparse.Namespace, argv: list[str], plan: Plan):
        self.args, self.plan = args, plan
        # relative to where the command was typed (scripts/gpu_check.sh runs from the root)
        self.out = os.path.abspath(os.path.join(os.environ.get("GPU_CHECK_CWD", ""), args.out))
        self.budget = Budget(args.budget_s, _start_time())
        self.steps: list[Step] = []
        self.meta: dict[str, Any] = {
            "command": command_line(argv), "smoke": args.smoke, "budget_s": args.budget_s,
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "plan": dataclasses.asdict(plan), "environment": _env_summary(),
        }
        self.costs: dict[str, float] = {}  # measured walls: "cold", "warm"
        self.work = tempfile.mkdtemp(prefix="ppo_jax_gpu_check_")
        os.makedirs(self.out, exist_ok=True)
        self._log = open(os.path.join(self.out, "gpu_check.log"), "w")
        self.on_gpu = False  # set from the probe
        self.xla_flags = os.environ.get("XLA_FLAGS")  # as given (the plan adds to it)
        if plan.xla_flags:
            os.environ["XLA_FLAGS"] = f"{self.xla_flags or ''} {plan.xla_flags}".strip()

    def log(self, msg: str) -> None:
        line = f"[gpu_check {self.budget.elapsed():6.1f}/{self.budget.total_s:.0f} s] {msg}"
        print(line, file=sys.stderr, flush=True)
        self._log.write(line + "\n")
        self._log.flush()

    def run(self, name: str, fn: Callable[[Step], None], seconds: float | None = None) -> Step:
        """Run step ``name``: ``fn(step)`` fills ``step.result`` (and may set ``status`` to
        partial with a reason); :class:`Skip` skips it, any other exception fails it.
        ``seconds``: what the step took when it ran before (the install, the probe)."""
        step = Step(name, started_s=round(self.budget.elapsed(), 1))
        self.steps.append(step)
        t = time.perf_counter()
        try:
            fn(step)
            if step.status == "pending":
                step.status = "ok"
        except Skip as e:
            step.status, step.reason = "skipped", str(e)
        except KeyboardInterrupt:  # SIGTERM too (see main): record, then stop
            step.status, step.error = "failed", "interrupted"
            step.seconds = round(time.perf_counter() - t, 1)
            self.write()
            raise
        except Exception as e:  # noqa: BLE001  (recorded; the other steps still run)
            step.status, step.error = "failed", one_line(e)
        step.seconds = round(time.perf_counter() - t if seconds is None else seconds, 1)
        note = step.reason or step.error or ""
        self.log(f"{name}: {step.status} in {step.seconds:.1f} s" + (f" ({note})" if note else ""))
        self.write()
        return step

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def write(self) -> None:
        """Rewrite ``gpu_check.json`` and ``gpu_check.md`` (atomically)."""
        payload = dict(self.meta, elapsed_s=round(self.budget.elapsed(), 1),
                       steps=[dataclasses.asdict(s) for s in self.steps])
        try:
            payload["table"] = table_rows(payload)
            text = markdown(payload)
        except Exception as e:  # noqa: BLE001  (the JSON must still be written)
            text = f"the report could not be drawn: {one_line(e)}; see gpu_check.json\n"
        _write(os.path.join(self.out, "gpu_check.json"), json.dumps(payload, indent=1,
                                                                    default=str))
        _write(os.path.join(self.out, "gpu_check.md"), text)

    def close(self) -> None:
        """Close the log, drop the caches, give XLA_FLAGS back."""
        self._log.close()
        if self.xla_flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = self.xla_flags
        shutil.rmtree(self.work, ignore_errors=True)


def one_line(e: Exception) -> str:
    """``e`` in one line: a subprocess's failure as its exit status and its last line."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, RuntimeError) and msg.startswith("exit ") and " | " in msg:
        msg = msg.split(":", 1)[0] + ": " + msg.rsplit(" | ", 1)[1].strip()
    return msg if isinstance(e, RuntimeError) else f"{type(e).__name__}: {msg}"


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def command_line(argv: list[str]) -> str:
    """The command as the user typed it (through scripts/gpu_check.sh or the module)."""
    head = ("bash scripts/gpu_check.sh" if os.environ.get("GPU_CHECK_SCRIPT")
            else "python -m scripts.gpu_check")
    return " ".join([head, *argv])


def _env_summary() -> dict[str, str | None]:
    names = ("JAX_PLATFORMS", "XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE",
             "XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_DEFAULT_MATMUL_PRECISION", "MUJOCO_GL",
             "PYTHONPATH")
    return {n: os.environ.get(n) for n in names}


def _nvidia_smi() -> list[str]:
    """``name, memory, driver`` of each GPU nvidia-smi lists (none: [])."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                            "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [g.strip() for g in q.stdout.splitlines() if g.strip()]


# ----------------------------------------------------------------------------------------------
# step 0: install (scripts/gpu_check.sh) and probe
# ----------------------------------------------------------------------------------------------
def install_step(step: Step) -> None:
    """What scripts/gpu_check.sh did with ``.whl/``: it says so in ``GPU_CHECK_INSTALL``
    (``ok: ...`` or ``failed: ...``) and ``GPU_CHECK_INSTALL_S``."""
    what = os.environ.get("GPU_CHECK_INSTALL")
    if not what:
        raise Skip("not run through scripts/gpu_check.sh")
    status, _, note = what.partition(":")
    step.result = {"note": note.strip()}
    if status != "ok":
        raise RuntimeError(note.strip())


def probe() -> tuple[dict[str, Any] | None, str | None, float]:
    """What JAX sees, from a subprocess (this process never starts a GPU backend):
    ``(result, error, seconds)``."""
    from scripts.gpu_check import worker as gpu_worker

    t = time.perf_counter()
    try:
        result, error = gpu_worker.call({"kind": "probe"}, timeout=180.0), None
        result["nvidia_smi"] = _nvidia_smi()
    except RuntimeError as e:
        result, error = None, str(e)
    return result, error, time.perf_counter() - t


# ----------------------------------------------------------------------------------------------
# pytest
# ----------------------------------------------------------------------------------------------
_OUTCOME = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.M)
_WORST = ("ERROR", "FAILED", "XPASS", "SKIPPED", "XFAIL", "PASSED")


def missing_tests(tests: tuple[str, ...], root: str = ROOT) -> list[str]:
    """The node ids of ``tests`` whose file or test function is not there (read as text)."""
    missing = []
    for node in tests:
        path, _, name = node.partition("::")
        try:
            with open(os.path.join(root, path)) as f:
                src = f.read()
        except OSError:
            missing.append(node)
            continue
        if name and not re.search(rf"^def {re.escape(name.split('[')[0])}\(", src, re.M):
            missing.append(node)
    return missing


def outcomes(log_text: str) -> dict[str, str]:
    """Each test's outcome in a ``pytest -v`` log (the worst when it has two, e.g. a
    teardown error after PASSED)."""
    out: dict[str, str] = {}
    for node, outcome in _OUTCOME.findall(log_text):
        prev = out.get(node)
        out[node] = outcome if prev is None else min(prev, outcome, key=_WORST.index)
    return out


def run_logged(cmd: list[str], log_path: str, env: dict[str, str], timeout: float
               ) -> int | None:
    """Run ``cmd`` in its own process group with stdout and stderr appended to ``log_path``;
    its exit status, or None when it ran past ``timeout`` (then the group is killed)."""
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return None
        except BaseException:
            _kill_group(proc)
            raise


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def pytest_step(check: Check, step: Step, tests: tuple[str, ...], log_name: str,
                allow_s: float) -> None:
    """``pytest -v`` on ``tests`` (node ids, or files standing for their tests), output in
    ``OUT/<log_name>``; each test's outcome in ``step.result``. Any test failed, errored,
    missing or not run: failed; any skipped: partial."""
    from scripts.gpu_check import worker as gpu_worker

    env = gpu_worker.child_env(PYTEST_ENV_GPU if check.on_gpu else PYTEST_ENV_CPU)
    env.pop("XLA_FLAGS", None)  # the tests' own flags, not the measuring runs' (plan.xla_flags)
    if check.xla_flags is not None:
        env["XLA_FLAGS"] = check.xla_flags
    missing = missing_tests(tests)
    present = [t for t in tests if t not in missing]
    log_path = os.path.join(check.out, log_name)
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", *present]
    code = run_logged(cmd, log_path, env, allow_s) if present else 5
    seen = {}
    if present:
        with open(log_path) as f:
            seen = outcomes(f.read())
    per_test: dict[str, str] = {}
    for t in tests:
        hits = {n: o for n, o in seen.items() if n == t or n.startswith(t + "::")}
        per_test.update(hits or {t: "missing" if t in missing else "not run"})
    counts = {k: sum(v == k for v in per_test.values()) for k in sorted(set(per_test.values()))}
    step.result = {"tests": per_test, "counts": counts, "exit_status": code, "log": log_name,
                   "env": {k: env.get(k) for k in PYTEST_ENV_GPU}}
    bad = {t: o for t, o in per_test.items() if o not in ("PASSED", "SKIPPED", "XFAIL")}
    if code is None:
        raise RuntimeError(f"timed out after {allow_s:.0f} s; {len(bad)} of {len(per_test)} "
                           f"test(s) not passed (see {log_name})")
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(per_test)} test(s) not passed: "
                           + ", ".join(f"{t.split('::')[-1]} {o}" for t, o in bad.items()))
    if code != 0:
        raise RuntimeError(f"pytest exited {code} (see {log_name})")
    skipped = [t for t, o in per_test.items() if o == "SKIPPED"]
    if skipped:
        step.status, step.reason = "partial", f"{len(skipped)} skipped (see {log_name})"


# ----------------------------------------------------------------------------------------------
# the GPU table
# ----------------------------------------------------------------------------------------------
def env_speed_step(check: Check, step: Step) -> None:
    """Env steps/s of the MJX env alone at the plan's env counts (one subprocess)."""
    from scripts.gpu_check import worker as gpu_worker

    allow = check.budget.allow(check.plan.shares.get("env_speed"))
    if allow < 10:
        raise Skip(f"{allow:.0f} s left")
    spec = {"kind": "env_speed", "sizes": [list(s) for s in check.plan.env_speed],
            "repeats": 3, "deadline_s": max(5.0, allow - min(15.0, 0.2 * allow))}
    step.result = gpu_worker.call(spec, timeout=allow)
    done = {r["envs"] for r in step.result["rows"]}
    for n, steps in check.plan.env_speed:  # cut off while measuring: the rest not measured
        if n not in done:
            step.result["rows"].append({"envs": n, "steps": steps,
                                        "skipped": f"cut off at {allow:.0f} s"})
    skipped = [r for r in step.result["rows"] if r.get("skipped")]
    if skipped:
        step.status = "partial"
        step.reason = "skipped " + ", ".join(f"{r['envs']} envs ({r['skipped']})" for r in skipped)


def bench_run(check: Check, cfg, cache: str, timeout: float) -> dict[str, Any]:
    """One run of the benchmark's ppo_jax worker (a fresh process, one device) with the
    compile cache ``cache``: its figures as the benchmark summarizes them."""
    from ppo_jax.bench import driver

    spec = {"kind": "ppo_jax", "compile_cache": cache, "matmul_precision": cfg.matmul_precision,
            "profile": False, "config": cfg.to_dict(), "devices": 1}
    t = time.perf_counter()
    raw = driver.run_worker(spec, timeout)
    wall = time.perf_counter() - t
    out = driver.summarize_run(raw, None)
    out.update(wall_s=wall, compiled_from_cache=raw.get("compiled_from_cache"),
               compile=raw.get("compile"),
               device=raw.get("device"), batch_marks=raw.get("marks"))
    return out


def _fresh_cache(check: Check, name: str) -> str:
    path = os.path.join(check.work, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def _estimate(check: Check, what: str) -> float:
    guess = COLD_GUESS_S if what == "cold" else WARM_GUESS_S
    return check.costs.get(what, guess)


def train_step(check: Check, step: Step, num_envs: int, batches: int) -> None:
    """Training frames/s at ``num_envs`` envs: a cold run (fresh cache), then a warm one."""
    from ppo_jax.bench.configs import describe_config

    cfg = row_config(num_envs, batches, check.plan)
    step.result = {"envs": num_envs, "batches": batches, "frames": cfg.total_frames,
                   "config": cfg.to_dict(), "description": describe_config("ppo_jax",
                                                                           cfg.to_dict())}
    need = _estimate(check, "cold") + _estimate(check, "warm")
    if need > check.budget.allow():
        raise Skip(f"needs ~{need:.0f} s, {check.budget.allow():.0f} s left")
    cache = _fresh_cache(check, f"cache_train_{num_envs}")
    cold = bench_run(check, cfg, cache, check.budget.allow())
    check.costs["cold"] = max(check.costs.get("cold", 0.0), cold["wall_s"])
    step.result["cold"] = cold
    check.write()
    warm = bench_run(check, cfg, cache, check.budget.allow())
    check.costs["warm"] = max(check.costs.get("warm", 0.0), warm["wall_s"])
    step.result["warm"] = warm
    if not warm.get("compiled_from_cache"):
        step.status, step.reason = "partial", "the warm run did not load its programs"


def threshold_step(check: Check, step: Step) -> None:
    """Wall time, from process start, to the first evaluation >= the threshold (one seed,
    a fresh cache), measured by the benchmark's worker as ``--to-threshold`` measures it,
    bounded by the budget: not reached within it is partial."""
    from ppo_jax.bench import driver
    from scripts.gpu_check import worker as gpu_worker
    from ppo_jax.bench.configs import describe_config

    cfg, goal = threshold_config(check.plan), check.plan.threshold
    step.result = {"label": check.plan.threshold_label, "config": cfg.to_dict(),
                   "description": describe_config("ppo_jax", cfg.to_dict()), "threshold": goal,
                   "reached": False}
    allow = check.budget.allow(check.plan.shares.get("preset_fast"))
    if allow < _estimate(check, "cold"):
        raise Skip(f"needs more than ~{_estimate(check, 'cold'):.0f} s, {allow:.0f} s left")
    spec = {"kind": "threshold", "config": cfg.to_dict(), "threshold": goal, "devices": 1,
            "compile_cache": _fresh_cache(check, "cache_threshold"),
            "matmul_precision": cfg.matmul_precision, "deadline_s": max(5.0, allow - 10.0)}
    try:
        raw = gpu_worker.call(spec, timeout=allow)
    except RuntimeError as e:
        if "timed out" not in str(e):
            raise
        step.status, step.reason = "partial", f"not reached within {allow:.0f} s ({e})"
        return
    if len(raw["marks"]) < 2:
        raise RuntimeError(f"stopped after {len(raw['marks'])} batch(es): {raw['stopped']}")
    summary = driver.summarize_run(raw, goal)
    step.result.update(summary, reached=summary["threshold_s"] is not None,
                       evals=raw["evals"], stopped=raw["stopped"], process_s=raw["process_s"],
                       compiled_from_cache=raw.get("compiled_from_cache"),
                       compile=raw.get("compile"))
    if not step.result["reached"]:
        step.status = "partial"
        step.reason = f"not reached within {raw['process_s']:.0f} s ({raw['stopped']})"


def matmul_step(check: Check, step: Step) -> None:
    """Training frames/s with ``--matmul-precision tf32`` at the plan's env count (fresh
    cache), against the ``highest`` row at that count."""
    n = check.plan.matmul_envs
    batches = dict(check.plan.train)[n]
    need = _estimate(check, "cold")
    if need > check.budget.allow():
        raise Skip(f"needs ~{need:.0f} s, {check.budget.allow():.0f} s left")
    cfg = row_config(n, batches, check.plan, matmul_precision="tf32")
    tf32 = bench_run(check, cfg, _fresh_cache(check, "cache_tf32"), check.budget.allow())
    row = check.step(f"train_{n}")
    highest = ((row.result or {}).get("cold") or {}).get("fps") if row else None
    step.result = {"envs": n, "tf32": tf32, "highest_fps": highest,
                   "tf32_over_highest": tf32["fps"] / highest if highest else None}
    if highest is None:
        step.status, step.reason = "partial", f"no highest-precision figure at {n} envs"


def learning_step(check: Check, step: Step) -> None:
    """The learning tests, when the time left allows their estimate: a cold compile, and
    their frames at the 1-env row's rate plus a fifth for the evaluations."""
    allow = check.budget.allow()
    need = 20.0
    if check.plan.learning_frames:
        row = check.step("train_1")
        fps = (((row.result or {}).get("cold") or {}).get("fps") if row else None)
        if not fps:
            raise Skip("the 1-env training row, which sizes it, was not measured")
        need += _estimate(check, "cold") + 1.2 * check.plan.learning_frames / fps
    if need > allow:
        raise Skip(f"needs ~{need:.0f} s, {allow:.0f} s left")
    pytest_step(check, step, check.plan.learning_tests, "learning.log", allow)


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------
def _n(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def _cell(text: Any) -> str:
    """Free text as one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "/")


def table_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per env count of the plan: env steps/s and the training figures (each None
    where it was not measured, with ``why``)."""
    steps = {s["name"]: s for s in payload["steps"]}
    plan = payload["plan"]
    speed = {r["envs"]: r for r in ((steps.get("env_speed") or {}).get("result") or {})
             .get("rows", [])}
    counts = sorted({n for n, _ in plan["env_speed"]} | {n for n, _ in plan["train"]})
    rows = []
    for n in counts:
        s = steps.get(f"train_{n}")
        res = (s or {}).get("result") or {}
        cold, warm = res.get("cold") or {}, res.get("warm") or {}
        why = None
        if s is None:
            why = "not in the plan" if n not in dict(plan["train"]) else "not run"
        elif not cold:
            why = s["status"] + (f": {s['reason'] or s['error']}" if s["reason"] or s["error"]
                                 else "")
        rows.append({"envs": n, "env_steps_per_s": (speed.get(n) or {}).get("steps_per_s"),
                     "env_speed_note": (speed.get(n) or {}).get("skipped"),
                     "fps": cold.get("fps"), "warm_fps": warm.get("fps"),
                     "startup_cold_s": cold.get("startup_s"),
                     "compile_cold_s": cold.get("compile_s"),
                     "startup_warm_s": warm.get("startup_s"),
                     "warm_from_store": warm.get("compiled_from_cache"),
                     "description": res.get("description"), "why": why})
    return rows


def markdown(payload: dict[str, Any]) -> str:
    """The report: device line, command, the GPU table, the preset and matmul tables, the
    steps."""
    steps = {s["name"]: s for s in payload["steps"]}
    probe = (steps.get("probe") or {}).get("result") or {}
    versions = probe.get("versions") or {}
    gpus = "; ".join(probe.get("nvidia_smi") or []) or ", ".join(probe.get("devices") or [])
    date = payload["started_utc"][:10]
    lines = [f"GPU check{' (smoke, CPU)' if payload['smoke'] else ''}: "
             f"{gpus or 'device unknown'}; JAX {versions.get('jax') or '–'} "
             f"({probe.get('backend') or '–'} backend), "
             f"MuJoCo {versions.get('mujoco') or '–'}, "
             f"Python {versions.get('python') or '–'}; {date}; "
             f"{payload['elapsed_s']:.0f} s of a {payload['budget_s']:.0f} s budget.",
             "", "```bash", payload["command"], "```", ""]
    lines += ["| envs | env steps/s (MJX alone) | training frames/s | x 1 env | config | "
              "start-up s cold (compile) | start-up s warm | warm run loaded its programs |",
              "| ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    rows = table_rows(payload)
    base = next((r["fps"] for r in rows if r["envs"] == 1 and r["fps"]), None)
    for r in rows:
        speed = _n(r["env_steps_per_s"]) if r["env_steps_per_s"] else (
            f"skipped ({r['env_speed_note']})" if r["env_speed_note"] else "–")
        if r["fps"] is None:
            lines.append(f"| {r['envs']:,} | {_cell(speed)} | {_cell(r['why'] or '–')} | – | "
                         f"{r['description'] or '–'} | – | – | – |")
            continue
        ratio = _n(r["fps"] / base, "{:.1f}") if base else "–"
        store = {True: "yes", False: "no", None: "–"}[r["warm_from_store"]]
        lines.append(f"| {r['envs']:,} | {speed} | {_n(r['fps'])} | {ratio} | {r['description']} | "
                     f"{_n(r['startup_cold_s'], '{:.1f}')} ({_n(r['compile_cold_s'], '{:.1f}')}) | "
                     f"{_n(r['startup_warm_s'], '{:.1f}')} | {store} |")
    lines += ["", *_threshold_lines(steps.get("preset_fast"), payload["plan"]["threshold"]), "",
              *_matmul_lines(steps), "",
              "| step | status | seconds | note |", "| --- | --- | ---: | --- |"]
    for s in payload["steps"]:
        note = _cell(s["reason"] or s["error"] or _step_note(s) or "")
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {note} |")
    lines += ["", *_warnings(payload), *_notes(payload)]
    return "\n".join(lines) + "\n"


def _warnings(payload: dict[str, Any]) -> list[str]:
    """The benchmark's warnings of the runs (XLA compilations during the measured batches)."""
    out = []
    for s in payload["steps"]:
        res = s.get("result") or {}
        runs = [("cold", res.get("cold")), ("warm", res.get("warm")), ("tf32", res.get("tf32")),
                ("", res if "fps" in res else None)]
        for label, run in runs:
            if isinstance(run, dict) and run.get("warning"):
                out.append(f"- {s['name']}{f' ({label})' if label else ''}: {run['warning']}")
    return out + [""] if out else []


def _threshold_lines(s: dict[str, Any] | None, goal: float) -> list[str]:
    res = (s or {}).get("result") or {}
    head = [f"| run (one seed, cold) | config | first evaluation >= {_n(goal)}: "
            "s from process start (frames) | start-up s (compile) | frames/s, evaluations "
            "included | best evaluation |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    if "fps" not in res:
        why = (s or {}).get("reason") or (s or {}).get("error") or "not run"
        return head + [f"| {res.get('label') or 'preset'} | {res.get('description') or '–'} | "
                       f"{_cell(why)} | – | – | – |"]
    hit = (f"{res['threshold_s']:.1f} ({res['threshold_frames']:,})" if res["reached"]
           else _cell(s.get("reason") or "not reached"))
    return head + [f"| {res['label']} | {res['description']} | {hit} | "
                   f"{_n(res.get('startup_s'), '{:.1f}')} ({_n(res.get('compile_s'), '{:.1f}')}) | "
                   f"{_n(res.get('fps'))} | {_n(res.get('best_eval_return'))} |"]


def _matmul_lines(steps: dict[str, Any]) -> list[str]:
    s = steps.get("matmul") or {}
    res = s.get("result") or {}
    n = res.get("envs")
    head = [f"| --matmul-precision{f' ({n:,} envs)' if n else ''} | training frames/s | "
            "vs highest |", "| --- | ---: | ---: |"]
    if not res:
        return head + [f"| tf32 | {_cell(s.get('reason') or s.get('error') or 'not run')} | – |"]
    return head + [f"| highest (the default) | {_n(res['highest_fps'])} | 1.00 |",
                   f"| tf32 | {_n(res['tf32']['fps'])} | "
                   f"{_n(res['tf32_over_highest'], '{:.2f}')} |"]


def _step_note(s: dict[str, Any]) -> str:
    res = s.get("result") or {}
    if "counts" in res:
        return ", ".join(f"{v} {k.lower()}" for k, v in res["counts"].items()) + f" ({res['log']})"
    if s["name"] == "install":
        return res.get("note", "")
    if s["name"] == "probe":
        return f"{res.get('backend')}: {', '.join(res.get('devices') or [])}"
    return ""


def _notes(payload: dict[str, Any]) -> list[str]:
    smoke = (["Smoke run: tiny sizes on the CPU, compiled with the least optimization "
              f"({payload['plan']['xla_flags']}); it checks the plumbing, its figures say "
              "nothing about speed.", ""] if payload["smoke"] else [])
    return smoke + [
        "Env steps/s: the MJX env alone, a jitted vmapped rollout with auto-reset and random "
        "actions, best of 3 calls after compilation. Training frames/s: env steps of the whole "
        "PPO loop (collection + 10 epochs of minibatch updates, no evaluation) per second after "
        "the first batch, from the benchmark's ppo_jax worker in a fresh process (the programs "
        "scripts/train.py runs), cold run; configs by the benchmark's rules (1 env: the "
        "tutorial's; more envs: at least 16 steps per env per batch, 15 minibatches per epoch). "
        "Start-up: time to the first batch minus that batch at the steady rate, imports "
        "excluded; cold is a fresh compile cache, warm the second run with the cache the first "
        "one filled. The threshold run's wall time counts from its process start (imports, "
        "device start and compile included). The pytest steps ran with "
        + ", ".join(f"{k}={v!r}" for k, v in PYTEST_ENV_GPU.items() if k != "JAX_PLATFORMS")
        + ".",
    ]


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def build_parser(prog: str = "gpu_check") -> argparse.ArgumentParser:
    from ppo_jax.cli.common import ArgumentParser

    p = ArgumentParser(prog=prog, description=(
        "Every GPU check of ppo_jax in one command within a time budget: the GPU-relevant "
        "tests, env steps/s and training frames/s at 1 to 4,096 envs (cold and warm start), "
        "--preset fast's time to an evaluation of 9,000, tf32 against highest matmul "
        "precision. Writes OUT/gpu_check.json and OUT/gpu_check.md."))
    p.add_argument("--out", default="gpu_check", help="output directory (default gpu_check/)")
    p.add_argument("--smoke", action="store_true",
                   help="the same steps at tiny sizes on the CPU (a minute or few: CI)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="seconds for the whole check, from the start of scripts/gpu_check.sh "
                        "(default 480); what no longer fits is skipped")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run the full-size check although JAX sees no GPU")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit status 1 when a step failed, 2 on a CPU without ``--smoke``."""
    from ppo_jax.cli.common import CLIError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.budget_s <= 0:
        raise CLIError(f"--budget-s must be > 0, got {args.budget_s:g}")
    probed, error, probe_s = probe()
    if probed and probed["backend"] == "cpu" and not (args.smoke or args.allow_cpu):
        raise CLIError("no GPU: jax sees only cpu; use --smoke")
    try:
        check = Check(args, argv, SMOKE_PLAN if args.smoke else GPU_PLAN)
    except OSError as e:
        raise CLIError(f"cannot write to --out {args.out}: {e.strerror or e}")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # end the running subprocess too
    try:
        return _run(check, probed, error, probe_s)
    finally:
        signal.signal(signal.SIGTERM, previous)
        check.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _run(check: Check, probed: dict[str, Any] | None, error: str | None, probe_s: float
         ) -> int:
    check.log(f"{'smoke' if check.args.smoke else 'GPU'} check, budget "
              f"{check.args.budget_s:.0f} s, out {check.out}")
    check.run("install", install_step, seconds=float(os.environ.get("GPU_CHECK_INSTALL_S") or 0))

    def record_probe(step: Step) -> None:
        if error:
            raise RuntimeError(error)
        step.result = probed

    check.run("probe", record_probe, seconds=probe_s)
    if probed is None:
        return 1
    check.on_gpu = probed["backend"] != "cpu"
    plan = check.plan
    check.run("pytest", lambda s: pytest_step(check, s, plan.tests, "pytest.log",
                                              check.budget.allow(plan.shares.get("pytest"))))
    batches = dict(plan.train)
    for name in plan.order:
        if name == "env_speed":
            check.run(name, lambda s: env_speed_step(check, s))
        elif name.startswith("train_"):
            n = int(name.split("_")[1])
            check.run(name, lambda s, n=n: train_step(check, s, n, batches[n]))
        elif name == "preset_fast":
            check.run(name, lambda s: threshold_step(check, s))
        elif name == "matmul":
            check.run(name, lambda s: matmul_step(check, s))
    check.run("learning", lambda s: learning_step(check, s))
    check.write()
    with open(os.path.join(check.out, "gpu_check.md")) as f:
        print(f.read())
    failed = [s.name for s in check.steps if s.status == "failed"]
    if failed:
        check.log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def run() -> None:
    """Console entry point (``python -m scripts.gpu_check``)."""
    from ppo_jax.cli.common import run_main

    run_main(main)


if __name__ == "__main__":
    run()
