"""Draw ppo_jax runs against TorchRL runs on the tutorial's four panels.

    python scripts/compare.py runs/demo --reference tutorial --out compare.png
    python scripts/compare.py runs/a runs/b --reference torchrl_seed0.json torchrl_seed1.json

``--reference tutorial`` is the TorchRL tutorial's own runs (seeds 0-2, measured with TorchRL
0.14.1 on 2 CPU cores; ppo_jax/data/torchrl_reference/README.md says how). Frames are on the
x-axis; the seeds of a run (or the reference files together) are drawn as mean and band.
"""

from __future__ import annotations

import os

from ppo_jax.cli import common as cli

# matplotlib's formats that are not an image file by themselves
NOT_IMAGES = ("raw", "rgba", "pgf")


def image_suffixes() -> tuple[str, ...]:
    """The suffixes ``--out`` may end in: matplotlib's image formats."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(f".{k}" for k in sorted(FigureCanvasBase.get_supported_filetypes())
                 if k not in NOT_IMAGES)


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories written by train.py")
    p.add_argument("--reference", nargs="*", default=["tutorial"], metavar="FILE",
                   help="TorchRL runs in the reference format, 'tutorial' (default) for the "
                        "packaged tutorial runs, 'none' (or no value) for no reference")
    p.add_argument("--labels", nargs="*", default=None, help="legend labels of the runs")
    p.add_argument("--out", default="compare.png", help="the PNG to write")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.out and not os.path.splitext(args.out)[1] and not os.path.isdir(args.out):
        # no format named: a PNG, as matplotlib writes it, and the line says its name
        args.out += ".png"
    cli.check_output_file(args.out, "--out", image_suffixes(), create=False)
    from ppo_jax.interop import compare
    from ppo_jax.run.run_dir import taken_back_if_empty

    # its folder is made where it can be written, and taken back where the runs are refused
    with taken_back_if_empty(os.path.dirname(os.path.abspath(args.out))):
        cli.check_output_file(args.out, "--out", image_suffixes())
        try:
            path = compare.compare(args.runs, args.reference, args.out, args.labels)
        except compare.CompareError as e:
            raise cli.CLIError(str(e)) from None
    print(f"wrote {path}")
    return 0


def run() -> None:
    """Console entry point (``ppo-jax-compare``, ``scripts/compare.py``)."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
