#!/usr/bin/env python
"""Env steps per second of the MJX InvertedDoublePendulum-v4 alone: a vectorized step with
auto-reset and random actions, compiled as one scan, best of 3 calls after compilation.

    python scripts/env_speed.py            # 1, 64, 1024 and 4096 envs
"""

import time

import jax
from ppo_jax.envs import InvertedDoublePendulum, VectorEnv
env = InvertedDoublePendulum()
for N, T in [(1, 2000), (64, 200), (1024, 20), (4096, 10)]:
    venv = VectorEnv(env, N)
    def run(key):
        s = venv.reset(key)
        def body(s, k):
            a = jax.random.uniform(k, (N, 1), minval=-1, maxval=1)
            s, out = venv.step(s, a, k)
            return s, out.reward.sum()
        s, r = jax.lax.scan(body, s, jax.random.split(key, T))
        return r.sum()
    f = jax.jit(run).lower(jax.random.PRNGKey(0)).compile()
    jax.block_until_ready(f(jax.random.PRNGKey(0)))
    best = 1e9
    for rep in range(3):
        t = time.perf_counter(); jax.block_until_ready(f(jax.random.PRNGKey(rep))); best = min(best, time.perf_counter() - t)
    print(f"N={N:5d}: {N*T/best:,.0f} env steps/s (auto-reset vector step, best of 3)", flush=True)
