"""The training program: one compilation, documented metrics, nothing crosses to the host
inside the run, determinism, vmapped seeds == seeds one by one, the NaN guard."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.config import PPOConfig
from ppo_jax.train import BatchMetrics, make_train, seed_keys

TINY = PPOConfig(
    total_frames=600, frames_per_batch=200, num_envs=2, minibatch_size=50, num_epochs=2,
    hidden_sizes=(16, 16), eval_every=2, eval_max_steps=50, init_stats_frames=100,
)


@pytest.fixture(scope="module")
def trainer():
    return make_train(TINY)


@pytest.fixture(scope="module")
def compiled(trainer):
    """``train`` compiled once for the module, with the number of XLA compilations it took."""
    key = jax.random.PRNGKey(0)
    events = []

    def listener(event, duration, **kw):
        # one lowering to an XLA module per compiled program (whether the backend compile
        # then runs or the persistent cache answers)
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fn = jax.jit(trainer.train)
        out = fn(key)
        jax.block_until_ready(out)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return fn, out, len(events)


def test_whole_run_is_one_compilation(compiled):
    fn, _, n_compiles = compiled
    assert n_compiles == 1
    fn(jax.random.PRNGKey(7))  # another key: no new compilation
    assert fn._cache_size() == 1


def test_documented_metrics(compiled):
    _, (state, m), _ = compiled
    names = {f.name for f in dataclasses.fields(BatchMetrics)}
    assert {"reward", "step_count", "lr", "loss_objective", "loss_critic", "loss_entropy",
            "clip_fraction", "kl_approx", "eval_return", "eval_steps"} <= names
    for name in names:
        assert getattr(m, name).shape == (TINY.num_batches,), name
    np.testing.assert_array_equal(m.evaluated, [True, False, True])  # i % eval_every == 0
    assert np.all(np.asarray(m.eval_return)[[0, 2]] > 0)
    assert np.all(np.asarray(m.finite))
    # cosine annealing per batch: lr(i) = lr0 (1 + cos(pi i / n)) / 2
    expected = 3e-4 * 0.5 * (1 + np.cos(np.pi * np.arange(3) / 3))
    np.testing.assert_allclose(m.lr, expected, rtol=1e-6)
    assert int(state.batches_done) == TINY.num_batches and int(state.failed_batch) == -1
    # Adam ran num_epochs * num_minibatches updates per batch
    counts = [int(x) for x in jax.tree_util.tree_leaves(state.opt_state) if jnp.ndim(x) == 0
              and jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer)]
    assert TINY.num_batches * TINY.num_epochs * TINY.num_minibatches in counts


def test_no_host_transfer_inside_the_run(compiled):
    fn, _, _ = compiled
    key = jax.device_put(jax.random.PRNGKey(3))
    with jax.transfer_guard("disallow"):
        out = fn(key)
        jax.block_until_ready(out)


def test_progress_callback_is_the_only_host_traffic(trainer):
    calls = []

    def progress(i, reward, *rest):
        calls.append(int(i))

    keys = jax.device_put(seed_keys(0, 1))
    program = jax.jit(lambda k: trainer.train_many(k, progress))
    with jax.transfer_guard("disallow"):
        states, m = program(keys)
        jax.block_until_ready(m)
    assert calls == list(range(TINY.num_batches))
    assert m.reward.shape == (TINY.num_batches, 1)


def test_same_key_same_bits(compiled):
    fn, (state, m), _ = compiled
    state2, m2 = fn(jax.random.PRNGKey(0))
    for a, b in zip(jax.tree_util.tree_leaves((state.params, m)),
                    jax.tree_util.tree_leaves((state2.params, m2))):
        np.testing.assert_array_equal(a, b)


def test_vmapped_seeds_equal_seeds_one_by_one(compiled, trainer):
    fn, _, _ = compiled
    keys = jax.random.split(jax.random.PRNGKey(11), 2)
    states, ms = jax.jit(jax.vmap(trainer.train))(keys)
    for s in range(2):
        single, m1 = fn(keys[s])
        np.testing.assert_allclose(ms.reward[s], m1.reward, rtol=1e-5)
        np.testing.assert_allclose(ms.eval_return[s], m1.eval_return, rtol=1e-4)
        for a, b in zip(jax.tree_util.tree_leaves(states.params),
                        jax.tree_util.tree_leaves(single.params)):
            np.testing.assert_allclose(a[s], b, rtol=1e-4, atol=1e-6)


def test_nan_keeps_last_good_state(trainer):
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    bad = state.replace(obs_stats=state.obs_stats.replace(
        scale=state.obs_stats.scale.at[0].set(jnp.nan)))
    step = jax.jit(trainer.batch_step)
    after, m = step(bad, jnp.int32(4))
    assert not bool(m.finite) and int(after.failed_batch) == 4
    assert int(after.batches_done) == int(bad.batches_done)
    for a, b in zip(jax.tree_util.tree_leaves((after.params, after.opt_state)),
                    jax.tree_util.tree_leaves((bad.params, bad.opt_state))):
        np.testing.assert_array_equal(a, b)
    # and the run stays stopped at that batch
    again, m2 = step(after, jnp.int32(5))
    assert int(again.failed_batch) == 4 and not bool(m2.finite)
