"""Tests for the CNN trunks: torchvision-layout ResNet-152, Inception-v3 trunk, small CNN."""

import keras
import numpy as np
import pytest

from mirrorgan_tf.networks.backbones import (
    check_backbone,
    inception_v3_trunk,
    resnet152_torchvision,
    small_cnn,
)


def _trainable_count(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def torch_conv2d_reference(x, kernel, stride, pad):
    """PyTorch Conv2d semantics (symmetric zero padding) in numpy, NHWC / HWIO."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]), np.float64)
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out


def _expected_torchvision_modules(blocks):
    names = {"conv1", "bn1"}
    for stage, count in enumerate(blocks):
        for index in range(count):
            prefix = f"layer{stage + 1}_{index}"
            names |= {f"{prefix}_conv{k}" for k in (1, 2, 3)}
            names |= {f"{prefix}_bn{k}" for k in (1, 2, 3)}
            if index == 0:
                names |= {f"{prefix}_downsample_0", f"{prefix}_downsample_1"}
    return names


def test_resnet152_parameter_count_and_torchvision_names():
    model = resnet152_torchvision()
    # torchvision resnet152: 60,192,808 parameters minus fc (2048 * 1000 + 1000).
    assert _trainable_count(model) == 58_143_808
    with_weights = {layer.name for layer in model.layers if layer.weights}
    assert with_weights == _expected_torchvision_modules((3, 8, 36, 3))
    assert model.output.shape == (None, 2048)
    # Stride on the 3x3 conv (torchvision v1.5), not on the first 1x1.
    assert model.get_layer("layer2_0_conv1").strides == (1, 1)
    assert model.get_layer("layer2_0_conv2").strides == (2, 2)
    assert model.get_layer("layer2_0_downsample_0").strides == (2, 2)
    assert model.get_layer("layer1_0_conv1").kernel.shape == (1, 1, 64, 64)
    assert model.get_layer("layer4_2_conv3").kernel.shape == (1, 1, 512, 2048)
    assert not any(getattr(layer, "use_bias", False) for layer in model.layers)
    assert all(
        layer.epsilon == 1e-5
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_tiny_resnet_spatial_sizes_match_torchvision():
    model = resnet152_torchvision(blocks=(1, 1, 1, 1), width=4)
    probe = keras.Model(
        model.input, [model.get_layer("maxpool").output, model.get_layer("layer4_0_out").output]
    )
    pooled, last = probe(np.zeros([1, 224, 224, 3], "float32"))
    assert pooled.shape == (1, 56, 56, 4)
    assert last.shape == (1, 7, 7, 128)
    assert model(np.zeros([3, 64, 64, 3], "float32")).shape == (3, 128)


@pytest.mark.parametrize("size", [9, 10])
def test_strided_conv_padding_is_symmetric_like_pytorch(size):
    model = resnet152_torchvision(blocks=(1, 1, 1, 1), width=4)
    pad = model.get_layer("layer2_0_conv2_pad")
    conv = model.get_layer("layer2_0_conv2")
    x = np.random.default_rng(0).normal(size=(2, size, size, 8)).astype("float32")
    got = np.asarray(conv(pad(x)))
    want = torch_conv2d_reference(x, np.asarray(conv.kernel), stride=2, pad=1)
    np.testing.assert_allclose(got, want, atol=1e-4)
    stem_pad = model.get_layer("conv1_pad")
    stem = model.get_layer("conv1")
    x3 = x[..., :3]
    np.testing.assert_allclose(
        np.asarray(stem(stem_pad(x3))),
        torch_conv2d_reference(x3, np.asarray(stem.kernel), stride=2, pad=3),
        atol=1e-4,
    )


def test_inception_v3_trunk_outputs_without_download(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("weights=None must not download")

    monkeypatch.setattr(keras.utils, "get_file", no_download)
    trunk = inception_v3_trunk(weights=None)
    assert [tuple(o.shape) for o in trunk.outputs] == [(None, 17, 17, 768), (None, 8, 8, 2048)]
    with pytest.raises(ValueError, match="weights"):
        inception_v3_trunk(weights="places365")


def test_small_cnn_region_and_global_outputs():
    trunk = small_cnn(width=8)
    regions, pooled = trunk(np.random.uniform(-1, 1, [2, 64, 64, 3]).astype("float32"))
    assert regions.shape == (2, 8, 8, 32)
    assert pooled.shape == (2, 64)
    assert np.isfinite(np.asarray(pooled)).all()


def test_check_backbone_names_the_choices():
    check_backbone("small", ["resnet152", "small"])
    with pytest.raises(ValueError, match="resnet152"):
        check_backbone("vgg", ["resnet152", "small"])


def test_small_backbone_resize_sends_gradients_to_every_pixel():
    import tensorflow as tf

    from mirrorgan_tf.networks.backbones import resize_for_backbone

    images = tf.constant(np.random.default_rng(0).normal(size=[1, 256, 256, 3]), tf.float32)
    for backbone, expected_fraction in (("small", 1.0), ("resnet152", 0.25)):
        with tf.GradientTape() as tape:
            tape.watch(images)
            out = resize_for_backbone(images, 64, backbone)
            total = tf.reduce_sum(out)
        assert out.shape == (1, 64, 64, 3)
        touched = np.mean(np.asarray(tape.gradient(total, images)) != 0)
        assert abs(touched - expected_fraction) < 0.01, backbone
    assert resize_for_backbone(images, None, "small") is images


@pytest.mark.parametrize("factor", [2, 4])
def test_antialiased_downscale_is_tensorflows_antialiased_resize(factor):
    import tensorflow as tf

    from mirrorgan_tf.networks.backbones import antialiased_downscale

    images = tf.constant(np.random.default_rng(1).normal(size=[2, 64, 64, 3]), tf.float32)
    expected = tf.image.resize(images, [64 // factor] * 2, "bilinear", antialias=True)
    np.testing.assert_allclose(antialiased_downscale(images, factor), expected, atol=1e-5)
    with pytest.raises(ValueError, match="even"):
        antialiased_downscale(images, 3)


def test_small_backbone_resize_compiles_with_xla():
    # XLA has no kernel for ScaleAndTranslate (the antialiased resize): the small trunk's
    # resize from 256 px and to the same size must not need it.
    import tensorflow as tf

    from mirrorgan_tf.networks.backbones import resize_for_backbone

    for size in (256, 64):
        images = tf.constant(np.random.default_rng(2).normal(size=[1, size, size, 3]),
                             tf.float32)

        @tf.function(jit_compile=True)
        def resize_and_grad(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = tf.reduce_sum(resize_for_backbone(x, 64, "small") ** 2)
            return tape.gradient(total, x)

        assert resize_and_grad(images).shape == images.shape
    same = tf.zeros([1, 64, 64, 3])
    assert resize_for_backbone(same, 64, "small") is same
