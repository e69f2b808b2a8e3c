"""Tests of the sharded TFRecords (mirrorgan_tf/data/tfrecords.py)."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.data.attngan import AttnGANDataset
from mirrorgan_tf.data.tfrecords import (
    load_vocabulary,
    prepare_data,
    read_tfrecords,
    shard_path,
    write_tfrecords,
)
from mirrorgan_tf.data.tokenizer import Tokenizer
from tests.data.attngan_fixture import make_mini_attngan

BASE = 16


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("birds")
    mini = make_mini_attngan(root, "birds", images_per_class=3)  # 9 train images
    data = AttnGANDataset(mini.root, "train", base_size=BASE)
    prefix = os.path.join(root, "tfr", "birds_train")
    count = write_tfrecords(data, prefix, shards=4, progress=False)
    return mini, data, prefix, count


def _read(prefix, **kwargs):
    kwargs.setdefault("final_size", 64)
    return read_tfrecords(prefix + "-*.tfrecord", **kwargs)


def _assert_same(a, b):
    assert a["key"].numpy() == b["key"].numpy()
    for x, y in zip(a["images"], b["images"], strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    for name in ("token_ids", "caption_length", "class_id", "caption"):
        np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())


def test_writes_named_shards_and_vocabulary(written, capsys):
    mini, data, prefix, count = written
    assert count == 9
    files = sorted(glob.glob(prefix + "-*"))
    assert files == [shard_path(prefix, k, 4) for k in range(4)] + [prefix + "-vocabulary.txt"]
    assert os.path.basename(files[0]) == "birds_train-00000-of-00004.tfrecord"
    sizes = [sum(1 for _ in tf.data.TFRecordDataset(f)) for f in files[:4]]
    assert sum(sizes) == 9 and max(sizes) - min(sizes) <= 1
    assert load_vocabulary(prefix) == data.vocabulary


def test_record_contents(written):
    mini, data, prefix, _ = written
    raw = next(iter(tf.data.TFRecordDataset(shard_path(prefix, 0, 4))))
    example = tf.train.Example.FromString(raw.numpy())
    f = example.features.feature
    assert f["key"].bytes_list.value[0].decode() == mini.keys["train"][0]
    with open(mini.image_path(mini.keys["train"][0]), "rb") as image_file:
        assert f["image/encoded"].bytes_list.value[0] == image_file.read()  # original bytes
    assert list(f["bbox"].int64_list.value) == list(data.bboxes[0])
    lengths = list(f["caption_lengths"].int64_list.value)
    assert lengths == [len(c) for c in mini.caption_ids["train"][:10]]
    assert list(f["caption_ids"].int64_list.value) == sum(mini.caption_ids["train"][:10], [])
    assert [c.decode() for c in f["captions"].bytes_list.value] == mini.captions["train"][0]
    assert f["class_id"].int64_list.value[0] == mini.class_ids["train"][0]


@pytest.mark.parametrize("training", [True, False])
def test_identical_to_direct_reader(written, training):
    _, data, prefix, _ = written
    direct = list(data.make_dataset(None, training=training, seed=11, shuffle=False))
    from_records = list(_read(prefix, training=training, seed=11, shuffle=False))
    assert len(direct) == len(from_records) == 9
    for a, b in zip(direct, from_records, strict=True):
        _assert_same(a, b)  # bit-identical: original JPEG bytes, one preprocessing function


def test_shuffled_is_deterministic_and_same_augmentation(written):
    _, data, prefix, _ = written
    first = list(_read(prefix, seed=3, deterministic=True, shuffle_buffer=4))
    second = list(_read(prefix, seed=3, deterministic=True, shuffle_buffer=4))
    keys = [e["key"].numpy() for e in first]
    assert keys == [e["key"].numpy() for e in second]
    assert sorted(keys) == sorted(k.encode() for k in data.keys)
    assert keys != [k.encode() for k in data.keys]
    for a, b in zip(first, second, strict=True):
        _assert_same(a, b)
    # Per-example augmentation does not depend on the order: same as the direct reader.
    direct = {e["key"].numpy(): e for e in data.make_dataset(None, seed=3, shuffle=False)}
    for e in first:
        _assert_same(e, direct[e["key"].numpy()])


def test_cache_and_passes(written):
    _, _, prefix, _ = written
    ds = _read(prefix, seed=2, cache=True, shuffle=False)
    plain = list(_read(prefix, seed=2, shuffle=False))
    pass1, pass2 = list(ds), list(ds)
    for a, b in zip(pass1, plain, strict=True):
        _assert_same(a, b)
    # A new pass draws new augmentations.
    assert any(
        not np.array_equal(a["images"][2].numpy(), b["images"][2].numpy())
        for a, b in zip(pass1, pass2, strict=True)
    )


def test_tokenizer_and_list_of_files(written):
    _, data, prefix, _ = written
    tokenizer = Tokenizer(data.vocabulary, max_length=18)
    files = [shard_path(prefix, k, 4) for k in range(4)]
    with_tok = list(read_tfrecords(files, tokenizer, seed=1, shuffle=False, final_size=64))
    with_ids = list(_read(prefix, seed=1, shuffle=False))
    for a, b in zip(with_tok, with_ids, strict=True):
        _assert_same(a, b)
    with pytest.raises(FileNotFoundError, match="no TFRecord"):
        read_tfrecords(prefix + "-nothing-*.tfrecord")


def test_corrupt_image_when_writing(tmp_path, capsys):
    mini = make_mini_attngan(tmp_path, "coco", num_classes=2, images_per_class=2)
    bad = mini.image_path(mini.keys["train"][1])
    with open(bad, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(ValueError, match="Cannot read image") as error:
        prepare_data("attngan", mini.root, "train", str(tmp_path / "out" / "tr"), shards=2)
    assert bad in str(error.value) and "'train'" in str(error.value)
    count = prepare_data(
        "attngan", mini.root, "train", str(tmp_path / "out" / "tr"), shards=2, skip_corrupt=True
    )
    assert count == 3
    assert "Wrote 3 of 4 train examples" in capsys.readouterr().out
    keys = [
        e["key"].numpy().decode()
        for e in read_tfrecords(str(tmp_path / "out" / "tr-*.tfrecord"), training=False)
    ]
    assert keys == [k for i, k in enumerate(mini.keys["train"]) if i != 1]
    with pytest.raises(ValueError, match="known formats: attngan"):
        prepare_data("cub-raw", mini.root, "train", str(tmp_path / "x"))


def test_corrupt_record_when_reading(written, tmp_path):
    _, _, prefix, _ = written
    records = [r.numpy() for r in tf.data.TFRecordDataset(shard_path(prefix, 0, 4))]
    example = tf.train.Example.FromString(records[1])
    image = example.features.feature["image/encoded"].bytes_list.value
    image[0] = image[0][: len(image[0]) // 2]
    key = example.features.feature["key"].bytes_list.value[0].decode()
    path = str(tmp_path / "bad-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i, record in enumerate(records):
            writer.write(example.SerializeToString() if i == 1 else record)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Cannot read image") as error:
        list(read_tfrecords(path, training=False, final_size=64))
    assert key in str(error.value) and path in str(error.value)
    kept = list(read_tfrecords(path, training=False, final_size=64, skip_corrupt=True))
    assert len(kept) == len(records) - 1 and key.encode() not in [e["key"].numpy() for e in kept]
