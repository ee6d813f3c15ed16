"""ppo_jax against the TorchRL fixtures in ``tests/data/torchrl_reference.{npz,json}`` (written
by ``tests/data/make_torchrl_reference.py`` with the TorchRL version named in the json): they
need only numpy/jax and always run. What is compared and to which tolerances: ``parity.py``."""

import contextlib
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.core import distributions, losses, optim
from ppo_jax.interop.torchrl import compat as tc
from ppo_jax.core.normalization import stats_from_observations

from tests.parity import (  # the shared constants, checks and ppo_jax's side
    ACTION_DIM,
    CONFIG,
    DATA,
    HIDDEN,
    LOSS_TERMS,
    LR_BATCH,
    META,
    OBS_DIM,
    SATURATION,
    check,
    check_loss_terms,
    fixture_tolerances,
    flat_leaves,
    noise_tolerance,
    to_jnp,
    with_schedule_batch,
)


@pytest.fixture(scope="module")
def ref():
    if not os.path.exists(DATA + ".npz"):
        pytest.fail(f"missing {DATA}.npz: run tests/data/make_torchrl_reference.py")
    meta = META
    data = dict(np.load(DATA + ".npz"))
    where = f"fixture from torchrl {meta['versions']['torchrl']}"
    actor = tc.numpy_torch_default_params(
        OBS_DIM, HIDDEN, 2 * ACTION_DIM, meta["seeds"]["actor_weights_numpy_seed"]
    )
    critic = tc.numpy_torch_default_params(
        OBS_DIM, HIDDEN, 1, meta["seeds"]["critic_weights_numpy_seed"]
    )
    for prefix, tree in (("actor", actor), ("critic", critic)):
        for leaf, x in flat_leaves(tree):
            np.testing.assert_allclose(
                x.astype(np.float64).sum(), data[f"weights_sum/{prefix}/{leaf}"], rtol=1e-12,
                err_msg=f"fixture weights did not regenerate ({where})",
            )
    params = losses.Params(actor=to_jnp(actor), critic=to_jnp(critic))
    return {"meta": meta, "d": data, "where": where, "params": params}


@pytest.mark.gpu
def test_fixture_param_layout_matches_networks(ref, jx):
    want = jax.eval_shape(jx.actor.init, jax.random.PRNGKey(0), jnp.zeros(OBS_DIM))
    chex.assert_trees_all_equal_shapes_and_dtypes(ref["params"].actor, want)
    want = jax.eval_shape(jx.critic.init, jax.random.PRNGKey(0), jnp.zeros(OBS_DIM))
    chex.assert_trees_all_equal_shapes_and_dtypes(ref["params"].critic, want)


@pytest.mark.gpu
def test_fixture_networks(ref, jx):
    d, p, where = ref["d"], ref["params"], ref["where"]
    loc, scale = jx.actor_apply(p.actor, d["net/obs"])
    check("actor loc", loc, d["net/loc"], rtol=1e-5, atol=1e-6, where=where)
    check("actor scale", scale, d["net/scale"], rtol=1e-5, atol=1e-6, where=where)
    value = jx.critic_apply(p.critic, d["net/obs"])
    check("critic value", value, d["net/value"], rtol=1e-5, atol=1e-6, where=where)


@pytest.mark.gpu
def test_fixture_log_prob(ref, jx):
    d, where = ref["d"], ref["where"]
    loc, scale, a = d["net/loc"], d["net/scale"], d["logprob/action"]
    # TorchRL's own path (atanh of the clamped action), everywhere, edge actions included
    got = jx.log_prob_from_action(loc, scale, a)
    check("log_prob_from_action", got, d["logprob/log_prob"], rtol=1e-5, atol=1e-5, where=where)
    # ppo_jax's path (pre-tanh value), where atanh is well conditioned
    ok = np.abs(a[:, 0]) < SATURATION
    assert 0 < ok.sum() < len(ok)
    got = jx.log_prob_pre_tanh(loc, scale, distributions.safe_atanh(jnp.asarray(a)))
    check("log_prob_pre_tanh", np.asarray(got)[ok], d["logprob/log_prob"][ok], rtol=1e-5,
          atol=1e-5, where=where)
    # the log-probs the policy returned at sampling time (rows not replaced by edge values)
    n = len(a) - int(d["logprob/num_edge"])
    check("rollout log_prob", np.asarray(got)[:n], d["logprob/rollout_log_prob"][:n], rtol=1e-5,
          atol=1e-5, where=where)


def _check_gae(jx, d, values, next_values, where, tag):
    adv, target = jx.gae(
        rewards=jnp.asarray(d["gae/reward"]),
        values=jnp.asarray(values),
        next_values=jnp.asarray(next_values),
        terminated=jnp.asarray(d["gae/terminated"]),
        done=jnp.asarray(d["gae/done"]),
        gamma=CONFIG.gamma,
        lmbda=CONFIG.lmbda,
    )
    check(f"GAE advantage (raw, {tag})", adv, d["gae/advantage_raw"], rtol=1e-5, atol=1e-5,
          where=where)
    check(f"GAE value_target ({tag})", target, d["gae/value_target"], rtol=1e-5, atol=1e-5,
          where=where)
    check(f"GAE advantage (average_gae, {tag})", jx.standardize(adv), d["gae/advantage"],
          rtol=1e-5, atol=1e-5, where=where)


@pytest.mark.gpu
def test_fixture_gae(ref, jx):
    d, where = ref["d"], ref["where"]
    assert d["gae/terminated"].sum() >= 3 and (d["gae/truncated"] & ~d["gae/terminated"]).any()
    assert not d["gae/done"][-1]
    # GAE alone, on TorchRL's values
    _check_gae(jx, d, d["gae/state_value"], d["gae/next_state_value"], where, "torch values")
    # end to end: ppo_jax's critic computes the values
    p = ref["params"]
    _check_gae(jx, d, jx.critic_apply(p.critic, d["gae/obs"]),
               jx.critic_apply(p.critic, d["gae/next_obs"]), where, "jax values")


def test_fixture_obs_norm_stats(ref, x64):
    d, where = ref["d"], ref["where"]
    data = d["norm/data"]
    assert data.dtype == np.float64
    # float64: the formula itself
    s = stats_from_observations(jnp.asarray(data), None, "reference")
    assert s.loc.dtype == jnp.float64
    check("ObservationNorm loc (f64)", s.loc, d["norm/loc"], rtol=1e-12, atol=1e-12, where=where)
    check("ObservationNorm scale (f64)", s.scale, d["norm/scale"], rtol=1e-12, atol=0,
          where=where)
    # masked-out rows do not count
    junk = np.full((5, data.shape[1]), 1e3)
    mask = np.r_[np.ones(len(data), bool), np.zeros(5, bool)]
    s2 = stats_from_observations(jnp.asarray(np.r_[data, junk]), jnp.asarray(mask), "reference")
    check("ObservationNorm loc (f64, masked)", s2.loc, d["norm/loc"], rtol=1e-12, atol=1e-12,
          where=where)
    # float32, as ppo_jax runs it
    s32 = stats_from_observations(jnp.asarray(data, jnp.float32), None, "reference")
    assert s32.loc.dtype == jnp.float32
    check("ObservationNorm scale (f32)", s32.scale, d["norm/scale"], rtol=1e-5, atol=0,
          where=where)
    # loc = -mean/std: float32 cancellation in the mean; atol relative to |obs|/std
    check("ObservationNorm loc (f32)", s32.loc, d["norm/loc"], rtol=1e-5, atol=1e-5,
          where=where)


def _fixture_batch(ref, jx):
    d = ref["d"]
    return jx.minibatch(d["loss/obs"], d["loss/action"], d["loss/old_log_prob"],
                        d["loss/advantage"], d["loss/value_target"])


def _fixture_key(ref, loc_shape):
    d = ref["d"]
    key = jax.random.PRNGKey(int(d["loss/entropy_key"]))
    _, noise, _ = distributions.sample(key, jnp.zeros(loc_shape), jnp.ones(loc_shape))
    # Not bit for bit: the same key gives other last bits on another backend (a GPU fuses
    # multiply-adds in the normal transform); a changed random stream moves entries by O(1).
    want = d["loss/entropy_noise"]
    err = np.abs(np.asarray(noise, np.float64) - want)
    bad = err > noise_tolerance(want)
    assert not bad.any(), (
        f"JAX's random stream no longer reproduces the fixture's entropy noise ({int(bad.sum())}"
        f"/{bad.size} entries off, max abs err {err.max():.3g}; jax {jax.__version__} on "
        f"{jax.default_backend()}): regenerate the fixture (tests/data/make_torchrl_reference.py)")
    return key


@pytest.mark.gpu
def test_fixture_loss_and_grads(ref, jx):
    d, where = ref["d"], ref["where"]
    assert np.all(np.abs(d["loss/action"]) < SATURATION)
    batch = _fixture_batch(ref, jx)
    key = _fixture_key(ref, d["loss/action"].shape)
    (loss, m), grads = jx.loss_and_grad(ref["params"], batch, key)
    assert 0 < float(d["loss/clip_fraction"]) < 1
    # tolerances: parity.fixture_tolerances, each measured against float32 rounding noise by
    # test_fixture_tolerances_cover_float32_spread (python -m tests.float32_spread)
    check_loss_terms(m, {k: d[f"loss/{k}"] for k in (*LOSS_TERMS, "clip_fraction")}, where,
                     fixture_tolerances)
    rtol, atol = fixture_tolerances("loss", d["loss/total"])
    check("loss (sum of terms)", loss, d["loss/total"], rtol=rtol, atol=atol, where=where)
    for net, tree in (("actor", grads.actor), ("critic", grads.critic)):
        for i, (leaf, g) in enumerate(flat_leaves(tree)):
            name = f"{net}/{leaf}"
            idx = d[f"sub/{name}/idx"]
            want = d[f"grad/{name}/val"]
            rtol, atol = fixture_tolerances("grad", want)
            check(f"grad {name}", g.ravel()[idx], want, rtol=rtol, atol=atol, where=where)
            rtol, atol = fixture_tolerances("grad norm")
            check(f"grad {name} (L2 norm of all)", np.linalg.norm(g.astype(np.float64)),
                  d[f"grad/{name}/norm"], rtol=rtol, atol=atol, where=where)


@pytest.mark.gpu
def test_fixture_optimizer_step(ref, jx):
    d, where = ref["d"], ref["where"]
    lr = optim.lr_at_batch(jx.config, LR_BATCH)
    check("cosine lr at batch 3", lr, d["opt/lr"], rtol=1e-6, atol=0, where=where)
    batch = _fixture_batch(ref, jx)
    key = _fixture_key(ref, d["loss/action"].shape)
    steps = len(d["opt/grad_norm"])
    params, norms = jx.run_optimizer(ref["params"], [batch] * steps, key)
    # tolerances: parity.fixture_tolerances, measured as in test_fixture_loss_and_grads
    rtol, atol = fixture_tolerances("pre-clip norms")
    check("pre-clip global grad norms", norms, d["opt/grad_norm"], rtol=rtol, atol=atol,
          where=where)
    assert min(norms) > jx.config.max_grad_norm, "every fixture step should be clipped"
    lr = float(d["opt/lr"])
    for net, after, before in (("actor", params.actor, ref["params"].actor),
                               ("critic", params.critic, ref["params"].critic)):
        b = dict(flat_leaves(before))
        for leaf, a in flat_leaves(after):
            name = f"{net}/{leaf}"
            delta = (a - b[leaf]).ravel()
            idx = d[f"sub/{name}/idx"]
            want = d[f"delta/{name}/val"]
            rtol, atol = fixture_tolerances("update", want, lr=lr)
            check(f"update {name}", delta[idx], want, rtol=rtol, atol=atol, where=where)
            rtol, atol = fixture_tolerances("update norm")
            check(f"update {name} (L2 norm of all)", np.linalg.norm(delta.astype(np.float64)),
                  d[f"delta/{name}/norm"], rtol=rtol, atol=atol, where=where)


@pytest.mark.gpu
def test_fixture_programs_are_full_float32(ref, jx):
    """Every dot of the loss + gradient and optimizer-step programs (forward and backward) is
    lowered at precision HIGHEST, whatever the default matmul precision says: TF32 cannot
    enter the fixture tests on a GPU, with or without JAX_DEFAULT_MATMUL_PRECISION."""
    d = ref["d"]
    batch = _fixture_batch(ref, jx)
    key = jax.random.PRNGKey(int(d["loss/entropy_key"]))
    state = with_schedule_batch(jx.opt.init(ref["params"]), jx.config, LR_BATCH)
    programs = {"loss_and_grad": (jx.loss_and_grad, (ref["params"], batch, key)),
                "step": (jx.step, (ref["params"], state, batch, key)),
                "actor_apply": (jx.actor_apply, (ref["params"].actor, d["net/obs"])),
                "critic_apply": (jx.critic_apply, (ref["params"].critic, d["net/obs"]))}
    for default in (None, "tensorfloat32", "bfloat16"):
        ctx = jax.default_matmul_precision(default) if default else contextlib.nullcontext()
        with ctx:
            for name, (fn, args) in programs.items():
                text = fn.lower(*args).as_text()
                dots = [ln for ln in text.splitlines() if "stablehlo.dot_general" in ln
                        or "stablehlo.convolution" in ln]
                assert dots, name
                low = [ln.strip()[:160] for ln in dots
                       if "precision = [HIGHEST, HIGHEST]" not in ln]
                assert not low, (f"{name} at default precision {default}: {len(low)} of "
                                 f"{len(dots)} dots not HIGHEST, e.g. {low[0]}")


@pytest.mark.gpu
def test_fixture_tolerances_cover_float32_spread(jx):
    """The two tests' tolerances hold float32 rounding noise with room to spare: each check's
    tolerance is at least HEADROOM x (the largest error, against float64, of the same
    computation with the batch permuted, the hidden units permuted, the sums blocked or
    sequential, each elementwise function one ulp off, or another backend's entropy draw)
    + (the fixture's own error against float64), at every compared entry. Run where the
    test runs, it measures that backend's own summation order too (its ``test`` row).
    The table: ``python -m tests.float32_spread``."""
    from tests import float32_spread as fs

    rows = fs.table(fs.measure(perms=3, jx=jx))
    low = [r for r in rows if not r.headroom >= fs.HEADROOM]
    assert len(rows) > 70
    assert not low, (f"{len(low)} check(s) whose tolerance holds less than {fs.HEADROOM:g} x "
                     "the float32 spread:\n" + fs.format_table(low))
