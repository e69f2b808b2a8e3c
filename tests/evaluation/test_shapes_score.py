"""Tests for mirrorgan_tf/evaluation/shapes_score.py."""

import numpy as np
import pytest

from mirrorgan_tf.data.shapes import (
    COLOURS,
    SceneSpec,
    ShapesDataset,
    ShapeSpec,
    render,
    sample_scene,
)
from mirrorgan_tf.evaluation.shapes_score import (
    ATTRIBUTES,
    consistency_by_scene,
    consistency_score,
    parse_caption,
    read_objects,
    read_scene,
    score_model,
)


def _scenes(n, split, seed=11):
    return [sample_scene(seed, split, i) for i in range(n)]


@pytest.mark.parametrize("size", [64, 128, 256])
def test_reader_reads_rendered_scenes(size):
    # Both splits: every background kind, one and two shapes, all held-out combinations too.
    scenes = _scenes(40, "train") + _scenes(40, "test")
    scores = consistency_score(np.stack([render(s, size) for s in scenes]), scenes)
    for attribute in (*ATTRIBUTES, "overall", "count"):
        assert scores[attribute] >= 0.98, (attribute, scores)
    assert scores["num_shapes"] == sum(len(s.shapes) for s in scenes)


def test_consistency_by_scene_scores_one_and_two_shape_scenes_apart():
    scenes = _scenes(60, "train", seed=13)
    # One-shape scenes drawn right, two-shape scenes drawn for the next scene's caption.
    images = [render(s if len(s.shapes) == 1 else scenes[(i + 1) % 60], 64)
              for i, s in enumerate(scenes)]
    by_scene = consistency_by_scene(images, scenes)
    assert set(by_scene) == {"one_shape", "two_shapes"}
    assert by_scene["one_shape"]["overall"] == 1.0
    assert by_scene["two_shapes"]["colour"] < 0.5
    ones = [s for s in scenes if len(s.shapes) == 1]
    assert by_scene["one_shape"]["num_shapes"] == len(ones)
    # The overall score is the two kinds' scores weighted by their shapes.
    whole = consistency_score(images, scenes)
    weighted = sum(b["colour"] * b["num_shapes"] for b in by_scene.values())
    assert whole["colour"] == pytest.approx(weighted / whole["num_shapes"])
    only_ones = consistency_by_scene([images[scenes.index(s)] for s in ones], ones)
    assert set(only_ones) == {"one_shape"}  # a kind without a scene is left out
    with pytest.raises(ValueError, match="images for"):
        consistency_by_scene(images[:3], scenes)


class _Painter:
    """A stand-in model that draws what a caption's scene holds, except two-shape scenes,
    which it draws as the next scene."""

    def __init__(self, captions, scenes):
        self.scenes = dict(zip(captions, scenes, strict=True))
        self.order = list(captions)

    def generate(self, captions, seed=None):
        drawn = []
        for caption in captions:
            scene = self.scenes[caption]
            if len(scene.shapes) == 2:
                scene = self.scenes[self.order[(self.order.index(caption) + 1) % len(self.order)]]
            drawn.append(render(scene, 64))
        return np.stack(drawn)


def test_score_model_by_scene_adds_each_kinds_attributes():
    scenes = _scenes(40, "train", seed=13)
    captions = [f"scene {i}" for i in range(len(scenes))]
    painter = _Painter(captions, scenes)
    plain = score_model(painter, captions, scenes, batch=16)
    split = score_model(painter, captions, scenes, batch=16, by_scene=True)
    assert {k: split[k] for k in plain} == plain  # the overall scores are unchanged
    kinds = consistency_by_scene([painter.generate([c])[0] for c in captions], scenes)
    for kind, scores in kinds.items():
        for attribute in ATTRIBUTES:
            assert split[f"{kind}_{attribute}"] == round(scores[attribute], 3)
    assert split["one_shape_shape"] == 1.0 and split["two_shapes_colour"] < 0.5
    assert set(split) - set(plain) == {f"{k}_{a}" for k in kinds for a in ATTRIBUTES}


def test_reader_is_near_chance_on_shuffled_pairs():
    scenes = _scenes(240, "train", seed=12)
    images = [render(s, 64) for s in scenes]
    shuffled = [scenes[(i + 1) % len(scenes)] for i in range(len(scenes))]
    scores = consistency_score(images, shuffled)
    # Chance: 1/8 colours, 1/5 shapes, 1/2 sizes, 1/9 cells (a little more for two-shape
    # scenes, where the reader pairs the shapes to agree best).
    assert scores["colour"] < 0.25
    assert scores["shape"] < 0.35
    assert scores["size"] < 0.65
    assert scores["position"] < 0.3
    assert scores["overall"] < 0.05


def test_reader_reads_each_attribute():
    for colour in COLOURS:
        for shape in ("circle", "square", "triangle", "diamond", "star"):
            spec = ShapeSpec(shape, colour, "small", "bottom right", 0.4, (1.0, 1.0))
            scene = SceneSpec((spec, ShapeSpec("square", "blue", "large", "centre")), "noise", 3)
            found = read_objects(render(scene, 64))
            assert len(found) == 2
            assert spec.attributes in {o.attributes for o in found}


def test_float_images_read_like_uint8():
    scenes = _scenes(10, "test")
    images = np.stack([render(s, 64) for s in scenes])
    as_float = images.astype(np.float32) / 127.5 - 1
    assert consistency_score(as_float, scenes) == consistency_score(images, scenes)


def test_read_scene_reports_per_shape_and_missing_shapes():
    red = ShapeSpec("circle", "red", "large", "top left")
    blue = ShapeSpec("star", "blue", "small", "bottom right")
    image = render(SceneSpec((red,), "stripes", 1), 128)
    reading = read_scene(image, SceneSpec((blue, red)))
    assert reading["num_objects"] == 1
    assert [s["found"] for s in reading["shapes"]] == [False, True]
    assert all(reading["shapes"][1][a] for a in ATTRIBUTES)
    assert not any(reading["shapes"][0][a] for a in ATTRIBUTES)
    assert not any(reading[a] for a in ATTRIBUTES)
    # A wrong colour only.
    reading = read_scene(image, SceneSpec((ShapeSpec("circle", "green", "large", "top left"),)))
    assert (reading["colour"], reading["shape"], reading["size"], reading["position"]) == (
        False,
        True,
        True,
        True,
    )
    # A blank image holds nothing.
    blank = np.full((64, 64, 3), 128, np.uint8)
    assert read_objects(blank) == []
    scores = consistency_score([blank], [SceneSpec((red,))])
    assert scores["overall"] == 0 and scores["count"] == 0


def test_only_as_many_objects_as_requested_are_read():
    # Two shapes drawn, one asked for: only the larger one is read, so asking for the
    # smaller one's attributes earns nothing (clutter must not buy candidates).
    large = ShapeSpec("circle", "red", "large", "top left")
    small = ShapeSpec("star", "blue", "small", "bottom right")
    image = render(SceneSpec((large, small)), 128)
    assert read_scene(image, SceneSpec((large,)))["colour"]
    reading = read_scene(image, SceneSpec((small,)))
    assert reading["num_objects"] == 2
    assert not any(reading[a] for a in ATTRIBUTES)


def test_scores_parsed_captions():
    data = ShapesDataset("test", num_images=12, image_size=64)
    images = [data.image(i) for i in range(12)]
    specs = [parse_caption(data.captions(i)[3]) for i in range(12)]
    assert consistency_score(images, specs)["overall"] == 1.0
    with pytest.raises(ValueError, match="no scene"):
        consistency_score(images[:1], [None])


def test_reader_tolerates_mild_noise():
    # Generated images are not clean renderings: per-channel noise must not break the reader.
    rng = np.random.default_rng(0)
    scenes = _scenes(40, "train", seed=13)
    images = [
        np.clip(render(s, 128) + rng.normal(0, 6, (128, 128, 3)), 0, 255).astype(np.uint8)
        for s in scenes
    ]
    scores = consistency_score(images, scenes)
    for attribute in ATTRIBUTES:
        assert scores[attribute] >= 0.95, (attribute, scores)


class _ListCaptioner:
    """A stand-in captioner that answers with the given captions, in order."""

    def __init__(self, captions):
        self.captions, self.seen = list(captions), 0

    def caption(self, images):
        assert images.dtype == np.uint8 and images.shape[1:] == (64, 64, 3)
        out = self.captions[self.seen : self.seen + len(images)]
        self.seen += len(images)
        return out


def _caption_of(shapes) -> str:
    """A caption naming `shapes` in this order, as `parse_caption` reads it."""
    return " and ".join(f"a {s.size} {s.colour} {s.shape} at the {s.position}" for s in shapes)


def test_score_captioner_reads_what_the_captions_say():
    from mirrorgan_tf.evaluation.shapes_score import held_out_captions, score_captioner

    captions, _ = held_out_captions(40, level="medium")
    perfect = score_captioner(_ListCaptioner(captions), 40, level="medium", batch=16)
    assert perfect == {"colour": 1.0, "shape": 1.0, "size": 1.0, "position": 1.0,
                       "unreadable": 0.0}
    shifted = score_captioner(_ListCaptioner(captions[1:] + captions[:1]), 40, level="medium")
    assert shifted["colour"] < 0.5 and shifted["position"] < 0.5
    # Two-shape scenes: a caption naming the shapes in the other order reads as well.
    _, specs = held_out_captions(40, level="full")
    two = sum(len(s.shapes) == 2 for s in specs)
    assert two >= 10
    swapped = [_caption_of(s.shapes[::-1]) for s in specs]
    assert score_captioner(_ListCaptioner(swapped), 40, level="full") == perfect
    # Only the second shape named: one of each two-shape scene's shapes read.
    first_only = [_caption_of(s.shapes[1:2] or s.shapes) for s in specs]
    half = score_captioner(_ListCaptioner(first_only), 40, level="full")
    assert half["colour"] == half["position"] == round(40 / (40 + two), 3)
    nonsense = score_captioner(_ListCaptioner(["zzz"] * 40), 40, level="medium")
    assert nonsense == {"colour": 0.0, "shape": 0.0, "size": 0.0, "position": 0.0,
                        "unreadable": 1.0}


class _CodeEncoder:
    """`encode_text` whose sentence is the cell code of `scene_of(caption)`'s labels."""

    def __init__(self, scene_of):
        self.scene_of = scene_of

    def encode_text(self, captions):
        from mirrorgan_tf.data.shapes import CELL_CODE_CLASSES

        width = sum(CELL_CODE_CLASSES)
        sentence = np.zeros([len(captions), 9 * width + 4], np.float32)
        for row, caption in enumerate(captions):
            for cell, labels in enumerate(self.scene_of(caption).cell_labels()):
                start = cell * width
                for count, label in zip(CELL_CODE_CLASSES, labels, strict=True):
                    sentence[row, start + max(label, 0)] = 5.0
                    start += count
        return {"sentence": sentence}


def test_score_cell_code_reads_what_each_cell_holds():
    from mirrorgan_tf.evaluation.shapes_score import held_out_captions, score_cell_code

    captions, specs = held_out_captions(30)
    perfect = score_cell_code(_CodeEncoder(parse_caption), 30)
    assert perfect == {"scenes": 1.0, "colour": 1.0, "shape": 1.0, "size": 1.0, "empty": 1.0}
    # Every scene one place on: each shape read in the wrong cell.
    other = dict(zip(captions, specs[1:] + specs[:1], strict=True))
    shifted = score_cell_code(_CodeEncoder(other.get), 30)
    assert shifted["scenes"] < 0.2 and shifted["colour"] < 0.3 and shifted["empty"] < 1.0
    # Both shapes' colours exchanged in two-shape scenes: the cells' colours are wrong there,
    # shapes and sizes right (a bag of words cannot tell these scenes apart).
    def exchanged(caption):
        scene = parse_caption(caption)
        if len(scene.shapes) == 1:
            return scene
        a, b = scene.shapes
        return SceneSpec((ShapeSpec(a.shape, b.colour, a.size, a.position),
                          ShapeSpec(b.shape, a.colour, b.size, b.position)))

    two = sum(len(s.shapes) == 2 and s.shapes[0].colour != s.shapes[1].colour for s in specs)
    mixed = score_cell_code(_CodeEncoder(exchanged), 30)
    assert mixed["scenes"] == round(1 - two / 30, 3) and two >= 5
    assert mixed["shape"] == mixed["size"] == mixed["empty"] == 1.0
