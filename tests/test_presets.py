"""The preset table, parameter counts against the published implementation, preset folders."""

import json

import numpy as np
import pytest

from mirrorgan_tf import presets

# Trainable parameters of the published PyTorch implementation (shared/design reference).
# Keras LSTMs carry one bias vector per gate block where PyTorch carries two: the bi-LSTM text
# encoder has 2 x 512 fewer, the captioner decoder 2,048 fewer. Everything else is one for one.
PUBLISHED = {
    "birds": {
        "vocab_size": 5450,
        "text_encoder": 2_075_320 - 2 * 512,
        "generator": 7_105_392,
        "discriminator_64": 6_313_730,
        "discriminator_128": 19_424_002,
        "discriminator_256": 71_858_946,
        "captioner_encoder": 58_668_864,
        "captioner_decoder": 5_768_010 - 2_048,
        # published: only the DAMSM projections train (the Inception trunk is frozen)
        "image_encoder": 768 * 256 + 2048 * 256 + 256,
    },
    "coco": {
        "vocab_size": 27297,
        "text_encoder": 8_629_420 - 2 * 512,
        "generator": 13_853_408,
        "discriminator_64": 13_304_450,
        "discriminator_128": 42_800_258,
        "discriminator_256": 160_774_274,
        "captioner_encoder": 58_668_864,
        "captioner_decoder": 22_568_353 - 2_048,
        "image_encoder": 768 * 256 + 2048 * 256 + 256,
    },
}


@pytest.mark.parametrize("preset", ["birds", "coco"])
def test_parameter_counts_equal_the_published_implementation(preset):
    want = dict(PUBLISHED[preset])
    config = presets.get_config(preset, vocab_size=want.pop("vocab_size"))
    assert presets.parameter_counts(config) == want


def test_published_hyperparameters():
    birds, coco = presets.get_config("birds"), presets.get_config("coco")
    assert (birds["gf_dim"], birds["df_dim"], birds["r_num"], birds["words_num"]) == (32, 64, 2, 18)
    assert (coco["gf_dim"], coco["df_dim"], coco["r_num"], coco["words_num"]) == (48, 96, 3, 12)
    assert birds["training"]["caption_loss_weight"] == 10.0
    assert birds["training"]["g_learning_rate"] == 2e-4
    assert birds["training"]["adam_beta_1"] == 0.5


def test_shapes_preset_takes_the_builtin_vocabulary():
    from mirrorgan_tf.data.shapes import shapes_vocabulary

    assert presets.get_config("shapes")["vocab_size"] == len(shapes_vocabulary())


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="birds, coco, shapes"):
        presets.get_config("flowers")


@pytest.mark.parametrize("vocab_size", [0, 2, -5, 10**9, 3.5, "many", True])
def test_impossible_vocabulary_sizes_are_refused(vocab_size):
    with pytest.raises(ValueError, match="vocab_size"):
        presets.get_config("birds", vocab_size=vocab_size)


def test_unknown_configuration_keys_are_refused():
    with pytest.raises(ValueError, match="Unknown configuration keys"):
        presets.get_config("birds", gf=8)


def test_overrides_do_not_change_the_table():
    presets.get_config("birds", gf_dim=4, training={"batch_size": 1})
    assert presets.get_config("birds")["gf_dim"] == 32
    assert presets.get_config("birds")["training"]["batch_size"] == 12


def test_components_follow_the_number_of_stages():
    config = presets.get_config("shapes", num_stages=2)
    assert presets.component_names(config) == [
        "text_encoder", "image_encoder", "generator", "discriminator_64", "discriminator_128",
        "captioner",
    ]
    with pytest.raises(ValueError, match="does not exist"):
        presets.build_component("discriminator_256", config)


def test_save_to_preset_and_from_preset_round_trip(tmp_path):
    config = presets.get_config(
        "shapes", gf_dim=4, nef=16, embedding_dim=16, z_dim=8, condition_dim=8, num_stages=1
    )
    generator = presets.build_component("generator", config)
    text_encoder = presets.build_component("text_encoder", config)
    trainable_text_weights = presets.count_params(text_encoder)
    text_encoder.trainable = False  # frozen, as STEM in a MirrorGAN run: still counted
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<end>\n<unk>\nred\n", encoding="utf-8")
    folder = presets.save_to_preset(
        str(tmp_path / "preset"), config, {"generator": generator, "text_encoder": text_encoder},
        vocabulary_path=str(vocab), metadata={"step": 7},
    )
    loaded = presets.from_preset(folder)
    assert sorted(k for k in loaded if k in presets.COMPONENTS) == ["generator", "text_encoder"]
    assert loaded["config"] == json.loads(json.dumps(config))
    assert loaded["metadata"]["step"] == 7
    # The description names the widths this model was built with, not only the preset's.
    assert loaded["metadata"]["description"] == (
        presets.PRESETS["shapes"]["description"] + " Changed from the preset: condition_dim 8, "
        "embedding_dim 16, gf_dim 4, nef 16, num_stages 1, z_dim 8."
    )
    counts = loaded["metadata"]["parameter_counts"]
    assert counts["generator"] == presets.count_params(generator)
    assert counts["text_encoder"] == trainable_text_weights > 0
    assert loaded["vocabulary_path"].endswith("vocabulary.txt")
    for a, b in zip(generator.get_weights(), loaded["generator"].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Saving again replaces the folder whole; no temporary folders are left behind.
    presets.save_to_preset(folder, config, {"generator": generator})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preset", "vocab.txt"]
    with pytest.raises(ValueError, match="holds no weights for 'captioner'"):
        presets.from_preset(folder, components=["captioner"])


def test_from_preset_refuses_a_folder_without_config(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        presets.from_preset(str(tmp_path))
