"""The GPU check: every GPU-relevant test and measurement of ppo_jax in one command, within a
time budget (``bash scripts/gpu_check.sh``; :mod:`scripts.gpu_check.check`). A repository
tool: it reads the test list from ``tests/`` and runs from the repository's root."""
