"""Sharded TFRecords of an AttnGAN-layout dataset, and their reader.

Each record holds the ORIGINAL image file bytes (no re-encoding) with the bird bounding box,
all captions of the image (ids and text), the class id, the key and the example's index in the
split. The reader feeds the records through the same `build_pipeline` as the direct reader
(`AttnGANDataset.make_dataset`), so both give identical elements for the same seed; storing the
original bytes instead of a re-encoded crop keeps them bit-identical (no JPEG re-encoding loss)
at the cost of storing the whole photograph.

Shards are contiguous runs of the split in file order (`PREFIX-00000-of-00008.tfrecord`, ...).
`write_tfrecords` also writes the vocabulary next to them (`PREFIX-vocabulary.txt`,
`Vocabulary.save` format) so a model can be built from the TFRecords alone.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from mirrorgan_tf.data.attngan import (
    AUTOTUNE,
    AttnGANDataset,
    SkipReport,
    build_pipeline,
    decode_image,
)
from mirrorgan_tf.data.vocabulary import Vocabulary

FORMATS = ("attngan",)

_FEATURES = {
    "key": tf.io.FixedLenFeature([], tf.string),
    "index": tf.io.FixedLenFeature([], tf.int64),
    "class_id": tf.io.FixedLenFeature([], tf.int64),
    "bbox": tf.io.FixedLenFeature([4], tf.int64),
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "caption_ids": tf.io.RaggedFeature(
        tf.int64,
        value_key="caption_ids",
        partitions=[tf.io.RaggedFeature.RowLengths("caption_lengths")],
        row_splits_dtype=tf.int64,
    ),
    "captions": tf.io.RaggedFeature(tf.string, value_key="captions"),
    "oov_id": tf.io.FixedLenFeature([], tf.int64),
}


def shard_path(out_prefix: str | os.PathLike, shard: int, shards: int) -> str:
    """The file name of one shard: `PREFIX-00003-of-00008.tfrecord`.

    Example:
        >>> shard_path("data/birds_train", 3, 8)
        'data/birds_train-00003-of-00008.tfrecord'
    """
    return f"{os.fspath(out_prefix)}-{shard:05d}-of-{shards:05d}.tfrecord"


def vocabulary_path(out_prefix: str | os.PathLike) -> str:
    """The vocabulary file written beside the shards: `PREFIX-vocabulary.txt`."""
    return f"{os.fspath(out_prefix)}-vocabulary.txt"


def _bytes(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _checked_images(dataset: AttnGANDataset) -> tf.data.Dataset:
    # Reads every image and decodes it once (in parallel, in file order), so that an unreadable
    # image is found here, named, and never reaches a TFRecord.
    def load(path, bbox):
        data = tf.io.read_file(path)
        image = decode_image(data, bbox)
        return data, tf.size(image) >= 0  # uses the decode, so it is not pruned

    def check(r):
        loaded = tf.data.Dataset.from_tensors((r["image"], r["bbox"])).map(load).ignore_errors()
        marker = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(False)))
        return loaded.concatenate(marker).take(1).map(lambda data, ok: (r["index"], data, ok))

    return (
        dataset.records()
        .interleave(check, num_parallel_calls=AUTOTUNE, deterministic=True)
        .prefetch(AUTOTUNE)
    )


def write_tfrecords(
    dataset: AttnGANDataset,
    out_prefix: str | os.PathLike,
    shards: int = 8,
    progress: bool = True,
) -> int:
    """Writes a split into sharded TFRecords `PREFIX-0000k-of-0000N.tfrecord`.

    Every image is decoded once while writing: an unreadable image raises an error naming the
    file and the split, or, when the dataset was made with `skip_corrupt=True`, is left out and
    listed at the end. The vocabulary is written to `PREFIX-vocabulary.txt`.

    Args:
        dataset: the split to write.
        out_prefix: path prefix of the shard files (folders are created).
        shards: number of shard files (contiguous runs of the split in file order).
        progress: show a `keras.utils.Progbar`.

    Returns:
        The number of examples written.

    Example:
        >>> count = write_tfrecords(AttnGANDataset("data/birds", "train"), "tfr/birds_train")
    """
    if int(shards) != shards or shards < 1:
        raise ValueError(f"shards must be a positive integer, got {shards!r}")
    shards = int(shards)
    out_prefix = os.fspath(out_prefix)
    folder = os.path.dirname(out_prefix)
    if folder:
        os.makedirs(folder, exist_ok=True)
    total = len(dataset)
    cpi = dataset.captions_per_image
    oov_id = dataset.vocabulary.oov_id
    texts = dataset.raw_captions
    report = SkipReport(dataset.split)
    bar = keras.utils.Progbar(total, unit_name="image") if progress else None
    writers = [tf.io.TFRecordWriter(shard_path(out_prefix, k, shards)) for k in range(shards)]
    count = 0
    try:
        for step, (index, data, ok) in enumerate(_checked_images(dataset).as_numpy_iterator()):
            index = int(index)
            if not ok:
                path = dataset.image_path(index)
                if not dataset.skip_corrupt:
                    raise ValueError(
                        f"Cannot read image {path} (split {dataset.split!r}): the file is "
                        "missing or not a valid image (truncated or corrupt). Pass "
                        "skip_corrupt=True to leave unreadable images out."
                    )
                report.record(path)
            else:
                captions = dataset.captions_of(index)
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "key": _bytes([dataset.keys[index].encode("utf-8")]),
                            "index": _ints([index]),
                            "class_id": _ints([dataset.class_ids[index]]),
                            "bbox": _ints(dataset.bboxes[index]),
                            "image/encoded": _bytes([data]),
                            "caption_ids": _ints([i for ids in captions for i in ids]),
                            "caption_lengths": _ints([len(ids) for ids in captions]),
                            "captions": _bytes([t.encode("utf-8") for t in texts[index]]),
                            "oov_id": _ints([oov_id]),
                        }
                    )
                )
                assert len(captions) == cpi
                writers[index * shards // max(total, 1)].write(example.SerializeToString())
                count += 1
            if bar is not None:
                bar.update(step + 1)
    finally:
        for writer in writers:
            writer.close()
    report.end_of_pass()
    dataset.vocabulary.save(vocabulary_path(out_prefix))
    print(
        f"Wrote {count:,} of {total:,} {dataset.split} examples to {shards} shard(s) "
        f"{shard_path(out_prefix, 0, shards).replace('-00000-', '-*-')}"
        + (f"; skipped {len(report.files)} unreadable image(s)" if report.files else "")
    )
    return count


def _parse(serialized: tf.Tensor, filename: tf.Tensor) -> dict:
    x = tf.io.parse_single_example(serialized, _FEATURES)
    return {
        "index": x["index"],
        "key": x["key"],
        "class_id": tf.cast(x["class_id"], tf.int32),
        "bbox": tf.cast(x["bbox"], tf.int32),
        "image": x["image/encoded"],
        "source": tf.strings.join([x["key"], " in ", filename]),
        "caption_ids": tf.cast(x["caption_ids"], tf.int32),
        "captions": x["captions"],
        "oov_id": tf.cast(x["oov_id"], tf.int32),
    }


def read_tfrecords(
    pattern: str | os.PathLike | list[str],
    tokenizer=None,
    training: bool = True,
    seed: int | None = None,
    shuffle: bool = True,
    shuffle_buffer: int = 1024,
    cache: bool = False,
    deterministic: bool | None = None,
    final_size: int = 256,
    num_stages: int = 3,
    words_num: int = 18,
    skip_corrupt: bool = False,
    num_parallel_calls: int = AUTOTUNE,
    cycle_length: int = 8,
) -> tf.data.Dataset:
    """Reads TFRecords written by `write_tfrecords` into the package's dataset elements.

    With `shuffle` (training only) the shard order is shuffled each pass, up to `cycle_length`
    shards are read in parallel and records go through a `shuffle_buffer`; without it the
    shards are read one after the other, in file order. Decoding and preprocessing run in
    parallel; the processing is the direct reader's (`build_pipeline`), so the same seed gives
    the same augmentation of each example as `AttnGANDataset.make_dataset`.

    Args:
        pattern: a glob such as `"tfr/birds_train-*.tfrecord"`, or a list of files.
        tokenizer: None to use the stored caption ids, or a `Tokenizer` for the stored text.
        training: random caption / word subset / crop / flip, or evaluation processing.
        seed: makes order and augmentation repeatable (each pass still differs).
        shuffle: shuffle shards and records (training only).
        shuffle_buffer: records in the shuffle buffer (they hold the encoded images).
        cache: keep the serialized records in memory after the first pass.
        deterministic: order guarantee of the parallel steps (None: tf.data's default; True
            gives the same order each time for a seed; False is faster).
        final_size: largest image size.
        num_stages: number of image scales.
        words_num: caption length.
        skip_corrupt: skip records whose image cannot be decoded instead of failing.
        num_parallel_calls: parallelism of reading, decoding and preprocessing.
        cycle_length: shards read at once when shuffling.

    Example:
        >>> ds = read_tfrecords("tfr/birds_train-*.tfrecord", seed=0).batch(12)
    """
    if isinstance(pattern, list | tuple):
        files = sorted(os.fspath(p) for p in pattern)
    else:
        files = sorted(tf.io.gfile.glob(os.fspath(pattern)))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern!r}")
    shuffling = training and shuffle
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffling:
        file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def read(filename):
        return tf.data.TFRecordDataset(filename).map(lambda s: (s, filename))

    serialized = file_ds.interleave(
        read,
        cycle_length=min(cycle_length, len(files)) if shuffling else 1,
        num_parallel_calls=num_parallel_calls if shuffling else None,
        deterministic=deterministic,
    )
    if cache:
        serialized = serialized.cache()
    if shuffling:
        serialized = serialized.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    records = serialized.map(
        _parse, num_parallel_calls=num_parallel_calls, deterministic=deterministic
    )
    return build_pipeline(
        records,
        read_files=False,
        tokenizer=tokenizer,
        training=training,
        seed=seed,
        words_num=words_num,
        final_size=final_size,
        num_stages=num_stages,
        split=os.path.basename(files[0]).split("-")[0],
        skip_corrupt=skip_corrupt,
        num_parallel_calls=num_parallel_calls,
        deterministic=deterministic,
    )


def prepare_data(
    format: str = "attngan",
    data_dir: str | os.PathLike = "data/birds",
    split: str = "train",
    out: str | os.PathLike = "tfrecords/train",
    shards: int = 8,
    dataset: str | None = None,
    skip_corrupt: bool = False,
    progress: bool = True,
) -> int:
    """Converts a dataset on disk into sharded TFRecords (the `prepare-data` command).

    Args:
        format: the layout of `data_dir`; only "attngan" (the preprocessed AttnGAN layout).
        data_dir: the dataset folder (e.g. `data/birds`).
        split: "train" or "test".
        out: the output prefix (`OUT-00000-of-0000N.tfrecord`, `OUT-vocabulary.txt`).
        shards: number of shards.
        dataset: "birds", "coco" or None (auto-detected).
        skip_corrupt: leave unreadable images out (listed) instead of failing.
        progress: show a progress bar.

    Returns:
        The number of examples written.

    Example:
        >>> prepare_data("attngan", "data/birds", "train", "tfr/birds_train", shards=16)
    """
    if format not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; known formats: {', '.join(FORMATS)}")
    data = AttnGANDataset(data_dir, split=split, dataset=dataset, skip_corrupt=skip_corrupt)
    return write_tfrecords(data, out, shards=shards, progress=progress)


def load_vocabulary(out_prefix: str | os.PathLike) -> Vocabulary:
    """Reads the vocabulary written beside the shards by `write_tfrecords`.

    Example:
        >>> vocab = load_vocabulary("tfr/birds_train")
    """
    return Vocabulary.load(vocabulary_path(out_prefix))
