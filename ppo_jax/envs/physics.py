"""Where the MJX physics of the Gymnasium ports follows MuJoCo C (what Gymnasium runs) rather
than MJX's own step: the numbers mean Gymnasium's.

* :func:`rk4_step`: ``mjx.step`` of an RK4 model with the four stages rolled into one
  ``mjx.forward`` (a quarter of the compile), and ball and free joints turned on the rotation
  group where the installed MuJoCo C does so (MuJoCo 4; :func:`rk4_rotations` measures it). MJX's
  own step adds their B-weighted angular velocity to the start orientation, as MuJoCo 3 did:
  up to 8e-6 apart in one physics step of Ant-v4's torso. (Where the probe finds MuJoCo 3's
  rule, or neither, such models take MJX's step.)
* :func:`mujoco_c_contacts`: a plane-capsule contact's friction pyramid oriented as MuJoCo C
  orients it, along the capsule's axis projected on the plane. MJX orients it by the world's y
  axis whenever that projection is shorter than 0.5 (a capsule within 30 degrees of the
  plane's normal, as an ant's or a walker's foot often is): its pyramid is then rotated and the
  contact forces differ (1.3e2 in one of Ant-v4's accelerations). In a planar model (the
  runners) the two frames give the same pyramid edges in another order: rounding only.
  Capsule-capsule contacts (Hopper-v4's torso on its own leg or foot) as MuJoCo C finds them:
  MJX regularizes the nearest-point equations, which moves a contact normal in its 5th digit
  (up to 4e-5 in one Hopper-v4 observation after one env step), and clips the points to the
  segments by another rule, which picks other points where two capsules overlap deeply.
"""

from __future__ import annotations

import contextlib
import functools
import io
import threading

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from ppo_jax.util import interrupts_kept

# mjx prints when its optional Warp backend is absent; trimesh, which it imports, drops a
# Ctrl-C that lands in one of its optional imports
with interrupts_kept(), contextlib.redirect_stdout(io.StringIO()):
    from mujoco import mjx


# Runge-Kutta 4 tableau (MuJoCo's): stage i starts from qpos0 + A_i dt k_{i-1}, ...
_RK4_A = np.array([0.0, 0.5, 0.5, 1.0])  # stage 0 starts from the state itself
_RK4_B = np.array([1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0])
_HINGE_SLIDE = {int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)}
_BALL, _FREE = int(mujoco.mjtJoint.mjJNT_BALL), int(mujoco.mjtJoint.mjJNT_FREE)


def rk4_step(m: mjx.Model, d: mjx.Data) -> mjx.Data:
    """``mjx.step(m, d)`` for an RK4 model without activations, with the four stages in a
    ``lax.scan`` over one ``mjx.forward`` (MJX's first forward pass and its three unrolled
    stages become the scan's four iterations).

    Stage ``i`` evaluates the dynamics at ``qpos0 + dt a_i k_{i-1}``, ``qvel0 + dt a_i
    qacc_{i-1}`` (stage 0 at the state itself), and accumulates ``b_i`` times its velocity
    and acceleration; the step then advances ``qvel0 + dt sum(b qacc)`` and ``qpos0 + dt
    sum(b k)``, exactly as MJX's ``rungekutta4`` + ``_advance``.

    Ball and free joints turn on the rotation group (Runge-Kutta-Munthe-Kaas), as MuJoCo C
    4's ``mj_RungeKutta`` does: a rotation's stage ``i`` starts from ``q0 exp(dt a_i
    k_{i-1})`` where ``k_j = dexp_inv(dt a_j k_{j-1}, w_j)`` (``w_j`` the stage's angular
    velocity), and the step ends at ``q0 exp(dt sum(b k))``; a free joint's position moves as a
    hinge's. Where :func:`rk4_rotations` does not find that rule in the installed MuJoCo C,
    such a model takes MJX's step.
    """
    lin_q, lin_v, rot_q, rot_v = _rotations(m)
    if rot_q.size and rk4_rotations() != "group":
        return mjx.step(m, d)
    dt = m.opt.timestep
    a = jnp.asarray(_RK4_A, dt.dtype)
    b = jnp.asarray(_RK4_B, dt.dtype)
    t = d.time + a * dt
    first = jnp.arange(4) == 0
    qpos0, qvel0, act0 = d.qpos, d.qvel, d.act
    quat0 = qpos0[rot_q]

    def positions(rate, turn):
        if not rot_q.size:
            return qpos0 + dt * rate
        qpos = qpos0.at[lin_q].set(qpos0[lin_q] + dt * rate[lin_v])
        return qpos.at[rot_q.reshape(-1)].set(_quat_turn(quat0, turn, jnp).reshape(-1))

    def stage(carry, x):
        d, kqvel, krot, sums = carry
        is_first, a_i, b_i, t_i = x
        u = dt * (a_i * krot)
        qpos = jnp.where(is_first, qpos0, positions(a_i * kqvel, u))
        qvel = jnp.where(is_first, qvel0, qvel0 + (a_i * d.qacc) * dt)
        act = jnp.where(is_first, act0, act0 + (a_i * d.act_dot) * dt)
        time = jnp.where(is_first, d.time, t_i)
        d = _like(mjx.forward(m, d.replace(qpos=qpos, qvel=qvel, act=act, time=time)), d)
        k = _dexp_inv(u, qvel[rot_v], jnp) if rot_q.size else krot
        terms = (qvel, d.qacc, k)
        sums = jax.tree_util.tree_map(
            lambda s, x: jnp.where(is_first, b_i * x, s + b_i * x), sums, terms
        )
        return (d, qvel, k, sums), None

    krot0 = jnp.zeros_like(quat0[:, :3])
    zeros = (jnp.zeros_like(qvel0), jnp.zeros_like(d.qacc), krot0)
    (d1, _, _, (qvel_sum, qacc_sum, rot_sum)), _ = jax.lax.scan(
        stage, (d, qvel0, krot0, zeros), (first, a, b, t)
    )
    # MJX's _advance with the RK4 sums (na = 0: act unchanged).
    return d1.replace(
        qpos=positions(qvel_sum, dt * rot_sum),
        qvel=qvel0 + qacc_sum * dt,
        act=act0,
        time=d.time + dt,
        qacc_warmstart=d1.qacc,
    )


def _like(new: mjx.Data, old: mjx.Data) -> mjx.Data:
    """``new`` with ``old``'s dtypes, so the scan's carry keeps its type: under x64 MJX's
    forward pass returns int64 for a few integer fields (tendon wrapping) that ``make_data``
    makes int32. Leaves already alike are passed through untouched."""
    return jax.tree_util.tree_map(
        lambda n, o: n if n.dtype == o.dtype else n.astype(o.dtype), new, old)


# -- rotations (ball and free joints) on the group ----------------------------------------------

def _rotations(m) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays of a model's coordinates: ``(lin_qpos, lin_dof, rot_qpos [n, 4],
    rot_dof [n, 3])``: the entries that integrate linearly (hinge, slide, a free joint's
    position) and the quaternions of ball and free joints with their angular velocities."""
    lin_q, lin_v, rot_q, rot_v = [], [], [], []
    for jtype, qa, va in zip(np.asarray(m.jnt_type), np.asarray(m.jnt_qposadr),
                             np.asarray(m.jnt_dofadr)):
        qa, va = int(qa), int(va)
        if jtype == _FREE:
            lin_q += range(qa, qa + 3)
            lin_v += range(va, va + 3)
            qa, va = qa + 3, va + 3
        if jtype in (_FREE, _BALL):
            rot_q.append(range(qa, qa + 4))
            rot_v.append(range(va, va + 3))
        else:
            lin_q.append(qa)
            lin_v.append(va)
    ints = lambda x, shape: np.asarray(x, np.int32).reshape(shape)  # noqa: E731
    return (ints(lin_q, -1), ints(lin_v, -1), ints(rot_q, (-1, 4)), ints(rot_v, (-1, 3)))


def _quat_mul(p, q, xp):
    pw, px, py, pz = (p[..., i] for i in range(4))
    qw, qx, qy, qz = (q[..., i] for i in range(4))
    return xp.stack([pw * qw - px * qx - py * qy - pz * qz, pw * qx + px * qw + py * qz - pz * qy,
                     pw * qy - px * qz + py * qw + pz * qx, pw * qz + px * qy - py * qx + pz * qw],
                    axis=-1)


def _quat_turn(q, v, xp):
    """``q`` turned by the rotation vector ``v`` in its own (body) frame, ``q exp(v)``,
    normalized (MuJoCo's ``mju_quatIntegrate``)."""
    angle = xp.sqrt(xp.sum(v * v, axis=-1, keepdims=True))
    safe = xp.where(angle > 0, angle, 1.0)
    turn = xp.concatenate([xp.cos(angle / 2), xp.where(angle > 0, xp.sin(angle / 2) / safe, 0.5) * v],
                          axis=-1)
    out = _quat_mul(q, turn, xp)
    return out / xp.sqrt(xp.sum(out * out, axis=-1, keepdims=True))


def _dexp_inv(u, w, xp):
    """The inverse differential of the exponential map of SO(3) at ``u`` applied to the body
    angular velocity ``w``: the rate of the rotation vector ``u`` (``q = q0 exp(u)``) is
    ``w + u x w / 2 + c(|u|) u x (u x w)``, ``c = (1 - (t/2) cot(t/2)) / t^2`` (its series
    ``1/12 + t^2/720 + t^4/30240`` below 0.1, where the closed form cancels)."""
    t2 = xp.sum(u * u, axis=-1, keepdims=True)
    t = xp.sqrt(t2)
    small = t < 0.1
    ts = xp.where(small, 1.0, t)
    c = xp.where(small, 1.0 / 12.0 + t2 / 720.0 + t2 * t2 / 30240.0,
                 (1.0 - (ts / 2) / xp.tan(ts / 2)) / (ts * ts))
    uw = xp.cross(u, w)
    return w + 0.5 * uw + c * xp.cross(u, uw)


@functools.lru_cache(maxsize=None)
def rk4_rotations() -> str:
    """How the installed MuJoCo C's RK4 steps ball and free joints: ``"group"`` (MuJoCo 4:
    :func:`rk4_step`), ``"linear"`` (MuJoCo 3 and MJX's step: ``q0`` integrated by
    the B-weighted angular velocity) or ``"other"`` (neither: such models then take MJX's step,
    and the parity tests show how far that is). Measured once, on one RK4 step of a tumbling
    body."""
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><option integrator="RK4" gravity="0 0 0" timestep="0.01"/><worldbody><body>'
        '<freejoint/><geom type="box" size=".1 .2 .4" contype="0" conaffinity="0"/></body>'
        '</worldbody></mujoco>')
    qpos0 = np.array([0.1, -0.2, 0.3, 0.6, -0.3, 0.5, 0.2])
    qpos0[3:] /= np.linalg.norm(qpos0[3:])
    qvel0 = np.array([0.5, -1.0, 0.2, 3.0, -4.0, 5.0])
    d = mujoco.MjData(model)
    d.qpos, d.qvel = qpos0, qvel0
    mujoco.mj_step(model, d)
    # the stages of a torque-free body: its accelerations do not depend on its orientation
    s = mujoco.MjData(model)
    vel, krot, qvel_sum, rot_sum = qvel0, np.zeros(3), np.zeros(6), np.zeros(3)
    for a_i, b_i in zip(_RK4_A, _RK4_B):
        u = model.opt.timestep * a_i * krot
        s.qvel = qvel0 + model.opt.timestep * a_i * (s.qacc if a_i else 0.0)
        s.qpos = qpos0
        mujoco.mj_forward(model, s)
        krot = _dexp_inv(u, s.qvel[3:], np)
        qvel_sum, rot_sum = qvel_sum + b_i * s.qvel, rot_sum + b_i * krot
    group = _quat_turn(qpos0[3:], model.opt.timestep * rot_sum, np)
    linear = qpos0.copy()
    mujoco.mj_integratePos(model, linear, qvel_sum, model.opt.timestep)
    if np.abs(d.qpos[3:] - group).max() < 1e-12:
        return "group"
    return "linear" if np.abs(d.qpos[3:] - linear[3:]).max() < 1e-12 else "other"


def rolls_rk4(model: mujoco.MjModel) -> bool:
    """Whether :func:`rk4_step` covers ``model``: RK4 without activations, and ball or free
    joints only where the installed MuJoCo steps them on the group (MJX's own step follows
    MuJoCo 3's linear rule)."""
    types = set(int(j) for j in model.jnt_type)
    return (model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4 and not model.na
            and (types <= _HINGE_SLIDE or rk4_rotations() == "group"))


# -- contact frames ------------------------------------------------------------------------------

def _plane_capsule(m, d, _key, geom):
    """MuJoCo C's plane-capsule contacts (``mjc_PlaneCapsule``) in the calling convention of
    MJX's collision table: two per pair (the capsule's ends as spheres, ``+axis`` first), the
    friction frame's first tangent the capsule's axis made orthogonal to the plane's normal."""
    g1, g2 = geom.T
    n = d.geom_xmat[g1][:, :, 2]
    axis = d.geom_xmat[g2][:, :, 2]
    radius, half = m.geom_size[g2][:, :1], m.geom_size[g2][:, 1:2]
    # (an axis along the normal: mju_normalize3's (1, 0, 0))
    b = _unit(axis - n * jnp.sum(n * axis, axis=-1, keepdims=True))[0]
    frame = jnp.stack([n, b, jnp.cross(n, b)], axis=1)
    dists, poss = [], []
    for sign in (1.0, -1.0):
        center = d.geom_xpos[g2] + sign * half * axis
        dist = jnp.sum((center - d.geom_xpos[g1]) * n, axis=-1, keepdims=True) - radius
        dists.append(dist[:, 0])
        poss.append(center - n * (radius + 0.5 * dist))
    pair_major = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    return (pair_major(jnp.stack(dists, axis=1)), pair_major(jnp.stack(poss, axis=1)),
            pair_major(jnp.stack([frame, frame], axis=1)))


_plane_capsule.ncon = 2


def _clip1(x):
    return jnp.clip(x, -1.0, 1.0)


def _contact_frame(n):
    """MuJoCo C's contact frame from its normal ``n`` [P, 3] (``mju_makeFrame``): the first
    tangent world y made orthogonal to ``n``, or world z where ``|n_y| >= 0.5``."""
    pick_y = jnp.abs(n[:, 1:2]) < 0.5
    t = jnp.where(pick_y, jnp.array([0.0, 1.0, 0.0], n.dtype), jnp.array([0.0, 0.0, 1.0], n.dtype))
    t = t - n * jnp.sum(n * t, axis=-1, keepdims=True)
    t = t / jnp.sqrt(jnp.sum(t * t, axis=-1, keepdims=True))
    return jnp.stack([n, t, jnp.cross(n, t)], axis=1)


def _unit(v):
    """``v / |v|`` row by row, and ``(1, 0, 0)`` where ``|v| < mjMINVAL``
    (``mju_normalize3``); also the norms."""
    norm = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
    tiny = norm < mujoco.mjMINVAL
    unit = jnp.where(tiny, jnp.array([1.0, 0.0, 0.0], v.dtype), v / jnp.where(tiny, 1.0, norm))
    return unit, norm[:, 0]


def _capsule_capsule(m, d, _key, geom):
    """MuJoCo C's capsule-capsule contact (``mjc_CapsuleCapsule``) in the calling convention of
    MJX's collision table, one per pair. The nearest points of the two axis segments are found
    as MuJoCo C finds them: the lines' nearest points from the 2x2 normal equations, then
    clipped to the segments the way it clips (the first capsule's parameter, then the
    second's with the first re-solved). MJX regularizes the equations (``+1e-6``), which moves
    the contact normal of two crossing capsules in its 5th digit, and clips otherwise, which
    picks other points where the capsules overlap deeply. Where the nearest points coincide
    the normal is the cross product of the two axes. Parallel axes (``|det| < mjMINVAL``;
    in float32 also axes within ~1e-4 rad, whose ``det`` rounds to 0): MuJoCo C tries each
    end of one segment against the other and keeps up to two contacts; ours is the nearest
    of its candidates (the first of them on a tie)."""
    g1, g2 = geom.T
    z1, z2 = d.geom_xmat[g1][:, :, 2], d.geom_xmat[g2][:, :, 2]
    r1, r2 = m.geom_size[g1][:, 0], m.geom_size[g2][:, 0]
    a1 = z1 * m.geom_size[g1][:, 1:2]  # half-segments
    a2 = z2 * m.geom_size[g2][:, 1:2]
    p1, p2 = d.geom_xpos[g1], d.geom_xpos[g2]
    dot = lambda x, y: jnp.sum(x * y, axis=-1)  # noqa: E731
    dif = p1 - p2
    ma, mb, mc = dot(a1, a1), -dot(a1, a2), dot(a2, a2)
    u, v = -dot(a1, dif), dot(a2, dif)
    det = ma * mc - mb * mb
    parallel = jnp.abs(det) < mujoco.mjMINVAL
    safe = jnp.where(parallel, 1.0, det)
    x1, x2 = (mc * u - mb * v) / safe, (ma * v - mb * u) / safe
    # the first segment's parameter clipped, the second's re-solved for it
    x2 = jnp.where(x1 > 1, (v - mb) / mc, jnp.where(x1 < -1, (v + mb) / mc, x2))
    x1 = _clip1(x1)
    # then the second's clipped, the first's re-solved for it and clipped
    x1 = jnp.where(x2 > 1, _clip1((u - mb) / ma), jnp.where(x2 < -1, _clip1((u + mb) / ma), x1))
    x2 = _clip1(x2)
    # parallel axes: MuJoCo C's candidates in its order (the first segment's ends against
    # the second, then the second's against the first), the nearest of them
    one = jnp.ones_like(u)
    tries = [(one, _clip1((v - mb) / mc)), (-one, _clip1((v + mb) / mc)),
             (_clip1((u - mb) / ma), one), (_clip1((u + mb) / ma), -one)]
    gaps = jnp.stack([jnp.sum((p2 + t2[:, None] * a2 - p1 - t1[:, None] * a1) ** 2, axis=-1)
                      for t1, t2 in tries])
    best = jnp.argmin(gaps, axis=0)
    x1 = jnp.where(parallel, jnp.choose(best, [t1 for t1, _ in tries], mode="clip"), x1)
    x2 = jnp.where(parallel, jnp.choose(best, [t2 for _, t2 in tries], mode="clip"), x2)
    c1, c2 = p1 + x1[:, None] * a1, p2 + x2[:, None] * a2
    n, gap = _unit(c2 - c1)
    n = jnp.where((gap < mujoco.mjMINVAL)[:, None], _unit(jnp.cross(z1, z2))[0], n)
    dist = gap - r1 - r2
    pos = c1 + n * (r1 + 0.5 * dist)[:, None]
    return dist, pos, _contact_frame(n)


_capsule_capsule.ncon = 1


_ON = threading.local()  # how deep this thread is inside mujoco_c_contacts()
_INSTALL = threading.Lock()
_installed: list = []  # [True] once a dispatcher sits in MJX's table, [False] if none can


def _install() -> bool:
    """Put a dispatcher in MJX's collision table for each pair MuJoCo C collides otherwise
    ((plane, capsule), (capsule, capsule)), once per process: on a thread inside
    :func:`mujoco_c_contacts` it calls ours (:func:`_plane_capsule`,
    :func:`_capsule_capsule`), and MJX's own collider everywhere else. A pair is left to MJX
    where its table is not where this MJX version keeps it, or its collider emits another
    number of contacts a pair than ours; False where no pair could be installed."""
    with _INSTALL:
        if not _installed:
            try:
                from mujoco.mjx._src import collision_driver
                from mujoco.mjx._src.types import GeomType

                table = collision_driver._COLLISION_FUNC
                ours = {(GeomType.PLANE, GeomType.CAPSULE): _plane_capsule,
                        (GeomType.CAPSULE, GeomType.CAPSULE): _capsule_capsule}
            except (ImportError, AttributeError):
                table, ours = {}, {}
            done = False
            for pair, mine in ours.items():
                own = table.get(pair)
                if getattr(own, "ncon", None) != mine.ncon:
                    continue

                def collide(m, d, key, geom, own=own, mine=mine):
                    use = mine if getattr(_ON, "depth", 0) else own
                    return use(m, d, key, geom)

                collide.ncon = own.ncon
                collide.mjx_own = own
                table[pair] = collide
                done = True
            _installed.append(done)
        return _installed[0]


@contextlib.contextmanager
def mujoco_c_contacts():
    """While this thread traces inside it, MJX collides planes with capsules, and capsules with
    capsules, as MuJoCo C does (:func:`_plane_capsule`, :func:`_capsule_capsule`). MJX picks
    its collision functions when it traces: the programs traced inside keep MuJoCo C's
    contacts; other threads, and code outside, get MJX's own."""
    if not _install():
        yield
        return
    _ON.depth = getattr(_ON, "depth", 0) + 1
    try:
        yield
    finally:
        _ON.depth -= 1
