"""The side-by-side speed benchmark behind ``scripts/benchmark.py`` (see ``README.md`` here).

Modules: :mod:`~ppo_jax.bench.configs` (pure configuration rules), one worker per system
(:mod:`~ppo_jax.bench.worker_ppo_jax`, :mod:`~ppo_jax.bench.worker_brax`,
:mod:`~ppo_jax.bench.worker_torchrl`, run in fresh subprocesses by
:mod:`~ppo_jax.bench.worker`, measured with :mod:`~ppo_jax.bench.probes`),
:mod:`~ppo_jax.bench.driver` (rows, runs, figures), :mod:`~ppo_jax.bench.report` (tables,
notes) and :mod:`~ppo_jax.bench.cli` (flags, ``main``). The training package never imports
this one.
"""
