"""One entry point to every data source: `shapes`, an AttnGAN-layout folder, TFRecords.

`--data` of the command line is resolved here: the word `shapes` is the built-in dataset
(`shapes:easy`, `shapes:medium`, `shapes:full` its difficulty levels; `shapes` is `full`), a
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


def shapes_level(data: str) -> str | None:
    """The difficulty level `data` names for the built-in dataset, or None for other data.

    Args:
        data: `shapes` (the `full` level), `shapes:LEVEL`, or any other data source.

    Raises:
        ValueError: for `shapes:` followed by an unknown level.

    Example:
    >>> shapes_level("shapes:easy"), shapes_level("shapes"), shapes_level("data/birds")
    ('easy', 'full', None)
    """
    name, sep, level = str(data).partition(":")
    if name != "shapes":
        return None
    from mirrorgan_tf.data.shapes import DEFAULT_LEVEL, LEVELS

    if not sep:
        return DEFAULT_LEVEL
    if level not in LEVELS:
        raise ValueError(
            f"--data {data!r}: unknown level {level!r} of the built-in dataset; expected "
            f"shapes or one of {', '.join('shapes:' + k for k in LEVELS)}."
        )
    return level


def data_kind(data: str) -> str:
    """`shapes`, `attngan` or `tfrecords`.

    Args:
        data: `shapes` or `shapes:LEVEL`, an AttnGAN-layout folder, or a TFRecords prefix.

    Raises:
        ValueError: when `data` is none of them.

    Example:
    >>> data_kind("shapes"), data_kind("shapes:easy")
    ('shapes', 'shapes')
    """
    if shapes_level(data) is not None:
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
            level=shapes_level(data),
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

        shapes = ShapesDataset(
            split, num_images=count, image_size=64, num_stages=1, level=shapes_level(data)
        )
        return [shapes.captions(i)[0] for i in range(count)]
    # The other sources keep the raw text in each element's "caption".
    config = {"num_stages": 1, "words_num": 18}
    dataset = open_dataset(data, split, None, config, training=False, seed=0).take(count)
    return [element["caption"].numpy().decode("utf-8") for element in dataset]


def curriculum_schedule(
    curriculum: str, steps: int, multiple_of: int = 1
) -> list[tuple[int, str]]:
    """Turns a curriculum of built-in dataset levels into `(end_step, data)` segments.

    `curriculum` is `LEVEL:STEPS,LEVEL:STEPS,...,LEVEL`: each level trains for its steps in
    turn, and the last may omit its count to train until `steps`.

    Args:
        curriculum: e.g. `"easy:2000,medium:2000,full"`.
        steps: the run's total steps.
        multiple_of: every level change must fall on a multiple of this (the checkpoint
            interval, so that a resumed run restarts at the level it stopped in).

    Returns:
        `[(end_step, "shapes:LEVEL"), ...]`, the last ending at `steps`.

    Raises:
        ValueError: for an unknown level, a bad count, or steps that do not add up.

    Example:
    >>> curriculum_schedule("easy:200,medium:200,full", 1000)
    [(200, 'shapes:easy'), (400, 'shapes:medium'), (1000, 'shapes:full')]
    """
    entries = [e.strip() for e in str(curriculum).split(",") if e.strip()]
    if not entries:
        raise ValueError("--curriculum is empty; expected LEVEL:STEPS,...,LEVEL.")
    schedule, end = [], 0
    for k, entry in enumerate(entries):
        level, sep, count = entry.partition(":")
        data = f"shapes:{level}"
        shapes_level(data)  # raises for an unknown level
        if not sep:
            if k != len(entries) - 1:
                raise ValueError(
                    f"--curriculum {curriculum!r}: only the last level may omit its step count."
                )
            end = steps
        else:
            try:
                n = int(count)
            except ValueError:
                n = 0
            if n < 1:
                raise ValueError(
                    f"--curriculum {curriculum!r}: {entry!r} needs a positive step count."
                )
            end += n
        if end > steps or (k == len(entries) - 1 and end != steps):
            raise ValueError(
                f"--curriculum {curriculum!r} covers {end:,} steps but the run has {steps:,}; "
                "give the last level no step count to train it until the end."
            )
        if k < len(entries) - 1 and end % multiple_of:
            raise ValueError(
                f"--curriculum {curriculum!r}: the level change at step {end:,} is not a "
                f"multiple of --checkpoint-every ({multiple_of}), so a resumed run could not "
                "restart at the right level."
            )
        if schedule and end <= schedule[-1][0]:
            raise ValueError(f"--curriculum {curriculum!r}: {entry!r} trains no steps.")
        schedule.append((end, data))
    return schedule
