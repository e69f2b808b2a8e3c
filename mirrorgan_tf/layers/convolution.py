"""A Conv2D that runs on small output maps as one matrix product (the discriminators' tail)."""

from __future__ import annotations

import keras
import tensorflow as tf

# Output maps of at most this many pixels (8x8) run as patches x kernel. Measured on a
# 2-core AVX512 CPU, batch 4, forward+backward: birds' 256 px discriminator's 8 -> 4 px conv
# (1024 -> 2048 channels, 4x4 stride 2) 258 -> 119 ms, its 16 -> 8 px one 115 -> 77 ms, the
# 3x3 2048 -> 1024 conv at 4x4 128 -> 77 ms (bfloat16 126 -> 26 ms). On larger maps the
# convolution kernels win (at 16x16 output they are even).
SMALL_MAP_PIXELS = 64


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class SmallMapConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that computes small output maps as patches times the kernel.

    On an output map of at most 64 pixels (8x8) the input's patches are gathered with
    `tf.image.extract_patches` (same "valid"/"same" padding and strides as the convolution)
    and multiplied with the kernel flattened to `[kh * kw * Cin, Cout]` in one `matmul`.
    Same function and weights as `Conv2D` (up to float rounding); TensorFlow's CPU
    convolution kernels, above all their kernel gradient, are slow on maps this small with
    hundreds of channels (see `SMALL_MAP_PIXELS`). Larger maps, other data formats, dilation
    and groups run as `Conv2D`.

    Args:
        *args, **kwargs: those of `keras.layers.Conv2D`.

    Example:
    >>> conv = SmallMapConv2D(8, 4, strides=2, use_bias=False)
    >>> conv(np.zeros([2, 10, 10, 16], "float32")).shape
    TensorShape([2, 4, 4, 8])
    """

    def convolution_op(self, inputs, kernel):
        _, height, width, _ = self.compute_output_shape(inputs.shape)
        if (
            height is None
            or width is None
            or height * width > SMALL_MAP_PIXELS
            or self.data_format != "channels_last"
            or tuple(self.dilation_rate) != (1, 1)
            or self.groups != 1
        ):
            return super().convolution_op(inputs, kernel)
        rows, cols = self.kernel_size
        patches = tf.image.extract_patches(
            inputs,
            sizes=[1, rows, cols, 1],
            strides=[1, *self.strides, 1],
            rates=[1, 1, 1, 1],
            padding=self.padding.upper(),
        )
        # Patch depth is ordered (row, col, channel), as the kernel's [rows, cols, Cin]; its
        # size comes from the kernel (the input's channel axis may be unknown when traced).
        depth = rows * cols * kernel.shape[2]
        product = tf.matmul(
            tf.reshape(patches, [-1, depth]), tf.reshape(kernel, [depth, self.filters])
        )
        return tf.reshape(product, [-1, height, width, self.filters])
