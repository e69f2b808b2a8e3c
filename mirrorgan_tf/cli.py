"""`mirrorgan-tf` command line: thin wrappers over library functions, one per subcommand."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cmd_info(args: argparse.Namespace) -> int:
    from mirrorgan_tf import presets

    overrides = {} if args.vocab_size is None else {"vocab_size": args.vocab_size}
    config = presets.get_config(args.preset, **overrides)
    counts = presets.parameter_counts(config)
    if args.json:
        print(json.dumps({"preset": args.preset, "config": config, "parameters": counts}, indent=2))
        return 0
    print(f"preset: {args.preset}")
    print(f"  {presets.PRESETS[args.preset]['description']}")
    print("configuration:")
    for key, value in config.items():
        if key != "training":
            print(f"  {key:24s} {value}")
    print("training:")
    for key, value in config["training"].items():
        print(f"  {key:24s} {value}")
    print("trainable parameters:")
    for key, value in counts.items():
        print(f"  {key:24s} {value:>14,}")
    print(f"  {'total':24s} {sum(counts.values()):>14,}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    print(
        "The demo will pretrain STEM (DAMSM) and STREAM, then train MirrorGAN on the built-in "
        "captioned-shapes dataset, write a sample grid with attention maps and print the shapes "
        "consistency score. The training subcommands land with the training issue."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `mirrorgan-tf` (exposed for tests and docs).

    Example:
    >>> build_parser().parse_args(["info", "--preset", "birds"]).preset
    'birds'
    """
    parser = argparse.ArgumentParser(
        prog="mirrorgan-tf",
        description="MirrorGAN text-to-image generation in Keras 3 / TensorFlow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="print a preset's configuration and parameter counts")
    info.add_argument("--preset", required=True, help="birds, coco or shapes")
    info.add_argument("--vocab-size", type=int, default=None, help="override the vocabulary size")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser("demo", help="train the whole chain on the built-in shapes dataset")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `mirrorgan-tf` with `argv` (default: the process arguments).

    Bad arguments and bad input end with a one-line error and exit status 2, not a traceback.

    Args:
        argv: the arguments after the program name.

    Example:
    >>> main(["info", "--preset", "shapes", "--json"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"mirrorgan-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
