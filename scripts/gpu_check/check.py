"""The GPU check: every GPU check of ppo_jax in one command, within a time budget.

``bash scripts/gpu_check.sh [--out DIR] [--smoke] [--budget-s S] [--steps A,B,...]
[--gpu-rows FILE]`` installs
the wheels in ``.whl/`` (offline) when the packages they carry are missing, and runs
``python -m scripts.gpu_check``: after ``install`` and ``probe`` (what JAX sees), these steps,
each timed, each failure recorded while the rest still run, in this order (the most telling
for a GPU first, :data:`GPU_PLAN`):

1. ``pytest``: the GPU-relevant tests, those marked ``@pytest.mark.gpu`` in ``tests/``
   (``pytest -m gpu``), in a subprocess with the plugin :mod:`scripts.gpu_check.plugin`,
   which writes each test's outcome, and a failure's assertion message, to
   ``OUT/pytest_events.jsonl`` the moment pytest knows it; the check reads that file as it
   grows and rewrites the report after each test. A test that runs past its cap
   (``--test-cap-s``) is stopped (pytest is killed: an XLA compile cannot be interrupted
   from Python), recorded as ``CAPPED``, and pytest starts again on the tests not yet run;
2. ``train_4096``: training frames/s at 4,096 envs through the benchmark's own worker
   (:mod:`ppo_jax.bench.worker_ppo_jax`, the programs ``scripts/train.py`` runs), cold (a
   fresh compile cache) and warm (the cache the cold run filled), with where the start-up
   seconds went (backend init, env build, each program loaded or compiled, the init program's
   run with the normalization statistics, the first batch, every XLA compilation by name);
3. ``brax``: Brax's ``ppo.train`` at 4,096 envs on the same config rules (the benchmark's
   Brax worker), and the ppo_jax / Brax ratio;
4. ``env_speed``: env steps/s of the MJX env alone at 4,096, 1,024, 64 and 1 envs, each row a
   short warm-up and then as many calls as fit a few seconds;
5. ``train_64``, ``train_1``, then ``train_1024``: the other training rows (cold);
   ``graphs``: training frames/s with one CUDA graph a batch (:data:`GRAPHS`: the env's
   linear algebra inline, loops in XLA's command buffers) at 1,024 envs, then 1, each cold,
   against the default row at the same count;
6. ``preset_fast``: ``--preset fast``'s wall time to its first evaluation >= 9,000, cold
   and then warm (the cache the cold run filled);
7. ``trace``: where a batch's time goes, at 4,096 envs (then 1,024): the training row's
   config started warm from that row's program store, 2 batches timed and 2 more under JAX's
   profiler (:mod:`ppo_jax.bench.trace`): the share of the time the GPU was busy, its kernels
   a batch, and the kernels that take the time;
8. ``matmul``: ``--matmul-precision tf32`` against ``highest`` at 4,096 envs;
9. ``crossover``: training frames/s on the host's CPU (``JAX_PLATFORMS=cpu``) at 1, 64 and
   1,024 envs, the configs of the GPU's rows, and the env count from which the GPU trains
   faster on this machine (:func:`crossover`); ``--gpu-rows`` lends it the GPU rows of an
   earlier report of this device, for a second short run;
10. ``train_16384`` and ``train_65536``: the widest training rows (cold; with ``train_1024``
   and ``train_4096`` the env-count curve of training frames/s);
11. ``levers``: what may cut the env step's latency (:data:`LEVERS`: the env's linear
   algebra inline, alone and with loops in command buffers; XLA's fusion autotuner off;
   command buffers off, loops in command buffers, rolled and unrolled, command buffers
   from one op, autotuning off), each
   measured against the defaults (run first and again last) as the env steps/s at 1 and
   4,096 envs of a fresh process;
12. ``learning``: the learning test.

Every step has a share of the budget (:attr:`Plan.shares`, scaled up when ``--steps`` chooses
fewer); ``matmul``, ``crossover``, ``train_16384``, ``train_65536``, ``levers`` and
``learning`` have none: they run on what is left and are skipped, saying why, when it is not
enough (in a full run of 540 s the shares leave them little: ``--steps`` runs them in a
second run).
After every step (and every test) ``OUT/gpu_check.json`` (every figure, the device,
versions, each step's status and seconds) and ``OUT/gpu_check.md`` (the tables, with the
command that made them) are rewritten, so a run cut short still leaves what it measured.
``--smoke`` runs the same steps at tiny sizes on the CPU, with an injected failing test and an
injected slow test (:mod:`scripts.gpu_check.injected_tests`) whose message and cap must reach
the report, so that a typo shows up in CI instead of on a GPU.
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

from ppo_jax.bench.report import fmt_num
from ppo_jax.config import LINALGS, PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ----------------------------------------------------------------------------------------------
# what is checked (edit here)
# ----------------------------------------------------------------------------------------------
# The GPU-relevant tests are those marked @pytest.mark.gpu in tests/ (GPU_MARK): the float32
# parity of each PPO component against TorchRL's fixtures, of the MJX env against Gymnasium's
# v4 and MuJoCo C, the program store across processes, the shipped programs (no host
# callback, one compilation, equal to train(key)). Left out on purpose (not marked): the x64
# parity tests (float64 is not what runs on a GPU), test_env_api's rolled-RK4 bit-equality with
# mjx.step (XLA fuses differently on a GPU: equal to rounding, not bit for bit),
# test_parallel's store test (needs 4 devices), the live TorchRL tests (the fixture tests
# compare the same components, without torchrl).
GPU_MARK = "gpu"
TESTS_DIR = "tests"
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
INJECTED = "scripts/gpu_check/injected_tests.py"
INJECT_ENV = {"GPU_CHECK_INJECT": "1"}

THRESHOLD = 9000.0
TINY = dict(hidden_sizes=(16, 16), num_epochs=2, init_stats_frames=100, eval_max_steps=50)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes of a check (:data:`GPU_PLAN`, or :data:`SMOKE_PLAN` for ``--smoke``)."""

    tests: tuple[str, ...]  # pytest's arguments (paths, node ids), selected by -m ``marker``
    marker: str
    test_cap_s: float  # the most seconds one test may take (then it is stopped: CAPPED)
    env_speed: tuple[int, ...]  # env counts of the env-speed rows, measured in this order
    env_speed_row_s: float  # timed seconds of each env-speed row (after a warm-up call)
    env_speed_chunk: int  # env steps of each env per timed call
    train: tuple[tuple[int, int, bool], ...]  # (envs, batches, warm run too) per training row
    order: tuple[str, ...]  # the steps, in the order run
    matmul_envs: int  # tf32 against highest at this env count
    brax_envs: int  # Brax's ppo.train against ppo_jax at this env count
    threshold: float
    threshold_config: dict[str, Any]  # PPOConfig fields of the preset_fast step
    threshold_label: str
    learning_tests: tuple[str, ...]
    learning_frames: int  # what the learning tests train (sizes their time estimate)
    overrides: dict[str, Any]  # PPOConfig fields changed in every training row
    shares: dict[str, float]  # a step's most, as a fraction of the budget (absent: what is left)
    xla_flags: str = ""  # added to XLA_FLAGS of the measuring subprocesses (not of pytest)
    # the ``crossover`` step: training rows on the host's CPU at these env counts (each one of
    # ``train``'s), against the GPU's rows at the same counts
    crossover_envs: tuple[int, ...] = ()
    # the ``levers`` step: (name, XLA flags added, the env's ``linalg``) measured on the env
    # step alone, at these env counts, each row a warm-up call and then calls for
    # ``lever_row_s`` seconds
    levers: tuple[tuple[str, str, str], ...] = ()
    lever_envs: tuple[int, ...] = ()
    lever_row_s: float = 2.0
    lever_guess_s: float = 60.0  # seconds one lever takes until one is measured
    # the ``graphs`` step: training rows at these env counts with :data:`GRAPHS` (the env's
    # linear algebra inline, loops in command buffers: a batch is one CUDA graph), cold,
    # against the default rows at the same counts
    graph_envs: tuple[int, ...] = ()
    # the ``trace`` step: at these env counts, the training row's config timed for
    # TRACE_TIMED batches, then ``trace_batches`` more under JAX's profiler
    trace_envs: tuple[int, ...] = ()
    trace_batches: int = 2
    trace_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # PPOConfig
    pytest_env: dict[str, str] = dataclasses.field(default_factory=dict)  # added for pytest
    # outcomes that some tests must have (the injected ones): node id -> outcome
    expected: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def linalg(self) -> str:
        """``PPOConfig.linalg`` of every row (``--linalg``: in ``overrides``)."""
        return self.overrides.get("linalg", "library")


# Levers on the latency of one env step (the ``levers`` step): the MJX step is many small
# kernels in loops (5 substeps x 4 RK4 stages, the constraint solver's iterations), so a
# narrow job waits on launches and on the loops' conditions. Each changes one thing against
# the defaults: an XLA flag ("+TYPE" adds a command type to XLA's default set), or the env's
# small linear algebra written out (``linalg="inline"``: no cuSOLVER or cuBLAS call left in
# the step, so XLA can keep its kernels, and with loops in command buffers the whole step, in
# CUDA graphs; docs/devices.md). Compiled for an H200 without a GPU, the pendulum's step at
# 1 env takes 848 launches from the host by default (with one solver iteration), 328
# inline, and 1 inline with loops in command buffers: the two inline levers
# come first. The defaults run first and again last, so their spread shows the noise. A
# choice is kept for users only where it measured faster.
LEVERS: tuple[tuple[str, str, str], ...] = (
    ("default", "", "library"),
    ("linalg inline", "", "inline"),
    ("linalg inline, loops in command buffers",
     "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL", "inline"),
    # JAX 0.11's XLA compiles every fusion on its own to pick its launch configuration:
    # compiled for an H200 without a GPU, that doubled the update's compile (27.5 s against
    # 13.9 s without it); on a GPU it also times them. The compile seconds show its share
    # of the cold start, the steps/s what it buys.
    ("fusion autotuner off", "--xla_gpu_experimental_enable_fusion_autotuner=false",
     "library"),
    ("command buffers off", "--xla_gpu_enable_command_buffer=", "library"),
    ("loops in command buffers", "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL",
     "library"),
    ("loops in command buffers, unrolled",
     "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL "
     "--xla_gpu_command_buffer_unroll_loops=true", "library"),
    ("command buffers from 1 op", "--xla_gpu_graph_min_graph_size=1", "library"),
    ("autotuning off", "--xla_gpu_autotune_level=0", "library"),
    ("default, again", "", "library"),
)
LEVER_GUESS_S = 60.0  # one lever before any is measured: a fresh process, two compiles
# One CUDA graph a batch (the ``graphs`` step): with the env's linear algebra inline and loops
# in command buffers, XLA compiles each training program to one command buffer (compiled for
# an H200 without a GPU: 1 launch from the host a batch, against 16,139 at 1,024 envs and
# 1,044,375 at 1 env with the defaults; docs/devices.md). Whether that is faster is for a GPU
# to say, on training, not on the env step alone.
GRAPHS: tuple[str, str] = ("--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL", "inline")
GPU_PLAN = Plan(
    tests=(TESTS_DIR,),
    marker=GPU_MARK,
    test_cap_s=60.0,
    env_speed=(4096, 1024, 64, 1),
    env_speed_row_s=3.0,
    env_speed_chunk=100,
    train=((4096, 6, True), (64, 8, False), (1, 2, False), (1024, 8, False),
           (16384, 4, False), (65536, 3, False)),
    order=("pytest", "train_4096", "brax", "env_speed", "train_64", "train_1", "train_1024",
           "graphs", "preset_fast", "trace", "matmul", "crossover", "train_16384",
           "train_65536", "levers", "learning"),
    matmul_envs=4096,
    brax_envs=4096,
    threshold=THRESHOLD,
    threshold_config=dict(PRESETS["fast"][1]),
    threshold_label="--preset fast",
    learning_tests=LEARNING_TESTS,
    learning_frames=LEARNING_FRAMES,
    overrides={},
    # Seconds of the 540-s budget, sized from the H200's first run (a cold start-up of ~57 s
    # at 1,024 envs, ~67 s of compile at 4,096, a warm start of 23 s, Brax's compile 33 s,
    # one env ~7 s a tutorial batch): pytest 81 (each test capped at 60 s); train_4096 92
    # (cold, then warm); Brax 49 (one cold run); env speed 27 (four compiles, 3-s rows);
    # train_64 32, train_1 43 (2 batches of ~7 s), train_1024 49 (one cold run each); one
    # CUDA graph a batch 65 (graphs: a cold row at 1,024 envs, the 1-env one if time is
    # left; it decides the GPU's defaults); --preset fast to 9,000 65 (its cold run took
    # 58.6 s to start and did not reach 9,000 in a 68-s share; the warm run follows it);
    # the trace 22 (a warm start of 4,096 envs from train_4096's store, 2 timed and 2 traced
    # batches; 1,024 envs if time is left). 0.97 of the budget; the install and probe take
    # the rest. tf32 (a choice with a known risk, not the default) gave its share to the
    # time to 9,000: it, the crossover, the curve's wide rows, the levers and learning run
    # on what is left, which --steps gives them in a run of their own. Until a GPU has run
    # this plan, these are estimates: a step cut short keeps what it measured.
    shares={"pytest": 0.15, "train_4096": 0.17, "brax": 0.09, "env_speed": 0.05,
            "train_64": 0.06, "train_1": 0.08, "train_1024": 0.09, "graphs": 0.12,
            "preset_fast": 0.12, "trace": 0.04},
    crossover_envs=(1, 64, 1024),
    trace_envs=(4096, 1024),
    levers=LEVERS,
    lever_envs=(1, 4096),
    lever_row_s=3.0,
    lever_guess_s=LEVER_GUESS_S,
    graph_envs=(1024, 1),
)
SMOKE_PLAN = Plan(
    # the injected tests first: the slow one is stopped and pytest starts again on the rest
    tests=(f"{INJECTED}::test_injected_failure", f"{INJECTED}::test_injected_slow",
           "tests/test_torchrl_fixtures.py::test_fixture_networks"),
    marker=GPU_MARK,
    test_cap_s=10.0,
    env_speed=(4,),  # one env count: the smoke checks the plumbing
    env_speed_row_s=0.5,
    env_speed_chunk=20,
    train=((4, 3, True),),
    order=("pytest", "train_4", "graphs", "brax", "env_speed", "preset_fast", "trace",
           "matmul", "crossover", "levers", "learning"),
    matmul_envs=4,
    brax_envs=4,
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
    crossover_envs=(4,),
    trace_envs=(4,),
    trace_batches=1,
    # 10 env steps a batch: a CPU's trace records every op XLA runs (the plumbing only)
    trace_overrides=dict(frames_per_batch=40, minibatch_size=20),
    # the defaults twice and one lever (linalg inline): the plumbing (every lever's flags are
    # parsed by tests/test_gpu_check.py)
    levers=(LEVERS[0], LEVERS[1], LEVERS[-1]),
    lever_envs=(4,),
    lever_row_s=0.3,
    lever_guess_s=15.0,
    graph_envs=(4,),
    pytest_env=INJECT_ENV,
    expected={f"{INJECTED}::test_injected_failure": "FAILED",
              f"{INJECTED}::test_injected_slow": "CAPPED"},
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


def typed_path(path: str) -> str:
    """``path`` as the user typed it: relative to where the command ran (scripts/gpu_check.sh
    runs from the repo root and says where it was started in ``GPU_CHECK_CWD``)."""
    return os.path.abspath(os.path.join(os.environ.get("GPU_CHECK_CWD", ""), path))


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

    def __init__(self, args: argparse.Namespace, argv: list[str], plan: Plan,
                 chosen: tuple[str, ...] | None = None):
        self.args, self.plan = args, plan
        self.chosen = plan.order if chosen is None else chosen  # the steps to run, in order
        # relative to where the command was typed (scripts/gpu_check.sh runs from the root)
        self.out = typed_path(args.out)
        self.budget = Budget(args.budget_s, _start_time())
        self.steps: list[Step] = []
        self.meta: dict[str, Any] = {
            "command": command_line(argv), "smoke": args.smoke, "budget_s": args.budget_s,
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "plan": dataclasses.asdict(plan), "steps_chosen": list(self.chosen),
            "test_cap_s": self.test_cap_s(), "environment": _env_summary(),
        }
        self.costs: dict[str, float] = {}  # measured walls: "cold", "warm"
        self.work = tempfile.mkdtemp(prefix="ppo_jax_gpu_check_")
        os.makedirs(self.out, exist_ok=True)
        self._log = open(os.path.join(self.out, "gpu_check.log"), "w")
        self.on_gpu = False  # set from the probe
        self.earlier: dict[str, Any] | None = None  # --gpu-rows: an earlier report
        self.xla_flags = os.environ.get("XLA_FLAGS")  # as given (the plan adds to it)
        if plan.xla_flags:
            os.environ["XLA_FLAGS"] = f"{self.xla_flags or ''} {plan.xla_flags}".strip()

    def test_cap_s(self) -> float:
        """The most seconds one test may take: ``--test-cap-s``, else the plan's."""
        cap = getattr(self.args, "test_cap_s", None)
        return self.plan.test_cap_s if cap is None else cap

    def record_cost(self, what: str, seconds: float) -> None:
        """Keep the longest wall of a ``what`` run (``"cold"``, ``"warm"``, ...) so far: what
        the next such run is expected to take."""
        self.costs[what] = max(self.costs.get(what, 0.0), seconds)

    def share_s(self, name: str) -> float | None:
        """Step ``name``'s most seconds: its share of the budget, the shares of the chosen
        steps scaled to add up to what the plan's do (None: no share, what is left)."""
        share = self.plan.shares.get(name)
        if share is None:
            return None
        planned = sum(self.plan.shares.values())
        chosen = sum(self.plan.shares.get(n, 0.0) for n in self.chosen)
        return share * (planned / chosen if chosen else 1.0) * self.budget.total_s

    def allow(self, name: str) -> float:
        """Seconds step ``name`` may take now: what is left (less the reserve), at most its
        share."""
        share = self.share_s(name)
        return self.budget.allow(None if share is None else share / self.budget.total_s)

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


# lines a failed subprocess may end with that are not its error (JAX's traceback note)
_NOT_THE_ERROR = ("For simplicity, JAX has removed", "----", "The above exception",
                  "Set JAX_TRACEBACK_FILTERING")


def one_line(e: Exception) -> str:
    """``e`` in one line: a subprocess's failure as its exit status and its last line."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, RuntimeError) and msg.startswith("exit ") and " | " in msg:
        parts = [p.strip() for p in msg.split(":", 1)[1].split(" | ")]
        told = [p for p in parts if p and not p.startswith(_NOT_THE_ERROR)] or parts
        msg = msg.split(":", 1)[0] + ": " + told[-1]
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
# Outcomes, worst first: CAPPED (stopped at its cap), CRASHED (pytest died during it), CUT OFF
# (stopped when the step's time ran out), then pytest's own; "not run" and "missing" last.
_WORST = ("CAPPED", "CRASHED", "CUT OFF", "ERROR", "FAILED", "XPASS", "SKIPPED", "XFAIL",
          "PASSED")
_GOOD = ("PASSED", "SKIPPED", "XFAIL")
POLL_S = 0.25


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


def marked_files(paths: tuple[str, ...], marker: str = GPU_MARK, root: str = ROOT
                 ) -> tuple[str, ...]:
    """``paths`` with each directory replaced by its test files (``test_*.py``) whose text
    names the mark (``mark.<marker>``): pytest then imports only the modules that can hold
    a marked test (a module that fails to import elsewhere in the suite is no concern of the
    check, and collecting the whole suite takes seconds)."""
    out: list[str] = []
    for path in paths:
        full = os.path.join(root, path.partition("::")[0])
        if not os.path.isdir(full):
            out.append(path)
            continue
        for dirpath, dirnames, files in os.walk(full):
            dirnames.sort()
            for name in sorted(files):
                if not (name.startswith("test_") and name.endswith(".py")):
                    continue
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    if f"mark.{marker}" in f.read():
                        out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return tuple(out)


def marked_tests(paths: tuple[str, ...] = (TESTS_DIR,), marker: str = GPU_MARK,
                 env: dict[str, str] | None = None, timeout: float = 600.0) -> list[str]:
    """The node ids pytest selects with ``-m marker`` under ``paths`` (``--collect-only``, in
    a subprocess); raises RuntimeError when pytest cannot collect them."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
           "-m", marker, *paths]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode not in (0, 5):  # 5: nothing selected
        tail = (p.stdout + p.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"pytest --collect-only exited {p.returncode}: " + " | ".join(tail))
    return [line.strip() for line in p.stdout.splitlines() if "::" in line
            and not line.startswith(" ")]


def _merge(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    """One phase report of the plugin into a test's entry: its outcome (the worst of its
    phases, but the first failure stays: a teardown error after a failed call leaves the
    call's FAILED and message), seconds (summed), and the message of the phase that made
    the outcome."""
    when, outcome, xfail = ev["when"], ev["outcome"], ev.get("wasxfail")
    if outcome == "passed":
        new = ("XPASS" if xfail else "PASSED") if when == "call" else None
    elif outcome == "skipped":
        new = "XFAIL" if xfail else "SKIPPED"
    else:
        new = "FAILED" if when == "call" else "ERROR"
    entry["seconds"] = round(entry.get("seconds", 0.0) + float(ev.get("duration") or 0.0), 3)
    if new is None:
        return
    old = entry.get("outcome")
    if old is None or (old not in ("FAILED", "ERROR")
                       and _WORST.index(new) < _WORST.index(old)):
        entry.update(outcome=new, phase=when, message=ev.get("message"),
                     longrepr=ev.get("longrepr"))


class EventReader:
    """The plugin's JSON lines, read as they are written (a partly written last line waits)."""

    def __init__(self, path: str):
        self.path, self.offset = path, 0

    def new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def run_tests(tests: tuple[str, ...], marker: str | None, *, log_path: str, events_path: str,
              env: dict[str, str], allow_s: float, cap_s: float,
              on_change: Callable[[dict[str, Any]], None] = lambda r: None,
              log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Run pytest on ``tests`` (``-m marker`` unless None) with the event plugin, watching its
    events: a test past ``cap_s`` is stopped (the pytest process group killed) and recorded
    as CAPPED, one during which pytest died as CRASHED, and pytest starts again on the
    selected tests not yet run; at ``allow_s`` the running test is CUT OFF and the rest are
    not run. ``on_change(result)`` after each test. Returns ``{"tests": {node id: entry},
    "selected": node ids in run order, "runs": one record per pytest started}``, each entry
    ``{"outcome", "seconds", "message", "longrepr", ...}``."""
    deadline = time.monotonic() + allow_s
    results: dict[str, dict[str, Any]] = {}
    selected: list[str] | None = None
    runs: list[dict[str, Any]] = []
    for path in (log_path, events_path):
        open(path, "w").close()
    env = dict(env, GPU_CHECK_EVENTS=events_path)
    targets = list(tests)
    reader = EventReader(events_path)

    def result() -> dict[str, Any]:
        order = list(selected or [])
        order += [n for n in results if n not in order]
        return {"tests": {n: results[n] for n in order if n in results},
                "selected": selected, "runs": runs}

    while True:
        cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
               "-p", "scripts.gpu_check.plugin", "--continue-on-collection-errors",
               *(["-m", marker] if marker else []), *targets]
        with open(log_path, "a") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        current: tuple[str, float] | None = None
        stopped, before = None, len(results)
        try:
            while True:
                for ev in reader.new():
                    kind, node = ev.get("event"), ev.get("nodeid")
                    if kind == "collected" and selected is None:
                        selected = list(ev["nodeids"])
                    elif kind == "collect_error":
                        results[node or "(collection)"] = {
                            "outcome": "ERROR", "phase": "collect", "seconds": 0.0,
                            "message": ev.get("message"), "longrepr": ev.get("longrepr")}
                        on_change(result())
                    elif kind == "start":
                        current = (node, time.monotonic())
                    elif kind == "report":
                        _merge(results.setdefault(node, {}), ev)
                    elif kind == "finish":
                        current = None
                        entry = results.setdefault(node, {"outcome": "PASSED", "seconds": 0.0})
                        entry.setdefault("outcome", "PASSED")
                        log(f"  {node}: {entry['outcome']} ({entry.get('seconds', 0):.1f} s)")
                        on_change(result())
                code = proc.poll()
                if code is not None:
                    break
                now = time.monotonic()
                if current and now - current[1] > cap_s:
                    stopped = "capped"
                elif now > deadline:
                    stopped = "cut off"
                if stopped:
                    _kill_group(proc)
                    code = proc.returncode
                    break
                time.sleep(POLL_S)
        except BaseException:
            _kill_group(proc)
            raise
        for ev in reader.new():  # what was written as it ended
            if ev.get("event") == "report":
                _merge(results.setdefault(ev["nodeid"], {}), ev)
            elif ev.get("event") == "finish" and current and ev.get("nodeid") == current[0]:
                current = None
        if current is not None:
            node, t = current
            entry = results.setdefault(node, {})
            took = round(time.monotonic() - t, 1)
            if stopped == "capped":
                entry.update(outcome="CAPPED", seconds=took, cap_s=cap_s,
                             message=f"stopped at its cap of {cap_s:g} s")
            elif stopped == "cut off":
                entry.update(outcome="CUT OFF", seconds=took,
                             message=f"stopped after {took:g} s: the step's "
                                     f"{allow_s:.0f} s ran out")
            else:
                entry.update(outcome="CRASHED", seconds=took,
                             message=f"pytest ended (exit {code}) during this test")
            log(f"  {node}: {entry['outcome']} ({entry['message']})")
            with open(log_path, "a") as out:
                out.write(f"\n[gpu_check] {node}: {entry['outcome']}: {entry['message']}\n")
        runs.append({"targets": len(targets), "exit_status": code, "stopped": stopped,
                     "recorded": len(results) - before})
        on_change(result())
        remaining = [n for n in (selected or []) if n not in results]
        if stopped == "cut off" or not remaining or len(results) == before:
            break
        targets = remaining
        log(f"  pytest again on the {len(remaining)} test(s) not yet run")
    for n in selected or []:
        results.setdefault(n, {"outcome": "not run", "seconds": 0.0})
    for entry in results.values():  # a phase reported, then pytest gone without a word
        if "outcome" not in entry:
            entry.update(outcome="CRASHED", message="pytest ended during this test")
    return result()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def pytest_step(check: Check, step: Step, tests: tuple[str, ...], marker: str | None,
                name: str, allow_s: float, cap_s: float | None = None,
                expected: dict[str, str] | None = None) -> None:
    """pytest on ``tests`` (node ids or paths; ``-m marker``), output in ``OUT/<name>.log``,
    its events in ``OUT/<name>_events.jsonl``; each test's outcome, seconds and (failed)
    message in ``step.result``, the report rewritten after each test. A test with an outcome
    other than its ``expected`` one (the plan's injected tests; else PASSED, SKIPPED, XFAIL),
    or an expected one missing: failed; any skipped: partial."""
    from scripts.gpu_check import worker as gpu_worker

    env = gpu_worker.child_env(PYTEST_ENV_GPU if check.on_gpu else PYTEST_ENV_CPU)
    env.pop("XLA_FLAGS", None)  # the tests' own flags, not the measuring runs' (plan.xla_flags)
    if check.xla_flags is not None:
        env["XLA_FLAGS"] = check.xla_flags
    env.update(check.plan.pytest_env)
    missing = missing_tests(tuple(t for t in tests if "::" in t or t.endswith(".py")))
    present = tuple(t for t in tests if t not in missing)
    expected = expected or {}
    cap = allow_s if cap_s is None else cap_s
    step.result = {"tests": {}, "counts": {}, "log": f"{name}.log",
                   "events": f"{name}_events.jsonl", "cap_s": cap, "marker": marker,
                   "env": {k: env.get(k) for k in PYTEST_ENV_GPU}}

    def publish(res: dict[str, Any]) -> None:
        details = dict(res["tests"])
        for t in missing:
            details[t] = {"outcome": "missing", "seconds": 0.0}
        for t, want in expected.items():
            if t in details:
                details[t] = dict(details[t], expected=want)
        step.result.update(tests={n: d.get("outcome") for n, d in details.items()},
                           details=details, runs=res["runs"])
        outs = [d.get("outcome") for d in details.values()]
        step.result["counts"] = {k: outs.count(k) for k in sorted(set(outs), key=str)}
        check.write()

    res = {"tests": {}, "runs": [], "selected": []}
    if marker:
        present = marked_files(present, marker)
    if present:
        res = run_tests(present, marker, log_path=os.path.join(check.out, f"{name}.log"),
                        events_path=os.path.join(check.out, f"{name}_events.jsonl"),
                        env=env, allow_s=allow_s, cap_s=cap, on_change=publish, log=check.log)
    publish(res)
    details = step.result["details"]
    if not details:
        raise RuntimeError(f"no test selected (see {name}.log)")
    bad = {}
    for t, d in details.items():
        want = expected.get(t)
        if (d["outcome"] != want) if want else (d["outcome"] not in _GOOD):
            bad[t] = d["outcome"] + (f" (expected {want})" if want else "")
    for t, want in expected.items():
        if t not in details:
            bad[t] = f"not seen (expected {want})"
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(details)} test(s) not as they should be: "
                           + ", ".join(f"{t.split('::')[-1]} {o}" for t, o in bad.items()))
    skipped = [t for t, d in details.items() if d["outcome"] == "SKIPPED"]
    if skipped:
        step.status, step.reason = "partial", f"{len(skipped)} skipped (see {name}.log)"


# ----------------------------------------------------------------------------------------------
# the GPU table
# ----------------------------------------------------------------------------------------------
def run_env_speed(plan: Plan, envs: tuple[int, ...], row_s: float, seconds: float,
                  env: dict[str, str] | None = None, linalg: str | None = None
                  ) -> dict[str, Any]:
    """The worker's env-speed rows at ``envs`` (one subprocess, ``env``: variables set for
    it; ``linalg``: the env's, None: the plan's), each a warm-up call and then calls for
    about ``row_s`` seconds, within ``seconds``; a count it did not reach (cut off) is a row
    saying so."""
    from scripts.gpu_check import worker as gpu_worker

    spec = {"kind": "env_speed", "envs": list(envs), "row_s": row_s,
            "chunk": plan.env_speed_chunk, "linalg": linalg or plan.linalg,
            "deadline_s": max(5.0, seconds - min(10.0, 0.1 * seconds))}
    result = gpu_worker.call(spec, timeout=seconds, env=env)
    done = {r["envs"]: r for r in result["rows"]}
    result["rows"] = [done.get(n) or {"envs": n, "skipped": f"cut off at {seconds:.0f} s"}
                      for n in envs]
    return result


def env_speed_step(check: Check, step: Step, allow: float) -> None:
    """Env steps/s of the MJX env alone at the plan's env counts (one subprocess), each row
    a warm-up call and then calls for about ``plan.env_speed_row_s`` seconds."""
    if allow < 10:
        raise Skip(f"{allow:.0f} s left")
    plan = check.plan
    step.result = dict(run_env_speed(plan, plan.env_speed, plan.env_speed_row_s, allow),
                       linalg=plan.linalg)
    skipped = [r for r in step.result["rows"] if r.get("skipped")]
    if skipped:
        step.status = "partial"
        step.reason = "skipped " + ", ".join(f"{r['envs']} envs ({r['skipped']})" for r in skipped)


def added_xla_flags(flags: str) -> str:
    """``XLA_FLAGS`` as the check was given them, with ``flags`` after them."""
    return f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def levers_step(check: Check, step: Step, allow: float) -> None:
    """Env steps/s of the MJX env alone at ``plan.lever_envs`` under each of ``plan.levers``
    (XLA flags added to those the check was given), in order, a fresh process each. A lever
    runs when the time left covers what one took so far (``plan.lever_guess_s`` before the
    first); after one does not, the rest are skipped. Each row gets its ratio to the first
    lever's (XLA's defaults)."""
    plan = check.plan
    end = time.monotonic() + allow
    given = os.environ.get("XLA_FLAGS", "")
    step.result = {"envs": list(plan.lever_envs), "given_xla_flags": given, "levers": []}
    walls: list[float] = []  # seconds of each lever that measured
    short = None
    for name, flags, linalg in plan.levers:
        need = max(walls, default=plan.lever_guess_s)
        lever = {"name": name, "xla_flags": flags, "linalg": linalg}
        step.result["levers"].append(lever)
        left = min(end - time.monotonic(), check.budget.allow())
        short = short or (f"needs ~{need:.0f} s, {left:.0f} s left" if left < need else None)
        if short:
            lever["skipped"] = short
            continue
        cap = min(left, 3.0 * need)  # one lever that hangs leaves time for the others
        t = time.perf_counter()
        try:
            got = run_env_speed(plan, plan.lever_envs, plan.lever_row_s, cap,
                                env={"XLA_FLAGS": added_xla_flags(flags)}, linalg=linalg)
        except RuntimeError as e:
            lever["skipped" if "timed out" in str(e) else "error"] = one_line(e)
            continue
        walls.append(time.perf_counter() - t)
        lever["rows"] = got["rows"]
        if got.get("timed_out"):
            lever["timed_out"] = True
        check.write()
    base = {r["envs"]: r.get("steps_per_s") for r in step.result["levers"][0].get("rows", [])}
    for lever in step.result["levers"]:
        for r in lever.get("rows", []):
            if r.get("steps_per_s") and base.get(r["envs"]):
                r["x_default"] = r["steps_per_s"] / base[r["envs"]]
    if not any("rows" in lv for lv in step.result["levers"]):
        errors = [f"{lv['name']}: {lv['error']}" for lv in step.result["levers"]
                  if lv.get("error")]
        if errors:  # none measured, and not for lack of time alone
            raise RuntimeError("; ".join(errors))
        raise Skip(short or next(lv["skipped"] for lv in step.result["levers"]))
    missed = [lv["name"] for lv in step.result["levers"]
              if "rows" not in lv or any(not r.get("steps_per_s") for r in lv["rows"])]
    if missed:
        step.status, step.reason = "partial", "not measured in full: " + ", ".join(missed)


def bench_run(check: Check, cfg, cache: str, timeout: float,
              env: dict[str, str] | None = None, extra: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """One run of the benchmark's ppo_jax worker (a fresh process, one device; ``env``:
    variables set for it; ``extra``: added to the worker's spec, e.g. ``stop`` and
    ``trace``) with the compile cache ``cache``: its figures as the benchmark summarizes
    them, and where its start-up went (:func:`startup_breakdown`)."""
    from ppo_jax.bench import driver

    spec = {"kind": "ppo_jax", "compile_cache": cache, "matmul_precision": cfg.matmul_precision,
            "profile": False, "config": cfg.to_dict(), "devices": 1, **(extra or {})}
    t = time.perf_counter()
    raw = driver.run_worker(spec, max(1.0, timeout), env=env)
    wall = time.perf_counter() - t
    out = driver.summarize_run(raw, None)
    out.update(wall_s=wall, compiled_from_cache=raw.get("compiled_from_cache"),
               compile=raw.get("compile"), device=raw.get("device"),
               batch_marks=raw.get("marks"), trace=raw.get("trace"),
               startup_phases=startup_breakdown(raw.get("startup"), out["startup_s"]))
    return out


def _host_stats(phases: dict[str, Any]) -> str:
    """`` (of which stats on the host x.x)`` where the statistics ran on the host's CPU."""
    s = phases.get("host_stats_s")
    return "" if s is None else f" (of which stats on the host's CPU {s:.1f})"


def startup_breakdown(startup: dict[str, Any] | None, startup_s: float) -> dict[str, Any] | None:
    """The worker's start-up record (see :mod:`ppo_jax.bench.worker_ppo_jax`) as phases that
    add up to ``startup_s``: backend init, env build, programs, the init program's run (the
    normalization statistics), the rest of prepare (devices, layout, keys), the first batch
    beyond its steady-rate time, and what is left;
    with the XLA compilations that are not the job's programs (``other_compiles``)."""
    if not startup:
        return None
    phases = {"backend_init_s": startup.get("backend_init_s") or 0.0,
              "env_build_s": startup.get("env_build_s") or 0.0,
              "programs_s": startup.get("programs_s") or 0.0,
              "init_run_s": startup.get("init_run_s") or 0.0,
              "prepare_other_s": startup.get("prepare_other_s") or 0.0,
              "first_batch_extra_s": startup_s - (startup.get("prepared_s") or 0.0)}
    xla = startup.get("xla_compiles") or {}
    prepared = startup.get("prepared_s") or 0.0
    other = [c for c in xla.get("named", []) if c.get("program") is None]
    return dict(phases, rest_s=startup_s - sum(phases.values()),
                host_stats_s=startup.get("host_stats_s"),
                programs=startup.get("programs") or {},
                other_compiles=sorted(other, key=lambda c: -c["seconds"]),
                other_compiles_before_first_batch_s=round(sum(
                    c["seconds"] for c in other if c["end_s"] <= prepared), 3),
                small_compiles=xla.get("small"))


def _fresh_cache(check: Check, name: str) -> str:
    path = os.path.join(check.work, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def _estimate(check: Check, what: str) -> float:
    guess = COLD_GUESS_S if what == "cold" else WARM_GUESS_S
    return check.costs.get(what, guess)


def _fits(check: Check, step: Step, need: float) -> None:
    """Skip ``step`` unless the ``need`` seconds estimated for it are left (a step with a
    share of the budget: at most its share, the seconds the plan gives it)."""
    share, left = check.share_s(step.name), check.budget.allow()
    want = need if share is None else min(need, share)
    if want > left or left < 1.0:
        raise Skip(f"needs ~{want:.0f} s, {left:.0f} s left")


def train_step(check: Check, step: Step, num_envs: int, batches: int, warm: bool,
               allow: float) -> None:
    """Training frames/s at ``num_envs`` envs: a cold run (fresh cache), then (``warm``) a
    warm one with the cache the cold one filled, within ``allow`` seconds."""
    from ppo_jax.bench.configs import describe_config

    end = time.monotonic() + allow
    cfg = row_config(num_envs, batches, check.plan)
    step.result = {"envs": num_envs, "batches": batches, "frames": cfg.total_frames,
                   "config": cfg.to_dict(), "description": describe_config("ppo_jax",
                                                                           cfg.to_dict())}
    _fits(check, step, _estimate(check, "cold") + (_estimate(check, "warm") if warm else 0.0))
    cache = _fresh_cache(check, f"cache_train_{num_envs}")
    cold = bench_run(check, cfg, cache, min(end - time.monotonic(), check.budget.allow()))
    check.record_cost("cold", cold["wall_s"])
    step.result["cold"] = cold
    check.write()
    if not warm:
        return
    left = min(end - time.monotonic(), check.budget.allow())
    if left < 5.0:
        step.status, step.reason = "partial", f"no time left for the warm run ({left:.0f} s)"
        return
    warm_run = bench_run(check, cfg, cache, left)
    check.record_cost("warm", warm_run["wall_s"])
    step.result["warm"] = warm_run
    if not warm_run.get("compiled_from_cache"):
        step.status, step.reason = "partial", "the warm run did not load its programs"


def threshold_step(check: Check, step: Step, allow: float) -> None:
    """Wall time, from process start, to the first evaluation >= the threshold (one seed),
    measured by the benchmark's worker as ``--to-threshold`` measures it: cold (a fresh
    cache), then warm (a second process with the cache the first one filled) on the time
    left, both within ``allow``; not reached, or no warm run, is partial."""
    from ppo_jax.bench.configs import describe_config

    end = time.monotonic() + allow
    cfg, goal = threshold_config(check.plan), check.plan.threshold
    step.result = {"label": check.plan.threshold_label, "config": cfg.to_dict(),
                   "description": describe_config("ppo_jax", cfg.to_dict()), "threshold": goal,
                   "reached": False}
    if allow < _estimate(check, "cold"):
        raise Skip(f"needs more than ~{_estimate(check, 'cold'):.0f} s, {allow:.0f} s left")
    cache = _fresh_cache(check, "cache_threshold")
    cold = _to_threshold(cfg, goal, cache, allow)
    if "fps" not in cold:
        step.status = "partial"
        step.reason = f"not reached within {allow:.0f} s ({cold['stopped']})"
        return
    step.result.update(cold)
    check.write()
    missing = [] if cold["reached"] else [f"cold: not reached within {cold['process_s']:.0f} s "
                                          f"({cold['stopped']})"]
    # the warm run repeats what the cold one did besides preparing its programs, then loads
    # them (a warm start), and stops 10 s before its time is up
    need = (cold["process_s"] - (cold.get("compile_s") or 0.0) + _estimate(check, "warm")
            + 10.0)
    left = end - time.monotonic()
    if left < need:
        missing.append(f"no time left for the warm run (needs ~{need:.0f} s, {left:.0f} s "
                       "left)")
    else:
        try:
            warm = _to_threshold(cfg, goal, cache, left)
        except RuntimeError as e:  # the cold row stands
            warm = {"reached": False, "stopped": one_line(e)}
        step.result["warm"] = warm
        if not warm["reached"]:
            missing.append(f"warm: not reached ({warm['stopped']})")
        elif not warm.get("compiled_from_cache"):
            missing.append("the warm run did not load its programs")
    if missing:
        step.status, step.reason = "partial", "; ".join(missing)


def _to_threshold(cfg, goal: float, cache: str, allow: float) -> dict[str, Any]:
    """One threshold run (:func:`scripts.gpu_check.worker.threshold`) with the compile cache
    ``cache``, within ``allow`` seconds: the benchmark's summary of it with ``reached``,
    ``stopped``, ``process_s`` and how its programs were obtained; a run the timeout cut
    off: ``{"reached": False, "stopped": ...}``."""
    from ppo_jax.bench import driver
    from scripts.gpu_check import worker as gpu_worker

    spec = {"kind": "threshold", "config": cfg.to_dict(), "threshold": goal, "devices": 1,
            "compile_cache": cache, "matmul_precision": cfg.matmul_precision,
            "deadline_s": max(5.0, allow - 10.0)}
    try:
        raw = gpu_worker.call(spec, timeout=allow)
    except RuntimeError as e:
        if "timed out" not in str(e):
            raise
        return {"reached": False, "stopped": str(e)}
    if len(raw["marks"]) < 2:
        raise RuntimeError(f"stopped after {len(raw['marks'])} batch(es): {raw['stopped']}")
    summary = driver.summarize_run(raw, goal)
    return dict(summary, reached=summary["threshold_s"] is not None, evals=raw["evals"],
                stopped=raw["stopped"], process_s=raw["process_s"],
                compiled_from_cache=raw.get("compiled_from_cache"), compile=raw.get("compile"))


def _row_fps(check: Check, num_envs: int) -> float | None:
    """The cold training frames/s of the ``train_<num_envs>`` row, if it was measured."""
    row = check.step(f"train_{num_envs}")
    return ((row.result or {}).get("cold") or {}).get("fps") if row else None


TRACE_TIMED = 2  # batches a traced run times first (a run's figures need two)


def trace_step(check: Check, step: Step, allow: float) -> None:
    """Where a batch's time goes, at each of ``plan.trace_envs``: a run of that training
    row's config (from the row's program store where the row ran: a warm start) that times
    :data:`TRACE_TIMED` batches, then runs ``plan.trace_batches`` more under JAX's profiler
    (:mod:`ppo_jax.bench.trace`): how busy the device was, its kernels a batch, and the
    kernels that take the time."""
    from ppo_jax.bench.configs import describe_config

    end = time.monotonic() + allow
    plan, rows = check.plan, []
    step.result = {"rows": rows, "batches": plan.trace_batches}
    for n in plan.trace_envs:
        row: dict[str, Any] = {"envs": n}
        rows.append(row)
        cache = os.path.join(check.work, f"cache_train_{n}")
        # the row's store serves this run's programs unless the trace changes the config
        warm = not plan.trace_overrides and os.path.isdir(cache) and bool(os.listdir(cache))
        need = _estimate(check, "warm" if warm else "cold")
        left = min(end - time.monotonic(), check.budget.allow())
        if left < need:
            row["skipped"] = f"needs ~{need:.0f} s, {left:.0f} s left"
            continue
        if not warm:
            cache = _fresh_cache(check, f"cache_trace_{n}")
        cfg = row_config(n, TRACE_TIMED + plan.trace_batches, plan)
        if plan.trace_overrides:
            fields = dict(plan.trace_overrides)
            fields["total_frames"] = fields.get("frames_per_batch", cfg.frames_per_batch) * (
                TRACE_TIMED + plan.trace_batches)
            cfg = cfg.replace(**fields)
        where = _fresh_cache(check, f"trace_{n}")
        try:
            run = bench_run(check, cfg, cache, left, extra={
                "stop": TRACE_TIMED, "trace": {"batches": plan.trace_batches, "dir": where}})
        except Exception as e:  # noqa: BLE001  (recorded; the other counts still run)
            row["skipped" if "timed out" in str(e) else "error"] = one_line(e)
            continue
        row.update(warm_start=bool(run.get("compiled_from_cache")), fps=run["fps"],
                   startup_s=run["startup_s"],
                   description=describe_config("ppo_jax", cfg.to_dict()),
                   trace=run.get("trace"))
        check.write()
    traced = [r for r in rows if (r.get("trace") or {}).get("summary")]
    if not traced:
        reasons = "; ".join(f"{_envs(r['envs'])}: {_why_untraced(r)}" for r in rows)
        if any(r.get("error") or r.get("trace") for r in rows):
            raise RuntimeError(f"no trace: {reasons or 'no env counts to trace'}")
        raise Skip(f"no trace: {reasons or 'no env counts to trace'}")
    failed = [r for r in rows if r.get("error") or (r.get("trace") or {}).get("error")]
    if failed:  # a row left out for lack of time is said in the report, not a partial step
        step.status, step.reason = "partial", "; ".join(
            f"{_envs(r['envs'])}: {_why_untraced(r)}" for r in failed)


def _why_untraced(row: dict[str, Any]) -> str:
    """Why a ``trace`` row has no trace (or only an error beside it)."""
    return str(row.get("skipped") or row.get("error") or (row.get("trace") or {}).get("error"))


def read_gpu_rows(path: str) -> dict[str, Any]:
    """``--gpu-rows``: the report of an earlier check; raises CLIError (one line) when it
    cannot be read or is not a check's report."""
    from ppo_jax.cli.common import CLIError

    try:
        with open(path) as f:
            payload = json.load(f)
    except OSError as e:
        raise CLIError(f"--gpu-rows: cannot read {path}: {e.strerror or e}")
    except ValueError as e:
        raise CLIError(f"--gpu-rows: {path} is not JSON: {e}")
    if not (isinstance(payload, dict) and isinstance(payload.get("steps"), list)
            and all(isinstance(x, dict) for x in payload["steps"])
            and "started_utc" in payload):
        raise CLIError(f"--gpu-rows: {path} is not a GPU check's gpu_check.json")
    return payload


def _other_device(earlier: dict[str, Any], probed: dict[str, Any], smoke: bool,
                  xla_flags: str | None) -> str | None:
    """Why the rows of ``earlier`` cannot stand beside this run's (None: they can): another
    backend, devices or JAX, a smoke run beside a full one, or other ``XLA_FLAGS`` (as each
    check was given them)."""
    then = next((s.get("result") for s in earlier["steps"] if s.get("name") == "probe"),
                None) or {}
    for what, a, b in (("backend", then.get("backend"), probed.get("backend")),
                       ("devices", then.get("devices"), probed.get("devices")),
                       ("JAX", (then.get("versions") or {}).get("jax"),
                        (probed.get("versions") or {}).get("jax")),
                       ("smoke", bool(earlier.get("smoke")), smoke),
                       ("XLA_FLAGS", (earlier.get("environment") or {}).get("XLA_FLAGS"),
                        xla_flags)):
        if a != b:
            return f"{what} {a} there, {b} here"
    return None


def adopt_gpu_rows(check: Check, probed: dict[str, Any]) -> None:
    """Record ``--gpu-rows`` in the report, and whether its rows may be used here."""
    if check.earlier is not None:
        check.meta["gpu_rows"] = {"file": check.args.gpu_rows,
                                  "started_utc": check.earlier.get("started_utc"),
                                  "refused": _other_device(check.earlier, probed,
                                                           bool(check.args.smoke),
                                                           check.xla_flags)}


def _gpu_row(check: Check, num_envs: int, cfg) -> tuple[float | None, str]:
    """The GPU's cold training frames/s at ``num_envs`` and where it comes from (this run's
    ``train_<n>`` row, else ``--gpu-rows``'s when it ran on this device with ``cfg``), or
    None and why not."""
    fps = _row_fps(check, num_envs)
    if fps is not None:
        return fps, "this run"
    missing = f"train_{num_envs} not measured"
    lent = check.meta.get("gpu_rows")
    if check.earlier is None or lent is None:
        return None, missing
    if lent["refused"]:
        return None, f"{missing} (--gpu-rows not used: {lent['refused']})"
    row = next((s for s in check.earlier["steps"] if s.get("name") == f"train_{num_envs}"),
               None)
    res = (row or {}).get("result") or {}
    fps = (res.get("cold") or {}).get("fps")
    if not fps:
        return None, f"{missing}, here or in --gpu-rows"
    if _config_of(res.get("config")) != cfg:
        return None, f"{missing} (--gpu-rows has it with another config)"
    return fps, f"--gpu-rows ({check.earlier['started_utc']})"


def _config_of(d: dict[str, Any] | None):
    """The PPOConfig a report's row recorded (a field it predates takes its default), or
    None where it records none or one this version cannot read."""
    from ppo_jax.config import PPOConfig

    try:
        return PPOConfig.from_dict(d) if d else None
    except (TypeError, ValueError):
        return None


def matmul_step(check: Check, step: Step, allow: float) -> None:
    """Training frames/s with ``--matmul-precision tf32`` at the plan's env count (fresh
    cache), against the ``highest`` row at that count."""
    n = check.plan.matmul_envs
    _fits(check, step, _estimate(check, "cold"))
    cfg = row_config(n, _batches(check.plan, n), check.plan, matmul_precision="tf32")
    tf32 = bench_run(check, cfg, _fresh_cache(check, "cache_tf32"),
                     min(allow, check.budget.allow()))
    highest = _row_fps(check, n)
    step.result = {"envs": n, "tf32": tf32, "highest_fps": highest,
                   "tf32_over_highest": tf32["fps"] / highest if highest else None}
    if highest is None:
        step.status, step.reason = "partial", f"no highest-precision figure at {n} envs"


def graphs_step(check: Check, step: Step, allow: float) -> None:
    """Training frames/s with one CUDA graph a batch (:data:`GRAPHS`: loops in command
    buffers, added to the XLA flags the check was given, and ``linalg="inline"``) at
    ``plan.graph_envs``, in order, each a cold run in a fresh process, against the default
    row at the same count (``x_default``); a count the time left does not cover is skipped,
    saying so."""
    plan = check.plan
    end = time.monotonic() + allow
    flags, linalg = GRAPHS
    env = {"XLA_FLAGS": added_xla_flags(flags)}
    step.result = {"xla_flags": env["XLA_FLAGS"], "linalg": linalg, "rows": []}
    _fits(check, step, _estimate(check, "cold"))
    for n in plan.graph_envs:
        row: dict[str, Any] = {"envs": n}
        step.result["rows"].append(row)
        left = min(end - time.monotonic(), check.budget.allow())
        need = _estimate(check, "cold")
        if left < need:
            row["skipped"] = f"needs ~{need:.0f} s, {left:.0f} s left"
            continue
        cfg = row_config(n, _batches(plan, n), plan).replace(linalg=linalg)
        try:
            run = bench_run(check, cfg, _fresh_cache(check, f"cache_graphs_{n}"), left, env=env)
        except RuntimeError as e:
            row["error"] = one_line(e)
            continue
        check.record_cost("cold", run["wall_s"])
        default = _row_fps(check, n)
        row.update(fps=run.get("fps"), startup_s=run.get("startup_s"),
                   compile_s=run.get("compile_s"), default_fps=default,
                   x_default=run["fps"] / default if run.get("fps") and default else None)
        check.write()
    missed = [r for r in step.result["rows"] if not r.get("fps")]
    if len(missed) == len(step.result["rows"]):
        errors = [f"{r['envs']} envs: {r['error']}" for r in missed if r.get("error")]
        if errors:
            raise RuntimeError("; ".join(errors))
        raise Skip(missed[0]["skipped"])
    if missed:
        step.status = "partial"
        step.reason = "; ".join(f"{r['envs']} envs: {r.get('error') or r.get('skipped')}"
                                for r in missed)


def brax_step(check: Check, step: Step, allow: float) -> None:
    """Brax's ``ppo.train`` at the plan's Brax env count, on the benchmark's config rules
    (:func:`~ppo_jax.bench.configs.brax_settings` of that training row's config; the
    benchmark's Brax worker in a fresh process, a fresh compile cache), against ppo_jax's
    cold figure at that count."""
    from ppo_jax.bench import driver
    from ppo_jax.bench.configs import brax_settings, describe_config

    n = check.plan.brax_envs
    cfg = row_config(n, _batches(check.plan, n), check.plan)
    settings = brax_settings(cfg, evaluate=False)
    step.result = {"envs": n, "settings": settings,
                   "description": describe_config("brax", settings)}
    reason = driver.brax_unavailable_reason()
    if reason:
        raise Skip(reason)
    _fits(check, step, _estimate(check, "cold"))
    # one device, as the ppo_jax rows (a host with several, or forced CPU devices, would
    # have Brax split its envs over all of them)
    spec = {"kind": "brax", "settings": dict(settings, max_devices_per_host=1),
            "matmul_precision": cfg.matmul_precision,
            "compile_cache": _fresh_cache(check, "cache_brax"), "profile": False}
    t = time.perf_counter()
    raw = driver.run_worker(spec, max(1.0, min(allow, check.budget.allow())))
    brax = dict(driver.summarize_run(raw, None), wall_s=time.perf_counter() - t,
                patched=raw.get("patched"), batch_marks=raw.get("marks"))
    ours = _row_fps(check, n)
    cold = (((check.step(f"train_{n}") or Step("")).result or {}).get("cold") or {})
    step.result.update(brax=brax, ppo_jax_fps=ours, ppo_jax_startup_s=cold.get("startup_s"),
                       ppo_jax_compile_s=cold.get("compile_s"),
                       ppo_jax_over_brax=ours / brax["fps"] if ours else None)
    if ours is None:
        step.status, step.reason = "partial", f"no ppo_jax figure at {n} envs"


def crossover_step(check: Check, step: Step, allow: float) -> None:
    """Training frames/s on the host's CPU (``JAX_PLATFORMS=cpu``, all its cores, a fresh
    cache) at ``plan.crossover_envs``, each the config of the GPU's ``train_<n>`` row (a count
    whose GPU row was not measured is skipped), and the GPU / CPU ratio of each; then
    :func:`crossover` of those ratios: the env count from which the GPU trains faster on
    this machine (what ``--device auto`` compares). Both are steady-state frames/s: start-up
    is left out (it is in each row)."""
    end = time.monotonic() + allow
    rows: list[dict[str, Any]] = []
    step.result = {"rows": rows, "host_cpus": _host_cpus()}
    for n in check.plan.crossover_envs:
        cfg = row_config(n, _batches(check.plan, n), check.plan)
        fps, source = _gpu_row(check, n, cfg)
        row = {"envs": n, "gpu_fps": fps, "frames": cfg.total_frames}
        rows.append(row)
        if fps is None:
            row["skipped"] = source
            continue
        row["gpu_from"] = source
        left = min(end - time.monotonic(), check.budget.allow())
        need = check.costs.get("cpu_cold", COLD_GUESS_S / 2)
        if left < need:
            row["skipped"] = f"needs ~{need:.0f} s, {left:.0f} s left"
            continue
        try:
            cpu = bench_run(check, cfg, _fresh_cache(check, f"cache_cpu_{n}"), left,
                            env={"JAX_PLATFORMS": "cpu"})
        except Exception as e:  # noqa: BLE001  (recorded; the other counts still run)
            row["skipped" if "timed out" in str(e) else "error"] = one_line(e)
            continue
        check.record_cost("cpu_cold", cpu["wall_s"])
        backend = (cpu.get("device") or {}).get("backend")
        row.update(cpu_fps=cpu["fps"], cpu_startup_s=cpu["startup_s"], cpu_device=backend)
        if backend != "cpu":
            row["error"] = f"the CPU row ran on {backend}"
        elif cpu["fps"]:
            row["gpu_over_cpu"] = fps / cpu["fps"]
        check.write()
    step.result["crossover"] = crossover(rows)
    if not any(r.get("gpu_over_cpu") for r in rows):
        why = "; ".join(f"{_envs(r['envs'])}: {r.get('skipped') or r.get('error')}"
                        for r in rows)
        if any(r.get("error") for r in rows):  # not for lack of rows or time alone
            raise RuntimeError(f"no GPU / CPU ratio: {why}")
        raise Skip(f"no GPU / CPU ratio: {why}")
    missed = [str(r["envs"]) for r in rows if not r.get("gpu_over_cpu")]
    if missed:
        step.status, step.reason = "partial", f"no GPU / CPU ratio at {', '.join(missed)} envs"


def _host_cpus() -> int | None:
    """The CPU cores this process may use (a container's share, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def crossover(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the GPU starts to train faster than the CPU, from rows of ``envs`` and
    ``gpu_over_cpu`` (rows without a ratio are left out): ``{"envs": n, "between": [a, b]}``,
    n interpolated in log-log between the widest count where the CPU was faster (a) and the
    next one (b); ``{"below": n}`` when the GPU was faster at every count (from n), ``{"above":
    n}`` when the CPU was faster at the widest (n); ``{}`` with no ratio. ``non_monotonic``:
    the GPU was faster somewhere below that crossing too."""
    import math

    pts = sorted((r["envs"], r["gpu_over_cpu"]) for r in rows if r.get("gpu_over_cpu"))
    if not pts:
        return {}
    slower = [i for i, (_, r) in enumerate(pts) if r < 1.0]
    if not slower:
        return {"below": pts[0][0]}
    i = slower[-1]
    out: dict[str, Any]
    if i == len(pts) - 1:
        out = {"above": pts[i][0]}
    else:
        (n0, r0), (n1, r1) = pts[i], pts[i + 1]
        x0, x1, y0, y1 = math.log(n0), math.log(n1), math.log(r0), math.log(r1)
        out = {"envs": math.exp(x0 - y0 * (x1 - x0) / (y1 - y0)), "between": [n0, n1]}
    if any(r >= 1.0 for _, r in pts[:i]):
        out["non_monotonic"] = True
    return out


def learning_step(check: Check, step: Step, allow: float) -> None:
    """The learning tests, when the time left allows their estimate: a cold compile, and
    their frames at the 1-env row's rate plus a fifth for the evaluations."""
    need = 20.0
    if check.plan.learning_frames:
        fps = _row_fps(check, 1)
        if not fps:
            raise Skip("the 1-env training row, which sizes it, was not measured")
        need += _estimate(check, "cold") + 1.2 * check.plan.learning_frames / fps
    if need > allow:
        raise Skip(f"needs ~{need:.0f} s, {allow:.0f} s left")
    pytest_step(check, step, check.plan.learning_tests, None, "learning", allow)


def _batches(plan: Plan, num_envs: int) -> int:
    return next(b for n, b, _ in plan.train if n == num_envs)


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------
MESSAGE_CELL_CHARS = 400  # a test's message in the markdown (the JSON holds all of it)


def _cell(text: Any, limit: int | None = None) -> str:
    """Free text as one markdown table cell (at most ``limit`` characters)."""
    out = " ".join(str(text).split()).replace("|", "/")
    return out if limit is None or len(out) <= limit else out[:limit - 1] + "…"


def table_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per env count of the plan: env steps/s and the training figures (each None
    where it was not measured, with ``why``)."""
    steps = {s["name"]: s for s in payload["steps"]}
    plan = payload["plan"]
    speed = {r["envs"]: r for r in ((steps.get("env_speed") or {}).get("result") or {})
             .get("rows", [])}
    trained = {t[0] for t in plan["train"]}
    counts = sorted(set(plan["env_speed"]) | trained)
    chosen = payload.get("steps_chosen") or plan["order"]
    rows = []
    for n in counts:
        s = steps.get(f"train_{n}")
        res = (s or {}).get("result") or {}
        cold, warm = res.get("cold") or {}, res.get("warm") or {}
        why = None
        if s is None:
            why = ("not in the plan" if n not in trained else
                   "not chosen (--steps)" if f"train_{n}" not in chosen else "not run")
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
    """The report: device line, command, the GPU table, the Brax, matmul and preset tables,
    where start-up went, the tests, the steps."""
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
    linalg = payload["plan"]["overrides"].get("linalg", "library")
    if linalg != "library":
        lines += [f"Every training row, the time to 9,000 and the env-speed rows ran with the "
                  f"env's linear algebra {linalg} (`--linalg {linalg}`; users' default: "
                  f"library).", ""]
    lines += ["| envs | env steps/s (MJX alone) | training frames/s | x 1 env | config | "
              "start-up s cold (compile) | start-up s warm | warm run loaded its programs |",
              "| ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    rows = table_rows(payload)
    base = next((r["fps"] for r in rows if r["envs"] == 1 and r["fps"]), None)
    for r in rows:
        speed = fmt_num(r["env_steps_per_s"]) if r["env_steps_per_s"] else (
            f"skipped ({r['env_speed_note']})" if r["env_speed_note"] else "–")
        if r["fps"] is None:
            lines.append(f"| {r['envs']:,} | {_cell(speed)} | {_cell(r['why'] or '–')} | – | "
                         f"{r['description'] or '–'} | – | – | – |")
            continue
        ratio = fmt_num(r["fps"] / base, "{:.1f}") if base else "–"
        store = {True: "yes", False: "no", None: "–"}[r["warm_from_store"]]
        lines.append(f"| {r['envs']:,} | {speed} | {fmt_num(r['fps'])} | {ratio} | "
                     f"{r['description']} | {fmt_num(r['startup_cold_s'], '{:.1f}')} "
                     f"({fmt_num(r['compile_cold_s'], '{:.1f}')}) | "
                     f"{fmt_num(r['startup_warm_s'], '{:.1f}')} | {store} |")
    lines += ["", *_brax_lines(steps.get("brax")), "", *_graph_lines(steps.get("graphs")),
              *_matmul_lines(steps), "",
              *_threshold_lines(steps.get("preset_fast"), payload["plan"]["threshold"]), "",
              *_trace_lines(steps.get("trace")),
              *_crossover_lines(steps.get("crossover"), payload.get("gpu_rows")),
              *_lever_lines(steps.get("levers")),
              *_startup_lines(payload), *_test_lines(payload),
              "| step | status | seconds | note |", "| --- | --- | ---: | --- |"]
    for s in payload["steps"]:
        note = _cell(s["reason"] or s["error"] or _step_note(s) or "")
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {note} |")
    lines += ["", *_warnings(payload), *_notes(payload)]
    return "\n".join(lines) + "\n"


def _brax_lines(s: dict[str, Any] | None) -> list[str]:
    """ppo_jax against Brax's ppo.train at one env count."""
    res = (s or {}).get("result") or {}
    n = res.get("envs")
    head = [f"| side by side{f' ({n:,} envs)' if n else ''}, cold | config | training "
            "frames/s | start-up s (compile) | ppo_jax / Brax |",
            "| --- | --- | ---: | ---: | ---: |"]
    brax = res.get("brax")
    if not brax:
        why = (s or {}).get("reason") or (s or {}).get("error") or "not run"
        return head + [f"| Brax ppo.train | {res.get('description') or '–'} | {_cell(why)} | "
                       "– | – |"]
    return head + [f"| ppo_jax | (the training row above) | {fmt_num(res.get('ppo_jax_fps'))} | "
                   f"{fmt_num(res.get('ppo_jax_startup_s'), '{:.1f}')} "
                   f"({fmt_num(res.get('ppo_jax_compile_s'), '{:.1f}')}) | "
                   + fmt_num(res.get("ppo_jax_over_brax"), "{:.2f}") + " |",
                   f"| Brax ppo.train | {res['description']} | {fmt_num(brax['fps'])} | "
                   f"{fmt_num(brax.get('startup_s'), '{:.1f}')} "
                   f"({fmt_num(brax.get('compile_s'), '{:.1f}')}) | 1.00 |"]


def _startup_lines(payload: dict[str, Any]) -> list[str]:
    """Where each training run's start-up seconds went, and its other XLA compilations."""
    runs = []
    for s in payload["steps"]:
        res = s.get("result") or {}
        for label in ("cold", "warm", "tf32"):
            run = res.get(label)
            if isinstance(run, dict) and run.get("startup_phases"):
                runs.append((f"{s['name']} {label}", run))
    if not runs:
        return []
    lines = ["Start-up, s (imports excluded): backend init; env build (env, networks, "
             "optimizer); the programs, each loaded (store: the program store, cache: JAX's "
             "cache) or compiled; the init program's run (network init and the normalization "
             "statistics' env steps); the first batch beyond its steady-rate time; the rest "
             "(devices, layout, keys, config). Other XLA compiles: those that are not the "
             "job's programs.", "",
             "| run | start-up | backend init | env build | programs | init run (norm. stats) "
             "| first batch extra | rest | other XLA compiles before the first batch |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    f1 = "{:.1f}"
    for label, run in runs:
        p = run["startup_phases"]
        progs = ", ".join(f"{k} {_source(v)} {fmt_num(v.get('seconds'), f1)}"
                          for k, v in (p.get("programs") or {}).items())
        other = p.get("other_compiles") or []
        top = ", ".join(f"{_cell(c['name'], 40)} {c['seconds']:.2f}"
                        + (" (cache)" if c.get("cache_hit") else "") for c in other[:4])
        more = f" and {len(other) - 4} more" if len(other) > 4 else ""
        lines.append(
            f"| {label} | {fmt_num(run.get('startup_s'), f1)} | "
            f"{fmt_num(p['backend_init_s'], f1)} | {fmt_num(p['env_build_s'], f1)} | "
            f"{fmt_num(p['programs_s'], f1)} ({progs or '–'}) | {fmt_num(p['init_run_s'], f1)}"
            f"{_host_stats(p)} | "
            f"{fmt_num(p['first_batch_extra_s'], f1)} | "
            f"{fmt_num(p['rest_s'] + p.get('prepare_other_s', 0.0), f1)} | "
            f"{fmt_num(p['other_compiles_before_first_batch_s'], '{:.2f}')} s: "
            f"{top or 'none'}{more} |")
    return lines + [""]


def _source(info: dict[str, Any]) -> str:
    return {"ppo_programs": "store", "jax_cache": "cache", "compiled": "compiled",
            "in_process": "in process"}.get(info.get("source"), str(info.get("source")))


def _test_lines(payload: dict[str, Any]) -> list[str]:
    """Each test of the pytest steps: outcome, seconds, and a failure's message."""
    lines = []
    for s in payload["steps"]:
        details = (s.get("result") or {}).get("details")
        if not details:
            continue
        lines += [f"| {s['name']}: test | outcome | s | message |", "| --- | --- | ---: | --- |"]
        for node, d in details.items():
            outcome = d.get("outcome") or "running"
            if d.get("expected"):
                outcome += f" (injected: expected {d['expected']})"
            msg = d.get("message") or ""
            if d.get("outcome") == "CAPPED":
                msg = f"capped at {d.get('cap_s'):g} s"
            lines.append(f"| {node} | {outcome} | {d.get('seconds') or 0:.1f} | "
                         f"{_cell(msg, MESSAGE_CELL_CHARS)} |")
        lines.append("")
    return lines


def _warnings(payload: dict[str, Any]) -> list[str]:
    """The benchmark's warnings of the runs (XLA compilations during the measured batches)."""
    out = []
    for s in payload["steps"]:
        res = s.get("result") or {}
        runs = [("cold", res.get("cold")), ("warm", res.get("warm")), ("tf32", res.get("tf32")),
                ("Brax", res.get("brax")), ("", res if "fps" in res else None)]
        for label, run in runs:
            if isinstance(run, dict) and run.get("warning"):
                out.append(f"- {s['name']}{f' ({label})' if label else ''}: {run['warning']}")
    return out + [""] if out else []


def _threshold_lines(s: dict[str, Any] | None, goal: float) -> list[str]:
    """The threshold step: its cold run, and its warm run where there was one."""
    res = (s or {}).get("result") or {}
    head = [f"| run (one seed) | config | first evaluation >= {fmt_num(goal)}: "
            "s from process start (frames) | start-up s (compile) | frames/s, evaluations "
            "included | best evaluation |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    label = res.get("label") or "preset"
    if "fps" not in res:
        why = (s or {}).get("reason") or (s or {}).get("error") or "not run"
        return head + [f"| {label}, cold | {res.get('description') or '–'} | "
                       f"{_cell(why)} | – | – | – |"]
    lines = list(head)
    for which, run in (("cold", res), ("warm", res.get("warm"))):
        if run is None:
            continue
        if "fps" not in run:
            lines.append(f"| {label}, {which} | (the same) | {_cell(run.get('stopped'))} | – | "
                         "– | – |")
            continue
        hit = (f"{run['threshold_s']:.1f} ({run['threshold_frames']:,})" if run["reached"]
               else _cell(f"not reached ({run.get('stopped')})"))
        lines.append(f"| {label}, {which} | "
                     f"{res['description'] if which == 'cold' else '(the same)'} | {hit} | "
                     f"{fmt_num(run.get('startup_s'), '{:.1f}')} "
                     f"({fmt_num(run.get('compile_s'), '{:.1f}')}) | "
                     f"{fmt_num(run.get('fps'))} | {fmt_num(run.get('best_eval_return'))} |")
    return lines


def _envs(n: int) -> str:
    return f"{n:,} env{'s' if n != 1 else ''}"


def _trace_lines(s: dict[str, Any] | None) -> list[str]:
    """The ``trace`` step: per env count, where a traced batch's time went (nothing where
    the step was not chosen)."""
    from ppo_jax.bench.trace import trace_lines

    if s is None:
        return []
    res = s.get("result") or {}
    rows = res.get("rows") or []
    if not any(r.get("trace") for r in rows):
        return _not_measured("Where a batch's time goes (trace)", s)
    n = res.get("batches") or 0
    lines = [f"Where a batch's time goes: JAX's profiler over {n} batch{'es' if n != 1 else ''}, "
             f"after {TRACE_TIMED} timed ones:", ""]
    for r in rows:
        if not r.get("trace"):
            lines.append(f"- {_envs(r['envs'])}: {_cell(r.get('skipped') or r.get('error'))}")
            continue
        lines.append(f"- {_envs(r['envs'])} ({r['description']}; "
                     f"{fmt_num(r['fps'])} frames/s timed, "
                     f"{'warm' if r.get('warm_start') else 'cold'} start):")
        lines += ["  " + line for line in trace_lines(r["trace"])]
    return lines + [""]


def _not_measured(what: str, s: dict[str, Any]) -> list[str]:
    """A report section whose step ran but measured nothing: why, in one line."""
    return [f"{what}: not measured "
            f"({_cell(s.get('reason') or s.get('error') or s.get('status'))}).", ""]


def _crossover_lines(s: dict[str, Any] | None, gpu_rows: dict[str, Any] | None = None
                     ) -> list[str]:
    """The ``crossover`` step: the GPU's and the host CPU's training rows side by side, and
    where the GPU starts to win (nothing where the step was not chosen); ``gpu_rows``:
    the ``--gpu-rows`` file some GPU figures came from."""
    if s is None:
        return []
    res = s.get("result") or {}
    if not res.get("rows"):
        return _not_measured("GPU against the host's CPU", s)
    lines = [f"| GPU against the host's CPU ({res.get('host_cpus')} cores) | GPU training "
             "frames/s | CPU training frames/s | GPU / CPU | CPU start-up s |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for r in res["rows"]:
        cpu = (fmt_num(r["cpu_fps"]) if r.get("cpu_fps") and not r.get("error")
               else _cell(r.get("skipped") or r.get("error") or "not measured", 80))
        lines.append(f"| {_envs(r['envs'])} | {fmt_num(r.get('gpu_fps'))} | {cpu} | "
                     f"{fmt_num(r.get('gpu_over_cpu'), '{:.2f}')} | "
                     f"{fmt_num(r.get('cpu_startup_s'), '{:.1f}')} |")
    c = res.get("crossover") or {}
    if "envs" in c:
        what = (f"the GPU trains faster from ~{c['envs']:,.0f} envs per device (between "
                f"{c['between'][0]:,} and {c['between'][1]:,}, interpolated in log-log)")
    elif "below" in c:
        what = f"the GPU trains faster at every count measured, from {_envs(c['below'])}"
    elif "above" in c:
        what = f"the CPU trains faster at the widest count measured, {_envs(c['above'])}"
    else:
        what = "no GPU / CPU ratio measured"
    if c.get("non_monotonic"):
        what += "; the GPU was also faster at a narrower count (the ratios are not monotonic)"
    borrowed = [_envs(r["envs"]) for r in res["rows"]
                if (r.get("gpu_from") or "").startswith("--gpu-rows")]
    source = ([f"The GPU figures at {', '.join(borrowed)} come from {gpu_rows['file']} (the "
               f"check of {gpu_rows['started_utc']} on this device)."]
              if borrowed and gpu_rows else [])
    return lines + ["", *source, f"Crossover on this machine (steady-state frames/s, start-up "
                        f"left out): {what}.", ""]


def _lever_lines(s: dict[str, Any] | None) -> list[str]:
    """The ``levers`` step: env steps/s under each lever (its XLA flags, its ``linalg``), and
    x the defaults (nothing where the step was not chosen)."""
    if s is None:
        return []
    res = s.get("result") or {}
    if not res.get("levers"):
        return _not_measured("Levers on the env step", s)
    envs = res.get("envs") or []
    lines = ["| levers: the env step alone | "
             + " | ".join(f"{_envs(n)}: steps/s (x default) | compile s" for n in envs)
             + " | linalg | XLA flags |",
             "| --- | " + " | ".join("---: | ---:" for _ in envs) + " | --- | --- |"]
    given = res.get("given_xla_flags")
    for lever in res["levers"]:
        rows = {r["envs"]: r for r in lever.get("rows", [])}
        why = lever.get("skipped") or lever.get("error")
        cells = []
        for n in envs:
            r = rows.get(n) or {}
            if r.get("steps_per_s"):
                cells.append(f"{fmt_num(r['steps_per_s'])} "
                             f"({fmt_num(r.get('x_default'), '{:.2f}')}) | "
                             f"{fmt_num(r.get('compile_s'), '{:.1f}')}")
            else:
                cells.append(f"{_cell(r.get('skipped') or why or 'not measured', 80)} | –")
        lines.append(f"| {lever['name']} | " + " | ".join(cells)
                     + f" | {lever.get('linalg') or 'library'}"
                     + f" | {_cell(lever['xla_flags'] or '(none added)')} |")
    repeats = sum(not lv["xla_flags"] and lv.get("linalg", "library") == "library"
                  for lv in res["levers"]) > 1
    return lines + ["", "Each lever ran once, in this order; "
                    + ("the spread of the runs of the defaults is the noise of these figures."
                       if repeats else "a difference of a few percent may be noise.")
                    + (f" Every lever ran with the XLA_FLAGS given to the check first: "
                       f"`{given}`." if given else ""), ""]


def _graph_lines(s: dict[str, Any] | None) -> list[str]:
    """The ``graphs`` step: training frames/s with one CUDA graph a batch against the
    defaults (nothing where the step was not chosen)."""
    if s is None:
        return []
    res = s.get("result") or {}
    if not res.get("rows"):
        return _not_measured("One CUDA graph a batch", s)
    lines = [f"| one CUDA graph a batch (`--linalg {res['linalg']}`, XLA_FLAGS "
             f"`{res['xla_flags']}`) | training frames/s | x default | default "
             "frames/s | start-up s cold (compile) |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in res["rows"]:
        if not r.get("fps"):
            why = _cell(r.get("error") or r.get("skipped") or "not measured", 80)
            lines.append(f"| {_envs(r['envs'])} | {why} | – | – | – |")
            continue
        lines.append(f"| {_envs(r['envs'])} | {fmt_num(r['fps'])} | "
                     f"{fmt_num(r.get('x_default'), '{:.2f}')} | "
                     f"{fmt_num(r.get('default_fps'))} | "
                     f"{fmt_num(r.get('startup_s'), '{:.1f}')} "
                     f"({fmt_num(r.get('compile_s'), '{:.1f}')}) |")
    return lines + [""]


def _matmul_lines(steps: dict[str, Any]) -> list[str]:
    s = steps.get("matmul") or {}
    res = s.get("result") or {}
    n = res.get("envs")
    head = [f"| --matmul-precision{f' ({n:,} envs)' if n else ''} | training frames/s | "
            "vs highest |", "| --- | ---: | ---: |"]
    if not res:
        return head + [f"| tf32 | {_cell(s.get('reason') or s.get('error') or 'not run')} | – |"]
    return head + [f"| highest (the default) | {fmt_num(res['highest_fps'])} | 1.00 |",
                   f"| tf32 | {fmt_num(res['tf32']['fps'])} | "
                   f"{fmt_num(res['tf32_over_highest'], '{:.2f}')} |"]


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
        "actions, over the calls that fit the row's seconds after a warm-up call (its compile "
        "and first run). Training frames/s: env steps of the whole "
        "PPO loop (collection + 10 epochs of minibatch updates, no evaluation) per second after "
        "the first batch, from the benchmark's ppo_jax worker in a fresh process (the programs "
        "scripts/train.py runs), cold run; configs by the benchmark's rules (1 env: the "
        "tutorial's; more envs: at least 16 steps per env per batch, 15 minibatches per epoch). "
        "Start-up: time to the first batch minus that batch at the steady rate, imports "
        "excluded; cold is a fresh compile cache, warm the second run with the cache the first "
        "one filled. The threshold runs' wall times count from their process start (imports, "
        "device start and compile included). Side by side: Brax's ppo.train in the "
        "benchmark's Brax worker, its settings from the same config (the benchmark's "
        "brax_settings), a fresh compile cache. Levers: the env-steps/s rows in a fresh "
        "process with the lever's flags added to XLA_FLAGS and its linalg (PPOConfig.linalg), "
        "x default: against the first lever's (XLA's defaults, linalg library) at the same "
        "env count.",
    ] + (["Tests: each outcome as pytest reported it, as it happened; CAPPED: stopped at the "
          "cap on one test's seconds, then pytest went on with the tests not yet run. The "
          "pytest steps ran with "
          + ", ".join(f"{k}={v!r}" for k, v in PYTEST_ENV_GPU.items() if k != "JAX_PLATFORMS")
          + "."] if any("counts" in (s.get("result") or {}) for s in payload["steps"]) else [])


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def build_parser(prog: str = "gpu_check") -> argparse.ArgumentParser:
    from ppo_jax.cli.common import ArgumentParser

    p = ArgumentParser(prog=prog, description=(
        "Every GPU check of ppo_jax in one command within a time budget: the GPU-relevant "
        "tests (marked gpu), training frames/s at 4,096 envs cold and warm with where the "
        "start-up went, Brax's PPO side by side, env steps/s at 1 to 4,096 envs, training at "
        "64, 1 and 1,024 envs, --preset fast's time to an evaluation of 9,000 cold and warm, "
        "tf32 against highest matmul precision, the GPU against the host's CPU (the "
        "crossover), training at 16,384 and 65,536 envs, levers on the env step's "
        "latency (XLA flags, the env's linear algebra inline), the learning test. "
        "Writes OUT/gpu_check.json and OUT/gpu_check.md."))
    p.add_argument("--out", default="gpu_check", help="output directory (default gpu_check/)")
    p.add_argument("--smoke", action="store_true",
                   help="the same steps at tiny sizes on the CPU, with an injected failing and "
                        "an injected slow test (a few minutes: CI)")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="seconds for the whole check, from the start of scripts/gpu_check.sh "
                        "(default 540: 9 minutes); what no longer fits is skipped")
    p.add_argument("--steps", default=None,
                   help="comma-separated steps to run, in the check's order (default: all): "
                        + ", ".join(GPU_PLAN.order) + " (train_N: the plan's env counts)")
    p.add_argument("--test-cap-s", type=float, default=None,
                   help="the most seconds one test may take before it is stopped and "
                        f"recorded as capped (default {GPU_PLAN.test_cap_s:g}; "
                        f"--smoke: {SMOKE_PLAN.test_cap_s:g})")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run the full-size check although JAX sees no GPU")
    p.add_argument("--linalg", choices=LINALGS, default=None,
                   help="the env's small linear algebra in every training and env-speed row "
                        "(PPOConfig.linalg; default: library, as users' runs)")
    p.add_argument("--gpu-rows", default=None, metavar="FILE",
                   help="an earlier gpu_check.json on this device: the crossover step takes "
                        "the GPU training rows this run did not measure from it (a second "
                        "short run: --steps crossover --gpu-rows OUT1/gpu_check.json)")
    return p


def with_linalg(plan: Plan, linalg: str | None) -> Plan:
    """``plan`` with ``linalg`` (``--linalg``) in its training rows' configs, its time to
    9,000 and its env-speed rows (None: the plan as it is)."""
    if linalg is None:
        return plan
    return dataclasses.replace(plan, overrides={**plan.overrides, "linalg": linalg},
                               threshold_config={**plan.threshold_config, "linalg": linalg})


def choose_steps(text: str | None, plan: Plan) -> tuple[str, ...]:
    """The steps ``--steps`` names, in the plan's order; raises CLIError (one line) for an
    unknown or empty list."""
    from ppo_jax.cli.common import CLIError

    if text is None:
        return plan.order
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in plan.order]
    if unknown or not names:
        what = (f"unknown step{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
                if unknown else "no step named")
        raise CLIError(f"--steps: {what}; choose from {','.join(plan.order)}")
    return tuple(n for n in plan.order if n in names)


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit status 1 when a step failed, 2 on bad input or a CPU without
    ``--smoke``."""
    from ppo_jax.cli.common import CLIError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not args.budget_s > 0:
        raise CLIError(f"--budget-s must be > 0, got {args.budget_s:g}")
    if args.test_cap_s is not None and not args.test_cap_s > 0:
        raise CLIError(f"--test-cap-s must be > 0, got {args.test_cap_s:g}")
    plan = with_linalg(SMOKE_PLAN if args.smoke else GPU_PLAN, args.linalg)
    chosen = choose_steps(args.steps, plan)
    earlier = None
    if args.gpu_rows:
        args.gpu_rows = typed_path(args.gpu_rows)
        if os.path.realpath(args.gpu_rows) == os.path.realpath(
                os.path.join(typed_path(args.out), "gpu_check.json")):
            raise CLIError(f"--gpu-rows: {args.gpu_rows} is the report this run writes "
                           "(--out): give this run another --out")
        earlier = read_gpu_rows(args.gpu_rows)
    probed, error, probe_s = probe()
    if probed and probed["backend"] == "cpu" and not (args.smoke or args.allow_cpu):
        raise CLIError("no GPU: jax sees only cpu; use --smoke")
    try:
        check = Check(args, argv, plan, chosen)
    except OSError as e:
        raise CLIError(f"cannot write to --out {args.out}: {e.strerror or e}")
    check.earlier = earlier
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
              f"{check.args.budget_s:.0f} s, steps {','.join(check.chosen)}, out {check.out}")
    check.run("install", install_step, seconds=float(os.environ.get("GPU_CHECK_INSTALL_S") or 0))

    def record_probe(step: Step) -> None:
        if error:
            raise RuntimeError(error)
        step.result = probed

    check.run("probe", record_probe, seconds=probe_s)
    if probed is None:
        return 1
    check.on_gpu = probed["backend"] != "cpu"
    adopt_gpu_rows(check, probed)
    for name in check.chosen:
        check.run(name, lambda s, name=name: _step_fn(check, name)(s, check.allow(name)))
    check.write()
    with open(os.path.join(check.out, "gpu_check.md")) as f:
        print(f.read())
    failed = [s.name for s in check.steps if s.status == "failed"]
    if failed:
        check.log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def _step_fn(check: Check, name: str) -> Callable[[Step, float], None]:
    """The function of step ``name``: ``fn(step, seconds it may take)``."""
    plan = check.plan
    if name == "pytest":
        return lambda s, allow: pytest_step(check, s, plan.tests, plan.marker, "pytest", allow,
                                            check.test_cap_s(), plan.expected)
    if name.startswith("train_"):
        n, batches, warm = next(t for t in plan.train if name == f"train_{t[0]}")
        return lambda s, allow: train_step(check, s, n, batches, warm, allow)
    return {"env_speed": lambda s, allow: env_speed_step(check, s, allow),
            "matmul": lambda s, allow: matmul_step(check, s, allow),
            "graphs": lambda s, allow: graphs_step(check, s, allow),
            "brax": lambda s, allow: brax_step(check, s, allow),
            "preset_fast": lambda s, allow: threshold_step(check, s, allow),
            "crossover": lambda s, allow: crossover_step(check, s, allow),
            "levers": lambda s, allow: levers_step(check, s, allow),
            "trace": lambda s, allow: trace_step(check, s, allow),
            "learning": lambda s, allow: learning_step(check, s, allow)}[name]


def run() -> None:
    """Console entry point (``python -m scripts.gpu_check``)."""
    from ppo_jax.cli.common import run_main

    sys.argv[0] = "gpu_check"  # errors read "gpu_check: error: ...", not "__main__.py: ..."
    run_main(main)


if __name__ == "__main__":
    run()
