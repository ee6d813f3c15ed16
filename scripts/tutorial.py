#!/usr/bin/env python
# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The TorchRL PPO tutorial, in JAX
#
# This walkthrough follows the TorchRL tutorial *Reinforcement Learning (PPO) with TorchRL*
# (`coding_ppo.py`) section by section, in its order: hyperparameters, the environment and
# its transforms, the policy, the value network, the data collector, the replay buffer, the
# loss, the training loop and the results. Each section starts with the TorchRL lines it
# replaces and the ppo_jax code that takes their place, then runs the ppo_jax code. Where
# TorchRL is installed, sections 3, 4 and 7 also compute the same numbers with TorchRL's own
# modules, on the same weights and the same batch, and check that the two agree.
#
# Every number comes from the library's own functions (`ppo_jax.core.train.Trainer`, `ppo_jax.
# normalization`, `ppo_jax.core.distributions`, `ppo_jax.run.runner`, ...). The walkthrough only
# calls them one at a time; `scripts/train.py` runs the same functions as three compiled
# programs.
#
# Run it as a script or as a notebook:
#
# ```bash
# python scripts/tutorial.py                          # the tutorial's run: 10,000 frames
# python scripts/tutorial.py --total-frames 1000000   # the tutorial's "complete training"
# PPO_JAX_TUTORIAL_FRAMES=1000 python scripts/tutorial.py   # one batch (what the test runs)
# jupytext --to notebook scripts/tutorial.py          # or open it in VS Code and run the cells
# ```
#
# It writes `metrics.json` and `curves.png` (the tutorial's four panels) to `--out`
# (default `runs/tutorial`). Its compiled programs are kept in the same cache as
# `scripts/train.py`'s (`--compile-cache-dir`), so a second run starts in seconds.

# %%
import argparse
import os
import sys

from ppo_jax.cli import common as cli
from ppo_jax.config import PPOConfig
from ppo_jax.run.run_dir import first_missing, remove_empty

PROG = "tutorial.py"
PROG_PATH = "scripts/tutorial.py"  # metrics.json's "written_by"
FRAMES_ENV = "PPO_JAX_TUTORIAL_FRAMES"  # CI sets a small frame count here
TUTORIAL_FRAMES = PPOConfig.from_preset("tutorial").total_frames  # the seed's 10_000


def in_notebook() -> bool:
    """True inside a Jupyter / VS Code kernel (whose argv is the kernel's, not ours)."""
    return "ipykernel" in sys.modules


parser = cli.ArgumentParser(
    prog=PROG, allow_abbrev=False,
    description="The TorchRL PPO tutorial, section by section, in ppo_jax (percent-cell "
                "script: also a notebook).")
parser.add_argument("--total-frames", type=int, default=None, metavar="N",
                    help=f"env steps of the training run in section 8 (default: ${FRAMES_ENV}, "
                         f"else the tutorial's {TUTORIAL_FRAMES}; 1000000 for a full run)")
parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
parser.add_argument("--out", default=os.path.join("runs", "tutorial"),
                    help="directory for metrics.json and curves.png")
parser.add_argument("--torchrl", action=argparse.BooleanOptionalAction, default=True,
                    help="also compute sections 3, 4 and 7 with TorchRL, where it is installed")
cli.add_compile_cache_flags(parser)
if in_notebook():  # a kernel's argv (-f kernel.json) is not ours; %run's flags still count
    args, _ = parser.parse_known_args(sys.argv[1:])
else:
    args = parser.parse_args(sys.argv[1:])
OUT_MADE = first_missing(os.path.abspath(args.out))  # what a stop before its files removes


def remove_empty_out():
    if OUT_MADE is not None:
        remove_empty(os.path.abspath(args.out), OUT_MADE)


if not in_notebook() and not sys.flags.interactive:  # as the commands: Ctrl-C and known
    # failures in one line (not at a prompt that stays after the walkthrough: python -i)
    cli.raise_interrupts()
    cli.one_line_failures(PROG, before_exit=remove_empty_out)

try:
    frames = args.total_frames
    if frames is None and os.environ.get(FRAMES_ENV, "").strip():
        try:
            frames = int(os.environ[FRAMES_ENV])
        except ValueError:
            raise cli.CLIError(f"{FRAMES_ENV} must be a whole number of frames, got "
                               f"{os.environ[FRAMES_ENV]!r}") from None
    config = cli.make_config(PPOConfig.from_preset("tutorial"),
                             {"total_frames": TUTORIAL_FRAMES if frames is None else frames,
                              "seed": args.seed})
    cli.require_float32()
    if os.path.isdir(args.out):
        from ppo_jax.run.runner import run_files_in
        from ppo_jax.util import JsonFileError, read_json_file

        held, files = run_files_in(args.out)
        try:  # the walkthrough's own files from an earlier run are replaced
            ours = held == ["metrics.json"] and set(files) <= {"curves.png"} and read_json_file(
                os.path.join(args.out, "metrics.json")).get("written_by") == PROG_PATH
        except (JsonFileError, AttributeError):
            ours = False
        if (held or files) and not ours:
            raise cli.CLIError(f"{args.out} holds a run ({', '.join(held + files)}) whose "
                               "metrics.json does not say this walkthrough wrote it (written_by): "
                               "its files would be replaced: move them away or choose another "
                               "--out")
    cli.check_not_in_a_run(args.out, "--out")
    OUT = cli.ensure_writable_dir(args.out)
    for name in ("metrics.json", "curves.png"):  # what the walkthrough writes at its end
        if os.path.isdir(os.path.join(OUT, name)):
            raise cli.CLIError(f"{os.path.join(OUT, name)} is a directory, where the "
                               "walkthrough writes its file: choose another --out")
    CACHE = cli.apply_compile_cache_flags(args)
except cli.CLIError as e:
    remove_empty_out()
    parser.exit(e.code, f"{PROG}: error: {e}\n")

# %% [markdown]
# Everything below runs on the device JAX picks (the GPU when it sees one). Each piece is
# compiled once with `jax.jit`; the walkthrough's own small programs go through the same
# program store as the training programs (`ppo_jax.run.compile_cache`), keyed by the config,
# this file's text and ppo_jax's source, so a second run loads them instead of tracing MJX
# again.

# %%
import dataclasses
import hashlib
import importlib.util
import time

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.run import compile_cache, metrics
from ppo_jax.core import distributions, networks, sampling
from ppo_jax.envs import VectorEnv
from ppo_jax.run.runs import Runs
from ppo_jax.core.hyper import hyper_of, program_config
from ppo_jax.core.normalization import init_stats, normalize
from ppo_jax.core.train import make_train, precision

np.set_printoptions(precision=4, suppress=True, linewidth=100)
TORCHRL_INSTALLED = all(
    importlib.util.find_spec(m) is not None for m in ("torch", "torchrl", "tensordict"))
HAVE_TORCHRL = args.torchrl and TORCHRL_INSTALLED
NO_TORCHRL = "TorchRL not installed" if not TORCHRL_INSTALLED else "--no-torchrl"
try:
    with open(__file__, "rb") as f:
        SCRIPT_HASH = hashlib.sha256(f.read()).hexdigest()
except (NameError, OSError):  # a notebook kernel has no __file__: plain jit (JAX's cache)
    SCRIPT_HASH = None

print(f"JAX {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}); "
      f"compile cache: {CACHE or 'off'}")
if HAVE_TORCHRL:
    import torch
    import torchrl
    from tensordict import TensorDict

    from ppo_jax.interop.torchrl import compat as torchrl_compat, reference as torchrl_reference

    def tensor(x):
        """A torch tensor of a JAX (or numpy) array: a copy, torch's to own."""
        return torch.as_tensor(np.array(x))

    print(f"TorchRL {torchrl.__version__} (torch {torch.__version__}): sections 3, 4 and 7 "
          "compare against it")
else:
    print(f"{NO_TORCHRL}: the side-by-side TorchRL numbers of sections 3, 4 and 7 are "
          "skipped" + ("" if TORCHRL_INSTALLED else " (pip install -e '.[torchrl]' to see them)"))


def program(name, fn, *example_args):
    """``fn`` compiled for arguments shaped like ``example_args``: loaded from the program
    store when this file, the config and ppo_jax are unchanged, else traced and compiled
    (and stored). Data enter as arguments, never as constants, so a stored program serves
    every seed."""
    with precision(config):  # full float32 matmuls, as PyTorch (the config's default)
        if SCRIPT_HASH is None:
            t = time.perf_counter()
            exe = jax.jit(fn).lower(*example_args).compile()
            print(f"  [{name}: compiled in {time.perf_counter() - t:.1f} s]")
            return exe
        shapes = [(tuple(x.shape), str(x.dtype)) for x in jax.tree_util.tree_leaves(example_args)]
        key = compile_cache.store_key(
            f"tutorial_{name}",
            {"config": program_config(config).to_dict(), "script": SCRIPT_HASH, "args": shapes})
        exes, infos = compile_cache.obtain(
            {name: key},
            lambda names: [(name, compile_cache.lower(fn, *example_args, name=key))],
            f"the tutorial's {name} program")
    info = infos[name]
    how = {"compiled": "traced and compiled", "jax_cache": "traced, compile from JAX's cache",
           "ppo_programs": "loaded from the program store", "in_process": "already loaded"}
    print(f"  [{name}: {how.get(info.source, info.source)}, {info.seconds:.1f} s]")
    return exes[name]


def show(tree, indent="  "):
    """Print the shape and dtype of every array of a (nested) dataclass or dict (fields this
    config leaves empty, None, are skipped)."""
    items = (((f.name, getattr(tree, f.name)) for f in dataclasses.fields(tree))
             if dataclasses.is_dataclass(tree) else tree.items())
    for name, x in items:
        if x is None:
            continue
        if dataclasses.is_dataclass(x) or isinstance(x, dict):
            print(f"{indent}{name}:")
            show(x, indent + "    ")
        else:
            print(f"{indent}{name:<12} {str(tuple(x.shape)):<14} {x.dtype}")


def agree(what, got, want, *, rtol, atol):
    """Assert ppo_jax's ``got`` and TorchRL's ``want`` agree elementwise to
    ``atol + rtol |want|``; print both and the largest difference."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64).reshape(got.shape)
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    if got.size == 1:
        values = f"ppo_jax {got.item() + 0.0: .7g}   TorchRL {want.item() + 0.0: .7g}"
    else:
        values = f"{got.size} values, ppo_jax mean {got.mean(): .6g}"
    print(f"  {what:<28} {values}   max |diff| {err:.2g}")
    assert np.all(np.abs(got - want) <= atol + rtol * np.abs(want)), (
        f"{what}: ppo_jax and TorchRL differ by up to {err:.3g} (rtol {rtol}, atol {atol})")


# One key per random draw of the walkthrough (the training run of section 8 has its own).
KEYS = dict(zip(
    ("stats", "rollout", "reset", "params", "act", "collect", "perm", "loss", "update"),
    jax.random.split(jax.random.PRNGKey(config.seed), 9)))

# %% [markdown]
# ## 1. Hyperparameters
#
# TorchRL (the seed):
#
# ```python
# num_cells = 256  # number of cells in each layer i.e. output dim.
# lr = 3e-4
# max_grad_norm = 1.0
# frames_per_batch = 1000
# total_frames = 10_000
# sub_batch_size = 64  # cardinality of the sub-samples gathered from the current data
# num_epochs = 10  # optimisation steps per batch of data collected
# clip_epsilon = 0.2
# gamma = 0.99
# lmbda = 0.95
# entropy_eps = 1e-4
# ```
#
# ppo_jax: one frozen dataclass whose defaults are these values; every field is also a flag
# of `scripts/train.py` (`--lr`, `--minibatch-size`, ...).
#
# ```python
# config = PPOConfig.from_preset("tutorial")      # = PPOConfig(); replace(total_frames=...) etc.
# ```
#
# The device is JAX's choice (there is no `device=`), and the `frame_skip` of 5 is the
# environment's own (Gymnasium's v4), as in the seed.

# %%
SEED_NAMES = {  # the seed's variable -> the PPOConfig field
    "num_cells": "hidden_sizes", "lr": "lr", "max_grad_norm": "max_grad_norm",
    "frames_per_batch": "frames_per_batch", "total_frames": "total_frames",
    "sub_batch_size": "minibatch_size", "num_epochs": "num_epochs",
    "clip_epsilon": "clip_epsilon", "gamma": "gamma", "lmbda": "lmbda",
    "entropy_eps": "entropy_coeff",
}
SEED_VALUES = {"num_cells": 256, "lr": 3e-4, "max_grad_norm": 1.0, "frames_per_batch": 1000,
               "total_frames": 10_000, "sub_batch_size": 64, "num_epochs": 10,
               "clip_epsilon": 0.2, "gamma": 0.99, "lmbda": 0.95, "entropy_eps": 1e-4}
docs = {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(PPOConfig)}
for seed_name, field in SEED_NAMES.items():
    value = getattr(config, field)
    print(f"{seed_name:>16} -> {field:<16} = {str(value):<16} {docs[field].split('. ')[0]}")
    want = SEED_VALUES[seed_name]
    if field == "hidden_sizes":
        assert value == (want,) * 3, value  # three hidden layers of num_cells
    elif field != "total_frames":  # the one knob this script lets you change
        assert value == want, (field, value, want)
print(f"derived: {config.num_batches} batches of {config.frames_per_batch} frames, "
      f"{config.num_minibatches} minibatches of {config.minibatch_size} per epoch "
      f"(frames_per_batch // sub_batch_size), evaluation after batches "
      f"{list(config.eval_batches)}")

# %% [markdown]
# ## 2. The environment and its transforms
#
# TorchRL (the seed):
#
# ```python
# base_env = GymEnv("InvertedDoublePendulum-v4", device=device)
# env = TransformedEnv(base_env, Compose(ObservationNorm(in_keys=["observation"]),
#                                        DoubleToFloat(), StepCounter()))
# env.transform[0].init_stats(num_iter=1000, reduce_dim=0, cat_dim=0)
# print("normalization constant shape:", env.transform[0].loc.shape)
# rollout = env.rollout(3)
# ```
#
# ppo_jax: the env is Gymnasium's v4 ported to MJX (same MJCF, RK4, `frame_skip` 5, reward,
# termination and reset noise), a pure `reset(key)` / `step(state, action)` that jits and
# vmaps. The transforms are not wrappers: `ObservationNorm` is a pair of arrays applied by
# `normalize(stats, obs)` wherever an observation enters a network, `DoubleToFloat` is not
# needed (MJX runs in float32), and `StepCounter` is the env state's `steps`.
#
# ```python
# trainer = make_train(config); env = trainer.env
# obs_stats = init_stats(env, key, config.init_stats_frames, config.obs_norm)
# normalize(obs_stats, obs)                       # obs * scale + loc, as ObservationNorm
# ```

# %%
trainer = make_train(config)
env = trainer.env
# the action bounds ([-1, 1] here; TorchRL's TanhNormal(low, high) takes the spec's)
action_low, action_high = env.action_low, env.action_high
assert np.all(action_low < action_high)
# The policy's tanh-Normal is mapped onto those bounds (TorchRL's TanhNormal(low, high));
# None means [-1, 1], the plain tanh, which is this env's case.
BOUNDS = trainer.bounds


def to_action(u):
    """The action of a pre-tanh value ``u``: tanh, then the env's bounds."""
    return distributions.squash(u, BOUNDS)

print(f"env: {env.env_id} on MJX: {env.frame_skip} physics steps per env step of "
      f"{env.dt:.3g} s, time limit {env.max_episode_steps} steps")

# ObservationNorm.init_stats: random-action rollouts, each stopped at its first done, until
# 1000 observations; the same procedure, as one jitted scan over the MJX env.
stats_program = program(
    "init_stats", lambda k: init_stats(env, k, config.init_stats_frames, config.obs_norm),
    KEYS["stats"])
obs_stats = stats_program(KEYS["stats"])
print("normalization constant shape:", obs_stats.loc.shape)
assert obs_stats.loc.shape == obs_stats.scale.shape == (env.observation_size,) == (11,)
print("  loc:  ", np.asarray(obs_stats.loc))
print("  scale:", np.asarray(obs_stats.scale))
flat = np.flatnonzero(np.isclose(np.asarray(obs_stats.scale), 1e6))
print(f"  entries {flat.tolist()} did not vary under random play (the constraint forces): "
      "scale 1e6, as TorchRL's ObservationNorm gives them (--obs-norm safe avoids it)")

# %% [markdown]
# The specs. TorchRL describes them with `observation_spec`, `reward_spec` and
# `action_spec` and checks them with `check_env_specs(env)`; here they are the env's sizes and
# bounds and the dtypes of its state, and the check is an assertion on a rollout.
#
# TorchRL's `env.rollout(3)` draws random actions from the action spec; here three random
# steps are one `lax.scan` over `env.step`. Its output is TorchRL's rollout TensorDict as a
# nested dict, with the same `"next"` entries (normalized observations, as the transformed
# env returns them).

# %%
def random_rollout(stats, key, steps=3):
    """``steps`` random actions from a reset: TorchRL's ``env.rollout(steps)``."""
    k_reset, k_steps = jax.random.split(key)

    def step(state, k):
        action = jax.random.uniform(k, (env.action_size,), minval=action_low,
                                    maxval=action_high)
        nxt = env.step(state, action)
        out = dict(observation=normalize(stats, state.obs), action=action,
                   step_count=state.steps,
                   next=dict(observation=normalize(stats, nxt.obs), reward=nxt.reward,
                             terminated=nxt.terminated, truncated=nxt.truncated,
                             done=nxt.done, step_count=nxt.steps))
        return nxt, out

    _, rollout = jax.lax.scan(step, env.reset(k_reset), jax.random.split(k_steps, steps))
    return rollout


rollout = program("rollout", random_rollout, obs_stats, KEYS["rollout"])(obs_stats,
                                                                          KEYS["rollout"])
print(f"observation_spec: shape ({env.observation_size},), "
      f"{rollout['observation'].dtype}, unbounded")
print(f"reward_spec:      shape (), {rollout['next']['reward'].dtype}")
print(f"action_spec:      shape ({env.action_size},), {rollout['action'].dtype}, "
      f"bounded: low {action_low.tolist()}, high {action_high.tolist()}")
print(f"done/terminated/truncated: shape (), {rollout['next']['done'].dtype}; "
      f"step_count: shape (), {rollout['step_count'].dtype}")
print("rollout of three steps:")
show(rollout)
print("Shape of the rollout:", rollout["action"].shape[:1])
# check_env_specs: every entry has the declared shape, after the rollout's leading axis
assert rollout["observation"].shape == rollout["next"]["observation"].shape == (3, 11)
assert rollout["action"].shape == (3, env.action_size)
assert rollout["next"]["reward"].shape == rollout["next"]["done"].shape == (3,)
assert rollout["next"]["done"].dtype == jnp.bool_
assert np.all((rollout["action"] >= action_low) & (rollout["action"] <= action_high))
np.testing.assert_array_equal(rollout["step_count"], [0, 1, 2])  # StepCounter

# %% [markdown]
# ## 3. The policy
#
# TorchRL (the seed):
#
# ```python
# actor_net = nn.Sequential(nn.LazyLinear(num_cells), nn.Tanh(), nn.LazyLinear(num_cells),
#     nn.Tanh(), nn.LazyLinear(num_cells), nn.Tanh(),
#     nn.LazyLinear(2 * env.action_spec.shape[-1]), NormalParamExtractor())
# policy_module = ProbabilisticActor(module=TensorDictModule(actor_net,
#     in_keys=["observation"], out_keys=["loc", "scale"]), spec=env.action_spec,
#     in_keys=["loc", "scale"], distribution_class=TanhNormal,
#     distribution_kwargs={"min": env.action_spec.space.low, "max": env.action_spec.space.high},
#     return_log_prob=True)
# print("Running policy:", policy_module(env.reset()))
# ```
#
# (TorchRL 0.14's `TanhNormal` takes the bounds as `low` and `high`: `distribution_kwargs=
# {"low": ..., "high": ...}`; `min`/`max` raise a TypeError there.
# `ppo_jax.interop.torchrl.reference` builds this actor with the installed names.)
#
# ppo_jax: `networks.Actor` is the same MLP (PyTorch's default `nn.Linear` init), ending in
# `networks.normal_params`, the `NormalParamExtractor`: split the output in two, map the
# second half through TorchRL's `biased_softplus_1.0` (a softplus shifted so that f(0) = 1),
# floor 1e-4. `distributions.sample` draws from the tanh-Normal and keeps the pre-tanh sample
# `u` (the action is `tanh(u)`, mapped onto the env's bounds where they are not [-1, 1]; its
# log-prob includes the Jacobians).
#
# ```python
# params = trainer.init_params(key)               # Params(actor, critic): separate trees
# loc, scale = trainer.actor_apply(params.actor, normalize(obs_stats, obs))
# action, pre_tanh, log_prob = distributions.sample(key, loc, scale)
# ```

# %%
params = trainer.init_params(KEYS["params"])
print("actor parameters (flax: kernel = torch's weight transposed):")
for name, layer in params.actor["params"]["net"].items():
    print(f"  {name}: kernel {layer['kernel'].shape}, bias {layer['bias'].shape}")


def run_policy(actor_params, stats, raw_obs, key):
    """One call of the policy on a raw observation, with what happens inside."""
    obs = normalize(stats, raw_obs)
    head = networks.MLP(config.hidden_sizes, 2 * env.action_size).apply(
        {"params": actor_params["params"]["net"]}, obs)  # the MLP before the extractor
    loc, scale = trainer.actor_apply(actor_params, obs)
    action, pre_tanh, log_prob = distributions.sample(key, loc, scale, BOUNDS)
    eval_action = distributions.deterministic_action(loc, scale, config.eval_action, BOUNDS)
    return dict(observation=obs, head=head, loc=loc, scale=scale, action=action,
                pre_tanh=pre_tanh, log_prob=log_prob, eval_action=eval_action)


reset_state = program("reset", env.reset, KEYS["reset"])(KEYS["reset"])
policy_program = program("policy", run_policy, params.actor, obs_stats, reset_state.obs,
                         KEYS["act"])
out = policy_program(params.actor, obs_stats, reset_state.obs, KEYS["act"])
print("Running policy:")
for k in ("observation", "head", "loc", "scale", "pre_tanh", "action", "log_prob",
          "eval_action"):
    print(f"  {k:<12} {str(tuple(out[k].shape)):<7} {np.asarray(out[k])}")
extracted = networks.normal_params(out["head"])  # NormalParamExtractor on the raw output
np.testing.assert_allclose(extracted[0], out["loc"], rtol=1e-6)
np.testing.assert_allclose(extracted[1], out["scale"], rtol=1e-6)
assert np.isclose(float(networks.biased_softplus(jnp.float32(0.0))), 1.0, rtol=1e-6)  # f(0) = 1
assert out["loc"].shape == out["scale"].shape == out["action"].shape == (env.action_size,)
assert out["log_prob"].shape == () and np.all(np.asarray(out["scale"]) >= 1e-4)
np.testing.assert_allclose(out["action"], to_action(out["pre_tanh"]), rtol=1e-6)
assert np.all((out["action"] > action_low) & (out["action"] < action_high))

# %% [markdown]
# TorchRL's modules on the same weights: `torchrl_reference.tutorial_modules` builds the
# tutorial's `actor_net`, `ProbabilisticActor` and `ValueOperator`;
# `torchrl_compat.actor_params_to_torch` copies ppo_jax's parameters into them. The two must
# give the same `loc` and `scale`, and TorchRL's `TanhNormal` must give ppo_jax's action the
# same log-prob (TorchRL recomputes it from the action through `atanh`; ppo_jax from the
# pre-tanh sample it kept).

# %%
if HAVE_TORCHRL:
    torch.manual_seed(config.seed)
    mods = torchrl_reference.tutorial_modules(
        env.observation_size, env.action_size, config.hidden_sizes,
        low=tensor(action_low), high=tensor(action_high))
    torchrl_compat.actor_params_to_torch(params.actor, mods.policy)
    torchrl_compat.critic_params_to_torch(params.critic, mods.value)
    td = TensorDict({"observation": tensor(out["observation"])}, [])
    with torch.no_grad():
        td_policy = mods.policy(td.clone())  # TorchRL draws its own action
        torch_log_prob = mods.policy.get_dist(td.clone()).log_prob(
            tensor(out["action"]))
    print("Running policy (TorchRL, same weights):", td_policy)
    agree("loc", out["loc"], td_policy["loc"].numpy(), rtol=1e-5, atol=1e-6)
    agree("scale", out["scale"], td_policy["scale"].numpy(), rtol=1e-5, atol=1e-6)
    agree("log_prob of ppo_jax's action", out["log_prob"], torch_log_prob.numpy(),
          rtol=1e-5, atol=1e-5)
else:
    print(f"{NO_TORCHRL}: skipped the TorchRL policy on the same weights")

# %% [markdown]
# ## 4. The value network
#
# TorchRL (the seed):
#
# ```python
# value_net = nn.Sequential(nn.LazyLinear(num_cells), nn.Tanh(), ..., nn.LazyLinear(1))
# value_module = ValueOperator(module=value_net, in_keys=["observation"])
# print("Running value:", value_module(env.reset()))
# ```
#
# ppo_jax: `networks.Critic`, the same MLP with its own parameters (`params.critic`), returning
# one value per observation.
#
# ```python
# value = trainer.critic_apply(params.critic, normalize(obs_stats, obs))
# ```

# %%
value_program = program(
    "value", lambda p, s, o: trainer.critic_apply(p, normalize(s, o)),
    params.critic, obs_stats, reset_state.obs)
value = value_program(params.critic, obs_stats, reset_state.obs)
print(f"Running value: state_value {tuple(value.shape)} {np.asarray(value)}")
assert value.shape == () and np.isfinite(value)
if HAVE_TORCHRL:
    with torch.no_grad():
        td_value = mods.value(td.clone())
    print("Running value (TorchRL, same weights):", td_value)
    agree("state_value", value, td_value["state_value"].numpy(), rtol=1e-5, atol=1e-6)
else:
    print(f"{NO_TORCHRL}: skipped the TorchRL value network")

# %% [markdown]
# ## 5. The data collector
#
# TorchRL (the seed):
#
# ```python
# collector = SyncDataCollector(env, policy_module, frames_per_batch=frames_per_batch,
#     total_frames=total_frames, split_trajs=False, device=device)
# for i, tensordict_data in enumerate(collector): ...
# ```
#
# (TorchRL 0.14 names this collector `Collector`, with the same arguments;
# `SyncDataCollector` no longer imports.)
#
# ppo_jax: collecting a batch is `Trainer.collect`, a `lax.scan` of `steps_per_env` steps of
# `num_envs` envs: normalize, run the actor, sample, step the vectorized env (which resets
# an env whose episode ended within the same step, keeping its true final observation for
# the bootstrap). The result is a `Transition` of arrays, time-major `[T, N, ...]`: the
# tutorial's one env gives `T = 1000, N = 1` where TorchRL's batch is `[1000]`.
#
# ```python
# env_state = VectorEnv(env, config.num_envs).reset(key)
# env_state, batch = trainer.collect(params, obs_stats, env_state, key)
# ```

# %%
def collect_batch(p, stats, key):
    k_env, k_steps = jax.random.split(key)
    env_state = VectorEnv(env, config.num_envs).reset(k_env)
    return trainer.collect(p, stats, env_state, k_steps)[1]


t = time.perf_counter()
collect_program = program("collect", collect_batch, params, obs_stats, KEYS["collect"])
batch = jax.block_until_ready(collect_program(params, obs_stats, KEYS["collect"]))
T, N = config.steps_per_env, config.num_envs
print(f"one batch of {config.frames_per_batch} frames ({time.perf_counter() - t:.1f} s with "
      f"the program): Transition, time-major [T, N] = [{T}, {N}]")
show(batch)
assert batch.obs.shape == batch.next_obs.shape == (T, N, env.observation_size)
assert batch.pre_tanh.shape == (T, N, env.action_size)
for leaf in (batch.log_prob, batch.reward, batch.terminated, batch.done, batch.step_count):
    assert leaf.shape == (T, N)
assert np.all(np.isfinite(np.asarray(batch.reward)))
ended, terminated = int(batch.done.sum()), int(batch.terminated.sum())
print(f"episodes that ended in it: {ended} ({terminated} terminated, {ended - terminated} "
      f"at the time limit); "
      f"average reward {float(batch.reward.mean()):.4f}, "
      f"step count (max) {int(batch.step_count.max())}")

# %% [markdown]
# ## 6. The replay buffer
#
# TorchRL (the seed):
#
# ```python
# replay_buffer = ReplayBuffer(storage=LazyTensorStorage(max_size=frames_per_batch),
#                              sampler=SamplerWithoutReplacement())
# replay_buffer.extend(data_view.cpu()); subdata = replay_buffer.sample(sub_batch_size)
# ```
#
# The seed draws `frames_per_batch // sub_batch_size` = 15 minibatches an epoch. TorchRL's
# `SamplerWithoutReplacement` keeps its permutation of the buffer's 1,000 positions from one
# `sample` call to the next, across epochs and batches: when 40 positions are left it returns
# those 40 (a short minibatch), and the next call starts a new permutation. So 9 or 10 of a
# batch's 150 updates train on 40 frames.
#
# ppo_jax needs no buffer object: the batch is already a pytree of arrays on the device, and
# minibatches are rows of indices into it, gathered in one indexing operation and scanned
# over. By default (`sampler="epoch"`) an epoch's rows are one random permutation of its
# `frames_per_batch` indices, cut into `num_minibatches` rows of `minibatch_size`; the
# `1000 - 15 * 64 = 40` left over sit that epoch out. `sampler="torchrl"` draws as the seed's
# buffer does: one stream of permutations across epochs and batches, a pass's short last
# draw padded to `minibatch_size` rows of which only its own count in the loss
# (`ppo_jax.core.sampling`). Where `minibatch_size` divides `frames_per_batch` the two are
# alike in distribution (from other random draws).
#
# ```python
# idx = jax.random.permutation(key, n)[:num_minibatches * minibatch_size]
# idx = idx.reshape(num_minibatches, minibatch_size)     # row j: minibatch j of this epoch
# ```

# %%
n = config.frames_per_batch
used = config.num_minibatches * config.minibatch_size
idx = trainer.minibatch_indices(KEYS["perm"])  # what Trainer.update draws for each epoch
print(f"one epoch: {idx.shape[0]} minibatches x {idx.shape[1]} indices; minibatch 0 starts "
      f"{np.asarray(idx[0, :8]).tolist()} ...")
assert len(np.unique(np.asarray(idx))) == used  # no index twice in an epoch
assert int(idx.min()) >= 0 and int(idx.max()) < n
# the seed's sampler: the sizes of a batch's 150 draws (sampler="torchrl")
_, weights = sampling.stream_rows(sampling.stream_key(KEYS["perm"]), 0,
                                  config.num_epochs * config.num_minibatches, n,
                                  config.minibatch_size)
sizes = np.asarray(weights.sum(axis=1)).astype(int)
print(f"sampler='torchrl': a batch's {len(sizes)} minibatches: "
      f"{int((sizes == config.minibatch_size).sum())} of {config.minibatch_size}, "
      f"{int((sizes < config.minibatch_size).sum())} of {n % config.minibatch_size}")

# %% [markdown]
# ## 7. The loss: GAE and the clipped PPO objective
#
# TorchRL (the seed):
#
# ```python
# advantage_module = GAE(gamma=gamma, lmbda=lmbda, value_network=value_module, average_gae=True)
# loss_module = ClipPPOLoss(actor_network=policy_module, critic_network=value_module,
#     clip_epsilon=clip_epsilon, entropy_bonus=bool(entropy_eps), entropy_coef=entropy_eps,
#     critic_coef=1.0, loss_critic_type="smooth_l1")
# advantage_module(tensordict_data)          # at the start of every epoch
# loss_vals = loss_module(subdata.to(device))
# ```
#
# (TorchRL 0.14 spells the two coefficients `entropy_coeff` and `critic_coeff`:
# `ppo_jax.interop.torchrl.reference.tutorial_loss` builds this loss with the installed names.)
#
# ppo_jax: `Trainer.advantages` is GAE with the current critic (`gae.gae`, then
# `gae.standardize`: TorchRL's `average_gae=True`); `Trainer.update` recomputes it at the
# start of every epoch, as the seed does. A termination stops the bootstrap; a time-limit
# truncation bootstraps from the critic's value of the true final observation.
# `Trainer.loss_fn` is `ClipPPOLoss` with the tutorial's settings: `loss_objective` (the
# clipped ratio times the advantage), `loss_critic` (smooth-L1 to the value target),
# `loss_entropy` (-1e-4 x a one-sample Monte-Carlo entropy: the tanh-Normal has no closed
# form), and TorchRL's diagnostics `clip_fraction`, `kl_approx` and `ESS`.
#
# ```python
# adv, target = trainer.advantages(params.critic, batch, hyper)
# loss, terms = trainer.loss_fn(params, minibatch, key, hyper)
# params, opt_state, mean_terms, grad_norm = trainer.update(params, opt_state, batch, key, hyper)
# ```

# %%
hyper = hyper_of(config)  # the sweepable hyperparameters, as program inputs
advantages_program = program("advantages", trainer.advantages, params.critic, batch, hyper)
adv, target = advantages_program(params.critic, batch, hyper)
print(f"GAE on the batch: advantage {tuple(adv.shape)} (standardized: mean "
      f"{float(adv.mean()):.2g}, std {float(adv.std()):.4f}), value_target "
      f"{tuple(target.shape)} (mean {float(target.mean()):.3f})")
assert adv.shape == target.shape == (T, N)
assert np.all(np.isfinite(np.asarray(adv))) and np.all(np.isfinite(np.asarray(target)))


mb = trainer.minibatches(batch, adv, target, idx[0])  # what Trainer.update gathers
loss_program = program("loss", trainer.loss_fn, params, mb, KEYS["loss"], hyper)
loss, terms = loss_program(params, mb, KEYS["loss"], hyper)
print(f"ClipPPOLoss on minibatch 0 ({config.minibatch_size} samples), before any update:")
for f in dataclasses.fields(terms):
    print(f"  {f.name:<16} {float(getattr(terms, f.name)) + 0.0: .6g}")
assert all(np.isfinite(float(getattr(terms, f.name))) for f in dataclasses.fields(terms))
# the policy that collected the batch is the one scored: every ratio is 1, so the objective
# is minus the mean advantage and nothing is clipped
np.testing.assert_allclose(terms.loss_objective, -mb.advantage.mean(), rtol=1e-4, atol=1e-6)
assert float(terms.clip_fraction) == 0.0

# %% [markdown]
# The same numbers with TorchRL: its `GAE` module on the batch (as a `[1, 1000]`
# TensorDict: envs, then time) with the same critic weights, and its `ClipPPOLoss` on the
# same minibatch. The Monte-Carlo entropy draws one standard-normal sample per action;
# TorchRL is handed the same draw as ppo_jax's key gives (`tests/torch_patches.py` does the
# same for the parity tests), so every term can be compared exactly.

# %%
def torch_batch_td(adv=None, target=None):
    """The batch as TorchRL's collector would give it ([envs, time] TensorDict)."""
    def t(x):
        return tensor(np.swapaxes(np.asarray(x), 0, 1))

    done, terminated = np.asarray(batch.done), np.asarray(batch.terminated)
    return TensorDict({
        "observation": t(batch.obs),
        "next": {"observation": t(batch.next_obs), "reward": t(batch.reward)[..., None],
                 "terminated": t(terminated)[..., None],
                 "truncated": t(done & ~terminated)[..., None], "done": t(done)[..., None]},
    }, [N, T])


def torch_loss_terms(p, mb, key):
    """TorchRL's ClipPPOLoss terms for minibatch ``mb`` with ppo_jax's parameters ``p``."""
    torchrl_compat.actor_params_to_torch(p.actor, mods.policy)
    torchrl_compat.critic_params_to_torch(p.critic, mods.value)
    unit = np.asarray(distributions.safe_tanh(mb.pre_tanh))
    assert np.all(np.abs(unit) < 1 - 1e-6), "saturated action: atanh cannot recover u"
    action = np.asarray(to_action(mb.pre_tanh))  # TorchRL stores the action, not u
    td_mb = TensorDict({
        "observation": tensor(mb.obs),
        "action": tensor(action),
        "action_log_prob": tensor(mb.log_prob),
        "advantage": tensor(mb.advantage)[:, None],
        "value_target": tensor(mb.value_target)[:, None],
    }, [len(action)])
    noise = np.array(distributions.sample(key, jnp.zeros(mb.pre_tanh.shape),
                                          jnp.ones(mb.pre_tanh.shape))[1])  # N(0, 1)

    loss_module = torchrl_reference.tutorial_loss(
        mods.policy, mods.value, clip_epsilon=config.clip_epsilon,
        entropy_coeff=config.entropy_coeff, critic_coeff=config.critic_coeff,
        loss_critic_type=config.critic_loss)
    # TorchRL's rsample (the MC entropy) draws ppo_jax's noise
    with torch.no_grad(), torchrl_reference.fixed_standard_normal(noise):
        return loss_module(td_mb)


def compare_terms(terms, torch_terms):
    for name in ("loss_objective", "loss_critic", "loss_entropy", "entropy", "kl_approx",
                 "ESS"):
        agree(name, getattr(terms, name), torch_terms[name].numpy(), rtol=1e-5, atol=1e-6)
    # a count of clipped samples: equal unless a log-ratio sits on the clip boundary
    agree("clip_fraction", terms.clip_fraction, torch_terms["clip_fraction"].numpy(),
          rtol=0, atol=1.5 / config.minibatch_size)


if HAVE_TORCHRL:
    torchrl_compat.critic_params_to_torch(params.critic, mods.value)
    td_batch = torch_batch_td()
    with torch.no_grad():
        torchrl_reference.tutorial_gae(mods.value, gamma=config.gamma, lmbda=config.lmbda,
                                       average_gae=config.standardize_advantage)(td_batch)
    print("TorchRL's GAE on the same batch and critic:")
    agree("advantage", adv.T, td_batch["advantage"][..., 0].numpy(), rtol=1e-5, atol=1e-5)
    agree("value_target", target.T, td_batch["value_target"][..., 0].numpy(), rtol=1e-5,
          atol=1e-5)
    print("TorchRL's ClipPPOLoss on minibatch 0:")
    compare_terms(terms, torch_loss_terms(params, mb, KEYS["loss"]))
else:
    print(f"{NO_TORCHRL}: skipped TorchRL's GAE and ClipPPOLoss on this batch")

# %% [markdown]
# One batch's whole update: `Trainer.update` runs `num_epochs` epochs, each GAE with the
# current critic, a fresh permutation, then one `lax.scan` over the 15 minibatches of {loss,
# gradient, clip by the global norm over actor and critic together, Adam at the batch's
# learning rate}: 150 optimizer steps in one jitted call. After it the policy has moved: the
# loss of minibatch 0 (with GAE recomputed by the updated critic, as the next epoch would)
# now has ratios away from 1 and clipped samples, and TorchRL, given the updated weights,
# computes the same terms.

# %%
opt_state = trainer.optimizer.init(params)  # Adam moments, update count (the lr schedule)
update_program = program("update", trainer.update, params, opt_state, batch, KEYS["update"],
                         hyper)
t = time.perf_counter()
params1, opt_state1, mean_terms, grad_norm = jax.block_until_ready(
    update_program(params, opt_state, batch, KEYS["update"], hyper))
print(f"{config.num_epochs} epochs x {config.num_minibatches} minibatches in "
      f"{time.perf_counter() - t:.2f} s; means over the {int(opt_state1.count)} updates:")
for f in dataclasses.fields(mean_terms):
    print(f"  {f.name:<16} {float(getattr(mean_terms, f.name)): .6g}")
print(f"  {'grad_norm':<16} {float(grad_norm): .6g}  (before clipping at "
      f"{config.max_grad_norm})")
assert int(opt_state1.count) == config.num_epochs * config.num_minibatches
assert all(np.isfinite(float(getattr(mean_terms, f.name)))
           for f in dataclasses.fields(mean_terms))
assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(params1))

adv1, target1 = advantages_program(params1.critic, batch, hyper)
mb1 = trainer.minibatches(batch, adv1, target1, idx[0])
loss1, terms1 = loss_program(params1, mb1, KEYS["loss"], hyper)
print("ClipPPOLoss on minibatch 0 after the update:")
for f in dataclasses.fields(terms1):
    print(f"  {f.name:<16} {float(getattr(terms1, f.name)): .6g}")
assert all(np.isfinite(float(getattr(terms1, f.name))) for f in dataclasses.fields(terms1))
if HAVE_TORCHRL:
    print("TorchRL's ClipPPOLoss on minibatch 0, with the updated weights:")
    compare_terms(terms1, torch_loss_terms(params1, mb1, KEYS["loss"]))
else:
    print(f"{NO_TORCHRL}: skipped TorchRL's ClipPPOLoss after the update")

# %% [markdown]
# ## 8. The training loop
#
# TorchRL (the seed):
#
# ```python
# for i, tensordict_data in enumerate(collector):
#     for _ in range(num_epochs):
#         advantage_module(tensordict_data)
#         replay_buffer.extend(tensordict_data.reshape(-1).cpu())
#         for _ in range(frames_per_batch // sub_batch_size):
#             loss_vals = loss_module(replay_buffer.sample(sub_batch_size)); ...; optim.step()
#     if i % 10 == 0:
#         with set_exploration_type(ExplorationType.MEAN), torch.no_grad():
#             eval_rollout = env.rollout(1000, policy_module)
#     scheduler.step()
# ```
#
# ppo_jax: the whole inner part (collect, then 10 epochs of GAE and 15 minibatch updates) is
# ONE compiled program, `update` (`Trainer.update_step`), called once per batch; evaluation
# (`Trainer.evaluate_after`: one deterministic episode of up to 1000 steps, `E[tanh(X)]` as
# TorchRL's `ExplorationType.MEAN`) is a second program, called after batches 0, 10, 20, ...
# as in the seed, and after the last batch (on a GPU it runs on the host's CPU while the GPU
# trains the next batches, and lands a batch or two later: docs/devices.md). The train state
# stays on the device between calls; only each batch's metrics come back, and the tqdm bar
# (the seed's description) is updated between calls. The cosine learning-rate schedule lives in the optimizer's state;
# its phase step (pi / num_batches, `optim.cosine_phase_step`) is an input of `update`, so a run of
# another length uses the same compiled programs.
#
# ```python
# job = runner.prepare(Runs(config))             # init / update / evaluate programs, then init
# bar = Progress(config, 0, True, log=job.log)
# runner.train_batches(job, on_batch=bar, on_eval=bar.add_eval)
# #   for i in range(num_batches): state, m = update(state, i, rate); ev = evaluate(state, i) if ...
# ```
#
# The run starts from its own seed (its `init` program computes the statistics, networks,
# optimizer and envs of sections 2-5 again), exactly as `scripts/train.py` would.

# %%
from ppo_jax.run import runner
from ppo_jax.cli.train import Progress  # scripts/train.py's tqdm bar

job = runner.prepare(Runs(config), announce=print)
sources = ", ".join(f"{name}: {info['source']}" for name, info in job.log.compile.items())
print(f"programs ready in {job.log.compile_seconds:.1f} s ({sources})")
bar = Progress(config, job.start, enabled=True, log=job.log)
try:
    runner.train_batches(job, on_batch=bar, on_eval=bar.add_eval)
finally:
    bar.close()
log = job.log
log.written_by = PROG_PATH  # metrics.json's record of what wrote it
history = log.history
assert log.failed == [None], f"training hit NaN/Inf at batch {log.failed[0]}"
assert len(history["batch"]) == config.num_batches
assert len(history["eval_return"][0]) == len(config.eval_batches)
for name in ("reward", "loss", "loss_objective", "loss_critic", "loss_entropy"):
    assert np.all(np.isfinite(history[name][0])), name
print(f"trained {config.total_frames} frames in {log.run_seconds:.1f} s "
      f"({config.total_frames / log.run_seconds:.0f} frames/s, init and evaluations "
      "included)")
print("evaluations (deterministic policy, up to 1000 steps):")
for frames_done, ret, steps in zip(history["eval_frames"][0], history["eval_return"][0],
                                   history["eval_steps"][0]):
    print(f"  after {frames_done:>8} frames: return {ret:9.2f}, step count {steps}")

# %% [markdown]
# ## 9. Results
#
# TorchRL (the tutorial's plotting code; the seed's copy is cut short before it):
#
# ```python
# plt.figure(figsize=(10, 10))
# plt.subplot(2, 2, 1); plt.plot(logs["reward"]); plt.title("training rewards (average)")
# plt.subplot(2, 2, 2); plt.plot(logs["step_count"]); plt.title("Max step count (training)")
# plt.subplot(2, 2, 3); plt.plot(logs["eval reward (sum)"]); plt.title("Return (test)")
# plt.subplot(2, 2, 4); plt.plot(logs["eval step_count"]); plt.title("Max step count (test)")
# ```
#
# ppo_jax: the same four panels from the run's log (`metrics.plot_panels`, what
# `scripts/train.py` draws into `curves.png`), against frames; and the log itself as
# `metrics.json`, in the format `scripts/train.py` writes, so `scripts/compare.py` can put
# this run beside the TorchRL tutorial's own runs. With the tutorial's 10k frames the
# pendulum is not balanced yet (TorchRL's tutorial is not either); a run of 100k-150k frames
# holds it for the whole 1000 steps (eval return ~9,350).

# %%
log.write(OUT, curves=False)  # metrics.json
figure = os.path.join(OUT, "curves.png")
metrics.plot_panels(log.point_series(), figure,
                      title=f"ppo_jax, the TorchRL tutorial's config, {config.total_frames} "
                            "frames")
assert os.path.getsize(figure) > 0
print(f"wrote {figure} and {os.path.join(OUT, 'metrics.json')}")
if in_notebook():
    from IPython.display import Image, display

    display(Image(figure))

# %% [markdown]
# ## 10. Conclusion and next steps
#
# Every piece of the tutorial has its ppo_jax counterpart, and where TorchRL was installed
# the two gave the same numbers on the same weights and data. From here:
#
# - **Train from the command line**: `python scripts/train.py --out runs/demo` is this run
#   (every `PPOConfig` field is a flag: `--total-frames 1000000`, `--num-envs 16`, ...), with
#   `metrics.json`, `curves.png`, TensorBoard events and a video of the policy.
# - **Checkpoints and evaluation**: `scripts/train.py` saves an orbax checkpoint (actor,
#   critic, normalization, Adam, envs, keys); `--checkpoint-every N` and `--resume` continue a
#   run bit for bit; `python scripts/evaluate.py runs/demo --episodes 20` evaluates it in MJX,
#   `--sim mujoco` in MuJoCo C (Gymnasium's semantics), and `scripts/export_torchrl.py` turns
#   it into the tutorial's `state_dict`s.
# - **Against TorchRL's own runs**: `python scripts/compare.py OUT --reference tutorial`.
# - **Speed**: `python scripts/benchmark.py --quick` runs the TorchRL tutorial loop, ppo_jax
#   and Brax's PPO side by side.
# - **Other environments**: the trainer sees only a small env protocol (sizes, action
#   bounds, `reset`, `step`): `--env HalfCheetah-v4` (any of the Gymnasium MuJoCo ports),
#   `--env brax:NAME`, `--env playground:NAME`, or an env object of your own (`fit(env=...)`).
# - **The GPU**: the same code; throughput comes from many envs (`python scripts/train.py
#   --preset fast`: 1024 envs). A 1-env run such as this one is latency-bound there, so
#   `scripts/train.py --device auto` (the default) trains it on the CPU; `scripts/gpu_check.sh`
#   measures a GPU.

# %%
print("next steps:")
for line in (
    "python scripts/train.py --out runs/demo                      # this run, with checkpoints",
    "python scripts/train.py --total-frames 1000000 --out runs/1M  # the full run",
    "python scripts/evaluate.py runs/demo --episodes 20           # add --sim mujoco for MuJoCo C",
    f"python scripts/compare.py {os.path.relpath(OUT)} --reference tutorial --out compare.png",
    "python scripts/benchmark.py --quick                          # ppo_jax vs TorchRL vs Brax",
    "python scripts/train.py --preset fast --out runs/fast        # 1024 envs, for a GPU",
):
    print("  " + line)
