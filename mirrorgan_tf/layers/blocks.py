"""The generator's up-sampling and residual blocks (published `upBlock` and `ResBlock`)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mirrorgan_tf.layers.glu import GLU
from mirrorgan_tf.layers.initializers import batch_norm, kernel_initializer


def conv3x3(filters: int, name: str | None = None, **kwargs) -> keras.layers.Conv2D:
    """3x3 convolution, stride 1, "same" padding, no bias: the published `conv3x3`.

    Args:
        filters: output channels.
        name: layer name.
        **kwargs: passed to `keras.layers.Conv2D` (e.g. `dtype`, `kernel_initializer`).

    Example:
    >>> conv3x3(8, name="conv").filters
    8
    """
    kwargs.setdefault("kernel_initializer", kernel_initializer())
    return keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name, **kwargs)


# Nearest x2 up-sampling repeats each input row twice, so output row 2i + a of a 3x3 "same"
# convolution only sees input rows i - 1 and i (a = 0) or i and i + 1 (a = 1): the kernel's
# taps (offsets -1, 0, +1) fold into two rows per phase. Same for columns.
_PHASE_TAPS = (((0,), (1, 2)), ((0, 1), (2,)))


def _fold(kernel, axis: int, phase: int):
    """The 3 taps of `kernel` along `axis` summed into the 2 taps of output phase `phase`."""
    # Slices, not tf.gather: gather would make the kernel's gradient IndexedSlices.
    def tap(i):
        return kernel[i] if axis == 0 else kernel[:, i]

    taps = [tf.add_n([tap(i) for i in group]) for group in _PHASE_TAPS[phase]]
    return tf.stack(taps, axis=axis)


def upsample_conv3x3(x, kernel):
    """`conv3x3_same(nearest_upsample_x2(x), kernel)`, computed on the low-resolution grid.

    Each of the four output phases (even/odd row, even/odd column) is a 2x2 "valid"
    convolution of the zero-padded input with taps of the 3x3 kernel summed together; the
    phases are interleaved with `depth_to_space`. Same function as up-sampling first (up to
    float rounding; zero padding of the up-sampled map is zero padding of the input), with
    4 instead of 9 multiply-adds per output value and no 4x larger intermediate map.
    DEVIATION from the published code in how, not what: it up-samples, then convolves.

    Args:
        x: `[B, H, W, Cin]` feature map.
        kernel: `[3, 3, Cin, Cout]` convolution kernel (a `Conv2D` layer's).

    Returns:
        `[B, 2H, 2W, Cout]`.

    Example:
    >>> upsample_conv3x3(tf.ones([1, 4, 4, 2]), tf.ones([3, 3, 2, 5])).shape
    TensorShape([1, 8, 8, 5])
    """
    kernel = tf.cast(kernel, x.dtype)
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    # Rows (cols) 0..H (0..W) of the padded map for phase 0, 1..H+1 for phase 1.
    rows = (padded[:, :-1], padded[:, 1:])
    phases = []
    for a in (0, 1):
        row_kernel = _fold(kernel, 0, a)
        for b in (0, 1):
            window = rows[a][:, :, :-1] if b == 0 else rows[a][:, :, 1:]
            phases.append(tf.nn.conv2d(window, _fold(row_kernel, 1, b), 1, "VALID"))
    # depth_to_space puts channel block a * 2 + b at output pixel (2i + a, 2j + b).
    return tf.nn.depth_to_space(tf.concat(phases, axis=-1), 2)


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class UpBlock(keras.layers.Layer):
    """Nearest x2 up-sampling, conv3x3 (no bias) to 2*out channels, BatchNorm, GLU.

    The published `upBlock(in_planes, out_planes)` (AttnGAN/MirrorGAN `model.py`); its
    Sequential indices are 0 upsample, 1 conv, 2 BN, 3 GLU, so the weights map as
    `upsample.1.weight -> conv`, `upsample.2.* -> bn`. The up-sampling and convolution run
    as one `upsample_conv3x3` (same result, 2.25x fewer FLOPs than convolving the up-sampled
    map); the weights are the 3x3 kernel of `conv`, as published.

    Args:
        out_channels: channels after the GLU.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    >>> UpBlock(4)(np.zeros([1, 4, 4, 8], "float32")).shape
    TensorShape([1, 8, 8, 4])
    """

    def __init__(self, out_channels: int, **kwargs):
        super().__init__(**kwargs)

        # === Layers ===
        # `conv` holds the published 3x3 kernel; `call` applies it with `upsample_conv3x3`.
        self.conv = conv3x3(2 * out_channels, name="conv")
        self.bn = batch_norm(name="bn")
        self.glu = GLU(name="glu")

        # === Config ===
        self.out_channels = out_channels

    def build(self, input_shape):
        batch, height, width, channels = input_shape
        up_shape = (
            batch,
            None if height is None else 2 * height,
            None if width is None else 2 * width,
            channels,
        )
        self.conv.build(up_shape)
        self.bn.build((*up_shape[:-1], 2 * self.out_channels))

    def call(self, x, training=None):
        x = upsample_conv3x3(x, self.conv.kernel)
        x = self.bn(x, training=training)
        return self.glu(x)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (
            batch,
            None if height is None else 2 * height,
            None if width is None else 2 * width,
            self.out_channels,
        )

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels)
        return config


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class ResidualBlock(keras.layers.Layer):
    """Residual block: conv3x3 C->2C, BN, GLU, conv3x3 C->C, BN, plus the input.

    The published `ResBlock(channel_num)`; Sequential indices 0 conv, 1 BN, 2 GLU, 3 conv, 4 BN
    map to `conv1`, `bn1`, `glu`, `conv2`, `bn2`. No activation after the sum, as published.

    Args:
        channels: input and output channels C.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    >>> ResidualBlock(8)(np.zeros([1, 4, 4, 8], "float32")).shape
    TensorShape([1, 4, 4, 8])
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)

        # === Layers ===
        self.conv1 = conv3x3(2 * channels, name="conv1")
        self.bn1 = batch_norm(name="bn1")
        self.glu = GLU(name="glu")
        self.conv2 = conv3x3(channels, name="conv2")
        self.bn2 = batch_norm(name="bn2")

        # === Config ===
        self.channels = channels

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.channels:
            raise ValueError(
                f"ResidualBlock({self.channels}) got {input_shape[-1]} input channels."
            )
        shape = (*input_shape[:-1], self.channels)
        self.conv1.build(shape)
        self.bn1.build((*shape[:-1], 2 * self.channels))
        self.conv2.build(shape)
        self.bn2.build(shape)

    def call(self, x, training=None):
        residual = x
        x = self.bn1(self.conv1(x), training=training)
        x = self.glu(x)
        x = self.bn2(self.conv2(x), training=training)
        return x + residual

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels)
        return config
