#!/usr/bin/env python
"""Export a checkpoint's policy as one ONNX graph: observations -> deterministic actions.

    python scripts/export_onnx.py runs/demo policy.onnx
    python scripts/export_onnx.py runs/demo policy.onnx --eval-action tanh_loc
    python scripts/export_onnx.py runs/demo policy.onnx --step 10 --run-index 1

The graph takes raw observations [batch, 11] float32 (batch dynamic) and applies the run's
observation normalization, the actor and the deterministic action (ppo_jax.interop.onnx_export
describes it); it is checked with onnxruntime before it is written. Needs the onnx extra.
"""

from __future__ import annotations


from ppo_jax.cli import common as cli

EXPORT_SUFFIXES = (".onnx",)  # an ONNX model's: OUT never names another kind of file


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="export_onnx.py", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="a run directory written by train.py (or its checkpoints/)")
    p.add_argument("out", help="the file to write, .onnx (e.g. policy.onnx)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    cli.add_run_index_flag(p, "export")
    p.add_argument("--eval-action", choices=("mean", "tanh_loc"), default=None,
                   help="deterministic action in the graph (default: the run's eval_action); "
                   "tanh_loc is TorchRL's ExplorationType.DETERMINISTIC")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ppo_jax.interop import onnx_export

    with cli.user_errors(onnx_export.OnnxExportError):
        onnx_export.require_onnx()
        onnx_export.require_onnxruntime()
        onnx_export.check_opset(args.opset)  # before the checkpoint is read
    trainer, state, source = cli.restore_for_export(args, EXPORT_SUFFIXES)
    mode = args.eval_action or trainer.config.eval_action
    with cli.user_errors(onnx_export.OnnxExportError):
        path = onnx_export.export_onnx(trainer, state, args.out, mode, opset=args.opset,
                                       metadata=source)
    env = trainer.env
    print(f"wrote {path}: obs [batch, {env.observation_size}] float32 -> action [batch, "
          f"{env.action_size}] ({mode}), ObservationNorm and actor "
          f"{list(trainer.config.hidden_sizes)} of {source['checkpoint']} step "
          f"{source['step']} ({source['frames']} frames), opset {args.opset}")
    return 0


def run() -> None:
    """Console entry point (``scripts/export_onnx.py``)."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
