"""The TorchRL PPO tutorial's objects, built in one place.

The benchmark's TorchRL worker (:mod:`ppo_jax.bench.worker_torchrl`), the parity fixture
script (``tests/data/make_torchrl_reference.py``) and the live parity tests
(``tests/test_torchrl_live.py``) all build the tutorial's env, networks, GAE, loss and
optimizer here, with the installed torchrl's names (torchrl >= 0.11: ``critic_coeff`` /
``entropy_coeff``; 0.14: ``Collector``).

Defaults are the tutorial's hyperparameters, read from :class:`ppo_jax.config.PPOConfig`'s
defaults (one source). ``torch`` / ``torchrl`` / ``tensordict`` are imported inside the
functions; importing this module imports neither them nor jax.

Weight and statistics conversion between these objects and ppo_jax lives in
:mod:`ppo_jax.interop.torchrl.compat`.
"""

from __future__ import annotations

import contextlib

from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from ppo_jax.config import PPOConfig

TUTORIAL = PPOConfig()

__all__ = [
    "fixed_standard_normal",
    "TUTORIAL",
    "TutorialModules",
    "tutorial_env",
    "init_obs_norm",
    "record_init_stats",
    "tutorial_modules",
    "tutorial_gae",
    "tutorial_loss",
    "tutorial_optimizer",
    "loss_backward",
    "clipped_step",
]


class TutorialModules(NamedTuple):
    """The tutorial's networks and the TorchRL modules wrapping them."""

    actor_net: Any  # nn.Sequential(Linear, Tanh, ..., Linear, NormalParamExtractor)
    policy: Any  # ProbabilisticActor(TanhNormal), return_log_prob=True
    value_net: Any  # nn.Sequential(Linear, Tanh, ..., Linear(1))
    value: Any  # ValueOperator


# --------------------------------------------------------------------------- environment
def tutorial_env(env_id: str, seed: int | None = None, device=None):
    """``TransformedEnv(GymEnv(env_id), Compose(ObservationNorm, DoubleToFloat, StepCounter))``
    with the ``ObservationNorm`` NOT yet initialized (see :func:`init_obs_norm`).

    ``env_id``: the Gymnasium id, :data:`ppo_jax.envs.ENV_ID` for the tutorial.
    """
    from torchrl.envs import Compose, DoubleToFloat, ObservationNorm, StepCounter, TransformedEnv
    from torchrl.envs.libs.gym import GymEnv

    env = TransformedEnv(
        GymEnv(env_id, device=device),
        Compose(ObservationNorm(in_keys=["observation"]), DoubleToFloat(), StepCounter()),
    )
    if seed is not None:
        env.set_seed(seed)
    return env


def init_obs_norm(observation_norm, num_iter: int = TUTORIAL.init_stats_frames) -> None:
    """The tutorial's ``observation_norm.init_stats(num_iter, reduce_dim=0, cat_dim=0)``."""
    observation_norm.init_stats(num_iter=num_iter, reduce_dim=0, cat_dim=0)


def record_init_stats(observation_norm, num_iter: int) -> np.ndarray:
    """Run :func:`init_obs_norm` and return the observations it reduced, ``[N, obs_dim]`` in
    their own dtype (float64 for Gymnasium), by recording the parent env's rollouts."""
    parent = observation_norm.parent
    original = parent.rollout
    seen = []

    def rollout(*args, **kwargs):
        td = original(*args, **kwargs)
        seen.append(td.get(observation_norm.in_keys[0]).detach().cpu().numpy())
        return td

    parent.rollout = rollout  # instance attribute shadows the method
    try:
        init_obs_norm(observation_norm, num_iter)
    finally:
        del parent.rollout
    return np.concatenate(seen, 0)


# --------------------------------------------------------------------------- networks
def tutorial_modules(
    obs_dim: int,
    action_dim: int,
    hidden_sizes: Sequence[int] = TUTORIAL.hidden_sizes,
    *,
    low=-1.0,
    high=1.0,
    spec=None,
    device=None,
) -> TutorialModules:
    """The tutorial's actor (``ProbabilisticActor`` over ``TanhNormal(low, high)``) and
    critic (``ValueOperator``), ``LazyLinear`` layers materialized with torch's default init."""
    import torch
    from tensordict.nn import TensorDictModule
    from tensordict.nn.distributions import NormalParamExtractor
    from torch import nn
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator

    def mlp(out):
        layers = []
        for h in hidden_sizes:
            layers += [nn.LazyLinear(h, device=device), nn.Tanh()]
        return layers + [nn.LazyLinear(out, device=device)]

    actor_net = nn.Sequential(*mlp(2 * action_dim), NormalParamExtractor())
    value_net = nn.Sequential(*mlp(1))
    with torch.no_grad():  # materialize the lazy layers
        actor_net(torch.zeros(1, obs_dim, device=device))
        value_net(torch.zeros(1, obs_dim, device=device))
    low = torch.as_tensor(low, dtype=torch.float32, device=device).expand(action_dim)
    high = torch.as_tensor(high, dtype=torch.float32, device=device).expand(action_dim)
    policy = ProbabilisticActor(
        module=TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        spec=spec,
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": low, "high": high},
        return_log_prob=True,
    )
    value = ValueOperator(module=value_net, in_keys=["observation"])
    return TutorialModules(actor_net, policy, value_net, value)


# --------------------------------------------------------------------------- GAE and loss
def tutorial_gae(
    value_module,
    *,
    gamma: float = TUTORIAL.gamma,
    lmbda: float = TUTORIAL.lmbda,
    average_gae: bool = TUTORIAL.standardize_advantage,
):
    """``GAE(gamma, lmbda, value_network=value_module, average_gae=True)``."""
    from torchrl.objectives.value import GAE

    return GAE(gamma=gamma, lmbda=lmbda, value_network=value_module, average_gae=average_gae)


def tutorial_loss(
    policy,
    value_module,
    *,
    clip_epsilon: float = TUTORIAL.clip_epsilon,
    entropy_coeff: float = TUTORIAL.entropy_coeff,
    critic_coeff: float = TUTORIAL.critic_coeff,
    loss_critic_type: str = TUTORIAL.critic_loss,
):
    """``ClipPPOLoss`` with the tutorial's settings."""
    from torchrl.objectives import ClipPPOLoss

    return ClipPPOLoss(
        actor_network=policy,
        critic_network=value_module,
        clip_epsilon=clip_epsilon,
        entropy_bonus=bool(entropy_coeff),
        entropy_coeff=entropy_coeff,
        critic_coeff=critic_coeff,
        loss_critic_type=loss_critic_type,
    )


def loss_backward(loss_module, batch):
    """``loss_objective + loss_critic + loss_entropy`` of ``loss_module(batch)``,
    backpropagated; returns ``(that sum, the loss module's output)``."""
    out = loss_module(batch)
    total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
    total.backward()
    return total, out


# --------------------------------------------------------------------------- optimizer
def tutorial_optimizer(
    parameters: Iterable,
    *,
    lr: float = TUTORIAL.lr,
    num_batches: int = TUTORIAL.num_batches,
):
    """``Adam(parameters, lr)`` and ``CosineAnnealingLR(adam, num_batches, 0.0)`` (the
    tutorial steps the scheduler once per batch)."""
    import torch

    optimizer = torch.optim.Adam(parameters, lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_batches, 0.0)
    return optimizer, scheduler


def clipped_step(optimizer, parameters: Iterable, max_grad_norm: float = TUTORIAL.max_grad_norm):
    """``clip_grad_norm_(parameters, max_grad_norm)`` (the GLOBAL norm), ``optimizer.step()``,
    ``optimizer.zero_grad()``; returns the pre-clip global gradient norm (a tensor: no
    device synchronization)."""
    import torch

    norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    return norm


# --------------------------------------------------------------------------- fixed noise
@contextlib.contextmanager
def fixed_standard_normal(noise):
    """Make ``torch.distributions.Normal.rsample`` use ``noise`` as its standard normal draw.

    Patches ``torch.distributions.normal._standard_normal`` (``rsample`` is
    ``loc + eps * scale``); every call must ask for ``noise.size`` numbers and gets ``noise``
    reshaped. Yields the list of requested shapes, so callers can check how many draws
    happened (``ClipPPOLoss``'s MC entropy makes exactly one per forward).
    """
    import torch
    import torch.distributions.normal as normal_mod

    noise = torch.as_tensor(np.array(noise, dtype=np.float32, copy=True))
    calls = []
    original = normal_mod._standard_normal

    def fake(shape, dtype, device):
        shape = torch.Size(shape)
        if shape.numel() != noise.numel():
            raise ValueError(f"fixed noise has {noise.numel()} values, rsample wants {shape}")
        calls.append(tuple(shape))
        return noise.to(dtype=dtype, device=device).reshape(shape).clone()

    normal_mod._standard_normal = fake
    try:
        yield calls
    finally:
        normal_mod._standard_normal = original
