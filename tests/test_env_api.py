"""The MJX env's API: shapes, dtypes, time limit, vectorized auto-reset, Brax adapter."""

import contextlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.envs import InvertedDoublePendulum, VectorEnv


@pytest.fixture(scope="module")
def env():
    return InvertedDoublePendulum(max_episode_steps=3)


@pytest.fixture(scope="module")
def step(env):
    return jax.jit(env.step)


@pytest.fixture(scope="module")
def reset_to(env):
    return jax.jit(env.reset_to)


@pytest.fixture(scope="module")
def vstep(env):
    """The vmapped step over 3 envs (the vector-env tests' size): one program for the module."""
    return jax.jit(jax.vmap(env.step))


def test_reset_shapes_and_fields(env):
    s = jax.jit(env.reset)(jax.random.PRNGKey(0))
    chex.assert_shape(s.obs, (11,))
    assert s.obs.dtype == jnp.float32
    assert env.observation_size == 11 and env.action_size == 1
    assert int(s.steps) == 0 and not bool(s.terminated) and not bool(s.truncated)
    assert float(s.reward) == 0.0
    # obs = qpos[0], sin, cos, qvel, qfrc_constraint (zero away from the rail limit)
    q = np.asarray(s.data.qpos)
    np.testing.assert_allclose(s.obs[:5], [q[0], *np.sin(q[1:]), *np.cos(q[1:])], rtol=1e-6)
    np.testing.assert_array_equal(s.obs[8:], 0.0)


def test_time_limit_truncates_without_terminating(step, reset_to):
    s = reset_to(jnp.zeros(3), jnp.zeros(3))
    for t in range(3):
        s = step(s, jnp.zeros(1))
        assert bool(s.truncated) == (t == 2)
    assert not bool(s.terminated)
    assert int(s.steps) == 3


def test_termination_when_tip_falls(step, reset_to):
    # both links nearly horizontal: the tip height is far below 1
    s = reset_to(jnp.array([0.0, 1.5, 0.0]), jnp.zeros(3))
    s = step(s, jnp.zeros(1))
    assert bool(s.terminated)
    assert float(s.data.site_xpos[0, 2]) <= 1.0


def test_vector_autoreset_keeps_final_obs(env, vstep):
    venv = VectorEnv(env, 3)  # a time limit of 3 steps
    s = jax.jit(venv.reset)(jax.random.PRNGKey(1))
    venv_step = jax.jit(venv.step)
    for t in range(2):
        s, out = venv_step(s, jnp.zeros((3, 1)), jax.random.PRNGKey(2 + t))
        assert not bool(out.done.any())
    s1 = s
    s2, out2 = venv_step(s1, jnp.zeros((3, 1)), jax.random.PRNGKey(4))
    assert bool(out2.truncated.all()) and not bool(out2.terminated.any())
    # the returned state is fresh (step counter 0) and differs from the final observation
    np.testing.assert_array_equal(s2.steps, 0)
    np.testing.assert_array_equal(out2.steps, 3)
    direct = vstep(s1, jnp.zeros((3, 1)))
    np.testing.assert_allclose(out2.next_obs, direct.obs, rtol=1e-5, atol=1e-6)
    assert not np.allclose(s2.obs, out2.next_obs)


def test_vmap_matches_single(env, step, vstep):
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    batched = jax.jit(jax.vmap(env.reset))(keys)
    actions = jnp.linspace(-1, 1, 3)[:, None]
    out = vstep(batched, actions)
    reset = jax.jit(env.reset)
    for i in range(3):
        single = step(reset(keys[i]), actions[i])
        np.testing.assert_allclose(out.obs[i], single.obs, rtol=1e-5, atol=1e-6)


def test_brax_registration_runs_same_physics(env, step):
    import brax.envs

    import ppo_jax.bench.brax_env as be

    benv = brax.envs.get_environment(be.BRAX_ENV_NAME)
    assert benv.observation_size == 11 and benv.action_size == 1
    key = jax.random.PRNGKey(5)
    bs = jax.jit(benv.reset)(key)
    es = jax.jit(env.reset)(key)  # (the module's env: a 3-step time limit, same physics)
    np.testing.assert_allclose(bs.obs, es.obs)
    bs = jax.jit(benv.step)(bs, jnp.array([0.3]))
    es = step(es, jnp.array([0.3]))
    np.testing.assert_allclose(bs.obs, es.obs, rtol=1e-6)
    np.testing.assert_allclose(bs.reward, es.reward, rtol=1e-6)
    assert float(bs.done) == float(es.terminated)


def _random_data(env, key, n):
    """``n`` random physical states (the cart beyond the rail limits in some) and controls."""
    def one(k):
        k1, k2, k3 = jax.random.split(k, 3)
        qpos = jax.random.uniform(k1, (3,), minval=-1.2, maxval=1.2)
        qvel = 3.0 * jax.random.normal(k2, (3,))
        ctrl = jax.random.uniform(k3, (1,), minval=-1.0, maxval=1.0)
        return env._data(qpos, qvel).replace(ctrl=ctrl)

    return jax.vmap(one)(jax.random.split(key, n))


def test_rolled_rk4_equals_mjx_step(x64):
    """The rolled integrator (one mjx.forward in a scan over the 4 RK stages) computes what
    mjx.step's unrolled RK4 computes: within 1e-12 relative to each field's scale, under x64.
    (In float32 the two programs fuse the same arithmetic differently: they agree to float32
    rounding, 2e-5 relative, not bit for bit.)"""
    from mujoco import mjx

    from ppo_jax.envs.inverted_double_pendulum import rk4_step

    env = InvertedDoublePendulum()
    m = env.mjx_model
    d = _random_data(env, jax.random.PRNGKey(5), 128)
    assert bool((jnp.abs(d.qpos[:, 0]) > 0.99).any())  # some states on the rail limit
    ours = jax.jit(jax.vmap(lambda x: rk4_step(m, x)))(d)
    ref = jax.jit(jax.vmap(lambda x: mjx.step(m, x)))(d)
    rtol = 1e-12
    for field in ("qpos", "qvel", "qacc", "qfrc_constraint", "site_xpos", "time",
                  "qacc_warmstart"):
        a, b = np.asarray(getattr(ours, field)), np.asarray(getattr(ref, field))
        scale = max(np.abs(b).max(), 1.0)
        assert np.abs(a - b).max() <= rtol * scale, field


def test_reset_observation_needs_no_forward_pass():
    """v4's reset states have zero constraint force: the observation built without
    mjx.forward equals the one reset_to (with it) gives, bit for bit."""
    env = InvertedDoublePendulum()
    fast = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(2), 512))
    full = jax.jit(jax.vmap(env.reset_to))(fast.data.qpos, fast.data.qvel)
    np.testing.assert_array_equal(fast.obs, full.obs)
    # a reset reaching the rail limits falls back to the forward pass
    wide = InvertedDoublePendulum(reset_noise_scale=1.5)
    s = jax.jit(jax.vmap(wide.reset))(jax.random.split(jax.random.PRNGKey(3), 256))
    assert bool((jnp.abs(s.data.qpos[:, 0]) > 1.0).any())
    assert bool((s.obs[:, 8:] != 0).any())


def _model_fields(model):
    """Every array of an ``MjModel`` and of its ``opt`` and ``stat``, by name."""
    fields = {}
    for owner, prefix in ((model, ""), (model.opt, "opt."), (model.stat, "stat.")):
        for name in dir(owner):
            if name.startswith("_"):
                continue
            value = getattr(owner, name)
            if isinstance(value, (np.ndarray, float, int)):
                fields[prefix + name] = np.asarray(value)
    return fields


@contextlib.contextmanager
def _mujoco_warnings():
    """The warnings MuJoCo C raises inside the block (kept off stderr and MUJOCO_LOG.TXT)."""
    import mujoco

    seen, previous = [], mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(seen.append)
    try:
        yield seen
    finally:
        mujoco.set_mju_user_warning(previous)


def test_an_asset_total_mass_compiles_silently_to_the_model_the_attribute_gives():
    """MuJoCo deprecates ``<compiler settotalmass>`` (a warning on stderr and a MUJOCO_LOG.TXT in
    the user's working directory at every load of HalfCheetah): the loader applies it after
    compiling, and the model is the one the attribute compiles to, bit for bit, every array
    and statistic (``meaninertia`` scales the solver's tolerance): on every asset, with
    several values, however the attribute is written (quotes, spaces), and whatever a
    comment holds."""
    import re
    from importlib import resources

    import mujoco

    from ppo_jax.envs.base import compile_mjcf

    assets = resources.files("ppo_jax.envs").joinpath("assets")
    texts = {p.name: p.read_text() for p in assets.iterdir() if p.name.endswith(".xml")}
    assert 'settotalmass="14"' in texts["half_cheetah.xml"]
    cases = {}
    for name, text in texts.items():
        bare = re.sub(r"\s+settotalmass\s*=\s*[\"'][^\"']*[\"']", "", text)
        for value, form in (("14", ' settotalmass="{}"'), ("7.3", " settotalmass = '{}'"),
                            ("123.456", ' settotalmass="{}"'), ("-1", ' settotalmass="{}"')):
            cases[name, value] = bare.replace("<compiler", "<compiler" + form.format(value), 1)
    cheetah = texts["half_cheetah.xml"]
    cases["decoy comment"] = cheetah.replace(
        "<mujoco", '<!-- <compiler settotalmass="50"/> -->\n<mujoco', 1)
    cases["as shipped"] = cheetah
    for name, text in cases.items():
        with _mujoco_warnings() as seen:
            ours = compile_mjcf(text)
        assert seen == [], (name, seen)
        try:
            with _mujoco_warnings():
                theirs = mujoco.MjModel.from_xml_string(text)
        except ValueError as error:  # a MuJoCo that no longer reads the attribute
            pytest.skip(f"this MuJoCo cannot compile settotalmass: {error}")
        a, b = _model_fields(ours), _model_fields(theirs)
        assert a.keys() == b.keys()
        differ = [k for k in a if a[k].shape != b[k].shape or not np.array_equal(a[k], b[k])]
        assert differ == [], (name, differ)
    assert float(np.sum(compile_mjcf(cheetah).body_mass)) == pytest.approx(14.0)
    assert float(np.sum(compile_mjcf(cases["decoy comment"]).body_mass)) == pytest.approx(14.0)
