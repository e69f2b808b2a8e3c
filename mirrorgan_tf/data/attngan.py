"""Reader of the preprocessed AttnGAN datasets (CUB-200-2011 birds and COCO-2014).

Reads the layout users of AttnGAN/MirrorGAN already have on disk (`captions.pickle`,
`{split}/filenames.pickle`, `{split}/class_info.pickle`, `text/<key>.txt`, and for birds
`CUB_200_2011/{images.txt,bounding_boxes.txt,images/}`) into a `tf.data.Dataset` of the
package's element dicts. The image and caption processing reproduces the published loader
(AttnGAN `datasets.py`, used unchanged by MirrorGAN): bounding-box crop (birds), resize of the
shorter side to `final_size * 76 / 64`, random crop and horizontal flip, lower scales
downscaled from the crop, one random caption per image with over-long captions shortened to a
random order-preserving subset of their words.

The TFRecord reader (`mirrorgan_tf.data.tfrecords`) feeds the same records through the same
`build_pipeline`, so both readers give identical elements for the same seed.

Randomness is stateless: every random choice of an example is a function of
`(pass salt, example index)`, where the pass salt is drawn once per pass over the data from
`seed` (`tf.data.Dataset.random(..., rerandomize_each_iteration=True)`). A given seed thus
gives the same sequence of epochs, each epoch a new draw, in any order and with any
parallelism, and the same example gets the same augmentation from either reader.
"""

from __future__ import annotations

import logging
import os
import re
import threading

import numpy as np
import tensorflow as tf

from mirrorgan_tf.data.safe_pickle import load_pickle
from mirrorgan_tf.data.vocabulary import Vocabulary

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE

# Captions per image and words kept in training in the published configurations.
CAPTIONS_PER_IMAGE = {"birds": 10, "coco": 5}
WORDS_NUM = {"birds": 18, "coco": 12}

_WORD = re.compile(r"\w+")


def load_size_for(final_size: int) -> int:
    """The size the shorter image side is resized to before the crop: `final_size * 76 / 64`.

    Args:
        final_size: the largest training image size (256 for three stages from 64).

    Example:
        >>> load_size_for(256)
        304
    """
    return int(final_size * 76 / 64)


# --- Image and caption functions shared by both readers --------------------------------------


def crop_window(bbox: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """The published bird crop around a bounding box, `[y1, x1, y2, x2]` int32.

    A square of half-side `int(0.75 * max(w, h))` centred on the box centre
    `(int((2x + w) / 2), int((2y + h) / 2))`, clipped to the image (AttnGAN `get_imgs`). A box
    with a negative entry means "no box" (COCO): the whole image. A window that falls outside
    the image also gives the whole image.

    Args:
        bbox: int32 `[4]`, `[x, y, w, h]` in pixels (CUB's `bounding_boxes.txt`, truncated to
            integers as the published code's `astype(int)`).
        height: image height.
        width: image width.

    Example:
        >>> crop_window(tf.constant([60, 27, 325, 304]), 375, 500).numpy()
        array([  0,   0, 375, 466], dtype=int32)
    """
    bbox = tf.cast(bbox, tf.int32)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    x, y, w, h = bbox[0], bbox[1], bbox[2], bbox[3]
    # int(max(w, h) * 0.75) == (3 * max) // 4 for integers (0.75 is exact in binary).
    r = (3 * tf.maximum(w, h)) // 4
    cx = (2 * x + w) // 2
    cy = (2 * y + h) // 2
    y1 = tf.maximum(0, cy - r)
    y2 = tf.minimum(height, cy + r)
    x1 = tf.maximum(0, cx - r)
    x2 = tf.minimum(width, cx + r)
    valid = tf.reduce_all(bbox >= 0) & (y2 > y1) & (x2 > x1)
    return tf.where(valid, tf.stack([y1, x1, y2, x2]), tf.stack([0, 0, height, width]))


def decode_image(image_bytes: tf.Tensor, bbox: tf.Tensor) -> tf.Tensor:
    """Decodes an image file's bytes to uint8 RGB `[H, W, 3]` and applies the bird crop.

    JPEG is decoded with the accurate integer DCT, which gives the same pixels as PIL (the
    published loader); other formats (a PNG under a .jpg name) go through `decode_image`.

    Args:
        image_bytes: scalar `tf.string`, the encoded image.
        bbox: int32 `[4]` `[x, y, w, h]`, or negative entries for no crop.

    Example:
        >>> image = decode_image(tf.io.read_file("bird.jpg"), tf.constant([-1, -1, -1, -1]))
    """
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )
    image = tf.ensure_shape(image, [None, None, 3])
    shape = tf.shape(image)
    window = crop_window(bbox, shape[0], shape[1])
    return image[window[0] : window[2], window[1] : window[3]]


def _resize(image: tf.Tensor, size) -> tf.Tensor:
    # Bilinear with antialiasing reproduces PIL's bilinear resize (a triangle filter widened
    # by the scale when shrinking), which torchvision's Resize uses on PIL images.
    return tf.image.resize(image, size, method="bilinear", antialias=True)


def preprocess_image(
    image: tf.Tensor,
    seed: tf.Tensor | None,
    training: bool,
    final_size: int = 256,
    num_stages: int = 3,
) -> tuple[tf.Tensor, ...]:
    """Resizes, crops and flips one image into the multi-scale training images.

    As the published transform (`Resize(final * 76 / 64)`, `RandomCrop(final)`,
    `RandomHorizontalFlip()`, then `Resize(64)`, `Resize(128)` of the crop): the shorter side
    is resized to `final_size * 76 / 64` keeping the aspect ratio (the longer side is
    `int(load * long / short)`, as torchvision), then a `final_size` square is cropped at random
    and flipped with probability 1/2 when training, or cropped at the centre without flip when
    not. Lower scales are bilinear (antialiased) downscales of the crop.

    Args:
        image: uint8 `[H, W, 3]` (already bbox-cropped).
        seed: int64 `[2]` stateless seed (ignored when not training).
        training: random crop + flip, or centre crop.
        final_size: the largest size (256 for three stages).
        num_stages: number of scales; sizes are `final_size / 2**k`.

    Returns:
        A tuple of float32 `[s, s, 3]` images in [-1, 1], smallest first.

    Example:
        >>> images = preprocess_image(image, tf.constant([1, 2], tf.int64), training=True)
    """
    load = load_size_for(final_size)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short = tf.minimum(height, width)
    # torchvision: the shorter side becomes `load`, the longer int(load * long / short).
    long_h = tf.cast(
        tf.math.floor(tf.cast(load * height, tf.float64) / tf.cast(width, tf.float64)), tf.int32
    )
    long_w = tf.cast(
        tf.math.floor(tf.cast(load * width, tf.float64) / tf.cast(height, tf.float64)), tf.int32
    )
    new_h = tf.where(width <= height, long_h, load)
    new_w = tf.where(width <= height, load, long_w)
    image = tf.cast(image, tf.float32)
    image = tf.cond(
        tf.equal(short, load),
        lambda: image,
        lambda: tf.clip_by_value(_resize(image, tf.stack([new_h, new_w])), 0.0, 255.0),
    )
    new_h = tf.shape(image)[0]
    new_w = tf.shape(image)[1]
    if training:
        crop_seed = tf.random.experimental.stateless_fold_in(seed, 0)
        top = tf.random.stateless_uniform(
            [], crop_seed, minval=0, maxval=new_h - final_size + 1, dtype=tf.int32
        )
        left = tf.random.stateless_uniform(
            [],
            tf.random.experimental.stateless_fold_in(crop_seed, 1),
            minval=0,
            maxval=new_w - final_size + 1,
            dtype=tf.int32,
        )
    else:
        # torchvision CenterCrop: int(round((h - size) / 2)), round half to even as tf.round.
        top = tf.cast(tf.round(tf.cast(new_h - final_size, tf.float32) / 2.0), tf.int32)
        left = tf.cast(tf.round(tf.cast(new_w - final_size, tf.float32) / 2.0), tf.int32)
    crop = image[top : top + final_size, left : left + final_size]
    if training:
        flip_seed = tf.random.experimental.stateless_fold_in(seed, 2)
        flip = tf.random.stateless_uniform([], flip_seed) < 0.5
        crop = tf.cond(flip, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
    crop = tf.ensure_shape(crop, [final_size, final_size, 3])
    images = []
    for stage in range(num_stages):
        size = final_size // 2 ** (num_stages - 1 - stage)
        scaled = crop if size == final_size else _resize(crop, [size, size])
        # ToTensor + Normalize((0.5,) * 3, (0.5,) * 3): [0, 255] -> [-1, 1].
        images.append(scaled / 127.5 - 1.0)
    return tuple(images)


def shorten_caption(
    ids: tf.Tensor, max_length: int, seed: tf.Tensor | None, oov_id: tf.Tensor | int = 1
) -> tuple[tf.Tensor, tf.Tensor]:
    """Pads token ids to `max_length`, shortening an over-long caption as the published loader.

    With a seed, a caption longer than `max_length` keeps `max_length` of its words chosen at
    random, in their original order (AttnGAN `get_caption`: shuffle the positions, keep the
    first `max_length`, sort). The choice is the same computation as
    `Tokenizer.tokenize_for_training` (top-k of stateless uniform scores), so published ids and
    re-tokenized text give the same ids for the same seed. Without a seed the caption is
    truncated (evaluation). An empty caption becomes `[oov_id]` (never an empty sequence).

    Args:
        ids: int `[n]` token ids without padding.
        max_length: the output length.
        seed: int64 `[2]` stateless seed, or None to truncate.
        oov_id: the id used for an empty caption.

    Returns:
        `(token_ids, length)`: int32 `[max_length]` (0-padded) and an int32 scalar.

    Example:
        >>> shorten_caption(tf.range(1, 21), 18, tf.constant([3, 4], tf.int64))
    """
    ids = tf.cast(tf.reshape(ids, [-1]), tf.int32)
    # No words -> [oov_id], as `Tokenizer` (the slice bound uses the size before the concat).
    ids = tf.concat([ids, tf.reshape(tf.cast(oov_id, tf.int32), [1])], axis=0)[
        : tf.maximum(tf.size(ids), 1)
    ]
    count = tf.size(ids)
    length = tf.minimum(count, max_length)
    if seed is None:
        ids = ids[:length]
    else:
        scores = tf.random.stateless_uniform([count], seed=tf.cast(seed, tf.int64))
        keep = tf.sort(tf.math.top_k(scores, k=length).indices)
        ids = tf.gather(ids, keep)
    ids = tf.pad(ids, [[0, max_length - length]])
    return tf.ensure_shape(ids, [max_length]), length


# --- The shared pipeline ----------------------------------------------------------------------


class SkipReport:
    """Collects the images a pipeline skipped (`skip_corrupt=True`) and logs them per pass.

    Args:
        split: the split name, for the messages.

    Example:
        >>> report = SkipReport("train"); report.files
        []
    """

    def __init__(self, split: str):
        self.split = split
        self._lock = threading.Lock()
        self._files: list[str] = []
        self._this_pass: list[str] = []

    @property
    def files(self) -> list[str]:
        """Every image skipped so far (each once)."""
        with self._lock:
            return list(self._files)

    def record(self, source) -> None:
        if hasattr(source, "numpy"):  # called through tf.py_function
            source = source.numpy()
        source = source.decode("utf-8", "replace") if isinstance(source, bytes) else str(source)
        logger.warning("Skipping unreadable image %s (split %r)", source, self.split)
        with self._lock:
            self._this_pass.append(source)
            if source not in self._files:
                self._files.append(source)

    def end_of_pass(self) -> None:
        with self._lock:
            skipped, self._this_pass = self._this_pass, []
        if skipped:
            logger.warning(
                "Skipped %d unreadable image(s) in split %r: %s",
                len(skipped),
                self.split,
                ", ".join(skipped),
            )


def _safe_decode(record: dict, read_files: bool) -> tf.data.Dataset:
    # Decoding runs in a one-element dataset whose errors are dropped; an empty result falls
    # through to a marker with ok=False, so the next step can name the file in its error (a
    # bare tf.data decode error does not say which file failed).
    def decode(image, bbox):
        data = tf.io.read_file(image) if read_files else image
        return decode_image(data, bbox), tf.constant(True)

    decoded = (
        tf.data.Dataset.from_tensors((record["image"], record["bbox"])).map(decode).ignore_errors()
    )
    marker = tf.data.Dataset.from_tensors((tf.zeros([0, 0, 3], tf.uint8), tf.constant(False)))
    rest = {k: v for k, v in record.items() if k != "image"}
    return (
        decoded.concatenate(marker)
        .take(1)
        .map(lambda image, ok: {**rest, "image": image, "ok": ok})
    )


def build_pipeline(
    records: tf.data.Dataset,
    *,
    read_files: bool,
    tokenizer=None,
    training: bool = True,
    seed: int | None = None,
    words_num: int = 18,
    final_size: int = 256,
    num_stages: int = 3,
    split: str = "train",
    skip_corrupt: bool = False,
    report: SkipReport | None = None,
    num_parallel_calls: int = AUTOTUNE,
    deterministic: bool | None = None,
) -> tf.data.Dataset:
    """Turns a stream of image records into the package's dataset elements.

    Shared by `AttnGANDataset.make_dataset` and `read_tfrecords`. A record is a dict:
    `index` int64 (position in the split's file order, seeds the example's randomness),
    `key` string, `class_id` int32, `bbox` int32 [4] (negative: none), `image` string (a path
    when `read_files`, else the encoded bytes), `source` string (names the image in errors),
    `caption_ids` int32 ragged [captions, None], `captions` string [captions], `oov_id` int32.

    Args:
        records: the records, already in the wanted order (shuffled or not).
        read_files: `image` holds a file path (True) or the encoded bytes (False).
        tokenizer: a `Tokenizer` to tokenize the raw caption text, or None to use
            `caption_ids` (the published ids) directly.
        training: random caption, shortening, crop and flip; else first caption, truncation,
            centre crop.
        seed: seeds the per-pass salt (None: nondeterministic).
        words_num: caption length (the tokenizer's `max_length` when one is given).
        final_size: largest image size.
        num_stages: number of image scales.
        split: split name for messages.
        skip_corrupt: skip unreadable images (logged through `report`) instead of failing.
        report: collects skipped images (created when None).
        num_parallel_calls: parallelism of decoding and preprocessing.
        deterministic: order guarantee of the parallel steps (None: tf.data's default).

    Returns:
        An unbatched `tf.data.Dataset` of dicts `images` (tuple of float32 [s, s, 3] in [-1, 1],
        smallest first), `token_ids` int32 [words_num], `caption_length` int32, `class_id`
        int32, `key` string, `caption` string.

    Example:
        >>> ds = build_pipeline(records, read_files=True, seed=0)
    """
    if tokenizer is not None and tokenizer.max_length != words_num:
        raise ValueError(
            f"the tokenizer's max_length ({tokenizer.max_length}) differs from words_num "
            f"({words_num})"
        )
    report = report or SkipReport(split)
    unsalted = records

    if training:
        # One salt per pass over the data: a new draw each epoch, the same draws for a seed.
        salts = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        records = salts.flat_map(lambda salt: records.map(lambda r: {**r, "salt": salt}))

    decoded = records.interleave(
        lambda r: _safe_decode(r, read_files),
        num_parallel_calls=num_parallel_calls,
        deterministic=deterministic,
    )

    def check(r):
        ok = r["ok"]
        if skip_corrupt:

            def log():
                tf.py_function(report.record, [r["source"]], [])
                return tf.constant(False)

            ok = tf.cond(ok, lambda: tf.constant(True), log)
            return {**r, "ok": ok}
        message = tf.strings.join(
            [
                "Cannot read image ",
                r["source"],
                # No quotes: the Assert kernel escapes them in its message.
                f" of the {split} split: the file is missing or not a valid image (truncated "
                "or corrupt). Pass skip_corrupt=True to skip unreadable images.",
            ]
        )
        assertion = tf.debugging.Assert(ok, [message])
        with tf.control_dependencies([assertion]):
            return {**r, "image": tf.identity(r["image"])}

    decoded = decoded.map(check)
    if skip_corrupt:

        def end_of_pass(r):
            tf.py_function(report.end_of_pass, [], [])
            return tf.constant(False)

        # After the last record of a pass, log the summary (the tail element is dropped).
        # Built from the records before the salt is attached, so it draws no salt itself.
        tail = unsalted.take(1)
        if training:
            tail = tail.map(lambda r: {**r, "salt": tf.constant(0, tf.int64)})
        tail = tail.interleave(lambda r: _safe_decode(r, read_files)).map(
            lambda r: {**r, "ok": tf.constant(False)}
        )
        decoded = decoded.filter(lambda r: r["ok"]).concatenate(tail.filter(end_of_pass))

    def example(r):
        seed_ = None
        if training:
            seed_ = tf.stack([tf.cast(r["salt"], tf.int64), tf.cast(r["index"], tf.int64)])
            caption_seed = tf.random.experimental.stateless_fold_in(seed_, 10)
            count = tf.shape(r["captions"])[0]
            # The published loader: `random.randint(0, captions_per_image)`.
            choice = tf.random.stateless_uniform(
                [], caption_seed, minval=0, maxval=count, dtype=tf.int32
            )
            words_seed = tf.random.experimental.stateless_fold_in(seed_, 11)
        else:
            choice = tf.constant(0, tf.int32)
            words_seed = None
        caption = r["captions"][choice]
        if tokenizer is None:
            ids, length = shorten_caption(
                r["caption_ids"][choice], words_num, words_seed, r["oov_id"]
            )
        elif training:
            ids, length = tokenizer.tokenize_for_training(caption, words_seed)
        else:
            ids, lengths = tokenizer(tf.reshape(caption, [1]))
            ids, length = ids[0], lengths[0]
        images = preprocess_image(r["image"], seed_, training, final_size, num_stages)
        return {
            "images": images,
            "token_ids": tf.cast(ids, tf.int32),
            "caption_length": tf.cast(length, tf.int32),
            "class_id": tf.cast(r["class_id"], tf.int32),
            "key": r["key"],
            "caption": caption,
        }

    dataset = decoded.map(
        example, num_parallel_calls=num_parallel_calls, deterministic=deterministic
    )
    return dataset.prefetch(AUTOTUNE)


# --- The AttnGAN layout -----------------------------------------------------------------------


def _as_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _published_tokens(line: str) -> list[str]:
    # AttnGAN `load_captions`: RegexpTokenizer(r"\w+") on the lowercased line, then non-ASCII
    # characters dropped from each word.
    line = line.replace("\ufffd\ufffd", " ")
    tokens = [t.encode("ascii", "ignore").decode("ascii") for t in _WORD.findall(line.lower())]
    return [t for t in tokens if t]


class AttnGANDataset:
    """One split of a preprocessed AttnGAN dataset (CUB-200-2011 birds or COCO-2014).

    Files read (as the published AttnGAN/MirrorGAN code): `captions.pickle`
    (`[train_captions, test_captions, ixtoword, wordtoix]`, captions as word ids in file order,
    `captions_per_image` per image), `{split}/filenames.pickle` (the image keys),
    `{split}/class_info.pickle`, `text/<key>.txt` (raw captions, optional), and the images:
    birds `CUB_200_2011/images/<key>.jpg` with `CUB_200_2011/images.txt` and
    `bounding_boxes.txt`; COCO `images/<key>.jpg` (e.g. `images/COCO_train2014_000000000009.jpg`).

    Without `class_info.pickle`, birds take the CUB class number from the key's folder prefix
    (`"001.Black_footed_Albatross/..."` -> 1, the numbering of the published pickles) and
    other datasets number the images 0, 1, ... (as the published loader).

    Pickles are read with `load_pickle` (no code from the files runs). Images are only read by
    the `tf.data` pipeline; an unreadable image stops it with an error that names the file and
    the split, unless `skip_corrupt=True` (then it is skipped and reported).

    Args:
        data_dir: the dataset folder (e.g. `data/birds`).
        split: "train" or "test".
        dataset: "birds", "coco" or None (birds when `data_dir/CUB_200_2011` exists).
        words_num: caption length in tokens (published: 18 birds, 12 COCO).
        num_stages: number of image scales (3: 64, 128, 256).
        skip_corrupt: skip unreadable images instead of failing.
        base_size: smallest image size (64 as published; smaller sizes make quick tests).

    Example:
        >>> data = AttnGANDataset("data/birds", split="train")
        >>> ds = data.make_dataset(None, seed=0).batch(12, drop_remainder=True)
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str = "train",
        dataset: str | None = None,
        words_num: int = 18,
        num_stages: int = 3,
        skip_corrupt: bool = False,
        base_size: int = 64,
    ):
        data_dir = os.fspath(data_dir)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if dataset is None:
            dataset = "birds" if os.path.isdir(os.path.join(data_dir, "CUB_200_2011")) else "coco"
        if dataset not in CAPTIONS_PER_IMAGE:
            raise ValueError(f"dataset must be 'birds', 'coco' or None, got {dataset!r}")
        if num_stages < 1 or base_size < 1 or words_num < 1:
            raise ValueError("num_stages, base_size and words_num must be positive")
        # === Config ===
        self.data_dir = data_dir
        self.split = split
        self.dataset = dataset
        self.words_num = int(words_num)
        self.num_stages = int(num_stages)
        self.skip_corrupt = bool(skip_corrupt)
        self.base_size = int(base_size)
        self.final_size = self.base_size * 2 ** (self.num_stages - 1)
        self.captions_per_image = CAPTIONS_PER_IMAGE[dataset]
        self._report = SkipReport(split)
        self._raw_captions: list[list[str]] | None = None
        self._vocabulary: Vocabulary | None = None

        # === Metadata ===
        captions_path = self._require("captions.pickle")
        captions = load_pickle(captions_path)
        if not isinstance(captions, list | tuple) or len(captions) != 4:
            raise ValueError(
                f"{captions_path}: expected [train_captions, test_captions, ixtoword, wordtoix]"
            )
        all_ids = captions[0] if split == "train" else captions[1]
        self.ixtoword, self.wordtoix = captions[2], captions[3]
        self.keys = [_as_str(k) for k in load_pickle(self._require(split, "filenames.pickle"))]
        n, cpi = len(self.keys), self.captions_per_image
        if len(all_ids) != n * cpi:
            raise ValueError(
                f"{captions_path} holds {len(all_ids):,} {split} captions for {n:,} images in "
                f"{split}/filenames.pickle; {dataset} has {cpi} captions per image "
                f"({n * cpi:,} expected). Is this the {dataset} captions.pickle?"
            )
        self.caption_ids = [[int(i) for i in ids] for ids in all_ids]
        self.class_ids = self._load_class_ids()
        if dataset == "birds":
            self.image_dir = os.path.join(data_dir, "CUB_200_2011", "images")
            self.bboxes = self._load_bboxes()
        else:
            self.image_dir = os.path.join(data_dir, "images")
            self.bboxes = np.full([n, 4], -1, np.int32)
        if n and not os.path.isfile(self.image_path(0)):
            raise FileNotFoundError(
                f"image {self.image_path(0)} of split {split!r} not found: the {dataset} images "
                f"are expected under {self.image_dir}/<key>.jpg"
            )

    # --- Loading ------------------------------------------------------------------------------

    def _require(self, *parts: str) -> str:
        path = os.path.join(self.data_dir, *parts)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: {self.data_dir} does not look like a preprocessed AttnGAN "
                "dataset (captions.pickle, train/ and test/filenames.pickle, images)"
            )
        return path

    def _load_class_ids(self) -> np.ndarray:
        path = os.path.join(self.data_dir, self.split, "class_info.pickle")
        if os.path.isfile(path):
            ids = np.asarray(load_pickle(path)).astype(np.int64).reshape(-1)
            if len(ids) != len(self.keys):
                raise ValueError(f"{path} has {len(ids):,} class ids for {len(self.keys):,} images")
            return ids.astype(np.int32)
        prefixes = [k.split("/", 1)[0].split(".", 1)[0] for k in self.keys]
        if self.dataset == "birds" and all(p.isdigit() for p in prefixes):
            return np.asarray([int(p) for p in prefixes], np.int32)
        return np.arange(len(self.keys), dtype=np.int32)

    def _load_bboxes(self) -> np.ndarray:
        cub = os.path.join(self.data_dir, "CUB_200_2011")
        names = {}
        with open(self._require("CUB_200_2011", "images.txt")) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    names[parts[0]] = os.path.splitext(parts[1])[0]
        boxes = {}
        with open(self._require("CUB_200_2011", "bounding_boxes.txt")) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 5 and parts[0] in names:
                    # The published code reads the boxes with pandas `.astype(int)`: truncation.
                    boxes[names[parts[0]]] = [int(float(v)) for v in parts[1:]]
        missing = [k for k in self.keys if k not in boxes]
        if missing:
            raise ValueError(
                f"{len(missing):,} {self.split} images have no bounding box in "
                f"{cub}/bounding_boxes.txt (e.g. {missing[0]!r})"
            )
        return np.asarray([boxes[k] for k in self.keys], np.int32).reshape(-1, 4)

    @property
    def vocabulary(self) -> Vocabulary:
        """The published vocabulary (ids as `wordtoix`, `"<unk>"` appended at id V)."""
        if self._vocabulary is None:
            self._vocabulary = Vocabulary.from_attngan(self.ixtoword, self.wordtoix)
        return self._vocabulary

    @property
    def raw_captions(self) -> list[list[str]]:
        """The caption texts per image, aligned with the caption ids.

        Read from `text/<key>.txt` as the published loader counts lines (empty lines and lines
        without words are skipped, the first `captions_per_image` kept). A line whose words do
        not give the pickled ids (or a missing file) is replaced by the decoded ids.
        """
        if self._raw_captions is None:
            self._raw_captions = self._read_raw_captions()
        return self._raw_captions

    def _read_raw_captions(self) -> list[list[str]]:
        cpi = self.captions_per_image
        wordtoix = {_as_str(w): int(i) for w, i in self.wordtoix.items()}
        ixtoword = {int(i): _as_str(w) for i, w in self.ixtoword.items()}
        text_dir = os.path.join(self.data_dir, "text")
        result, replaced = [], 0
        for n, key in enumerate(self.keys):
            lines: list[str] = []
            path = os.path.join(text_dir, key + ".txt")
            if os.path.isfile(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    for line in f.read().split("\n"):
                        if line and _published_tokens(line):
                            lines.append(line.strip())
                            if len(lines) == cpi:
                                break
            texts = []
            for j in range(cpi):
                ids = self.caption_ids[n * cpi + j]
                if (
                    j < len(lines)
                    and [wordtoix[t] for t in _published_tokens(lines[j]) if t in wordtoix] == ids
                ):
                    texts.append(lines[j])
                else:
                    replaced += bool(lines)
                    texts.append(" ".join(ixtoword.get(i, "<unk>") for i in ids))
            result.append(texts)
        if replaced:
            logger.warning(
                "%d %s caption line(s) under %s do not match captions.pickle; their text is "
                "decoded from the ids instead",
                replaced,
                self.split,
                text_dir,
            )
        return result

    # --- Access -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (
            f"AttnGANDataset({self.data_dir!r}, split={self.split!r}, dataset={self.dataset!r}, "
            f"images={len(self):,})"
        )

    def image_path(self, index: int) -> str:
        """The image file of example `index`."""
        return os.path.join(self.image_dir, self.keys[index] + ".jpg")

    def captions_of(self, index: int) -> list[list[int]]:
        """The published caption ids of example `index` (file order)."""
        cpi = self.captions_per_image
        return self.caption_ids[index * cpi : (index + 1) * cpi]

    @property
    def skipped_files(self) -> list[str]:
        """The images skipped so far by datasets of this reader (`skip_corrupt=True`)."""
        return self._report.files

    def records(self) -> tf.data.Dataset:
        """The split's image records in file order (see `build_pipeline`), images as paths.

        Example:
            >>> next(iter(data.records()))["key"]
        """
        cpi = self.captions_per_image
        lengths = [len(ids) for ids in self.caption_ids]
        flat = [i for ids in self.caption_ids for i in ids]
        caption_ids = tf.RaggedTensor.from_nested_row_lengths(
            tf.constant(flat, tf.int32, shape=[len(flat)]),
            [
                tf.constant([cpi] * len(self), tf.int64, shape=[len(self)]),
                tf.constant(lengths, tf.int64, shape=[len(lengths)]),
            ],
        )
        paths = [self.image_path(i) for i in range(len(self))]
        texts = self.raw_captions
        return tf.data.Dataset.from_tensor_slices(
            {
                "index": tf.range(len(self), dtype=tf.int64),
                "key": tf.constant(self.keys, tf.string, shape=[len(self)]),
                "class_id": tf.constant(self.class_ids, tf.int32, shape=[len(self)]),
                "bbox": tf.constant(self.bboxes, tf.int32, shape=[len(self), 4]),
                "image": tf.constant(paths, tf.string, shape=[len(self)]),
                "source": tf.constant(paths, tf.string, shape=[len(self)]),
                "caption_ids": caption_ids,
                "captions": tf.constant(texts, tf.string, shape=[len(self), cpi]),
                "oov_id": tf.fill([len(self)], tf.constant(self.vocabulary.oov_id, tf.int32)),
            }
        )

    def make_dataset(
        self,
        tokenizer=None,
        training: bool = True,
        seed: int | None = None,
        shuffle: bool = True,
        num_parallel_calls: int = AUTOTUNE,
        deterministic: bool | None = None,
    ) -> tf.data.Dataset:
        """The split as an unbatched `tf.data.Dataset` of the package's element dicts.

        Elements: `images` (tuple of float32 `[s, s, 3]` in [-1, 1], s = 64, 128, 256 for the
        published sizes), `token_ids` int32 `[words_num]`, `caption_length`, `class_id`, `key`,
        `caption` (the raw text of the chosen caption). See `build_pipeline` for the processing.

        Args:
            tokenizer: None to use the published caption ids (they already are ids of
                `self.vocabulary`), or a `Tokenizer` (`max_length == words_num`) to tokenize
                the caption text, e.g. with a vocabulary of your own.
            training: random caption / word subset / crop / flip, or first caption, truncation
                and centre crop.
            seed: makes the order and the augmentation repeatable (each pass still differs).
            shuffle: shuffle the images (training only; the whole split is the buffer).
            num_parallel_calls: parallel decoding and preprocessing.
            deterministic: order guarantee of the parallel steps (None: tf.data's default,
                deterministic); False is faster.

        Example:
            >>> ds = data.make_dataset(None, seed=0).batch(12, drop_remainder=True)
        """
        records = self.records()
        if shuffle and training:
            records = records.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return build_pipeline(
            records,
            read_files=True,
            tokenizer=tokenizer,
            training=training,
            seed=seed,
            words_num=self.words_num,
            final_size=self.final_size,
            num_stages=self.num_stages,
            split=self.split,
            skip_corrupt=self.skip_corrupt,
            report=self._report,
            num_parallel_calls=num_parallel_calls,
            deterministic=deterministic,
        )
