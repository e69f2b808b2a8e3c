"""R-precision of text-to-image retrieval (AttnGAN, Xu et al., CVPR 2018, Sec. 5).

For each image, its own caption and `num_candidates - 1` mismatched captions are ranked by the
cosine similarity of their DAMSM sentence features to the image's global DAMSM feature; with
R = 1 (one relevant caption) the R-precision of the image is 1 when its own caption ranks
first. The score is the mean over images; the protocol repeats this `runs` times with new
mismatched captions and reports the mean and standard deviation (MirrorGAN Table 2). The
published code computed this outside the released repository; this follows the common
reimplementation (e.g. DM-GAN's): mismatched captions are drawn uniformly from the other rows.
"""

from __future__ import annotations

import numpy as np

# Images scored at a time: bounds memory at _CHUNK x N similarities.
_CHUNK = 512


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _distinct_samples(rng: np.random.Generator, rows: int, n: int, k: int) -> np.ndarray:
    """[rows, k] uniform k-subsets of range(n), one per row (Floyd's algorithm, row-parallel)."""
    chosen = np.empty((rows, k), np.int64)
    for step, upper in enumerate(range(n - k, n)):
        pick = rng.integers(0, upper + 1, size=rows)
        taken = np.any(chosen[:, :step] == pick[:, None], axis=1)
        chosen[:, step] = np.where(taken, upper, pick)
    return chosen


def r_precision(
    image_features,
    text_features,
    num_candidates: int = 100,
    runs: int = 10,
    seed: int = 0,
) -> tuple[float, float]:
    """Top-1 R-precision: mean and standard deviation over `runs` draws of mismatched captions.

    Row i of `text_features` is the caption of image i; the mismatched captions of image i are
    `num_candidates - 1` distinct other rows. An image counts as retrieved when its own caption
    is strictly more similar than every mismatched one (a tie counts as a miss). Computed in
    float64 with numpy.

    Args:
        image_features: [N, D] global image features (e.g. DAMSM image encoder of generated
            images).
        text_features: [N, D] sentence features of the captions the images were made from.
        num_candidates: captions ranked per image (own + mismatched); 100 in the literature.
        runs: repetitions with new mismatched captions; 10 in the literature.
        seed: seed of the numpy generator that draws the mismatched captions.

    Returns:
        (mean, std) of the per-run R-precision, in [0, 1].

    Example:
    >>> x = np.random.default_rng(0).normal(size=(200, 16))
    >>> r_precision(x, x)
    (1.0, 0.0)
    """
    images = _normalise(np.asarray(image_features, np.float64))
    texts = _normalise(np.asarray(text_features, np.float64))
    if images.ndim != 2 or images.shape != texts.shape:
        raise ValueError(
            "r_precision needs image and text features of one shape [N, D], got "
            f"{images.shape} and {texts.shape}"
        )
    count = images.shape[0]
    if num_candidates < 2 or count < num_candidates:
        raise ValueError(
            f"r_precision ranks each caption among num_candidates={num_candidates} captions: "
            f"needs num_candidates >= 2 and at least that many samples, got N={count}"
        )
    rng = np.random.default_rng(seed)
    hits = np.zeros([runs], np.int64)
    # Chunks of images outside, runs inside: one [chunk, N] similarity matmul serves all runs.
    for start in range(0, count, _CHUNK):
        stop = min(start + _CHUNK, count)
        similarities = images[start:stop] @ texts.T  # [chunk, N]
        rows = np.arange(start, stop)
        # The own caption's score from the same matmul, so equal captions tie exactly.
        own = similarities[np.arange(stop - start), rows]
        for run in range(runs):
            # Distinct other rows: draw from the N-1 others, then skip row i itself.
            mismatched = _distinct_samples(rng, stop - start, count - 1, num_candidates - 1)
            mismatched += mismatched >= rows[:, None]
            others = np.take_along_axis(similarities, mismatched, axis=1)
            hits[run] += int(np.sum(own > others.max(axis=-1)))
    scores = hits / count
    return float(np.mean(scores)), float(np.std(scores))
