"""The demo's helpers: shipping a model with its exports, and the chance baseline."""

import json
import os

from mirrorgan_tf import presets
from mirrorgan_tf.data.shapes import shapes_vocabulary
from mirrorgan_tf.demo import SHIPPED_COMPONENTS, chance_score, ship_model
from mirrorgan_tf.task import TextToImage
from tests.training.conftest import TINY


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

