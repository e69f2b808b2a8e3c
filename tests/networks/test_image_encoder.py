"""Tests for the DAMSM image encoder (AttnGAN CNN_ENCODER)."""

import keras
import numpy as np
import pytest

from mirrorgan_tf.networks.image_encoder import ImageEncoder


def _trainable_count(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _images(batch, size, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, [batch, size, size, 3]).astype("float32")


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("weights=None must not download")

    monkeypatch.setattr(keras.utils, "get_file", refuse)


def test_inception_encoder_published_trainable_count_and_shapes(no_download):
    encoder = ImageEncoder(nef=256, backbone="inception_v3", weights=None)
    # Frozen Inception trunk: conv1x1 768*256 + Dense 2048*256 + 256.
    assert _trainable_count(encoder) == 721_152
    assert not encoder.trunk.trainable
    regions, sentence = encoder(_images(1, 64), training=True)
    assert regions.shape == (1, 17, 17, 256)
    assert sentence.shape == (1, 256)
    assert np.isfinite(np.asarray(regions)).all()


def test_inception_encoder_rejects_other_input_sizes(no_download):
    with pytest.raises(ValueError, match="299"):
        ImageEncoder(nef=8, backbone="inception_v3", input_size=128)
    with pytest.raises(ValueError, match="weights"):
        ImageEncoder(nef=8, backbone="small", weights="imagenet")
    with pytest.raises(ValueError, match="backbone"):
        ImageEncoder(nef=8, backbone="resnet152")


@pytest.mark.parametrize("batch, size", [(1, 64), (3, 32)])
def test_small_encoder_shapes(batch, size):
    encoder = ImageEncoder(nef=8, backbone="small", trainable_backbone=True)
    regions, sentence = encoder(_images(batch, size), training=False)
    assert regions.shape == (batch, size // 8, size // 8, 8)
    assert sentence.shape == (batch, 8)
    resized = ImageEncoder(nef=8, backbone="small", input_size=64)
    assert resized(_images(batch, size))[0].shape == (batch, 8, 8, 8)


def test_frozen_trunk_ignores_training_flag():
    encoder = ImageEncoder(nef=8, backbone="small", trainable_backbone=False)
    assert _trainable_count(encoder) == 128 * 8 + 256 * 8 + 8
    images = _images(2, 64)
    a = encoder(images, training=True)
    b = encoder(images, training=False)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)


def test_config_and_keras_file_round_trip(tmp_path):
    encoder = ImageEncoder(nef=8, backbone="small", trainable_backbone=True, name="enc")
    images = _images(2, 64)
    expected = encoder(images, training=False)
    config = encoder.get_config()
    clone = ImageEncoder.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(encoder.get_weights())
    path = tmp_path / "enc.keras"
    encoder.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, ImageEncoder)
    for other in (clone, loaded):
        for a, b in zip(expected, other(images, training=False), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_config_does_not_request_a_download():
    # The config describes the architecture; saved weights come with the model file.
    assert ImageEncoder(nef=8, backbone="small").get_config()["weights"] is None


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_forward(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        encoder = ImageEncoder(nef=8, backbone="small", trainable_backbone=True)
        regions, sentence = encoder(_images(2, 64), training=True)
        assert regions.shape == (2, 8, 8, 8) and sentence.shape == (2, 8)
        assert np.isfinite(np.asarray(sentence, dtype="float32")).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_images_raise_value_error_naming_images():
    encoder = ImageEncoder(nef=8, backbone="small")
    with pytest.raises(ValueError, match="images"):
        encoder(np.zeros([64, 64, 3], "float32"))
    with pytest.raises(ValueError, match="images"):
        encoder(np.zeros([1, 64, 64, 4], "float32"))
