"""Tests of the AttnGAN-layout reader (mirrorgan_tf/data/attngan.py)."""

from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mirrorgan_tf.data.attngan import (
    AttnGANDataset,
    crop_window,
    decode_image,
    load_size_for,
    preprocess_image,
    shorten_caption,
)
from mirrorgan_tf.data.tokenizer import Tokenizer
from tests.data.attngan_fixture import make_mini_attngan

# base_size 16 -> images 16, 32, 64 (published: 64, 128, 256).
BASE = 16
SIZES = (16, 32, 64)


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return make_mini_attngan(tmp_path_factory.mktemp("birds"), "birds")


@pytest.fixture(scope="module")
def birds_train(birds):
    return AttnGANDataset(birds.root, "train", base_size=BASE)


def _published_crop_window(bbox, width, height):
    # AttnGAN get_imgs, verbatim arithmetic.
    r = int(np.maximum(bbox[2], bbox[3]) * 0.75)
    center_x = int((2 * bbox[0] + bbox[2]) / 2)
    center_y = int((2 * bbox[1] + bbox[3]) / 2)
    y1 = np.maximum(0, center_y - r)
    y2 = np.minimum(height, center_y + r)
    x1 = np.maximum(0, center_x - r)
    x2 = np.minimum(width, center_x + r)
    return [y1, x1, y2, x2]


def _is_subsequence(short, long):
    it = iter(long)
    return all(any(s == x for x in it) for s in short)


# --- Metadata -------------------------------------------------------------------------------


def test_reads_birds_metadata(birds, birds_train):
    data = birds_train
    assert data.dataset == "birds" and data.captions_per_image == 10
    assert data.keys == birds.keys["train"]
    np.testing.assert_array_equal(data.class_ids, birds.class_ids["train"])
    expected_boxes = [[int(v) for v in birds.bboxes[k]] for k in birds.keys["train"]]
    np.testing.assert_array_equal(data.bboxes, expected_boxes)
    assert data.caption_ids == birds.caption_ids["train"]
    assert data.captions_of(1) == birds.caption_ids["train"][10:20]
    # Published ids kept, "<unk>" appended.
    assert data.vocabulary.size == len(birds.ixtoword) + 1
    assert data.vocabulary.oov_id == len(birds.ixtoword)
    assert all(data.vocabulary.id_to_word(i) == w for i, w in birds.ixtoword.items())
    # Raw text aligned with the ids although the files hold an empty and a word-less line.
    assert data.raw_captions == birds.captions["train"]
    assert data.image_path(0) == birds.image_path(birds.keys["train"][0])
    assert len(data) == 6 and data.final_size == 64


def test_class_ids_without_class_info(birds, tmp_path):
    mini = make_mini_attngan(tmp_path / "b", "birds", with_class_info=False)
    data = AttnGANDataset(mini.root, "test", base_size=BASE)
    # CUB class number from the "001.Class" folder prefix.
    np.testing.assert_array_equal(data.class_ids, mini.class_ids["test"])
    coco = make_mini_attngan(tmp_path / "c", "coco")
    data = AttnGANDataset(coco.root, "train", base_size=BASE)
    np.testing.assert_array_equal(data.class_ids, np.arange(len(coco.keys["train"])))


def test_text_missing_decodes_ids(tmp_path):
    mini = make_mini_attngan(tmp_path, "birds", with_text=False, num_classes=1)
    data = AttnGANDataset(mini.root, "train", base_size=BASE)
    assert data.raw_captions[0][0] == " ".join(
        mini.ixtoword[i] for i in mini.caption_ids["train"][0]
    )


def test_bad_layout_errors(tmp_path, birds):
    with pytest.raises(FileNotFoundError, match="captions.pickle"):
        AttnGANDataset(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        AttnGANDataset(birds.root, "val")
    mini = make_mini_attngan(tmp_path / "m", "birds", num_classes=1)
    with open(os.path.join(mini.root, "train", "filenames.pickle"), "wb") as f:
        pickle.dump(mini.keys["train"] + ["001.Class_1/extra"], f, protocol=2)
    with pytest.raises(ValueError, match="captions per image"):
        AttnGANDataset(mini.root, "train")


def test_missing_image_folder_error(tmp_path):
    mini = make_mini_attngan(tmp_path, "coco", num_classes=1, images_per_class=1)
    os.rename(os.path.join(mini.root, "images"), os.path.join(mini.root, "elsewhere"))
    with pytest.raises(FileNotFoundError, match="images"):
        AttnGANDataset(mini.root, "train")


# --- Image processing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bbox,width,height",
    [
        ([60, 27, 325, 304], 500, 375),  # clipped at every side
        ([100, 100, 40, 60], 500, 375),  # inside
        ([0, 0, 21, 13], 30, 30),
        ([7, 3, 1, 1], 10, 10),  # r = 0 -> degenerate -> whole image
    ],
)
def test_crop_window_matches_published(bbox, width, height):
    got = crop_window(tf.constant(bbox), height, width).numpy().tolist()
    expected = _published_crop_window(bbox, width, height)
    if expected[2] <= expected[0] or expected[3] <= expected[1]:
        expected = [0, 0, height, width]
    assert got == [int(v) for v in expected]
    assert crop_window(tf.constant([-1, -1, -1, -1]), height, width).numpy().tolist() == [
        0,
        0,
        height,
        width,
    ]


def test_decode_and_crop_equals_pil(birds):
    for key in birds.keys["train"][:4]:
        path = birds.image_path(key)
        bbox = [int(v) for v in birds.bboxes[key]]
        pil = Image.open(path).convert("RGB")
        y1, x1, y2, x2 = _published_crop_window(bbox, *pil.size)
        expected = np.asarray(pil.crop([x1, y1, x2, y2]))
        got = decode_image(tf.io.read_file(path), tf.constant(bbox)).numpy()
        np.testing.assert_array_equal(got, expected)  # accurate DCT: PIL's pixels exactly


def test_png_under_jpg_name_decodes(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8)
    path = str(tmp_path / "x.jpg")
    Image.fromarray(array).save(path, "PNG")
    got = decode_image(tf.io.read_file(path), tf.constant([-1, -1, -1, -1])).numpy()
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("size", [(120, 90), (90, 120), (101, 101)])
def test_eval_transform_matches_published_pil(size):
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    array = np.stack([(x * 3 + y) % 256, (y * 5) % 256, rng.integers(0, 255, x.shape)], -1)
    image = Image.fromarray(array.astype(np.uint8))
    final = 64
    load = load_size_for(final)
    w, h = image.size
    ow, oh = (load, int(load * h / w)) if w <= h else (int(load * w / h), load)
    resized = image.resize((ow, oh), Image.BILINEAR)
    top, left = int(round((oh - final) / 2.0)), int(round((ow - final) / 2.0))
    crop = resized.crop((left, top, left + final, top + final))
    refs = [crop.resize((s, s), Image.BILINEAR) for s in SIZES[:-1]] + [crop]
    got = preprocess_image(tf.constant(np.asarray(image)), None, False, final, 3)
    for out, ref, s in zip(got, refs, SIZES, strict=True):
        ref = np.asarray(ref, np.float32) / 127.5 - 1.0
        assert out.shape == (s, s, 3) and out.dtype == tf.float32
        diff = np.abs(out.numpy() - ref)
        # PIL rounds to uint8 after each resize; TF keeps floats: ~1-2 grey levels.
        assert diff.max() < 0.02 and diff.mean() < 0.005, (s, diff.max(), diff.mean())


def test_training_crop_is_a_crop_of_the_resized_image():
    array = np.random.default_rng(2).integers(0, 255, (90, 120, 3)).astype(np.uint8)
    final = 64
    load = load_size_for(final)  # 76
    resized = tf.image.resize(
        tf.cast(array, tf.float32), [load, int(load * 120 / 90)], antialias=True
    ).numpy()
    resized = np.clip(resized, 0, 255) / 127.5 - 1.0
    flips, offsets = set(), set()
    for s in range(12):
        seed = tf.constant([s, 7], tf.int64)
        images = preprocess_image(tf.constant(array), seed, True, final, 3)
        big = images[-1].numpy()
        found = None
        for flip in (False, True):
            view = resized[:, ::-1] if flip else resized
            for top in range(load - final + 1):
                for left in range(view.shape[1] - final + 1):
                    if np.allclose(view[top : top + final, left : left + final], big, atol=1e-5):
                        found = (flip, top, left)
                        break
                if found:
                    break
            if found:
                break
        assert found is not None, f"seed {s}: not a crop of the resized image"
        flips.add(found[0])
        offsets.add(found[1:])
        # Lower scales are downscales of the crop.
        small = tf.image.resize((big + 1) * 127.5, [16, 16], antialias=True) / 127.5 - 1
        np.testing.assert_allclose(images[0].numpy(), small.numpy(), atol=1e-5)
        again = preprocess_image(tf.constant(array), seed, True, final, 3)[-1].numpy()
        np.testing.assert_array_equal(big, again)  # a function of the seed
    assert flips == {False, True} and len(offsets) > 3


# --- Captions ---------------------------------------------------------------------------------


def test_shorten_caption_published_semantics():
    ids = tf.range(1, 31)  # 30 words
    seen = set()
    for s in range(20):
        out, length = shorten_caption(ids, 18, tf.constant([s, 3], tf.int64))
        out = out.numpy().tolist()
        assert int(length) == 18 and len(out) == 18
        assert out == sorted(out) and len(set(out)) == 18  # an ordered subset
        assert set(out) <= set(range(1, 31))
        seen.update(out)
    assert seen == set(range(1, 31))  # every word can be kept
    out, length = shorten_caption(tf.constant([5, 9, 2]), 6, tf.constant([1, 1], tf.int64))
    assert out.numpy().tolist() == [5, 9, 2, 0, 0, 0] and int(length) == 3
    out, length = shorten_caption(ids, 4, None)  # evaluation: truncation
    assert out.numpy().tolist() == [1, 2, 3, 4] and int(length) == 4
    out, length = shorten_caption(tf.zeros([0], tf.int32), 4, None, oov_id=77)
    assert out.numpy().tolist() == [77, 0, 0, 0] and int(length) == 1


def test_shorten_caption_matches_tokenizer(birds_train):
    tokenizer = Tokenizer(birds_train.vocabulary, max_length=18)
    texts = [t for image in birds_train.raw_captions for t in image]
    long_ones = 0
    for n, (text, ids) in enumerate(zip(texts, birds_train.caption_ids, strict=True)):
        seed = tf.constant([n, 5], tf.int64)
        a, la = tokenizer.tokenize_for_training(tf.constant(text), seed)
        b, lb = shorten_caption(tf.constant(ids), 18, seed)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert int(la) == int(lb)
        long_ones += len(ids) > 18
    assert long_ones > 3


# --- The tf.data pipeline ---------------------------------------------------------------------


def _check_element(element, data, training):
    images = element["images"]
    assert isinstance(images, tuple) and len(images) == 3
    for image, s in zip(images, SIZES, strict=True):
        assert image.shape == (s, s, 3) and image.dtype == tf.float32
        assert float(tf.reduce_min(image)) >= -1.0 and float(tf.reduce_max(image)) <= 1.0
    index = data.keys.index(element["key"].numpy().decode())
    assert int(element["class_id"]) == int(data.class_ids[index])
    ids = element["token_ids"].numpy()
    length = int(element["caption_length"])
    assert ids.shape == (18,) and ids.dtype == np.int32
    assert 1 <= length <= 18 and (ids[:length] > 0).all() and (ids[length:] == 0).all()
    captions = data.captions_of(index)
    texts = data.raw_captions[index]
    caption = element["caption"].numpy().decode()
    assert caption in texts
    chosen = captions[texts.index(caption)]
    assert length == min(len(chosen), 18)
    if training:
        assert _is_subsequence(ids[:length].tolist(), chosen)
    else:
        assert caption == texts[0] and ids[:length].tolist() == chosen[:18]
    return index


def test_training_elements(birds_train):
    elements = list(birds_train.make_dataset(None, seed=3))
    indices = [_check_element(e, birds_train, training=True) for e in elements]
    assert sorted(indices) == list(range(len(birds_train)))


def test_eval_elements_are_fixed(birds_train):
    ds = birds_train.make_dataset(None, training=False)
    first, second = list(ds), list(ds)
    assert [int(e["class_id"]) for e in first] == list(birds_train.class_ids)
    for a, b in zip(first, second, strict=True):
        _check_element(a, birds_train, training=False)
        for x, y in zip(a["images"], b["images"], strict=True):
            np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_seed_repeats_and_passes_differ(birds):
    def run(seed, passes=1):
        data = AttnGANDataset(birds.root, "train", base_size=BASE)
        ds = data.make_dataset(None, seed=seed)
        return [list(ds) for _ in range(passes)]

    (a1, a2), (b1,) = run(5, passes=2), run(5)
    keys = [[e["key"].numpy() for e in p] for p in (a1, a2, b1)]
    assert keys[0] == keys[2] and keys[0] != keys[1]  # reshuffled per pass, repeatably
    for x, y in zip(a1, b1, strict=True):
        np.testing.assert_array_equal(x["images"][2].numpy(), y["images"][2].numpy())
        np.testing.assert_array_equal(x["token_ids"].numpy(), y["token_ids"].numpy())
    by_key = {e["key"].numpy(): e["images"][2].numpy() for e in a2}
    assert any(not np.array_equal(by_key[e["key"].numpy()], e["images"][2].numpy()) for e in a1)
    (c1,) = run(6)
    by_key = {e["key"].numpy(): e["images"][2].numpy() for e in c1}
    assert any(not np.array_equal(by_key[e["key"].numpy()], e["images"][2].numpy()) for e in a1)


def test_order_does_not_change_augmentation(birds_train):
    shuffled = list(birds_train.make_dataset(None, seed=9, shuffle=True, deterministic=False))
    ordered = list(birds_train.make_dataset(None, seed=9, shuffle=False))
    assert [e["key"].numpy() for e in ordered] == [k.encode() for k in birds_train.keys]
    by_key = {e["key"].numpy(): e for e in shuffled}
    for e in ordered:
        other = by_key[e["key"].numpy()]
        np.testing.assert_array_equal(e["images"][1].numpy(), other["images"][1].numpy())
        assert e["caption"].numpy() == other["caption"].numpy()


def test_tokenizer_path_gives_the_published_ids(birds_train):
    tokenizer = Tokenizer(birds_train.vocabulary, max_length=18)
    for training in (True, False):
        with_ids = list(birds_train.make_dataset(None, training=training, seed=4, shuffle=False))
        with_tok = list(
            birds_train.make_dataset(tokenizer, training=training, seed=4, shuffle=False)
        )
        for a, b in zip(with_ids, with_tok, strict=True):
            np.testing.assert_array_equal(a["token_ids"].numpy(), b["token_ids"].numpy())
            assert int(a["caption_length"]) == int(b["caption_length"])
    with pytest.raises(ValueError, match="max_length"):
        birds_train.make_dataset(Tokenizer(birds_train.vocabulary, max_length=12))


def test_batches(birds_train):
    batch = next(iter(birds_train.make_dataset(None, seed=0).batch(4, drop_remainder=True)))
    assert [tuple(i.shape) for i in batch["images"]] == [(4, s, s, 3) for s in SIZES]
    assert batch["token_ids"].shape == (4, 18) and batch["key"].shape == (4,)


def test_coco_layout(tmp_path):
    mini = make_mini_attngan(tmp_path, "coco", num_classes=2, images_per_class=2)
    data = AttnGANDataset(mini.root, "test", base_size=BASE, words_num=12)
    assert data.dataset == "coco" and data.captions_per_image == 5
    assert data.keys[0].startswith("COCO_val2014_") and (data.bboxes == -1).all()
    assert data.image_path(0) == os.path.join(mini.root, "images", data.keys[0] + ".jpg")
    elements = list(data.make_dataset(None, training=False))
    assert len(elements) == 4
    # No bbox: the centre crop of the whole (resized) photograph.
    key = elements[0]["key"].numpy().decode()
    whole = tf.io.decode_jpeg(tf.io.read_file(mini.image_path(key)), dct_method="INTEGER_ACCURATE")
    expected = preprocess_image(whole, None, False, 64, 3)
    np.testing.assert_array_equal(elements[0]["images"][2].numpy(), expected[2].numpy())
    assert elements[0]["token_ids"].shape == (12,)


# --- Unreadable images ------------------------------------------------------------------------


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


@pytest.fixture()
def corrupt_birds(tmp_path):
    mini = make_mini_attngan(tmp_path, "birds")
    bad = mini.image_path(mini.keys["train"][2])
    _truncate(bad)
    missing = mini.image_path(mini.keys["train"][4])
    os.remove(missing)
    return mini, bad, missing


def test_truncated_jpeg_error_names_file_and_split(corrupt_birds):
    mini, bad, _ = corrupt_birds
    data = AttnGANDataset(mini.root, "train", base_size=BASE)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        list(data.make_dataset(None, training=False))
    message = str(error.value)
    assert bad in message and "of the train split" in message and "skip_corrupt" in message


def test_missing_image_error_names_file(corrupt_birds):
    mini, bad, missing = corrupt_birds
    with open(mini.image_path(mini.keys["train"][0]), "rb") as f:
        good = f.read()
    with open(bad, "wb") as f:
        f.write(good)
    data = AttnGANDataset(mini.root, "train", base_size=BASE)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Cannot read image") as error:
        list(data.make_dataset(None, seed=0))
    assert missing in str(error.value)


def test_skip_corrupt_skips_counts_and_reports(corrupt_birds, caplog):
    mini, bad, missing = corrupt_birds
    data = AttnGANDataset(mini.root, "train", base_size=BASE, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="mirrorgan_tf.data.attngan"):
        elements = list(data.make_dataset(None, seed=1))
    keys = sorted(e["key"].numpy().decode() for e in elements)
    assert keys == sorted(k for i, k in enumerate(mini.keys["train"]) if i not in (2, 4))
    assert sorted(data.skipped_files) == sorted([bad, missing])
    summary = [r.getMessage() for r in caplog.records if "Skipped 2 unreadable" in r.getMessage()]
    assert len(summary) == 1 and bad in summary[0] and missing in summary[0]
    # The other images keep their augmentation (skipping does not shift the seeds).
    clean = make_mini_attngan(os.path.join(mini.root, "clean"), "birds")
    reference = AttnGANDataset(clean.root, "train", base_size=BASE).make_dataset(None, seed=1)
    by_key = {e["key"].numpy(): e for e in reference}
    for e in elements:
        np.testing.assert_array_equal(
            e["images"][2].numpy(), by_key[e["key"].numpy()]["images"][2].numpy()
        )
