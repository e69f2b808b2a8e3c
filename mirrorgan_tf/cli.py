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
    from mirrorgan_tf.demo import run_demo

    level = {} if args.level is None else {"level": args.level}
    run_demo(out=args.out, scale=args.scale, save_to=args.save_to, seed=args.seed, **level)
    return 0


def _training_kwargs(args: argparse.Namespace) -> dict:
    return {
        "preset": args.preset,
        "data": args.data,
        "out": args.out,
        "steps": args.steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "mixed_precision": args.mixed_precision,
        "jit_compile": args.jit_compile,
        "strategy": args.strategy,
    }


def _cmd_pretrain_stem(args: argparse.Namespace) -> int:
    from mirrorgan_tf.training.run import pretrain_stem

    pretrain_stem(**_training_kwargs(args))
    return 0


def _cmd_pretrain_stream(args: argparse.Namespace) -> int:
    from mirrorgan_tf.training.run import pretrain_stream

    pretrain_stream(**_training_kwargs(args), trunk_from=args.trunk_from)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mirrorgan_tf.training.run import train

    train(
        stem=args.stem,
        stream=args.stream,
        init=args.init,
        sample_every=args.sample_every,
        curriculum=args.curriculum,
        eval_every=args.eval_every,
        eval_captions=args.eval_captions,
        **_training_kwargs(args),
    )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from mirrorgan_tf.task import TextToImage
    from mirrorgan_tf.visualize import save_generation_grid

    model = TextToImage.from_preset(args.model, captioner=False)
    result = model.generate(args.captions, seed=args.seed, return_attention=True)
    save_generation_grid(result, args.captions, args.out)
    print(f"Wrote {args.out}: {len(args.captions)} caption(s), every stage and attention maps.")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mirrorgan_tf.export import export

    paths = export(
        args.model,
        args.out,
        format=args.format,
        version=args.version,
        quantize=args.quantize,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    for path in paths:
        print(f"Wrote {path}")
    return 0


def _cmd_prepare_data(args: argparse.Namespace) -> int:
    from mirrorgan_tf.data.tfrecords import prepare_data

    count = prepare_data(
        format=args.format,
        data_dir=args.data_dir,
        split=args.split,
        out=args.out,
        shards=args.shards,
        skip_corrupt=args.skip_corrupt,
    )
    print(f"Wrote {count:,} examples to {args.out}-*.tfrecord")
    return 0


def _add_training_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--preset", default="shapes", help="shapes, birds or coco")
    parser.add_argument(
        "--data",
        default="shapes",
        help="'shapes' (built in; 'shapes:easy', 'shapes:medium', 'shapes:full' pick its "
        "difficulty, 'shapes' is full), an AttnGAN-layout folder, or a TFRecords prefix",
    )
    parser.add_argument("--out", default=default_out, help="run folder (re-running resumes)")
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    parser.add_argument("--epochs", type=int, default=None, help="passes over the train split")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0, help="makes the run repeat")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="steps")
    parser.add_argument(
        "--mixed-precision", choices=["bfloat16", "float16"], default=None,
        help="mixed precision policy (loss scaling for float16)",
    )
    parser.add_argument("--jit-compile", action="store_true", help="compile steps with XLA")
    parser.add_argument(
        "--strategy", choices=["mirrored", "multi_worker"], default=None,
        help="tf.distribute strategy (multi_worker reads TF_CONFIG)",
    )


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
    demo.add_argument("--out", default="runs/demo", help="folder of the demo's runs")
    demo.add_argument("--scale", type=float, default=1.0, help="multiplies every step count")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--level", default=None, choices=["easy", "medium", "full"],
        help="level of the built-in dataset to train on and score (default: the demo's, easy)",
    )
    demo.add_argument("--save-to", default=None, help="also write the model and its exports here")
    demo.set_defaults(func=_cmd_demo)

    stem = sub.add_parser("pretrain-stem", help="DAMSM pretraining of STEM (text encoder)")
    _add_training_arguments(stem, "runs/stem")
    stem.set_defaults(func=_cmd_pretrain_stem)

    stream = sub.add_parser("pretrain-stream", help="pretraining of STREAM (captioner)")
    _add_training_arguments(stream, "runs/stream")
    stream.add_argument(
        "--trunk-from", default=None,
        help="pretrain-stem run whose small image-encoder trunk starts STREAM's (shapes)",
    )
    stream.set_defaults(func=_cmd_pretrain_stream)

    train = sub.add_parser("train", help="train MirrorGAN with STEM and STREAM frozen")
    _add_training_arguments(train, "runs/mirrorgan")
    train.add_argument("--stem", required=True, help="pretrain-stem run folder")
    train.add_argument("--stream", required=True, help="pretrain-stream run folder")
    train.add_argument("--init", default=None, help="preset folder to fine-tune from")
    train.add_argument("--sample-every", type=int, default=200, help="steps between grids")
    train.add_argument(
        "--curriculum", default=None, metavar="LEVEL:STEPS,...,LEVEL",
        help="shapes data: move through levels, e.g. easy:2000,medium:2000,full (the last "
        "level trains until --steps; level changes must be multiples of --checkpoint-every)",
    )
    train.add_argument(
        "--eval-every", type=int, default=None, metavar="N",
        help="shapes data: every N steps score the moving-average generator on held-out "
        "captions (learning_curve.csv/.png in the run folder, and TensorBoard)",
    )
    train.add_argument("--eval-captions", type=int, default=128,
                       help="held-out captions per --eval-every evaluation")
    train.set_defaults(func=_cmd_train)

    generate = sub.add_parser("generate", help="captions in, a grid PNG out")
    generate.add_argument("--model", required=True, help="run folder, preset folder or name")
    generate.add_argument("captions", nargs="+", help="one or more captions")
    generate.add_argument("--out", default="generated.png", help="the grid PNG")
    generate.add_argument("--seed", type=int, default=None, help="same seed, same image")
    generate.set_defaults(func=_cmd_generate)

    export = sub.add_parser("export", help="SavedModel for TF Serving, or TFLite")
    export.add_argument("--model", required=True, help="run folder, preset folder or name")
    export.add_argument(
        "--out", required=True,
        help="saved_model: BASE/NAME (the version folder goes inside); tflite: a file or folder",
    )
    export.add_argument("--format", choices=["saved_model", "tflite"], default="saved_model")
    export.add_argument("--version", type=int, default=1, help="TF Serving version folder")
    export.add_argument("--quantize", choices=["none", "float16", "dynamic"], default="none")
    export.add_argument("--batch-size", type=int, default=1, help="TFLite's fixed batch size")
    export.add_argument(
        "--precision", choices=["float32", "bfloat16"], default="float32",
        help="SavedModel generator compute type (bfloat16: faster on AVX512-BF16 CPUs)",
    )
    export.set_defaults(func=_cmd_export)

    prepare = sub.add_parser("prepare-data", help="write sharded TFRecords of a dataset")
    prepare.add_argument("--format", default="attngan", choices=["attngan"])
    prepare.add_argument("--data-dir", required=True, help="the AttnGAN-layout folder")
    prepare.add_argument("--split", default="train", choices=["train", "test"])
    prepare.add_argument("--out", required=True, help="prefix of the shards")
    prepare.add_argument("--shards", type=int, default=8)
    prepare.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images")
    prepare.set_defaults(func=_cmd_prepare_data)

    from mirrorgan_tf.convert.torch import add_convert_arguments, run_convert
    from mirrorgan_tf.evaluation.evaluate import add_evaluate_arguments, run_evaluate

    evaluate = sub.add_parser("evaluate", help="IS, FID, R-precision, shapes consistency")
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=run_evaluate)

    convert = sub.add_parser("convert", help="published PyTorch checkpoints -> a preset folder")
    add_convert_arguments(convert)
    convert.set_defaults(func=run_convert)
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
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"mirrorgan-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
