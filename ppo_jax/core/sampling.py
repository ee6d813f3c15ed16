"""Which frames of a batch each minibatch update trains on (``PPOConfig.sampler``).

The tutorial fills a ``ReplayBuffer`` with the batch at every epoch and calls
``sample(sub_batch_size)`` ``frames_per_batch // sub_batch_size`` times an epoch, through a
``SamplerWithoutReplacement`` (``drop_last=False``). That sampler keeps its permutation of
the buffer's positions from call to call, across epochs and batches (the buffer's size never
changes); when fewer than ``sub_batch_size`` positions are left it returns them, a short
minibatch, and the next call starts a new permutation. With the tutorial's 1,000 frames and
minibatches of 64, each pass over the positions is 15 minibatches of 64 and one of 40: 9 or
10 of a batch's 150 updates train on 40 frames, and a frame is trained on 9.4 times a batch
on average (8 to 11: a batch starts and ends mid-pass).

- ``"epoch"`` (the default): each epoch draws one permutation of the batch's frames and cuts
  it into ``frames_per_batch // minibatch_size`` minibatches of ``minibatch_size``; the
  ``frames_per_batch % minibatch_size`` frames left over sit that epoch out (with the
  tutorial's sizes a frame is trained on 9.6 times a batch on average, at most 10, fewer
  where it sits out several epochs). Where ``minibatch_size`` divides ``frames_per_batch``
  the two samplers draw alike in distribution (one pass an epoch, every minibatch full),
  from other random draws.
- ``"torchrl"``: TorchRL's sampler as the tutorial drives it, above. A short minibatch is
  ``minibatch_size`` rows of which only the pass's last ones count (a weight of 1; the
  others 0): the loss's means are over those, as TorchRL's over the short minibatch.

The ``"torchrl"`` stream needs no state: draw ``g`` of a run (``g = (batch * num_epochs +
epoch) * num_minibatches + m``) is draw ``g % D`` of pass ``g // D`` (``D`` draws a pass),
whose permutation is drawn from ``fold_in(stream_key, g // D)``. A resumed run draws what
the uninterrupted one draws.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPOCH, TORCHRL = "epoch", "torchrl"
SAMPLERS = (EPOCH, TORCHRL)
# The fold_in datum that derives a run's stream key from its eval key: evaluation keys fold
# in batch indices (int32, at most 2**31 - 1), never this one.
_STREAM_DATUM = 0xFFFFFFFF


def stream_key(eval_key: jax.Array) -> jax.Array:
    """The key of a run's ``"torchrl"`` stream, from its fixed per-run eval key."""
    return jax.random.fold_in(eval_key, jnp.uint32(_STREAM_DATUM))


def draws_per_pass(frames: int, minibatch: int) -> int:
    """Draws of ``minibatch`` positions that one pass over ``frames`` takes (the last one
    short where ``minibatch`` does not divide ``frames``)."""
    return -(-frames // minibatch)


def epoch_rows(key: jax.Array, frames: int, minibatch: int) -> jax.Array:
    """``"epoch"``: ``[frames // minibatch, minibatch]`` indices, one permutation of
    ``frames`` cut into rows; the ``frames % minibatch`` left over unused."""
    rows = frames // minibatch
    return jax.random.permutation(key, frames)[:rows * minibatch].reshape(rows, minibatch)


def stream_rows(key: jax.Array, first_draw: jax.Array, num_draws: int, frames: int,
                minibatch: int, aligned: bool = False) -> tuple[jax.Array, jax.Array]:
    """``"torchrl"``: draws ``first_draw .. first_draw + num_draws - 1`` of the stream of
    ``key`` (:func:`stream_key`): ``[num_draws, minibatch]`` indices into the batch's
    ``frames`` and their float32 weights (1 for the positions drawn; 0 for the rows that
    pad a pass's short last draw, whose indices repeat a position of the pass).
    ``aligned``: ``first_draw`` is known to start a pass (as an epoch's draws do where
    ``minibatch`` divides ``frames``), so whole passes need no permutation beyond theirs."""
    per_pass = draws_per_pass(frames, minibatch)
    draw = first_draw + jnp.arange(num_draws, dtype=jnp.int32)
    first_pass = first_draw // per_pass
    # the passes these draws read: at most this many, from first_pass on
    passes = (num_draws - 1) // per_pass + (1 if aligned else 2)
    perms = jax.vmap(lambda p: jax.random.permutation(jax.random.fold_in(key, p), frames))(
        first_pass + jnp.arange(passes, dtype=jnp.int32))
    pos = (draw % per_pass)[:, None] * minibatch + jnp.arange(minibatch, dtype=jnp.int32)
    rows = perms[(draw // per_pass - first_pass)[:, None], jnp.minimum(pos, frames - 1)]
    return rows, (pos < frames).astype(jnp.float32)
