"""ppo_jax's tests (a package: shared helpers import as ``tests.<module>``)."""
