"""Which OpenGL backend MuJoCo's offscreen renderer uses on a machine without a display.

MuJoCo reads ``MUJOCO_GL`` once, when it is first imported, and its default (GLFW) needs a
display. :func:`default_offscreen_backend` is called where a command starts (and by the test
suite) before anything imports ``mujoco``; importing ppo_jax changes nothing.
"""

from __future__ import annotations

import ctypes.util
import os

APT_HINT = "apt-get install libosmesa6"
BACKENDS = (("osmesa", "OSMesa"), ("egl", "EGL"))


def default_offscreen_backend() -> str | None:
    """Unless ``MUJOCO_GL`` is set or there is a display, point MuJoCo at an offscreen
    backend whose library is installed: OSMesa, else EGL (Mesa's EGL without a GPU cannot
    make a context; OSMesa can). Returns the backend in force (None: MuJoCo's default)."""
    if os.environ.get("MUJOCO_GL") or os.environ.get("DISPLAY"):
        return os.environ.get("MUJOCO_GL") or None
    for backend, lib in BACKENDS:
        if ctypes.util.find_library(lib):
            os.environ["MUJOCO_GL"] = backend
            return backend
    return None
