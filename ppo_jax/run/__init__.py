"""The run layer: what turns the core's pure functions into a job on the host.

Which programs a job needs and how they are keyed, lowered and stored
(:mod:`~ppo_jax.run.programs`, :mod:`~ppo_jax.run.compile_cache`), the job's members
(:mod:`~ppo_jax.run.runs`), devices and processes (:mod:`~ppo_jax.run.parallel`,
:mod:`~ppo_jax.run.distributed`), the host loop (:mod:`~ppo_jax.run.runner`, ``fit``),
checkpoints (:mod:`~ppo_jax.run.checkpoint`), and what a run writes
(:mod:`~ppo_jax.run.metrics`, :mod:`~ppo_jax.run.events`) and the places inside a run
directory no other output may take (:mod:`~ppo_jax.run.run_dir`).
"""
