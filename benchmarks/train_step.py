"""Seconds per full MirrorGAN iteration, images/s and achieved GFLOP/s; prints JSON.

One iteration = every discriminator updated once (three for 3 stages) and one generator update
with STREAM's caption loss, exactly `MirrorGANTrainer.train_step`. FLOPs are nominal: counted
once from the traced step's graph with TensorFlow's profiler (a multiply-add counts 2; the
backward convolutions and matmuls are included; the bodies of the LSTMs' while-loops are not,
which undercounts by well under 1%). The machine's dense matmul rate is measured in the same
process so that runs on busy machines compare by ratio.

    python benchmarks/train_step.py --preset birds --batch-size 4
    python benchmarks/train_step.py --preset birds --batch-size 4 --mixed-precision bfloat16

For birds, `against_published` divides the published iteration's 677 nominal GFLOP (batch 4)
by our time and the matmul rate: 0.45 is the published speed, 0.68 is 1.5x (reference.py),
a ratio measured once on another machine. `--against-torch` measures it instead: the
published iteration (`tests/convert/torch_reference.PublishedIteration`: three discriminator
updates, the generator update with every stage's adversarial terms, KL and lambda x the
caption loss through ResNet-152 and the LSTM decoder, Adam, moving average) at the same
configuration, batch and thread count, timed in this process interleaved with ours (one
iteration of each in turn, after a warm-up of each), in float32 (PyTorch's CPU path has no
mixed_bfloat16 counterpart of the published code).

    python benchmarks/train_step.py --preset birds --batch-size 4 --against-torch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from reference import against_published, matmul_gflops  # noqa: E402

from mirrorgan_tf import presets  # noqa: E402
from mirrorgan_tf.networks.text_encoder import caption_mask  # noqa: E402
from mirrorgan_tf.training.mirrorgan import MirrorGANTrainer, published_adam  # noqa: E402

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def graph_flops(concrete) -> int:
    from tensorflow.python.profiler import model_analyzer, option_builder

    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(model_analyzer.profile(concrete.graph, options=options).total_float_ops)


def timed(fn, args, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
    return (time.perf_counter() - start) / repeats


def synthetic_batch(config: dict, batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    t = config["words_num"]
    lengths = rng.integers(t // 2, t + 1, size=batch)
    ids = rng.integers(2, config["vocab_size"], size=[batch, t])
    ids[np.arange(t)[None, :] >= lengths[:, None]] = 0
    return {
        "images": tuple(
            tf.constant(rng.uniform(-1, 1, [batch, s, s, 3]), tf.float32)
            for s in presets.image_sizes(config)
        ),
        "token_ids": tf.constant(ids, tf.int32),
        "caption_length": tf.constant(lengths, tf.int32),
        "class_id": tf.constant(rng.integers(0, 200, batch), tf.int32),
    }


def breakdown(trainer: MirrorGANTrainer, data: dict, repeats: int, jit: bool) -> dict:
    """Forward and forward+backward seconds of each network, as used in one iteration."""
    g, cap, te = trainer.generator, trainer.captioner, trainer.text_encoder
    token_ids = data["token_ids"]
    words, sentence = te(token_ids)
    mask = caption_mask(token_ids)
    noise = tf.random.normal([token_ids.shape[0], g.z_dim])
    fn = lambda f: tf.function(f, jit_compile=jit)  # noqa: E731
    result = {}

    def g_forward():
        return g(noise, sentence, words, mask, training=True)["images"]

    def g_backward():
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_mean(x) for x in g_forward()])
        return tape.gradient(loss, g.trainable_variables)

    result["text_encoder_forward"] = timed(fn(lambda: te(token_ids)), (), repeats)
    result["generator_forward"] = timed(fn(g_forward), (), repeats)
    result["generator_forward_backward"] = timed(fn(g_backward), (), repeats)
    for d, real in zip(trainer.discriminators, data["images"], strict=True):

        def d_forward(d=d, real=real):
            code = d.encode(real, training=True)
            return d.unconditional_logits(code), d.conditional_logits(code, sentence, True)

        def d_backward(d=d, real=real):
            with tf.GradientTape() as tape:
                tape.watch(real)
                u, c = d_forward(d, real)
                loss = tf.reduce_mean(u) + tf.reduce_mean(c)
            return tape.gradient(loss, [real, *d.trainable_variables])

        result[f"discriminator_{d.image_size}_forward"] = timed(fn(d_forward), (), repeats)
        result[f"discriminator_{d.image_size}_forward_backward"] = timed(
            fn(d_backward), (), repeats
        )
    image = data["images"][-1]

    def cap_forward():
        return cap(image, token_ids, training=False)

    def cap_backward():  # STREAM is frozen: gradients w.r.t. the image only
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(tf.cast(cap_forward(), tf.float32))
        return tape.gradient(loss, image)

    result["captioner_forward"] = timed(fn(cap_forward), (), repeats)
    result["captioner_forward_backward_to_image"] = timed(fn(cap_backward), (), repeats)
    return {k: round(v, 4) for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="birds")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixed-precision", choices=list(POLICIES), default="float32")
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--vocab-size", type=int, default=None)
    parser.add_argument("--against-torch", action="store_true",
                        help="also time the published PyTorch iteration, interleaved")
    args = parser.parse_args()

    keras.mixed_precision.set_global_policy(POLICIES[args.mixed_precision])
    overrides = {} if args.vocab_size is None else {"vocab_size": args.vocab_size}
    config = presets.get_config(args.preset, **overrides)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    sizes = presets.image_sizes(config)
    trainer = MirrorGANTrainer(
        presets.build_component("text_encoder", config),
        presets.build_component("generator", config),
        [presets.build_component(f"discriminator_{s}", config) for s in sizes],
        presets.build_component("captioner", config),
        caption_loss_weight=config["training"]["caption_loss_weight"],
        seed=0,
    )
    trainer.compile(g_optimizer=published_adam(), d_optimizer=published_adam())
    build_s = time.perf_counter() - start
    data = synthetic_batch(config, args.batch_size)

    step = tf.function(trainer.train_step, jit_compile=args.jit_compile)
    concrete = step.get_concrete_function(data)
    flops = graph_flops(concrete)
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), step(data))
    first_s = time.perf_counter() - start
    seconds = timed(step, (data,), args.repeats, warmup=1)
    gflops = flops / seconds / 1e9

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    report = {
        "benchmark": "train_step",
        "preset": args.preset,
        "batch_size": args.batch_size,
        "precision": args.mixed_precision,
        "jit_compile": args.jit_compile,
        "device": device,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor()},
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "build_seconds": round(build_s, 2),
        "first_step_seconds": round(first_s, 2),
        "seconds_per_iteration": round(seconds, 4),
        "images_per_second": round(args.batch_size / seconds, 3),
        "nominal_gflop_per_iteration": round(flops / 1e9, 1),
        "achieved_gflop_per_second": round(gflops, 1),
        "matmul_gflop_per_second_float32": round(matmul_gflops("float32"), 1),
    }
    report["ratio_to_float32_matmul"] = round(gflops / report["matmul_gflop_per_second_float32"], 3)
    if args.preset == "birds":
        # Our graph does less work for the same function (up-sampling convs on the low-res
        # grid), so compare the published work per unit of time, not our own FLOP rate.
        report["against_published"] = against_published(
            "train", seconds, report["matmul_gflop_per_second_float32"], args.batch_size
        )
    if args.mixed_precision != "float32":
        report[f"matmul_gflop_per_second_{args.mixed_precision}"] = round(
            matmul_gflops(args.mixed_precision), 1
        )
    if args.against_torch:
        report["against_torch"] = against_torch(config, data, step, args.repeats)
    if not args.no_breakdown:
        report["seconds_by_network"] = breakdown(trainer, data, args.repeats, args.jit_compile)
    print(json.dumps(report, indent=2))


def against_torch(config: dict, data: dict, step, repeats: int) -> dict:
    """Our step and the published PyTorch iteration, timed in turn: seconds and the ratio."""
    import torch_published

    iteration, torch = torch_published.build(config)
    inputs = torch_published.batch_to_torch(data, torch)
    iteration(*inputs)  # warm-up (ours is warm)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(timed(step, (data,), repeats=1, warmup=0))
        theirs.append(timed(iteration, inputs, repeats=1, warmup=0))
    mean_ours, mean_theirs = float(np.mean(ours)), float(np.mean(theirs))
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "seconds_per_iteration_ours": round(mean_ours, 4),
        "seconds_per_iteration_published_torch": round(mean_theirs, 4),
        "speedup": round(mean_theirs / mean_ours, 3),
        "ours_each": [round(x, 4) for x in ours],
        "published_torch_each": [round(x, 4) for x in theirs],
    }


if __name__ == "__main__":
    main()
