"""Tests for the per-scale discriminators (AttnGAN/MirrorGAN D_NET64/128/256)."""

import keras
import numpy as np
import pytest

import mirrorgan_tf.networks.discriminator as discriminator_module
from mirrorgan_tf.networks.discriminator import Discriminator
from tests.networks.test_backbones import torch_conv2d_reference


def _trainable_count(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _images(batch, size, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, [batch, size, size, 3]).astype("float32")


def _sentence(batch, nef, seed=1):
    return np.random.default_rng(seed).normal(size=[batch, nef]).astype("float32")


@pytest.fixture
def cheap_init(monkeypatch):
    # Orthogonal init of the full-size kernels costs up to a minute (QR); the count does not
    # depend on the initializer.
    monkeypatch.setattr(discriminator_module, "kernel_initializer", keras.initializers.Zeros)


@pytest.mark.parametrize(
    "image_size, df_dim, expected",
    [
        (64, 64, 6_313_730),
        (128, 64, 19_424_002),
        (256, 64, 71_858_946),
        (64, 96, 13_304_450),
        (128, 96, 42_800_258),
        (256, 96, 160_774_274),
    ],
)
def test_published_parameter_counts(cheap_init, image_size, df_dim, expected):
    model = Discriminator(image_size=image_size, df_dim=df_dim, nef=256)
    assert _trainable_count(model) == expected


def test_published_init_and_count_d64_birds():
    model = Discriminator(image_size=64, df_dim=64, nef=256)
    assert _trainable_count(model) == 6_313_730
    kernel = np.asarray(model.get_layer("img_code_s16_2").kernel).reshape(-1, 128)
    # Orthogonal (gain 1): the 128 columns of the [4*4*64, 128] kernel are orthonormal.
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(128), atol=1e-4)
    assert model.get_layer("COND_DNET_jointConv_0").kernel.shape == (3, 3, 512 + 256, 512)
    assert model.get_layer("UNCOND_DNET_outlogits_0").use_bias
    assert not model.get_layer("img_code_s16_2").use_bias


@pytest.mark.parametrize("image_size", [64, 128, 256])
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes(image_size, batch):
    model = Discriminator(image_size=image_size, df_dim=4, nef=8)
    images = _images(batch, image_size)
    code = model.encode(images, training=False)
    assert code.shape == (batch, 4, 4, 32)
    uncond, cond = model(images, _sentence(batch, 8), training=True)
    assert uncond.shape == (batch,) and cond.shape == (batch,)
    assert uncond.dtype == "float32" and cond.dtype == "float32"
    uncond_only, none = model(images, training=False)
    assert none is None and uncond_only.shape == (batch,)


def test_condition_only_moves_the_conditional_logits():
    model = Discriminator(image_size=64, df_dim=4, nef=8)
    images = _images(2, 64)
    uncond_a, cond_a = model(images, _sentence(2, 8, seed=1), training=False)
    uncond_b, cond_b = model(images, _sentence(2, 8, seed=2), training=False)
    np.testing.assert_array_equal(np.asarray(uncond_a), np.asarray(uncond_b))
    assert np.abs(np.asarray(cond_a) - np.asarray(cond_b)).max() > 1e-6
    # Logits per sample: the second sample's change does not touch the first's.
    sentence = _sentence(2, 8, seed=1)
    changed = sentence.copy()
    changed[1] += 1.0
    _, cond_c = model(images, changed, training=False)
    np.testing.assert_allclose(np.asarray(cond_c)[0], np.asarray(cond_a)[0], rtol=1e-6)


def test_strided_conv_matches_pytorch_padding():
    model = Discriminator(image_size=64, df_dim=4, nef=8)
    pad = model.get_layer("img_code_s16_0_pad")
    conv = model.get_layer("img_code_s16_0")
    x = _images(1, 64)
    np.testing.assert_allclose(
        np.asarray(conv(pad(x))),
        torch_conv2d_reference(x, np.asarray(conv.kernel), stride=2, pad=1),
        atol=1e-4,
    )


@pytest.mark.parametrize("image_size", [64, 128])
def test_config_and_keras_file_round_trip(tmp_path, image_size):
    model = Discriminator(image_size=image_size, df_dim=4, nef=8, name="d")
    images, sentence = _images(2, image_size), _sentence(2, 8)
    expected = model(images, sentence, training=False)
    clone = Discriminator.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    path = tmp_path / "d.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Discriminator)
    for other in (clone, loaded):
        got = other(images, sentence, training=False)
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_gives_float32_logits(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = Discriminator(image_size=64, df_dim=4, nef=8)
        uncond, cond = model(_images(2, 64), _sentence(2, 8), training=True)
        assert uncond.dtype == "float32" and cond.dtype == "float32"
        assert np.isfinite(np.asarray(uncond)).all() and np.isfinite(np.asarray(cond)).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_inputs_raise_clear_errors():
    model = Discriminator(image_size=64, df_dim=4, nef=8)
    with pytest.raises(ValueError, match="images"):
        model(_images(1, 128))
    with pytest.raises(ValueError, match="images"):
        model(np.zeros([64, 64, 3], "float32"))
    with pytest.raises(ValueError, match="images"):
        model(np.zeros([1, 64, 64, 1], "float32"))
    with pytest.raises(ValueError, match="sentence"):
        model(_images(1, 64), np.zeros([1, 9], "float32"))
    with pytest.raises(ValueError, match="sentence"):
        model(_images(1, 64), np.zeros([8], "float32"))
    with pytest.raises(ValueError, match="image_size"):
        Discriminator(image_size=32)
