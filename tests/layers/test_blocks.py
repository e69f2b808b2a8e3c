"""GLU, up/residual blocks and conditioning augmentation against NumPy restatements."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.layers import GLU, ConditioningAugmentation, ResidualBlock, UpBlock


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _bn_inference(x, bn):
    gamma, beta, mean, var = (np.asarray(w) for w in bn.get_weights())
    return (x - mean) / np.sqrt(var + bn.epsilon) * gamma + beta


def _conv3x3(x, kernel):
    """'same' 3x3 convolution, stride 1, NHWC, kernel [3, 3, in, out]."""
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), np.float64)
    for dy in range(3):
        for dx in range(3):
            patch = padded[:, dy : dy + x.shape[1], dx : dx + x.shape[2], :]
            out += patch @ kernel[dy, dx]
    return out


def _randomize_bn(bn, rng):
    bn.set_weights([rng.normal(1, 0.1, w.shape) if i != 3 else rng.uniform(0.5, 2, w.shape)
                    for i, w in enumerate(bn.get_weights())])


def _roundtrip_keras(model, inputs, tmp_path):
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    return loaded(inputs, training=False)


def test_glu_keeps_first_half_gated_by_second():
    x = np.random.default_rng(0).normal(size=[2, 3, 6]).astype("float32")
    y = GLU()(x)
    np.testing.assert_allclose(y, x[..., :3] * _sigmoid(x[..., 3:]), rtol=1e-6, atol=1e-6)


def test_glu_gradient_matches_the_analytic_one():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=[2, 4, 4, 6]).astype("float32"))
    weights = rng.normal(size=[2, 4, 4, 3]).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(GLU()(x) * weights)
    value, gate = x.numpy()[..., :3], _sigmoid(x.numpy()[..., 3:])
    expected = np.concatenate([weights * gate, weights * value * gate * (1 - gate)], axis=-1)
    np.testing.assert_allclose(tape.gradient(loss, x), expected, rtol=1e-5, atol=1e-6)


def test_glu_rejects_odd_channels():
    with pytest.raises(ValueError, match="even"):
        GLU()(np.zeros([1, 3], "float32"))


# Below 16 pixels the up-sampling convolution runs as published, from 16 up as a transposed
# convolution: both paths.
@pytest.mark.parametrize("size", [(4, 5), (16, 17)])
def test_up_block_matches_numpy(size):
    rng = np.random.default_rng(1)
    block = UpBlock(3)
    x = rng.normal(size=[2, *size, 4]).astype("float32")
    block.build(x.shape)
    _randomize_bn(block.bn, rng)
    y = np.asarray(block(x, training=False))
    up = x.repeat(2, axis=1).repeat(2, axis=2)
    z = _bn_inference(_conv3x3(up, np.asarray(block.conv.kernel)), block.bn)
    expected = z[..., :3] * _sigmoid(z[..., 3:])
    assert y.shape == (2, 2 * size[0], 2 * size[1], 3)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert block.conv.bias is None


def test_residual_block_matches_numpy():
    rng = np.random.default_rng(2)
    block = ResidualBlock(4)
    x = rng.normal(size=[1, 5, 5, 4]).astype("float32")
    block.build(x.shape)
    _randomize_bn(block.bn1, rng)
    _randomize_bn(block.bn2, rng)
    y = np.asarray(block(x, training=False))
    z = _bn_inference(_conv3x3(x, np.asarray(block.conv1.kernel)), block.bn1)
    z = z[..., :4] * _sigmoid(z[..., 4:])
    expected = _bn_inference(_conv3x3(z, np.asarray(block.conv2.kernel)), block.bn2) + x
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # conv C -> 2C and C -> C, no biases; BN gamma/beta trainable.
    assert block.count_params() == 9 * 4 * 8 + 9 * 4 * 4 + 2 * 8 + 2 * 4 + 2 * 8 + 2 * 4
    assert len(block.trainable_weights) == 6


def test_residual_block_rejects_wrong_channels():
    with pytest.raises(ValueError, match="channels"):
        ResidualBlock(4)(np.zeros([1, 4, 4, 6], "float32"))


def test_conditioning_augmentation_matches_formula():
    rng = np.random.default_rng(3)
    ca = ConditioningAugmentation(condition_dim=5, seed=7)
    sentence = rng.normal(size=[3, 16]).astype("float32")
    c_code, mu, logvar = (np.asarray(t) for t in ca(sentence))
    kernel, bias = (np.asarray(w) for w in ca.fc.get_weights())
    assert kernel.shape == (16, 20)
    x = sentence @ kernel + bias
    x = x[:, :10] * _sigmoid(x[:, 10:])
    np.testing.assert_allclose(mu, x[:, :5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logvar, x[:, 5:], rtol=1e-5, atol=1e-5)
    eps = (c_code - mu) / np.exp(0.5 * logvar)
    assert np.abs(eps).max() > 0.0  # sampled
    assert c_code.dtype == np.float32


def test_conditioning_augmentation_deterministic_gives_mu():
    ca = ConditioningAugmentation(condition_dim=4, seed=1)
    sentence = np.random.default_rng(4).normal(size=[2, 8]).astype("float32")
    c_code, mu, _ = ca(sentence, deterministic=True)
    np.testing.assert_array_equal(c_code, mu)


def test_conditioning_augmentation_same_seed_same_samples():
    sentence = np.random.default_rng(5).normal(size=[2, 8]).astype("float32")
    first = ConditioningAugmentation(condition_dim=4, seed=11)
    second = ConditioningAugmentation(condition_dim=4, seed=11)
    other = ConditioningAugmentation(condition_dim=4, seed=12)
    for layer in (first, second, other):
        layer.build(sentence.shape)
    second.fc.set_weights(first.fc.get_weights())
    other.fc.set_weights(first.fc.get_weights())
    a1, a2 = first(sentence)[0], first(sentence)[0]
    b1, b2 = second(sentence)[0], second(sentence)[0]
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.allclose(a1, a2)  # the generator advances
    assert not np.allclose(other(sentence)[0], a1)


def test_layer_configs_round_trip():
    for layer in (GLU(), UpBlock(6), ResidualBlock(5), ConditioningAugmentation(7, seed=3)):
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config
    assert UpBlock(6).get_config()["out_channels"] == 6
    assert ConditioningAugmentation(7, seed=3).get_config()["seed"] == 3


def test_blocks_save_and_load(tmp_path):
    residual, up = ResidualBlock(4), UpBlock(3)
    inputs = keras.Input([8, 8, 4])
    outputs = GLU()(up(residual(inputs))[..., :2])
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(6)
    for bn in (residual.bn1, residual.bn2, up.bn):
        _randomize_bn(bn, rng)  # moving statistics must be saved too
    x = rng.normal(size=[2, 8, 8, 4]).astype("float32")
    np.testing.assert_allclose(_roundtrip_keras(model, x, tmp_path), model(x, training=False),
                               rtol=1e-6, atol=1e-6)


def test_conditioning_augmentation_save_and_load(tmp_path):
    inputs = keras.Input([8])
    c_code, mu, logvar = ConditioningAugmentation(4, seed=2)(inputs)
    model = keras.Model(inputs, [c_code, mu, logvar])
    x = np.random.default_rng(7).normal(size=[2, 8]).astype("float32")
    loaded_out = _roundtrip_keras(model, x, tmp_path)
    out = model(x, training=False)
    # The seed generator state is saved too: the first sample after loading repeats.
    for a, b in zip(loaded_out, out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# Every form: published below 16 px, transposed from 16 px, four phases for TFLite.
@pytest.mark.parametrize("size, phases", [((3, 5), False), ((16, 18), False), ((3, 5), True)])
def test_upsample_conv3x3_gradients_equal_upsample_then_conv(size, phases):
    import contextlib

    import tensorflow as tf

    from mirrorgan_tf.layers.blocks import phase_upsampling, upsample_conv3x3

    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=[2, *size, 4]).astype("float32"))
    kernel = tf.Variable(rng.normal(size=[3, 3, 4, 6]).astype("float32"))
    weights = tf.constant(rng.normal(size=[2, 2 * size[0], 2 * size[1], 6]).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        with phase_upsampling() if phases else contextlib.nullcontext():
            fast = tf.reduce_sum(upsample_conv3x3(x, kernel) * weights)
        upsampled = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
        slow = tf.reduce_sum(tf.nn.conv2d(upsampled, kernel, 1, "SAME") * weights)
    np.testing.assert_allclose(fast, slow, rtol=1e-5)
    for a, b in zip(tape.gradient(fast, [x, kernel]), tape.gradient(slow, [x, kernel]),
                    strict=True):
        # Float rounding of sums over ~2,000 products of size ~1 (a wrong tap: errors ~10).
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
