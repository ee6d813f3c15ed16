"""ppo_jax against the installed TorchRL, on fresh torch-initialized weights and random inputs
(seed ``PPO_JAX_PARITY_SEED``, default 0); each test skips when torchrl is not installed (CI
installs it). What is compared and to which tolerances: ``parity.py``."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ppo_jax.core import distributions, losses, optim
from ppo_jax.interop.torchrl import reference as torchrl_reference
from ppo_jax.interop.torchrl import compat as tc
from ppo_jax.envs import ENV_ID
from ppo_jax.core.hyper import hyper_of
from ppo_jax.core.normalization import ObsNormStats, normalize, stats_from_observations
from tests.torch_patches import fixed_standard_normal

from tests.parity import (  # the shared constants, checks and ppo_jax's side
    ACTION_DIM,
    ADAM_ATOL_E2E,
    CONFIG,
    HIDDEN,
    LOSS_TERMS,
    LR_BATCH,
    MB,
    OBS_DIM,
    SATURATION,
    SEED,
    check,
    check_loss_terms,
    check_tree,
    flat_leaves,
    torch_gae,
    torch_loss,
    with_schedule_batch,
)


@pytest.fixture(scope="module")
def trl():
    torchrl = pytest.importorskip("torchrl")
    import torch

    torch.manual_seed(SEED)
    mods = torchrl_reference.tutorial_modules(OBS_DIM, ACTION_DIM, HIDDEN)
    where = f"live torchrl {torchrl.__version__}, torch {torch.__version__}, seed {SEED}"
    params = losses.Params(actor=tc.actor_params_from_torch(mods.policy),
                           critic=tc.critic_params_from_torch(mods.value))
    return {"torch": torch, "mods": mods, "where": where, "params": params,
            "rng": np.random.RandomState(SEED)}


def _obs(rng, n):
    obs = rng.normal(0.0, 1.5, (n, OBS_DIM)).astype(np.float32)
    obs[::7, 8:] = rng.normal(0.0, 1e3, (len(obs[::7]), 3))  # ObservationNorm's 1e6 inputs
    return obs


def test_live_param_conversion(trl, jx):
    pytest.importorskip("torchrl")
    torch, mods = trl["torch"], trl["mods"]
    p = trl["params"]
    # layout = ppo_jax.core.networks' layout
    want = jax.eval_shape(jx.actor.init, jax.random.PRNGKey(0), jnp.zeros(OBS_DIM))
    chex.assert_trees_all_equal_shapes_and_dtypes(p.actor, want)
    want = jax.eval_shape(jx.critic.init, jax.random.PRNGKey(0), jnp.zeros(OBS_DIM))
    chex.assert_trees_all_equal_shapes_and_dtypes(p.critic, want)
    # kernel is the transpose of torch's weight; the bare nn.Sequential gives the same tree
    np.testing.assert_array_equal(p.actor["params"]["net"]["layers_0"]["kernel"],
                                  mods.actor_net[0].weight.detach().numpy().T)
    chex.assert_trees_all_equal(p.actor, tc.actor_params_from_torch(mods.actor_net))
    chex.assert_trees_all_equal(p.critic, tc.critic_params_from_torch(mods.value_net))
    # jax -> torch -> jax is exact, on copies of the modules
    fresh = torchrl_reference.tutorial_modules(OBS_DIM, ACTION_DIM, HIDDEN)
    a0 = jx.actor.init(jax.random.PRNGKey(1), jnp.zeros(OBS_DIM))
    c0 = jx.critic.init(jax.random.PRNGKey(2), jnp.zeros(OBS_DIM))
    tc.actor_params_to_torch(a0, fresh.policy)
    tc.critic_params_to_torch(c0, fresh.value_net)
    chex.assert_trees_all_equal(tc.actor_params_from_torch(fresh.actor_net), a0)
    chex.assert_trees_all_equal(tc.critic_params_from_torch(fresh.value), c0)
    assert isinstance(fresh.actor_net[0].weight, torch.nn.Parameter)
    assert fresh.actor_net[0].weight.requires_grad  # still trainable parameters
    with pytest.raises(ValueError):
        tc.actor_params_to_torch(c0, fresh.policy)  # critic tree into the actor


def test_live_networks(trl, jx):
    pytest.importorskip("torchrl")
    torch, mods, p, where = trl["torch"], trl["mods"], trl["params"], trl["where"]
    obs = _obs(trl["rng"], 200)
    with torch.no_grad():
        loc, scale = mods.actor_net(torch.as_tensor(obs))
        value = mods.value_net(torch.as_tensor(obs)).squeeze(-1)
    jloc, jscale = jx.actor_apply(p.actor, obs)
    check("live actor loc", jloc, loc.numpy(), rtol=1e-5, atol=1e-6, where=where)
    check("live actor scale", jscale, scale.numpy(), rtol=1e-5, atol=1e-6, where=where)
    check("live critic value", jx.critic_apply(p.critic, obs), value.numpy(), rtol=1e-5,
          atol=1e-6, where=where)
    # NormalParamExtractor alone, over a wide range of raw outputs (floor 1e-4 included)
    from tensordict.nn.distributions import NormalParamExtractor

    from ppo_jax.core.networks import normal_params

    raw = np.concatenate([np.linspace(-30, 30, 601), [-1e4, 0.0, 1e4]]).astype(np.float32)
    raw = np.stack([raw, raw], -1)
    tl, ts = NormalParamExtractor()(torch.as_tensor(raw))
    jl, js = normal_params(jnp.asarray(raw))
    check("live NormalParamExtractor scale", js, ts.numpy(), rtol=1e-6, atol=0, where=where)
    np.testing.assert_array_equal(jl, tl.numpy())


def _policy_dist(trl, obs):
    from tensordict import TensorDict

    td = TensorDict({"observation": trl["torch"].as_tensor(obs)}, [len(obs)])
    return trl["mods"].policy.get_dist(td)


def test_live_log_prob(trl, jx):
    pytest.importorskip("torchrl")
    torch, where = trl["torch"], trl["where"]
    rng = trl["rng"]
    obs = _obs(rng, 200)
    with torch.no_grad():
        dist = _policy_dist(trl, obs)
        loc, scale = dist.root_dist.loc.numpy(), dist.root_dist.scale.numpy()
        action = dist.sample().numpy()
        edges = np.array([1.0, -1.0, 1 - 1e-7, -(1 - 1e-7), 1 - 1e-6, 0.99999, 0.0], np.float32)
        action[-len(edges):, 0] = edges
        want = dist.log_prob(torch.as_tensor(action)).numpy()
    got = jx.log_prob_from_action(loc, scale, action)
    check("live log_prob_from_action", got, want, rtol=1e-5, atol=1e-5, where=where)
    ok = np.abs(action[:, 0]) < SATURATION
    got = jx.log_prob_pre_tanh(loc, scale, distributions.safe_atanh(jnp.asarray(action)))
    check("live log_prob_pre_tanh (|a| < 1-1e-6)", np.asarray(got)[ok], want[ok], rtol=1e-5,
          atol=1e-5, where=where)

    # The intended deviation: pre-tanh values beyond the float32 saturation point.
    u = np.array([[0.5], [-2.0], [3.0], [9.0], [-12.0]], np.float32)
    l5, s5 = loc[:5], scale[:5]
    with torch.no_grad():
        from torchrl.modules import TanhNormal

        d5 = TanhNormal(torch.as_tensor(l5), torch.as_tensor(s5), low=-1.0, high=1.0)
        torch_lp = d5.log_prob(d5._t(torch.as_tensor(u))).numpy()  # scores tanh(u), clamped
    jax_lp = np.asarray(jx.log_prob_pre_tanh(l5, s5, jnp.asarray(u)))
    below = np.abs(u[:, 0]) < 7.0  # atanh(1 - 1e-6) = 7.25
    check("live log_prob at u (unsaturated)", jax_lp[below], torch_lp[below], rtol=1e-4,
          atol=1e-4, where=where)
    assert np.all(np.abs(jax_lp[~below] - torch_lp[~below]) > 1e-2), (
        "expected ppo_jax (true u) and TorchRL (clamped atanh) to differ past saturation"
    )


def test_live_entropy_sample(trl, jx):
    pytest.importorskip("torchrl")
    torch, where = trl["torch"], trl["where"]
    obs = _obs(trl["rng"], MB)
    key = jax.random.PRNGKey(SEED + 11)
    with torch.no_grad():
        dist = _policy_dist(trl, obs)
        loc, scale = dist.root_dist.loc.numpy(), dist.root_dist.scale.numpy()
        _, noise, _ = distributions.sample(key, jnp.zeros(loc.shape), jnp.ones(loc.shape))
        with fixed_standard_normal(noise) as calls:
            a, lp = dist.rsample_and_log_prob((1,))  # what ClipPPOLoss's MC entropy calls
    assert calls == [(1, MB, ACTION_DIM)]
    ja, ju, jlp = distributions.sample(key, jnp.asarray(loc), jnp.asarray(scale))
    check("live rsample action", ja, a[0].numpy(), rtol=1e-5, atol=1e-6, where=where)
    check("live rsample log_prob", jlp, lp[0].numpy(), rtol=1e-5, atol=1e-5, where=where)
    check("live entropy_estimate", distributions.entropy_estimate(key, loc, scale),
          -lp[0].numpy(), rtol=1e-5, atol=1e-5, where=where)


# the tutorial's discount and lambda, then others: lambda 1 (Monte-Carlo returns to the
# bootstrap) and 0 (one-step TD), each with another discount
GAE_SETTINGS = ((CONFIG.gamma, CONFIG.lmbda), (0.9, 1.0), (0.5, 0.0))


@pytest.mark.parametrize("gamma,lmbda", GAE_SETTINGS)
def test_live_gae(trl, jx, gamma, lmbda):
    """Advantages (raw and standardized) and value targets equal TorchRL's ``GAE`` over two
    envs' 100 steps with terminations and time-limit truncations mid-batch, at the tutorial's
    ``gamma``/``lmbda`` and at others."""
    pytest.importorskip("torchrl")
    torch, mods, p, where = trl["torch"], trl["mods"], trl["params"], trl["where"]
    from tensordict import TensorDict

    rng = np.random.RandomState(SEED + 1)
    E, T = 2, 100  # TorchRL: [envs, time]; ppo_jax: time-major
    obs = np.stack([_obs(rng, T) for _ in range(E)])
    next_obs = np.stack([_obs(rng, T) for _ in range(E)])
    reward = rng.normal(1.0, 2.0, (E, T)).astype(np.float32)
    terminated = rng.rand(E, T) < 0.05
    truncated = rng.rand(E, T) < 0.05
    truncated[0, 40] = True  # a time-limit truncation mid-batch, for sure
    terminated[0, 40] = False
    terminated[1, 60] = True
    done = terminated | truncated
    t = torch.as_tensor
    td = TensorDict(
        {
            "observation": t(obs),
            "next": {
                "observation": t(next_obs),
                "reward": t(reward)[..., None],
                "terminated": t(terminated)[..., None],
                "truncated": t(truncated)[..., None],
                "done": t(done)[..., None],
            },
        },
        [E, T],
    )
    with torch.no_grad():
        raw = torch_gae(mods, average_gae=False, gamma=gamma, lmbda=lmbda)(td.clone())
        torch_gae(mods, gamma=gamma, lmbda=lmbda)(td)
    values = jx.critic_apply(p.critic, obs.reshape(-1, OBS_DIM)).reshape(E, T)
    next_values = jx.critic_apply(p.critic, next_obs.reshape(-1, OBS_DIM)).reshape(E, T)
    check("live GAE state_value", values, td["state_value"][..., 0].numpy(), rtol=1e-5,
          atol=1e-6, where=where)
    check("live GAE next state_value", next_values, td["next", "state_value"][..., 0].numpy(),
          rtol=1e-5, atol=1e-6, where=where)
    adv, target = jx.gae(rewards=jnp.asarray(reward.T), values=values.T,
                         next_values=next_values.T, terminated=jnp.asarray(terminated.T),
                         done=jnp.asarray(done.T), gamma=gamma, lmbda=lmbda)
    where = f"{where}, gamma {gamma}, lmbda {lmbda}"
    check("live GAE advantage (raw)", adv.T, raw["advantage"][..., 0].numpy(), rtol=1e-5,
          atol=1e-5, where=where)
    check("live GAE value_target", target.T, td["value_target"][..., 0].numpy(), rtol=1e-5,
          atol=1e-5, where=where)
    check("live GAE advantage (average_gae)", jx.standardize(adv).T,
          td["advantage"][..., 0].numpy(), rtol=1e-5, atol=1e-5, where=where)


def _live_minibatch(trl, rng):
    """A TorchRL minibatch (actions sampled by the policy, a perturbed old log-prob)."""
    torch = trl["torch"]
    from tensordict import TensorDict

    obs = _obs(rng, MB)
    with torch.no_grad():
        dist = _policy_dist(trl, obs)
        action = dist.sample()
        action = torch.where(action.abs() < SATURATION, action, torch.zeros_like(action))
        lp = dist.log_prob(action)
    old = lp + torch.as_tensor(rng.normal(0.0, 0.3, MB).astype(np.float32))
    td = TensorDict(
        {
            "observation": torch.as_tensor(obs),
            "action": action,
            "action_log_prob": old,
            "advantage": torch.as_tensor(rng.normal(0, 1, (MB, 1)).astype(np.float32)),
            "value_target": torch.as_tensor(rng.normal(0, 3, (MB, 1)).astype(np.float32)),
        },
        [MB],
    )
    return td


def _jax_minibatch(jx, td):
    return jx.minibatch(td["observation"].numpy(), td["action"].numpy(),
                        td["action_log_prob"].numpy(), td["advantage"][:, 0].numpy(),
                        td["value_target"][:, 0].numpy())


def test_live_loss_and_grads(trl, jx):
    pytest.importorskip("torchrl")
    torch, mods, where = trl["torch"], trl["mods"], trl["where"]
    td = _live_minibatch(trl, np.random.RandomState(SEED + 2))
    key = jax.random.PRNGKey(SEED + 3)
    _, noise, _ = distributions.sample(key, jnp.zeros((MB, ACTION_DIM)), jnp.ones((MB, ACTION_DIM)))
    loss_module = torch_loss(mods)
    loss_module.zero_grad(set_to_none=True)
    with fixed_standard_normal(noise) as calls:
        out = loss_module(td)
    assert len(calls) == 1
    total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
    total.backward()
    t_grads = losses.Params(
        actor=tc.linear_tree_from_torch(mods.policy, actor=True, grad=True),
        critic=tc.linear_tree_from_torch(mods.value, actor=False, grad=True),
    )
    loss_module.zero_grad(set_to_none=True)
    (loss, m), grads = jx.loss_and_grad(trl["params"], _jax_minibatch(jx, td), key)
    want = {k: out[k].detach().numpy() for k in (*LOSS_TERMS, "clip_fraction")}
    assert 0 < want["clip_fraction"] < 1
    check_loss_terms(m, want, where)
    check("live loss", loss, total.detach().numpy(), rtol=1e-5, atol=1e-8, where=where)
    check_tree("live grad actor", grads.actor, t_grads.actor, where)
    check_tree("live grad critic", grads.critic, t_grads.critic, where)


# Settings a user may give that the tutorial leaves at their defaults (its: smooth_l1, 1e-4,
# 1.0, 0.2): each critic distance; an entropy bonus 100x the tutorial's and none at all (TorchRL
# then computes no entropy term: ``entropy_bonus=False``); the critic's coefficient halved,
# doubled and 0 (TorchRL then computes no critic loss); the ratio clip narrower, wider and at 1
# (its lower bound log 0 = -inf)
LOSS_SETTINGS_CASES = (
    dict(critic_loss="l2", entropy_coeff=0.01, critic_coeff=0.5, clip_epsilon=0.1),
    dict(critic_loss="l1", entropy_coeff=0.0, critic_coeff=2.0, clip_epsilon=0.3),
    dict(critic_loss="smooth_l1", entropy_coeff=1e-4, critic_coeff=0.0, clip_epsilon=1.0),
)


@pytest.mark.parametrize("settings", LOSS_SETTINGS_CASES,
                         ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_live_loss_settings(trl, jx, settings):
    """Every loss term and the gradients equal ``ClipPPOLoss``'s at settings other than the
    tutorial's, so that each ``PPOConfig`` loss field means what TorchRL's argument means. A
    term TorchRL leaves out at a zero coefficient is 0 in ppo_jax, and a parameter TorchRL's
    loss does not reach gets a zero gradient."""
    pytest.importorskip("torchrl")
    mods, where = trl["mods"], f"{trl['where']}, {settings}"
    td = _live_minibatch(trl, np.random.RandomState(SEED + 4))
    # advantages large enough that a 0.1-0.3 clip is active on some samples, not all
    td.set("advantage", td["advantage"] * 3.0)
    key = jax.random.PRNGKey(SEED + 5)
    _, noise, _ = distributions.sample(key, jnp.zeros((MB, ACTION_DIM)), jnp.ones((MB, ACTION_DIM)))
    loss_module = torch_loss(mods, **settings)
    loss_module.zero_grad(set_to_none=True)
    with fixed_standard_normal(noise) as calls:
        out = loss_module(td)
    has_entropy, has_critic = settings["entropy_coeff"] != 0, settings["critic_coeff"] != 0
    assert len(calls) == int(has_entropy)
    assert ("loss_entropy" in out.keys()) == has_entropy
    assert ("loss_critic" in out.keys()) == has_critic
    total = sum(out[k] for k in ("loss_objective", "loss_critic", "loss_entropy")
                if k in out.keys())
    total.backward()
    (loss, m), grads = jx.loss_and_grad_for(**settings)(trl["params"], _jax_minibatch(jx, td),
                                                         key)
    # the objective is a mean of MB terms of size ~|A| (the ratio is ~1) that cancel to far
    # less than |A| here: its float32 rounding is ulps of |A|, not of the mean (atol: 2 ulps)
    objective_atol = 2 * np.finfo(np.float32).eps * float(td["advantage"].abs().mean())
    check("live loss_objective", m.loss_objective, out["loss_objective"].detach().numpy(),
          rtol=1e-5, atol=objective_atol, where=where)
    for term, present in (("loss_entropy", has_entropy), ("loss_critic", has_critic)):
        want = out[term].detach().numpy() if present else 0.0
        check(f"live {term}", getattr(m, term), want, rtol=1e-5, atol=1e-8, where=where)
    if has_entropy:
        check("live entropy", m.entropy, out["entropy"].detach().numpy(), rtol=1e-5, atol=1e-8,
              where=where)
    for term in ("kl_approx", "ESS"):
        check(f"live {term}", getattr(m, term), out[term].detach().numpy(), rtol=1e-5,
              atol=1e-8, where=where)
    check("live clip_fraction", m.clip_fraction, out["clip_fraction"].detach().numpy(), rtol=0,
          atol=1.5 / MB, where=where)
    if settings["clip_epsilon"] < 1:  # (at 1 only a ratio above 2 is clipped)
        assert 0 < float(out["clip_fraction"]) < 1, "the clip must be active on some samples"
    check("live loss", loss, total.detach().numpy(), rtol=1e-5, atol=1e-8, where=where)
    check_tree("live grad actor", grads.actor,
               tc.linear_tree_from_torch(mods.policy, actor=True, grad=True), where)
    if has_critic:
        check_tree("live grad critic", grads.critic,
                   tc.linear_tree_from_torch(mods.value, actor=False, grad=True), where)
    else:
        assert all(p.grad is None for p in mods.value.parameters())
        assert all(not np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads.critic))
    loss_module.zero_grad(set_to_none=True)


ADVANTAGE_SCALES = (4.0, 40.0)  # one optimizer step per scale, see below


def _scaled_advantage(td, scale: float):
    out = td.clone()
    out.set("advantage", td["advantage"] * scale)
    return out


def _updates(opt, state, params, grads_seq, prepare=lambda s: s):
    """``params`` after applying ``opt`` to each gradient of ``grads_seq`` in turn
    (``prepare``: what is done to the state before each update)."""
    for g in grads_seq:
        updates, state = opt.update(g, prepare(state), params)
        params = optax.apply_updates(params, updates)
    return params


def _per_leaf_clip(max_norm: float) -> optax.GradientTransformation:
    """Each leaf clipped to norm ``max_norm`` on its own (what a global clip is not)."""
    def clip(leaf):
        return leaf * jnp.minimum(1.0, max_norm / jnp.linalg.norm(leaf))

    return optax.stateless(lambda grads, _: jax.tree_util.tree_map(clip, grads))


def _excess(got, want, *, rtol, atol) -> float:
    """max |got - want| / (atol + rtol |want|): <= 1 where ``check`` passes."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float((np.abs(got - want) / (atol + rtol * np.abs(want))).max())


def test_live_optimizer_step(trl, jx):
    """clip_grad_norm_ + Adam + CosineAnnealingLR vs make_optimizer + lr_at_batch.

    The steps' minibatches differ only in the scale of their advantages
    (``ADVANTAGE_SCALES``), so every step's pre-clip global norm is above ``max_grad_norm``
    (the clip is active) and the norms are far apart. That matters: Adam is invariant to one
    common scale of all gradients, so a clip changes Adam's result only through the ratio of
    the steps' norms; with equal norms any clip, or none, would pass.

    Checked: (0) the cosine lr; (1) the optimizer alone, fed TorchRL's own gradients, equals
    TorchRL's update (tight), and the same Adam without the clip or with a per-leaf clip does
    not (so this comparison sees the clip by GLOBAL norm); (2) end to end from ppo_jax's own
    gradients (loose per entry, see ADAM_ATOL_E2E; tight on update norms).
    """
    pytest.importorskip("torchrl")
    torch, where = trl["torch"], trl["where"]
    import warnings

    config = jx.config
    mods = torchrl_reference.tutorial_modules(OBS_DIM, ACTION_DIM, HIDDEN)  # own weights: we train them
    p0 = losses.Params(actor=tc.actor_params_from_torch(mods.policy),
                       critic=tc.critic_params_from_torch(mods.value))
    base = _live_minibatch(dict(trl, mods=mods), np.random.RandomState(SEED + 4))
    minibatches = [_scaled_advantage(base, s) for s in ADVANTAGE_SCALES]
    key = jax.random.PRNGKey(SEED + 5)
    _, noise, _ = distributions.sample(key, jnp.zeros((MB, ACTION_DIM)), jnp.ones((MB, ACTION_DIM)))
    loss_module = torch_loss(mods)
    params = list(loss_module.parameters())
    assert len(params) == 2 * 2 * (len(HIDDEN) + 1)  # actor + critic, nothing else

    # (0) the learning rate of every batch
    opt, sched = torchrl_reference.tutorial_optimizer(params, lr=config.lr,
                                                      num_batches=config.num_batches)
    lrs = [opt.param_groups[0]["lr"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler stepped before the optimizer
        for _ in range(config.num_batches):
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
    check(f"cosine lr, batches 0..{config.num_batches}",
          optim.lr_at_batch(config, jnp.arange(config.num_batches + 1)), lrs, rtol=1e-5,
          atol=1e-12, where=where)  # float32 cos vs torch's float64

    # TorchRL's steps at the lr of batch LR_BATCH
    lr = float(lrs[LR_BATCH])
    opt, _ = torchrl_reference.tutorial_optimizer(params, lr=lr)
    norms, torch_grads = [], []
    for td in minibatches:
        with fixed_standard_normal(noise):
            torchrl_reference.loss_backward(loss_module, td)
        torch_grads.append(losses.Params(
            actor=tc.linear_tree_from_torch(mods.policy, actor=True, grad=True),
            critic=tc.linear_tree_from_torch(mods.value, actor=False, grad=True)))
        norms.append(float(torchrl_reference.clipped_step(opt, params, config.max_grad_norm)))
    after = losses.Params(actor=tc.actor_params_from_torch(mods.policy),
                          critic=tc.critic_params_from_torch(mods.value))
    print(f"PARITY live optimizer: pre-clip global norms {norms}")
    assert min(norms) > 1.5 * config.max_grad_norm, "the clip must be active at every step"
    assert max(norms) > 3 * min(norms), "the steps' norms must differ for the clip to matter"
    before = {net: dict(flat_leaves(getattr(p0, net))) for net in ("actor", "critic")}
    want = {net: {k: v - before[net][k] for k, v in flat_leaves(getattr(after, net))}
            for net in ("actor", "critic")}

    def worst_excess(p):
        """The largest ``_excess`` of ``p``'s update over all leaves, at (1)'s tolerances."""
        out = 0.0
        for net in ("actor", "critic"):
            for leaf, a in flat_leaves(getattr(p, net)):
                b = before[net][leaf]
                ulp = float(np.spacing(np.abs(b).max().astype(np.float32)))
                out = max(out, _excess(a - b, want[net][leaf], rtol=1e-5, atol=4 * ulp))
        return out

    # (1) the optimizer alone, on TorchRL's gradients
    state = with_schedule_batch(jx.opt.init(p0), config, LR_BATCH)
    p = _updates(jx.opt, state, p0, torch_grads,
                 prepare=lambda s: optim.with_hyper(s, config, hyper_of(config)))
    for net in ("actor", "critic"):
        for leaf, a in flat_leaves(getattr(p, net)):
            b = before[net][leaf]
            # float32 parameters: after - before is exact only to an ulp of the weights
            ulp = float(np.spacing(np.abs(b).max().astype(np.float32)))
            check(f"live optimizer update {net}/{leaf} (torch grads)", a - b, want[net][leaf],
                  rtol=1e-5, atol=4 * ulp, where=where)
    # the same comparison tells the clips apart: Adam at this lr after each clip
    controls = {"global-norm clip": optax.clip_by_global_norm(config.max_grad_norm),
                "no clip": optax.identity(),
                "per-leaf clip": _per_leaf_clip(config.max_grad_norm)}
    excess = {}
    for name, clip in controls.items():
        control = optax.chain(clip, optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8))
        excess[name] = worst_excess(_updates(control, control.init(p0), p0, torch_grads))
    print(f"PARITY live optimizer: update error / tolerance by clip: {excess}")
    assert excess["global-norm clip"] <= 1, excess
    assert excess["no clip"] > 100 and excess["per-leaf clip"] > 100, excess

    # (2) end to end
    batches = [_jax_minibatch(jx, td) for td in minibatches]
    p_e2e, norms_j = jx.run_optimizer(p0, batches, key)
    check("live pre-clip grad norms", norms_j, norms, rtol=1e-5, atol=0, where=where)
    for net in ("actor", "critic"):
        for leaf, a in flat_leaves(getattr(p_e2e, net)):
            d = a - before[net][leaf]
            check(f"live update {net}/{leaf} (end to end)", d, want[net][leaf], rtol=1e-4,
                  atol=ADAM_ATOL_E2E * lr, where=where)
            check(f"live update {net}/{leaf} (end to end, L2 norm)", np.linalg.norm(d),
                  np.linalg.norm(want[net][leaf]), rtol=1e-4, atol=0, where=where)


def test_live_obs_norm(trl, x64):
    pytest.importorskip("torchrl")
    torch, where = trl["torch"], trl["where"]
    from tensordict import TensorDict
    from torchrl.envs import ObservationNorm

    rng = np.random.RandomState(SEED + 6)
    obs = _obs(rng, 50)
    loc = rng.normal(0, 1, OBS_DIM)
    scale = rng.uniform(0.1, 3.0, OBS_DIM)
    for standard_normal in (False, True):
        t = ObservationNorm(loc=torch.as_tensor(loc, dtype=torch.float32),
                            scale=torch.as_tensor(scale, dtype=torch.float32),
                            in_keys=["observation"], standard_normal=standard_normal)
        want = t(TensorDict({"observation": torch.as_tensor(obs)}, [50]))["observation"]
        stats = tc.obs_norm_from_torch(t)
        assert isinstance(stats, ObsNormStats) and stats.loc.dtype == jnp.float32
        check(f"live ObservationNorm apply (standard_normal={standard_normal})",
              normalize(stats, jnp.asarray(obs, jnp.float32)), want.numpy(), rtol=1e-5,
              atol=1e-5, where=where)

    # init_stats on the real environment: statistics of the observations it reduced
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    try:
        env = torchrl_reference.tutorial_env(ENV_ID, seed=SEED)
    except Exception as e:  # noqa: BLE001 - no MuJoCo env available here
        pytest.skip(f"cannot build {ENV_ID}: {e}")
    norm = env.transform[0]
    data = torchrl_reference.record_init_stats(norm, 100)
    s = stats_from_observations(jnp.asarray(data), None, "reference")
    check("live init_stats loc (f64)", s.loc, norm.loc.numpy(), rtol=1e-12, atol=1e-12,
          where=where)
    check("live init_stats scale (f64)", s.scale, norm.scale.numpy(), rtol=1e-12, atol=0,
          where=where)
    stats = tc.obs_norm_from_torch(norm)
    check("live obs_norm_from_torch", stats.scale, norm.scale.numpy(), rtol=1e-6, atol=0,
          where=where)
    env.close()


@pytest.mark.parametrize("low,high", [([-3.0], [3.0]), ([-2.0, 0.0, -0.5], [1.0, 5.0, 0.5])])
def test_live_bounded_tanh_normal(trl, low, high):
    """Bounds other than [-1, 1] (the env's, e.g. InvertedPendulum's [-3, 3]): TorchRL's
    ``TanhNormal(low, high)`` affine map and its log-Jacobian, in sample, log-prob (of a
    given action and of the pre-tanh value), the MC entropy and the mean action."""
    pytest.importorskip("torchrl")
    torch, where = trl["torch"], trl["where"]
    from torchrl.modules import TanhNormal

    bounds = distributions.Bounds.of(low, high)
    assert bounds is not None
    rng = np.random.default_rng(SEED + 21)
    n, d = 256, len(low)
    loc = rng.normal(0, 1.5, (n, d)).astype(np.float32)
    scale = rng.uniform(0.05, 2.0, (n, d)).astype(np.float32)
    lo = torch.tensor(low, dtype=torch.float32)
    hi = torch.tensor(high, dtype=torch.float32)
    key = jax.random.PRNGKey(SEED + 22)
    _, noise, _ = distributions.sample(key, jnp.zeros((n, d)), jnp.ones((n, d)))
    with torch.no_grad():
        dist = TanhNormal(torch.as_tensor(loc), torch.as_tensor(scale), low=lo, high=hi)
        with fixed_standard_normal(noise):
            a, lp = dist.rsample_and_log_prob((1,))
        a, lp = a[0].numpy(), lp[0].numpy()
        want_lp_of_a = dist.log_prob(torch.as_tensor(a)).numpy()
    ja, ju, jlp = distributions.sample(key, jnp.asarray(loc), jnp.asarray(scale), bounds)
    assert np.all(np.asarray(ja) >= np.array(low)) and np.all(np.asarray(ja) <= np.array(high))
    check("bounded rsample action", ja, a, rtol=1e-5, atol=1e-5, where=where)
    check("bounded rsample log_prob", jlp, lp, rtol=1e-5, atol=1e-4, where=where)
    # away from saturation (as for [-1, 1]: there float32's atanh of the re-mapped action
    # amplifies its rounding, differently in each library)
    unsat = np.all(np.abs(np.tanh(np.asarray(ju))) < 0.999, axis=-1)
    got_lp = distributions.log_prob_from_action(jnp.asarray(loc), jnp.asarray(scale),
                                                jnp.asarray(a), bounds)
    check("bounded log_prob_from_action", np.asarray(got_lp)[unsat], want_lp_of_a[unsat],
          rtol=1e-4, atol=1e-3, where=where)
    check("bounded entropy_estimate", distributions.entropy_estimate(
        key, jnp.asarray(loc), jnp.asarray(scale), bounds), -lp, rtol=1e-5, atol=1e-4,
        where=where)
    # the mean action: TorchRL's ExplorationType.MEAN averages samples; ours is quadrature
    with torch.no_grad():
        samples = dist.sample((4000,)).numpy().mean(0)
    got = np.asarray(distributions.mean_action(jnp.asarray(loc), jnp.asarray(scale), bounds))
    half = (np.array(high) - np.array(low)) / 2
    err = np.abs(got - samples)
    assert np.all(err < 6 * half / np.sqrt(4000) + 1e-4), (err.max(), half)
    # the deviation is the affine map only: unit bounds give back the plain distribution
    assert distributions.Bounds.of([-1.0] * d, [1.0] * d) is None
