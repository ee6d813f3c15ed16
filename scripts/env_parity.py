#!/usr/bin/env python
"""Each Gymnasium port against Gymnasium's own v4 env (MuJoCo C): one synced step and 20-step
trajectories under x64 and float32, and the float32 horizon (steps before a trajectory's obs
or reward first differs by more than 1e-3 and 1e-2). Needs gymnasium[mujoco].

    python scripts/env_parity.py                      # every port
    python scripts/env_parity.py --env Hopper-v4
"""

import os
import sys

import jax
import numpy as np

# a development tool of this checkout: its measurements live in the tests package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppo_jax.cli.common import ArgumentParser, run_main, user_errors
from ppo_jax.config import INT32_MAX
from ppo_jax.envs import PORTS, make_env
from ppo_jax.envs.registry import check_env_id


def main(argv=None) -> int:
    p = ArgumentParser(prog="env_parity.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--env", nargs="+", default=list(PORTS), help="env ids (default: all ports)")
    p.add_argument("--steps", type=int, default=20, help="trajectory length (default 20)")
    args = p.parse_args(argv)
    if not 1 <= args.steps <= INT32_MAX:  # (the env counts its steps in int32)
        p.error(f"--steps must be in [1, {INT32_MAX}], got {args.steps}")
    with user_errors(ValueError, ImportError):
        for env_id in args.env:
            if env_id in PORTS:
                make_env(env_id)
                continue
            check_env_id(env_id)  # an unknown id says so; a known one is not a port
            raise ValueError(f"{env_id} is not a Gymnasium port: env_parity steps the "
                                 f"ports beside Gymnasium ({', '.join(PORTS)})")
        from tests import gym_parity as gp
    print(f"{'env':<26} {'x64 step':>9} {'x64 traj':>9} {'f32 step':>9} {'f32 traj':>9} "
          f"{'f32 1e-3':>8} {'f32 1e-2':>8}")
    for env_id in args.env:
        row = {}
        for x64 in (True, False):
            jax.config.update("jax_enable_x64", x64)
            e = gp.one_step_errors(env_id)
            err = gp.trajectory_errors(env_id, steps=args.steps)
            row[x64] = (max(e.obs, e.reward) if not e.term_mismatch else np.inf, err)
        f32 = row[False][1]
        print(f"{env_id:<26} {row[True][0]:>9.1e} {np.nanmax(row[True][1]):>9.1e} "
              f"{row[False][0]:>9.1e} {np.nanmax(f32):>9.1e} {gp.horizon(f32, 1e-3):>8d} "
              f"{gp.horizon(f32, 1e-2):>8d}", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
