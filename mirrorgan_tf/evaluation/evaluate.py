"""Evaluation of a text-to-image model over a large generated set: IS, FID, R-precision, shapes.

`evaluate` generates `num_images` images from the captions of a split in batches and streams
each batch through the metric networks; only small per-image features are kept (the DAMSM
global image feature and sentence feature of each image, for R-precision; the 2048-d Inception
features, 8 KB an image, for KID), never the images.

- `is`: Inception Score of the generated images (`inception.StreamingInceptionScore`).
- `fid`: Frechet Inception Distance to the real images of the split (reference statistics
  from `--reference-stats`, or computed from the real images first).
- `kid`: Kernel Inception Distance to the same real images (unbiased, mean and spread over
  100 subsets of 1,000), from the same features; it needs the real images' per-image features,
  which statistics files written here hold and pytorch-fid's do not.

- `r_precision`: for each image, its caption is ranked among 99 mismatched captions by the
  cosine similarity of DAMSM features (global image feature vs. STEM sentence feature); the
  top-1 hit rate, mean and std over 10 draws (AttnGAN Sec. 5, MirrorGAN Table 2). It needs a
  DAMSM image encoder. Scored by the same DAMSM whose text encoder (STEM) conditioned the
  generator, and whose loss may have trained it, the score overfits: the generator was
  optimised against that very matcher. Pass an independently trained DAMSM (`damsm=`) for a
  number that compares across models.
- `shapes` (only for `data="shapes"`): per-attribute text-image consistency read from the
  pixels (`shapes_score.consistency_score`) against `parse_caption` of each caption, over
  all scenes and (`by_scene`) over the one-shape and the two-shape scenes apart.

The Inception network (`fid_backend`) is Keras' ImageNet InceptionV3 (`keras`, the default:
numbers compare between runs of this package) or pytorch-fid's FID Inception (`pytorch-fid`,
`fid_inception.FIDInception`, weights from its `.pth`: FID as DF-GAN, GALIP and most later
papers report it). IS, FID and KID all read the chosen network.

Without `metrics`, every metric the model and data allow is computed; the others are skipped
and the report's `skipped` says why (no DAMSM image encoder, Inception weights that cannot be
loaded, data that is not shapes, too few images). Asked-for metrics that cannot be computed
are errors.

Captions: the first pass over the split takes each image's first caption in file order; later
passes (when `num_images` exceeds the split) draw a random caption per image, seeded (the
published protocol generates 30,000 images from the test captions). Image i uses noise seed
`seeds[i]` from `numpy.random.default_rng(seed)`, so `model.generate(caption, seed=seeds[i])`
reproduces it; `save_images` writes the seeds and captions next to the PNGs.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mirrorgan_tf import presets
from mirrorgan_tf.data import pipeline
from mirrorgan_tf.evaluation.inception import (
    InceptionClassifier,
    StreamingInceptionScore,
    StreamingStatistics,
    frechet_distance,
    kernel_inception_distance,
    load_features,
    load_statistics,
    save_statistics,
)
from mirrorgan_tf.evaluation.r_precision import r_precision
from mirrorgan_tf.task import TextToImage, from_uint8, resolve_preset

METRICS = ("is", "fid", "kid", "r_precision", "shapes")
FID_BACKENDS = ("keras", "pytorch-fid")
_INCEPTION_METRICS = ("is", "fid", "kid")
_DAMSM_FILE = "image_encoder.weights.h5"


# === Inputs ===
def evaluation_captions(
    data: str,
    split: str,
    tokenizer,
    config: dict[str, Any],
    seed: int = 0,
    num_images: int | None = None,
) -> Iterator[str]:
    """The captions the images are generated from, in order (endless without `num_images`).

    The first pass over the split gives each image's first caption in file order; each later
    pass gives a random caption per image in a shuffled order, drawn from `seed`. The split is
    always the data's canonical one (data seed 0, as `open_dataset(..., seed=0)` gives it).

    Args:
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.
        split: `train` or `test`.
        tokenizer: the model's tokenizer (unused by the shapes data, whose captions are read
            without rendering the images).
        config: the model configuration (`words_num`, `num_stages`).
        seed: seeds the later passes.
        num_images: how many captions to give; None: endless.

    Example:
    >>> captions = evaluation_captions("shapes", "test", None, {}, num_images=3)
    >>> len(list(captions))
    3
    """
    count = 0
    for caption in _caption_passes(data, split, tokenizer, config, seed, num_images):
        if num_images is not None and count >= num_images:
            return
        yield caption
        count += 1


def _caption_passes(data, split, tokenizer, config, seed, num_images) -> Iterator[str]:
    size = pipeline.num_examples(data, split)
    if pipeline.data_kind(data) == "shapes":
        from mirrorgan_tf.data.shapes import ShapesDataset

        # Captions only: no image is rendered (make_dataset would render and cache each one).
        shapes = ShapesDataset(
            split, num_images=size, image_size=64, num_stages=1,
            level=pipeline.shapes_level(data),
        )
        yield from (shapes.captions(i)[0] for i in range(size))
        for epoch in itertools.count(1):
            rng = np.random.default_rng([seed, epoch])
            for i in rng.permutation(size):
                yield shapes.captions(int(i))[int(rng.integers(shapes.captions_per_image))]
    config = {**config, "num_stages": 1}  # captions only: decode the smallest images
    select = lambda element: element["caption"]  # noqa: E731
    first = pipeline.open_dataset(data, split, tokenizer, config, training=False, seed=0)
    yield from (c.decode("utf-8") for c in first.map(select).as_numpy_iterator())
    if num_images is not None and num_images <= size:
        return
    # Training mode draws a random caption per image each pass (and crops images, unused).
    later = pipeline.open_dataset(data, split, tokenizer, config, training=True, seed=seed)
    yield from (c.decode("utf-8") for c in later.map(select).repeat().as_numpy_iterator())


def _real_image_batches(
    data: str, split: str, num_images: int, batch_size: int, image_size: int
) -> Iterator[np.ndarray]:
    """Batches of real images (float in [-1, 1]) of the split at `image_size`, in file order."""
    num_stages = int(round(math.log2(image_size / 64))) + 1
    if num_stages not in (1, 2, 3) or 64 * 2 ** (num_stages - 1) != image_size:
        raise ValueError(f"image_size must be 64, 128 or 256; got {image_size}")
    config = {"num_stages": num_stages, "words_num": 18}
    tokenizer = None
    if pipeline.data_kind(data) == "shapes":
        from mirrorgan_tf.data.tokenizer import Tokenizer

        tokenizer = Tokenizer(pipeline.vocabulary_of(data), config["words_num"])
    dataset = pipeline.open_dataset(data, split, tokenizer, config, training=False, seed=0)
    dataset = dataset.map(lambda e: e["images"][-1]).take(num_images).batch(batch_size)
    yield from dataset.as_numpy_iterator()


def load_inception(weights: str | None = "imagenet", backend: str = "keras"
                   ) -> InceptionClassifier:
    """The Inception network of IS, FID and KID for a backend.

    Args:
        weights: `keras`: `"imagenet"` (downloaded by Keras), None (random weights: tests
            only) or a converted classifier file; `pytorch-fid`: its `.pth` (or a
            `.weights.h5` saved from it), None for random weights.
        backend: `keras` (Keras' ImageNet InceptionV3) or `pytorch-fid` (its FID Inception,
            `fid_inception.FIDInception`).

    Raises:
        RuntimeError: Keras could not download the ImageNet weights.

    Example:
    >>> inception = load_inception(None, "pytorch-fid")  # random weights, no download
    >>> inception.backend
    'pytorch-fid'
    """
    if backend not in FID_BACKENDS:
        raise ValueError(f"unknown FID backend {backend!r}; choose from {list(FID_BACKENDS)}")
    if backend == "pytorch-fid":
        from mirrorgan_tf.evaluation.fid_inception import PYTORCH_FID_WEIGHTS_URL, FIDInception

        if weights == "imagenet":
            raise ValueError(
                "the pytorch-fid backend reads pytorch-fid's own Inception weights: pass "
                "--inception-weights pt_inception-2015-12-05-6726825d.pth (download it once "
                f"from {PYTORCH_FID_WEIGHTS_URL})"
            )
        return FIDInception.from_weights(weights)
    try:
        return InceptionClassifier.from_weights(weights)
    except (ValueError, OSError):
        raise
    except Exception as error:  # Keras' download raises a bare Exception ("URL fetch failure")
        raise RuntimeError(
            f"could not load the Inception-v3 weights {weights!r} ({error}); give a local file "
            "with --inception-weights PATH (or leave is, fid and kid out of --metrics)"
        ) from error


def compute_reference_statistics(
    data: str,
    split: str = "test",
    out_npz: str | None = None,
    num_images: int | None = None,
    batch_size: int = 32,
    inception_weights: str | None = "imagenet",
    image_size: int = 256,
    inception: InceptionClassifier | None = None,
    verbose: int = 1,
    fid_backend: str = "keras",
) -> tuple[np.ndarray, np.ndarray]:
    """FID statistics (mean, covariance of Inception pool features) of a split's real images.

    Computed once per data set, Inception network and image size, then passed to `evaluate`
    as `reference_stats`. Real images get the evaluation preprocessing of the data (AttnGAN
    layout: the bounding-box crop, centred; no flips) at the generator's output size. The
    file is pytorch-fid's `.npz` (`mu`, `sigma`; with the pytorch-fid backend its own FID
    script reads it as it reads its own), plus the per-image `features` KID needs.

    Args:
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.
        split: `train` or `test`.
        out_npz: where to write the `.npz` (keys `mu`, `sigma`); None writes nothing.
        num_images: how many real images (default: all of the split).
        batch_size: images per Inception call.
        inception_weights: `"imagenet"`, None (random, tests only) or a converted classifier
            file (see `InceptionClassifier.from_weights`).
        image_size: the side of the generated images to compare with (64, 128 or 256).
        inception: an already built `InceptionClassifier` (overrides `inception_weights`).
        verbose: 1 shows a progress bar.
        fid_backend: `keras` or `pytorch-fid` (see `evaluate`).

    Returns:
        (mu [D], sigma [D, D]) in float64.

    Example:
    >>> stats = compute_reference_statistics("shapes", "test", "ref.npz")  # doctest: +SKIP
    """
    classifier = (inception if inception is not None
                          else load_inception(inception_weights, fid_backend))
    mu, sigma, features = _real_features(
        data, split, num_images, batch_size, image_size, classifier, verbose
    )
    if out_npz is not None:
        save_statistics(out_npz, mu, sigma, features)
    return mu, sigma


def _real_features(data: str, split: str, num_images: int | None, batch_size: int,
                   image_size: int, classifier: InceptionClassifier, verbose: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(mu, sigma, features [N, D] float32)` of a split's real images."""
    total = pipeline.num_examples(data, split)
    num_images = total if num_images is None else min(int(num_images), total)
    if num_images < 2:
        raise ValueError(f"FID statistics need at least 2 images; got num_images={num_images}")
    statistics = None
    kept = []
    progress = keras.utils.Progbar(num_images, verbose=verbose, unit_name="real image")
    done = 0
    for images in _real_image_batches(data, split, num_images, batch_size, image_size):
        _, features = classifier(images)
        if statistics is None:
            statistics = StreamingStatistics(features.shape[1])
        statistics.update(features)
        kept.append(features.astype(np.float32))
        done += len(images)
        progress.update(done)
    return statistics.mean, statistics.covariance, np.concatenate(kept)


# === DAMSM (R-precision) ===
def _load_damsm(model: TextToImage, damsm, model_folder: str | None):
    """`(text_encoder or None for the model's STEM, image_encoder, description)`."""
    if isinstance(damsm, keras.Model):
        return None, damsm, "given image encoder, the model's STEM"
    folder = model_folder if damsm is None else resolve_preset(damsm)
    if folder is None or not os.path.isdir(folder):
        raise ValueError(
            "R-precision ranks captions with a DAMSM image encoder; the model was not loaded "
            "from a folder, so pass `damsm` (a pretrain-stem run or a preset folder holding "
            f"{_DAMSM_FILE}) or leave r_precision out of the metrics."
        )
    if not os.path.exists(os.path.join(folder, _DAMSM_FILE)):
        raise ValueError(
            f"R-precision ranks captions with the DAMSM image encoder, but {folder!r} holds no "
            f"{_DAMSM_FILE} (a `train` run saves it only with damsm_loss_weight > 0). Pass "
            "--damsm with a pretrain-stem run (its model/ holds the DAMSM text and image "
            "encoders), or leave r_precision out of --metrics."
        )
    same = model_folder is not None and os.path.samefile(folder, model_folder)
    has_text = os.path.exists(os.path.join(folder, "text_encoder.weights.h5"))
    wanted = ["image_encoder"] + (["text_encoder"] if has_text and not same else [])
    parts = presets.from_preset(folder, components=wanted)
    config = parts["config"]
    if config["vocab_size"] != model.config["vocab_size"] or config["nef"] != model.config["nef"]:
        raise ValueError(
            f"The DAMSM of {folder!r} (vocab_size {config['vocab_size']}, nef {config['nef']}) "
            f"does not match the model (vocab_size {model.config['vocab_size']}, nef "
            f"{model.config['nef']})."
        )
    text_encoder = parts.get("text_encoder")
    source = folder if text_encoder is not None else f"{folder} (image encoder), the model's STEM"
    return text_encoder, parts["image_encoder"], source


def _same_text_encoder(model: TextToImage, text_encoder) -> bool:
    """Whether the DAMSM text encoder is the model's STEM (same weights): R-precision overfits."""
    if text_encoder is None:
        return True
    ours, theirs = model.text_encoder.weights, text_encoder.weights
    return len(ours) == len(theirs) and all(
        a.shape == b.shape and np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(ours, theirs, strict=True)
    )


# === Streaming accumulators ===
class _ShapesTally:
    """Sums `consistency_score` over batches, weighted by shapes and scenes scored, for the
    one-shape and two-shape scenes apart (`shapes_score.consistency_by_scene`) and together."""

    def __init__(self):
        # {kind: {attribute or "overall": sum over shapes, "count": sum over scenes,
        #         "num_shapes", "num_scenes"}}
        self.sums: dict[str, dict[str, float]] = {}
        self.unparsed = 0

    def update(self, images: np.ndarray, captions: Sequence[str]) -> None:
        from mirrorgan_tf.data.shapes import parse_caption
        from mirrorgan_tf.evaluation.shapes_score import (
            ATTRIBUTES,
            SCENE_KINDS,
            consistency_by_scene,
        )

        specs = [parse_caption(c) for c in captions]
        self.unparsed += sum(s is None for s in specs)
        kinds = [SCENE_KINDS[len(s.shapes)] for s in specs if s is not None]
        for kind, scores in consistency_by_scene(images, specs).items():
            shapes, scenes = scores["num_shapes"], kinds.count(kind)
            weighted = {key: scores[key] * shapes for key in (*ATTRIBUTES, "overall")}
            weighted.update(count=scores["count"] * scenes, num_shapes=shapes, num_scenes=scenes)
            _add_into(self.sums.setdefault(kind, {}), weighted)

    @staticmethod
    def _scores(sums: dict[str, float]) -> dict[str, Any]:
        shapes, scenes = sums["num_shapes"], sums["num_scenes"]
        result = {k: v / shapes for k, v in sums.items()
                  if k not in ("count", "num_shapes", "num_scenes")}
        result.update(count=sums["count"] / scenes, num_shapes=shapes, num_scenes=scenes)
        return result

    def result(self) -> dict[str, Any]:
        if not self.sums:
            raise ValueError("no caption could be parsed into a scene: no shapes score")
        total = {}
        for sums in self.sums.values():
            _add_into(total, sums)
        result = self._scores(total)
        result["unparsed_captions"] = self.unparsed
        result["by_scene"] = {kind: self._scores(sums) for kind, sums in self.sums.items()}
        return result


def _add_into(sums: dict[str, float], values: dict[str, float]) -> None:
    """sums[k] += values[k] for every key (missing keys start at 0)."""
    for key, value in values.items():
        sums[key] = sums.get(key, 0) + value


def _check_metrics(metrics, data: str, num_images: int, num_candidates: int,
                   is_splits: int) -> tuple[tuple[str, ...], dict[str, str]]:
    """`(metrics to compute, {metric: why it is skipped})`.

    Asked-for metrics that cannot be computed are errors; with `metrics=None` every metric
    is tried and those the data or the image count rule out are skipped, with the reason.
    """
    by_default = metrics is None
    if by_default:
        metrics = METRICS
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = tuple(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"Unknown metrics {unknown}; choose from {list(METRICS)}.")
    problems = {}
    if "shapes" in metrics and pipeline.data_kind(data) != "shapes":
        problems["shapes"] = "the shapes consistency score reads the built-in shapes data only"
    needed = {
        "r_precision": (num_candidates, "R-precision ranks each caption among num_candidates"),
        "is": (is_splits, "the Inception Score splits the images into is_splits parts"),
        "fid": (2, "FID needs a covariance"),
        "kid": (2, "KID's unbiased estimate needs two images per subset"),
    }
    for metric, (minimum, why) in needed.items():
        if metric in metrics and num_images < minimum:
            problems[metric] = f"{why}: needs num_images >= {minimum}, got {num_images}"
    if problems and not by_default:
        raise ValueError("; ".join(f"{why}." for why in problems.values()))
    return tuple(m for m in metrics if m not in problems), problems


def _save_png(folder: str, index: int, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(os.path.join(folder, f"{index:06d}.png"))


# === The evaluation ===
def evaluate(
    model: str | TextToImage,
    data: str,
    metrics: Sequence[str] | str | None = None,
    num_images: int = 30_000,
    batch_size: int = 32,
    seed: int = 0,
    reference_stats: str | tuple[np.ndarray, np.ndarray] | None = None,
    inception_weights: str | None = "imagenet",
    save_images: str | None = None,
    out: str | None = None,
    split: str = "test",
    damsm: str | keras.Model | None = None,
    num_candidates: int = 100,
    r_precision_runs: int = 10,
    is_splits: int = 10,
    num_reference_images: int | None = None,
    inception: InceptionClassifier | None = None,
    verbose: int = 1,
    fid_backend: str = "keras",
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict[str, Any]:
    """Generates `num_images` images from a split's captions and scores them, streaming.

    Args:
        model: a `TextToImage`, or a run folder, preset folder or preset name to load.
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.
        metrics: any of `is`, `fid`, `kid`, `r_precision`, `shapes` (a list or a
            comma-separated string); asked-for metrics that cannot be computed are errors.
            None: every metric the model and data allow; the others are skipped, with the
            reason, in the report's `skipped` (shapes needs the shapes data, R-precision a
            DAMSM image encoder, IS, FID and KID the Inception weights, KID the real images'
            features).
        num_images: images to generate (30,000 in the literature).
        batch_size: captions per generator call.
        seed: seeds the noise of every image and the caption draws.
        reference_stats: FID statistics of the real images, an `.npz` path (KID also needs
            the `features` that files written by `compute_reference_statistics` hold) or
            `(mu, sigma)`; None computes them from `num_reference_images` real images of
            `split` first.
        inception_weights: for the `keras` backend `"imagenet"` (downloaded by Keras), None
            (random weights: tests only) or a converted classifier file
            (`InceptionClassifier.from_weights`); for `pytorch-fid`, its `.pth` file.
        save_images: a folder to keep the generated images as PNGs (with `captions.tsv`:
            index, seed, caption).
        out: a JSON file for the report.
        split: the split whose captions (and real images) are used.
        damsm: the DAMSM for R-precision: None uses the `image_encoder` of the model's own
            folder with its STEM; a pretrain-stem run or preset folder uses its image and text
            encoders; a `keras.Model` is used as the image encoder with the model's STEM.
            Scoring with the DAMSM that trained the generator overfits (see module docstring).
        num_candidates: captions ranked per image for R-precision (100 in the literature).
        r_precision_runs: draws of mismatched captions (10 in the literature).
        is_splits: parts of the Inception Score (10 in the literature).
        num_reference_images: real images for computed reference statistics (default all).
        inception: an already built `InceptionClassifier` (overrides `inception_weights`).
        verbose: 1 shows a progress bar and prints the table.
        fid_backend: the Inception network of IS, FID and KID: `keras` (Keras' ImageNet
            InceptionV3) or `pytorch-fid` (its FID Inception: published tables' FID).
        kid_subsets: subsets KID averages over (100 in the literature).
        kid_subset_size: images per subset (1,000; capped at the image counts).

    Returns:
        The report: `metrics` (one entry per metric), `skipped` ({metric: why}), and what
        was evaluated how.

    Example:
    >>> report = evaluate("runs/shapes", "shapes", num_images=2000)  # doctest: +SKIP
    >>> report["metrics"]["fid"]["value"]  # doctest: +SKIP
    """
    start = time.perf_counter()
    num_images = int(num_images)
    by_default = metrics is None
    metrics, skipped = _check_metrics(metrics, data, num_images, num_candidates, is_splits)
    model_folder = None
    model_name = getattr(model, "name", type(model).__name__)
    if isinstance(model, str):
        model_name = model
        resolved = resolve_preset(model)
        model_folder = resolved if os.path.isdir(resolved) else None
        model = TextToImage.from_preset(model, captioner=False)
    damsm_text = damsm_image = None
    damsm_source = None
    if "r_precision" in metrics:
        try:
            damsm_text, damsm_image, damsm_source = _load_damsm(model, damsm, model_folder)
        except ValueError as error:
            if not by_default:
                raise
            skipped["r_precision"] = str(error)
    reference_features = None
    if isinstance(reference_stats, str):
        reference_source = reference_stats
        statistics_file = reference_stats
        reference_stats = load_statistics(statistics_file)
        reference_features = load_features(statistics_file)
    else:
        reference_source = "given" if reference_stats is not None else None
    if "kid" in metrics and reference_stats is not None and reference_features is None:
        why = (
            f"KID compares per-image features and the reference statistics ({reference_source}) "
            "hold only mu and sigma (as pytorch-fid's do): write them with "
            "--compute-reference-stats, or leave --reference-stats out to compute them"
        )
        if not by_default:
            raise ValueError(why + ".")
        skipped["kid"] = why
    classifier = None
    if any(m in metrics and m not in skipped for m in _INCEPTION_METRICS):
        try:
            classifier = (inception if inception is not None
                          else load_inception(inception_weights, fid_backend))
        except RuntimeError as error:
            if not by_default:
                raise
            skipped.update({m: str(error) for m in _INCEPTION_METRICS if m in metrics})
    metrics = tuple(m for m in metrics if m not in skipped)
    if not metrics:
        raise ValueError("No metric can be computed: " + "; ".join(
            f"{m}: {why}" for m, why in skipped.items()))
    if verbose:
        for metric, why in skipped.items():
            print(f"Skipping {metric}: {why}")
    if ("fid" in metrics or "kid" in metrics) and reference_stats is None:
        if verbose:
            print(f"Computing the Inception features of the real {split} images of {data}...")
        mu, sigma, reference_features = _real_features(
            data, split, num_reference_images, batch_size, model.image_size, classifier,
            verbose,
        )
        reference_stats = (mu, sigma)
        count = pipeline.num_examples(data, split)
        if num_reference_images is not None:
            count = min(count, num_reference_images)
        reference_source = f"{count} real {split} images"

    inception_score = StreamingInceptionScore(num_images, is_splits) if "is" in metrics else None
    fid_statistics = None
    generated_features = None  # [num_images, D] float32, for KID
    shapes = _ShapesTally() if "shapes" in metrics else None
    image_features = text_features = None
    if damsm_image is not None:
        image_features = np.zeros([num_images, model.config["nef"]], np.float32)
        text_features = np.zeros([num_images, model.config["nef"]], np.float32)
        damsm_image_call = tf.function(
            lambda x: damsm_image(x, training=False)[1],
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=num_images)
    captions_file = None
    if save_images:
        os.makedirs(save_images, exist_ok=True)
        captions_file = open(os.path.join(save_images, "captions.tsv"), "w", encoding="utf-8")
        captions_file.write("index\tseed\tcaption\n")

    captions = evaluation_captions(data, split, model.tokenizer, model.config, seed, num_images)
    batches = iter(lambda: list(itertools.islice(captions, batch_size)), [])
    progress = keras.utils.Progbar(num_images, verbose=verbose, unit_name="image")
    done = 0
    try:
        for texts in batches:
            stop = done + len(texts)
            batch_seeds = seeds[done:stop]
            images = model.generate(texts, seed=[int(s) for s in batch_seeds])  # uint8
            if classifier is not None:
                probabilities, features = classifier(images)
                if inception_score is not None:
                    inception_score.update(probabilities)
                if "fid" in metrics:
                    if fid_statistics is None:
                        fid_statistics = StreamingStatistics(features.shape[1])
                    fid_statistics.update(features)
                if "kid" in metrics:
                    if generated_features is None:
                        generated_features = np.zeros([num_images, features.shape[1]], np.float32)
                    generated_features[done:stop] = features
            if damsm_image is not None:
                image_features[done:stop] = np.asarray(damsm_image_call(from_uint8(images)))
                if damsm_text is None:
                    sentence = model.encode_text(texts)["sentence"]
                else:
                    token_ids, _ = model.tokenizer(tf.constant(texts, tf.string))
                    sentence = damsm_text(token_ids, training=False)[1]
                text_features[done:stop] = np.asarray(tf.cast(sentence, tf.float32))
            if shapes is not None:
                shapes.update(images, texts)
            if save_images:
                for k, image in enumerate(images):
                    _save_png(save_images, done + k, image)
                    caption = texts[k].replace("\t", " ").replace("\n", " ")
                    captions_file.write(f"{done + k}\t{batch_seeds[k]}\t{caption}\n")
            done = stop
            progress.update(done)
    finally:
        if captions_file is not None:
            captions_file.close()

    results: dict[str, Any] = {}
    if inception_score is not None:
        mean, std = inception_score.result()
        results["is"] = {"mean": mean, "std": std, "splits": is_splits}
    if "fid" in metrics:
        mu, sigma = reference_stats
        if len(mu) != fid_statistics.dim:
            raise ValueError(
                f"The reference statistics have {len(mu)} features; the Inception network "
                f"gives {fid_statistics.dim}."
            )
        value = frechet_distance(fid_statistics.mean, fid_statistics.covariance, mu, sigma)
        results["fid"] = {"value": value, "reference": reference_source}
    if "kid" in metrics:
        if reference_features.shape[1] != generated_features.shape[1]:
            raise ValueError(
                f"The reference features have {reference_features.shape[1]} dimensions; the "
                f"Inception network gives {generated_features.shape[1]}."
            )
        kid = kernel_inception_distance(
            generated_features, reference_features, kid_subsets, kid_subset_size, seed
        )
        results["kid"] = {**kid, "reference": reference_source}
    if damsm_image is not None:
        mean, std = r_precision(
            image_features, text_features, num_candidates, r_precision_runs, seed
        )
        results["r_precision"] = {
            "mean": mean,
            "std": std,
            "num_candidates": num_candidates,
            "runs": r_precision_runs,
            "damsm": damsm_source,
            # The generator was conditioned on (and may have been trained against) this DAMSM.
            "damsm_is_the_models_stem": _same_text_encoder(model, damsm_text),
        }
    if shapes is not None:
        results["shapes"] = shapes.result()
    seconds = time.perf_counter() - start
    report = {
        "model": model_name,
        "data": data,
        "split": split,
        "num_images": num_images,
        "image_size": model.image_size,
        "batch_size": batch_size,
        "seed": seed,
        "inception": None if classifier is None else classifier.source,
        "fid_backend": None if classifier is None else classifier.backend,
        "metrics": results,
        "skipped": skipped,
        "seconds": round(seconds, 2),
    }
    if out:
        folder = os.path.dirname(os.path.abspath(out))
        os.makedirs(folder, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    if verbose:
        print(format_report(report))
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a two-column text table.

    Args:
        report: a report returned by `evaluate`.

    Example:
    >>> print(format_report({"num_images": 2, "metrics": {"fid": {"value": 1.5}}}))
    metric                          value (2 images)
    FID                             1.500
    """
    lines = [f"{'metric':32s}value ({report['num_images']} images)"]
    m = report["metrics"]
    if "is" in m:
        lines.append(f"{'Inception Score':32s}{m['is']['mean']:.3f} +- {m['is']['std']:.3f}")
    if "fid" in m:
        lines.append(f"{'FID':32s}{m['fid']['value']:.3f}")
    if "kid" in m:
        k = m["kid"]
        name = f"KID ({k['num_subsets']} subsets of {k['subset_size']})"
        lines.append(f"{name:32s}{k['mean']:.5f} +- {k['std']:.5f}")
    if "r_precision" in m:
        r = m["r_precision"]
        name = f"R-precision (top-1 of {r['num_candidates']})"
        lines.append(f"{name:32s}{r['mean']:.4f} +- {r['std']:.4f}")
    if "shapes" in m:
        from mirrorgan_tf.evaluation.shapes_score import ATTRIBUTES, SCENE_LABELS

        for key in (*ATTRIBUTES, "overall", "count"):
            lines.append(f"{'shapes ' + key:32s}{m['shapes'][key]:.4f}")
        for kind, scores in m["shapes"].get("by_scene", {}).items():
            name = f"shapes, {SCENE_LABELS[kind]}"
            values = " / ".join(f"{scores[a]:.3f}" for a in ATTRIBUTES)
            lines.append(f"{name:32s}{values} ({' / '.join(ATTRIBUTES)})")
    for metric, why in report.get("skipped", {}).items():
        lines.append(f"{'skipped ' + metric:32s}{why}")
    return "\n".join(lines)
