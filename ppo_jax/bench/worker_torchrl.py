"""Benchmark worker: the TorchRL tutorial's training loop, timed per batch by the loop itself
(runs in a fresh subprocess, see :mod:`ppo_jax.bench.worker`). Its settings:
:func:`ppo_jax.bench.configs.torchrl_settings`."""

from __future__ import annotations

import os
import time
from typing import Any

from ppo_jax.bench import probes


def worker_torchrl(spec: dict[str, Any]) -> dict[str, Any]:
    """The tutorial's training loop (torchrl 0.14 names), timed per batch; its objects come
    from :mod:`ppo_jax.interop.torchrl.reference` (shared with the parity tests)."""
    t_import = time.perf_counter()
    import warnings

    import torch
    from torchrl.collectors import Collector
    from torchrl.data.replay_buffers import ReplayBuffer
    from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
    from torchrl.data.replay_buffers.storages import LazyTensorStorage
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from ppo_jax.interop.torchrl import reference as ref

    warnings.filterwarnings("ignore")
    s = spec["settings"]
    t0 = time.perf_counter()
    device = torch.device(s["device"])
    if s.get("torch_threads"):
        torch.set_num_threads(int(s["torch_threads"]))
    torch.manual_seed(s["seed"])
    frames_per_batch, total_frames = s["frames_per_batch"], s["total_frames"]

    env = ref.tutorial_env(s["env"], seed=s["seed"], device=device)
    ref.init_obs_norm(env.transform[0], s["init_stats_num_iter"])
    action_spec = env.action_spec
    modules = ref.tutorial_modules(
        env.observation_spec["observation"].shape[-1], action_spec.shape[-1],
        s["hidden_sizes"], low=action_spec.space.low, high=action_spec.space.high,
        spec=action_spec, device=device,
    )
    policy_module, value_module = modules.policy, modules.value

    collector = Collector(env, policy_module, frames_per_batch=frames_per_batch,
                          total_frames=total_frames, split_trajs=False, device=device)
    if s.get("save_init"):  # the start a matched ppo_jax run takes (--init-from-torchrl)
        from ppo_jax.interop.torchrl.export import from_tutorial_modules, save

        partial = s["save_init"] + ".partial"  # a matched run waits for the whole file
        save(from_tutorial_modules(
            modules, env.transform[0], s["env"], s["hidden_sizes"],
            low=action_spec.space.low.cpu().numpy(), high=action_spec.space.high.cpu().numpy(),
            source={"torchrl_tutorial_start": {"seed": s["seed"]}}), partial)
        os.replace(partial, s["save_init"])
    norm = env.transform[0]
    start_stats = {"loc": norm.loc.detach().cpu().reshape(-1).tolist(),
                   "scale": norm.scale.detach().cpu().reshape(-1).tolist()}
    # TorchRL's log-prob of a stored action sees atanh(clamp(a, +-(1 - resolution))):
    # the share of frames with an action entry at that clamp (ppo_jax's `saturation`), in
    # action space as TanhNormal maps it (mid + half * t, the same float32 operations)
    low, high = action_spec.space.low.to(device), action_spec.space.high.to(device)
    mid, half = (high + low) / 2, (high - low) / 2
    lim = torch.tensor(1.0 - torch.finfo(torch.float32).resolution, device=device)
    upper, lower = mid + half * lim, mid + half * -lim
    replay_buffer = ReplayBuffer(storage=LazyTensorStorage(max_size=frames_per_batch),
                                 sampler=SamplerWithoutReplacement())
    advantage_module = ref.tutorial_gae(value_module, gamma=s["gamma"], lmbda=s["lmbda"])
    loss_module = ref.tutorial_loss(
        policy_module, value_module, clip_epsilon=s["clip_epsilon"],
        entropy_coeff=s["entropy_eps"], critic_coeff=s["critic_coeff"],
        loss_critic_type=s["loss_critic_type"],
    )
    optim, scheduler = ref.tutorial_optimizer(
        loss_module.parameters(), lr=s["lr"], num_batches=total_frames // frames_per_batch)

    marks: list[tuple[int, float]] = []
    evals: list[tuple[int, float, float]] = []
    logs: dict[str, list] = {"reward": [], "step_count": [], "lr": [], "saturation": []}
    sub = s["sub_batch_size"]
    eval_every = s["eval_every"]
    for i, data in enumerate(collector):
        for _ in range(s["num_epochs"]):
            advantage_module(data)
            replay_buffer.extend(data.reshape(-1).cpu())
            for _ in range(frames_per_batch // sub):
                subdata = replay_buffer.sample(sub)
                ref.loss_backward(loss_module, subdata.to(device))
                ref.clipped_step(optim, loss_module.parameters(), s["max_grad_norm"])
        logs["reward"].append(data["next", "reward"].mean().item())
        logs["step_count"].append(data["step_count"].max().item())
        logs["lr"].append(optim.param_groups[0]["lr"])
        a = data["action"]
        logs["saturation"].append(((a >= upper) | (a <= lower)).any(-1).float().mean().item())
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
                per_batch={"saturation": logs["saturation"], "reward": logs["reward"]},
                start_stats=start_stats,
                peak_rss_mib=probes.rss_mib(), device_peak_mib=peak_dev, device=info)
