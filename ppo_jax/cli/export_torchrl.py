#!/usr/bin/env python
"""Export a checkpoint's policy, critic and observation normalization for the TorchRL tutorial.

    python scripts/export_torchrl.py runs/demo policy.pt
    python scripts/export_torchrl.py runs/demo policy.pt --step 10 --run-index 1

The file holds the state dicts of the tutorial's actor_net and value_net and of its
ObservationNorm (ppo_jax.interop.torchrl.export describes the format); needs the torchrl extra.
"""

from __future__ import annotations


from ppo_jax.cli import common as cli

EXPORT_SUFFIXES = (".pt", ".pth")  # torch.save's: OUT never names another kind of file


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="export_torchrl.py", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="a run directory written by train.py (or its checkpoints/)")
    p.add_argument("out", help="the file to write, .pt or .pth (e.g. policy.pt)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    cli.add_run_index_flag(p, "export")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ppo_jax.interop.torchrl import export

    with cli.user_errors(export.ExportError):
        export.require_torch()
    trainer, state, source = cli.restore_for_export(args, EXPORT_SUFFIXES)
    env = trainer.env
    with cli.user_errors(export.ExportError):
        d = export.to_torchrl(state.params, state.obs_stats, trainer.config,
                              env.observation_size, env.action_size, source, env=env)
        path = export.save(d, args.out)
    print(f"wrote {path}: actor/critic {list(trainer.config.hidden_sizes)} and ObservationNorm "
          f"of {source['checkpoint']} step {source['step']} ({source['frames']} frames)")
    return 0


def run() -> None:
    """Console entry point (``ppo-jax-export-torchrl``, ``scripts/export_torchrl.py``)."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
