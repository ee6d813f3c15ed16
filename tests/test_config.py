"""PPOConfig: tutorial defaults, derived sizes, one-line errors for sizes that do not fit."""

import dataclasses
import json

import numpy as np
import pytest

from ppo_jax.cli import common as cli
from ppo_jax.config import PPOConfig, field_choices, field_types
from ppo_jax.core.train import make_train


def test_defaults_are_the_tutorial():
    c = PPOConfig()
    assert (c.frames_per_batch, c.total_frames, c.num_epochs, c.minibatch_size) == (1000, 10_000, 10, 64)
    assert (c.clip_epsilon, c.gamma, c.lmbda, c.entropy_coeff, c.lr, c.max_grad_norm) == (
        0.2, 0.99, 0.95, 1e-4, 3e-4, 1.0)
    assert c.hidden_sizes == (256, 256, 256) and c.num_envs == 1
    assert c.num_batches == 10 and c.num_minibatches == 15 and c.steps_per_env == 1000
    # the tutorial's i % 10 == 0, plus the last batch (the final policy is always evaluated)
    assert c.eval_batches == (0, 9)
    full = PPOConfig(total_frames=1_000_000)
    assert full.eval_batches[:3] == (0, 10, 20) and full.eval_batches[-2:] == (990, 999)
    assert [i for i in range(1000) if full.is_eval_batch(i)] == list(full.eval_batches)
    assert PPOConfig(eval_every=0).eval_batches == () and not PPOConfig(eval_every=0).is_eval_batch(0)


def test_every_field_is_documented():
    for f in dataclasses.fields(PPOConfig):
        assert f.metadata.get("doc"), f.name


@pytest.mark.parametrize("kwargs, words", [
    (dict(minibatch_size=2000), "larger than the batch"),
    (dict(num_envs=3), "multiple of num_envs"),
    (dict(total_frames=1500), "multiple of frames_per_batch"),
    (dict(obs_norm="maybe"), "obs_norm"),
    (dict(num_envs=0), "num_envs"),
    (dict(gamma=1.5), "gamma"),
    (dict(seed=-(2**31) - 1), r"seed must be in \[-2147483648, 4294967295\]"),
    (dict(seed=2**32), "seed must be in"),
    (dict(eval_max_steps=2**31), "eval_max_steps must be at most 2147483647"),
    (dict(max_episode_steps=3_000_000_000), "max_episode_steps must be at most"),
    (dict(total_frames=200 * 2**31, frames_per_batch=200),
     "total_frames / frames_per_batch must be at most 2147483647"),
    (dict(hidden_sizes=(2**31,)), "hidden_sizes must be at most"),
    (dict(init_stats_frames=1), "init_stats_frames must be >= 2"),  # NaN statistics else
    (dict(sampler="torchrl", total_frames=1000 * 2**24),
     r"the optimizer counts the run's updates in int32 \(as sampler 'torchrl' its "
     r"minibatches\): num_batches x num_epochs x minibatches per epoch must be at most "
     r"2147483647, got 2516582400"),
    # optax's update count (int32) overflowed while tracing (2**20 epochs of 4096
    # minibatches), or stopped counting over a long run: its learning rates stalled
    (dict(num_epochs=2**20, minibatch_size=1, frames_per_batch=4096, num_envs=4,
          total_frames=4096), "the optimizer counts the run's updates in int32"),
    (dict(total_frames=1000 * 2**24), "got 2516582400"),
    # the statistics' random rollouts: up to n + min(n, time limit) - 1 steps, in int32
    (dict(init_stats_frames=2**31 - 1), "init_stats_frames=2147483647 takes random rollouts "
     "of up to init_stats_frames \+ min\(init_stats_frames, max_episode_steps\) - 1 = "
     "4294967293 steps, counted in int32"),
    (dict(init_stats_frames=2**31 - 1, max_episode_steps=1000), "= 2147484646 steps"),
    # a whole float of 1e300 is an int of 301 digits: its bound, shown short, comes first
    (dict(total_frames=1e300),
     r"^total_frames / frames_per_batch must be at most 2147483647, got 1\.000e\+297$"),
    (dict(total_frames=10**400),
     r"^total_frames / frames_per_batch must be at most 2147483647, got 1\.000e\+397$"),
])
def test_errors(kwargs, words):
    with pytest.raises(ValueError, match=words) as e:
        PPOConfig(**kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(num_envs=2.5), "num_envs must be a whole number, got 2.5"),
    (dict(seed=1.5), "seed must be a whole number, got 1.5"),
    (dict(num_envs=True), "num_envs must be a whole number, got True"),
    (dict(total_frames=float("inf")), "total_frames must be a whole number, got inf"),
    (dict(eval_every="10"), "eval_every must be a whole number, got '10'"),
    (dict(hidden_sizes=(8.7,)), "hidden_sizes must be a sequence of whole-number layer widths"),
    (dict(hidden_sizes=8),
     r"hidden_sizes must be a sequence of layer widths, e\.g\. \(64, 64\), got 8"),
    (dict(hidden_sizes="64"), "hidden_sizes must be a sequence of layer widths"),
    (dict(hidden_sizes=np.array(64)), "hidden_sizes must be a sequence of layer widths"),
    (dict(hidden_sizes={64, 32}), "hidden_sizes must be a sequence of layer widths"),
    (dict(eval_action=np.array("mean")), "eval_action must be a string, got array"),
    (dict(env=None), "env must be a string, got None"),
    (dict(lr="1e-3"), "lr must be a number, got '1e-3'"),
    (dict(gamma=None), "gamma must be a number, got None"),
    (dict(lr=10**400), r"lr must be a number a float holds \(at most 1.8e308\)"),
    (dict(anneal_lr=1), "anneal_lr must be True or False, got 1"),
    (dict(standardize_advantage="yes"), "standardize_advantage must be True or False"),
])
def test_a_value_of_another_type_is_refused(kwargs, words):
    """Each field takes its own type, in one line otherwise: a fractional count is not
    truncated, a string is not a number, 1 is not True."""
    with pytest.raises(ValueError, match=words) as e:
        PPOConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_numbers_of_numpy_and_whole_floats_become_the_field_s_type():
    """``total_frames=1e4`` (a whole float), numpy scalars and 0-d arrays are taken, stored as
    the field's Python type (so the config serialises and keys programs as the plain
    values do)."""
    c = PPOConfig(total_frames=1e4, seed=np.uint32(5), lr=np.float32(0.5), gamma=np.array(0.9),
                  anneal_lr=np.bool_(False), hidden_sizes=[np.int64(8), 4.0],
                  eval_action=np.str_("tanh_loc"))
    assert (c.total_frames, c.seed, c.hidden_sizes, c.anneal_lr) == (10_000, 5, (8, 4), False)
    assert c.lr == 0.5 and c.gamma == float(np.array(0.9))
    assert PPOConfig(hidden_sizes=np.array([8, 4])).hidden_sizes == (8, 4)
    for name in ("total_frames", "seed", "lr", "gamma", "anneal_lr", "eval_action"):
        assert type(getattr(c, name)) is type(getattr(PPOConfig(), name)), name
    assert all(type(h) is int for h in c.hidden_sizes)
    assert PPOConfig(total_frames=10_000.0) == PPOConfig()
    assert json.loads(json.dumps(c.to_dict())) == c.to_dict()


def test_frozen_and_round_trip():
    c = PPOConfig(num_envs=4, frames_per_batch=4000, total_frames=8000, hidden_sizes=[32, 32])
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 1.0
    assert PPOConfig.from_dict(c.to_dict() | {"hidden_sizes": (32, 32)}) == c
    with pytest.raises(ValueError, match="^unknown PPOConfig field\\(s\\): 'nope'$"):
        PPOConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="^unknown PPOConfig field\\(s\\): 'nope', 1$"):
        PPOConfig.from_dict({1: 2, "nope": 1, "lr": 1e-3})  # (was a TypeError from a join)


def test_string_choices_come_from_the_literal_annotations():
    choices = field_choices()
    assert set(choices) == {"obs_norm", "eval_action", "critic_loss", "matmul_precision",
                            "eval_sim", "linalg", "sampler"}
    assert cli.CHOICES == choices
    parser = cli.ArgumentParser(prog="t")
    cli.add_config_flags(parser)
    for name, allowed in choices.items():
        assert getattr(PPOConfig(), name) in allowed and field_types()[name] is str
        for value in allowed:
            assert getattr(PPOConfig(**{name: value}), name) == value
            assert getattr(parser.parse_args([cli.flag(name), value]), name) == value
        with pytest.raises(ValueError, match=name):
            PPOConfig(**{name: "nope"})
        with pytest.raises(SystemExit):
            parser.parse_args([cli.flag(name), "nope"])


def test_the_largest_values_are_accepted():
    """Seeds and counts at their bounds: a 32-bit seed, int32 counts."""
    assert PPOConfig(seed=2**32 - 1).seed == 2**32 - 1
    c = PPOConfig(total_frames=1000 * (2**31 - 1), eval_every=2**30, num_epochs=1,
                  minibatch_size=1000)  # (one update a batch: the optimizer's count holds)
    assert c.num_batches == 2**31 - 1 and c.evaluates
    assert PPOConfig(init_stats_frames=2**31 - 1, max_episode_steps=1).init_stats_frames
    assert c.eval_batches == (0, 2**30, 2**31 - 2)
    assert not PPOConfig(eval_every=0).evaluates


@pytest.mark.parametrize("batches,every", [(1, 1), (1, 10), (10, 10), (11, 10), (21, 10),
                                            (7, 3), (9, 3), (100, 1), (5, 7)])
def test_eval_batches_are_every_kth_and_the_last(batches, every):
    c = PPOConfig(total_frames=1000 * batches, eval_every=every)
    want = sorted(set(range(0, batches, every)) | {batches - 1})
    assert list(c.eval_batches) == want
    assert [i for i in range(batches) if c.is_eval_batch(i)] == want


@pytest.mark.parametrize("kwargs, words", [
    (dict(lr=float("inf")), "lr must be finite"),
    (dict(entropy_coeff=float("nan")), "entropy_coeff must be finite"),
    (dict(critic_coeff=float("-inf")), "critic_coeff must be finite"),
    (dict(critic_coeff=-1.0), "critic_coeff must be >= 0"),
    (dict(clip_epsilon=1.5), "clip_epsilon must be at most 1"),
    (dict(clip_epsilon=float("inf")), "clip_epsilon must be at most 1"),
    # finite in float64, not in the programs' float32: inf there (lr 1e39 stopped the run
    # at NaN in its first batch), or 0
    (dict(lr=1e39), r"lr must be finite in float32, the programs' precision \(at most "
                    r"3.403e\+38\), got 1e\+39"),
    (dict(critic_coeff=1e39), "critic_coeff must be finite in float32"),
    (dict(entropy_coeff=-1e39), "entropy_coeff must be finite in float32"),
    (dict(lr=1e-46), r"lr must be > 0 in float32, the programs' precision \(at least "
                     r"1.401e-45\), got 1e-46"),
    (dict(clip_epsilon=1e-46), "clip_epsilon must be > 0 in float32"),
])
def test_values_a_new_job_cannot_learn_with(kwargs, words):
    """Refused for a new job (the CLI's config, a sweep's points, ``Runs``), while a saved
    config that holds one (its run stopped at NaN) still opens."""
    from ppo_jax.run.checkpoint import config_from_meta
    from ppo_jax.run.runs import Runs, parse_sweep

    config = PPOConfig(**kwargs)
    with pytest.raises(ValueError, match=words):
        config.check_values()
    with pytest.raises(ValueError, match=words):
        Runs(config)
    with pytest.raises(ValueError, match=words):  # the pure pieces too (it trained: a finite
        make_train(config)  # loss for clip_epsilon 5 on a CPU, where TorchRL's is NaN)
    with pytest.raises(cli.CLIError, match=words):
        cli.make_config(PPOConfig(), kwargs)
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=words):
        parse_sweep([f"{name}=0.5,{value}"], PPOConfig())
    assert config_from_meta({"config": config.to_dict()}) == config
    assert Runs.from_meta(config, {"num_seeds": 2}).num_runs == 2


def test_seeds_of_a_job_stay_32_bit():
    from ppo_jax.run.runs import Runs

    assert Runs(PPOConfig(seed=2**32 - 2), num_seeds=2).seed_of(1) == 2**32 - 1
    with pytest.raises(ValueError, match="go past 4294967295"):
        Runs(PPOConfig(seed=2**32 - 2), num_seeds=3)
    # a saved job is taken as it was; a negative seed is JAX's, the same as itself + 2**32
    assert Runs.from_meta(PPOConfig(seed=2**32 - 2), {"num_seeds": 3}).num_runs == 3
    from ppo_jax.run.runs import prng_key

    assert (prng_key(-1) == prng_key(2**32 - 1)).all()
