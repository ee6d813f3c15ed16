"""The numerical core: pure functions of (config, key) that compile into the training program.

Data flows one way: rollout (:mod:`~ppo_jax.core.acting`) -> GAE (:mod:`~ppo_jax.core.gae`) ->
loss (:mod:`~ppo_jax.core.losses`, over :mod:`~ppo_jax.core.distributions` and
:mod:`~ppo_jax.core.networks`) -> optimizer (:mod:`~ppo_jax.core.optim`) -> next rollout, with
observation normalization (:mod:`~ppo_jax.core.normalization`) and traced hyperparameters
(:mod:`~ppo_jax.core.hyper`); :mod:`~ppo_jax.core.train` (``Trainer``, ``make_train``) puts
them together. Nothing here touches files, the program store or the command line.
"""
