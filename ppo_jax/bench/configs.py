"""Configuration rules of the benchmark: pure functions of the requested scale.

Every row trains the same total frames (:func:`common_total_frames`); ppo_jax with ``N`` envs
keeps the tutorial's shape of an update (:func:`scaled_config`); Brax's trainer and the
TorchRL tutorial get the settings closest to a ppo_jax config (:func:`brax_settings`,
:func:`torchrl_settings`). The tutorial's numbers come from ``PPOConfig()``'s defaults.
"""

from __future__ import annotations

import math
from typing import Any

from ppo_jax.config import PPOConfig

TUTORIAL = PPOConfig()
TUTORIAL_FRAMES_PER_BATCH = TUTORIAL.frames_per_batch
MINIBATCHES_PER_EPOCH = TUTORIAL.num_minibatches
MIN_STEPS_PER_ENV = 16


def common_total_frames(requested: int, env_counts: list[int] | tuple[int, ...]) -> int:
    """Smallest multiple of ``lcm(1000, *env_counts)`` that is >= ``requested`` and holds at
    least two tutorial batches: every row can then split it into whole batches."""
    lcm = math.lcm(TUTORIAL_FRAMES_PER_BATCH, *env_counts)
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


def eval_every_batches(eval_every_frames: int, frames_per_batch: int) -> int:
    """Batches between evaluations for about one every ``eval_every_frames`` (0: never)."""
    return max(1, round(eval_every_frames / frames_per_batch)) if eval_every_frames else 0


def scaled_config(num_envs: int, total_frames: int, *, seed: int = 0, eval_every_frames: int = 0,
                  matmul_precision: str = "highest") -> PPOConfig:
    """``num_envs`` envs at the same total frames; 1 env is the tutorial configuration.

    Rules: ``steps_per_env`` from :func:`steps_per_env`; frames_per_batch = num_envs x that;
    minibatch = frames_per_batch // 15, so every epoch is 15 minibatches (each frame in 10
    epochs; fewer than 15 frames of a batch left out of an epoch, where the tutorial leaves 40);
    evaluation every ``round(eval_every_frames / frames_per_batch)`` batches (0: never).
    """
    if num_envs == 1:
        fpb = TUTORIAL.frames_per_batch
        minibatch = TUTORIAL.minibatch_size
    else:
        fpb = num_envs * steps_per_env(num_envs, total_frames)
        minibatch = max(1, fpb // MINIBATCHES_PER_EPOCH)
    return TUTORIAL.replace(seed=seed, num_envs=num_envs, frames_per_batch=fpb,
                            total_frames=total_frames, minibatch_size=minibatch,
                            eval_every=eval_every_batches(eval_every_frames, fpb),
                            matmul_precision=matmul_precision)


# fields scaled_config and the benchmark's own flags set: --ppo-jax-config leaves them alone
BENCHMARK_FIELDS = ("env", "num_envs", "frames_per_batch", "total_frames", "minibatch_size",
                    "eval_every", "seed", "matmul_precision")


def parse_overrides(specs: list[str]) -> dict[str, Any]:
    """``["init_stats_frames=10000", "obs_norm=safe"]`` -> ``{field: value}`` of PPOConfig's
    scalar fields (converted to the field's type and checked on the tutorial config); one
    ``CLIError`` line for anything else."""
    from ppo_jax.cli.common import CLIError
    from ppo_jax.config import field_types

    types = field_types()
    out: dict[str, Any] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not text.strip():
            raise CLIError(f"--ppo-jax-config {spec!r}: expected FIELD=VALUE "
                           "(e.g. init_stats_frames=10000)")
        if name not in types:
            raise CLIError(f"--ppo-jax-config {name}: no such PPOConfig field")
        if name in out:
            raise CLIError(f"--ppo-jax-config {name} is given twice: give each field once")
        if name in BENCHMARK_FIELDS:
            raise CLIError(f"--ppo-jax-config {name}: the benchmark sets it (see its flags)")
        kind = types[name]
        if kind not in (int, float, str, bool):
            raise CLIError(f"--ppo-jax-config {name}: only single-valued fields can be set")
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value: Any = text.lower() in ("true", "1")
            else:
                value = kind(text)
        except ValueError:
            raise CLIError(f"--ppo-jax-config {name}: expected {kind.__name__}, got {text!r}") \
                from None
        out[name] = value
    try:  # what a run would refuse (check_values: e.g. clip_epsilon > 1) before any runs
        TUTORIAL.replace(**out).check_values()
    except (ValueError, TypeError) as e:
        raise CLIError(f"--ppo-jax-config: {e}") from None
    return out


def brax_settings(cfg: PPOConfig, *, evaluate: bool) -> dict[str, Any]:
    """Keyword arguments of Brax's ``ppo.train`` matching ``cfg`` as far as its API allows.

    Brax collects ``batch_size * num_minibatches`` unrolls of ``unroll_length`` steps per
    training step and splits them into ``num_minibatches`` minibatches of ``batch_size``
    unrolls. We keep the batch (num_envs x steps_per_env frames) and choose, among unroll
    lengths dividing steps_per_env, the one whose minibatch (batch_size x unroll_length
    frames) is closest to ppo_jax's minibatch_size; ties go to more minibatches nearer 15,
    then to the longer unroll (a longer GAE horizon). ``num_evals`` makes each training epoch
    one batch (no evaluation), or about ``eval_every`` batches (evaluation). What still
    differs from the tutorial is listed in this package's README.
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
        episode_length=cfg.max_episode_steps or 1000,  # 0: the pendulum's own time limit
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


def torchrl_settings(cfg: PPOConfig, *, device: str, threads: int | None = None) -> dict:
    """What the TorchRL tutorial loop (:mod:`ppo_jax.bench.worker_torchrl`) runs for the
    one-env config ``cfg`` (the tutorial's: :func:`scaled_config` with 1 env), under the
    tutorial's names (``threads``: torch's intra-op threads; None: torch's default)."""
    if cfg.num_envs != 1:
        raise ValueError(f"the TorchRL tutorial runs 1 env, got num_envs={cfg.num_envs}")
    return dict(
        env=cfg.env, device=device, seed=cfg.seed, torch_threads=threads,
        frames_per_batch=cfg.frames_per_batch, total_frames=cfg.total_frames,
        hidden_sizes=list(cfg.hidden_sizes), lr=cfg.lr, max_grad_norm=cfg.max_grad_norm,
        sub_batch_size=cfg.minibatch_size, num_epochs=cfg.num_epochs,
        clip_epsilon=cfg.clip_epsilon, gamma=cfg.gamma, lmbda=cfg.lmbda,
        entropy_eps=cfg.entropy_coeff, critic_coeff=cfg.critic_coeff,
        loss_critic_type=cfg.critic_loss, init_stats_num_iter=cfg.init_stats_frames,
        eval_every=cfg.eval_every, eval_max_steps=cfg.eval_max_steps,
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n > 1 else ''}"


def describe_config(system: str, settings: dict[str, Any]) -> str:
    """One line of a row's configuration for the table."""
    if system == "brax":
        s = settings
        fpb = s["unroll_length"] * s["batch_size"] * s["num_minibatches"]
        return (f"{_plural(s['num_envs'], 'env')}, unroll "
                f"{s['unroll_length']}, {fpb}/batch, {s['num_minibatches']} mb x "
                f"{s['batch_size'] * s['unroll_length']}")
    if system.startswith("torchrl"):
        fpb, sub = settings["frames_per_batch"], settings["sub_batch_size"]
        threads = settings.get("torch_threads")
        return f"1 env, {fpb}/batch, {fpb // sub} mb x {sub}" + (
            f", {_plural(threads, 'torch thread')}" if threads else "")
    c = settings
    steps = c["frames_per_batch"] // c["num_envs"]
    nmb = c["frames_per_batch"] // c["minibatch_size"]
    return (f"{_plural(c['num_envs'], 'env')} x {steps}, "
            f"{c['frames_per_batch']}/batch, {nmb} mb x {c['minibatch_size']}")
