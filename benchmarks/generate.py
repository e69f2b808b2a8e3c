"""Generation latency and model sizes: Keras eager, tf.function, SavedModel, TFLite.

Random weights of a named preset (the vocabulary is the placeholder of
`task.default_vocabulary`), STEM + GLAM only (no captioner). Prints one JSON object:
per-image latency in ms (median over `--repeats` timed calls after one warm-up call) at each
batch size, and model sizes in MB.

- keras_eager, tf_function, saved_model: captions in, uint8 images out (tokenization inside);
  saved_model_bfloat16: the same SavedModel with the generator in bfloat16 (`--precision`);
  task_generate: `TextToImage.generate` (traced; adds the seeded noise and the uint8 copy).
- tflite_float32, tflite_float16: token ids + noise in, float images out (LiteRT, fixed batch;
  the tokenization runs in Python outside the timing).

For birds, `speedup_vs_published` compares each latency with the published 16.8 GFLOP per
image at 0.62 of the fp32 matmul rate measured in the same process (reference.py); 1.5 is the
target. `--against-torch` measures the published code instead: `published_torch` is the
PyTorch restatement of the published text encoder and G_NET (`benchmarks/torch_published.py`,
eval mode, no gradients, token ids and noise in, uint8 out) timed in the same loop as the
other paths, and `speedup_vs_torch` divides its latency by each path's.

Usage:
    python benchmarks/generate.py --preset birds --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

CAPTIONS = [
    "this bird has a red crown and a short black beak",
    "a small yellow bird with grey wings and a white belly",
    "the bird is blue with a long tail and black feet",
    "a brown bird with white stripes on its wings",
    "this small bird has an orange breast and a pointed bill",
    "a black bird with a red patch on its wing",
    "a green bird with a yellow throat and dark eyes",
    "this bird is white with black wingbars and a thin beak",
]


def _folder_mb(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return round(total / 1e6, 2)


def _time_per_image(fn, batch: int, repeats: int) -> float:
    fn()  # warm-up: tracing, kernel selection, allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000.0 * statistics.median(times) / batch, 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="birds", help="birds, coco or shapes")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
    parser.add_argument(
        "--batch-sizes", default="1,8", help="comma-separated batch sizes (default 1,8)"
    )
    parser.add_argument("--skip-tflite", action="store_true", help="no TFLite conversions")
    parser.add_argument("--against-torch", action="store_true",
                        help="also time the published PyTorch generator in the same loop")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batch_sizes.split(",")]

    import keras
    import numpy as np
    import tensorflow as tf

    from mirrorgan_tf import presets
    from mirrorgan_tf.export.saved_model import (
        export_saved_model,
        uint8_images,
        with_bfloat16_generator,
    )
    from mirrorgan_tf.export.tflite import export_tflite
    from mirrorgan_tf.task import TextToImage

    keras.utils.set_random_seed(0)
    model = TextToImage.from_preset(args.preset, captioner=False)
    z_dim = model.config["z_dim"]
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(max(batches))]
    result: dict = {
        "preset": args.preset,
        "image_size": model.image_size,
        "repeats": args.repeats,
        "batch_sizes": batches,
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "params": {
            "text_encoder": presets.count_params(model.text_encoder),
            "generator": presets.count_params(model.generator),
        },
        "latency_ms_per_image": {},
        "sizes_mb": {},
        "export_seconds": {},
    }
    latency = result["latency_ms_per_image"]
    weights = sum(
        int(np.prod(v.shape)) * 4
        for m in (model.text_encoder, model.generator)
        for v in m.weights
    )
    result["sizes_mb"]["keras_float32_weights"] = round(weights / 1e6, 2)

    def generate_eager(batch_captions, noise):
        token_ids, _ = model.tokenizer(batch_captions)
        words, sentence = model.text_encoder(token_ids, training=False)
        out = model.generator(
            noise, sentence, words, tf.not_equal(token_ids, 0),
            training=False, deterministic=True,
        )
        return uint8_images(out["images"][-1])

    generate_graph = tf.function(
        generate_eager,
        input_signature=[
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None, z_dim], tf.float32),
        ],
    )

    torch_generate = None
    if args.against_torch:
        import torch_published

        torch_generate, torch = torch_published.build_generation(model.config)
        result["machine"]["torch"] = torch.__version__
        result["machine"]["torch_threads"] = torch.get_num_threads()

    with tempfile.TemporaryDirectory(prefix="mirrorgan-bench-") as tmp:
        servings = {}  # latency key -> the loaded SavedModel's seeded `generate` signature
        for name, exported in (
            ("saved_model", model),
            ("saved_model_bfloat16", with_bfloat16_generator(model)),
        ):
            start = time.perf_counter()
            saved = export_saved_model(exported, tmp, name=name)
            result["export_seconds"][name] = round(time.perf_counter() - start, 1)
            result["sizes_mb"][name] = _folder_mb(saved)
            servings[name] = tf.saved_model.load(saved).signatures["generate"]

        for b in batches:
            batch_captions = captions[:b]
            noise = tf.random.stateless_normal([b, z_dim], seed=[0, 0])
            key = str(b)
            latency.setdefault("keras_eager", {})[key] = _time_per_image(
                lambda bc=batch_captions, n=noise: generate_eager(tf.constant(bc), n).numpy(),
                b, args.repeats,
            )
            latency.setdefault("task_generate", {})[key] = _time_per_image(
                lambda bc=batch_captions: model.generate(bc, seed=0), b, args.repeats
            )
            latency.setdefault("tf_function", {})[key] = _time_per_image(
                lambda bc=batch_captions, n=noise: generate_graph(tf.constant(bc), n).numpy(),
                b, args.repeats,
            )
            for name, serving in servings.items():
                latency.setdefault(name, {})[key] = _time_per_image(
                    lambda bc=batch_captions, s=serving: s(
                        captions=tf.constant(bc), seed=tf.range(len(bc), dtype=tf.int32)
                    )["images"].numpy(),
                    b, args.repeats,
                )
            if torch_generate is not None:
                token_ids = model.tokenizer(tf.constant(batch_captions))[0].numpy()
                latency.setdefault("published_torch", {})[key] = _time_per_image(
                    lambda t=token_ids, n=noise.numpy(): torch_generate(t, n), b, args.repeats
                )
            print(f"batch {b}: {json.dumps({k: v[key] for k, v in latency.items()})}",
                  file=sys.stderr, flush=True)

        if not args.skip_tflite:
            from ai_edge_litert.interpreter import Interpreter

            for quantize, name in (("none", "tflite_float32"), ("float16", "tflite_float16")):
                for b in batches:
                    path = os.path.join(tmp, f"{name}_b{b}.tflite")
                    start = time.perf_counter()
                    export_tflite(model, path, quantize=quantize, batch_size=b)
                    result["export_seconds"][f"{name}_b{b}"] = round(
                        time.perf_counter() - start, 1
                    )
                    if b == batches[0]:
                        result["sizes_mb"][name] = round(os.path.getsize(path) / 1e6, 2)
                    interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
                    runner = interpreter.get_signature_runner("serving_default")
                    token_ids = model.tokenizer(tf.constant(captions[:b]))[0].numpy()
                    noise = tf.random.stateless_normal([b, z_dim], seed=[0, 0]).numpy()
                    latency.setdefault(name, {})[str(b)] = _time_per_image(
                        lambda r=runner, t=token_ids, n=noise: r(token_ids=t, noise=n),
                        b, args.repeats,
                    )
                    del runner, interpreter
                    print(f"{name} batch {b}: {latency[name][str(b)]} ms/image",
                          file=sys.stderr, flush=True)
    from reference import against_published, matmul_gflops

    matmul = matmul_gflops("float32")
    result["matmul_gflop_per_second_float32"] = round(matmul, 1)
    if args.preset == "birds":
        # Published generation: 16.8 GFLOP per image at 0.62 of the matmul rate (reference.py).
        result["speedup_vs_published"] = {
            path: {
                b: against_published("generate", ms / 1000.0, matmul)["speedup_vs_published"]
                for b, ms in per_batch.items()
            }
            for path, per_batch in latency.items()
        }
    if "published_torch" in latency:
        result["speedup_vs_torch"] = {
            path: {b: round(latency["published_torch"][b] / ms, 3) for b, ms in per_batch.items()}
            for path, per_batch in latency.items() if path != "published_torch"
        }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
