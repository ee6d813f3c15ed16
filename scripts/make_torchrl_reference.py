"""Write the TorchRL parity fixture: ``tests/data/torchrl_reference.{npz,json}``.

Builds the TorchRL PPO tutorial's objects with the installed torchrl (``GymEnv`` +
``ObservationNorm``/``DoubleToFloat``/``StepCounter``, the 3 x 256 Tanh actor with
``NormalParamExtractor`` + ``ProbabilisticActor(TanhNormal)``, the ``ValueOperator`` critic,
``GAE(average_gae=True)``, ``ClipPPOLoss``, Adam + ``clip_grad_norm_`` + ``CosineAnnealingLR``)
under a fixed seed, runs each component once on recorded inputs, and stores inputs, weights
(as a seed: see ``numpy_torch_default_params``) and outputs, so that
``tests/test_torchrl_parity.py`` can check ppo_jax against TorchRL without torch installed.

Usage: ``python scripts/make_torchrl_reference.py [--out tests/data/torchrl_reference]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.join(ROOT, "tests"))

from torch_patches import fixed_standard_normal  # noqa: E402

from ppo_jax import torchrl_compat as tc  # noqa: E402
from ppo_jax import torchrl_reference as ref  # noqa: E402
from ppo_jax.envs import ENV_ID  # noqa: E402

SEED = 0  # torch.manual_seed and env seed
HIDDEN = (256, 256, 256)  # the tutorial's num_cells
OBS_DIM, ACTION_DIM = 11, 1
ACTOR_WEIGHT_SEED, CRITIC_WEIGHT_SEED = 1, 2  # numpy RandomState seeds of the weights
NORM_ITERS = 300  # ObservationNorm.init_stats(num_iter=...)
GAE_T = 200  # steps in the GAE batch
MINIBATCH = 64  # the tutorial's sub_batch_size
MB_SEED = 3  # numpy RandomState: minibatch indices and the synthetic old log-prob offsets
OLD_LOG_PROB_NOISE = 0.3  # std of (log pi_old - log pi) offsets: ratios on both sides of the clip
ENTROPY_KEY = 4  # jax.random.PRNGKey of the MC-entropy noise
SUBSAMPLE = 4096  # entries stored per large gradient/update leaf
SUBSAMPLE_SEED = 5
GAMMA, LMBDA = 0.99, 0.95
CLIP_EPS, ENTROPY_COEFF, CRITIC_COEFF = 0.2, 1e-4, 1.0
LR, MAX_GRAD_NORM = 3e-4, 1.0
NUM_BATCHES, LR_BATCH, OPT_STEPS = 10, 3, 3
EXTRA_ACTIONS = [1.0, -1.0, 1 - 1e-7, -(1 - 1e-7), 1 - 1e-6, 0.99999, -0.9999, 0.0]


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
    """The standard normal draw ``ppo_jax.losses.ppo_loss(key=PRNGKey(ENTROPY_KEY))`` uses."""
    import jax
    import jax.numpy as jnp

    from ppo_jax import distributions

    _, u, _ = distributions.sample(
        jax.random.PRNGKey(ENTROPY_KEY), jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32)
    )
    return np.asarray(u, np.float32)


def build(out_prefix: str) -> dict:
    import tensordict
    import torch
    import torchrl
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    torch.manual_seed(SEED)
    arrays: dict[str, np.ndarray] = {}

    # --- environment + ObservationNorm statistics -----------------------------------------
    env = ref.tutorial_env(ENV_ID, seed=SEED)
    obs_norm = env.transform[0]
    norm_data = ref.record_init_stats(obs_norm, NORM_ITERS)
    arrays["norm/data"] = norm_data  # float64, what init_stats reduced
    arrays["norm/loc"] = obs_norm.loc.detach().numpy()  # float64 [11]
    arrays["norm/scale"] = obs_norm.scale.detach().numpy()

    # --- networks: tutorial modules, weights from a numpy seed ----------------------------
    mods = ref.tutorial_modules(
        OBS_DIM,
        ACTION_DIM,
        HIDDEN,
        low=env.action_spec.space.low,
        high=env.action_spec.space.high,
        spec=env.action_spec,
    )
    actor_w = tc.numpy_torch_default_params(OBS_DIM, HIDDEN, 2 * ACTION_DIM, ACTOR_WEIGHT_SEED)
    critic_w = tc.numpy_torch_default_params(OBS_DIM, HIDDEN, 1, CRITIC_WEIGHT_SEED)
    tc.actor_params_to_torch(actor_w, mods.policy)
    tc.critic_params_to_torch(critic_w, mods.value)
    for name, leaf in [*_flat_leaves(actor_w, "actor"), *_flat_leaves(critic_w, "critic")]:
        arrays[f"weights_sum/{name}"] = np.float64(leaf.astype(np.float64).sum())
    back = tc.actor_params_from_torch(mods.policy)
    for (_, a), (_, b) in zip(_flat_leaves(actor_w, "a"), _flat_leaves(back, "a")):
        assert np.array_equal(a, b), "actor weight round trip through torch failed"

    # --- a rollout of the tutorial env with this policy -----------------------------------
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        ro = env.rollout(GAE_T + 40, mods.policy, break_when_any_done=False)
    done_ro = ro["next", "done"].squeeze(-1).numpy()
    end = GAE_T + 40
    while done_ro[end - 1]:  # end the batch mid-episode: the last step bootstraps
        end -= 1
    ro = ro[end - GAE_T : end]

    obs = ro["observation"].clone()
    next_obs = ro["next", "observation"].clone()
    action = ro["action"].clone()
    reward = ro["next", "reward"].clone()
    terminated = ro["next", "terminated"].clone()
    truncated = torch.zeros_like(terminated)
    term_idx = np.flatnonzero(terminated.squeeze(-1).numpy())
    assert len(term_idx) >= 3, f"rollout has only {len(term_idx)} terminations"
    # Time-limit truncations by hand, mid-episode (not next to a termination), plus one step
    # that is both terminated and truncated.
    free = [
        t
        for t in range(5, GAE_T - 5)
        if not terminated[t - 1 : t + 2].any()
    ]
    trunc_idx = [free[len(free) // 4], free[len(free) // 2], free[3 * len(free) // 4]]
    truncated[trunc_idx] = True
    truncated[int(term_idx[1])] = True
    done = terminated | truncated
    td = TensorDict(
        {
            "observation": obs,
            "action": action,
            "next": {
                "observation": next_obs,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "done": done,
            },
        },
        batch_size=[GAE_T],
    )

    # --- network outputs --------------------------------------------------------------------
    with torch.no_grad():
        loc, scale = mods.actor_net(obs)
        value = mods.value_net(obs).squeeze(-1)
    arrays.update(
        {
            "net/obs": obs.numpy(),
            "net/loc": loc.numpy(),
            "net/scale": scale.numpy(),
            "net/value": value.numpy(),
        }
    )

    # --- TanhNormal log-probs (policy's own distribution) -----------------------------------
    lp_actions = action.clone()
    lp_actions[-len(EXTRA_ACTIONS) :, 0] = torch.tensor(EXTRA_ACTIONS, dtype=torch.float32)
    with torch.no_grad():
        dist = mods.policy.get_dist(TensorDict({"observation": obs}, [GAE_T]))
        lp = dist.log_prob(lp_actions)
    arrays["logprob/action"] = lp_actions.numpy()
    arrays["logprob/log_prob"] = lp.numpy()
    arrays["logprob/rollout_log_prob"] = ro["action_log_prob"].numpy()  # at sampling time
    arrays["logprob/num_edge"] = np.int64(len(EXTRA_ACTIONS))

    # --- GAE (raw and average_gae=True) --------------------------------------------------------
    with torch.no_grad():
        raw = ref.tutorial_gae(mods.value, gamma=GAMMA, lmbda=LMBDA, average_gae=False)(
            td.clone()
        )
        ref.tutorial_gae(mods.value, gamma=GAMMA, lmbda=LMBDA)(td)
    arrays.update(
        {
            "gae/obs": obs.numpy(),
            "gae/next_obs": next_obs.numpy(),
            "gae/reward": reward.squeeze(-1).numpy(),
            "gae/terminated": terminated.squeeze(-1).numpy(),
            "gae/truncated": truncated.squeeze(-1).numpy(),
            "gae/done": done.squeeze(-1).numpy(),
            "gae/state_value": td["state_value"].squeeze(-1).numpy(),
            "gae/next_state_value": td["next", "state_value"].squeeze(-1).numpy(),
            "gae/advantage_raw": raw["advantage"].squeeze(-1).numpy(),
            "gae/advantage": td["advantage"].squeeze(-1).numpy(),
            "gae/value_target": td["value_target"].squeeze(-1).numpy(),
        }
    )

    # --- ClipPPOLoss on one minibatch ------------------------------------------------------
    ok = np.flatnonzero(np.abs(action.squeeze(-1).numpy()) < 1 - 1e-6)
    ok = ok[ok < GAE_T - len(EXTRA_ACTIONS)]
    rng = np.random.RandomState(MB_SEED)
    mb_idx = np.sort(rng.choice(ok, MINIBATCH, replace=False))
    mb = td[torch.as_tensor(mb_idx)].clone()
    with torch.no_grad():
        lp_now = mods.policy.get_dist(mb).log_prob(mb["action"])
    old = lp_now + torch.as_tensor(
        rng.normal(0.0, OLD_LOG_PROB_NOISE, MINIBATCH).astype(np.float32)
    )
    mb.set("action_log_prob", old)
    mb = mb.select("observation", "action", "action_log_prob", "advantage", "value_target")
    noise = _entropy_noise((MINIBATCH, ACTION_DIM))
    loss_module = ref.tutorial_loss(
        mods.policy,
        mods.value,
        clip_epsilon=CLIP_EPS,
        entropy_coeff=ENTROPY_COEFF,
        critic_coeff=CRITIC_COEFF,
    )
    with fixed_standard_normal(noise) as calls:
        out = loss_module(mb)
    assert len(calls) == 1, f"expected one MC-entropy draw, got {calls}"
    total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
    total.backward()
    arrays.update(
        {
            "loss/mb_idx": mb_idx.astype(np.int32),
            "loss/obs": mb["observation"].numpy(),
            "loss/action": mb["action"].numpy(),
            "loss/old_log_prob": old.numpy(),
            "loss/advantage": mb["advantage"].squeeze(-1).numpy(),
            "loss/value_target": mb["value_target"].squeeze(-1).numpy(),
            "loss/entropy_noise": noise,
            "loss/entropy_key": np.int64(ENTROPY_KEY),
            "loss/total": total.detach().numpy(),
        }
    )
    terms = [
        "loss_objective",
        "loss_critic",
        "loss_entropy",
        "entropy",
        "clip_fraction",
        "kl_approx",
        "ESS",
        "max_ratio",
        "mean_ratio",
    ]
    for k in terms:
        arrays[f"loss/{k}"] = out[k].detach().numpy()
    grads = {
        "actor": tc.linear_tree_from_torch(mods.policy, actor=True, grad=True),
        "critic": tc.linear_tree_from_torch(mods.value, actor=False, grad=True),
    }
    loss_module.zero_grad(set_to_none=True)

    # --- optimizer: clip_grad_norm_ + Adam at the lr of batch LR_BATCH of the cosine schedule
    params = list(loss_module.parameters())
    optim = torch.optim.Adam(params, LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, NUM_BATCHES, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(LR_BATCH):
            sched.step()
    lr_used = optim.param_groups[0]["lr"]
    norms, totals = [], []
    for _ in range(OPT_STEPS):
        with fixed_standard_normal(noise):
            out_s = loss_module(mb)
        tot = out_s["loss_objective"] + out_s["loss_critic"] + out_s["loss_entropy"]
        tot.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)))
        totals.append(float(tot.detach()))
        optim.step()
        optim.zero_grad()
    after = {
        "actor": tc.actor_params_from_torch(mods.policy),
        "critic": tc.critic_params_from_torch(mods.value),
    }
    before = {"actor": actor_w, "critic": critic_w}
    arrays["opt/lr"] = np.float64(lr_used)
    arrays["opt/grad_norm"] = np.asarray(norms)
    arrays["opt/loss"] = np.asarray(totals)

    # Gradients and parameter updates: every entry of the small leaves, SUBSAMPLE entries of
    # the large ones (plus each full leaf's L2 norm), to keep the fixture small.
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

    os.makedirs(os.path.dirname(out_prefix) or ".", exist_ok=True)
    np.savez_compressed(out_prefix + ".npz", **arrays)

    meta = {
        "versions": {
            "torchrl": torchrl.__version__,
            "tensordict": tensordict.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "generated_by": "scripts/make_torchrl_reference.py",
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
        "config": {
            "hidden_sizes": list(HIDDEN),
            "obs_dim": OBS_DIM,
            "action_dim": ACTION_DIM,
            "gamma": GAMMA,
            "lmbda": LMBDA,
            "clip_epsilon": CLIP_EPS,
            "entropy_coeff": ENTROPY_COEFF,
            "critic_coeff": CRITIC_COEFF,
            "loss_critic_type": "smooth_l1",
            "lr": LR,
            "max_grad_norm": MAX_GRAD_NORM,
            "num_batches": NUM_BATCHES,
            "lr_batch": LR_BATCH,
            "optimizer_steps": OPT_STEPS,
            "minibatch_size": MINIBATCH,
            "gae_steps": GAE_T,
            "init_stats_num_iter": NORM_ITERS,
            "subsample": SUBSAMPLE,
        },
        "weights": (
            "Not stored: ppo_jax.torchrl_compat.numpy_torch_default_params(11, hidden, out, seed) "
            "(torch's default Linear distribution from numpy's RandomState) regenerates them; "
            "they were copied into the TorchRL modules with actor/critic_params_to_torch. "
            "weights_sum/* are per-leaf float64 sums to check the regeneration."
        ),
        "computed": {
            "norm": (
                "ObservationNorm.init_stats(num_iter=%d, reduce_dim=0, cat_dim=0) on the seeded "
                "env; norm/data = the float64 observations it reduced (recorded from the parent "
                "env's rollouts), norm/loc, norm/scale = the resulting transform buffers "
                "(standard_normal=False form: obs * scale + loc)." % NORM_ITERS
            ),
            "net": (
                "actor_net(obs) -> (loc, scale) and value_net(obs) on the rollout's observations."
            ),
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
                % (GAE_T, trunc_idx, int(term_idx[1]))
            ),
            "loss": (
                "ClipPPOLoss on %d rows (loss/mb_idx) of the GAE batch with |action| < 1 - 1e-6, "
                "advantage = standardized GAE advantage, old log-prob = current log-prob + "
                "N(0, %.2f) offsets (a synthetic old policy, so ratios fall on both sides of the "
                "clip range); all output terms; grad/* = gradients of loss_objective + "
                "loss_critic + loss_entropy." % (MINIBATCH, OLD_LOG_PROB_NOISE)
            ),
            "entropy": (
                "patched noise (exact comparison, not in expectation): the MC entropy's "
                "standard-normal draw was fixed to loss/entropy_noise by patching "
                "torch.distributions.normal._standard_normal; that noise is what "
                "ppo_jax.distributions.sample(PRNGKey(entropy_key), 0, 1) draws, so "
                "ppo_loss(..., key=PRNGKey(entropy_key)) uses the same sample."
            ),
            "opt": (
                "%d steps on the same minibatch (same entropy noise) from fresh Adam state: "
                "loss.backward(); clip_grad_norm_(loss_module.parameters(), %.1f); Adam(lr) "
                "with the lr of CosineAnnealingLR(T_max=%d, eta_min=0) after %d scheduler steps "
                "(opt/lr); opt/grad_norm = pre-clip global norms; delta/* = params after - "
                "before." % (OPT_STEPS, MAX_GRAD_NORM, NUM_BATCHES, LR_BATCH)
            ),
            "subsampling": (
                "grad/* and delta/* hold every entry of leaves with <= %d entries and %d "
                "entries (flat indices sub/*/idx) of larger ones, plus each full leaf's L2 norm."
                % (SUBSAMPLE, SUBSAMPLE)
            ),
        },
        "counts": {
            "terminations": int(terminated.sum()),
            "truncations": int(truncated.sum()),
            "clip_fraction": float(out["clip_fraction"]),
            "grad_norms": norms,
        },
    }
    with open(out_prefix + ".json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return meta


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default=os.path.join(ROOT, "tests", "data", "torchrl_reference"),
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
