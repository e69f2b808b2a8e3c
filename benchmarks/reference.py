"""What the benchmarks compare against: the published PyTorch cost and this machine's matmul rate.

The published MirrorGAN's cost was measured on a 2-core CPU (shared/design/
mirrorgan-reference.md): a birds training iteration at batch 4 is about 677 nominal GFLOP and
ran at 0.45 of that machine's TensorFlow fp32 matmul rate; generation is 16.8 GFLOP per
256x256 image and ran at 0.62. Machines differ, so the benchmarks compare by ratio: the
published work (its nominal FLOPs) divided by our time and by the matmul rate measured in the
same process. A ratio of 0.45 (training) or 0.62 (generation) is the published speed; 1.5x the
published throughput is 0.68 and 0.93.
"""

from __future__ import annotations

import time

import tensorflow as tf

PUBLISHED = {
    # birds, per training iteration at batch 4 / per generated image
    "train_gflop_batch4": 677.0,
    "train_ratio": 0.45,
    "generate_gflop_per_image": 16.8,
    "generate_ratio": 0.62,
}


def matmul_gflops(dtype: str = "float32", n: int = 4096, repeats: int = 10) -> float:
    """This process's dense `tf.matmul` rate (n x n), in GFLOP/s.

    Args:
        dtype: `float32`, `bfloat16` or `float16`.
        n: matrix side.
        repeats: timed products.

    Example:
    >>> matmul_gflops("float32", n=512, repeats=2) > 0
    True
    """
    a = tf.cast(tf.random.normal([n, n], dtype=tf.float32), dtype)
    step = tf.function(lambda x: tf.matmul(x, x))
    step(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        out = step(a)
    out.numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def against_published(kind: str, seconds: float, matmul: float, batch: int = 4) -> dict:
    """The published work over our time, as a ratio to `matmul` and as a speed-up.

    Args:
        kind: `train` (seconds per iteration at `batch`) or `generate` (seconds per image).
        seconds: our measured time.
        matmul: the fp32 matmul GFLOP/s measured in the same process.
        batch: the training batch size (the published cost scales with it).

    Example:
    >>> against_published("generate", 0.1, 200.0)["speedup_vs_published"]
    1.35
    """
    if kind == "train":
        work, base = PUBLISHED["train_gflop_batch4"] * batch / 4, PUBLISHED["train_ratio"]
    else:
        work, base = PUBLISHED["generate_gflop_per_image"], PUBLISHED["generate_ratio"]
    ratio = work / seconds / matmul
    return {
        "published_nominal_gflop": round(work, 1),
        "ratio_in_published_flops": round(ratio, 3),
        "published_ratio": base,
        "speedup_vs_published": round(ratio / base, 2),
    }
