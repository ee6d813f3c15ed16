"""The commands (``scripts/*.py`` and the ``ppo-jax-*`` console scripts): one module each, on
the shared plumbing of :mod:`~ppo_jax.cli.common` (flags generated from ``PPOConfig``,
one-line errors, the compile cache)."""
