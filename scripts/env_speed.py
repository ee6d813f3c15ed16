#!/usr/bin/env python
"""Compile time and env steps per second of an MJX env alone: a vectorized step with auto-reset
and uniform random actions in the env's bounds, compiled as one scan, best of 3 calls after
compilation.

    python scripts/env_speed.py                                  # the pendulum: 1, 64, 1024, 4096 envs
    python scripts/env_speed.py --env HalfCheetah-v4 Hopper-v4 --envs 1 64
    python scripts/env_speed.py --env all --envs 1 64            # every Gymnasium port
    python scripts/env_speed.py --linalg library inline          # PPOConfig.linalg's two choices
"""

import time

import jax

from ppo_jax.cli.common import ArgumentParser, require_float32, run_main, user_errors
from ppo_jax.config import INT32_MAX, LINALGS
from ppo_jax.envs import PORTS, VectorEnv, make_env
from ppo_jax.envs.linalg import with_linalg

STEPS = {1: 2000, 64: 200, 1024: 20, 4096: 10}


def measure(env_id: str, n: int, linalg: str = "library") -> tuple[float, float]:
    env = with_linalg(make_env(env_id), linalg)
    venv = VectorEnv(env, n)
    steps = STEPS.get(n, max(10, 20_000 // n))

    def run(key):
        s = venv.reset(key)

        def body(s, k):
            a = jax.random.uniform(k, (n, env.action_size), minval=env.action_low,
                                   maxval=env.action_high)
            s, out = venv.step(s, a, k)
            return s, out.reward.sum()

        s, r = jax.lax.scan(body, s, jax.random.split(key, steps))
        # the final observation depends on every step (a constant reward, as
        # InvertedPendulum's, would otherwise let XLA drop the physics)
        return r.sum() + s.obs.sum()

    t = time.perf_counter()
    f = jax.jit(run).lower(jax.random.PRNGKey(0)).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(f(jax.random.PRNGKey(0)))
    best = 1e9
    for rep in range(3):
        t = time.perf_counter()
        jax.block_until_ready(f(jax.random.PRNGKey(rep)))
        best = min(best, time.perf_counter() - t)
    return compile_s, n * steps / best


def main(argv=None) -> int:
    p = ArgumentParser(prog="env_speed.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--env", nargs="+", default=["InvertedDoublePendulum-v4"],
                   help="env ids ('all': every Gymnasium port)")
    p.add_argument("--envs", nargs="+", type=int, default=[1, 64, 1024, 4096],
                   help="env counts")
    p.add_argument("--linalg", nargs="+", choices=LINALGS, default=["library"],
                   help="the env's small linear algebra, each measured in turn "
                        "(PPOConfig.linalg; default: library)")
    args = p.parse_args(argv)
    require_float32()  # its figures are float32, as training's
    if min(args.envs) < 1 or max(args.envs) > INT32_MAX:
        p.error(f"--envs must be counts in [1, {INT32_MAX}], got "
                f"{' '.join(map(str, args.envs))}")
    ids = list(PORTS) if args.env == ["all"] else args.env
    with user_errors(ValueError):  # an unknown id: one line before any compile
        for env_id in ids:
            make_env(env_id)
    print(f"{'env':<28} {'N':>5} {'linalg':>8} {'compile s':>10} {'env steps/s':>12}")
    for env_id in ids:
        for n in args.envs:
            for linalg in args.linalg:
                compile_s, rate = measure(env_id, n, linalg)
                print(f"{env_id:<28} {n:>5} {linalg:>8} {compile_s:>10.1f} {rate:>12,.0f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
