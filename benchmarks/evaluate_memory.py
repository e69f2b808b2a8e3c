"""Peak memory of `evaluate` for growing numbers of images: it must not grow with N.

Each N runs in its own subprocess: a tiny random-weight shapes model with 256x256 output
(3 stages), its DAMSM image encoder, and a stand-in for Inception-v3 with the same outputs
(2048-d pool features, 1000-way softmax) but a single small conv, so that 2,000 images
evaluate in minutes on a CPU. All four metrics run (IS, FID, R-precision, shapes). The
subprocess first warms up (builds, traces, computes the FID reference of 100 real images,
evaluates 100 images), then resets the peak-RSS counter (`/proc/self/clear_refs`) and
evaluates N images; `peak_rss_mb` is the process's VmHWM after that. Holding the images
instead would add N x 256 x 256 x 3 bytes (uint8) or 4x that (float32).

Usage:
    python benchmarks/evaluate_memory.py [--sizes 500 2000] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    # Linux >= 4.0: writing 5 resets VmHWM to the current RSS.
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(num_images: int, batch_size: int) -> dict:
    import keras

    from mirrorgan_tf import presets
    from mirrorgan_tf.data import pipeline
    from mirrorgan_tf.evaluation.evaluate import compute_reference_statistics, evaluate
    from mirrorgan_tf.evaluation.inception import InceptionClassifier

    keras.utils.set_random_seed(0)
    config = presets.get_config(
        "shapes", gf_dim=4, df_dim=4, nef=16, embedding_dim=16, z_dim=8, condition_dim=8,
        captioner_embed_dim=16, captioner_hidden_dim=16, num_stages=3,
    )
    folder = tempfile.mkdtemp(prefix="evaluate-memory-")
    vocabulary = os.path.join(folder, "vocabulary.txt")
    pipeline.vocabulary_of("shapes").save(vocabulary)
    components = {
        n: presets.build_component(n, config)
        for n in ("text_encoder", "generator", "image_encoder")
    }
    preset = presets.save_to_preset(
        os.path.join(folder, "preset"), config, components, vocabulary_path=vocabulary
    )
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(16, 3, strides=4, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(2048, activation="relu")(x)
    probabilities = keras.layers.Dense(1000, activation="softmax")(features)
    inception = InceptionClassifier(keras.Model(inputs, [features, probabilities]), None,
                                    "stand-in")
    reference = compute_reference_statistics(
        "shapes", "test", None, 100, batch_size, image_size=256, inception=inception, verbose=0
    )
    kwargs = dict(
        batch_size=batch_size, inception=inception, reference_stats=reference, verbose=0,
    )
    evaluate(preset, "shapes", num_images=100, **kwargs)  # warm-up: loads, traces, caches
    rss_before = _status_mb("VmRSS")
    peak_before = _status_mb("VmHWM")
    reset = _reset_peak()
    start = time.perf_counter()
    report = evaluate(preset, "shapes", num_images=num_images, **kwargs)
    return {
        "num_images": num_images,
        "peak_rss_mb": _status_mb("VmHWM"),
        "peak_rss_reset_before_evaluate": reset,
        "peak_rss_during_warmup_mb": peak_before,
        "rss_before_evaluate_mb": rss_before,
        "rss_after_evaluate_mb": _status_mb("VmRSS"),
        "seconds": round(time.perf_counter() - start, 1),
        "metrics": {
            "is": round(report["metrics"]["is"]["mean"], 4),
            "fid": round(report["metrics"]["fid"]["value"], 4),
            "r_precision": round(report["metrics"]["r_precision"]["mean"], 4),
            "shapes_overall": round(report["metrics"]["shapes"]["overall"], 4),
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args.child, args.batch_size)))
        return {}
    runs = []
    for n in args.sizes:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--batch-size", str(args.batch_size)],
            check=True, capture_output=True, text=True, env=env,
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    image_mb = 256 * 256 * 3 / 2**20
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "image_size": 256,
        "batch_size": args.batch_size,
        "runs": runs,
        "peak_growth_mb": round(runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"], 1),
        "holding_the_extra_images_would_add_mb": {
            "uint8": round((runs[-1]["num_images"] - runs[0]["num_images"]) * image_mb, 1),
            "float32": round((runs[-1]["num_images"] - runs[0]["num_images"]) * image_mb * 4, 1),
        },
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
