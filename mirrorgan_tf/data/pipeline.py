"""One entry point to every data source: `shapes`, an AttnGAN-layout folder, TFRecords.

`--data` of the command line is resolved here: the word `shapes` is the built-in dataset, a
folder holding `captions.pickle` is the AttnGAN layout (CUB-200 birds or COCO), and anything
else is the prefix of TFRecords written by `mirrorgan-tf prepare-data`.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import tensorflow as tf

from mirrorgan_tf.data.tokenizer import Tokenizer
from mirrorgan_tf.data.vocabulary import Vocabulary

# Images per split of the built-in dataset (scenes are rendered on the fly and cached).
SHAPES_SPLIT_SIZES = {"train": 4096, "test": 512}


def data_kind(data: str) -> str:
    """`shapes`, `attngan` or `tfrecords`.

    Args:
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.

    Raises:
        ValueError: when `data` is none of them.

    Example:
    >>> data_kind("shapes")
    'shapes'
    """
    if data == "shapes":
        return "shapes"
    if os.path.isdir(data):
        if os.path.exists(os.path.join(data, "captions.pickle")):
            return "attngan"
        raise ValueError(
            f"{data!r} is a folder without captions.pickle: not the AttnGAN layout. Expected "
            "captions.pickle, train/filenames.pickle, test/filenames.pickle and the images."
        )
    if _tfrecord_files(data):
        return "tfrecords"
    raise ValueError(
        f"--data {data!r}: not 'shapes', not an AttnGAN-layout folder, and no TFRecords "
        f"match {data}-*.tfrecord (write them with `mirrorgan-tf prepare-data`)."
    )


def _tfrecord_files(prefix: str) -> list[str]:
    return sorted(glob.glob(f"{prefix}-*-of-*.tfrecord"))


def vocabulary_of(data: str) -> Vocabulary:
    """The vocabulary of a data source (AttnGAN: exactly the published ids, plus <unk>).

    Args:
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.

    Example:
    >>> len(vocabulary_of("shapes")) > 20
    True
    """
    kind = data_kind(data)
    if kind == "shapes":
        from mirrorgan_tf.data.shapes import shapes_vocabulary

        return shapes_vocabulary()
    if kind == "attngan":
        return Vocabulary.from_captions_pickle(os.path.join(data, "captions.pickle"))
    from mirrorgan_tf.data.tfrecords import load_vocabulary

    return load_vocabulary(data)


def num_examples(data: str, split: str = "train") -> int:
    """The number of images of a split.

    Args:
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.
        split: `train` or `test` (TFRecords: the split the prefix was written from).

    Example:
    >>> num_examples("shapes", "test")
    512
    """
    kind = data_kind(data)
    if kind == "shapes":
        return SHAPES_SPLIT_SIZES[split]
    if kind == "attngan":
        from mirrorgan_tf.data.attngan import AttnGANDataset

        return len(AttnGANDataset(data, split=split))
    return sum(1 for _ in tf.data.TFRecordDataset(_tfrecord_files(data)))


def open_dataset(
    data: str,
    split: str,
    tokenizer: Tokenizer,
    config: dict[str, Any],
    training: bool,
    seed: int,
) -> tf.data.Dataset:
    """The unbatched examples of a split, in the data contract's layout.

    Elements: `{"images": (one [s, s, 3] float image in [-1, 1] per stage), "token_ids",
    "caption_length", "class_id", "key", "caption"}`.

    Args:
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.
        split: `train` or `test`.
        tokenizer: the tokenizer of the run (its vocabulary must be `vocabulary_of(data)`).
        config: the preset configuration (`words_num`, `num_stages`).
        training: random crops, flips and caption draws, shuffled order.
        seed: makes the order and draws repeat.

    Example:
    >>> ds = open_dataset("shapes", "test", tokenizer, config, False, 0)  # doctest: +SKIP
    """
    kind = data_kind(data)
    num_stages = config["num_stages"]
    final_size = 64 * 2 ** (num_stages - 1)
    if kind == "shapes":
        from mirrorgan_tf.data.shapes import make_dataset

        return make_dataset(
            split,
            tokenizer,
            SHAPES_SPLIT_SIZES[split],
            image_size=final_size,
            num_stages=num_stages,
            seed=seed,
            training=training,
        )
    if kind == "attngan":
        from mirrorgan_tf.data.attngan import AttnGANDataset

        dataset = AttnGANDataset(
            data, split=split, words_num=config["words_num"], num_stages=num_stages
        )
        # tokenizer=None: the published ids of captions.pickle, exactly.
        return dataset.make_dataset(None, training=training, seed=seed, shuffle=training)
    from mirrorgan_tf.data.tfrecords import read_tfrecords

    return read_tfrecords(
        _tfrecord_files(data),
        None,
        training=training,
        seed=seed,
        shuffle=training,
        final_size=final_size,
        num_stages=num_stages,
        words_num=config["words_num"],
    )


def sample_captions(data: str, count: int = 4, split: str = "test") -> list[str]:
    """The first `count` captions of a split, for fixed sample grids.

    Args:
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.
        count: how many.
        split: which split (TFRecords: the prefix's).

    Example:
    >>> len(sample_captions("shapes", 3))
    3
    """
    kind = data_kind(data)
    if kind == "shapes":
        from mirrorgan_tf.data.shapes import ShapesDataset

        shapes = ShapesDataset(split, num_images=count, image_size=64, num_stages=1)
        return [shapes.captions(i)[0] for i in range(count)]
    # The other sources keep the raw text in each element's "caption".
    config = {"num_stages": 1, "words_num": 18}
    dataset = open_dataset(data, split, None, config, training=False, seed=0).take(count)
    return [element["caption"].numpy().decode("utf-8") for element in dataset]
