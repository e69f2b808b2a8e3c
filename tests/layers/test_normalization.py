"""The fused-kernel BatchNormalization against Keras' own layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.layers.normalization import BatchNormalization


def _pair(shape, rng):
    reference = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)
    fused = BatchNormalization(epsilon=1e-5, momentum=0.9)
    reference.build(shape)
    fused.build(shape)
    weights = [rng.normal(1, 0.2, w.shape).astype("float32") for w in reference.get_weights()]
    weights[3] = np.abs(weights[3])
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused


def test_training_outputs_gradients_and_moving_mean_equal_keras():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, size=[4, 6, 5, 3]).astype("float32"))
    reference, fused = _pair(x.shape, rng)
    probe = tf.constant(rng.normal(size=x.shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ref_out = reference(x, training=True)
        fused_out = fused(x, training=True)
        ref_loss = tf.reduce_sum(ref_out * probe)
        fused_loss = tf.reduce_sum(fused_out * probe)
    np.testing.assert_allclose(fused_out, ref_out, atol=1e-5)
    ref_grads = tape.gradient(ref_loss, [x, reference.gamma, reference.beta])
    fused_grads = tape.gradient(fused_loss, [x, fused.gamma, fused.beta])
    for a, b in zip(fused_grads, ref_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, reference.moving_mean, atol=1e-6)


def test_moving_variance_uses_the_unbiased_batch_variance_like_pytorch():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 2.0, size=[2, 3, 3, 4]).astype("float32")
    _, fused = _pair(x.shape, rng)
    before = np.asarray(fused.moving_variance)
    fused(x, training=True)
    unbiased = x.reshape(-1, 4).var(axis=0, ddof=1)
    np.testing.assert_allclose(fused.moving_variance, 0.9 * before + 0.1 * unbiased, rtol=1e-5)


def test_inference_and_non_4d_inputs_use_the_keras_path():
    rng = np.random.default_rng(2)
    x = rng.normal(size=[5, 7]).astype("float32")
    reference, fused = _pair(x.shape, rng)
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, atol=1e-6)
    images = rng.normal(size=[2, 4, 4, 7]).astype("float32")
    reference, fused = _pair(images.shape, rng)
    np.testing.assert_allclose(fused(images, training=False), reference(images, training=False),
                               atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_the_compute_dtype(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = BatchNormalization()
        out = layer(np.ones([2, 3, 3, 4], "float32"), training=True)
        assert out.dtype == layer.compute_dtype
        assert layer.moving_mean.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_config_round_trip():
    layer = BatchNormalization(momentum=0.8, epsilon=1e-3, name="bn")
    clone = BatchNormalization.from_config(layer.get_config())
    assert (clone.momentum, clone.epsilon, clone.name) == (0.8, 1e-3, "bn")
    assert isinstance(clone, keras.layers.BatchNormalization)


@pytest.mark.parametrize("scale, center", [(True, True), (False, False)])
def test_fold_into_a_kernel_equals_convolution_then_inference_batch_norm(scale, center):
    rng = np.random.default_rng(3)
    bn = BatchNormalization(epsilon=1e-5, scale=scale, center=center)
    bn.build((None, 6, 6, 4))
    bn.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") if "variance" in w.path
                    else rng.normal(size=w.shape).astype("float32") for w in bn.weights])
    x = rng.normal(size=[2, 6, 6, 3]).astype("float32")
    kernel = rng.normal(size=[3, 3, 3, 4]).astype("float32")
    expected = bn(tf.nn.conv2d(x, kernel, 1, "SAME"), training=False)
    scaled, shift = bn.fold_into(kernel)
    folded = tf.nn.conv2d(x, scaled, 1, "SAME") + shift
    np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-5)
    # The folding reads the current weights: a changed statistic changes the result.
    bn.moving_mean.assign(bn.moving_mean + 1.0)
    assert not np.allclose(bn.fold_into(kernel)[1], shift)
