"""Gated linear unit over the channel axis, as used throughout the published generator."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class GLU(keras.layers.Layer):
    """Gated linear unit: keeps the first half of the last axis, gated by sigmoid of the second.

    The published code's `GLU` module (`x[:, :nc] * sigmoid(x[:, nc:])` on NCHW or [B, C]
    tensors); here the channel axis is the last one (NHWC), so the halves are the same channels.
    The halves are taken with one split rather than two slices: the same values, but the
    gradient is one concatenation instead of two full-size zero-padded slice gradients and
    their sum (on CPU, forward+backward of a [4, 256, 256, 64] bfloat16 map: 120 -> 26 ms).

    Args:
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    >>> GLU()(np.ones([2, 4], "float32")).shape
    TensorShape([2, 2])
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, x):
        channels = x.shape[-1]
        if channels is None or channels % 2:
            raise ValueError(
                f"GLU needs an even, static channel count on the last axis; got shape {x.shape}."
            )
        value, gate = ops.split(x, 2, axis=-1)
        return value * ops.sigmoid(gate)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)
