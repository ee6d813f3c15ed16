"""Videos rendered for real (MUJOCO_GL=osmesa, set in conftest.py): the traced episode is
the evaluation episode, frames have the right count and size and change as the pendulum
moves, .mp4 and .gif read back; no GL gives the one-line hint (and evaluate.py exits)."""

import os
import types

import imageio.v3 as iio
import jax
import mujoco
import numpy as np
import pytest

from ppo_jax.eval import evaluate, render
from ppo_jax.config import PPOConfig
from ppo_jax.eval.evaluate import make_policy, run_episode
from ppo_jax.core.normalization import ObsNormStats
from ppo_jax.core.train import make_train

MAX_STEPS = 50  # the tiny preset's: its programs are shared with other tests


# reading an .mp4 back starts ffmpeg as a subprocess: Python's warning about forking beside
# JAX's threads is harmless for an exec'd ffmpeg (the library's own writer says the same)
READ_MP4 = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


@pytest.fixture(scope="module")
def policy_state():
    """An untrained 16x16 policy (it lets the pendulum fall: the frames must show that)."""
    trainer = make_train(PPOConfig.from_preset("tiny", eval_max_steps=MAX_STEPS))
    params = trainer.init_params(jax.random.PRNGKey(0))
    n = trainer.env.observation_size
    stats = ObsNormStats(loc=jax.numpy.zeros(n), scale=jax.numpy.ones(n))
    state = types.SimpleNamespace(params=params, obs_stats=stats,
                                  eval_key=jax.random.PRNGKey(7), batches_done=np.int32(1))
    return trainer, state


@pytest.fixture(scope="module")
def trace(policy_state):
    trainer, state = policy_state
    return evaluate.trace_policy(trainer, state, jax.random.PRNGKey(3), MAX_STEPS)


def test_trace_is_the_evaluation_episode(policy_state, trace):
    trainer, state = policy_state
    policy = make_policy(trainer.actor_apply, state.params.actor, state.obs_stats, "mean")
    res = jax.jit(lambda k: run_episode(trainer.env, policy, k, MAX_STEPS))(
        jax.random.PRNGKey(3))
    assert 5 < int(trace.length) < MAX_STEPS, "the untrained policy should fall mid-episode"
    assert int(trace.length) == int(res.length)
    np.testing.assert_allclose(trace.episode_return, res.episode_return, rtol=1e-5)
    n = int(trace.length)
    assert trace.qpos.shape == (MAX_STEPS + 1, 3) and trace.reward.shape == (MAX_STEPS,)
    np.testing.assert_array_equal(trace.qpos[n:], np.broadcast_to(trace.qpos[n], (MAX_STEPS + 1 - n, 3)))
    assert np.all(trace.reward[n:] == 0)


def test_trace_stops_at_the_episode_s_end_and_the_env_s_time_limit(policy_state, trace):
    """A step limit far past the env's time limit (1,000 steps) asks for no more rows than
    the env can have, and the loop stops at the episode's end: the same episode, row for
    row."""
    trainer, state = policy_state
    long = evaluate.trace_policy(trainer, state, jax.random.PRNGKey(3), 10**9)
    limit = trainer.env.max_episode_steps
    assert long.qpos.shape == (limit + 1, 3) and long.reward.shape == (limit,)
    n = int(trace.length)
    assert int(long.length) == n
    np.testing.assert_array_equal(long.qpos[:n + 1], trace.qpos[:n + 1])
    np.testing.assert_array_equal(long.qvel[:n + 1], trace.qvel[:n + 1])
    np.testing.assert_array_equal(long.reward[:n], trace.reward[:n])
    np.testing.assert_array_equal(long.qpos[n:], np.broadcast_to(trace.qpos[n], (limit + 1 - n, 3)))


def test_frames_show_the_motion(policy_state, trace, rendering):
    trainer, _ = policy_state
    n = int(trace.length) + 1
    frames = render.render_frames(trainer.env.mj_model, trace.qpos[:n], trace.qvel[:n])
    assert frames.shape == (n, render.HEIGHT, render.WIDTH, 3) and frames.dtype == np.uint8
    assert frames.std() > 5, "frames are not blank"
    diffs = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert np.all(diffs > 0), "every step moves the pendulum"
    assert np.abs(frames[-1].astype(np.int16) - frames[0]).mean() > 10 * diffs.min()


@READ_MP4
@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_policy_video_reads_back(policy_state, tmp_path, suffix, rendering):
    trainer, state = policy_state
    key = jax.random.PRNGKey(3)
    path = render.write_policy_video(trainer, state, str(tmp_path / f"policy{suffix}"), key=key)
    assert path == str(tmp_path / f"policy{suffix}") and os.path.getsize(path) > 0
    frames = iio.imread(path, index=None)
    ours = evaluate.trace_policy(trainer, state, key, MAX_STEPS)
    n = int(ours.length) + 1
    assert frames.shape[:3] == (n, render.HEIGHT, render.WIDTH)
    diffs = np.abs(np.diff(frames[..., :3].astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert np.mean(diffs > 0) > 0.9  # lossy codecs may merge a near-still pair of frames
    if suffix == ".mp4":
        assert iio.immeta(path)["fps"] == pytest.approx(1 / trainer.env.dt)
    else:
        assert iio.immeta(path, index=0)["duration"] == pytest.approx(1000 * trainer.env.dt)


def test_default_key_is_the_logged_evaluation(policy_state, tmp_path, monkeypatch):
    from ppo_jax.eval.evaluate import eval_episode_key

    trainer, state = policy_state
    seen = []
    monkeypatch.setattr(render, "render_episode",
                        lambda m, q, v, dt, p, *camera: seen.append(len(q)) or p)
    render.write_policy_video(trainer, state, str(tmp_path / "x.gif"))
    expected = evaluate.trace_policy(trainer, state, eval_episode_key(state.eval_key, 0), MAX_STEPS)
    assert seen == [int(expected.length) + 1]


def _no_gl(*args, **kwargs):
    import warnings

    # what GLFW says on its way to failing without a display, before MuJoCo raises
    warnings.warn("GLFWError: (65544) b'X11: The DISPLAY environment variable is missing'")
    raise mujoco.FatalError("gladLoadGL error")


def test_no_gl_returns_none_with_the_hint(policy_state, tmp_path, monkeypatch, capsys):
    import warnings

    trainer, state = policy_state
    monkeypatch.setattr(mujoco, "Renderer", _no_gl)
    reasons = []
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        out = render.write_policy_video(trainer, state, str(tmp_path / "v.mp4"),
                                        key=jax.random.PRNGKey(3),
                                        on_unavailable=reasons.append)
    assert said == []  # the GL library's warnings stay behind the one line
    assert out is None and len(reasons) == 1 and render.GL_HINT in reasons[0]
    assert "\n" not in reasons[0]
    assert not os.path.exists(tmp_path / "v.mp4")
    # default: one line on stderr
    assert render.write_policy_video(trainer, state, str(tmp_path / "v.gif"),
                                     key=jax.random.PRNGKey(3)) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MUJOCO_GL=osmesa" in err[0]


def test_a_jobs_state_of_one_run_renders_as_that_run(tiny_run, tmp_path, monkeypatch):
    """``restore``'s states (``[R, ...]``) of one run render that run's logged episode, as
    ``restore_run``'s state does; of two, one line says how to pick one."""
    from ppo_jax.run import checkpoint

    seen = []
    monkeypatch.setattr(render, "render_episode",
                        lambda m, q, v, dt, p, *camera: seen.append(np.asarray(q)) or p)
    trainer, states, _ = checkpoint.restore(tiny_run, parts=checkpoint.POLICY_PARTS)
    _, state, _ = checkpoint.restore_run(tiny_run)
    for s in (states, state):
        assert render.write_policy_video(trainer, s, str(tmp_path / "v.gif")) is not None
    np.testing.assert_array_equal(seen[0], seen[1])
    both = jax.tree_util.tree_map(lambda x: jax.numpy.concatenate([x, x]), states)
    with pytest.raises(ValueError, match="^this state holds 2 runs") as e:
        render.write_policy_video(trainer, both, str(tmp_path / "w.gif"))
    assert "\n" not in str(e.value)


def test_unwritable_video_returns_none(policy_state, tmp_path):
    trainer, state = policy_state
    reasons = []
    out = render.write_policy_video(trainer, state, "/proc/forbidden/v.gif",
                                    key=jax.random.PRNGKey(3), on_unavailable=reasons.append)
    assert out is None and len(reasons) == 1 and "could not write" in reasons[0]


@READ_MP4
@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_video_stopped_mid_write_leaves_the_old_file(tmp_path, monkeypatch, suffix):
    """A Ctrl-C (or a full disk) while imageio wrote the video left a cut-off file in
    place of the old one: 48 bytes of an .mp4 that plays nothing. The video is written
    beside it and renamed into place; stopped, the old file is as it was and nothing else
    is left; written, it replaces the old one whole. The same for the curves' figure."""
    import imageio.v2

    from ppo_jax.run import metrics

    path = str(tmp_path / f"policy{suffix}")
    with open(path, "wb") as f:
        f.write(b"the old video")
    frames = np.repeat(np.array([0, 100, 200], np.uint8), 8 * 8 * 3).reshape(3, 8, 8, 3)
    real = imageio.v2.mimsave

    def cut_off(target, *args, **kwargs):
        with open(target, "wb") as f:
            f.write(b"48 bytes of a header")
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio.v2, "mimsave", cut_off)
    with pytest.raises(KeyboardInterrupt):
        render.write_video(frames, path, fps=20)
    assert open(path, "rb").read() == b"the old video"
    assert os.listdir(tmp_path) == [f"policy{suffix}"]
    monkeypatch.setattr(imageio.v2, "mimsave", real)
    assert render.write_video(frames, path, fps=20) == path
    assert iio.imread(path, index=None).shape[0] == 3
    assert os.listdir(tmp_path) == [f"policy{suffix}"]

    curves = str(tmp_path / "curves.png")
    with open(curves, "wb") as f:
        f.write(b"the old figure")
    import matplotlib.figure

    def stopped(self, target, *args, **kwargs):
        open(target, "wb").close()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", stopped)
    lists = {"frames": [1000], "reward": [[1.0]], "step_count": [[5]],
             "eval_frames": [[1000]], "eval_return": [[2.0]], "eval_steps": [[5]]}
    with pytest.raises(OSError):
        metrics.plot_panels([("run", lists)], curves)
    assert open(curves, "rb").read() == b"the old figure"
    assert sorted(os.listdir(tmp_path)) == ["curves.png", f"policy{suffix}"]


def test_evaluate_script_video(tiny_run, root_dir, tmp_path, monkeypatch, capsys, rendering):
    from ppo_jax.cli import evaluate as evaluate_script

    from ppo_jax.cli.common import CLIError

    out = tmp_path / "ep.gif"
    assert evaluate_script.main([tiny_run, "--episodes", "2", "--video", str(out), "--json"]) == 0
    assert iio.imread(out, index=None).shape[1:3] == (render.HEIGHT, render.WIDTH)
    capsys.readouterr()
    monkeypatch.setattr(mujoco, "Renderer", _no_gl)
    ran = []  # no GL is found out before any episode runs: the refusal loses no work
    monkeypatch.setattr(evaluate, "mjx_episodes", lambda *a, **k: ran.append(1))
    monkeypatch.setattr(evaluate, "mujoco_episodes", lambda *a, **k: ran.append(1))
    for sim in ("mjx", "mujoco"):
        with pytest.raises(CLIError) as e:
            evaluate_script.main([tiny_run, "--episodes", "2", "--sim", sim,
                                  "--video", str(tmp_path / "b.mp4")])
        assert render.GL_HINT in str(e.value) and e.value.code != 0
    assert ran == [] and not os.path.exists(tmp_path / "b.mp4")
    os.makedirs(tmp_path / "d.mp4")  # a directory by a video's name
    with pytest.raises(CLIError, match="is a directory"):
        evaluate_script.main([tiny_run, "--episodes", "2", "--video", str(tmp_path / "d.mp4")])
    assert ran == []
    with pytest.raises(CLIError):
        evaluate_script.main([tiny_run, "--video", str(tmp_path / "b.avi")])


def test_evaluate_takes_back_the_video_folders_it_made(tiny_run, tmp_path, monkeypatch,
                                                       rendering):
    """The folders ``--video`` makes before the episodes run are removed again where the
    command is interrupted (or fails) before the video is written; a folder that was there
    stays."""
    from ppo_jax.cli import evaluate as evaluate_script

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "mjx_episodes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_script.main([tiny_run, "--video", str(tmp_path / "new" / "deeper" / "x.gif")])
    assert os.listdir(tmp_path) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):
        evaluate_script.main([tiny_run, "--video", str(tmp_path / "kept" / "x.gif")])
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == []


@READ_MP4
def test_train_writes_the_policy_video(tiny_run, rendering):
    """scripts/train.py ends with OUT/policy.mp4 of the final policy's evaluation episode."""
    import imageio.v3 as iio

    path = os.path.join(tiny_run, "policy.mp4")
    frames = iio.imread(path)
    assert frames.ndim == 4 and frames.shape[0] >= 2 and frames.shape[-1] == 3
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).max() > 0
