"""TorchRL: the tutorial's modules built in TorchRL (:mod:`~ppo_jax.interop.torchrl.reference`),
weights between flax and torch (:mod:`~ppo_jax.interop.torchrl.compat`), and a trained policy
exported as TorchRL modules (:mod:`~ppo_jax.interop.torchrl.export`). torch loads on first
use, never at import."""
