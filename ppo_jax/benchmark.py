"""Side-by-side speed benchmark: the TorchRL tutorial, ppo_jax, and Brax's PPO trainer.

Used by ``scripts/benchmark.py`` (the CLI, see its ``--help``). The rows:

1. ``torchrl``: the TorchRL tutorial's training loop, written out here as in the tutorial
   (GymEnv ``InvertedDoublePendulum-v4``, ObservationNorm + DoubleToFloat + StepCounter,
   3x256 Tanh actor/critic, TanhNormal, ``Collector``, replay buffer without replacement,
   GAE each epoch, ``ClipPPOLoss``, Adam + cosine schedule) on the CPU; ``torchrl_cuda``: the
   same with the networks and the collector's device on CUDA, when torch sees a GPU.
2. ``ppo_jax`` at the tutorial configuration (1 env, 1000 frames per batch, 10 epochs of
   15 minibatches of 64).
3. ``ppo_jax`` with more envs (``--envs``) at the same total frames (see
   :func:`scaled_config`).
4. ``brax``: Brax's own PPO trainer on ppo_jax's MJX env (``brax_env``), with settings matched
   as far as its API allows (:func:`brax_settings`, :data:`BRAX_DIFFERENCES`).

Method (the same for every row):

* every run trains the same number of frames (``--total-frames`` rounded up to a multiple of
  every row's batch, :func:`common_total_frames`);
* each run is a fresh subprocess (``python -m ppo_jax.benchmark --worker``): peak memory is
  that process's ``ru_maxrss`` (imports included), plus the accelerator's peak when there is one;
* the host records a timestamp at the end of every batch (JAX: a ``jax.debug.callback`` /
  Brax's ``progress_fn``; TorchRL: the Python loop). Throughput = frames between the first and
  the last mark / seconds between them, so the first batch (compilation, lazy init) never counts;
  start-up = time to the first mark minus what its frames take at the steady rate;
* runs of different systems are interleaved (one of each row per repeat, the order rotated
  from repeat to repeat) and repeated (``--repeats``); median and min-max are reported;
* without ``--to-threshold`` no run evaluates; with it every run evaluates about every
  ``--eval-every-frames`` frames (frames/s then include evaluation), and the time to the
  threshold is the mark of the first batch whose evaluation reached it, counted from the start
  of the run (start-up included).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from ppo_jax.config import MATMUL_PRECISIONS, PPOConfig

ENV_ID = "InvertedDoublePendulum-v4"
TUTORIAL_FRAMES_PER_BATCH = 1000
MIN_STEPS_PER_ENV = 16
MINIBATCHES_PER_EPOCH = 15
SYSTEMS = ("torchrl", "ppo_jax", "brax")
DEFAULT_ENVS = (16, 256, 4096)
QUICK_ENVS = (1, 16)
QUICK_TOTAL_FRAMES = 2000
DEFAULT_TOTAL_FRAMES = 20_000
DEFAULT_THRESHOLD = 9000.0

BRAX_PATCH_NOTE = (
    "brax 0.14's ppo.train calls jax.device_put_replicated, which this jax no longer has: the "
    "benchmark gave jax that function back before calling it: each leaf stacked along a new "
    "leading axis (one slice per device) and placed by an identity pmap over Brax's axis name "
    "'i', so that Brax's training epoch compiles once (placed with another sharding, it "
    "compiled a second time on its second call)."
)
BRAX_DIFFERENCES = (
    "observation normalization: Brax's running mean/std over all data collected so far "
    "(updated every batch) instead of fixed statistics from 1000 random steps",
    "minibatches are whole unrolls of unroll_length steps, and GAE is computed per unroll "
    "(bootstrapped at its end) inside each minibatch, instead of over the whole batch at the "
    "start of each epoch; minibatch count/size as close to ppo_jax's as its unroll structure "
    "allows",
    "time-limit truncations are masked, not bootstrapped from the critic",
    "critic loss 0.5*MSE (vf_loss_coefficient=1.0) instead of smooth-L1 (equal for |error|<1)",
    "constant learning rate (no cosine annealing: Brax offers none)",
    "Brax's tanh-Normal head (scale = softplus + 0.001) and lecun-uniform initialization "
    "instead of PyTorch's default init and biased softplus",
    "evaluation (threshold mode only): Brax's evaluator, 1 env, deterministic tanh(loc) "
    "action, run after each training epoch (and once before training)",
    "host loop: one pmap call per epoch of batches (per batch when not evaluating), "
    "not one program for the whole run",
)


# ----------------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------------
def common_total_frames(requested: int, env_counts: list[int] | tuple[int, ...]) -> int:
    """Smallest multiple of ``lcm(1000, *env_counts)`` that is >= ``requested`` and holds at
    least two tutorial batches: every row can then split it into whole batches."""
    lcm = TUTORIAL_FRAMES_PER_BATCH
    for n in env_counts:
        lcm = lcm * n // math.gcd(lcm, n)
    want = max(int(requested), 2 * TUTORIAL_FRAMES_PER_BATCH)
    return -(-want // lcm) * lcm


def steps_per_env(num_envs: int, total_frames: int) -> int:
    """Steps of each env per batch for ``num_envs`` > 1 envs.

    The largest divisor ``T`` of ``total_frames / num_envs`` with ``T <= max(16,
    ceil(1000 / num_envs))`` (a batch of about the tutorial's 1000 frames while that allows 16
    steps per env, else 16 steps per env) and ``T <= total_frames / (2 num_envs)`` (at least
    two batches, so the first can be left out of the throughput).
    """
    if total_frames % num_envs:
        raise ValueError(f"total_frames {total_frames} is not a multiple of num_envs {num_envs}")
    per_env = total_frames // num_envs
    if per_env < 2:
        raise ValueError(f"total_frames {total_frames} gives {num_envs} envs fewer than 2 steps")
    target = min(max(MIN_STEPS_PER_ENV, -(-TUTORIAL_FRAMES_PER_BATCH // num_envs)), per_env // 2)
    return max(t for t in range(1, target + 1) if per_env % t == 0)


def scaled_config(num_envs: int, total_frames: int, *, seed: int = 0, eval_every_frames: int = 0,
                  matmul_precision: str = "highest") -> PPOConfig:
    """``num_envs`` envs at the same total frames; 1 env is the tutorial configuration.

    Rules: ``steps_per_env`` from :func:`steps_per_env`; frames_per_batch = num_envs x that;
    minibatch = frames_per_batch // 15, so every epoch is 15 minibatches (each frame in 10
    epochs; fewer than 15 frames of a batch left out of an epoch, where the tutorial leaves 40);
    evaluation every ``round(eval_every_frames / frames_per_batch)`` batches (0: never).
    """
    if num_envs == 1:
        fpb = TUTORIAL_FRAMES_PER_BATCH
        minibatch = PPOConfig.minibatch_size
    else:
        fpb = num_envs * steps_per_env(num_envs, total_frames)
        minibatch = max(1, fpb // MINIBATCHES_PER_EPOCH)
    eval_every = max(1, round(eval_every_frames / fpb)) if eval_every_frames else 0
    return PPOConfig(seed=seed, num_envs=num_envs, frames_per_batch=fpb,
                     total_frames=total_frames, minibatch_size=minibatch,
                     eval_every=eval_every, matmul_precision=matmul_precision)


def brax_settings(cfg: PPOConfig, *, evaluate: bool) -> dict[str, Any]:
    """Keyword arguments of Brax's ``ppo.train`` matching ``cfg`` as far as its API allows.

    Brax collects ``batch_size * num_minibatches`` unrolls of ``unroll_length`` steps per
    training step and splits them into ``num_minibatches`` minibatches of ``batch_size``
    unrolls. We keep the batch (num_envs x steps_per_env frames) and choose, among unroll
    lengths dividing steps_per_env, the one whose minibatch (batch_size x unroll_length
    frames) is closest to ppo_jax's minibatch_size; ties go to more minibatches nearer 15,
    then to the longer unroll (a longer GAE horizon). ``num_evals`` makes each training epoch
    one batch (no evaluation), or about ``eval_every`` batches (evaluation).
    """
    n, t = cfg.num_envs, cfg.steps_per_env
    best = None
    for unroll in range(1, t + 1):
        if t % unroll:
            continue
        unrolls = n * t // unroll
        for batch_size in range(1, unrolls + 1):
            if unrolls % batch_size:
                continue
            nmb = unrolls // batch_size
            score = (abs(batch_size * unroll - cfg.minibatch_size),
                     abs(nmb - MINIBATCHES_PER_EPOCH), -unroll)
            if best is None or score < best[0]:
                best = (score, unroll, batch_size, nmb)
    _, unroll, batch_size, nmb = best
    batches = cfg.num_batches
    if evaluate:
        per_epoch = max(d for d in range(1, max(cfg.eval_every, 1) + 1) if batches % d == 0)
    else:
        per_epoch = 1
    return dict(
        num_timesteps=cfg.total_frames,
        episode_length=cfg.max_episode_steps,
        num_envs=n,
        unroll_length=unroll,
        batch_size=batch_size,
        num_minibatches=nmb,
        num_updates_per_batch=cfg.num_epochs,
        learning_rate=cfg.lr,
        entropy_cost=cfg.entropy_coeff,
        discounting=cfg.gamma,
        gae_lambda=cfg.lmbda,
        clipping_epsilon=cfg.clip_epsilon,
        normalize_observations=True,
        normalize_advantage=cfg.standardize_advantage,
        max_grad_norm=cfg.max_grad_norm,
        vf_loss_coefficient=cfg.critic_coeff,
        reward_scaling=1.0,
        num_evals=batches // per_epoch + 1,
        run_evals=bool(evaluate),
        num_eval_envs=1,
        deterministic_eval=True,
        seed=cfg.seed,
        hidden_sizes=list(cfg.hidden_sizes),
        activation="tanh",
        batches_per_epoch=per_epoch,
    )


def torchrl_settings(total_frames: int, *, seed: int, eval_every: int, device: str,
                     threads: int | None = None) -> dict:
    """The tutorial's hyperparameters, as run by :func:`worker_torchrl` (``threads``: torch's
    intra-op threads; None: torch's default)."""
    return dict(
        env=ENV_ID, device=device, seed=seed, torch_threads=threads,
        frames_per_batch=TUTORIAL_FRAMES_PER_BATCH,
        total_frames=total_frames, num_cells=256, lr=3e-4, max_grad_norm=1.0,
        sub_batch_size=64, num_epochs=10, clip_epsilon=0.2, gamma=0.99, lmbda=0.95,
        entropy_eps=1e-4, critic_coeff=1.0, loss_critic_type="smooth_l1",
        init_stats_num_iter=1000, eval_every=eval_every, eval_max_steps=1000,
    )


def describe_config(system: str, settings: dict[str, Any]) -> str:
    """One line of a row's configuration for the table."""
    if system == "brax":
        s = settings
        fpb = s["unroll_length"] * s["batch_size"] * s["num_minibatches"]
        return (f"{s['num_envs']} env{'s' if s['num_envs'] > 1 else ''}, unroll "
                f"{s['unroll_length']}, {fpb}/batch, {s['num_minibatches']} mb x "
                f"{s['batch_size'] * s['unroll_length']}")
    if system.startswith("torchrl"):
        threads = settings.get("torch_threads")
        return "1 env, 1000/batch, 15 mb x 64" + (
            f", {threads} torch thread{'s' if threads > 1 else ''}" if threads else "")
    c = settings
    steps = c["frames_per_batch"] // c["num_envs"]
    nmb = c["frames_per_batch"] // c["minibatch_size"]
    return (f"{c['num_envs']} env{'s' if c['num_envs'] > 1 else ''} x {steps}, "
            f"{c['frames_per_batch']}/batch, {nmb} mb x {c['minibatch_size']}")


# ----------------------------------------------------------------------------------------------
# availability
# ----------------------------------------------------------------------------------------------
def torchrl_unavailable_reason() -> str | None:
    """Why the TorchRL rows cannot run here (None: they can)."""
    missing = [m for m in ("torch", "torchrl", "tensordict", "gymnasium", "mujoco")
               if importlib.util.find_spec(m) is None]
    if missing:
        return f"TorchRL rows skipped: {', '.join(missing)} not installed (pip install .[torchrl])"
    return None


def torch_cuda_available() -> bool:
    try:
        import torch
    except Exception:  # noqa: BLE001  (any import failure means: no CUDA row)
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def brax_unavailable_reason() -> str | None:
    if importlib.util.find_spec("brax") is None:
        return "Brax rows skipped: brax not installed"
    return None


# ----------------------------------------------------------------------------------------------
# workers (each runs in a fresh subprocess)
# ----------------------------------------------------------------------------------------------
def _rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _jax_device_peak_mib() -> float | None:
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**20


def _jax_device_info() -> dict[str, Any]:
    import jax

    return {"backend": jax.default_backend(), "devices": [d.device_kind for d in jax.devices()]}


class _CompileLog:
    """XLA compilations of at least ``min_s`` s: (seconds since ``t0`` at the end, duration)."""

    def __init__(self, min_s: float = 1.0):
        import jax

        self.t0 = time.perf_counter()
        self.min_s = min_s
        self.events: list[tuple[float, float]] = []
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **_: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration" and duration >= self.min_s:
            self.events.append((time.perf_counter() - self.t0, float(duration)))


def _enable_cache(path: str | None) -> None:
    if path:
        from ppo_jax.cli import enable_compile_cache

        enable_compile_cache(path)


def worker_ppo_jax(spec: dict[str, Any]) -> dict[str, Any]:
    t_import = time.perf_counter()
    import jax

    _enable_cache(spec.get("compile_cache"))
    from ppo_jax.train import make_train, seed_keys

    compiles = _CompileLog()
    t0 = compiles.t0 = time.perf_counter()
    cfg = PPOConfig.from_dict(spec["config"])
    marks: list[tuple[int, float]] = []
    evals: list[tuple[int, float, float]] = []
    nb, fpb = cfg.num_batches, cfg.frames_per_batch

    def progress(i, reward, step_count, lr, evaluated, eval_return, eval_steps, finite):
        t = time.perf_counter() - t0
        i = int(i)
        if i < nb:
            marks.append(((i + 1) * fpb, t))
            if bool(evaluated[0]):
                evals.append(((i + 1) * fpb, t, float(eval_return[0])))

    tr = make_train(cfg)
    keys = seed_keys(cfg.seed, 1)
    program = jax.jit(lambda k: tr.train_many(k, progress)).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t_call = time.perf_counter()
    states, metrics = program(keys)
    jax.block_until_ready((states, metrics))
    call_s = time.perf_counter() - t_call
    failed = int(states.failed_batch[0])
    return dict(
        marks=marks, evals=evals, import_s=t0 - t_import, compile_s=compile_s,
        call_s=call_s, call_fps=cfg.total_frames / call_s, compiles=compiles.events,
        failed_batch=failed if failed >= 0 else None,
        peak_rss_mib=_rss_mib(), device_peak_mib=_jax_device_peak_mib(),
        device=_jax_device_info(),
    )


def _patch_device_put_replicated(axis_name: str = "i") -> bool:
    """Give jax ``device_put_replicated`` back if it is gone (brax 0.14 calls it).

    The tree is stacked along a new leading axis (one slice per device) and placed by an
    identity ``pmap`` over ``axis_name`` (Brax's pmap axis name), so it carries the same
    sharding as the outputs of Brax's pmapped training epoch. Placed any other way (even by a
    pmap with another axis name) the first and the second epoch see different input shardings
    and Brax's training epoch is compiled twice.
    """
    import jax

    if hasattr(jax, "device_put_replicated"):
        return False
    import jax.numpy as jnp

    def device_put_replicated(x, devices):
        devices = list(devices)
        stacked = jax.tree_util.tree_map(lambda a: jnp.stack([jnp.asarray(a)] * len(devices)), x)
        return jax.pmap(lambda t: t, axis_name=axis_name, devices=devices)(stacked)

    jax.device_put_replicated = device_put_replicated
    return True


def worker_brax(spec: dict[str, Any]) -> dict[str, Any]:
    t_import = time.perf_counter()
    import functools

    import jax

    _enable_cache(spec.get("compile_cache"))
    precision = spec.get("matmul_precision", "highest")
    from ppo_jax.train import MATMUL

    if MATMUL.get(precision):
        jax.config.update("jax_default_matmul_precision", MATMUL[precision])
    import brax.envs
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    patched = _patch_device_put_replicated(getattr(ppo, "_PMAP_AXIS_NAME", "i"))

    from ppo_jax.envs.brax_env import BRAX_ENV_NAME

    s = dict(spec["settings"])
    hidden = tuple(s.pop("hidden_sizes"))
    s.pop("activation")
    s.pop("batches_per_epoch")
    marks: list[tuple[int, float]] = []
    evals: list[tuple[int, float, float]] = []
    compiles = _CompileLog()
    t0 = compiles.t0 = time.perf_counter()
    env = brax.envs.get_environment(BRAX_ENV_NAME)

    def progress_fn(step, metrics):
        t = time.perf_counter() - t0
        step = int(step)
        if step == 0:  # Brax's evaluation before training
            return
        marks.append((step, t))
        if "eval/episode_reward" in metrics:
            evals.append((step, t, float(metrics["eval/episode_reward"])))

    network_factory = functools.partial(
        ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=hidden,
        value_hidden_layer_sizes=hidden, activation=jax.nn.tanh)
    ppo.train(environment=env, network_factory=network_factory, progress_fn=progress_fn, **s)
    before_first = [d for t, d in compiles.events if marks and t <= marks[0][1]]
    return dict(
        marks=marks, evals=evals, import_s=t0 - t_import, compiles=compiles.events,
        compile_s=sum(before_first) if before_first else None, patched=patched,
        peak_rss_mib=_rss_mib(), device_peak_mib=_jax_device_peak_mib(),
        device=_jax_device_info(),
    )


def worker_torchrl(spec: dict[str, Any]) -> dict[str, Any]:
    """The tutorial's training loop (torchrl 0.14 names), timed per batch."""
    t_import = time.perf_counter()
    import warnings

    import torch
    from torchrl.collectors import Collector
    from torchrl.data.replay_buffers import ReplayBuffer
    from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
    from torchrl.data.replay_buffers.storages import LazyTensorStorage
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from ppo_jax import torchrl_compat as tc

    warnings.filterwarnings("ignore")
    s = spec["settings"]
    t0 = time.perf_counter()
    device = torch.device(s["device"])
    if s.get("torch_threads"):
        torch.set_num_threads(int(s["torch_threads"]))
    torch.manual_seed(s["seed"])
    frames_per_batch, total_frames = s["frames_per_batch"], s["total_frames"]

    # the tutorial's env, transforms, networks, GAE and loss (shared with the parity tests)
    env = tc.tutorial_env(s["env"], seed=s["seed"], device=device)
    env.transform[0].init_stats(num_iter=s["init_stats_num_iter"], reduce_dim=0, cat_dim=0)
    spec_ = env.action_spec
    modules = tc.tutorial_modules(
        env.observation_spec["observation"].shape[-1], spec_.shape[-1],
        (s["num_cells"],) * 3, low=spec_.space.low, high=spec_.space.high, spec=spec_,
        device=device,
    )
    policy_module, value_module = modules.policy, modules.value

    collector = Collector(env, policy_module, frames_per_batch=frames_per_batch,
                          total_frames=total_frames, split_trajs=False, device=device)
    replay_buffer = ReplayBuffer(storage=LazyTensorStorage(max_size=frames_per_batch),
                                 sampler=SamplerWithoutReplacement())
    advantage_module = tc.tutorial_gae(value_module, gamma=s["gamma"], lmbda=s["lmbda"])
    loss_module = tc.tutorial_loss(
        policy_module, value_module, clip_epsilon=s["clip_epsilon"],
        entropy_coeff=s["entropy_eps"], critic_coeff=s["critic_coeff"],
        loss_critic_type=s["loss_critic_type"],
    )
    optim = torch.optim.Adam(loss_module.parameters(), s["lr"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optim, total_frames // frames_per_batch, 0.0)

    marks: list[tuple[int, float]] = []
    evals: list[tuple[int, float, float]] = []
    logs: dict[str, list] = {"reward": [], "step_count": [], "lr": []}
    sub = s["sub_batch_size"]
    eval_every = s["eval_every"]
    for i, data in enumerate(collector):
        for _ in range(s["num_epochs"]):
            advantage_module(data)
            replay_buffer.extend(data.reshape(-1).cpu())
            for _ in range(frames_per_batch // sub):
                subdata = replay_buffer.sample(sub)
                loss_vals = loss_module(subdata.to(device))
                loss_value = (loss_vals["loss_objective"] + loss_vals["loss_critic"]
                              + loss_vals["loss_entropy"])
                loss_value.backward()
                torch.nn.utils.clip_grad_norm_(loss_module.parameters(), s["max_grad_norm"])
                optim.step()
                optim.zero_grad()
        logs["reward"].append(data["next", "reward"].mean().item())
        logs["step_count"].append(data["step_count"].max().item())
        logs["lr"].append(optim.param_groups[0]["lr"])
        frames = (i + 1) * frames_per_batch
        if eval_every and i % eval_every == 0:
            with set_exploration_type(ExplorationType.MEAN), torch.no_grad():
                rollout = env.rollout(s["eval_max_steps"], policy_module)
                ret = rollout["next", "reward"].sum().item()
            evals.append((frames, time.perf_counter() - t0, ret))
            del rollout
        scheduler.step()
        marks.append((frames, time.perf_counter() - t0))
    collector.shutdown()
    info: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "device": str(device)}
    peak_dev = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        peak_dev = torch.cuda.max_memory_allocated(device) / 2**20
    return dict(marks=marks, evals=evals, import_s=t0 - t_import, compile_s=None,
                peak_rss_mib=_rss_mib(), device_peak_mib=peak_dev, device=info)


WORKERS = {"ppo_jax": worker_ppo_jax, "brax": worker_brax, "torchrl": worker_torchrl}


def worker_main(argv: list[str]) -> int:
    """``python -m ppo_jax.benchmark --worker SPEC.json RESULT.json``."""
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    result = WORKERS[spec["kind"]](spec)
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


# ----------------------------------------------------------------------------------------------
# figures from one run
# ----------------------------------------------------------------------------------------------
def summarize_run(result: dict[str, Any], threshold: float | None) -> dict[str, Any]:
    """Throughput, start-up and time-to-threshold of one run from its per-batch marks.

    ``marks``: ``(frames done, seconds since the run started)`` at the end of each batch (or
    epoch of batches). fps = frames after the first mark / seconds after it; start-up = time
    of the first mark minus the time its frames take at that rate (compilation, env and
    network set-up, lazy init: what a longer run does not repeat).
    """
    marks = result["marks"]
    out: dict[str, Any] = {k: result.get(k) for k in
                           ("compile_s", "import_s", "peak_rss_mib", "device_peak_mib", "call_fps")}
    if len(marks) < 2:
        raise ValueError("a run needs at least two batch marks to measure throughput")
    (f1, t1), (fn, tn) = marks[0], marks[-1]
    fps = (fn - f1) / (tn - t1)
    out.update(fps=fps, startup_s=t1 - f1 / fps, frames=fn, run_s=tn)
    late = [c for c in result.get("compiles") or [] if c[0] > t1]
    if late:
        out["warning"] = (f"{len(late)} XLA compilation(s) of >= 1 s during the measured batches "
                          f"({sum(d for _, d in late):.1f} s): frames/s is understated")
    if threshold is not None:
        hit = next(((f, t, r) for f, t, r in result["evals"] if r >= threshold), None)
        out["threshold_frames"] = hit[0] if hit else None
        out["threshold_s"] = hit[1] if hit else None
        out["best_eval_return"] = max((r for _, _, r in result["evals"]), default=None)
    return out


def _stats(values: list[float | None]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


# ----------------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    """One system at one configuration, measured ``repeats`` times."""

    key: str
    system: str  # torchrl | torchrl_cuda | ppo_jax | brax
    num_envs: int
    settings: dict[str, Any]
    description: str
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    skipped: str | None = None

    @property
    def label(self) -> str:
        if self.system.startswith("torchrl"):
            return "TorchRL tutorial" + (" (CUDA)" if self.system == "torchrl_cuda" else " (CPU)")
        name = "ppo_jax" if self.system == "ppo_jax" else "Brax PPO"
        return f"{name}, {'tutorial config' if self.num_envs == 1 else f'{self.num_envs} envs'}"


def parse_int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def parse_systems(text: str) -> list[str]:
    vals = [v for v in text.replace(" ", "").split(",") if v]
    bad = [v for v in vals if v not in SYSTEMS]
    if bad or not vals:
        raise argparse.ArgumentTypeError(
            f"unknown system(s) {', '.join(bad) or text!r}; choose from {', '.join(SYSTEMS)}")
    return vals


def build_parser(prog: str = "benchmark.py") -> argparse.ArgumentParser:
    from ppo_jax.cli import ArgumentParser

    p = ArgumentParser(prog=prog, description=(
        "Frames per second of the whole PPO training loop: the TorchRL tutorial vs ppo_jax "
        "(tutorial config and more envs) vs Brax's PPO trainer, same total frames, interleaved "
        "and repeated runs, each in a fresh subprocess."))
    p.add_argument("--systems", type=parse_systems, default=list(SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all; torchrl "
                        "adds a CUDA row when torch sees a GPU)")
    p.add_argument("--envs", type=parse_int_list, default=None,
                   help=f"env counts for ppo_jax and Brax besides the tutorial's 1 "
                        f"(default {','.join(map(str, DEFAULT_ENVS))}; --quick: "
                        f"{','.join(map(str, QUICK_ENVS))})")
    p.add_argument("--total-frames", type=int, default=None,
                   help=f"frames per run, rounded up to a multiple of lcm(1000, env counts) "
                        f"so every row splits it into whole batches (with 4096 envs: a "
                        f"multiple of 512,000) (default {DEFAULT_TOTAL_FRAMES}; --quick: "
                        f"{QUICK_TOTAL_FRAMES})")
    p.add_argument("--repeats", type=int, default=None, help="runs per row (default 3; --quick: 1)")
    p.add_argument("--to-threshold", type=float, nargs="?", const=DEFAULT_THRESHOLD, default=None,
                   metavar="R", help="evaluate during the runs and report seconds and frames "
                                     f"until the eval return first reaches R (default R "
                                     f"{DEFAULT_THRESHOLD:g}); frames/s then include evaluation")
    p.add_argument("--eval-every-frames", type=int, default=10_000,
                   help="with --to-threshold: evaluate about every this many frames (the "
                        "tutorial: every 10 batches of 1000; default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    p.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default="highest",
                   help="JAX matmul precision of the ppo_jax and Brax runs (default highest: "
                        "full float32, as PyTorch)")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke scale: 2000 frames, envs 1,16, 1 repeat (explicit flags win)")
    p.add_argument("--json", metavar="PATH",
                   help="write every figure, versions, device and configs")
    p.add_argument("--compile-cache", metavar="DIR", default=None,
                   help="JAX persistent compilation cache for the JAX runs (off by default, so "
                        "start-up includes a full compilation)")
    p.add_argument("--torch-threads", type=int, default=0, metavar="N",
                   help="torch intra-op threads of the TorchRL runs (0: torch's default, as the "
                        "tutorial; 1 is steadier on a machine shared with other work)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds allowed per run (default 3600)")
    p.add_argument("--keep-going", action=argparse.BooleanOptionalAction, default=True,
                   help="after a failed run, go on with the others (default: yes)")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.envs is None:
        args.envs = list(QUICK_ENVS if args.quick else DEFAULT_ENVS)
    if args.total_frames is None:
        args.total_frames = QUICK_TOTAL_FRAMES if args.quick else DEFAULT_TOTAL_FRAMES
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1 or args.total_frames < 1 or args.eval_every_frames < 1:
        from ppo_jax.cli import CLIError

        raise CLIError("--repeats, --total-frames and --eval-every-frames must be >= 1")
    args.env_counts = sorted(set([1] + list(args.envs)))
    return args


def plan_rows(args: argparse.Namespace, total_frames: int) -> tuple[list[Row], list[str]]:
    """The rows to measure, and one message per system skipped."""
    rows: list[Row] = []
    messages: list[str] = []
    evaluate = args.to_threshold is not None
    eval_frames = args.eval_every_frames if evaluate else 0
    if "torchrl" in args.systems:
        reason = torchrl_unavailable_reason()
        if reason:
            messages.append(reason)
            rows.append(Row("torchrl", "torchrl", 1, {}, "1 env, 1000/batch, 15 mb x 64",
                            skipped=reason))
        else:
            eval_every = max(1, round(eval_frames / TUTORIAL_FRAMES_PER_BATCH)) if evaluate else 0
            devices = ["cpu"] + (["cuda"] if torch_cuda_available() else [])
            for dev in devices:
                system = "torchrl" if dev == "cpu" else "torchrl_cuda"
                st = torchrl_settings(total_frames, seed=args.seed, eval_every=eval_every,
                                      device=dev, threads=args.torch_threads or None)
                rows.append(Row(system, system, 1, st, describe_config(system, st)))
    brax_reason = brax_unavailable_reason() if "brax" in args.systems else None
    if brax_reason:
        messages.append(brax_reason)
    for n in args.env_counts:
        cfg = scaled_config(n, total_frames, seed=args.seed, eval_every_frames=eval_frames,
                            matmul_precision=args.matmul_precision)
        if "ppo_jax" in args.systems:
            d = cfg.to_dict()
            rows.append(Row(f"ppo_jax_{n}", "ppo_jax", n, d, describe_config("ppo_jax", d)))
        if "brax" in args.systems:
            st = brax_settings(cfg, evaluate=evaluate)
            rows.append(Row(f"brax_{n}", "brax", n, st, describe_config("brax", st),
                            skipped=brax_reason))
    return rows, messages


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; raises RuntimeError on failure."""
    with tempfile.TemporaryDirectory(prefix="ppo_jax_bench_") as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        out_path = os.path.join(tmp, "result.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        cmd = [sys.executable, "-m", "ppo_jax.benchmark", "--worker", spec_path, out_path]
        try:
            proc = subprocess.run(cmd, env=_worker_env(), capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {timeout:g} s") from None
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-8:]
            raise RuntimeError(f"exit {proc.returncode}: " + " | ".join(tail))
        with open(out_path) as f:
            return json.load(f)


def _spec(row: Row, args: argparse.Namespace) -> dict[str, Any]:
    kind = "torchrl" if row.system.startswith("torchrl") else row.system
    spec: dict[str, Any] = {"kind": kind, "compile_cache": args.compile_cache,
                            "matmul_precision": args.matmul_precision}
    spec["config" if kind == "ppo_jax" else "settings"] = row.settings
    return spec


def measure(rows: list[Row], args: argparse.Namespace, log=print) -> None:
    """Interleaved, repeated runs: repeat r runs every row once, starting at row r mod n."""
    active = [r for r in rows if r.skipped is None]
    total = len(active) * args.repeats
    done = 0
    for rep in range(args.repeats):
        order = active[rep % len(active):] + active[: rep % len(active)] if active else []
        for row in order:
            if row.skipped is not None:  # skipped after a failure in an earlier repeat
                continue
            done += 1
            log(f"[{done}/{total}] repeat {rep + 1}/{args.repeats}: {row.label} "
                f"({row.description})")
            try:
                load_before = os.getloadavg()[0]
                result = run_worker(_spec(row, args), args.timeout)
                summary = summarize_run(result, args.to_threshold)
                summary["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            except (RuntimeError, ValueError) as e:
                msg = f"repeat {rep + 1}: {e}"
                row.errors.append(msg)
                log(f"    failed: {msg}")
                if row.system == "brax" and not row.runs:
                    row.skipped = f"Brax PPO could not run: {e}"
                if not args.keep_going and row.system != "brax":
                    return
                continue
            summary["raw"] = result
            if result.get("failed_batch") is not None:
                summary["note"] = f"NaN/Inf at batch {result['failed_batch']} (update discarded)"
            row.runs.append(summary)
            extra = f", compile {summary['compile_s']:.1f} s" if summary.get("compile_s") else ""
            log(f"    {summary['fps']:.0f} frames/s, start-up {summary['startup_s']:.1f} s{extra}, "
                f"peak RSS {summary['peak_rss_mib']:.0f} MiB, load average "
                f"{summary['loadavg_1m'][0]:.1f} -> {summary['loadavg_1m'][1]:.1f}")
            for key in ("warning", "note"):
                if summary.get(key):
                    log(f"    {key}: {summary[key]}")


def aggregate(rows: list[Row], threshold: float | None) -> list[dict[str, Any]]:
    """Per row: medians and min-max of every figure, and ratios against TorchRL."""
    out = []
    for row in rows:
        d: dict[str, Any] = {
            "key": row.key, "system": row.system, "label": row.label, "num_envs": row.num_envs,
            "description": row.description, "config": row.settings, "skipped": row.skipped,
            "errors": row.errors, "repeats": len(row.runs),
        }
        for name in ("fps", "startup_s", "compile_s", "peak_rss_mib", "device_peak_mib",
                     "call_fps", "threshold_s", "threshold_frames"):
            d[name] = _stats([r.get(name) for r in row.runs])
        if threshold is not None:
            d["threshold_reached"] = sum(r.get("threshold_s") is not None for r in row.runs)
        d["runs"] = [{k: v for k, v in r.items() if k != "raw"} | {
            "batch_marks": r["raw"]["marks"], "evals": r["raw"]["evals"],
            "xla_compiles": r["raw"].get("compiles"), "device": r["raw"].get("device")}
            for r in row.runs]
        out.append(d)
    refs = {s: next((d["fps"]["median"] for d in out if d["system"] == s and d["fps"]), None)
            for s in ("torchrl", "torchrl_cuda")}
    for d in out:
        for s, ref in refs.items():
            d[f"ratio_vs_{s}"] = (d["fps"]["median"] / ref) if (d["fps"] and ref) else None
    return out


def headline(results: list[dict[str, Any]]) -> dict[str, Any]:
    """ppo_jax / TorchRL (CPU) frames per second at the tutorial config and the best env count."""
    jx = [d for d in results if d["system"] == "ppo_jax" and d["fps"]]
    tut = next((d for d in jx if d["num_envs"] == 1), None)
    best = max(jx, key=lambda d: d["fps"]["median"], default=None)
    h: dict[str, Any] = {"reference": "torchrl"}
    h["tutorial_config"] = tut and {"num_envs": 1, "fps": tut["fps"]["median"],
                                    "ratio": tut["ratio_vs_torchrl"]}
    h["best_env_count"] = best and {"num_envs": best["num_envs"], "fps": best["fps"]["median"],
                                    "ratio": best["ratio_vs_torchrl"]}
    return h


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------
def _fmt_stat(s: dict[str, float] | None, fmt: str = "{:.0f}") -> str:
    if not s:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def _fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    has_cuda_ref = any(d["system"] == "torchrl_cuda" and d["fps"] for d in results)
    has_dev_mem = any(d["device_peak_mib"] for d in results)
    threshold = meta["settings"]["threshold"]
    lines = []
    s = meta["settings"]
    lines.append(f"Total frames per run: {s['total_frames']:,} (requested "
                 f"{s['requested_frames']:,}, rounded up to a multiple of every batch); "
                 f"{s['repeats']} repeat(s) per row, interleaved; median (min–max).")
    dev = meta["device"]
    gpus = f"GPU: {', '.join(dev['gpus'])}" if dev["gpus"] else "no GPU"
    lines.append(f"Device: {dev['cpu']} ({dev['cpu_count']} cores); {gpus}; "
                 f"JAX backend: {dev.get('jax_backend') or '–'}.")
    lines.append("")
    lines.append("Throughput (collection + updates, after the first batch"
                 + (", evaluation included" if threshold is not None else ", no evaluation") + "):")
    lines.append("")
    head = "| system | config | frames/s | × TorchRL CPU |"
    head += " × TorchRL CUDA |" if has_cuda_ref else ""
    lines.append(head)
    lines.append("| --- | --- | ---: | ---: |" + (" ---: |" if has_cuda_ref else ""))
    for d in results:
        if d["skipped"] or not d["fps"]:
            why = d["skipped"] or ("failed: " + d["errors"][-1] if d["errors"] else "no result")
            lines.append(f"| {d['label']} | {d['description']} | skipped | {why} |"
                         + (" |" if has_cuda_ref else ""))
            continue
        lines.append(f"| {d['label']} | {d['description']} | {_fmt_stat(d['fps'])} | "
                     f"{_fmt_ratio(d['ratio_vs_torchrl'])} |"
                     + (f" {_fmt_ratio(d['ratio_vs_torchrl_cuda'])} |" if has_cuda_ref else ""))
    lines.append("")
    lines.append("Warm-up (excluded from frames/s) and memory:")
    lines.append("")
    head = "| system | config | start-up s | of which compile s | peak RSS MiB |" + (
        " peak device MiB |" if has_dev_mem else "")
    lines.append(head)
    lines.append("| --- | --- | ---: | ---: | ---: |" + (" ---: |" if has_dev_mem else ""))
    for d in results:
        if not d["fps"]:
            continue
        lines.append(f"| {d['label']} | {d['description']} | "
                     f"{_fmt_stat(d['startup_s'], '{:.1f}')} | "
                     f"{_fmt_stat(d['compile_s'], '{:.1f}')} | {_fmt_stat(d['peak_rss_mib'])} |"
                     + (f" {_fmt_stat(d['device_peak_mib'])} |" if has_dev_mem else ""))
    if threshold is not None:
        lines.append("")
        lines.append(f"Time to the first eval return >= {threshold:g} (wall-clock from the start "
                     "of the run, start-up included):")
        lines.append("")
        lines.append("| system | config | reached | seconds | frames |")
        lines.append("| --- | --- | ---: | ---: | ---: |")
        for d in results:
            if not d["fps"]:
                continue
            lines.append(f"| {d['label']} | {d['description']} | "
                         f"{d['threshold_reached']}/{d['repeats']} | "
                         f"{_fmt_stat(d['threshold_s'], '{:.0f}')} | "
                         f"{_fmt_stat(d['threshold_frames'], '{:.0f}')} |")
    h = meta["headline"]
    lines.append("")
    if h["tutorial_config"] and h["tutorial_config"]["ratio"] is not None:
        b = h["best_env_count"]
        lines.append(f"**Headline: ppo_jax / TorchRL frames per second = "
                     f"{h['tutorial_config']['ratio']:.2f}× at the tutorial configuration, "
                     f"{b['ratio']:.2f}× at the best env count ({b['num_envs']} "
                     f"env{'s' if b['num_envs'] > 1 else ''}).**")
    else:
        lines.append("Headline ppo_jax / TorchRL ratio unavailable (a system was skipped or "
                     "failed).")
    return "\n".join(lines)


def notes(meta: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    out = [
        "frames/s: frames between the first and the last per-batch mark / seconds between them "
        "(JAX: host callback; TorchRL: Python loop); the first batch is warm-up.",
        "start-up: seconds to the end of the first batch minus what that batch takes at the "
        "steady rate (env and network set-up, TorchRL's init_stats, JAX compilation); "
        "peak RSS: ru_maxrss of the run's own process, imports included. 'of which compile': "
        "ppo_jax: tracing + XLA compilation of the whole run (jit(...).lower().compile()); Brax: "
        "its XLA compilations of >= 1 s before the first batch ended.",
        "configs: N envs x T steps per env = frames per batch; 'mb' = minibatches per epoch x "
        "minibatch size; 10 epochs everywhere; T = the largest divisor of total/N that is "
        "<= max(16, ceil(1000/N)) and leaves >= 2 batches; minibatch = batch // 15.",
    ]
    if any(d["system"] == "brax" for d in results):
        out.append(BRAX_PATCH_NOTE if meta.get("brax_patched") else
                   "Brax PPO ran unpatched.")
        out.append("Brax settings that differ from the tutorial: "
                   + "; ".join(BRAX_DIFFERENCES) + ".")
    for d in results:
        for k, r in enumerate(d["runs"]):
            for key in ("warning", "note"):
                if r.get(key):
                    out.append(f"{d['label']}, run {k + 1}: {r[key]}")
    if meta["settings"]["compile_cache"]:
        out.append("A persistent compilation cache was on: start-up may be a cache load, not a "
                   "compile.")
    return out


def device_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    from ppo_jax.reporting import cpu_model

    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
            gpus = [g.strip() for g in q.stdout.splitlines() if g.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    jax_dev = next((r["device"] for d in results for r in d["runs"]
                    if d["system"] in ("ppo_jax", "brax") and r.get("device")), None)
    torch_dev = {d["system"]: r["device"] for d in results for r in d["runs"]
                 if d["system"].startswith("torchrl") and r.get("device")}
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "gpus": gpus, "jax_backend": jax_dev and jax_dev["backend"],
            "jax_devices": jax_dev and jax_dev["devices"], "torch": torch_dev or None}


def main(argv: list[str] | None = None, prog: str = "benchmark.py") -> int:
    args = resolve_args(build_parser(prog).parse_args(argv))
    total = common_total_frames(args.total_frames, args.env_counts)
    rows, messages = plan_rows(args, total)
    for m in messages:
        print(m, file=sys.stderr)
    started = datetime.datetime.now(datetime.timezone.utc)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log(f"total frames per run: {total:,} (requested {args.total_frames:,}); "
        f"{sum(r.skipped is None for r in rows)} row(s) x {args.repeats} repeat(s)")
    measure(rows, args, log)
    results = aggregate(rows, args.to_threshold)

    from ppo_jax.reporting import versions

    meta: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": " ".join([prog] + list(argv if argv is not None else sys.argv[1:])),
        "settings": {
            "systems": args.systems, "envs": args.env_counts, "requested_frames": args.total_frames,
            "total_frames": total, "repeats": args.repeats, "threshold": args.to_threshold,
            "eval_every_frames": args.eval_every_frames if args.to_threshold is not None else None,
            "seed": args.seed, "matmul_precision": args.matmul_precision, "quick": args.quick,
            "compile_cache": args.compile_cache,
        },
        "versions": versions(),
        "device": device_summary(results),
        "brax_patched": any(r["raw"].get("patched") for row in rows for r in row.runs
                            if row.system == "brax"),
        "skipped": messages + [f"{d['label']}: {d['skipped']}" for d in results
                               if d["skipped"] and d["skipped"] not in messages],
    }
    meta["headline"] = headline(results)
    meta["notes"] = notes(meta, results)
    print(markdown(results, meta))
    print()
    for n in meta["notes"]:
        print(f"- {n}")
    for m in meta["skipped"]:
        print(f"- skipped: {m}")
    if args.json:
        payload = dict(meta, rows=results)
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1, default=str)
        print(f"\nwrote {args.json}")
    failed = [d for d in results if d["system"] != "brax" and not d["skipped"] and d["errors"]]
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit(main())
