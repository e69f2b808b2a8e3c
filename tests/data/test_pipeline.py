"""Tests for mirrorgan_tf/data/pipeline.py: data names and curricula."""

import pytest

from mirrorgan_tf.data import pipeline


def test_shapes_levels_are_data_names():
    assert pipeline.shapes_level("shapes") == "full"
    assert pipeline.shapes_level("shapes:easy") == "easy"
    assert pipeline.shapes_level("data/birds") is None
    assert pipeline.data_kind("shapes:medium") == "shapes"
    with pytest.raises(ValueError, match="unknown level 'hard'.*shapes:easy"):
        pipeline.data_kind("shapes:hard")


def test_sample_captions_follow_the_level():
    from mirrorgan_tf.data.shapes import parse_caption

    for caption in pipeline.sample_captions("shapes:easy", count=8):
        (shape,) = parse_caption(caption).shapes
        assert shape.size == "large"


def test_curriculum_schedule():
    assert pipeline.curriculum_schedule("easy:200, medium:300,full", 1000, 100) == [
        (200, "shapes:easy"), (500, "shapes:medium"), (1000, "shapes:full")]
    assert pipeline.curriculum_schedule("easy:400,full:600", 1000) == [
        (400, "shapes:easy"), (1000, "shapes:full")]
    assert pipeline.curriculum_schedule("medium", 7) == [(7, "shapes:medium")]


@pytest.mark.parametrize("curriculum, match", [
    ("", "empty"),
    ("hard:100,full", "unknown level 'hard'"),
    ("easy,full", "only the last level may omit"),
    ("easy:x,full", "positive step count"),
    ("easy:0,full", "positive step count"),
    ("easy:600,full:600", "covers 1,200 steps but the run has 1,000"),
    ("easy:300,full:300", "covers 600 steps"),
    ("easy:1000,full", "trains no steps"),
    ("easy:250,full", "not a multiple of --checkpoint-every"),
])
def test_curriculum_schedule_refuses_bad_schedules(curriculum, match):
    with pytest.raises(ValueError, match=match):
        pipeline.curriculum_schedule(curriculum, 1000, 100)
