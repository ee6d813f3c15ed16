"""Videos of an episode with MuJoCo's offscreen renderer (no torch, no display needed).

An episode is drawn from its sequence of physical states: each ``(qpos, qvel)`` goes into an
``MjData``, ``mj_forward`` places the bodies, ``mujoco.Renderer`` draws one frame. Frames are
written at the env's ``dt`` (0.05 s: 20 frames per second) as ``.mp4`` (imageio-ffmpeg) or
``.gif`` (imageio/Pillow).

Rendering needs an OpenGL context. On a machine without a screen set ``MUJOCO_GL=osmesa``
(Debian/Ubuntu package ``libosmesa6``) or ``MUJOCO_GL=egl`` (NVIDIA driver) BEFORE the first
``import mujoco`` in the process; MuJoCo reads it once. When no context can be made,
:func:`make_renderer` raises :class:`RenderUnavailable`, whose message is the one-line
:data:`GL_HINT`.

States usually come from :func:`ppo_jax.eval.evaluate.episode_trace` (one jitted ``lax.scan``);
:func:`write_policy_video` does the whole thing for a trained state.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Callable

import mujoco
import numpy as np

from ppo_jax.util import first_line, written_in_place

GL_HINT = (
    "no offscreen OpenGL context for MuJoCo's renderer: set MUJOCO_GL=egl (NVIDIA/EGL driver) "
    "or install OSMesa (apt-get install libosmesa6) and set MUJOCO_GL=osmesa"
)
VIDEO_SUFFIXES = (".mp4", ".gif")
HEIGHT, WIDTH = 240, 320


class RenderUnavailable(RuntimeError):
    """No OpenGL context could be made (message: :data:`GL_HINT` and the backend's error)."""


def camera(config: dict | None = None, model: mujoco.MjModel | None = None) -> mujoco.MjvCamera:
    """The camera of an env's ``camera`` config (Gymnasium's ``DEFAULT_CAMERA_CONFIG`` keys:
    ``trackbodyid``, ``distance``, ``lookat``, ``elevation``, ``azimuth``): MuJoCo's default free
    camera of ``model``, those fields set, and tracking the body ``trackbodyid`` where it is
    not the world (a runner stays in frame).

    Default: the pendulum's camera (:attr:`~ppo_jax.envs.InvertedDoublePendulum.camera`).
    """
    if config is None:
        from ppo_jax.envs import InvertedDoublePendulum

        config = InvertedDoublePendulum.camera
    cam = mujoco.MjvCamera()
    if model is not None:
        mujoco.mjv_defaultFreeCamera(model, cam)
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    for key, value in config.items():
        if key == "lookat":
            cam.lookat[:] = value
        else:
            setattr(cam, key, value)
    if config.get("trackbodyid", 0) > 0:
        cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    return cam


def make_renderer(model: mujoco.MjModel, height: int = HEIGHT, width: int = WIDTH):
    """``mujoco.Renderer`` for ``model``; :class:`RenderUnavailable` when GL is missing (the
    GL library's own warnings on the way, GLFW's "DISPLAY ... is missing", are left out:
    the hint says what to do)."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            renderer = mujoco.Renderer(model, height, width)
        except Exception as e:  # no backend / library: ImportError, RuntimeError, FatalError...
            raise RenderUnavailable(f"{GL_HINT} ({type(e).__name__})") from None
    for w in said:  # a renderer was made: what the GL library said, as it said it
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return renderer


def render_frames(
    model: mujoco.MjModel,
    qpos: np.ndarray,
    qvel: np.ndarray,
    height: int = HEIGHT,
    width: int = WIDTH,
    cam: mujoco.MjvCamera | None = None,
) -> np.ndarray:
    """Frames of the states ``qpos`` ``[T, nq]``, ``qvel`` ``[T, nv]``: ``[T, height, width, 3]``
    uint8. Raises :class:`RenderUnavailable` without GL."""
    qpos = np.asarray(qpos, np.float64)
    qvel = np.asarray(qvel, np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != model.nq or qvel.shape != (len(qpos), model.nv):
        raise ValueError(f"expected qpos [T, {model.nq}] and qvel [T, {model.nv}], "
                         f"got {qpos.shape} and {qvel.shape}")
    cam = camera() if cam is None else cam
    data = mujoco.MjData(model)
    frames = np.empty((len(qpos), height, width, 3), np.uint8)
    with make_renderer(model, height, width) as renderer:
        for t in range(len(qpos)):
            data.qpos[:] = qpos[t]
            data.qvel[:] = qvel[t]
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=cam)
            renderer.render(out=frames[t])
    return frames


def write_video(frames: np.ndarray, path: str, fps: float) -> str:
    """Write ``frames`` ``[T, H, W, 3]`` uint8 to ``path`` (``.mp4`` or ``.gif``); its
    absolute path. Raises ``ValueError`` for another suffix, ``OSError`` if it cannot write."""
    import imageio.v2 as imageio

    suffix = os.path.splitext(path)[1].lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"video file must end in .mp4 or .gif, got {path!r}")
    with written_in_place(path) as tmp:  # a video stopped mid-write leaves the old file
        if suffix == ".gif":
            # GIF frame durations are in ms (rounded to 10 ms by most players): dt = 50 ms.
            imageio.mimsave(tmp, list(frames), duration=1000.0 / fps, loop=0)
        else:
            # macro_block_size=1 keeps the exact frame size (libx264 needs even sizes: ours
            # are). imageio-ffmpeg starts ffmpeg as a subprocess; Python warns about forking
            # a process that runs JAX's threads, harmless for an exec'd ffmpeg.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*os.fork.*",
                                        category=RuntimeWarning)
                imageio.mimsave(tmp, list(frames), fps=fps, macro_block_size=1)
    return os.path.abspath(path)


def render_episode(
    model: mujoco.MjModel, qpos: np.ndarray, qvel: np.ndarray, dt: float, path: str,
    camera_config: dict | None = None,
) -> str:
    """Render the states (``[T, nq]``, ``[T, nv]``, one per env step of ``dt`` seconds) to
    ``path`` in real time, with the env's ``camera_config`` (:func:`camera`); its absolute
    path. :class:`RenderUnavailable` without GL."""
    cam = camera(camera_config, model)
    return write_video(render_frames(model, qpos, qvel, cam=cam), path, fps=1.0 / dt)


def render_policy_episode(trainer, state, key, max_steps: int, path: str, mode=None) -> str:
    """Render the MJX episode of ``key`` (:func:`ppo_jax.eval.evaluate.trace_policy`) to ``path``;
    its absolute path. Raises :class:`RenderUnavailable` without GL, ``OSError``/
    ``ValueError`` when the file cannot be written."""
    from ppo_jax.eval.evaluate import trace_policy

    trace = trace_policy(trainer, state, key, max_steps, mode)
    n = int(trace.length) + 1  # the reset state and the state after each step
    env = trainer.env
    return render_episode(env.mj_model, trace.qpos[:n], trace.qvel[:n], env.dt, path,
                          getattr(env, "camera", None))


def write_policy_video(
    trainer,
    state,
    path: str,
    *,
    key=None,
    max_steps: int | None = None,
    mode: str | None = None,
    on_unavailable: Callable[[str], None] | None = None,
) -> str | None:
    """Render one episode of ``state``'s policy (a :class:`~ppo_jax.core.train.PPOState` of ONE
    run) to ``path``.

    The episode is the one training evaluates after the state's last batch (``key``
    default: ``eval_episode_key(state.eval_key, batches_done - 1)``), up to ``max_steps``
    (default: the config's ``eval_max_steps``), ``mode`` as in
    :func:`ppo_jax.eval.evaluate.trace_policy`, simulated in MJX (a run that evaluates in
    MuJoCo C, ``eval_sim`` ``mujoco``, logged that episode's MuJoCo C twin: the same start
    state and policy).

    Returns the video's absolute path, or ``None`` when rendering is unavailable (no GL
    context, or the file cannot be written): it never raises for those. Then the one-line
    reason (:data:`GL_HINT`, or the write error) is passed to ``on_unavailable`` (default:
    printed to stderr as ``video: <reason>``).
    """
    from ppo_jax.core.acting import eval_episode_key
    from ppo_jax.core.train import one_run

    state = one_run(state)  # (a job's state of one run: that run's)
    report = on_unavailable or (lambda msg: print(f"video: {msg}", file=sys.stderr))
    if key is None:
        key = eval_episode_key(state.eval_key, max(int(state.batches_done) - 1, 0))
    max_steps = max_steps or trainer.config.eval_max_steps
    try:
        return render_policy_episode(trainer, state, key, max_steps, path, mode)
    except RenderUnavailable as e:
        report(str(e))
    except (OSError, ValueError, RuntimeError) as e:
        report(f"could not write {path}: {first_line(e) or type(e).__name__}")
    return None
