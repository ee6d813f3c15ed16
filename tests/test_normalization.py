"""ppo_jax.core.normalization's initial statistics against TorchRL's ``ObservationNorm.init_stats``
procedure itself (not only its formula): both drive a deterministic toy environment whose
episode lengths the test chooses, and must keep the same observations (which ones, where
episodes are cut, how many) and give the same loc/scale.

TorchRL's procedure (torchrl/envs/transforms/_normalization.py): ``while collected <
num_iter: td = parent.rollout(max_steps=num_iter)`` (random actions, a fresh reset, stopped at
the first done), ``collected += td.numel()``; then the mean and unbiased std of
``cat(td["observation"])``: the observations the actions were taken from, the reset one
included, the last next-observation excluded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from ppo_jax.core.normalization import init_stats, random_rollout_observations


def toy_observation(length, t):
    """``[episode length, step, (length * t) mod 7]``: says where every row comes from."""
    return jnp.stack([length, t, jnp.mod(length * t, 7.0)]).astype(jnp.float64)


@struct.dataclass
class ToyState:
    obs: jax.Array
    length: jax.Array  # steps until termination
    steps: jax.Array
    terminated: jax.Array
    truncated: jax.Array

    @property
    def done(self) -> jax.Array:
        return self.terminated | self.truncated


class ToyEnv:
    """The interface of ``InvertedDoublePendulum`` that the statistics use. An episode
    terminates after ``length`` steps, ``length`` drawn from ``lengths`` by the reset key, and
    is truncated at ``max_episode_steps``; actions are ignored."""

    observation_size = 3
    action_size = 1
    action_low, action_high = np.array([-1.0], np.float32), np.array([1.0], np.float32)

    def __init__(self, lengths: tuple[int, ...], max_episode_steps: int):
        self.lengths = jnp.asarray(lengths, jnp.float64)
        self.max_episode_steps = max_episode_steps

    def reset(self, key: jax.Array) -> ToyState:
        length = self.lengths[jax.random.randint(key, (), 0, len(self.lengths))]
        zero = jnp.zeros((), jnp.float64)
        return ToyState(toy_observation(length, zero), length, jnp.int32(0), jnp.bool_(False),
                        jnp.bool_(False))

    def step(self, state: ToyState, action: jax.Array) -> ToyState:
        steps = state.steps + 1
        t = steps.astype(jnp.float64)
        return ToyState(toy_observation(state.length, t), state.length, steps,
                        t >= state.length, steps >= self.max_episode_steps)


def torch_toy_env(lengths, max_episode_steps: int):
    """The same environment as a TorchRL ``EnvBase``; episode ``k`` lasts ``lengths[k]``."""
    import torch
    from tensordict import TensorDict
    from torchrl.data import Bounded, Categorical, Composite, Unbounded
    from torchrl.envs import EnvBase

    def observation(length, t):
        return torch.tensor([length, t, (length * t) % 7.0], dtype=torch.float64)

    class TorchToyEnv(EnvBase):
        def __init__(self):
            super().__init__()
            self.observation_spec = Composite(observation=Unbounded((3,), dtype=torch.float64))
            self.action_spec = Bounded(-1.0, 1.0, (1,), dtype=torch.float32)
            self.reward_spec = Unbounded((1,), dtype=torch.float32)
            self.full_done_spec = Composite(
                done=Categorical(2, (1,), dtype=torch.bool),
                terminated=Categorical(2, (1,), dtype=torch.bool),
                truncated=Categorical(2, (1,), dtype=torch.bool),
            )
            self.episodes = iter(lengths)
            self.length, self.steps = 0, 0

        def _flags(self, terminated: bool, truncated: bool) -> dict:
            return {
                "done": torch.tensor([terminated or truncated]),
                "terminated": torch.tensor([terminated]),
                "truncated": torch.tensor([truncated]),
            }

        def _reset(self, tensordict=None, **kwargs):
            self.length, self.steps = next(self.episodes), 0
            return TensorDict({"observation": observation(self.length, 0),
                               **self._flags(False, False)}, [])

        def _step(self, tensordict):
            self.steps += 1
            terminated = self.steps >= self.length
            truncated = self.steps >= max_episode_steps
            return TensorDict({"observation": observation(self.length, self.steps),
                               "reward": torch.zeros(1), **self._flags(terminated, truncated)},
                              [])

        def _set_seed(self, seed):
            return seed

    return TorchToyEnv()


def torchrl_init_stats(lengths, max_episode_steps: int, num_iter: int):
    """What TorchRL's ``init_stats(num_iter)`` reduced, and its loc and scale."""
    from torchrl.envs import ObservationNorm, TransformedEnv

    from ppo_jax.interop.torchrl.reference import record_init_stats

    norm = ObservationNorm(in_keys=["observation"])
    env = TransformedEnv(torch_toy_env(lengths, max_episode_steps), norm)
    data = record_init_stats(norm, num_iter)
    return data, norm.loc.numpy(), norm.scale.numpy()


def episode_lengths(kept: np.ndarray) -> list[int]:
    """The intended length of each episode the kept rows come from, in order."""
    return [int(row[0]) for row in kept if row[1] == 0]


@pytest.mark.parametrize(
    "lengths, max_steps, num_iter, count",
    [
        ((7,), 1000, 20, 21),  # 3 episodes of 7: the last one runs past 20 to its end
        ((5,), 1000, 20, 20),  # exactly 4 episodes
        ((1,), 1000, 4, 4),  # each rollout is its reset observation only
        ((50,), 1000, 20, 20),  # one rollout, cut at num_iter steps
        ((50,), 8, 30, 32),  # time limit: 4 rollouts of 8
        ((1, 3, 4, 9, 2), 6, 40, None),  # lengths drawn per episode, 9 cut at 6
    ],
)
def test_init_stats_procedure_matches_torchrl(x64, lengths, max_steps, num_iter, count):
    pytest.importorskip("torchrl")
    env = ToyEnv(lengths, max_steps)
    key = jax.random.PRNGKey(0)
    obs, mask = random_rollout_observations(env, key, num_iter)
    kept = np.asarray(obs)[np.asarray(mask)]
    assert kept.dtype == np.float64
    if count is not None:
        assert len(kept) == count
    # TorchRL sees the same episodes in the same order (then more, should it want them)
    episodes = episode_lengths(kept)
    assert len(set(episodes)) == len(set(lengths)) or count is not None
    data, loc, scale = torchrl_init_stats(episodes + [max(lengths)] * num_iter, max_steps,
                                          num_iter)
    np.testing.assert_array_equal(kept, data)
    stats = init_stats(env, key, num_iter, "reference")
    np.testing.assert_allclose(stats.loc, loc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.scale, scale, rtol=1e-12)


def test_merged_moments_are_the_moments_of_everything(x64):
    """``--obs-norm running``'s accumulator: moments merged batch by batch (any split, a
    one-row batch included) are the moments of all the rows at once, and the statistics of
    moments are those of the rows (each mode); a constant entry is only centred in
    ``running`` mode, as in ``safe``."""
    from ppo_jax.core.normalization import (merge, moments_of, stats_from_moments,
                                            stats_from_observations)

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(1311, 4)) * np.array([1e-3, 1.0, 40.0, 0.0]) + np.array(
        [5.0, -2.0, 100.0, 7.0])
    cuts = [0, 1, 8, 500, 503, 1311]
    acc = moments_of(jnp.asarray(rows[:1]))
    for lo, hi in zip(cuts[1:-1], cuts[2:]):
        acc = merge(acc, moments_of(jnp.asarray(rows[lo:hi])))
    whole = moments_of(jnp.asarray(rows))
    assert float(acc.count) == len(rows)
    np.testing.assert_allclose(acc.mean, whole.mean, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(acc.m2, whole.m2, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(acc.mean, rows.mean(0), rtol=1e-13)
    np.testing.assert_allclose(acc.m2[:3] / (len(rows) - 1), rows.var(0, ddof=1)[:3], rtol=1e-11)
    for mode in ("reference", "safe", "running"):
        a, b = stats_from_moments(acc, mode), stats_from_observations(jnp.asarray(rows), mode=mode)
        np.testing.assert_allclose(a.scale, b.scale, rtol=1e-9)
        np.testing.assert_allclose(a.loc, b.loc, rtol=1e-9, atol=1e-9)
    running = stats_from_moments(acc, "running")
    assert float(running.scale[3]) == 1.0 and float(running.loc[3]) == -7.0
    assert float(stats_from_moments(acc, "reference").scale[3]) == pytest.approx(1e6)
    # masked rows are left out, as in init_stats
    mask = np.arange(len(rows)) % 3 != 0
    np.testing.assert_allclose(moments_of(jnp.asarray(rows), jnp.asarray(mask)).mean,
                               rows[mask].mean(0), rtol=1e-13)


def test_residue_entries_are_the_constant_nonzero_ones_under_reference_stats():
    """An entry that (up to float32 rounding) never varied at a nonzero value is rounding
    residue under TorchRL's statistics (scale up to 1e6), and only there: a constant zero
    entry normalizes to exactly 0, and ``safe`` / ``running`` only centre constant entries.
    Any run's entry counts."""
    from ppo_jax.core.normalization import (ObsNormStats, describe_residue, residue_entries,
                                            stats_from_observations)

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(200, 5)).astype(np.float32) * np.array([1, 0, 1, 0, 0], np.float32)
    # 1, 4: constant, nonzero; 4 so small that its 1e6 scale cancels numbers near 1e3 only
    rows += np.array([0.0, 9.81, 3.0, 0.0, -1e-3], np.float32)
    ref = stats_from_observations(jnp.asarray(rows))
    assert residue_entries(ref) == [1]
    for mode in ("safe", "running"):
        assert residue_entries(stats_from_observations(jnp.asarray(rows), mode=mode)) == []
    # the residue is real: float32 leaves the constant's normalized value at rounding's mercy
    assert abs(float(ref.loc[1])) > 2**16 and float(ref.scale[4]) == pytest.approx(1e6)
    normalized = np.asarray(rows[:, 1] * ref.scale[1] + ref.loc[1])
    assert np.all(np.abs(normalized) <= 1.0)  # what remains of the cancellation: rounding
    two_runs = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), ref,
                                      stats_from_observations(jnp.asarray(rows), mode="safe"))
    assert residue_entries(two_runs) == [1]
    text = describe_residue(list(range(10)))
    assert text.startswith("10 observation entries (0, 1, 2, 3, 4, 5, 6, 7, ...) hardly")
    assert "--obs-norm safe" in text and "\n" not in text
