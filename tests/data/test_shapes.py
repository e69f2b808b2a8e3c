"""Tests for mirrorgan_tf/data/shapes.py."""

import itertools
import random

import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.data import shapes
from mirrorgan_tf.data.shapes import (
    BACKGROUNDS,
    CELL_CODE_CLASSES,
    CELL_EMPTY,
    COLOURS,
    HELD_OUT_COMBINATIONS,
    MAX_CAPTION_WORDS,
    NUM_CLASSES,
    POSITIONS,
    SHAPES,
    SIZES,
    SceneSpec,
    ShapesDataset,
    ShapeSpec,
    captions,
    make_dataset,
    parse_caption,
    render,
    sample_scene,
    shape_box,
    shape_coverage,
    shapes_vocabulary,
)
from mirrorgan_tf.data.tokenizer import Tokenizer, tokenize_text


def _scenes(n, split="train", seed=0):
    return [sample_scene(seed, split, i) for i in range(n)]


# --- Specs and rendering ------------------------------------------------------------------


def test_palette_is_well_separated_and_saturated():
    colours = np.array(list(COLOURS.values()), np.float32)
    distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert distances[~np.eye(len(colours), dtype=bool)].min() >= 90
    assert (colours.max(axis=1) - colours.min(axis=1)).min() >= 150
    assert len(COLOURS) >= 6 and len(SHAPES) >= 3 and len(POSITIONS) == 9


@pytest.mark.parametrize("size", [64, 96, 128, 200, 256])
def test_render_every_size_deterministic(size):
    for scene in _scenes(4):
        image = render(scene, size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, render(scene, size))


def test_render_draws_each_shape_where_the_spec_says():
    size = 96
    for scene in _scenes(20):
        image = render(scene, size).astype(np.int16)
        for spec in scene.shapes:
            cx, cy, side = shape_box(spec, size)
            colour = np.array(COLOURS[spec.colour])
            # The box centre (inside every shape but the triangle's apex region) has the colour.
            y, x = int(cy + (side / 6 if spec.shape == "triangle" else 0)), int(cx)
            assert np.abs(image[y, x] - colour).max() <= 1, (scene, spec)
            row, col = divmod(POSITIONS.index(spec.position), 3)
            assert int(cx // (size / 3)) == col and int(cy // (size / 3)) == row


def test_backgrounds_never_take_a_shape_colour():
    seen = set()
    for scene in _scenes(60):
        seen.add(scene.background)
        empty = render(
            SceneSpec(
                (ShapeSpec("circle", "red", "small", "centre", 0.4),),
                scene.background,
                scene.background_seed,
            ),
            64,
        ).astype(np.int16)
        saturation = empty.max(-1) - empty.min(-1)
        saturation[21:43, 21:43] = 0  # the circle
        assert saturation.max() <= 30
    assert seen == set(BACKGROUNDS)


def test_two_shapes_never_touch():
    size = 64
    for scene in _scenes(300):
        if len(scene.shapes) < 2:
            continue
        masks = []
        for spec in scene.shapes:
            cx, cy, side = shape_box(spec, size)
            masks.append(shape_coverage(spec.shape, cx, cy, side, (0, 0), (size, size)) > 0)
        grown = masks[0].copy()
        for dy, dx in itertools.product((-1, 0, 1), repeat=2):  # dilate by one pixel
            grown |= np.roll(masks[0], (dy, dx), axis=(0, 1))
        assert not (grown & masks[1]).any(), scene


def test_cell_labels_say_what_each_cell_holds():
    scene = SceneSpec((ShapeSpec("star", "blue", "small", "centre"),
                       ShapeSpec("circle", "red", "large", "top left")))
    labels = scene.cell_labels()
    assert labels.shape == (9, 3) and labels.dtype == np.int32
    assert labels[POSITIONS.index("centre")].tolist() == [
        list(COLOURS).index("blue"), SHAPES.index("star"), SIZES.index("small")]
    assert labels[POSITIONS.index("top left")].tolist() == [
        list(COLOURS).index("red"), SHAPES.index("circle"), SIZES.index("large")]
    empty = [k for k in range(9) if POSITIONS[k] not in ("centre", "top left")]
    assert labels[empty].tolist() == [[CELL_EMPTY, -1, -1]] * 7
    # The same shapes in the other order are the same scene; colours exchanged are not.
    swapped = SceneSpec(scene.shapes[::-1])
    np.testing.assert_array_equal(swapped.cell_labels(), labels)
    exchanged = SceneSpec((ShapeSpec("star", "red", "small", "centre"),
                           ShapeSpec("circle", "blue", "large", "top left")))
    assert not np.array_equal(exchanged.cell_labels(), labels)
    assert CELL_CODE_CLASSES == (len(COLOURS) + 1, len(SHAPES), len(SIZES))


def test_spec_validation():
    with pytest.raises(ValueError, match="colour"):
        ShapeSpec("circle", "crimson", "large", "top")
    with pytest.raises(ValueError, match="extent"):
        ShapeSpec("circle", "red", "large", "top", extent=0.5)
    circle = ShapeSpec("circle", "red", "large", "top")
    with pytest.raises(ValueError, match="position"):
        SceneSpec((circle, ShapeSpec("star", "blue", "small", "top")))
    with pytest.raises(ValueError, match="one or two"):
        SceneSpec(())
    with pytest.raises(ValueError, match="image size"):
        render(SceneSpec((circle,)), 16)


# --- Captions, vocabulary, parsing --------------------------------------------------------


def test_captions_distinct_short_and_in_vocabulary():
    vocab = shapes_vocabulary()
    data = ShapesDataset("train", num_images=80, image_size=64)
    for i in range(len(data)):
        texts = data.captions(i)
        assert len(texts) == 10 and len(set(texts)) == 10
        for text in texts:
            words = tokenize_text(text)
            assert 1 <= len(words) <= MAX_CAPTION_WORDS, text
            assert all(vocab.word_to_id(w) != vocab.oov_id for w in words), text
    assert len(captions(data.scene(0), np.random.default_rng(0), num=25)) == 25


def test_vocabulary_is_fixed_and_covers_every_filler():
    vocab = shapes_vocabulary()
    assert vocab == shapes_vocabulary()
    assert vocab.words[:2] == ["<end>", "<unk>"]
    # Every word of every filler of every slot and every template.
    for spec in (
        ShapeSpec(*c) for c in itertools.product(SHAPES, COLOURS, ["small", "large"], POSITIONS)
    ):
        for options in (shapes._slot_options([spec]), shapes._slot_options([spec, spec])):
            for filler in itertools.chain(*options.values()):
                assert all(vocab.word_to_id(w) != vocab.oov_id for w in tokenize_text(filler))
    assert "crimson" not in vocab.words


def test_parse_caption_inverts_every_template():
    rng = random.Random(0)
    singles = [s for s in _scenes(200) if len(s.shapes) == 1][:40]
    pairs = [s for s in _scenes(200) if len(s.shapes) == 2][:40]
    for templates, scenes in ((shapes._SINGLE_TEMPLATES, singles), (shapes._PAIR_TEMPLATES, pairs)):
        for template in templates:
            parsed = 0
            for scene in scenes:
                for order in (scene.shapes, scene.shapes[::-1]):
                    text = shapes._caption_from(template, shapes._slot_options(order), rng)
                    if text is None:  # this scene's shortest wording is too long here
                        continue
                    assert parse_caption(text).attributes == scene.attributes, text
                    parsed += 1
            assert parsed >= 20, template
    # And every caption a dataset hands out.
    data = ShapesDataset("test", num_images=60, image_size=64)
    for i in range(len(data)):
        for text in data.captions(i):
            assert parse_caption(text).attributes == data.scene(i).attributes, text


def test_parse_caption_rejects_incomplete_text():
    assert parse_caption("a huge red disc in the upper left corner").attributes == (
        ("circle", "red", "large", "top left"),
    )
    assert parse_caption("a big red circle") is None  # no position
    assert parse_caption("a red circle in the centre") is None  # no size
    assert parse_caption("a bird with red wings") is None
    assert parse_caption("") is None
    # Two shapes in one cell.
    assert parse_caption("a big red circle at the top and a small blue box at the top") is None


# --- Splits and the dataset ---------------------------------------------------------------


def test_scenes_are_deterministic_by_seed():
    a = ShapesDataset("train", num_images=12, seed=3, image_size=64)
    b = ShapesDataset("train", num_images=12, seed=3, image_size=64)
    c = ShapesDataset("train", num_images=12, seed=4, image_size=64)
    for i in range(12):
        assert a.scene(i) == b.scene(i) and a.captions(i) == b.captions(i)
        np.testing.assert_array_equal(a.image(i), b.image(i))
    assert sum(a.scene(i) != c.scene(i) for i in range(12)) >= 11
    assert sum(a.captions(i) != c.captions(i) for i in range(12)) >= 11
    assert any((a.image(i) != c.image(i)).any() for i in range(12))
    # Scene i does not depend on the split's size.
    assert ShapesDataset("train", num_images=3, seed=3, image_size=64).scene(2) == a.scene(2)


def test_splits_are_disjoint():
    assert len(HELD_OUT_COMBINATIONS) == 2 * NUM_CLASSES
    train, test = _scenes(400, "train"), _scenes(400, "test")
    for scene in train:
        assert not {s.attributes for s in scene.shapes} & HELD_OUT_COMBINATIONS
    for scene in test:
        assert scene.shapes[0].attributes in HELD_OUT_COMBINATIONS
    assert not {s.attributes for s in train} & {s.attributes for s in test}
    train_data, test_data = ShapesDataset("train", 100), ShapesDataset("test", 100)
    train_captions = {c for i in range(100) for c in train_data.captions(i)}
    test_captions = {c for i in range(100) for c in test_data.captions(i)}
    assert not train_captions & test_captions
    # Both splits cover the (shape, colour) classes; both have one- and two-shape scenes.
    for scenes in (train, test):
        assert len({s.class_id for s in scenes}) == NUM_CLASSES
        assert {len(s.shapes) for s in scenes} == {1, 2}
    assert all(0 <= s.class_id < NUM_CLASSES for s in train)


def _tokenizer():
    return Tokenizer(shapes_vocabulary(), max_length=MAX_CAPTION_WORDS)


def test_make_dataset_matches_the_contract():
    tokenizer = _tokenizer()
    data = ShapesDataset("train", num_images=6, seed=1, image_size=64)
    for training in (True, False):
        ds = make_dataset(
            "train", tokenizer, 6, image_size=64, num_stages=3, seed=1, training=training
        )
        examples = list(ds)
        assert len(examples) == 6
        keys = [e["key"].numpy().decode() for e in examples]
        assert sorted(keys) == [data.key(i) for i in range(6)]
        if not training:
            assert keys == [data.key(i) for i in range(6)]
        for e in examples:
            assert set(e) == {"images", "token_ids", "caption_length", "class_id", "key", "caption",
                              "cell_labels"}
            i = int(e["key"].numpy().decode().rsplit("/", 1)[1])
            images = e["images"]
            assert isinstance(images, tuple) and len(images) == 3
            for image, size in zip(images, (16, 32, 64), strict=True):
                assert image.shape == (size, size, 3) and image.dtype == tf.float32
                assert -1.0 <= float(tf.reduce_min(image)) <= float(tf.reduce_max(image)) <= 1.0
            expected = data.image(i).astype(np.float32) / 127.5 - 1
            np.testing.assert_allclose(images[-1].numpy(), expected, atol=1e-6)
            small = tf.image.resize(expected, [32, 32], antialias=True).numpy()
            np.testing.assert_allclose(images[1].numpy(), small, atol=1e-5)
            caption = e["caption"].numpy().decode()
            assert caption in data.captions(i)
            if not training:
                assert caption == data.captions(i)[0]
            assert e["token_ids"].dtype == tf.int32 and e["token_ids"].shape == (16,)
            assert e["caption_length"].dtype == tf.int32 and e["caption_length"].shape == ()
            assert int(e["caption_length"]) == len(tokenize_text(caption))
            assert tokenizer.vocabulary.decode(e["token_ids"].numpy()) == " ".join(
                tokenize_text(caption)
            )
            assert e["class_id"].dtype == tf.int32 and int(e["class_id"]) == data.class_id(i)
            np.testing.assert_array_equal(e["cell_labels"].numpy(), data.scene(i).cell_labels())
            # The caption says the same: parsed back, its scene has the same labels.
            np.testing.assert_array_equal(parse_caption(caption).cell_labels(),
                                          data.scene(i).cell_labels())


def test_make_dataset_is_deterministic_by_seed():
    tokenizer = _tokenizer()

    def first_epoch(seed):
        ds = make_dataset("train", tokenizer, 8, image_size=32, num_stages=1, seed=seed)
        return [(e["key"].numpy(), e["caption"].numpy()) for e in ds]

    assert first_epoch(5) == first_epoch(5)
    assert first_epoch(5) != first_epoch(6)
    # Epochs draw other orders and captions.
    ds = make_dataset("train", tokenizer, 8, image_size=32, num_stages=1, seed=5)
    epochs = [[(e["key"].numpy(), e["caption"].numpy()) for e in ds] for _ in range(2)]
    assert epochs[0] != epochs[1]


def test_make_dataset_all_captions():
    ds = make_dataset(
        "test", _tokenizer(), 3, image_size=32, num_stages=2, training=False, all_captions=True
    )
    examples = list(ds)
    assert len(examples) == 30
    data = ShapesDataset("test", num_images=3, image_size=32)
    assert [e["caption"].numpy().decode() for e in examples[:10]] == data.captions(0)
    assert examples[0]["images"][0].shape == (16, 16, 3)


def test_dataset_validation():
    with pytest.raises(ValueError, match="split"):
        ShapesDataset("valid", 4)
    with pytest.raises(ValueError, match="divisible"):
        ShapesDataset("train", 4, image_size=98, num_stages=3)


# --- Difficulty levels ----------------------------------------------------------------------


def test_full_level_is_the_distribution_from_before_levels_existed():
    # Recorded from the code before levels existed: the default level draws the same scenes.
    scene = sample_scene(0, "train", 0)
    assert scene == sample_scene(0, "train", 0, level="full")
    assert scene.attributes == (("star", "yellow", "small", "top left"),)
    assert (scene.background, scene.background_seed) == ("stripes", 1394609703)
    assert sample_scene(0, "test", 1).attributes == (
        ("star", "green", "small", "left"), ("star", "orange", "large", "bottom right"))


@pytest.mark.parametrize("level", sorted(shapes.LEVELS))
def test_every_level_keeps_its_limits_and_a_compositional_test_split(level):
    spec = shapes.LEVELS[level]
    train = [sample_scene(0, "train", i, level=level) for i in range(400)]
    test = [sample_scene(0, "test", i, level=level) for i in range(200)]
    for scene in train + test:
        assert scene.background in spec.backgrounds
        assert all(s.size in spec.sizes for s in scene.shapes)
        if spec.two_shape_fraction == 0:
            assert len(scene.shapes) == 1
    # Every backgrounds and size the level allows occurs.
    assert {s.background for s in train} == set(spec.backgrounds)
    assert {x.size for s in train for x in s.shapes} == set(spec.sizes)
    # No training scene holds a held-out combination; every test scene's first shape is one.
    assert not any(x.attributes in HELD_OUT_COMBINATIONS for s in train for x in s.shapes)
    assert all(s.shapes[0].attributes in HELD_OUT_COMBINATIONS for s in test)
    # Captions name all four attributes at every level.
    data = ShapesDataset("test", num_images=20, image_size=64, num_stages=1, level=level)
    for i in range(20):
        for caption in data.captions(i):
            assert parse_caption(caption).attributes == data.scene(i).attributes


def test_unknown_level_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown shapes level 'hard'.*easy"):
        ShapesDataset("train", num_images=2, level="hard")


def test_make_dataset_draws_the_levels_scenes():
    tokenizer = Tokenizer(shapes_vocabulary(), MAX_CAPTION_WORDS)
    ds = make_dataset("train", tokenizer, 8, image_size=64, num_stages=1, level="easy",
                      training=False)
    data = ShapesDataset("train", num_images=8, image_size=64, num_stages=1, level="easy")
    for i, element in enumerate(ds):
        np.testing.assert_allclose(element["images"][0].numpy(),
                                   data.image(i) / 127.5 - 1.0, atol=1e-6)
        assert element["key"].numpy().decode() == f"shapes:easy/train/{i:06d}"
