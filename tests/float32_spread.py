"""How large float32 rounding noise is in the fixture's loss, gradients and Adam steps: the
tolerances of ``test_fixture_loss_and_grads`` and ``test_fixture_optimizer_step`` are set from
it (issue 29, "Parity on the GPU")::

    python -m tests.float32_spread [--perms N]      # the table, on JAX's default backend

The same float32 computation is run in several summation orders, each against a float64
reference (the same code, the same float32 inputs, with x64 enabled only while it runs):

* ``test``: exactly as the tests run it (``JaxSide``: the entropy noise drawn from the key);
* ``batch perm``: the minibatch (and its entropy noise) permuted: every sum over the batch
  (the loss means, the bias gradients, the batch contraction of each kernel gradient) runs
  in another order;
* ``units perm``: the batch, the 11 observation features and the 256 units of each hidden
  layer permuted (a symmetry of the MLPs; the gradients are permuted back): every matmul
  contraction runs in another order too;
* ``blocks of 8``: the loss and gradients of 8 blocks of 8 samples, summed pairwise or
  sequentially (a blocked reduction, as GPU reductions are), and ``per sample``: 64
  per-sample gradients summed sequentially, pairwise, or sequentially over a permuted batch;
* ``elementwise``: every float32 result of tanh, exp, log, log1p and softplus in the loss
  moved :data:`ULPS` ulps up or down (by its last bit): another backend's elementwise
  functions (XLA's CPU ones are not correctly rounded, nor are CUDA's: expf and tanhf are
  within 2 ulps, logf and log1pf within 1, by CUDA's math API documentation), alone and with
  the batch permuted;
* ``entropy noise``: the entropy sample's standard normal draw moved by the most that
  ``_fixture_key`` accepts from another backend (``parity.noise_tolerance``), alternately up
  and down.

Every variant then takes the fixture's Adam steps (global-norm clip, Adam, the lr of batch
``LR_BATCH``) from its own gradients. Its error is ``|float32 variant - float64|`` per
compared entry, and ``spread`` the largest over the variants; the fixture's own error
(TorchRL's float32 on the CPU) is ``|torch - float64|``. A backend whose error is within the
spread has ``|ppo_jax - torch| <= spread + |torch - float64|``; ``headroom`` (:class:`Row`)
is ``tolerance / (spread + |torch - float64|)`` at the worst entry of each check, and
``test_fixture_tolerances_cover_float32_spread`` asserts it is at least :data:`HEADROOM`
(run on a GPU, its ``test`` row is the GPU's own order). All matmuls at precision HIGHEST
(``parity.full_float32``). Errors shared by every variant (``loss_critic``'s 3.4e-6, the
updates' 7e-6 relative: float32 Adam's bias correction ``1 - fl(0.999)``, TorchRL's is float64)
are float32 arithmetic, not order.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Callable
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppo_jax.core import distributions, losses, optim
from ppo_jax.core.hyper import hyper_of
from ppo_jax.interop.torchrl import compat as tc
from tests.helpers import x64
from tests.parity import (
    ACTION_DIM,
    CONFIG,
    DATA,
    HIDDEN,
    LOSS_TERMS,
    LR_BATCH,
    META,
    OBS_DIM,
    JaxSide,
    fixture_tolerances,
    flat_leaves,
    full_float32,
    noise_tolerance,
    to_jnp,
    with_schedule_batch,
)

HEADROOM = 2.0  # each tolerance must hold twice the worst reordering's error plus torch's
TERMS = (*LOSS_TERMS, "clip_fraction", "loss")


# ------------------------------------------------------------------------------ inputs
@dataclasses.dataclass
class Fixture:
    d: dict  # the npz
    params: losses.Params  # float32 numpy leaves
    batch: dict  # float32 numpy: obs, pre_tanh (as JaxSide.minibatch computes it), ...
    noise: np.ndarray  # the entropy sample's standard normal draw, [B, action_dim]
    key: jax.Array
    steps: int


def load_fixture() -> Fixture:
    d = dict(np.load(DATA + ".npz"))
    actor = tc.numpy_torch_default_params(
        OBS_DIM, HIDDEN, 2 * ACTION_DIM, META["seeds"]["actor_weights_numpy_seed"])
    critic = tc.numpy_torch_default_params(
        OBS_DIM, HIDDEN, 1, META["seeds"]["critic_weights_numpy_seed"])
    def f32(tree):
        return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)

    pre_tanh = np.asarray(distributions.safe_atanh(jnp.asarray(d["loss/action"])))
    batch = {"obs": d["loss/obs"], "pre_tanh": pre_tanh, "log_prob": d["loss/old_log_prob"],
             "advantage": d["loss/advantage"], "value_target": d["loss/value_target"]}
    return Fixture(d=d, params=losses.Params(actor=f32(actor), critic=f32(critic)),
                   batch={k: np.asarray(v, np.float32) for k, v in batch.items()},
                   noise=np.asarray(d["loss/entropy_noise"], np.float32),
                   key=jax.random.PRNGKey(int(d["loss/entropy_key"])),
                   steps=len(d["opt/grad_norm"]))


# ------------------------------------------------------------------------------ programs
def loss_fn(params, batch: dict, noise):
    """``losses.ppo_loss`` at the fixture's settings, its entropy sample drawn from ``noise``
    (``distributions.sample`` with the draw given) instead of a key: a permuted batch keeps
    each sample's noise."""

    def entropy_estimate(key, loc, scale, bounds=None):
        u = loc + scale * noise
        return -distributions.log_prob_pre_tanh(loc, scale, u, bounds)

    side = _side()
    with mock.patch.object(distributions, "entropy_estimate", entropy_estimate):
        return losses.ppo_loss(
            params, losses.Minibatch(**batch), None,
            actor_apply=side.actor.apply, critic_apply=side.critic.apply,
            clip_epsilon=CONFIG.clip_epsilon, entropy_coeff=CONFIG.entropy_coeff,
            critic_coeff=CONFIG.critic_coeff, critic_loss=CONFIG.critic_loss)


_SIDE: list[JaxSide] = []


def _side() -> JaxSide:
    if not _SIDE:
        _SIDE.append(JaxSide())
    return _SIDE[0]


def _terms(loss, m) -> dict:
    out = {k: getattr(m, k) for k in (*LOSS_TERMS, "clip_fraction")}
    out["loss"] = loss
    return out


def _loss_and_grad_fn(params, batch, noise):
    (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, noise)
    return _terms(loss, m), grads


_loss_and_grad = jax.jit(full_float32(_loss_and_grad_fn))

# The elementwise functions the loss calls (networks, TanhNormal log-prob, ratios), as module
# attributes: a variant moves each of their float32 results by ULPS ulps.
_ELEMENTWISE = ((jnp, "tanh"), (jnp, "exp"), (jnp, "log"), (jnp, "log1p"),
                (jax.nn, "softplus"))


ULPS = 2


def _ulps_off(f, direction: int):
    """``f`` with its result moved :data:`ULPS` ulps, up or down by the result's last bit
    (times ``direction``): another float32 implementation of ``f``."""

    def g(*args, **kwargs):
        y = f(*args, **kwargs)
        if jnp.result_type(y) != jnp.float32 or isinstance(args[0], (int, float)):
            return y  # a constant (log 2): folded by XLA on the host, on any backend
        ys = jax.lax.stop_gradient(y)
        odd = (jax.lax.bitcast_convert_type(ys, jnp.uint32) & 1) == 1
        up = jnp.where(odd, direction, -direction) > 0
        moved, to = ys, jnp.where(up, jnp.inf, -jnp.inf).astype(y.dtype)
        for _ in range(ULPS):
            moved = jnp.nextafter(moved, to)
        return y + (moved - ys)  # the value moved, the derivative f's

    return g


def _loss_and_grad_ulp_fn(params, batch, noise, direction):
    with contextlib.ExitStack() as stack:
        for mod, name in _ELEMENTWISE:
            stack.enter_context(
                mock.patch.object(mod, name, _ulps_off(getattr(mod, name), direction)))
        return _loss_and_grad_fn(params, batch, noise)


_loss_and_grad_ulp = jax.jit(full_float32(_loss_and_grad_ulp_fn), static_argnums=3)


@jax.jit
@full_float32
def _blocked(params, batch, noise):
    """Loss terms and gradients of each block of ``batch`` (leading axis: blocks)."""
    return jax.vmap(_loss_and_grad_fn, in_axes=(None, 0, 0))(params, batch, noise)


def _apply_fn(hyper):
    opt = optim.make_optimizer(CONFIG)

    @jax.jit
    @full_float32
    def apply(params, state, grads):  # as JaxSide.step, the gradients given
        state = optim.with_hyper(state, CONFIG, hyper)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, optax.global_norm(grads)

    return opt, apply


# ------------------------------------------------------------------------------ variants
def _take(batch: dict, noise, p):
    return {k: v[p] for k, v in batch.items()}, noise[p]


def _tree_sum(xs: list, mode: str):
    """float32 sum of ``xs`` (numpy trees): ``sequential`` left to right, or ``pairwise``."""
    if mode == "sequential":
        acc = xs[0]
        for x in xs[1:]:
            acc = jax.tree_util.tree_map(np.add, acc, x)
        return acc
    while len(xs) > 1:
        xs = [jax.tree_util.tree_map(np.add, xs[i], xs[i + 1]) if i + 1 < len(xs) else xs[i]
              for i in range(0, len(xs), 2)]
    return xs[0]


def _unit_perms(rng, params: losses.Params) -> dict:
    """A permutation of the inputs and of each hidden layer's units, per network."""
    out = {"obs": rng.permutation(OBS_DIM)}
    for net in ("actor", "critic"):
        out[net] = [rng.permutation(h) for h in HIDDEN]
    return out


def _permute_net(tree, p_in, hidden, inverse=False):
    """Permute a ``{"params": {"net": ...}}`` tree's inputs by ``p_in`` and hidden layer i's
    units by ``hidden[i]`` (``inverse``: undo it)."""
    net = tree["params"]["net"]
    n = len(net)
    order = [p_in, *hidden, None]  # the permutation of each layer's input, then of the output
    out = {}
    for i in range(n):
        name = f"layers_{i}"
        k, b = np.asarray(net[name]["kernel"]), np.asarray(net[name]["bias"])
        pi, po = order[i], order[i + 1]
        if inverse:
            pi = None if pi is None else np.argsort(pi)
            po = None if po is None else np.argsort(po)
        if pi is not None:
            k = k[pi]
        if po is not None:
            k, b = k[:, po], b[po]
        out[name] = {"kernel": k, "bias": b}
    return {"params": {"net": out}}


def _permute_params(params, perms, inverse=False):
    return losses.Params(
        actor=_permute_net(params.actor, perms["obs"], perms["actor"], inverse),
        critic=_permute_net(params.critic, perms["obs"], perms["critic"], inverse))


def _np(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def variants(fx: Fixture, perms: int, seed: int = 0) -> dict[str, Callable]:
    """name -> ``grad(params) -> (terms, grads)`` in the fixture's layout, float32."""
    rng = np.random.default_rng(seed)
    B = len(fx.noise)
    out: dict[str, Callable] = {}

    def plain(p, q=None, noise_shift=0):
        def f(params):
            batch, noise = (fx.batch, fx.noise) if p is None else _take(fx.batch, fx.noise, p)
            if noise_shift:  # another backend's draw, at the test's bound (noise_tolerance)
                sign = np.where(np.arange(noise.size).reshape(noise.shape) % 2, 1, -1)
                noise = np.float32(noise + noise_shift * sign * noise_tolerance(noise))
            if q is not None:
                params = _permute_params(params, q)
                batch = dict(batch, obs=batch["obs"][:, q["obs"]])
            terms, grads = _np(_loss_and_grad(params, batch, noise))
            return terms, (grads if q is None else _permute_params(grads, q, inverse=True))
        return f

    out["injected noise (the test's order)"] = plain(None)
    out["batch reversed"] = plain(np.arange(B)[::-1])
    out["entropy noise +-(its tolerance)"] = plain(None, noise_shift=1)
    out["entropy noise -+(its tolerance)"] = plain(None, noise_shift=-1)
    for i in range(perms):
        out[f"batch perm {i}"] = plain(rng.permutation(B))
    for i in range(perms):
        out[f"units perm {i}"] = plain(rng.permutation(B), _unit_perms(rng, fx.params))

    def blocked(size, mode, p=None):
        def f(params):
            batch, noise = (fx.batch, fx.noise) if p is None else _take(fx.batch, fx.noise, p)
            n = B // size
            batch = {k: v.reshape(n, size, *v.shape[1:]) for k, v in batch.items()}
            terms, grads = _np(_blocked(params, batch, noise.reshape(n, size, -1)))
            def split(tree):
                return [jax.tree_util.tree_map(lambda x, i=i: x[i], tree) for i in range(n)]

            scale = np.float32(1.0 / n)  # a power of two: exact
            terms = _tree_sum(split(terms), mode)
            terms = {k: (np.float32(v * scale) if k != "ESS" else np.float32(np.nan))
                     for k, v in terms.items()}
            grads = jax.tree_util.tree_map(lambda g: np.float32(g * scale),
                                           _tree_sum(split(grads), mode))
            return terms, grads
        return f

    def ulp(direction, p=None):
        def f(params):
            batch, noise = (fx.batch, fx.noise) if p is None else _take(fx.batch, fx.noise, p)
            return _np(_loss_and_grad_ulp(params, batch, noise, direction))
        return f

    out[f"elementwise +-{ULPS} ulp"] = ulp(1)
    out[f"elementwise -+{ULPS} ulp"] = ulp(-1)
    out[f"elementwise +-{ULPS} ulp, batch perm"] = ulp(1, rng.permutation(B))
    out["blocks of 8, pairwise"] = blocked(8, "pairwise")
    out["blocks of 8, sequential"] = blocked(8, "sequential")
    out["per sample, sequential"] = blocked(1, "sequential")
    out["per sample, pairwise"] = blocked(1, "pairwise")
    out["per sample, sequential, batch perm"] = blocked(1, "sequential", rng.permutation(B))
    return out


def run_variant(grad, params, steps, apply, opt, lr_dtype=None):
    """Loss terms and gradients at ``params``, then ``steps`` optimizer steps from the
    variant's own gradients: (terms, grads, params after, pre-clip norms)."""
    terms, grads = grad(params)
    state = with_schedule_batch(opt.init(params), CONFIG, LR_BATCH)
    p, norms = params, []
    for i in range(steps):
        g = grads if i == 0 else grad(p)[1]
        p, state, norm = apply(p, state, g)
        p = _np(p)
        norms.append(float(norm))
    return terms, grads, p, np.asarray(norms)


@dataclasses.dataclass
class Outcome:
    """One computation of the fixture's quantities (float64 numpy)."""

    terms: dict
    grads: losses.Params
    after: losses.Params
    norms: np.ndarray


def _f64(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


def measure(perms: int = 4, jx: JaxSide | None = None, seed: int = 0) -> dict:
    """``{"reference": Outcome (float64), "test": Outcome, <variant>: Outcome, ...}``."""
    if jx is not None and not _SIDE:
        _SIDE.append(jx)
    jx = _side()
    fx = load_fixture()
    hyper = hyper_of(CONFIG)
    opt, apply = _apply_fn(hyper)
    out = {}
    # exactly as the tests run it
    batch = jx.minibatch(*(fx.d[f"loss/{k}"] for k in
                           ("obs", "action", "old_log_prob", "advantage", "value_target")))
    params = losses.Params(actor=to_jnp(fx.params.actor), critic=to_jnp(fx.params.critic))
    (loss, m), grads = jx.loss_and_grad(params, batch, fx.key)
    after, norms = jx.run_optimizer(params, [batch] * fx.steps, fx.key)
    out["test"] = Outcome(_f64(_terms(loss, m)), _f64(grads), _f64(after), np.asarray(norms))
    for name, grad in variants(fx, perms, seed).items():
        out[name] = Outcome(*map(_f64, run_variant(grad, fx.params, fx.steps, apply, opt)))
    # float64: the same code and the same (float32) inputs
    with x64():
        p64 = _f64(fx.params)
        b64 = {k: np.asarray(v, np.float64) for k, v in fx.batch.items()}
        n64 = np.asarray(fx.noise, np.float64)
        opt64, apply64 = _apply_fn(hyper)

        def grad64(params):
            return _np(_loss_and_grad(params, b64, n64))

        ref = run_variant(grad64, p64, fx.steps, apply64, opt64)
        assert ref[1].actor["params"]["net"]["layers_0"]["kernel"].dtype == np.float64
        out["reference"] = Outcome(*map(_f64, ref))
    return out


# ------------------------------------------------------------------------------ checks
@dataclasses.dataclass
class Row:
    test: str  # which test's check
    check: str  # its name, as the test prints it
    spread_abs: float  # max over entries of max over variants |variant - float64|
    spread_rel: float  # the same relative to max(|float64|, atol/rtol), as check() does
    worst: str  # the variant of the largest spread
    torch_abs: float  # max |fixture (torch) - float64|
    headroom: float  # min over entries of tolerance / (spread + |torch - float64|)
    tol: str  # the tolerance, as the test states it
    by_family: dict  # family of variants (FAMILIES) -> its max |variant - float64|


# the variants by kind: what each changes (see the module's docstring)
FAMILIES = ("test", "injected noise", "batch", "units perm", "blocks", "per sample",
            "elementwise", "entropy noise")


def family(variant: str) -> str:
    return next(f for f in FAMILIES if variant.startswith(f))


def _rows_of(test, name, got: dict, ref, want, rtol, atol, tol_text) -> Row:
    ref = np.asarray(ref, np.float64)
    want = np.asarray(want, np.float64)
    errs = {v: np.abs(np.asarray(g, np.float64) - ref) for v, g in got.items()}
    errs = {v: e for v, e in errs.items() if not np.isnan(e).any()}
    spread = np.max(np.stack(list(errs.values())), axis=0)
    worst = max(errs, key=lambda v: errs[v].max())
    floor = atol / rtol if rtol else np.inf
    rel = spread / np.maximum(np.abs(ref), floor)
    torch = np.abs(want - ref)
    tol = atol + rtol * np.abs(want)
    need = spread + torch
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(need > 0, tol / need, np.inf)
    by_family: dict = {}
    for v, e in errs.items():
        by_family[family(v)] = max(by_family.get(family(v), 0.0), float(e.max()))
    return Row(test, name, float(spread.max()), float(rel.max()), worst, float(torch.max()),
               float(room.min()), tol_text, by_family)


def _delta(after: losses.Params, net: str, leaf: str, before: dict) -> np.ndarray:
    """As the test computes an update: float32 after - before, flattened."""
    a = dict(flat_leaves(getattr(after, net)))[leaf]
    return np.asarray(np.asarray(a, np.float32) - before[leaf], np.float64).ravel()


def table(res: dict) -> list[Row]:
    """Each check of the two tests, at the tolerance it uses (:func:`fixture_tolerances`)."""
    leaves = flat_leaves
    ref = res["reference"]
    got = {k: v for k, v in res.items() if k != "reference"}
    fx = load_fixture()
    d = fx.d
    lr = float(d["opt/lr"])
    rows = []
    t = "loss_and_grads"
    for k in TERMS:
        want = d["loss/total"] if k == "loss" else d[f"loss/{k}"]
        rtol, atol = fixture_tolerances(k, want)
        rows.append(_rows_of(t, k, {v: o.terms[k] for v, o in got.items()}, ref.terms[k],
                             want, rtol, atol, f"rtol {rtol:g}, atol {atol:.3g}"))
    for net in ("actor", "critic"):
        r = dict(leaves(getattr(ref.grads, net)))
        g = {v: dict(leaves(getattr(o.grads, net))) for v, o in got.items()}
        for leaf, r_leaf in r.items():
            name = f"{net}/{leaf}"
            idx = d[f"sub/{name}/idx"]
            want = d[f"grad/{name}/val"]
            rtol, atol = fixture_tolerances("grad", want)
            rows.append(_rows_of(t, f"grad {name}", {v: x[leaf].ravel()[idx] for v, x in g.items()},
                                 r_leaf.ravel()[idx], want, rtol, atol,
                                 f"rtol {rtol:g}, atol {atol / np.abs(want).max():g} max|g|"))
            rtol, atol = fixture_tolerances("grad norm", None)
            rows.append(_rows_of(t, f"grad {name} (L2 norm of all)",
                                 {v: np.linalg.norm(x[leaf]) for v, x in g.items()},
                                 np.linalg.norm(r_leaf), d[f"grad/{name}/norm"], rtol, atol,
                                 f"rtol {rtol:g}"))
    t = "optimizer_step"
    rtol, atol = fixture_tolerances("pre-clip norms", None)
    rows.append(_rows_of(t, "pre-clip global grad norms", {v: o.norms for v, o in got.items()},
                         ref.norms, d["opt/grad_norm"], rtol, atol, f"rtol {rtol:g}"))
    before = {net: dict(leaves(getattr(fx.params, net))) for net in ("actor", "critic")}
    for net in ("actor", "critic"):
        b = {k: np.asarray(x, np.float32) for k, x in before[net].items()}
        for leaf, b_leaf in b.items():
            name = f"{net}/{leaf}"
            idx = d[f"sub/{name}/idx"]
            want = d[f"delta/{name}/val"]
            rtol, atol = fixture_tolerances("update", want, lr=lr)
            ref_delta = dict(leaves(getattr(ref.after, net)))[leaf].ravel() - b_leaf.ravel()
            rows.append(_rows_of(t, f"update {name}",
                                 {v: _delta(o.after, net, leaf, b)[idx] for v, o in got.items()},
                                 ref_delta[idx], want, rtol, atol,
                                 f"rtol {rtol:g}, atol {atol / lr:g} lr"))
            rtol, atol = fixture_tolerances("update norm", None)
            rows.append(_rows_of(t, f"update {name} (L2 norm of all)",
                                 {v: np.linalg.norm(_delta(o.after, net, leaf, b))
                                  for v, o in got.items()},
                                 np.linalg.norm(ref_delta), d[f"delta/{name}/norm"], rtol, atol,
                                 f"rtol {rtol:g}"))
    return rows


def format_table(rows: list[Row]) -> str:
    head = ("| test | check | spread abs | spread rel | worst variant | torch - f64 | "
            "headroom | tolerance |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r.test} | {r.check} | {r.spread_abs:.2g} | {r.spread_rel:.2g} | "
                     f"{r.worst} | {r.torch_abs:.2g} | {r.headroom:.3g} | {r.tol} |")
    return "\n".join(lines)


def format_families(rows: list[Row]) -> str:
    """max |float32 - float64| of each check, by family of variants."""
    lines = ["| check | " + " | ".join(FAMILIES) + " |",
             "|---|" + "---|" * len(FAMILIES)]
    for r in rows:
        lines.append(f"| {r.check} | "
                     + " | ".join(f"{r.by_family.get(f, float('nan')):.2g}" for f in FAMILIES)
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--perms", type=int, default=8, help="batch and unit permutations each")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    res = measure(args.perms, seed=args.seed)
    rows = table(res)
    print(f"jax {jax.__version__} on {jax.default_backend()} (matmuls at precision HIGHEST); "
          f"{len(res) - 1} float32 computations against float64; {time.time() - t0:.0f} s\n")
    print(format_table(rows))
    print("\nmax |float32 - float64| by kind of variant:\n")
    print(format_families(rows))
    low = [r for r in rows if r.headroom < HEADROOM]
    print(f"{len(low)} check(s) with headroom below {HEADROOM:g}"
          + "".join(f"\n  {r.test}: {r.check} ({r.headroom:.3g})" for r in low))
    return 1 if low else 0


if __name__ == "__main__":
    raise SystemExit(main())
