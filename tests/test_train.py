"""The training programs: ``train(key)`` is one compilation; the programs the CLI ships
(``ppo_jax.run.programs``) hold no host callback, are each compiled once and give what
``train(key)`` gives; determinism, vmapped seeds == seeds one by one, the NaN guard."""

import time

import jax
import jax.numpy as jnp
from jax.extend import core as jcore
import numpy as np
import pytest

from ppo_jax.run import programs, runner
from ppo_jax.config import PPOConfig
from ppo_jax.run.runs import Runs
from ppo_jax.core.optim import cosine_phase_step, lr_at_batch
from ppo_jax.run.metrics import PER_BATCH
from ppo_jax.core.train import make_train

# conftest's tiny_config (module level here), evaluated by the evaluate program wherever the
# programs run (on a CPU that is what "auto" does; beside a GPU it would evaluate on the host)
TINY = PPOConfig.from_preset("tiny").replace(eval_sim="mjx")


@pytest.fixture(scope="module")
def trainer():
    return make_train(TINY)


def _count_lowerings():
    events = []

    def listener(event, duration, **kw):
        # one lowering to an XLA module per compiled program (whether the backend compile
        # then runs or the persistent cache answers)
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            events.append(duration)

    return events, listener


SEEDS = 2  # the whole run, vmapped over the keys of seeds 0 and 1


@pytest.fixture(scope="module")
def compiled(trainer):
    """``train`` vmapped over two seeds' keys (those a 2-seed job gives its runs), compiled
    once for the module, with the number of XLA lowerings it took: ``(fn, keys, (states,
    metrics), lowerings)``, every leaf with a leading seed axis."""
    keys = jax.block_until_ready(Runs(TINY, num_seeds=SEEDS).keys())
    events, listener = _count_lowerings()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fn = jax.jit(jax.vmap(trainer.train))
        out = fn(keys)
        jax.block_until_ready(out)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return fn, keys, out, len(events)


def seed(tree, s: int):
    """Seed ``s``'s slice of a vmapped result."""
    return jax.tree_util.tree_map(lambda x: x[s], tree)


@pytest.fixture(scope="module")
def shipped(trainer):
    """The CLI's path for one seed: programs from ``programs.build_programs`` driven by
    ``runner.train_batches``, exactly as ``scripts/train.py`` runs them."""
    job = runner.prepare(Runs(TINY))
    runner.train_batches(job)
    return job


@pytest.mark.gpu
def test_whole_run_is_one_compilation(compiled):
    """``train(key)`` is one program, and vmapped over keys still one: the whole run of every
    seed (init, every batch's collection, update and evaluation) in one XLA module."""
    fn, keys, _, n_compiles = compiled
    assert n_compiles == 1
    fn(keys + 7)  # other keys: no new compilation of train
    assert fn._cache_size() == 1


def test_one_seed_is_one_program(trainer):
    """``train(key)`` itself (not vmapped) lowers to one XLA module with ``[num_batches]``
    metrics (lowered, not compiled: the vmapped program above is the one the module runs)."""
    key = jax.random.PRNGKey(0)  # made first: its own eager ops are not train's lowering
    events, listener = _count_lowerings()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        lowered = jax.jit(trainer.train).lower(key)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(events) == 1
    state, m = lowered.out_info
    assert m.batch.reward.shape == (TINY.num_batches,) and state.batches_done.shape == ()


def _scans(jaxpr, depth=0):
    """Every scan in ``jaxpr`` (its sub-programs included), as ``(depth, eqn)``: depth counts
    the scans around it."""
    for eqn in jaxpr.eqns:
        inner = depth + (eqn.primitive.name == "scan")
        if eqn.primitive.name == "scan":
            yield depth, eqn
        for sub in jcore.jaxprs_in_params(eqn.params):
            yield from _scans(sub, inner)


def _scan_xs(eqn):
    """The avals of what a scan equation scans over (its inputs after consts and carry)."""
    p = eqn.params
    if "num_consts" in p:
        first = p["num_consts"] + p["num_carry"]
    else:  # JAX >= 0.11: ft_in groups the inputs as (consts, carry, xs)
        consts, carry, _ = p["ft_in"].unpack()
        first = len(consts) + len(carry)
    return [v.aval for v in eqn.invars[first:]]


def test_minibatches_are_gathered_in_their_own_step(trainer, shipped):
    """The update's minibatch loop (the scan inside the epochs' scan) takes only each
    minibatch's rows and key, and gathers the minibatch from the flat batch in its step: no
    [M, B, ...] copy of the batch per epoch to slice (on a GPU a scan's slice of its input is
    a copy launched from the host, which keeps the loop out of a CUDA graph)."""
    s = shipped.states
    one = jax.tree_util.tree_map(lambda x: x[0], s)
    _, batch = trainer.collect(one.params, one.obs_stats, one.env_state, jax.random.PRNGKey(1))
    closed = jax.make_jaxpr(trainer.update)(one.params, one.opt_state, batch,
                                            jax.random.PRNGKey(2), one.hyper)
    # inside the epochs' scan: GAE's (backwards in time) and the minibatches'
    inner = [e for d, e in _scans(closed.jaxpr) if d == 1 and not e.params["reverse"]]
    cfg = trainer.config
    assert [e.params["length"] for e in inner] == [cfg.num_minibatches]
    xs = _scan_xs(inner[0])
    assert [x.shape[0] for x in xs] == [cfg.num_minibatches] * len(xs)
    assert sum(int(np.prod(x.shape)) for x in xs) <= cfg.num_minibatches * (
        cfg.minibatch_size + 2)  # the rows, and a key per minibatch


def _num_carry(eqn) -> int:
    p = eqn.params
    if "num_carry" in p:
        return p["num_carry"]
    _, carry, _ = p["ft_in"].unpack()  # JAX >= 0.11
    return len(carry)


def _rows_written_in_place(eqn) -> list[str]:
    """For each row a scan stacks: how its step computes it. ``in_place``'s rows are a
    ``select_n`` on a predicate that comes out of an optimization barrier."""
    body = eqn.params["jaxpr"].jaxpr
    producer = {v: e for e in body.eqns for v in e.outvars}
    found = []
    for y in body.outvars[_num_carry(eqn):]:
        e = producer.get(y)
        if e is None or e.primitive.name != "select_n":
            found.append(e.primitive.name if e is not None else "an input")
            continue
        pred = e.invars[0]
        while pred in producer and producer[pred].primitive.name in (
                "broadcast_in_dim", "convert_element_type", "reshape"):
            pred = producer[pred].invars[0]
        found.append("in place" if pred in producer
                     and producer[pred].primitive.name == "optimization_barrier"
                     else "select_n on another predicate")
    return found


def test_stacked_rows_are_written_in_place(trainer, shipped):
    """Every row that the collection's and GAE's loops stack is computed where it is written
    (``ppo_jax.core.inplace``), not copied from a buffer the step also uses: on a GPU such a
    copy is launched from the host at every step, and keeps the loop out of a CUDA graph."""
    one = jax.tree_util.tree_map(lambda x: x[0], shipped.states)
    closed = jax.make_jaxpr(trainer.collect)(one.params, one.obs_stats, one.env_state,
                                             jax.random.PRNGKey(1))
    outer = [e for d, e in _scans(closed.jaxpr) if d == 0]
    assert len(outer) == 1
    rows = _rows_written_in_place(outer[0])
    assert len(rows) == 8 and set(rows) == {"in place"}, rows  # the Transition's fields
    _, batch = trainer.collect(one.params, one.obs_stats, one.env_state, jax.random.PRNGKey(1))
    closed = jax.make_jaxpr(trainer.advantages)(one.params.critic, batch, one.hyper)
    (gae,) = [e for _, e in _scans(closed.jaxpr) if e.params["reverse"]]
    assert _rows_written_in_place(gae) == ["in place"]


def test_in_place_keeps_every_bit():
    """``in_place`` changes no value: NaN payloads, signed zeros, infinities, integer
    extremes and booleans come out as they went in, jitted or not."""
    from ppo_jax.core.inplace import in_place

    f32 = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, 3.4e38], np.float32)
    nans = np.array([0x7FC00001, 0xFFC12345, 0x7F800001], np.uint32).view(np.float32)
    tree = {"f": np.concatenate([f32, nans]), "i": np.array([-2**31, -1, 0, 2**31 - 1], np.int32),
            "b": np.array([True, False]), "none": None}
    for fn in (in_place, jax.jit(in_place)):
        out = fn(tree)
        assert out["none"] is None
        for k in ("f", "i", "b"):
            got = np.asarray(out[k])
            assert got.dtype == tree[k].dtype
            assert got.tobytes() == tree[k].tobytes(), k


def test_documented_metrics(compiled):
    _, _, out, _ = compiled
    for s in range(SEEDS):
        state, m = seed(out, s)
        scalars = m.batch.scalars()
        assert set(scalars) == set(PER_BATCH) | {"finite"}  # metrics.json's per-batch lists
        for name, value in scalars.items():
            assert value.shape == (TINY.num_batches,), name
        # i % eval_every == 0 (the tutorial's), and the last batch
        np.testing.assert_array_equal(m.evaluated, [True, False, True])
        assert np.all(np.asarray(m.eval.eval_return)[[0, 2]] > 0)
        assert np.all(np.asarray(m.eval.eval_return)[1] == 0)  # no evaluation after batch 1
        assert np.all(np.asarray(m.batch.finite))
        # cosine annealing per batch: lr(i) = lr0 (1 + cos(pi i / n)) / 2
        expected = 3e-4 * 0.5 * (1 + np.cos(np.pi * np.arange(3) / 3))
        np.testing.assert_allclose(m.batch.lr, expected, rtol=1e-6)
        assert int(state.batches_done) == TINY.num_batches and int(state.failed_batch) == -1
        # Adam ran num_epochs * num_minibatches updates per batch
        counts = [int(x) for x in jax.tree_util.tree_leaves(state.opt_state)
                  if jnp.ndim(x) == 0 and jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer)]
        assert TINY.num_batches * TINY.num_epochs * TINY.num_minibatches in counts
    assert TINY.replace(total_frames=800).eval_batches == (0, 2, 3)


def _shipped_names(job) -> list[str]:
    """The programs the CLI builds: on an accelerator the statistics' own first."""
    own = ["stats"] if programs.host_statistics(job.trainer) else []
    return own + ["init", "update", "evaluate"]


def _has_host_callback(compiled) -> bool:
    return "callback" in compiled.as_text()


@pytest.mark.gpu
def test_shipped_programs_hold_no_host_callback(shipped):
    """The executables the CLI runs (compiled here, or loaded from the program store) hold
    no host callback, so JAX's persistent cache keeps them."""
    names = [i.name for i in shipped.programs.infos]
    assert names == _shipped_names(shipped)
    for name in names:
        compiled = getattr(shipped.programs, name)
        assert not _has_host_callback(compiled), name

    # the check can fail: a program with a progress callback is caught
    def with_callback(x):
        jax.debug.callback(lambda r: None, x)
        return x + 1

    assert _has_host_callback(jax.jit(with_callback).lower(jnp.ones(3)).compile())


def _assert_job_equals_train(job, out, s: int) -> None:
    """The CLI's programs (``job``: one run, seed ``s``) give what seed ``s`` of the
    vmapped ``train`` gives."""
    state, m = seed(out, s)
    h = job.log.history
    assert h["batch"] == [0, 1, 2] and h["eval_frames"] == [[200, 600]]
    np.testing.assert_allclose(h["reward"][0], m.batch.reward, rtol=1e-5)
    np.testing.assert_allclose(h["eval_return"][0], np.asarray(m.eval.eval_return)[[0, 2]],
                               rtol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(job.states.params),
                    jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
def test_shipped_programs_compile_once_and_equal_train(shipped, compiled):
    # each program was compiled (or loaded) once, and run every batch
    assert [i.name for i in shipped.programs.infos] == _shipped_names(shipped)
    _assert_job_equals_train(shipped, compiled[2], 0)


def test_same_key_same_bits(compiled):
    fn, keys, out, _ = compiled
    again = fn(keys)
    for a, b in zip(jax.tree_util.tree_leaves((out[0].params, out[1])),
                    jax.tree_util.tree_leaves((again[0].params, again[1]))):
        np.testing.assert_array_equal(a, b)


def test_vmapped_seeds_equal_seeds_one_by_one(compiled, shipped):
    """Each seed of the vmapped ``train`` is the run of that seed alone (the CLI's one-run
    programs, which the seed does not change: seed 1 runs the programs seed 0 ran)."""
    for s in range(1, SEEDS):
        said = []
        job = runner.prepare(Runs(TINY.replace(seed=s)), announce=said.append)
        assert {info.source for info in job.programs.infos} == {"in_process"}
        assert any(m.startswith("reusing the training programs") and
                   m.endswith("compiled earlier in this process") for m in said), said
        runner.train_batches(job)
        _assert_job_equals_train(job, compiled[2], s)


def test_nan_keeps_last_good_state(shipped):
    """A non-finite batch (the CLI's update program): the state keeps its last good
    parameters, Adam state and batch count, and the run stays stopped at that batch."""
    run = shipped
    states, _ = programs.run_init(run.programs, run.trainer, run.runs)
    bad = states.replace(obs_stats=states.obs_stats.replace(
        scale=states.obs_stats.scale.at[0, 0].set(jnp.nan)))
    before = jax.device_get((bad.params, bad.opt_state, bad.batches_done))  # (donated below)
    rate = cosine_phase_step(run.trainer.config)
    after, m = run.programs.update(bad, np.int32(4), rate)
    assert not bool(m.finite[0]) and int(after.failed_batch[0]) == 4
    assert int(after.batches_done[0]) == int(before[2][0])
    for a, b in zip(jax.tree_util.tree_leaves((after.params, after.opt_state)),
                    jax.tree_util.tree_leaves(before[:2])):
        np.testing.assert_array_equal(a, b)
    again, m2 = run.programs.update(after, np.int32(5), rate)
    assert int(again.failed_batch[0]) == 4 and not bool(m2.finite[0])


def test_the_run_length_is_an_input_of_the_programs(shipped):
    """A run of another length (and evaluation schedule) uses the same compiled programs:
    the lr schedule's phase step is an input of ``update``, and the learning rates it gives
    are bit for bit those of a program with the length baked in as a constant."""
    longer = runner.prepare(Runs(TINY.replace(total_frames=40 * TINY.frames_per_batch,
                                              eval_every=7)))
    assert {info.source for info in longer.programs.infos} == {"in_process"}
    lr = np.float32(TINY.lr)
    for n in (3, 10, 61, 200, 977, 1000, 1953, 4882):
        cfg = TINY.replace(total_frames=n * TINY.frames_per_batch)
        b = np.arange(n + 1, dtype=np.int32)
        baked = jax.jit(lambda b, lr: lr * 0.5 * (
            1.0 + jnp.cos(jnp.pi * (b.astype(jnp.float32) / n))))(b, lr)  # noqa: B023
        traced = jax.jit(lambda b, lr, r: lr_at_batch(cfg, b, lr, r))(  # noqa: B023
            b, lr, cosine_phase_step(cfg))
        np.testing.assert_array_equal(traced, baked, err_msg=f"{n} batches")


def test_fixed_statistics_stay_fixed(shipped):
    """The tutorial's statistics (``obs_norm`` reference, as safe): set at init, never
    updated, and no moments carried."""
    run = shipped
    start, _ = programs.run_init(run.programs, run.trainer, run.runs)
    assert run.states.obs_moments is None and int(run.states.batches_done[0]) == 3
    for a, b in zip(jax.tree_util.tree_leaves(run.states.obs_stats),
                    jax.tree_util.tree_leaves(start.obs_stats)):
        np.testing.assert_array_equal(a, b)


def test_a_gpu_job_draws_its_statistics_on_the_host(shipped, monkeypatch):
    """The CLI's path where the job trains on an accelerator (``host_statistics``, forced
    here): a ``stats`` program on the host's CPU, whose moments ``init`` takes; the first
    states are bit for bit the CPU job's, and the start-up record says what the host spent."""
    if programs.host_statistics(shipped.trainer):
        pytest.skip("here every job draws them on the host (the shipped one too)")
    monkeypatch.setattr(programs, "host_statistics", lambda trainer: True)
    job = runner.prepare(Runs(TINY))
    assert [i.name for i in job.programs.infos] == ["stats", "init", "update", "evaluate"]
    assert {i.source for i in job.programs.infos[2:]} == {"in_process"}  # shipped's
    assert job.log.startup["host_stats_s"] > 0
    assert job.programs.modules["init"] != shipped.programs.modules["init"]
    own, _ = programs.run_init(shipped.programs, shipped.trainer, shipped.runs)
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(job.states)),
                    jax.tree_util.tree_leaves(jax.device_get(own))):
        np.testing.assert_array_equal(a, b)


def test_running_statistics_take_in_each_batch():
    """``obs_norm="running"``: a batch acts and trains with the statistics so far; after its
    update its observations join the moments (the random rollouts' first), and the next
    batch and the evaluation act with the safe statistics of all of them."""
    from ppo_jax.core.hyper import hyper_of
    from ppo_jax.core.normalization import merge, moments_of, normalize, stats_from_moments

    cfg = TINY.replace(obs_norm="running")
    tr = make_train(cfg)
    state = jax.jit(tr.init)(jax.random.PRNGKey(5), hyper_of(cfg))
    count = float(state.obs_moments.count)
    assert count >= cfg.init_stats_frames
    first = stats_from_moments(state.obs_moments, "running")  # eager: rounding apart
    np.testing.assert_allclose(state.obs_stats.scale, first.scale, rtol=1e-6)
    _, k_col, _ = jax.random.split(state.key, 3)  # update_step's collection key
    _, batch = jax.jit(tr.collect)(state.params, state.obs_stats, state.env_state, k_col)
    np.testing.assert_allclose(batch.obs, normalize(state.obs_stats, batch.raw_obs),
                               rtol=1e-6, atol=1e-6)
    new, m = jax.jit(tr.update_step)(state, jnp.int32(0))
    assert bool(m.finite)
    want = merge(state.obs_moments, moments_of(batch.raw_obs.reshape(-1, batch.obs.shape[-1])))
    assert float(new.obs_moments.count) == count + cfg.frames_per_batch
    np.testing.assert_allclose(new.obs_moments.mean, want.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.obs_moments.m2, want.m2, rtol=1e-5)
    now = stats_from_moments(new.obs_moments, "running")
    np.testing.assert_allclose(new.obs_stats.scale, now.scale, rtol=1e-6)
    np.testing.assert_allclose(new.obs_stats.loc, now.loc, rtol=1e-6, atol=1e-6)
    assert not np.allclose(now.scale, first.scale)


def test_seed_keys_are_the_documented_ones():
    keys = Runs(TINY.replace(seed=3), num_seeds=2).keys()
    np.testing.assert_array_equal(keys[1], jax.random.PRNGKey(4))


def test_checkpoint_metrics_count_the_time_so_far(shipped):
    """The metrics.json a checkpoint writes mid-run reports the seconds trained up to it (not
    only the initialization's), so its frames/s is the run's so far."""
    job = runner.prepare(Runs(TINY))
    init_seconds = job.log.run_seconds
    seen = []

    def on_checkpoint(j):
        time.sleep(0.3)  # a slow save: counted in the next interval, not lost
        seen.append((j.log.run_seconds, j.log.frames_trained, j.log.summary()["frames_per_second"]))

    runner.train_batches(job, checkpoint_every=1, on_checkpoint=on_checkpoint)
    assert [f for _, f, _ in seen] == [200, 400]
    (s1, _, fps1), (s2, _, _) = seen
    assert init_seconds < s1
    assert fps1 == pytest.approx(200 / s1, rel=1e-3)
    # each save's sleep is in the next interval: the second checkpoint's, and the total
    assert s2 >= s1 + 0.3 and job.log.run_seconds >= s2 + 0.3


@pytest.mark.parametrize("overrides,num_runs", [
    ({}, 1),
    (dict(obs_norm="running"), 2),  # the moments are part of the state
    (dict(env="HalfCheetah-v4", hidden_sizes=(8,)), 2),
])
def test_state_shapes_are_those_init_makes(tiny_config, overrides, num_runs):
    """A restore and the programs' inputs take the state's shapes without tracing the
    statistics' rollouts: the same shapes, dtypes and structure as the whole ``init``
    (rollouts included) makes, and the moments' as the ``stats`` program returns them."""
    trainer = make_train(tiny_config.replace(**overrides))
    keys = jax.ShapeDtypeStruct((num_runs, 2), jnp.uint32)
    traced = jax.eval_shape(lambda k: programs.init_runs(
        trainer, k, programs.config_hypers(trainer, num_runs)), keys)
    shapes = programs.state_shapes(trainer, num_runs)
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(traced)
    assert jax.tree_util.tree_leaves(shapes) == jax.tree_util.tree_leaves(traced)
    assert (jax.tree_util.tree_leaves(jax.eval_shape(lambda k: programs.stats_runs(trainer, k),
                                                     keys))
            == jax.tree_util.tree_leaves(jax.eval_shape(
                lambda k: programs.moments_shapes(trainer, k), keys)))
