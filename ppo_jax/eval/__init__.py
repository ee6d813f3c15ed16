"""Evaluation of a trained policy: in MJX or in MuJoCo C, a restored policy as a plain numpy
function (:mod:`~ppo_jax.eval.evaluate`, ``load_policy``), and video
(:mod:`~ppo_jax.eval.render`, with MuJoCo's offscreen GL backend chosen by
:mod:`~ppo_jax.eval.gl`)."""
