"""Where the ports' MJX physics follows MuJoCo C instead of MJX's own step
(:mod:`ppo_jax.envs.physics`), on small models of its own, under x64: the RK4 step of ball and
free joints, and the friction frame of plane-capsule contacts. Each test also shows MJX's own
result apart from MuJoCo C's, so the replacement changes exactly what it is meant to."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from ppo_jax.envs import physics
from ppo_jax.envs.base import mjx

# a tumbling torso on a free joint, a hinged arm and a ball-jointed pendulum under gravity,
# no contacts: every coordinate kind that RK4 integrates
TUMBLER = """<mujoco><option integrator="RK4" timestep="0.01"/><worldbody>
  <body><freejoint/><geom type="box" size=".1 .2 .4" contype="0" conaffinity="0"/>
    <body pos="0 0 .5"><joint type="hinge" axis="1 0 0" damping=".3"/>
      <geom type="capsule" fromto="0 0 0 0 .3 .3" size=".05" contype="0" conaffinity="0"/></body>
  </body>
  <body pos="1 0 2"><joint type="ball" damping=".2"/>
    <geom type="box" size=".1 .2 .3" pos="0 .1 -.3" contype="0" conaffinity="0"/></body>
</worldbody></mujoco>"""


def _states(model, rng, n):
    """``n`` random ``(qpos, qvel)`` with quaternions of norm 0.9-1.1 (as Gymnasium's
    uniform reset noise leaves them), and the quaternion slices."""
    _, _, rot_q, _ = physics._rotations(model)
    qpos = rng.normal(size=(n, model.nq))
    for q in rot_q:
        qpos[:, q] *= (rng.uniform(0.9, 1.1, (n, 1)) / np.linalg.norm(qpos[:, q], axis=1,
                                                                      keepdims=True))
    return qpos, 3.0 * rng.normal(size=(n, model.nv)), rot_q


def test_rk4_rotations_step_as_mujoco_c(x64):
    """One RK4 step of ball and free joints equals MuJoCo C's ``mj_step`` (1e-12); on MuJoCo 4,
    which turns them on the rotation group, MJX's own step (MuJoCo 3's rule) is 1e-7 or more
    off in the quaternions. On a MuJoCo that steps them as MJX does, the ports use MJX's step."""
    model = mujoco.MjModel.from_xml_string(TUMBLER)
    rotations = physics.rk4_rotations()
    assert physics.rolls_rk4(model) == (rotations == "group")
    if int(mujoco.__version__.split(".")[0]) >= 4:
        assert rotations == "group"
    if rotations != "group":
        pytest.skip(f"MuJoCo {mujoco.__version__} steps rotations as MJX does")
    qpos, qvel, rot_q = _states(model, np.random.default_rng(0), 16)
    m = mjx.put_model(model)
    data = jax.vmap(lambda q, v: mjx.make_data(m).replace(qpos=q, qvel=v))(
        jnp.asarray(qpos), jnp.asarray(qvel))
    ours = jax.jit(jax.vmap(lambda d: physics.rk4_step(m, d)))(data)
    theirs = jax.jit(jax.vmap(lambda d: mjx.step(m, d)))(data)
    ref_qpos, ref_qvel = [], []
    for q, v in zip(qpos, qvel):
        d = mujoco.MjData(model)
        d.qpos, d.qvel = q, v
        mujoco.mj_step(model, d)
        ref_qpos.append(d.qpos.copy())
        ref_qvel.append(d.qvel.copy())
    ref_qpos, ref_qvel = np.array(ref_qpos), np.array(ref_qvel)
    assert np.abs(np.asarray(ours.qpos) - ref_qpos).max() < 1e-12
    assert np.abs(np.asarray(ours.qvel) - ref_qvel).max() < 1e-12
    np.testing.assert_allclose(np.linalg.norm(np.asarray(ours.qpos)[:, rot_q], axis=-1), 1.0,
                               atol=1e-14)
    assert np.abs(np.asarray(theirs.qpos)[:, rot_q] - ref_qpos[:, rot_q]).max() > 1e-7


def test_hinge_models_never_reach_the_rotation_code(monkeypatch):
    """A model of hinge and slide joints takes the plain rolled scan: the rotation step is
    never called (the default run's bit-identity itself is checked on its metrics.json)."""
    from ppo_jax.envs import InvertedDoublePendulum

    def fail(*_):
        raise AssertionError("a hinge model took the rotation step")

    monkeypatch.setattr(physics, "_quat_turn", fail)
    monkeypatch.setattr(physics, "_dexp_inv", fail)
    env = InvertedDoublePendulum()
    jax.eval_shape(lambda d: physics.rk4_step(env.mjx_model, d),
                   env._data(jnp.zeros(3), jnp.zeros(3)))


def test_dexp_inv_is_the_rate_of_the_rotation_vector(x64):
    """``q0 exp(u + e k)`` with ``k = dexp_inv(u, w)`` turns like ``q0 exp(u) exp(e w)`` to
    first order in ``e`` (the defining property), on both sides of the series' 0.1 seam and
    at a large angle; a wrong k (w itself) is off at first order. dexp_inv(0, w) = w."""
    rng = np.random.default_rng(3)
    eps, q0 = 1e-6, np.array([1.0, 0.0, 0.0, 0.0])
    for t in (1e-4, 0.05, 0.0999999, 0.1000001, 0.7, 2.5):
        u = rng.normal(size=3)
        u *= t / np.linalg.norm(u)
        w = rng.normal(size=3)
        k = physics._dexp_inv(u, w, np)
        np.testing.assert_allclose(np.asarray(physics._dexp_inv(jnp.asarray(u), jnp.asarray(w),
                                                                 jnp)), k, rtol=1e-14)
        target = physics._quat_turn(physics._quat_turn(q0, u, np), eps * w, np)
        assert np.abs(physics._quat_turn(q0, u + eps * k, np) - target).max() < 1e-11, t
        if t > 1e-3:
            assert np.abs(physics._quat_turn(q0, u + eps * w, np) - target).max() > 1e-10
    np.testing.assert_array_equal(physics._dexp_inv(np.zeros(3), w, np), w)


# a capsule standing 20 degrees off the floor's normal, one lying flat and one upright, each
# in contact
CAPSULE = """<mujoco><option timestep="0.01"/><worldbody>
  <geom type="plane" size="5 5 .1"/>
  <body pos="0 0 .238" euler="20 10 0"><freejoint/>
    <geom type="capsule" size=".05 .2" margin=".01"/></body>
  <body pos="1 0 .053" euler="0 90 30"><freejoint/>
    <geom type="capsule" size=".05 .2" margin=".01"/></body>
  <body pos="-1 0 .253"><freejoint/>
    <geom type="capsule" size=".05 .2" margin=".01"/></body>
</worldbody></mujoco>"""


def test_plane_capsule_contacts_as_mujoco_c(x64):
    """Inside ``mujoco_c_contacts`` MJX's forward pass equals ``mj_forward`` (contact frames and
    accelerations) for a steep, a flat and an upright capsule on a plane; MJX's own collider
    turns the steep one's friction pyramid (the forces change) and the upright one's by 90
    degrees (the same edges), and leaves the flat one's. Another thread tracing meanwhile gets
    MJX's own."""
    import threading

    model = mujoco.MjModel.from_xml_string(CAPSULE)
    ref = mujoco.MjData(model)
    ref.qvel[:] = np.random.default_rng(1).normal(size=model.nv)
    mujoco.mj_forward(model, ref)
    assert ref.ncon == 4  # both ends of the flat capsule, the low ends of the others
    m = mjx.put_model(model)
    d = mjx.make_data(m).replace(qpos=jnp.asarray(ref.qpos), qvel=jnp.asarray(ref.qvel))
    elsewhere = {}
    with physics.mujoco_c_contacts():
        ours = jax.jit(lambda d: mjx.forward(m, d))(d)
        t = threading.Thread(target=lambda: elsewhere.update(
            out=jax.jit(lambda d: mjx.forward(m, d))(d)))
        t.start()
        t.join()
    theirs = jax.jit(lambda d: mjx.forward(m, d))(d)

    def frames(out):
        c = out._impl.contact
        active = np.asarray(c.dist) < np.asarray(c.includemargin)
        return np.asarray(c.frame)[active]

    ref_frames = np.array([ref.contact[i].frame.reshape(3, 3) for i in range(ref.ncon)])
    key = lambda f: tuple(np.round(f[1], 6))  # noqa: E731
    np.testing.assert_allclose(sorted(frames(ours), key=key), sorted(ref_frames, key=key),
                               atol=1e-12)
    assert any(np.allclose(f[1], [1.0, 0.0, 0.0]) for f in ref_frames)  # the upright one
    np.testing.assert_allclose(np.asarray(ours.qacc), ref.qacc, atol=1e-9)
    assert np.abs(np.asarray(theirs.qacc) - ref.qacc).max() > 1e-3
    turned = [f for f in frames(theirs) if not any(np.allclose(f, r) for r in ref_frames)]
    assert len(turned) == 2
    np.testing.assert_array_equal(np.asarray(elsewhere["out"].qacc), np.asarray(theirs.qacc))


# capsule pairs, each far from the others (no floor): two crossing at an angle, an end on a
# side, two whose axes cross at their centres (the nearest points coincide), two nearly
# parallel (0.05 degrees) and two overlapping deeply
CAPSULES = """<mujoco><option timestep="0.01" gravity="0 0 0"/><worldbody>
  <body><freejoint/><geom type="capsule" size=".05 .2" margin=".01"/></body>
  <body pos=".06 .03 .1" euler="70 0 20"><freejoint/>
    <geom type="capsule" size=".04 .3" margin=".01"/></body>
  <body pos="2 0 0"><freejoint/><geom type="capsule" size=".05 .2"/></body>
  <body pos="2.08 0 .23" euler="0 80 0"><freejoint/><geom type="capsule" size=".05 .2"/></body>
  <body pos="4 0 0" euler="0 90 0"><freejoint/><geom type="capsule" size=".05 .2"/></body>
  <body pos="4 0 0" euler="90 0 0"><freejoint/><geom type="capsule" size=".05 .2"/></body>
  <body pos="6 0 0"><freejoint/><geom type="capsule" size=".05 .2"/></body>
  <body pos="6.09 0 .15" euler="0 .05 0"><freejoint/><geom type="capsule" size=".05 .2"/></body>
  <body pos="8 0 0" euler="0 40 0"><freejoint/><geom type="capsule" size=".1 .3"/></body>
  <body pos="8.02 .05 .1" euler="30 -50 0"><freejoint/><geom type="capsule" size=".1 .25"/></body>
</worldbody></mujoco>"""


def test_capsule_capsule_contacts_as_mujoco_c(x64):
    """Inside ``mujoco_c_contacts`` MJX's forward pass equals ``mj_forward`` for five capsule
    pairs (each contact's depth, point and frame; the accelerations); MJX's own collider
    moves every normal (its regularized nearest-point equations) and, where the nearest
    points coincide, picks another one (the forces change)."""
    model = mujoco.MjModel.from_xml_string(CAPSULES)
    ref = mujoco.MjData(model)
    ref.qvel[:] = np.random.default_rng(1).normal(size=model.nv)
    mujoco.mj_forward(model, ref)
    assert ref.ncon == 5
    want = {(c.geom1, c.geom2): (c.dist, c.pos.copy(), c.frame.reshape(3, 3).copy())
            for c in ref.contact[:ref.ncon]}
    m = mjx.put_model(model)
    d = mjx.make_data(m).replace(qpos=jnp.asarray(ref.qpos), qvel=jnp.asarray(ref.qvel))
    with physics.mujoco_c_contacts():
        ours = jax.jit(lambda d: mjx.forward(m, d))(d)
    theirs = jax.jit(lambda d: mjx.forward(m, d))(d)

    def normal_errors(out):
        c = out._impl.contact
        active = np.asarray(c.dist) < np.asarray(c.includemargin)
        geoms, dist, pos, frame = (np.asarray(x)[active] for x in (c.geom, c.dist, c.pos,
                                                                     c.frame))
        assert sorted(map(tuple, geoms)) == sorted(want)
        errs = []
        for g, di, p, f in zip(geoms, dist, pos, frame):
            w = want[tuple(g)]
            errs.append((abs(di - w[0]), np.abs(p - w[1]).max(), np.abs(f - w[2]).max()))
        return np.array(errs)

    np.testing.assert_array_less(normal_errors(ours), 1e-12)
    np.testing.assert_allclose(np.asarray(ours.qacc), ref.qacc, atol=1e-9)
    assert (normal_errors(theirs)[:, 2] > 1e-6).all()
    assert np.abs(np.asarray(theirs.qacc) - ref.qacc).max() > 1.0


def test_parallel_capsules_keep_mujoco_c_s_first_contact(x64):
    """Parallel axes, side by side with the first capsule's +end beyond the second's: MuJoCo C
    keeps two contacts along the overlap; ours (one a pair, as MJX's) is the first of them.
    Taking the +end whatever it touched found no contact at all (dist 0.26)."""
    model = mujoco.MjModel.from_xml_string("""<mujoco><option gravity="0 0 0"/><worldbody>
      <body><freejoint/><geom type="capsule" size=".05 .2"/></body>
      <body pos=".09 0 -.35"><freejoint/><geom type="capsule" size=".05 .2"/></body>
    </worldbody></mujoco>""")
    ref = mujoco.MjData(model)
    mujoco.mj_forward(model, ref)
    assert ref.ncon == 2
    first = ref.contact[0]
    m = mjx.put_model(model)
    with physics.mujoco_c_contacts():
        c = jax.jit(lambda d: mjx.forward(m, d))(mjx.make_data(m))._impl.contact
    np.testing.assert_allclose(np.asarray(c.dist), [first.dist], atol=1e-12)
    np.testing.assert_allclose(np.asarray(c.pos)[0], first.pos, atol=1e-12)
    np.testing.assert_allclose(np.asarray(c.frame)[0], first.frame.reshape(3, 3), atol=1e-12)
