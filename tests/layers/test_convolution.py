"""SmallMapConv2D against keras.layers.Conv2D with the same weights: values and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.layers import SmallMapConv2D
from mirrorgan_tf.layers.convolution import SMALL_MAP_PIXELS


def _pair(input_shape, **kwargs):
    ours, reference = SmallMapConv2D(**kwargs), keras.layers.Conv2D(**kwargs)
    ours.build(input_shape)
    reference.build(input_shape)
    rng = np.random.default_rng(0)
    reference.set_weights([rng.normal(size=w.shape).astype("float32") for w in ours.weights])
    ours.set_weights(reference.get_weights())
    return ours, reference


# The discriminator's convolutions: 4x4 stride 2 "valid" (after explicit padding), 3x3 "same"
# on the 4x4 code, the 4x4 stride 4 logit heads with bias; a 16x16 output takes Conv2D's path.
@pytest.mark.parametrize(
    "input_shape, kwargs",
    [
        ((2, 10, 10, 6), dict(filters=5, kernel_size=4, strides=2, use_bias=False)),
        ((2, 4, 4, 6), dict(filters=5, kernel_size=3, padding="same", use_bias=False)),
        ((2, 4, 4, 6), dict(filters=1, kernel_size=4, strides=4, use_bias=True)),
        ((2, 5, 7, 3), dict(filters=4, kernel_size=3, padding="same", use_bias=True)),
        ((2, 34, 34, 3), dict(filters=4, kernel_size=4, strides=2, use_bias=False)),
    ],
)
def test_same_values_and_gradients_as_conv2d(input_shape, kwargs):
    ours, reference = _pair(input_shape, **kwargs)
    x = tf.constant(np.random.default_rng(1).normal(size=input_shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours, y_ref = ours(x), reference(x)
        loss_ours, loss_ref = tf.reduce_sum(y_ours**2), tf.reduce_sum(y_ref**2)
    assert y_ours.shape == y_ref.shape
    np.testing.assert_allclose(y_ours, y_ref, rtol=1e-5, atol=1e-4)
    grads_ours = tape.gradient(loss_ours, [x, *ours.trainable_weights])
    grads_ref = tape.gradient(loss_ref, [x, *reference.trainable_weights])
    for a, b in zip(grads_ours, grads_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_small_maps_run_as_a_matrix_product_and_large_ones_as_a_convolution():
    def op_types(conv, shape):
        fn = tf.function(conv).get_concrete_function(tf.TensorSpec(shape, tf.float32))
        return {op.type for op in fn.graph.get_operations()}

    small = (1, 2 * int(np.sqrt(SMALL_MAP_PIXELS)) + 2, 2 * int(np.sqrt(SMALL_MAP_PIXELS)) + 2, 3)
    conv, _ = _pair(small, filters=4, kernel_size=4, strides=2)
    assert "ExtractImagePatches" in op_types(conv, small)
    assert "Conv2D" not in op_types(conv, small)
    large = (1, 2 * small[1], 2 * small[2], 3)
    assert "Conv2D" in op_types(conv, large)


def test_an_unknown_channel_count_when_traced():
    # Under tf.distribute the discriminator's concatenated code is traced as [B, 4, 4, None].
    ours, reference = _pair((2, 4, 4, 6), filters=5, kernel_size=3, padding="same")
    traced = tf.function(ours).get_concrete_function(tf.TensorSpec([2, 4, 4, None]))
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 6)).astype("float32")
    np.testing.assert_allclose(traced(tf.constant(x)), reference(x), rtol=1e-5, atol=1e-4)


def test_bfloat16_policy():
    ours, reference = _pair((2, 4, 4, 8), filters=6, kernel_size=3, padding="same",
                            dtype="mixed_bfloat16")
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 8)).astype("float32")
    y = ours(x)
    assert y.dtype == tf.bfloat16
    np.testing.assert_allclose(
        tf.cast(y, tf.float32), tf.cast(reference(x), tf.float32), rtol=0.05, atol=0.1
    )
