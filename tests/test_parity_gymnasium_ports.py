"""Parity of the Gymnasium MuJoCo ports (ppo_jax.envs) with Gymnasium's own v4 envs (MuJoCo C).

For each port, under x64, from states that Gymnasium's env itself visits under random actions
(so they include floor contacts and the steps that terminate), measured by
:mod:`tests.gym_parity`:

* one step from identical synced states and actions: obs, reward and terminated within 1e-6
  (and for Hopper-v4 also from poses in which its own parts touch);
* 20-step trajectories from the same start states, without re-synchronising, within 1e-6;
* the reset distribution's moments match Gymnasium's resets.

Each env compiles one step program per precision, shared by its tests (the synced start
state is built as the env's reset builds it, without a forward pass; Reacher's runs MJX's
kinematics). ``scripts/env_parity.py`` prints the same figures and the float32 horizon. The
pendulum's own, deeper parity tests are tests/test_parity_gymnasium_pendulum.py.
"""

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from ppo_jax.envs import PORTS, make_env  # noqa: E402
from tests import gym_parity as gp  # noqa: E402

SUITE = [e for e in PORTS if e != "InvertedDoublePendulum-v4"]


@pytest.mark.parametrize("env_id", SUITE)
def test_one_step_parity_x64(env_id, x64):
    e = gp.one_step_errors(env_id)
    print(f"PARITY {env_id} one step x64: obs {e.obs:.2g}, reward {e.reward:.2g}, "
          f"{e.terminations} terminations, {e.contacts} states in contact")
    assert e.obs < 1e-6 and e.reward < 1e-6, e
    assert e.term_mismatch == 0
    env = gp.programs(env_id).env
    if "healthy_reward" in env.params:  # Hopper, Walker2d: contact and the boundary covered
        assert e.terminations > 0 and e.contacts > 0, e
    if env_id == "InvertedPendulum-v4":
        assert e.terminations > 0


def test_self_contact_parity_x64(x64):
    """Hopper-v4's parts collide with each other (its torso with its leg or foot, legs
    folded): one step from such poses, shallow and deep, equals Gymnasium's (capsule-capsule
    contacts as MuJoCo C finds them, :mod:`ppo_jax.envs.physics`; MJX's own were up to 4e-5
    apart in the observation from shallow ones, O(1) from deep ones)."""
    qpos, qvel, depth = gp.self_contact_states("Hopper-v4")
    assert depth.max() > -0.03 and depth.min() < -0.05
    e = gp.one_step_errors("Hopper-v4", states=(qpos, qvel, depth < 0))
    print(f"PARITY Hopper-v4 self-contact one step x64: obs {e.obs:.2g}, reward {e.reward:.2g}")
    assert e.obs < 1e-6 and e.reward < 1e-6, e
    assert e.term_mismatch == 0


@pytest.mark.parametrize("env_id", SUITE)
def test_trajectory_parity_x64(env_id, x64):
    err = gp.trajectory_errors(env_id)
    print(f"PARITY {env_id} 20-step trajectories x64: max {np.nanmax(err):.2g}")
    assert np.nanmax(err) < 1e-6, np.nanmax(err)


@pytest.mark.parametrize("env_id", SUITE)
def test_reset_moments_match_gymnasium(env_id):
    ours, theirs, obs, their_obs = gp.reset_moments(env_id)
    n = len(ours)
    spread = np.maximum(theirs.std(0), 1e-12)
    np.testing.assert_array_less(np.abs(ours.mean(0) - theirs.mean(0)),
                                 6 * spread / np.sqrt(n) + 1e-12)
    np.testing.assert_allclose(ours.std(0), theirs.std(0), rtol=0.1, atol=1e-12)
    # the observation of a reset state is the observation Gymnasium computes for it
    np.testing.assert_allclose(obs, their_obs, atol=1e-5)


@pytest.mark.parametrize("env_id", [e for e in PORTS if make_env(e).solver])
def test_solver_cap_changes_nothing(env_id, x64):
    """A port's capped solver (``solver``: fewer Newton / line-search iterations than its
    MJCF's, which float32 would run to the end) reaches the same accelerations as the MJCF's
    own settings, under x64, on the states Gymnasium's env visits (contacts, joint limits)."""
    capped, full = gp.forward_qacc(env_id)
    err = np.abs(capped - full).max()
    print(f"PARITY {env_id} capped solver x64: max |dqacc| {err:.2g} (|qacc| up to "
          f"{np.abs(full).max():.3g})")
    assert err <= 1e-9 * np.abs(full).max(), err


def test_obs_reads_is_checked():
    """A port says what its reset's observation reads (nothing, positions or anything): any
    other value, or the attribute it replaced (obs_from_state), is refused at construction
    rather than silently skipping the forward pass."""
    from ppo_jax.envs.reacher import Reacher

    for attrs, got in (({"obs_reads": "all"}, "got 'all'"),
                       ({"obs_from_state": False}, "got obs_from_state, which it replaces")):
        with pytest.raises(ValueError, match=f"obs_reads must be one of 'nothing', 'positions', "
                                             f"'anything', {got}"):
            type("Bad", (Reacher,), attrs)()
    assert Reacher().obs_reads == "positions"
