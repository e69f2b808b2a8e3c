"""The demo's helpers: shipping a model with its exports, and the chance baseline."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from mirrorgan_tf import presets
from mirrorgan_tf.data.shapes import shapes_vocabulary
from mirrorgan_tf.demo import SHIPPED_COMPONENTS, ship_model
from mirrorgan_tf.evaluation.shapes_score import chance_score, held_out_captions, score_model
from mirrorgan_tf.task import TextToImage, noise_for_seeds
from tests.training.conftest import TINY

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "saved_models", "shapes")
# What the shipped model draws above chance on held-out captions of the full distribution
# (README, "The shipped model"): every attribute.
SHIPPED_ABOVE_CHANCE = ("colour", "shape", "size", "position")
# At least what it was measured to reach there (0.879 / 0.591 / 0.935 / 0.987 on these 512
# captions), less a margin for other CPUs' rounding: the model shipped before it, without the
# polish phase (0.829 / 0.532 / 0.920 / 0.983), fails on colour and shape. Colour, size and
# position meet the targets (0.85, 0.8 and 0.8); shape (0.6) does not yet.
SHIPPED_AT_LEAST = {"colour": 0.85, "shape": 0.56, "size": 0.90, "position": 0.95}
SCORED_CAPTIONS = 512


def test_ship_model_writes_the_preset_and_both_exports_and_replaces_the_old_folder(tmp_path):
    vocabulary = shapes_vocabulary()
    vocabulary.save(str(tmp_path / "vocabulary.txt"))
    config = presets.get_config("shapes", vocab_size=len(vocabulary), **TINY)
    source = presets.save_to_preset(
        str(tmp_path / "run_model"),
        config,
        {name: presets.build_component(name, config)
         for name in ("text_encoder", "generator", "captioner", "discriminator_64")},
        vocabulary_path=str(tmp_path / "vocabulary.txt"),
    )
    dest = tmp_path / "shipped"
    dest.mkdir()
    (dest / "stale.txt").write_text("from an earlier run")
    assert ship_model(source, str(dest)) == str(dest)
    names = set(os.listdir(dest))
    assert {f"{n}.weights.h5" for n in SHIPPED_COMPONENTS} <= names
    assert "discriminator_64.weights.h5" not in names and "stale.txt" not in names
    assert os.path.exists(dest / "serving" / "shapes" / "1" / "saved_model.pb")
    assert os.path.exists(dest / "serving" / "models.config")
    for name in ("mirrorgan.tflite", "mirrorgan_float16.tflite"):
        assert os.path.getsize(dest / "tflite" / name) > 0
        with open(dest / "tflite" / f"{name}.json", encoding="utf-8") as f:
            assert "vocabulary" in json.load(f)
    assert not os.path.exists(str(dest) + ".partial")
    # The shipped folder is itself a preset folder.
    model = TextToImage.from_preset(str(dest))
    assert model.generate(["a red circle"], seed=0).shape == (1, 128, 128, 3)


def test_chance_score_is_near_one_over_the_number_of_values():
    chance = chance_score(64)
    assert 0.03 < chance["colour"] < 0.3  # 8 colours
    assert 0.03 < chance["position"] < 0.3  # 9 cells
    assert chance["overall"] < 0.1


def test_the_shipped_model_draws_held_out_captions_well_above_chance():
    """`saved_models/shapes` against chance and its measured scores on 512 held-out captions.

    Chance is real test images read against another scene's caption. "Well above" is more
    than four binomial standard errors of chance over the scored shapes, so a model that
    ignored the caption (or drew nothing) fails; `SHIPPED_AT_LEAST` fails a weaker model.
    """
    model = TextToImage.from_preset(SHIPPED)
    captions, specs = held_out_captions(SCORED_CAPTIONS)
    images = model.generate(captions[:2], seed=0)
    assert images.shape == (2, 256, 256, 3) and images.dtype.name == "uint8"
    got, chance = score_model(model, captions, specs), chance_score(SCORED_CAPTIONS)
    for attribute in SHIPPED_ABOVE_CHANCE:
        p = chance[attribute]
        margin = 4 * math.sqrt(p * (1 - p) / got["num_shapes"])
        assert got[attribute] > p + margin, (attribute, got[attribute], p, margin)
    for attribute, floor in SHIPPED_AT_LEAST.items():
        assert got[attribute] >= floor, (attribute, got[attribute], floor)
    # The exports it ships are this model: the TF Serving SavedModel draws the same pixels
    # (seeds as in `generate`), the float32 TFLite model the same image within 1e-4.
    served = tf.saved_model.load(os.path.join(SHIPPED, "serving", "shapes", "1"))
    out = served.signatures["generate"](
        captions=tf.constant(captions[:2]), seed=tf.constant([0, 0], tf.int32)
    )
    assert np.abs(out["images"].numpy().astype(int) - images.astype(int)).max() <= 1
    fresh = served.signatures["serving_default"](captions=tf.constant(captions[:2]))
    assert fresh["images"].shape == (2, 256, 256, 3)
    interpreter = Interpreter(model_path=os.path.join(SHIPPED, "tflite", "mirrorgan.tflite"))
    runner = interpreter.get_signature_runner("serving_default")
    token_ids = model.tokenizer(tf.constant(captions[:1]))[0].numpy()
    noise = noise_for_seeds([0], model.config["z_dim"]).numpy()
    lite = runner(token_ids=token_ids, noise=noise)["images"]
    words, sentence = model.text_encoder(token_ids, training=False)
    want = model.generator(noise, sentence, words, tf.not_equal(token_ids, 0), training=False,
                           deterministic=True)["images"][-1].numpy()
    assert np.abs(lite - want).max() <= 1e-4


def test_make_shipped_model_trains_with_the_recipe_of_the_shipped_model():
    from mirrorgan_tf.demo import GROWN_OVERRIDES, SCHEDULES

    with open(os.path.join(SHIPPED, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    trained = config["training"]  # the grown phase's, the last it went through
    plan = SCHEDULES["ship"]
    recipe = {**plan.recipe, **GROWN_OVERRIDES, **plan.polish_recipe}
    assert {k: trained[k] for k in recipe} == recipe
    assert {k: config[k] for k in plan.sizes} == plan.sizes
    # Its STEM learnt the cell code: the sentence says what each cell holds.
    assert plan.stem_recipe["damsm_cell_code_weight"] > 0

def test_every_schedule_is_a_valid_run_whose_level_changes_fall_on_checkpoints():
    from mirrorgan_tf.data.pipeline import curriculum_schedule
    from mirrorgan_tf.data.shapes import LEVELS
    from mirrorgan_tf.demo import SCHEDULES, _scaled_curriculum

    assert SCHEDULES["demo"].level == "easy" and SCHEDULES["demo"].curriculum is None
    assert SCHEDULES["ship"].level == "full"
    training_keys = set(presets.get_config("shapes")["training"])
    for plan in SCHEDULES.values():
        # each a preset `training` option
        assert set(plan.recipe) | set(plan.stem_recipe) | set(plan.polish_recipe) <= training_keys
        assert plan.level in LEVELS and set(plan.steps) == set(plan.chunks)
        assert set(plan.targets) == {"colour", "shape", "size", "position"}
        for scale in (1.0, 0.05):
            for phase, levels in (("gan_64", plan.curriculum),
                                  ("stream", plan.stream_curriculum)):
                steps = max(2, int(round(plan.steps[phase] * scale)))
                every = max(1, steps // plan.chunks[phase])
                curriculum = _scaled_curriculum(levels, scale, every, plan.level)
                if curriculum is None:
                    continue
                # Raises unless each change is on a multiple of `every` and the last level
                # trains.
                segments = curriculum_schedule(curriculum, steps, every)
                assert segments[-1] == (steps, f"shapes:{plan.level}")
                assert all(end % every == 0 for end, _ in segments)
    ship = SCHEDULES["ship"]
    assert ship.curriculum is None
    assert _scaled_curriculum(ship.stream_curriculum, 1.0, 1000, "full") == "easy:3000,full"
    assert _scaled_curriculum(None, 1.0, 1000, "full") is None
    # A scale too small for a level still trains it for one checkpoint interval.
    assert _scaled_curriculum("easy:3000", 1e-4, 7, "full") == "easy:7,full"


def test_run_demo_refuses_an_unknown_schedule(tmp_path):
    from mirrorgan_tf.demo import run_demo

    with pytest.raises(ValueError, match="unknown demo schedule 'long'"):
        run_demo(str(tmp_path / "demo"), schedule="long")


def test_run_demo_pretrains_stream_through_the_schedules_levels(tmp_path, monkeypatch):
    from mirrorgan_tf import demo

    calls = {}

    class Stop(Exception):
        pass

    def pretrain_stream(**kwargs):
        calls.update(kwargs)
        raise Stop

    monkeypatch.setattr(demo.run, "pretrain_stem", lambda **kwargs: "stem-run")
    monkeypatch.setattr(demo.run, "pretrain_stream", pretrain_stream)
    with pytest.raises(Stop):
        demo.run_demo(str(tmp_path / "ship"), schedule="ship", verbose=0)
    # 6,000 steps in 6 chunks: `easy` for the first 3,000, then the schedule's level.
    assert calls["steps"] == 6000 and calls["trunk_from"] == "stem-run"
    assert calls["curriculum"] == "easy:3000,full" and calls["data"] == "shapes:full"
    with pytest.raises(Stop):
        demo.run_demo(str(tmp_path / "demo"), verbose=0)
    assert calls["curriculum"] is None and calls["data"] == "shapes:easy"


@pytest.mark.parametrize("schedule", ["ship", "demo"])
def test_run_demo_polishes_the_64_px_run_when_the_schedule_says_so(tmp_path, monkeypatch,
                                                                   schedule):
    from mirrorgan_tf import demo

    calls = []

    class Stop(Exception):
        pass

    def train(**kwargs):
        calls.append(kwargs)
        if kwargs.get("num_stages") != 1:  # the grown phase: enough
            raise Stop
        return kwargs["out"]

    monkeypatch.setattr(demo.run, "pretrain_stem", lambda **kwargs: "stem-run")
    monkeypatch.setattr(demo.run, "pretrain_stream", lambda **kwargs: "stream-run")
    monkeypatch.setattr(demo.run, "train", train)
    with pytest.raises(Stop):
        demo.run_demo(str(tmp_path / schedule), schedule=schedule, verbose=0)
    plan = demo.SCHEDULES[schedule]
    gan_64, *polish, grown = calls
    assert "init" not in gan_64 and gan_64["steps"] == plan.steps["gan_64"]
    assert gan_64["training"] == plan.recipe
    if schedule == "demo":
        # No polish phase: the grown run starts from the 64 px run, with its recipe.
        assert polish == [] and grown["init"] == gan_64["out"]
        assert grown["training"] == {**plan.recipe, **demo.GROWN_OVERRIDES}
        return
    # The polish phase continues the 64 px run without the paired loss and against fresh
    # discriminators; the grown run starts from it and keeps its recipe.
    (polish,) = polish
    assert polish["init"] == gan_64["out"] and polish["fresh_discriminators"] is True
    assert polish["num_stages"] == 1 and polish["steps"] == plan.steps["polish"] == 8000
    assert polish["eval_every"] == polish["checkpoint_every"] == 500
    assert polish["training"] == {**plan.recipe, **demo.GROWN_OVERRIDES, "paired_loss_weight": 0}
    assert grown["init"] == polish["out"] and grown["training"] == polish["training"]


def test_the_demo_runs_end_to_end_and_reports_scores_targets_and_its_learning_curve(tmp_path):
    from mirrorgan_tf.demo import (
        DEMO_BATCH,
        DEMO_RECIPE,
        DEMO_STEM_RECIPE,
        DEMO_TARGETS,
        GROWN_OVERRIDES,
        run_demo,
    )

    out = str(tmp_path / "demo")
    report = run_demo(out, scale=1e-4, num_eval=8, curve_captions=8, verbose=0, **TINY)
    steps = report["steps"]
    assert report["level"] == "easy" and steps["gan_64"] == steps["gan"] == 2
    assert report["schedule"] == "demo" and report["curriculum"] is None
    assert report["recipe"] == DEMO_RECIPE
    assert report["recipe_grown"] == {**DEMO_RECIPE, **GROWN_OVERRIDES}
    # Each phase trained with its recipe (the preset configuration its model was saved with).
    assert report["recipe_stem"] == DEMO_STEM_RECIPE
    for phase, recipe in (("stem", report["recipe_stem"]),
                          ("mirrorgan_64", report["recipe"]),
                          ("mirrorgan", report["recipe_grown"])):
        with open(os.path.join(out, phase, "model", "config.json"), encoding="utf-8") as f:
            saved = json.load(f)["training"]
        assert {k: saved[k] for k in recipe} == recipe, phase
    with open(os.path.join(out, "stem", "losses.csv"), encoding="utf-8") as f:
        assert "keyword_loss" in f.readline().split(",")  # STEM learnt the shape code
    for key in ("untrained", "trained", "chance", "stream_reading_real_images"):
        assert set(DEMO_TARGETS) <= set(report[key])
    assert report["targets_met"] == {k: report["trained"][k] >= v
                                     for k, v in DEMO_TARGETS.items()}
    # One learning-curve point per step of each GAN phase, in images seen since the first.
    rows = report["learning_curve"]["rows"]
    first, second = DEMO_BATCH["gan_64"], DEMO_BATCH["gan"]
    assert [(r["images_seen"], r["train_level"]) for r in rows] == [
        (first, "easy, 64 px"), (2 * first, "easy, 64 px"),
        (2 * first + second, "easy, 3 stages"), (2 * first + 2 * second, "easy, 3 stages")]
    assert os.path.getsize(report["learning_curve"]["png"]) > 0
    assert os.path.getsize(report["grid"]) > 0
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        assert json.load(f)["trained"] == report["trained"]
