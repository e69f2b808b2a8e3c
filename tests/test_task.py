"""The text-to-image task object: seeds, loading, bad input."""

import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf import presets
from mirrorgan_tf.data.tokenizer import Tokenizer
from mirrorgan_tf.task import (
    TextToImage,
    default_vocabulary,
    from_uint8,
    noise_for_seeds,
    resolve_preset,
    to_uint8,
)

TINY = dict(gf_dim=4, nef=16, embedding_dim=16, z_dim=8, condition_dim=8, num_stages=2,
            captioner_embed_dim=16, captioner_hidden_dim=16)


@pytest.fixture(scope="module")
def model():
    config = presets.get_config("shapes", **TINY)
    return TextToImage(
        config,
        Tokenizer(default_vocabulary(config), config["words_num"]),
        presets.build_component("text_encoder", config),
        presets.build_component("generator", config),
        presets.build_component("captioner", config),
    )


def test_noise_rows_depend_only_on_their_seed():
    noise = noise_for_seeds([4, 9, -1, -5], z_dim=6).numpy()
    for row, seed in enumerate([4, 9]):
        want = tf.random.stateless_normal([6], seed=[seed, 0]).numpy()
        np.testing.assert_array_equal(noise[row], want)
    assert noise.shape == (4, 6) and np.all(np.isfinite(noise))
    assert not np.array_equal(noise[2], noise[3])  # negative seed: fresh noise
    assert noise_for_seeds(tf.zeros([0], tf.int32), 6).shape == (0, 6)


def test_same_caption_and_seed_give_the_same_image_whatever_the_batch(model):
    alone = model.generate("a small red circle", seed=11)
    batch = model.generate(["a blue square", "a small red circle"], seed=[3, 11])
    np.testing.assert_array_equal(alone[0], batch[1])
    assert not np.array_equal(batch[0], batch[1])
    assert alone.shape == (1, 128, 128, 3) and alone.dtype == np.uint8
    with pytest.raises(ValueError, match="2 seeds for 3 captions"):
        model.generate(["a", "b", "c"], seed=[1, 2])


def test_generate_with_attention_returns_every_stage_and_the_words(model):
    result = model.generate(["a red circle", "!!!"], seed=0, return_attention=True)
    assert [x.shape[1] for x in result["images"]] == [64, 128]
    assert result["attention"][0].shape[:3] == (2, 64, 64)
    assert result["words"] == [["a", "red", "circle"], ["<unk>"]]


def test_caption_returns_strings(model):
    captions = model.caption(model.generate(["a red circle"], seed=0))
    assert len(captions) == 1 and isinstance(captions[0], str)


def test_image_normalisation_round_trip():
    x = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(from_uint8(x)), x)


def test_resolve_preset_errors(tmp_path):
    assert resolve_preset("shapes") == "shapes"
    with pytest.raises(ValueError, match="neither a preset folder"):
        resolve_preset(str(tmp_path))
    with pytest.raises(ValueError, match="not a preset name"):
        resolve_preset("nonexistent-model")
