"""Learning: the tutorial's configuration on 2 CPU cores must learn to balance.

Measured with the tutorial config (1 env, 1000 frames/batch, 10 epochs x 15 minibatches of
64), 2026-11-25: seed 0 first evaluates above 9,000 (all 1000 steps held) after 41k frames in a
150k run; the mean training reward rises from ~9.09 (random play) to 9.33-9.35. TorchRL's
tutorial: 71k (seed 0) and 81k (seed 1) frames.
Thresholds with margin: the best evaluation over the run must exceed 5,000 (about half of
the 9,360 measured) and the mean training reward of the last 10 batches 9.25 (measured >= 9.33).
It trains through the programs scripts/train.py runs (``runner.prepare`` / ``train_batches``).

The run is the 100k-frame one (its learning-rate schedule anneals over 100 batches), stopped
at its first evaluation that holds all 1,000 steps (>= 9,000; seed 0: the evaluation after
batch 70, measured 2026-12-04), and the checks judge the batches it ran (72: the evaluation
is read a batch late; mean training reward of batches 62-71: 9.33, of batches 0-4: 9.15). A
run that never gets there trains all 100 batches, and the checks judge them all. What the
stop gives up: the batches after the first held evaluation (the end of the annealed
schedule) are not trained, and the MuJoCo C comparison takes the policy one update after
the one that held. (Shorter runs are not the same: at 40k, 50k and 60k frames the lr anneals
sooner and the best evaluations were 475, 1,982 and 971.)
"""

import numpy as np
import pytest

from ppo_jax.run import runner
from ppo_jax.config import PPOConfig
from ppo_jax.run.runs import Runs

pytestmark = pytest.mark.slow


HELD = 9000.0  # an evaluation of 1,000 steps held scores ~9,340


@pytest.fixture(scope="module")
def trained():
    job = runner.prepare(Runs(PPOConfig(total_frames=100_000, seed=0)))
    held = lambda: any(r >= HELD for r in job.log.history["eval_return"][0])  # noqa: E731
    return runner.train_batches(job, interrupted=held)


def test_tutorial_config_learns_to_balance(trained):
    h = trained.log.history
    evals = np.asarray(h["eval_return"][0])
    reward = np.asarray(h["reward"][0], float)
    assert trained.log.failed == [None]
    # all 100 batches, or stopped one batch after the first evaluation that held (it is read
    # a batch late)
    fpb = trained.trainer.config.frames_per_batch
    after_held = len(reward) == h["eval_frames"][0][-1] // fpb + 1
    assert len(reward) == 100 or (after_held and (evals[:-1] < HELD).all()
                                  and evals[-1] >= HELD), (len(reward), evals)
    assert evals.max() > 5000, evals
    assert reward[-10:].mean() > 9.25, reward[-10:]
    assert reward[-10:].mean() > reward[:5].mean() + 0.1


def test_trained_policy_scores_the_same_in_mujoco_c(trained):
    """The trained policy run in MuJoCo C (the simulator the tutorial trains in) from the
    start states of MJX's evaluations scores what it scores in MJX."""
    import jax

    from ppo_jax.eval import evaluate

    state = jax.tree_util.tree_map(lambda x: x[0], trained.states)
    keys = evaluate.episode_keys(state.eval_key, 100, 10)
    res = evaluate.compare_sims(trained.trainer, state, keys)
    mjx_r, c_r = np.asarray(res["mjx"]["returns"]), np.asarray(res["mujoco"]["returns"])
    steps = np.asarray(res["mujoco"]["steps"])
    # an episode held for 1000 steps in MJX is held in MuJoCo C, with the same return (a
    # falling one diverges: the fallen double pendulum is chaotic, see test_mujoco_c)
    held = mjx_r >= HELD
    assert held.any(), mjx_r  # the trained policy holds some episodes (else nothing is compared)
    assert np.all(steps[held] == 1000) and np.all(c_r[held] >= HELD)
    np.testing.assert_allclose(c_r[held], mjx_r[held], rtol=1e-3)
