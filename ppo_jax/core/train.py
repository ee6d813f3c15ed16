"""The whole PPO training run as pure functions of one config, and the programs built from them.

``make_train(config)`` returns a :class:`Trainer` whose pure functions read top to bottom::

    train(key)                      init + every batch: ONE program, vmap-able over keys
      init(key)                     obs-norm statistics (random rollouts), networks, Adam, envs
      batch_step(state, i)          one batch:
        update_step                   collect: scan over steps_per_env (tanh-Normal sample,
                                        vector env step with auto-reset)
                                      update: scan over epochs of {GAE with the current
                                        critic, standardize, shuffle, scan over minibatches
                                        of {loss, grads, global-norm clip, Adam}}
                                      NaN/Inf guard: a non-finite loss or parameter keeps the
                                        last good state
        evaluate_after (config.is_eval_batch(i))   deterministic episode of up to eval_max_steps

A :class:`Trainer` is one run's PPO. The host driver (:mod:`ppo_jax.run.programs`,
:mod:`ppo_jax.run.runner`) compiles the same pieces for R runs at once as three programs
(``init``, ``update`` = :meth:`Trainer.update_step`, ``evaluate`` =
:meth:`Trainer.evaluate_after`; on a GPU a fourth, :meth:`Trainer.init_moments`, on the host's
CPU) and calls them batch by batch: the state stays on the device, only each batch's metrics
come back, and no program holds a host callback, so all of them live in JAX's persistent
compilation cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from ppo_jax.core import distributions, gae as gae_lib, sampling
from ppo_jax.config import PPOConfig, check_config
from ppo_jax.envs import Env, EnvState, VectorEnv, check_env, make_env
from ppo_jax.envs.linalg import with_linalg
from ppo_jax.core.acting import eval_episode_key, make_policy, run_episode
from ppo_jax.core.hyper import Hyper, hyper_of
from ppo_jax.core.inplace import in_place
from ppo_jax.core.losses import LossMetrics, Minibatch, Params, ppo_loss
from ppo_jax.core.networks import Actor, Critic
from ppo_jax.core.normalization import (ObsMoments, ObsNormStats, init_moments, merge,
                                        moments_of, normalize, stats_from_moments)
from ppo_jax.core.optim import lr_at_batch, make_optimizer, with_hyper

if TYPE_CHECKING:  # the run layer builds the mesh; the core only constrains its arrays to it
    from ppo_jax.run.parallel import Layout

MATMUL = {"highest": "highest", "tf32": "tensorfloat32", "default": None}


@struct.dataclass
class PPOState:
    """Everything a run carries from batch to batch (one run; ``[R, ...]`` for R runs).

    Attributes:
      params: actor and critic parameters.
      opt_state: optax state (Adam moments, update count: it drives the lr schedule).
      obs_stats: observation normalization (fixed after init; ``obs_norm="running"``: after
        each batch's update).
      env_state: ``[num_envs]`` vectorized env state (mid-episode across batches).
      key: PRNG key for what comes next.
      eval_key: fixed per run; evaluation after batch i starts from
        ``eval_episode_key(eval_key, i)``, so a restored checkpoint can replay it.
      hyper: the run's sweepable hyperparameters (:mod:`ppo_jax.core.hyper`): traced values, so
        one compiled program serves every learning rate, clip, discount, ...
      batches_done: int32, batches completed.
      failed_batch: int32, -1, or the first batch whose loss or parameters went non-finite
        (that batch's update was discarded and the run stopped advancing).
      obs_moments: ``obs_norm="running"`` only (else None): the moments of every observation
        the statistics have taken in (:class:`~ppo_jax.core.normalization.ObsMoments`).
    """

    params: Params
    opt_state: optax.OptState
    obs_stats: ObsNormStats
    env_state: EnvState
    key: jax.Array
    eval_key: jax.Array
    hyper: Hyper
    batches_done: jax.Array
    failed_batch: jax.Array
    obs_moments: ObsMoments | None = None


def one_run(state: PPOState) -> PPOState:
    """``state`` as ONE run's :class:`PPOState`, which evaluation, rendering and export take:
    a state of several runs (``[R, ...]``, as ``fit`` and ``checkpoint.restore`` return
    them) that holds one run is taken as that run; one of R > 1 runs raises ValueError (one
    line) that says how to pick one. Read from the observation statistics (``[obs]`` for
    one run, ``[R, obs]`` for R), which every policy carries. Abstract states
    (``jax.ShapeDtypeStruct`` leaves, as ``programs.state_shapes`` gives) are sliced alike."""
    stats = getattr(state, "obs_stats", None)
    shape = np.shape(getattr(stats, "loc", None))
    if len(shape) <= 1:
        return state
    if len(shape) == 2 and shape[0] == 1:
        def first(x):
            if isinstance(x, jax.ShapeDtypeStruct):
                return jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
            return x[0]

        return jax.tree_util.tree_map(first, state)
    raise ValueError(
        f"this state holds {shape[0]} runs (its observation statistics are "
        f"{list(shape)}, as fit() and restore() return a job's runs): pass one run's, "
        "e.g. jax.tree_util.tree_map(lambda x: x[r], states), or restore it with "
        "ppo_jax.run.checkpoint.restore_run(path, run_index=r)")


@struct.dataclass
class Transition:
    """One batch of experience, time-major ``[T, N, ...]`` (T = steps_per_env, N = num_envs).

    ``obs``/``next_obs`` are normalized; ``next_obs`` is the true next observation (the final
    one of an episode that ended). ``step_count`` is TorchRL's ``step_count``: env steps of
    the episode BEFORE this step. ``raw_obs``: ``obs`` before normalization, kept only for
    ``obs_norm="running"`` (else None).
    """

    obs: jax.Array
    pre_tanh: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    done: jax.Array
    step_count: jax.Array
    raw_obs: jax.Array | None = None


@struct.dataclass
class EvalMetrics:
    """One evaluation episode: ``eval_return`` (sum of rewards) and ``eval_steps`` (TorchRL's
    ``step_count.max()`` = episode length - 1)."""

    eval_return: jax.Array
    eval_steps: jax.Array


@struct.dataclass
class BatchMetrics:
    """Per-batch scalars of one run.

    ``reward``: mean reward of the batch; ``step_count``: its max ``step_count`` (TorchRL's);
    ``lr``: learning rate of the batch; ``grad_norm``: mean global norm before clipping;
    ``finite``: False if this batch produced NaN/Inf (then discarded); ``saturation``: the
    share of the batch's frames whose action sits at tanh's clamp in some dimension
    (:func:`~ppo_jax.core.distributions.saturated`); ``losses``: the loss terms
    (:class:`~ppo_jax.core.losses.LossMetrics`), means over the batch's minibatch updates.
    """

    reward: jax.Array
    step_count: jax.Array
    lr: jax.Array
    grad_norm: jax.Array
    finite: jax.Array
    saturation: jax.Array
    losses: LossMetrics

    def scalars(self) -> dict[str, jax.Array]:
        """Every per-batch metric by its ``metrics.json`` name (the loss terms flattened)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "losses"}
        out.update({f.name: getattr(self.losses, f.name)
                    for f in dataclasses.fields(self.losses)})
        return out


@struct.dataclass
class TrainMetrics:
    """What :meth:`Trainer.train` returns per batch: the batch's metrics, whether an
    evaluation followed it and, if so, its result (zeros otherwise)."""

    batch: BatchMetrics
    evaluated: jax.Array
    eval: EvalMetrics


def _rows(tree, idx: jax.Array):
    """Every leaf of ``tree`` gathered at ``idx`` along its first axis."""
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


def _tree_where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves))


@dataclasses.dataclass(frozen=True)
class Trainer:
    """One run's PPO: pure functions of one config (built by :func:`make_train`). The
    sweepable hyperparameters (:class:`~ppo_jax.core.hyper.Hyper`) are arguments, not config:
    they are traced values of the run's state."""

    config: PPOConfig
    env: Env
    actor: Actor
    critic: Critic
    optimizer: optax.GradientTransformation
    layout: Layout | None = None  # the device mesh (None: one device), see ppo_jax.run.parallel

    # --- pieces -------------------------------------------------------------------------
    @property
    def bounds(self) -> distributions.Bounds | None:
        """The env's action bounds (None: [-1, 1], the plain tanh-Normal)."""
        return distributions.Bounds.of(self.env.action_low, self.env.action_high)

    def policy(self, actor_params, stats: ObsNormStats, mode: str):
        """``policy(obs, key) -> action`` on raw observations (:func:`~ppo_jax.core.acting.
        make_policy` with the env's bounds)."""
        return make_policy(self.actor_apply, actor_params, stats, mode, self.bounds)

    def actor_apply(self, actor_params, obs):
        return self.actor.apply(actor_params, obs)

    def critic_apply(self, critic_params, obs):
        return self.critic.apply(critic_params, obs)

    def init_params(self, key: jax.Array) -> Params:
        k_a, k_c = jax.random.split(key)
        obs = jnp.zeros((self.env.observation_size,), jnp.float32)
        return Params(actor=self.actor.init(k_a, obs), critic=self.critic.init(k_c, obs))

    @property
    def running_stats(self) -> bool:
        """Whether the statistics take in every batch (``obs_norm="running"``)."""
        return self.config.obs_norm == "running"

    def _envs_split(self, tree, axis: int = 0):
        """Mark ``tree``'s env (or minibatch) axis as split over the layout's env devices."""
        return tree if self.layout is None else self.layout.constrain_envs(tree, axis)

    def least_bytes_per_run(self) -> int:
        """A lower bound of the memory one run holds while it trains: its networks'
        parameters with Adam's two moments, and one batch of transitions (float32, the flags
        as bytes). What the programs hold besides (the envs' physics, activations, gradients,
        the statistics) only adds to it."""
        cfg = self.config
        obs, act = self.env.observation_size, self.env.action_size

        def mlp(n_in: int, n_out: int) -> int:
            sizes = [n_in, *cfg.hidden_sizes, n_out]
            return sum(a * b + b for a, b in zip(sizes, sizes[1:]))

        params = mlp(obs, 2 * act) + mlp(obs, 1)
        # obs and next_obs, pre_tanh, log_prob, reward (float32), step_count (int32),
        # terminated and done (bool)
        per_frame = 4 * (2 * obs + act + 2) + 4 + 2
        return 4 * 3 * params + cfg.frames_per_batch * per_frame

    def init_moments(self, key: jax.Array) -> ObsMoments:
        """The moments of the random rollouts that :meth:`init` (with the same ``key``) draws
        its normalization statistics from: one env, ``init_stats_frames`` sequential steps.
        A program of its own where those steps should run elsewhere than the wide work (on
        the host's CPU for a job on a GPU, :mod:`ppo_jax.run.programs`)."""
        k_stats = jax.random.split(key, 5)[0]
        return init_moments(self.env, k_stats, self.config.init_stats_frames)

    def init(self, key: jax.Array, hyper: Hyper,
             moments: ObsMoments | None = None) -> PPOState:
        """Statistics, parameters, optimizer and envs for a run seeded by ``key``, with the
        sweepable hyperparameters ``hyper`` (``hyper_of(config)``: the config's).
        ``moments``: :meth:`init_moments` of ``key`` computed elsewhere (None: here)."""
        cfg = self.config
        _, k_params, k_env, k_run, k_eval = jax.random.split(key, 5)
        if moments is None:
            moments = self.init_moments(key)
        f32 = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree)
        stats = f32(stats_from_moments(moments, cfg.obs_norm))
        params = self.init_params(k_params)
        return PPOState(
            params=params,
            # batch 0: the schedule's phase is 0 whatever the run's length (rate 0)
            opt_state=with_hyper(self.optimizer.init(params), cfg, hyper, np.float32(0.0)),
            obs_stats=stats,
            env_state=self._envs_split(VectorEnv(self.env, cfg.num_envs).reset(k_env)),
            key=k_run,
            eval_key=k_eval,
            hyper=hyper,
            batches_done=jnp.int32(0),
            failed_batch=jnp.int32(-1),
            obs_moments=f32(moments) if self.running_stats else None,
        )

    def collect(
        self, params: Params, stats: ObsNormStats, env_state: EnvState, key: jax.Array
    ) -> tuple[EnvState, Transition]:
        """``steps_per_env`` steps of every env with the sampling policy."""
        venv = VectorEnv(self.env, self.config.num_envs)

        def step(env_state, k):
            k_act, k_env = jax.random.split(k)
            raw_obs = env_state.obs.astype(jnp.float32)
            obs = normalize(stats, raw_obs)
            loc, scale = self.actor_apply(params.actor, obs)
            action, pre_tanh, log_prob = distributions.sample(k_act, loc, scale, self.bounds)
            next_state, out = venv.step(env_state, action, k_env)
            next_state = self._envs_split(next_state)
            tr = Transition(
                obs=obs,
                pre_tanh=pre_tanh,
                log_prob=log_prob,
                reward=out.reward.astype(jnp.float32),
                next_obs=normalize(stats, out.next_obs.astype(jnp.float32)),
                terminated=out.terminated,
                done=out.done,
                step_count=env_state.steps,
                raw_obs=raw_obs if self.running_stats else None,
            )
            # each row computed where it is written: no copy per leaf and step on a GPU
            return next_state, in_place(self._envs_split(tr))

        keys = jax.random.split(key, self.config.steps_per_env)
        return jax.lax.scan(step, env_state, keys)

    def advantages(
        self, critic_params, batch: Transition, hyper: Hyper
    ) -> tuple[jax.Array, jax.Array]:
        """GAE with the given critic on a ``[T, N]`` batch (standardized if configured)."""
        cfg = self.config
        values = self.critic_apply(critic_params, batch.obs)
        next_values = self.critic_apply(critic_params, batch.next_obs)
        adv, target = gae_lib.gae(
            rewards=batch.reward,
            values=values,
            next_values=next_values,
            terminated=batch.terminated,
            done=batch.done,
            gamma=hyper.gamma,
            lmbda=hyper.lmbda,
        )
        if cfg.standardize_advantage:
            adv = gae_lib.standardize(adv)
        return adv, target

    def loss_fn(self, params: Params, mb: Minibatch, key: jax.Array, hyper: Hyper):
        cfg = self.config
        return ppo_loss(
            params,
            mb,
            key,
            actor_apply=self.actor_apply,
            critic_apply=self.critic_apply,
            clip_epsilon=hyper.clip_epsilon,
            entropy_coeff=hyper.entropy_coeff,
            critic_coeff=hyper.critic_coeff,
            critic_loss=cfg.critic_loss,
            bounds=self.bounds,
        )

    def minibatch_indices(self, key: jax.Array) -> jax.Array:
        """``[num_minibatches, minibatch_size]`` indices of one epoch's minibatches with
        ``sampler="epoch"``: one random permutation of the batch, cut into rows (the
        ``frames_per_batch % minibatch_size`` left over sit the epoch out)."""
        cfg = self.config
        return sampling.epoch_rows(key, cfg.frames_per_batch, cfg.minibatch_size)

    def flat_batch(self, batch: Transition, adv: jax.Array, target: jax.Array) -> Minibatch:
        """The batch flattened to ``[frames_per_batch, ...]`` with its advantages and value
        targets: what the minibatches are gathered from."""
        n = self.config.frames_per_batch
        return Minibatch(
            obs=batch.obs.reshape(n, -1),
            pre_tanh=batch.pre_tanh.reshape(n, -1),
            log_prob=batch.log_prob.reshape(n),
            advantage=adv.reshape(n),
            value_target=target.reshape(n),
        )

    def minibatches(self, batch: Transition, adv: jax.Array, target: jax.Array,
                    idx: jax.Array) -> Minibatch:
        """:meth:`flat_batch` gathered at ``idx`` (a row of :meth:`minibatch_indices`,
        ``[B]``: one minibatch; all of them, ``[M, B]``: every minibatch of an epoch)."""
        return _rows(self.flat_batch(batch, adv, target), idx)

    def update(self, params: Params, opt_state, batch: Transition, key: jax.Array,
               hyper: Hyper, rate=None, stream=None):
        """``num_epochs`` epochs; each recomputes GAE, then minibatches without replacement
        (``config.sampler``, :mod:`ppo_jax.core.sampling`). ``rate``: the lr schedule's
        phase step (:func:`~ppo_jax.core.optim.cosine_phase_step`; traced in the update
        program, so the run's length is not baked into it). ``stream``: with
        ``sampler="torchrl"``, ``(stream key, batch index)``: where the batch's draws are
        in the run's stream."""
        cfg = self.config
        grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)
        torchrl_sampler = cfg.sampler == sampling.TORCHRL
        if torchrl_sampler and stream is None:
            raise ValueError("sampler 'torchrl' needs the run's stream: (stream key, batch)")

        def epoch(carry, xs):
            k, e = xs  # e: the epoch's index (None with sampler="epoch", which needs none)
            k_perm, k_mb = jax.random.split(k)
            adv, target = self.advantages(carry[0].critic, batch, hyper)
            flat = self.flat_batch(batch, adv, target)

            def minibatch_step(carry, xs):
                params, opt_state = carry
                rows, weight, k = xs  # weight: None with sampler="epoch" (every row counts)
                # Each minibatch is gathered in its own step, from the flat batch: no
                # [M, B] copy of the batch to slice (on a GPU, a scan's slice of its input
                # is a copy launched from the host, which keeps the loop out of a CUDA graph).
                mb = self._envs_split(_rows(flat, rows).replace(weight=weight))
                (_, metrics), grads = grad_fn(params, mb, k, hyper)
                opt_state = with_hyper(opt_state, cfg, hyper, rate)
                updates, opt_state = self.optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                # the squared norm, as optax sums it; its square root after the loops is
                # optax.global_norm's value (taken inside, it was a copy from the host too)
                return (params, opt_state), (metrics, optax.tree.norm(grads, squared=True))

            keys = jax.random.split(k_mb, cfg.num_minibatches)
            if torchrl_sampler:
                key_s, i = stream
                first = (i.astype(jnp.int32) * cfg.num_epochs + e) * cfg.num_minibatches
                # where the minibatch divides the batch an epoch is one whole pass
                rows, weights = sampling.stream_rows(
                    key_s, first, cfg.num_minibatches, cfg.frames_per_batch,
                    cfg.minibatch_size,
                    aligned=cfg.frames_per_batch % cfg.minibatch_size == 0)
            else:  # (None in a scan's inputs is an empty tree: no input at all)
                rows, weights = self.minibatch_indices(k_perm), None
            carry, per_step = jax.lax.scan(minibatch_step, carry, (rows, weights, keys))
            # the epoch's metrics (all float32) as one [metrics, M] array: one row of the
            # epochs' output to write, not one per metric (on a GPU each is a copy
            # launched from the host, which keeps the epochs' loop out of a CUDA graph)
            leaves, tree = jax.tree_util.tree_flatten(per_step)
            structure.append(tree)
            return carry, jnp.stack(leaves)

        structure: list = []  # the metrics' pytree structure, as the epoch traced it
        epochs = jnp.arange(cfg.num_epochs, dtype=jnp.int32) if torchrl_sampler else None
        (params, opt_state), stacked = jax.lax.scan(
            epoch, (params, opt_state), (jax.random.split(key, cfg.num_epochs), epochs))
        metrics, gnorm_sq = jax.tree_util.tree_unflatten(
            structure[-1], [stacked[:, i] for i in range(stacked.shape[1])])
        mean = jax.tree_util.tree_map(jnp.mean, metrics)
        return params, opt_state, mean, jnp.sqrt(gnorm_sq).mean()

    def evaluate(self, params: Params, stats: ObsNormStats, key: jax.Array):
        """One deterministic episode (``config.eval_action``) of up to ``eval_max_steps``."""
        return self.actor_episode(params.actor, stats, key)

    def actor_episode(self, actor_params, stats: ObsNormStats, key: jax.Array):
        """:meth:`evaluate` from the actor's parameters alone."""
        policy = self.policy(actor_params, stats, self.config.eval_action)
        return run_episode(self.env, policy, key, self.config.eval_max_steps)

    def update_step(self, state: PPOState, i: jax.Array, rate=None
                    ) -> tuple[PPOState, BatchMetrics]:
        """Batch ``i``: collect, update, NaN guard (no evaluation: :meth:`batch_step` adds
        it). ``rate``: see :meth:`update` (None: the config's, as a constant)."""
        cfg = self.config
        key, k_col, k_upd = jax.random.split(state.key, 3)
        env_state, batch = self.collect(state.params, state.obs_stats, state.env_state, k_col)
        stream = ((sampling.stream_key(state.eval_key), jnp.asarray(i))
                  if cfg.sampler == sampling.TORCHRL else None)
        params, opt_state, lm, gnorm = self.update(state.params, state.opt_state, batch, k_upd,
                                                   state.hyper, rate, stream)

        checked, stats, moments = (params, lm), state.obs_stats, state.obs_moments
        if self.running_stats:  # the batch trained on what it acted with; the next one sees it
            moments = merge(moments, moments_of(batch.raw_obs))
            stats = stats_from_moments(moments, cfg.obs_norm)
            checked = (params, lm, moments)
        finite = _all_finite(checked) & (state.failed_batch < 0)
        new_state = PPOState(
            params=params,
            opt_state=opt_state,
            obs_stats=stats,
            env_state=env_state,
            key=key,
            eval_key=state.eval_key,
            hyper=state.hyper,
            batches_done=state.batches_done + 1,
            failed_batch=state.failed_batch,
            obs_moments=moments,
        )
        failed = jnp.where(state.failed_batch >= 0, state.failed_batch, i.astype(jnp.int32))
        bad_state = state.replace(failed_batch=failed)
        state = _tree_where(finite, new_state, bad_state)
        metrics = BatchMetrics(
            reward=batch.reward.mean(),
            step_count=batch.step_count.max(),
            lr=lr_at_batch(cfg, i, state.hyper.lr, rate),
            grad_norm=gnorm,
            finite=finite,
            saturation=distributions.saturated(batch.pre_tanh).mean(dtype=jnp.float32),
            losses=lm,
        )
        return state, metrics

    def evaluate_after(self, state: PPOState, i: jax.Array) -> EvalMetrics:
        """The evaluation logged after batch ``i`` (on the state that batch produced): one
        deterministic episode from ``eval_episode_key(state.eval_key, i)``."""
        return self.evaluate_policy(state.params.actor, state.obs_stats, state.eval_key, i)

    def evaluate_policy(self, actor_params, stats: ObsNormStats, eval_key: jax.Array,
                        i: jax.Array) -> EvalMetrics:
        """:meth:`evaluate_after` from the parts of the state it reads (what an evaluation
        elsewhere than the training device is handed)."""
        res = self.actor_episode(actor_params, stats, eval_episode_key(eval_key, i))
        return EvalMetrics(
            eval_return=res.episode_return.astype(jnp.float32), eval_steps=res.length - 1
        )

    def batch_step(self, state: PPOState, i: jax.Array) -> tuple[PPOState, TrainMetrics]:
        """Batch ``i`` with its evaluation (an UNbatched ``i`` keeps the ``cond`` a branch
        under vmap). What :meth:`train` scans; the host driver runs the same two halves,
        :meth:`update_step` and :meth:`evaluate_after`, as separate programs."""
        state, m = self.update_step(state, i)
        none = EvalMetrics(eval_return=jnp.float32(0.0), eval_steps=jnp.int32(0))
        if not self.config.evaluates:
            return state, TrainMetrics(batch=m, evaluated=jnp.bool_(False), eval=none)
        evaluated = self.config.is_eval_batch(i) & m.finite
        ev = jax.lax.cond(evaluated, lambda s: self.evaluate_after(s, i), lambda s: none, state)
        return state, TrainMetrics(batch=m, evaluated=evaluated, eval=ev)

    def train(self, key: jax.Array) -> tuple[PPOState, TrainMetrics]:
        """The whole run for one seed, with the config's hyperparameters, as ONE pure program
        (init, then a scan of :meth:`batch_step`): jit- and vmap-able. Metrics are
        ``[num_batches]``."""
        with precision(self.config):
            state = self.init(key, hyper_of(self.config))
            return jax.lax.scan(
                self.batch_step, state, jnp.arange(self.config.num_batches, dtype=jnp.int32)
            )


def precision(config: PPOConfig):
    """Matmul precision of the traced program (``None``: JAX's default)."""
    value = MATMUL[config.matmul_precision]
    return contextlib.nullcontext() if value is None else jax.default_matmul_precision(value)


def make_train(config: PPOConfig | None = None, layout: Layout | None = None,
               env: Env | None = None) -> Trainer:
    """Build one run's PPO: the env, the networks and the optimizer of ``config``.

    Args:
      config: the run's configuration (None: the tutorial's, ``PPOConfig()``).
      layout: the device mesh its programs split their arrays over (None: one device; the
        run layer builds it, :mod:`ppo_jax.run.parallel`).
      env: any object that meets the env protocol (:mod:`ppo_jax.envs.base`); None builds
        ``config.env`` from the registry. A given env's id becomes ``config.env``.

    Returns:
      A :class:`Trainer` of pure functions; ``trainer.train(key)`` is the whole run as one
      program (``jax.vmap`` it over keys for many seeds).

    Raises:
      TypeError: ``config`` is not a :class:`PPOConfig`, or ``layout`` not a layout.
      ValueError: values a new run cannot learn with, as ``fit`` refuses them
        (:meth:`PPOConfig.check_values`: a ``clip_epsilon`` above 1, whose loss is NaN in
        TorchRL; a non-finite ``lr``; ...). A checkpoint saved with one still opens
        (:func:`ppo_jax.run.checkpoint.restore`).
    """
    config = check_config(config)
    config.check_values()
    return build_trainer(config, layout, env)


def build_trainer(config: PPOConfig, layout: Layout | None = None, env: Env | None = None
                  ) -> Trainer:
    """:func:`make_train` without its check of the values: the run layer's, for a saved
    job as it was saved."""
    if layout is not None and not callable(getattr(layout, "constrain_envs", None)):
        raise TypeError("layout must be a ppo_jax.run.parallel.Layout (make_layout) or None, "
                        f"got {layout!r}")
    if env is None:
        env = make_env(config.env, config.max_episode_steps or None)
    else:
        env = check_env(env)
        if config.max_episode_steps and config.max_episode_steps != env.max_episode_steps:
            raise ValueError(
                f"max_episode_steps={config.max_episode_steps} cannot apply to the env object "
                f"{env.env_id}, which sets its own time limit ({env.max_episode_steps} steps): "
                "leave it 0, or change the env's")
        config = config.replace(env=env.env_id)
    env = with_linalg(env, config.linalg)
    return Trainer(
        config=config,
        env=env,
        actor=Actor(config.hidden_sizes, env.action_size),
        critic=Critic(config.hidden_sizes),
        optimizer=make_optimizer(config),
        layout=layout,
    )

