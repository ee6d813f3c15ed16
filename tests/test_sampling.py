"""How minibatches are drawn (``PPOConfig.sampler``, ``ppo_jax.core.sampling``): the
``"torchrl"`` stream draws what the tutorial's ``ReplayBuffer`` with
``SamplerWithoutReplacement`` draws (minibatch sizes, passes without replacement, across
epochs and batches); a short minibatch's loss is the loss of its rows; a run with it trains
the same through the CLI's programs and through ``train(key)``, and resumes bit for bit."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.config import PPOConfig
from ppo_jax.core import distributions, losses, sampling
from ppo_jax.core.networks import Actor, Critic
from ppo_jax.run import runner
from ppo_jax.run.runs import Runs

# (frames_per_batch, minibatch_size, epochs, batches): the tutorial's sizes; a remainder of a
# third of a minibatch; a short draw every third; one that divides (every draw full)
SIZES = [(1000, 64, 10, 2), (1000, 300, 3, 3), (2048, 1000, 4, 3), (200, 40, 2, 2)]


def torchrl_draws(frames: int, minibatch: int, epochs: int, batches: int) -> list[np.ndarray]:
    """The positions each ``replay_buffer.sample(minibatch)`` returns, driven as the
    tutorial drives it: every epoch ``extend`` with the batch, then ``frames // minibatch``
    draws."""
    import torch
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, ReplayBuffer
    from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement

    torch.manual_seed(0)
    buffer = ReplayBuffer(storage=LazyTensorStorage(max_size=frames),
                          sampler=SamplerWithoutReplacement())
    out = []
    for _ in range(batches):
        for _ in range(epochs):
            buffer.extend(TensorDict({"i": torch.arange(frames)}, [frames]))
            out += [buffer.sample(minibatch)["i"].numpy() for _ in range(frames // minibatch)]
    return out


def passes(draws: list[np.ndarray], frames: int) -> list[np.ndarray]:
    """The draws joined into passes over the batch's positions (each ends where ``frames``
    positions were drawn)."""
    out, current = [], []
    for d in draws:
        current.append(d)
        if sum(map(len, current)) >= frames:
            out.append(np.concatenate(current))
            current = []
    return out


@pytest.mark.parametrize("frames,minibatch,epochs,batches", SIZES)
def test_the_torchrl_stream_draws_as_the_tutorials_replay_buffer(frames, minibatch, epochs,
                                                                 batches):
    pytest.importorskip("torchrl")
    want = torchrl_draws(frames, minibatch, epochs, batches)
    per_epoch = frames // minibatch
    key = sampling.stream_key(jax.random.PRNGKey(3))
    # as the update program draws them: one call an epoch, at the run's draw count
    calls = [sampling.stream_rows(key, jnp.int32((b * epochs + e) * per_epoch), per_epoch,
                                  frames, minibatch)
             for b in range(batches) for e in range(epochs)]
    rows = np.concatenate([np.asarray(r) for r, _ in calls])
    weights = np.concatenate([np.asarray(w) for _, w in calls])
    assert set(np.unique(weights)) <= {0.0, 1.0}
    got = [r[w == 1] for r, w in zip(rows, weights)]
    assert [len(d) for d in got] == [len(d) for d in want]  # every short minibatch in place
    assert all((w[:int(w.sum())] == 1).all() for w in weights)  # padding after the drawn rows
    for drawn in (got, want):  # each full pass is a permutation of the batch's positions
        for p in passes(drawn, frames):
            np.testing.assert_array_equal(np.sort(p), np.arange(frames))
    # one call for all the draws is the same stream
    whole = sampling.stream_rows(key, jnp.int32(0), len(rows), frames, minibatch)
    np.testing.assert_array_equal(whole[0], rows)
    np.testing.assert_array_equal(whole[1], weights)
    if frames % minibatch:  # the stream is not the epoch sampler's: passes straddle epochs
        assert len({len(d) for d in got}) == 2


@pytest.mark.parametrize("frames,minibatch", [(200, 40), (16_384, 1024)])
def test_an_epoch_that_is_a_whole_pass_draws_the_same_with_one_permutation(frames, minibatch):
    """Where the minibatch divides the batch each epoch's draws are one whole pass: the
    update asks for that pass's permutation alone (``aligned``), and gets the same draws."""
    key, per_epoch = sampling.stream_key(jax.random.PRNGKey(1)), frames // minibatch
    for e in (0, 1, 7):
        first = jnp.int32(e * per_epoch)
        for a, b in zip(sampling.stream_rows(key, first, per_epoch, frames, minibatch,
                                             aligned=True),
                        sampling.stream_rows(key, first, per_epoch, frames, minibatch)):
            np.testing.assert_array_equal(a, b)


def test_the_default_sampler_is_a_permutation_an_epoch():
    rows = np.asarray(sampling.epoch_rows(jax.random.PRNGKey(0), 1000, 64))
    assert rows.shape == (15, 64) and len(np.unique(rows)) == 960


def test_a_short_minibatch_loss_is_the_loss_of_its_rows():
    """40 rows of weight 1 padded to 64 with 24 rows of weight 0: every loss term, metric and
    gradient equal the unweighted loss of the 40 rows (TorchRL's on its short minibatch).
    The entropy's one-sample estimate draws noise for all 64 rows: its mean is over the 40
    rows' estimates (the comparison of the rest is without the entropy bonus)."""
    obs_dim, act_dim, hidden, n, b = 11, 1, (32, 32), 40, 64
    actor, critic = Actor(hidden, act_dim), Critic(hidden)
    k = jax.random.split(jax.random.PRNGKey(0), 8)
    obs = jax.random.normal(k[0], (b, obs_dim))
    params = losses.Params(actor=actor.init(k[1], obs), critic=critic.init(k[2], obs))
    loc, scale = actor.apply(params.actor, obs)
    pre_tanh = loc + scale * jax.random.normal(k[3], loc.shape)
    old = distributions.log_prob_pre_tanh(loc, scale, pre_tanh) + 0.3 * jax.random.normal(
        k[4], (b,))
    full = losses.Minibatch(obs=obs, pre_tanh=pre_tanh, log_prob=old,
                            advantage=3.0 * jax.random.normal(k[5], (b,)),
                            value_target=jax.random.normal(k[6], (b,)))
    weighted = full.replace(weight=(jnp.arange(b) < n).astype(jnp.float32))
    first = jax.tree_util.tree_map(lambda x: x[:n], full)

    def loss(p, mb, entropy_coeff):
        return losses.ppo_loss(p, mb, k[7], actor_apply=actor.apply,
                               critic_apply=critic.apply, clip_epsilon=0.2,
                               entropy_coeff=entropy_coeff, critic_coeff=1.0)

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=2)
    (l_w, m_w), g_w = grad(params, weighted, 0.0)
    (l_n, m_n), g_n = grad(params, first, 0.0)
    assert 0 < float(m_n.clip_fraction) < 1
    for name in ("loss", "loss_objective", "loss_critic", "clip_fraction", "kl_approx", "ESS"):
        np.testing.assert_allclose(getattr(m_w, name), getattr(m_n, name), rtol=1e-5,
                                   atol=1e-7, err_msg=name)
    np.testing.assert_allclose(l_w, l_n, rtol=1e-5, atol=1e-7)
    for a, c in zip(jax.tree_util.tree_leaves(g_w), jax.tree_util.tree_leaves(g_n)):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-7)
    _, m_e = loss(params, weighted, 0.01)
    per_row = distributions.entropy_estimate(k[7], loc, scale)
    np.testing.assert_allclose(m_e.entropy, per_row[:n].mean(), rtol=1e-6)
    np.testing.assert_allclose(m_e.loss_entropy, -0.01 * per_row[:n].mean(), rtol=1e-6)


# the tiny preset with minibatches of 48 of its 200 frames: 4 draws an epoch, 5 a pass
TINY_STREAM = PPOConfig.from_preset("tiny").replace(sampler="torchrl", minibatch_size=48,
                                                    eval_sim="mjx")


def test_a_torchrl_sampler_run_trains_alike_through_the_programs_and_train():
    """The CLI's programs (batch by batch, the batch index an input) and ``train(key)`` (one
    program) draw the same stream; the epoch sampler gives another run."""
    from ppo_jax.core.train import make_train

    job = runner.prepare(Runs(TINY_STREAM))
    runner.train_batches(job)
    state, _ = jax.jit(make_train(TINY_STREAM).train)(Runs(TINY_STREAM).keys()[0])
    for a, b in zip(jax.tree_util.tree_leaves(job.states.params),
                    jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-6)
    other, _ = jax.jit(make_train(TINY_STREAM.replace(sampler="epoch")).train)(
        Runs(TINY_STREAM).keys()[0])
    assert not all(np.allclose(x, y) for x, y in zip(
        jax.tree_util.tree_leaves(other.params), jax.tree_util.tree_leaves(state.params)))


def test_a_torchrl_sampler_run_resumes_bit_for_bit(tmp_path, compile_cache_dir):
    """The stream has no state to save: a run stopped after batch 1 and resumed ends as the
    uninterrupted one, bit for bit."""
    from ppo_jax.cli import train as train_cmd
    from ppo_jax.run import checkpoint

    flags = ["--preset", "tiny", "--sampler", "torchrl", "--minibatch-size", "48",
             "--no-video", "--no-progress", "--compile-cache-dir", compile_cache_dir]
    a, c = str(tmp_path / "a"), str(tmp_path / "c")
    assert train_cmd.main([*flags, "--checkpoint-every", "1", "--out", a]) == 0
    shutil.copytree(a, c)
    for step in ("2", "3"):
        shutil.rmtree(os.path.join(c, "checkpoints", step))
    assert train_cmd.main(["--resume", c, "--no-video", "--no-progress",
                           "--compile-cache-dir", compile_cache_dir]) == 0
    for x, y in zip(*(jax.tree_util.tree_leaves(checkpoint.restore(d)[1].params)
                      for d in (a, c))):
        np.testing.assert_array_equal(x, y)
