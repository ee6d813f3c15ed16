"""The library's six names at their edges: a wrong argument is one line (an exception whose
message names it) raised before anything is written or compiled, as the commands refuse their
flags; and what the API keeps matches what its docstrings say."""

import logging
import os
import shutil

import jax
import numpy as np
import pytest

from ppo_jax import PPOConfig, fit, load_policy, make_train, restore
from ppo_jax.run.checkpoint import CheckpointError

TINY = PPOConfig.from_preset("tiny")


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(config={"total_frames": 600}), TypeError,
     "config must be a PPOConfig, got dict (PPOConfig.from_dict makes one from a dict)"),
    (dict(config="tiny"), TypeError, "config must be a PPOConfig, got str"),
    (dict(devices=2.5), ValueError, "devices must be a whole number >= 1, 'all' or None, got 2.5"),
    (dict(devices=True), ValueError, "devices must be a whole number >= 1, 'all' or None"),
    (dict(devices="two"), ValueError, "devices must be a whole number >= 1, 'all' or None"),
    (dict(devices=[2]), ValueError, "devices must be a whole number >= 1, 'all' or None"),
    (dict(devices=np.array([2, 3])), ValueError, "devices must be a whole number >= 1"),
    (dict(devices=0), ValueError, "devices must be a whole number >= 1, 'all' or None"),
    (dict(keep=0), ValueError, "keep must be a whole number >= 1, got 0"),
    (dict(checkpoint_every=-1), ValueError, "checkpoint_every must be a whole number >= 0"),
    (dict(tensorboard="no"), TypeError, "tensorboard must be True or False, got 'no'"),
    (dict(tensorboard=None), TypeError, "tensorboard must be True or False, got None"),
    (dict(on_batch=5), TypeError, "on_batch must be a function or None, got 5"),
    (dict(on_eval="x"), TypeError, "on_eval must be a function or None"),
    (dict(host_evaluator="mujoco"), TypeError, "host_evaluator must be a function or None"),
    (dict(out=b"run"), TypeError, "out must be a path (a str or os.PathLike), got b'run'"),
    (dict(out=" "), ValueError, "out must not be empty (None writes nothing)"),
    (dict(out=os.fsdecode(b"run\xff")), ValueError, "is not valid UTF-8"),
    (dict(env="InvertedDoublePendulum-v4"), ValueError,
     "env takes an env object, got the id 'InvertedDoublePendulum-v4'"),
])
def test_a_wrong_fit_argument_is_one_line_before_anything_is_written(kwargs, error, words,
                                                                     tmp_path, monkeypatch):
    """Each was found after the compile, or not at all: ``devices=2.5`` trained on 2 devices,
    a non-UTF-8 ``out`` trained the whole run and then could not save it, ``on_batch=5``
    failed at the first batch, a config dict with an AttributeError."""
    monkeypatch.chdir(tmp_path)
    kwargs = {"config": TINY, "out": "run", **kwargs}
    with pytest.raises(error) as e:
        fit(kwargs.pop("config"), **kwargs)
    assert str(e.value).startswith(words) or words in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("config, words", [
    (TINY.replace(env="Foo-v0"), "unknown env 'Foo-v0'"),
    (TINY.replace(eval_sim="mujoco"), "eval_sim"),
])
def test_a_run_refused_after_its_out_was_made_leaves_no_folder(config, words, tmp_path,
                                                              monkeypatch):
    """Refusals that only the job's own checks see (the env, the evaluator) left the empty
    ``out`` that fit had made, and its parents; an ``out`` that existed stays."""
    monkeypatch.chdir(tmp_path)
    for out in (os.path.join("a", "b", "run"), "."):
        with pytest.raises(ValueError, match=words):
            fit(config, out=out)
        assert os.listdir(tmp_path) == []


def test_fit_refuses_a_tensorboard_file_before_compiling(tmp_path):
    """OUT/tensorboard that is a file was found at the first batch, as a NotADirectoryError."""
    (tmp_path / "tensorboard").write_bytes(b"mine")
    with pytest.raises(ValueError, match=r"tensorboard is not a directory, and the run writes "
                                         r"its TensorBoard events there: move it away, or pass "
                                         r"tensorboard=False$"):
        fit(TINY, out=str(tmp_path))
    assert os.listdir(tmp_path) == ["tensorboard"]


def test_make_train_and_from_dict_take_what_they_say():
    with pytest.raises(TypeError, match="config must be a PPOConfig, got dict"):
        make_train(TINY.to_dict())
    with pytest.raises(TypeError, match="PPOConfig.from_dict takes a dict of fields, got "
                                        "NoneType"):
        PPOConfig.from_dict(None)
    assert PPOConfig.from_dict(TINY.to_dict()) == TINY
    assert make_train().config == PPOConfig()  # None: the tutorial's, as fit's
    with pytest.raises(ValueError, match=r"^no preset 'huge' \(presets: tutorial, fast, tiny\)$"):
        PPOConfig.from_preset("huge")
    with pytest.raises(TypeError, match=r"^a preset is named by a str \(tutorial, fast, tiny\), "
                                        r"got \['tiny'\]$"):  # (was: unhashable type: 'list')
        PPOConfig.from_preset(["tiny"])


def test_fit_keeps_the_checkpoints_it_is_asked_to(tmp_path):
    """``keep`` (as ``--keep``): fit kept the last 3 whatever the run, and deleted the rest."""
    for keep, kept in ((1, ["3"]), (2, ["2", "3"])):  # (the run saves 3)
        out = str(tmp_path / f"keep{keep}")
        fit(TINY, out=out, checkpoint_every=1, keep=keep, tensorboard=False)
        assert sorted(os.listdir(os.path.join(out, "checkpoints")), key=int) == kept
        assert restore(out, step=int(kept[0]))[2]["checkpointing"]["keep"] == keep


def test_restore_and_load_policy_at_their_edges(tiny_run, tmp_path, caplog, monkeypatch):
    d = str(tmp_path / "run")
    shutil.copytree(tiny_run, d)
    monkeypatch.chdir(tmp_path)  # a relative path reads as the absolute one (orbax's need not)
    _, whole, _ = restore("run")
    _, part, _ = restore(os.path.join(".", "run", "checkpoints"), parts=["params"])
    for x, y in zip(*(jax.tree_util.tree_leaves(s.params) for s in (whole, part))):
        np.testing.assert_array_equal(x, y)
    assert load_policy("run")(np.zeros(11, np.float32)).shape == (1,)
    for call in (lambda: restore(d, env="InvertedDoublePendulum-v4"),
                 lambda: load_policy(d, env="InvertedDoublePendulum-v4")):
        with pytest.raises(CheckpointError, match="env takes the env object a run of your own "
                                                  "env was trained on, got the id"):
            call()
    for call in (lambda: restore(d, layout=3), lambda: make_train(TINY, layout=3)):
        with pytest.raises(TypeError, match=r"layout must be a ppo_jax.run.parallel.Layout "
                                            r"\(make_layout\) or None, got 3$"):
            call()
    with pytest.raises(ValueError, match=r"parts must be a collection of PPOState fields "
                                         r"\(e.g. \('params',\)\), got 'params'"):
        restore(d, parts="params")
    last = max((n for n in os.listdir(os.path.join(d, "checkpoints")) if n.isdigit()), key=int)
    with pytest.raises(CheckpointError, match=rf"checkpoints/{last} is checkpoint {last} of the "
                                              rf"run run: give the run's folder, run \(to read "
                                              rf"this checkpoint: --step {last}, or step="):
        load_policy(os.path.join("run", "checkpoints", last))  # (was: "no checkpoint in")
    # a numbered folder orbax did not write is passed over, without orbax's three warnings
    os.makedirs(os.path.join(d, "checkpoints", "9"))
    with caplog.at_level(logging.WARNING):
        policy = load_policy(d)
    assert "Metadata file does not exist" not in caplog.text
    obs = np.zeros(11, np.float32)
    assert policy(obs).shape == (1,)
    with pytest.raises(ValueError, match="the policy takes real observations "
                                         r"\(InvertedDoublePendulum-v4\), got complex ones"):
        policy(obs + 1j)
    assert policy(np.zeros((2, 3, 11))).shape == (2, 3, 1)  # any batch shape
    np.testing.assert_array_equal(policy(np.zeros((2, 3, 11)))[1, 2], policy(obs))
    with pytest.raises(ValueError, match=r"observations of shape \[11\], or a batch of them "
                                         r"\[\.\.\., 11\] \(InvertedDoublePendulum-v4\), got "
                                         r"shape \[11, 1\]$"):
        policy(np.zeros((11, 1)))
    for bad, n in ((np.full(11, np.nan), 11), (np.r_[np.zeros(10), 1e300], 1),
                   (np.r_[np.zeros(10), -np.inf], 1)):  # 1e300: inf in float32
        with pytest.raises(ValueError, match=rf"the policy takes finite observations "
                                             rf"\(InvertedDoublePendulum-v4\), got {n} NaN or "
                                             rf"infinite value\(s\) \(in float32\)$"):
            policy(bad)
