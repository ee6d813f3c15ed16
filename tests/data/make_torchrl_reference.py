"""Write the TorchRL parity fixture: ``torchrl_reference.{npz,json}`` beside this file.

Builds the TorchRL PPO tutorial's objects with the installed torchrl
(:mod:`ppo_jax.interop.torchrl.reference`: ``GymEnv`` + ``ObservationNorm``/``DoubleToFloat``/
``StepCounter``, the 3 x 256 Tanh actor with ``NormalParamExtractor`` +
``ProbabilisticActor(TanhNormal)``, the ``ValueOperator`` critic, ``GAE(average_gae=True)``,
``ClipPPOLoss``, Adam + ``clip_grad_norm_`` + ``CosineAnnealingLR``) under a fixed seed, runs
each component once on recorded inputs, and stores inputs, weights (as a seed: see
``numpy_torch_default_params``) and outputs, so that ``tests/test_torchrl_fixtures.py`` can
check ppo_jax against TorchRL without torch installed. The hyperparameters are
``PPOConfig()``'s (the tutorial's); the json's ``config`` records them for the tests.

One function per section, called in a fixed order: they share torch's global random stream,
so the order is part of the fixture.

Usage: ``python tests/data/make_torchrl_reference.py [--out PREFIX]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from typing import Any, NamedTuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.dirname(TESTS))  # this checkout: its ppo_jax and tests package

from tests.torch_patches import fixed_standard_normal  # noqa: E402

from ppo_jax.interop.torchrl import compat as tc  # noqa: E402
from ppo_jax.interop.torchrl import reference as tr  # noqa: E402
from ppo_jax.config import PPOConfig  # noqa: E402
from ppo_jax.envs import ACTION_SIZE, ENV_ID, OBSERVATION_SIZE  # noqa: E402

TUTORIAL = PPOConfig()
SEED = 0  # torch.manual_seed and env seed
ACTOR_WEIGHT_SEED, CRITIC_WEIGHT_SEED = 1, 2  # numpy RandomState seeds of the weights
NORM_ITERS = 300  # ObservationNorm.init_stats(num_iter=...)
GAE_T = 200  # steps in the GAE batch
MB_SEED = 3  # numpy RandomState: minibatch indices and the synthetic old log-prob offsets
OLD_LOG_PROB_NOISE = 0.3  # std of (log pi_old - log pi) offsets: ratios on both sides of the clip
ENTROPY_KEY = 4  # jax.random.PRNGKey of the MC-entropy noise
SUBSAMPLE = 4096  # entries stored per large gradient/update leaf
SUBSAMPLE_SEED = 5
LR_BATCH, OPT_STEPS = 3, 3  # optimizer steps at the lr of batch LR_BATCH of the schedule
EXTRA_ACTIONS = [1.0, -1.0, 1 - 1e-7, -(1 - 1e-7), 1 - 1e-6, 0.99999, -0.9999, 0.0]

Arrays = dict[str, np.ndarray]


class Tutorial(NamedTuple):
    """The TorchRL objects under test and the weights copied into them."""

    env: Any  # TransformedEnv, ObservationNorm initialized
    mods: tr.TutorialModules
    actor_w: dict  # ppo_jax layout (numpy)
    critic_w: dict


class Batch(NamedTuple):
    """``GAE_T`` steps of the policy's rollout, time-limit truncations added by hand."""

    td: Any  # TensorDict [GAE_T]: observation, action, next.{observation, reward, done, ...}
    rollout_log_prob: Any  # the policy's log-probs at sampling time
    trunc_idx: list[int]  # steps truncated by hand (not terminated)
    both_idx: int  # a step both terminated and truncated


class LossRun(NamedTuple):
    """The ClipPPOLoss section's minibatch, noise, module and results."""

    mb: Any  # TensorDict [MINIBATCH]
    noise: np.ndarray  # the MC entropy's standard-normal draw
    loss_module: Any
    out: Any  # the loss module's output on mb
    grads: dict[str, dict]  # gradients, ppo_jax layout


# ------------------------------------------------------------------------------ helpers
def _flat_leaves(tree, prefix):
    net = tree["params"]["net"]
    for layer in sorted(net, key=lambda k: int(k.rsplit("_", 1)[1])):
        for name in ("kernel", "bias"):
            yield f"{prefix}/{layer}/{name}", np.asarray(net[layer][name])


def _subsample_idx(size: int, seed: int) -> np.ndarray:
    if size <= SUBSAMPLE:
        return np.arange(size, dtype=np.int32)
    rng = np.random.RandomState(seed)
    return np.sort(rng.choice(size, SUBSAMPLE, replace=False)).astype(np.int32)


def _entropy_noise(shape) -> np.ndarray:
    """The standard normal draw ``ppo_jax.core.losses.ppo_loss(key=PRNGKey(ENTROPY_KEY))`` uses."""
    import jax
    import jax.numpy as jnp

    from ppo_jax.core import distributions

    _, u, _ = distributions.sample(
        jax.random.PRNGKey(ENTROPY_KEY), jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32)
    )
    return np.asarray(u, np.float32)


# ------------------------------------------------------------------------------ sections
def obs_norm_section(env) -> Arrays:
    """``ObservationNorm.init_stats`` on the seeded env: what it reduced and its buffers."""
    obs_norm = env.transform[0]
    return {
        "norm/data": tr.record_init_stats(obs_norm, NORM_ITERS),  # float64
        "norm/loc": obs_norm.loc.detach().numpy(),  # float64 [11]
        "norm/scale": obs_norm.scale.detach().numpy(),
    }


def tutorial_objects(env) -> tuple[Tutorial, Arrays]:
    """The tutorial's modules with weights from numpy seeds; per-leaf sums of the weights."""
    mods = tr.tutorial_modules(
        OBSERVATION_SIZE,
        ACTION_SIZE,
        TUTORIAL.hidden_sizes,
        low=env.action_spec.space.low,
        high=env.action_spec.space.high,
        spec=env.action_spec,
    )
    hidden = TUTORIAL.hidden_sizes
    actor_w = tc.numpy_torch_default_params(OBSERVATION_SIZE, hidden, 2 * ACTION_SIZE,
                                            ACTOR_WEIGHT_SEED)
    critic_w = tc.numpy_torch_default_params(OBSERVATION_SIZE, hidden, 1, CRITIC_WEIGHT_SEED)
    tc.actor_params_to_torch(actor_w, mods.policy)
    tc.critic_params_to_torch(critic_w, mods.value)
    arrays = {
        f"weights_sum/{name}": np.float64(leaf.astype(np.float64).sum())
        for name, leaf in [*_flat_leaves(actor_w, "actor"), *_flat_leaves(critic_w, "critic")]
    }
    back = tc.actor_params_from_torch(mods.policy)
    for (_, a), (_, b) in zip(_flat_leaves(actor_w, "a"), _flat_leaves(back, "a")):
        assert np.array_equal(a, b), "actor weight round trip through torch failed"
    return Tutorial(env, mods, actor_w, critic_w), arrays


def rollout_batch(tut: Tutorial) -> Batch:
    """A rollout of the tutorial env with the policy, ending mid-episode, with time-limit
    truncations set by hand mid-episode and on one terminated step."""
    import torch
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        ro = tut.env.rollout(GAE_T + 40, tut.mods.policy, break_when_any_done=False)
    done_ro = ro["next", "done"].squeeze(-1).numpy()
    end = GAE_T + 40
    while done_ro[end - 1]:  # end the batch mid-episode: the last step bootstraps
        end -= 1
    ro = ro[end - GAE_T : end]

    terminated = ro["next", "terminated"].clone()
    truncated = torch.zeros_like(terminated)
    term_idx = np.flatnonzero(terminated.squeeze(-1).numpy())
    assert len(term_idx) >= 3, f"rollout has only {len(term_idx)} terminations"
    free = [t for t in range(5, GAE_T - 5) if not terminated[t - 1 : t + 2].any()]
    trunc_idx = [free[len(free) // 4], free[len(free) // 2], free[3 * len(free) // 4]]
    truncated[trunc_idx] = True
    truncated[int(term_idx[1])] = True
    td = TensorDict(
        {
            "observation": ro["observation"].clone(),
            "action": ro["action"].clone(),
            "next": {
                "observation": ro["next", "observation"].clone(),
                "reward": ro["next", "reward"].clone(),
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
            },
        },
        batch_size=[GAE_T],
    )
    return Batch(td, ro["action_log_prob"], trunc_idx, int(term_idx[1]))


def network_section(tut: Tutorial, batch: Batch) -> Arrays:
    """Actor (loc, scale) and critic outputs on the batch's observations."""
    import torch

    obs = batch.td["observation"]
    with torch.no_grad():
        loc, scale = tut.mods.actor_net(obs)
        value = tut.mods.value_net(obs).squeeze(-1)
    return {
        "net/obs": obs.numpy(),
        "net/loc": loc.numpy(),
        "net/scale": scale.numpy(),
        "net/value": value.numpy(),
    }


def log_prob_section(tut: Tutorial, batch: Batch) -> Arrays:
    """TanhNormal log-probs (the policy's own distribution) of the batch's actions, the last
    ``len(EXTRA_ACTIONS)`` replaced by values at and near the bounds."""
    import torch
    from tensordict import TensorDict

    lp_actions = batch.td["action"].clone()
    lp_actions[-len(EXTRA_ACTIONS) :, 0] = torch.tensor(EXTRA_ACTIONS, dtype=torch.float32)
    with torch.no_grad():
        obs = TensorDict({"observation": batch.td["observation"]}, [GAE_T])
        lp = tut.mods.policy.get_dist(obs).log_prob(lp_actions)
    return {
        "logprob/action": lp_actions.numpy(),
        "logprob/log_prob": lp.numpy(),
        "logprob/rollout_log_prob": batch.rollout_log_prob.numpy(),  # at sampling time
        "logprob/num_edge": np.int64(len(EXTRA_ACTIONS)),
    }


def gae_section(tut: Tutorial, batch: Batch) -> Arrays:
    """GAE raw and with ``average_gae=True``; writes advantage, value_target and the values
    into ``batch.td`` (the loss section's input)."""
    import torch

    td = batch.td
    with torch.no_grad():
        raw = tr.tutorial_gae(tut.mods.value, average_gae=False)(td.clone())
        tr.tutorial_gae(tut.mods.value)(td)
    nxt = td["next"]
    return {
        "gae/obs": td["observation"].numpy(),
        "gae/next_obs": nxt["observation"].numpy(),
        "gae/reward": nxt["reward"].squeeze(-1).numpy(),
        "gae/terminated": nxt["terminated"].squeeze(-1).numpy(),
        "gae/truncated": nxt["truncated"].squeeze(-1).numpy(),
        "gae/done": nxt["done"].squeeze(-1).numpy(),
        "gae/state_value": td["state_value"].squeeze(-1).numpy(),
        "gae/next_state_value": nxt["state_value"].squeeze(-1).numpy(),
        "gae/advantage_raw": raw["advantage"].squeeze(-1).numpy(),
        "gae/advantage": td["advantage"].squeeze(-1).numpy(),
        "gae/value_target": td["value_target"].squeeze(-1).numpy(),
    }


LOSS_TERMS = ("loss_objective", "loss_critic", "loss_entropy", "entropy", "clip_fraction",
              "kl_approx", "ESS", "max_ratio", "mean_ratio")


def loss_section(tut: Tutorial, batch: Batch) -> tuple[LossRun, Arrays]:
    """``ClipPPOLoss`` on a minibatch of the GAE batch (|action| < 1 - 1e-6) with a synthetic
    old policy; every output term and the gradients of the summed loss."""
    import torch

    minibatch = TUTORIAL.minibatch_size
    action = batch.td["action"]
    ok = np.flatnonzero(np.abs(action.squeeze(-1).numpy()) < 1 - 1e-6)
    ok = ok[ok < GAE_T - len(EXTRA_ACTIONS)]
    rng = np.random.RandomState(MB_SEED)
    mb_idx = np.sort(rng.choice(ok, minibatch, replace=False))
    mb = batch.td[torch.as_tensor(mb_idx)].clone()
    with torch.no_grad():
        lp_now = tut.mods.policy.get_dist(mb).log_prob(mb["action"])
    old = lp_now + torch.as_tensor(
        rng.normal(0.0, OLD_LOG_PROB_NOISE, minibatch).astype(np.float32)
    )
    mb.set("action_log_prob", old)
    mb = mb.select("observation", "action", "action_log_prob", "advantage", "value_target")
    noise = _entropy_noise((minibatch, ACTION_SIZE))
    loss_module = tr.tutorial_loss(tut.mods.policy, tut.mods.value)
    with fixed_standard_normal(noise) as calls:
        total, out = tr.loss_backward(loss_module, mb)
    assert len(calls) == 1, f"expected one MC-entropy draw, got {calls}"
    arrays = {
        "loss/mb_idx": mb_idx.astype(np.int32),
        "loss/obs": mb["observation"].numpy(),
        "loss/action": mb["action"].numpy(),
        "loss/old_log_prob": old.numpy(),
        "loss/advantage": mb["advantage"].squeeze(-1).numpy(),
        "loss/value_target": mb["value_target"].squeeze(-1).numpy(),
        "loss/entropy_noise": noise,
        "loss/entropy_key": np.int64(ENTROPY_KEY),
        "loss/total": total.detach().numpy(),
        **{f"loss/{k}": out[k].detach().numpy() for k in LOSS_TERMS},
    }
    grads = {
        "actor": tc.linear_tree_from_torch(tut.mods.policy, actor=True, grad=True),
        "critic": tc.linear_tree_from_torch(tut.mods.value, actor=False, grad=True),
    }
    loss_module.zero_grad(set_to_none=True)
    return LossRun(mb, noise, loss_module, out, grads), arrays


def optimizer_section(tut: Tutorial, run: LossRun) -> tuple[dict[str, dict], Arrays]:
    """``OPT_STEPS`` steps of clip_grad_norm_ + Adam on the loss section's minibatch (same
    entropy noise) at the lr of batch ``LR_BATCH`` of the cosine schedule; the parameters
    after them."""
    params = list(run.loss_module.parameters())
    optimizer, scheduler = tr.tutorial_optimizer(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(LR_BATCH):
            scheduler.step()
    lr_used = optimizer.param_groups[0]["lr"]
    norms, totals = [], []
    for _ in range(OPT_STEPS):
        with fixed_standard_normal(run.noise):
            total, _ = tr.loss_backward(run.loss_module, run.mb)
        norms.append(float(tr.clipped_step(optimizer, params)))
        totals.append(float(total.detach()))
    after = {
        "actor": tc.actor_params_from_torch(tut.mods.policy),
        "critic": tc.critic_params_from_torch(tut.mods.value),
    }
    arrays = {
        "opt/lr": np.float64(lr_used),
        "opt/grad_norm": np.asarray(norms),
        "opt/loss": np.asarray(totals),
    }
    return after, arrays


def update_section(tut: Tutorial, grads: dict[str, dict], after: dict[str, dict]) -> Arrays:
    """Gradients and parameter updates: every entry of the small leaves, ``SUBSAMPLE`` entries
    of the large ones (plus each full leaf's L2 norm), to keep the fixture small."""
    before = {"actor": tut.actor_w, "critic": tut.critic_w}
    arrays: Arrays = {}
    for net in ("actor", "critic"):
        g_leaves = dict(_flat_leaves(grads[net], net))
        a_leaves = dict(_flat_leaves(after[net], net))
        for i, (name, w0) in enumerate(_flat_leaves(before[net], net)):
            g = g_leaves[name].ravel()
            delta = (a_leaves[name] - w0).ravel()
            idx = _subsample_idx(g.size, SUBSAMPLE_SEED + i)
            arrays[f"sub/{name}/idx"] = idx
            arrays[f"grad/{name}/val"] = g[idx]
            arrays[f"grad/{name}/norm"] = np.float64(np.linalg.norm(g.astype(np.float64)))
            arrays[f"delta/{name}/val"] = delta[idx]
            arrays[f"delta/{name}/norm"] = np.float64(np.linalg.norm(delta.astype(np.float64)))
    return arrays


# ------------------------------------------------------------------------------ metadata
def versions() -> dict[str, str]:
    import tensordict
    import torch
    import torchrl

    return {
        "torchrl": torchrl.__version__,
        "tensordict": tensordict.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def hyperparameters() -> dict[str, Any]:
    """The json's ``config``: what the tests read instead of declaring it again."""
    c = TUTORIAL
    return {
        "hidden_sizes": list(c.hidden_sizes),
        "obs_dim": OBSERVATION_SIZE,
        "action_dim": ACTION_SIZE,
        "gamma": c.gamma,
        "lmbda": c.lmbda,
        "clip_epsilon": c.clip_epsilon,
        "entropy_coeff": c.entropy_coeff,
        "critic_coeff": c.critic_coeff,
        "loss_critic_type": c.critic_loss,
        "lr": c.lr,
        "max_grad_norm": c.max_grad_norm,
        "num_batches": c.num_batches,
        "lr_batch": LR_BATCH,
        "optimizer_steps": OPT_STEPS,
        "minibatch_size": c.minibatch_size,
        "gae_steps": GAE_T,
        "init_stats_num_iter": NORM_ITERS,
        "subsample": SUBSAMPLE,
    }


def descriptions(batch: Batch) -> dict[str, str]:
    """How each group of arrays was computed."""
    c = TUTORIAL
    return {
        "norm": (
            "ObservationNorm.init_stats(num_iter=%d, reduce_dim=0, cat_dim=0) on the seeded "
            "env; norm/data = the float64 observations it reduced (recorded from the parent "
            "env's rollouts), norm/loc, norm/scale = the resulting transform buffers "
            "(standard_normal=False form: obs * scale + loc)." % NORM_ITERS
        ),
        "net": "actor_net(obs) -> (loc, scale) and value_net(obs) on the rollout's observations.",
        "logprob": (
            "policy.get_dist(obs).log_prob(action) (TanhNormal, SafeTanhTransform); actions = "
            "the rollout's sampled actions with the last %d replaced by edge values %s."
            % (len(EXTRA_ACTIONS), EXTRA_ACTIONS)
        ),
        "gae": (
            "GAE(gamma, lmbda, value_network=ValueOperator) on a hand-built TensorDict of %d "
            "steps (rollout data; next.truncated set by hand at steps %s and, together with "
            "terminated, at step %d; done = terminated | truncated; the batch ends "
            "mid-episode). "
            "advantage_raw: average_gae=False; advantage: average_gae=True (standardized); "
            "value_target = raw advantage + state_value."
            % (GAE_T, batch.trunc_idx, batch.both_idx)
        ),
        "loss": (
            "ClipPPOLoss on %d rows (loss/mb_idx) of the GAE batch with |action| < 1 - 1e-6, "
            "advantage = standardized GAE advantage, old log-prob = current log-prob + "
            "N(0, %.2f) offsets (a synthetic old policy, so ratios fall on both sides of the "
            "clip range); all output terms; grad/* = gradients of loss_objective + "
            "loss_critic + loss_entropy." % (c.minibatch_size, OLD_LOG_PROB_NOISE)
        ),
        "entropy": (
            "patched noise (exact comparison, not in expectation): the MC entropy's "
            "standard-normal draw was fixed to loss/entropy_noise by patching "
            "torch.distributions.normal._standard_normal; that noise is what "
            "ppo_jax.core.distributions.sample(PRNGKey(entropy_key), 0, 1) draws, so "
            "ppo_loss(..., key=PRNGKey(entropy_key)) uses the same sample."
        ),
        "opt": (
            "%d steps on the same minibatch (same entropy noise) from fresh Adam state: "
            "loss.backward(); clip_grad_norm_(loss_module.parameters(), %.1f); Adam(lr) "
            "with the lr of CosineAnnealingLR(T_max=%d, eta_min=0) after %d scheduler steps "
            "(opt/lr); opt/grad_norm = pre-clip global norms; delta/* = params after - "
            "before." % (OPT_STEPS, c.max_grad_norm, c.num_batches, LR_BATCH)
        ),
        "subsampling": (
            "grad/* and delta/* hold every entry of leaves with <= %d entries and %d "
            "entries (flat indices sub/*/idx) of larger ones, plus each full leaf's L2 norm."
            % (SUBSAMPLE, SUBSAMPLE)
        ),
    }


def metadata(batch: Batch, run: LossRun, norms: list[float]) -> dict[str, Any]:
    """The json: versions, seeds, hyperparameters, descriptions, counts."""
    nxt = batch.td["next"]
    return {
        "versions": versions(),
        "generated_by": os.path.relpath(os.path.abspath(__file__), os.path.dirname(TESTS)),
        "env": ENV_ID,
        "seeds": {
            "torch_manual_seed": SEED,
            "env_seed": SEED,
            "actor_weights_numpy_seed": ACTOR_WEIGHT_SEED,
            "critic_weights_numpy_seed": CRITIC_WEIGHT_SEED,
            "minibatch_numpy_seed": MB_SEED,
            "entropy_jax_key": ENTROPY_KEY,
            "subsample_numpy_seed": SUBSAMPLE_SEED,
        },
        "config": hyperparameters(),
        "weights": (
            "Not stored: ppo_jax.interop.torchrl.compat.numpy_torch_default_params(11, hidden, out, seed) "
            "(torch's default Linear distribution from numpy's RandomState) regenerates them; "
            "they were copied into the TorchRL modules with actor/critic_params_to_torch. "
            "weights_sum/* are per-leaf float64 sums to check the regeneration."
        ),
        "computed": descriptions(batch),
        "counts": {
            "terminations": int(nxt["terminated"].sum()),
            "truncations": int(nxt["truncated"].sum()),
            "clip_fraction": float(run.out["clip_fraction"]),
            "grad_norms": norms,
        },
    }


# ------------------------------------------------------------------------------ build
def build(out_prefix: str) -> dict:
    """Run every section in order, write ``out_prefix``.npz/.json, return the json."""
    import torch

    torch.manual_seed(SEED)
    env = tr.tutorial_env(ENV_ID, seed=SEED)
    arrays = obs_norm_section(env)
    tut, weight_sums = tutorial_objects(env)
    arrays.update(weight_sums)
    batch = rollout_batch(tut)
    arrays.update(network_section(tut, batch))
    arrays.update(log_prob_section(tut, batch))
    arrays.update(gae_section(tut, batch))
    run, loss_arrays = loss_section(tut, batch)
    arrays.update(loss_arrays)
    after, opt_arrays = optimizer_section(tut, run)
    arrays.update(opt_arrays)
    arrays.update(update_section(tut, run.grads, after))

    os.makedirs(os.path.dirname(out_prefix) or ".", exist_ok=True)
    np.savez_compressed(out_prefix + ".npz", **arrays)
    meta = metadata(batch, run, [float(x) for x in arrays["opt/grad_norm"]])
    with open(out_prefix + ".json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return meta


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default=os.path.join(HERE, "torchrl_reference"),
        help="output path without extension (writes .npz and .json)",
    )
    args = parser.parse_args(argv)
    meta = build(args.out)
    size = sum(os.path.getsize(args.out + ext) for ext in (".npz", ".json"))
    print(
        f"wrote {args.out}.npz/.json ({size / 1024:.0f} KiB) with torchrl "
        f"{meta['versions']['torchrl']}: {meta['counts']}"
    )


if __name__ == "__main__":
    main()
