"""Rows that a loop writes where they are computed.

A ``lax.scan`` stacks each step's output into an ``[T, ...]`` array. Where an output leaf is a
buffer the step also uses elsewhere (a carried value, an input of the policy), XLA's GPU
backend writes its row as a copy whose offset the host computes: one or two launches from the
host per leaf and per step (an asynchronous copy is two), and such a copy keeps the whole
loop out of a CUDA graph (XLA's command buffers). :func:`in_place` routes each leaf through a
``select`` on a predicate that XLA cannot fold (it comes out of an optimization barrier): the
row is then an elementwise result, which XLA fuses into the row's write, in place, inside
the graph. The values are the leaves' own, bit for bit; on a CPU it costs one elementwise
pass over the row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def in_place(tree):
    """``tree``, each leaf the same value, computed where a scan writes its row."""
    keep = jax.lax.optimization_barrier(jnp.bool_(True))
    return jax.tree_util.tree_map(lambda x: jax.lax.select(keep, x, jnp.zeros_like(x)), tree)
