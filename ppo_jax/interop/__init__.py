"""Other libraries' formats: TorchRL (:mod:`~ppo_jax.interop.torchrl`: export, weight
conversion, the reference modules), ONNX (:mod:`~ppo_jax.interop.onnx_export`), and curves
against TorchRL's reference runs (:mod:`~ppo_jax.interop.compare`). Each imports its optional
extra (torch, onnx) only when called."""
