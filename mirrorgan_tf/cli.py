"""`mirrorgan-tf` command line: thin wrappers over library functions, one per subcommand.

This module imports no TensorFlow: `--help` of every command answers at once, and a command
imports the library it runs only when it runs. TensorFlow's C++ start-up lines (oneDNN, CUDA
probing, "All log messages before absl::InitializeLog()") are written to the process's stderr
before any log level applies, so `main` imports TensorFlow with stderr set aside and shows
what it held only if the import fails; `--verbose`, or a `TF_CPP_MIN_LOG_LEVEL` of the
user's own, shows everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence


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

    run_demo(out=args.out, scale=args.scale, save_to=args.save_to, seed=args.seed,
             level=args.level, schedule=args.schedule)
    return 0


def _training_kwargs(args: argparse.Namespace) -> dict:
    kwargs = {
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
        "curriculum": args.curriculum,
    }
    overrides = parse_set_values(args.set_values)
    clashes = sorted(set(overrides) & set(kwargs))
    if clashes:
        key = clashes[0]
        raise ValueError(f"--set {key}=...: {key} is an option, --{key.replace('_', '-')}")
    return {**kwargs, **overrides}


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
        fresh_discriminators=args.fresh_discriminators,
        sample_every=args.sample_every,
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


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="run folder, preset folder or name")
    parser.add_argument("--data", required=True, help="shapes, AttnGAN folder or TFRecords")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument(
        "--metrics", default=None,
        help="comma-separated: is,fid,kid,r_precision,shapes (default: every metric the model "
        "and data allow; the report says which were skipped and why)",
    )
    parser.add_argument("--num-images", type=int, default=30_000, help="images to generate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="noise and caption draws")
    parser.add_argument("--out", default=None, help="the JSON report")
    parser.add_argument("--save-images", default=None, help="also keep the PNGs here")
    parser.add_argument("--reference-stats", default=None, help="FID statistics (.npz)")
    parser.add_argument(
        "--compute-reference-stats", default=None, metavar="OUT.npz",
        help="compute the real images' FID statistics into this file (then evaluate with "
        "them when --model is given)",
    )
    parser.add_argument(
        "--num-reference-images", type=int, default=None, help="default: the whole split"
    )
    parser.add_argument(
        "--image-size", type=int, default=None,
        help="size of the real images for --compute-reference-stats (default: the model's, "
        "else 256)",
    )
    parser.add_argument(
        "--fid-backend", default="keras", choices=("keras", "pytorch-fid"),
        help="the Inception network of IS/FID/KID: keras (Keras' ImageNet InceptionV3) or "
        "pytorch-fid (its FID Inception, as published tables use; --inception-weights "
        "pt_inception-2015-12-05-6726825d.pth)",
    )
    parser.add_argument(
        "--inception-weights", default="imagenet",
        help="keras backend: imagenet, none (random: smoke tests only) or a converted "
        ".weights.h5/.keras; pytorch-fid backend: its .pth (or a .weights.h5 saved from it)",
    )
    parser.add_argument("--kid-subsets", type=int, default=100, help="KID's subsets")
    parser.add_argument(
        "--kid-subset-size", type=int, default=1000, help="images per KID subset"
    )
    parser.add_argument(
        "--damsm", default=None,
        help="DAMSM for R-precision: a pretrain-stem run or preset folder (default: the "
        "model's image_encoder)",
    )
    parser.add_argument(
        "--r-precision-candidates", type=int, default=100, help="captions ranked per image"
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mirrorgan_tf import presets
    from mirrorgan_tf.evaluation.evaluate import (
        compute_reference_statistics,
        evaluate,
        load_inception,
    )
    from mirrorgan_tf.task import resolve_preset

    if args.model is None and args.compute_reference_stats is None:
        raise ValueError("pass --model, or --compute-reference-stats OUT.npz, or both")
    weights = None if str(args.inception_weights).lower() == "none" else args.inception_weights
    classifier = None
    reference = args.reference_stats
    if args.compute_reference_stats is not None:
        image_size = args.image_size or 256
        if args.model is not None and args.image_size is None:
            # The config alone (no weights are built): the generated images' size.
            config = presets.from_preset(resolve_preset(args.model), components=[])["config"]
            image_size = presets.image_sizes(config)[-1]
        classifier = load_inception(weights, args.fid_backend)
        compute_reference_statistics(
            args.data, args.split, args.compute_reference_stats, args.num_reference_images,
            args.batch_size, image_size=image_size, inception=classifier,
        )
        print(f"wrote {args.compute_reference_stats}")
        reference = args.compute_reference_stats
    if args.model is None:
        return 0
    evaluate(
        args.model,
        args.data,
        metrics=args.metrics,
        num_images=args.num_images,
        batch_size=args.batch_size,
        seed=args.seed,
        reference_stats=reference,
        inception_weights=weights,
        save_images=args.save_images,
        out=args.out,
        split=args.split,
        damsm=args.damsm,
        num_candidates=args.r_precision_candidates,
        num_reference_images=args.num_reference_images,
        inception=classifier,
        fid_backend=args.fid_backend,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
    )
    return 0


def _add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, choices=("birds", "coco"),
                        help="gives what the tensors cannot tell (words per caption, "
                        "backbones, training settings); network sizes are read from the "
                        "checkpoints")
    parser.add_argument("--out", required=True, metavar="PRESET_DIR",
                        help="preset folder to write (replaced if it exists)")
    parser.add_argument("--captions", metavar="PICKLE",
                        help="AttnGAN captions.pickle: the vocabulary (vocabulary.txt)")
    parser.add_argument("--text-encoder", metavar="PTH", help="DAMSM text_encoder*.pth")
    parser.add_argument("--image-encoder", metavar="PTH", help="DAMSM image_encoder*.pth")
    parser.add_argument("--generator", metavar="PTH",
                        help="MirrorGAN or AttnGAN generator (e.g. bird_AttnGAN2.pth)")
    parser.add_argument("--discriminators", nargs="+", metavar="PTH",
                        help="up to three D_NET64/128/256 state_dicts, any order")
    parser.add_argument("--captioner-encoder", metavar="PTH", help="STREAM encoder (EncoderCNN)")
    parser.add_argument("--captioner-decoder", metavar="PTH", help="STREAM decoder (DecoderRNN)")
    parser.add_argument("--attngan-fusion", choices=("identity", "fresh"), default="identity",
                        help="fusion conv of an AttnGAN generator: pass-through (identity, "
                             "reproduces AttnGAN) or fresh random weights")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _add_set_argument(parser, "over the sizes read from the checkpoints and the preset")


def _add_set_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="set_values",
        help=f"a configuration value {what}, e.g. --set r_num=3 or --set "
        "training.batch_size=4 (repeatable; VALUE is read as JSON when it parses: 3, 0.5, "
        "true, null)",
    )


def parse_set_values(items: Sequence[str]) -> dict:
    """`--set KEY=VALUE` arguments as configuration overrides (`KEY.SUB` nests).

    Args:
        items: the `KEY=VALUE` strings.

    Raises:
        ValueError: for an item without `=` or with an empty key.

    Example:
    >>> parse_set_values(["r_num=3", "rnn_type=gru", "training.ca_noise=false"])
    {'r_num': 3, 'rnn_type': 'gru', 'training': {'ca_noise': False}}
    """
    overrides: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE; got {item!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = key.strip().split(".")
        target = overrides
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return overrides


def _cmd_convert(args: argparse.Namespace) -> int:
    from mirrorgan_tf.convert.torch import convert_checkpoints

    convert_checkpoints(
        preset=args.preset,
        out=args.out,
        captions=args.captions,
        text_encoder=args.text_encoder,
        image_encoder=args.image_encoder,
        generator=args.generator,
        discriminators=args.discriminators,
        captioner_encoder=args.captioner_encoder,
        captioner_decoder=args.captioner_decoder,
        verbose=not args.quiet,
        attngan_fusion=args.attngan_fusion,
        config_overrides=parse_set_values(args.set_values),
    )
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
        "--curriculum", default=None, metavar="LEVEL:STEPS,...,LEVEL",
        help="shapes data: move through levels, e.g. easy:2000,medium:2000,full (the last "
        "level trains until --steps; level changes must be multiples of --checkpoint-every)",
    )
    parser.add_argument(
        "--mixed-precision", choices=["bfloat16", "float16"], default=None,
        help="mixed precision policy (loss scaling for float16)",
    )
    parser.add_argument("--jit-compile", action="store_true", help="compile steps with XLA")
    parser.add_argument(
        "--strategy", choices=["mirrored", "multi_worker"], default=None,
        help="tf.distribute strategy (multi_worker reads TF_CONFIG)",
    )
    _add_set_argument(parser, "over the preset's (give the same ones when resuming)")


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
    parser.add_argument("--verbose", action="store_true", help=_VERBOSE_HELP)
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
        help="level of the built-in dataset to end on and score (default: the schedule's)",
    )
    demo.add_argument(
        "--schedule", default="demo", choices=["demo", "ship"],
        help="demo: 20 minutes on shapes:easy; ship: the shipped model's longer schedule, "
             "ending on the full distribution (make shipped-model)",
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
    train.add_argument("--fresh-discriminators", action="store_true",
                       help="with --init, start the discriminators fresh all the same")
    train.add_argument("--sample-every", type=int, default=200, help="steps between grids")
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

    evaluate = sub.add_parser("evaluate", help="IS, FID, R-precision, shapes consistency")
    _add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    convert = sub.add_parser("convert", help="published PyTorch checkpoints -> a preset folder")
    _add_convert_arguments(convert)
    convert.set_defaults(func=_cmd_convert)

    for command in sub.choices.values():
        # SUPPRESS: absent here, the top-level flag's value stands (`mirrorgan-tf --verbose X`).
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help=_VERBOSE_HELP)
    return parser


_VERBOSE_HELP = "show TensorFlow's log lines, and a traceback on errors"
# Errors of input (paths, names, values) end in one line; anything else is a bug: traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError)


@contextlib.contextmanager
def _stderr_set_aside() -> Iterator[None]:
    """Sends file descriptor 2 to a temporary file; replays it if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", errors="replace"))


def start_tensorflow(verbose: bool = False) -> None:
    """Imports TensorFlow without its C++ start-up lines, unless asked for them.

    Sets `TF_CPP_MIN_LOG_LEVEL=3` and imports TensorFlow and probes its devices with stderr
    set aside. Level 3, not 2: on a CPU machine TensorFlow logs harmless lines at ERROR level
    too (the CUDA probe's "failed call to cuInit", oneDNN's "supports DT_BOOL only ..."); a
    real failure still reaches the user as the Python exception. Does nothing when `verbose`,
    when the user set `TF_CPP_MIN_LOG_LEVEL`, or when TensorFlow is already imported.

    Args:
        verbose: leave TensorFlow's logging as it is.

    Example:
    >>> start_tensorflow()
    >>> "tensorflow" in sys.modules
    True
    """
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with _stderr_set_aside():
        import tensorflow as tf

        tf.config.list_physical_devices()


def _is_user_error(error: BaseException) -> bool:
    if isinstance(error, _USER_ERRORS):
        return True
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(error, tf.errors.OpError)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `mirrorgan-tf` with `argv` (default: the process arguments).

    Bad arguments and bad input end with a one-line error and exit status 2, not a traceback
    (`--verbose` shows the traceback); Ctrl-C ends with status 130 (training runs resume from
    their last checkpoint).

    Args:
        argv: the arguments after the program name.

    Example:
    >>> main(["info", "--preset", "shapes", "--json"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        start_tensorflow(args.verbose)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"mirrorgan-tf {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.verbose or not _is_user_error(error):
            raise
        message = str(error) or type(error).__name__
        print(f"mirrorgan-tf {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
