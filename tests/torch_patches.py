"""Test-only monkeypatches of torch (imported by the parity tests and the fixture script).

``fixed_standard_normal`` lives in :mod:`ppo_jax.interop.torchrl.reference` (the walkthrough uses it
too); it is re-exported here for the tests."""

from ppo_jax.interop.torchrl.reference import fixed_standard_normal  # noqa: F401
