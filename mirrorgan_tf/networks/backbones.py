"""CNN trunks: torchvision-layout ResNet-152 (STREAM), Inception-v3 (DAMSM) and a small CNN.

Each function returns a functional `keras.Model`, built at construction, so that the networks
holding a trunk (`CaptionerEncoder`, `ImageEncoder`) have their weights as soon as they exist.
Backbone names used across the package: "inception_v3", "resnet152", "small".
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from mirrorgan_tf.layers.initializers import batch_norm
from mirrorgan_tf.layers.normalization import BatchNormalization

BACKBONES = ("inception_v3", "resnet152", "small")

# torchvision initialises its ResNet convolutions with kaiming_normal_(mode="fan_out", relu).
_RESNET_CONV_INIT = {"class_name": "VarianceScaling", "config": {
    "scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


def check_backbone(backbone: str, allowed: Sequence[str]) -> None:
    """Raises a ValueError naming the allowed backbones when `backbone` is not one of them.

    Args:
        backbone: the requested backbone name.
        allowed: the names the caller supports.

    Example:
    >>> check_backbone("small", ["resnet152", "small"])
    """
    if backbone not in allowed:
        raise ValueError(f"`backbone` must be one of {list(allowed)}; got {backbone!r}.")


def resize_for_backbone(images, size: int | None, backbone: str):
    """Resizes NHWC images bilinearly to `size` x `size` (None: unchanged) for `backbone`.

    The published trunks ("resnet152", "inception_v3") get plain bilinear resizing, as the
    published `F.interpolate` / `nn.Upsample` did. The "small" trunk gets an antialiased
    resize: it takes a 256x256 image at 64x64, and a plain bilinear 4x reduction reads only
    4 of every 16 pixels, so a generator trained through a frozen STREAM or DAMSM encoder
    would get caption gradients on a quarter of its pixels and could leave the rest
    unconstrained.

    Args:
        images: `[B, H, W, C]` images.
        size: output side, or None.
        backbone: the trunk's name (`BACKBONES`).

    Example:
    >>> resize_for_backbone(np.zeros([1, 256, 256, 3], "float32"), 64, "small").shape
    TensorShape([1, 64, 64, 3])
    """
    if size is None:
        return images
    if backbone != "small":
        return keras.ops.image.resize(images, (size, size), interpolation="bilinear")
    height, width = images.shape[1], images.shape[2]
    if height == width == size:
        return images  # an antialiased resize to the same size is the identity
    if height is not None and height == width and height % (2 * size) == 0:
        # XLA has no kernel for the antialiased resize (ScaleAndTranslate): the integer
        # reduction is the same triangle filter as a strided depthwise convolution.
        return antialiased_downscale(images, height // size)
    # The antialiased kernel's gradient (ScaleAndTranslateGrad) is float32 only: resize in
    # float32 under mixed precision and cast back.
    resized = keras.ops.image.resize(
        keras.ops.cast(images, "float32"), (size, size), interpolation="bilinear", antialias=True
    )
    return keras.ops.cast(resized, images.dtype)


def antialiased_downscale(images, factor: int):
    """`tf.image.resize(..., antialias=True)` by an integer factor, as convolutions.

    The antialiased bilinear resize filters with a triangle of half-width `factor` input
    pixels around each output pixel's centre and renormalises the weights that fall inside
    the image at the borders. Here that filter (the outer product of the 1-D triangle taps) is
    a strided depthwise convolution over the zero-padded image, divided by the same
    convolution of an all-ones image: the same values within float rounding (tested), with a
    gradient in every dtype and an XLA kernel.

    Args:
        images: `[B, H, W, C]` with H and W multiples of `factor`.
        factor: the even integer reduction (4 for 256 -> 64), or 1.

    Example:
    >>> antialiased_downscale(np.ones([1, 8, 8, 3], "float32"), 4).shape
    TensorShape([1, 2, 2, 3])
    """
    factor = int(factor)
    if factor == 1:
        return images
    if factor % 2:
        # An odd factor puts the output centres on input centres: another set of taps.
        raise ValueError(f"`factor` must be 1 or even; got {factor}.")
    # Input pixel i (centre i + 0.5) against output pixel j (centre factor * (j + 0.5)):
    # the taps i = factor * j - factor // 2 ... + 2 * factor - 1.
    offsets = np.arange(2 * factor) + 0.5 - factor
    taps = np.maximum(0.0, 1.0 - np.abs(offsets) / factor).astype("float32")
    pad = factor // 2
    dtype = images.dtype

    def filter_2d(x, channels):
        kernel = np.outer(taps, taps)[:, :, None, None] * np.ones([1, 1, channels, 1])
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        return tf.nn.depthwise_conv2d(
            x, tf.constant(kernel, x.dtype), [1, factor, factor, 1], "VALID"
        )

    # In float32 under mixed precision too, as the resize it replaces.
    x = tf.cast(images, "float32")
    filtered = filter_2d(x, x.shape[-1])
    norm = filter_2d(tf.ones_like(x[:1, :, :, :1]), 1)
    return tf.cast(filtered / norm, dtype)


def _torch_bn(name: str) -> keras.layers.BatchNormalization:
    # torchvision: BatchNorm2d(eps=1e-5, momentum=0.1 -> Keras 0.9), weight 1, bias 0.
    return BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)


def _torch_conv(x, filters: int, kernel: int, stride: int, name: str):
    """Conv2d(bias=False) with PyTorch's symmetric padding `kernel // 2`."""
    pad = kernel // 2
    if pad and stride > 1:
        # TF's "same" pads asymmetrically for strided convs; PyTorch pads both sides equally.
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        # Stride 1 with an odd kernel: "same" is exactly PyTorch's symmetric padding.
        padding = "same" if pad else "valid"
    return keras.layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, use_bias=False,
        kernel_initializer=keras.initializers.get(_RESNET_CONV_INIT), name=name,
    )(x)


def _bottleneck(x, planes: int, stride: int, downsample: bool, name: str):
    """torchvision Bottleneck (ResNet v1.5): 1x1 -> 3x3 (carries the stride) -> 1x1 (x4)."""
    shortcut = x
    y = _torch_conv(x, planes, 1, 1, f"{name}_conv1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(_torch_bn(f"{name}_bn1")(y))
    y = _torch_conv(y, planes, 3, stride, f"{name}_conv2")
    y = keras.layers.ReLU(name=f"{name}_relu2")(_torch_bn(f"{name}_bn2")(y))
    y = _torch_conv(y, planes * 4, 1, 1, f"{name}_conv3")
    y = _torch_bn(f"{name}_bn3")(y)
    if downsample:
        # torchvision `downsample` = Sequential(conv1x1 stride s, BN): keys `.downsample.0/1`.
        shortcut = _torch_conv(x, planes * 4, 1, stride, f"{name}_downsample_0")
        shortcut = _torch_bn(f"{name}_downsample_1")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet152_torchvision(
    blocks: Sequence[int] = (3, 8, 36, 3),
    width: int = 64,
    input_shape: tuple = (None, None, 3),
    name: str = "resnet152",
) -> keras.Model:
    """ResNet (bottleneck) trunk in torchvision's layout, without fc, ending in a global pool.

    Layer names follow the torchvision state_dict with "." replaced by "_": `conv1`, `bn1`,
    `layer1_0_conv1`, `layer1_0_bn1`, ..., `layer1_0_downsample_0`, `layer1_0_downsample_1`,
    so a converted checkpoint maps one to one. The stride sits on the 3x3 conv (v1.5), which is
    where torchvision puts it and Keras' own `ResNet152` (stride on the 1x1) does not: use this
    function, not `keras.applications.ResNet152`, for torchvision weights. No ImageNet weights
    are bundled; they come from converting a torchvision checkpoint.

    Args:
        blocks: bottleneck blocks per stage; (3, 8, 36, 3) is ResNet-152 (58,143,808 trainable
            parameters), (1, 1, 1, 1) a tiny version for tests.
        width: channels of the first stage (64 in ResNet); the output has `width * 32`.
        input_shape: NHWC input shape without the batch axis.
        name: model name.

    Returns:
        A model mapping `[B, H, W, 3]` (ImageNet-normalised) to `[B, width * 32]`.

    Example:
    >>> trunk = resnet152_torchvision(blocks=(1, 1, 1, 1), width=8)
    >>> trunk(np.zeros([1, 64, 64, 3], "float32")).shape
    TensorShape([1, 256])
    """
    inputs = keras.Input(input_shape, name="images")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(
        width, 7, strides=2, use_bias=False,
        kernel_initializer=keras.initializers.get(_RESNET_CONV_INIT), name="conv1",
    )(x)
    x = keras.layers.ReLU(name="relu")(_torch_bn("bn1")(x))
    # PyTorch pads max pooling with -inf; after the ReLU every value is >= 0, so zeros are exact.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    in_channels = width
    for stage, count in enumerate(blocks):
        planes = width * 2**stage
        for index in range(count):
            stride = 2 if (stage > 0 and index == 0) else 1
            downsample = index == 0 and (stride != 1 or in_channels != planes * 4)
            x = _bottleneck(x, planes, stride, downsample, f"layer{stage + 1}_{index}")
            in_channels = planes * 4
    outputs = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(inputs, outputs, name=name)


def inception_v3_trunk(
    weights: str | None = None, name: str = "inception_v3_trunk"
) -> keras.Model:
    """Inception-v3 trunk returning the Mixed_6e and Mixed_7c feature maps (DAMSM, AttnGAN).

    Built with `keras.applications.InceptionV3(include_top=False)`. Keras' "mixed7" is
    torchvision's Mixed_6e (17x17x768 at 299x299) and "mixed10" is Mixed_7c (8x8x2048).
    Inputs are images in [-1, 1], the range Inception-v3 was trained on (Keras'
    `inception_v3.preprocess_input` maps to it too), so no conversion is needed.
    Differences from torchvision's Inception-v3, relevant when converting AttnGAN's
    image_encoder: Keras' BatchNorms have no scale (fold torchvision's gamma into the conv
    kernel and moving mean), and Keras' "same" average pools exclude the padding from the
    count where torchvision's include it (borders differ slightly).

    Args:
        weights: None (random init, no download) or "imagenet" (downloaded by Keras at run time
            and cached under ~/.keras/models).
        name: model name.

    Returns:
        A model mapping `[B, 299, 299, 3]` to `(mixed7 [B, 17, 17, 768], mixed10 [B, 8, 8, 2048])`.

    Example:
    >>> trunk = inception_v3_trunk(weights=None)
    >>> [tuple(o.shape) for o in trunk.outputs]
    [(None, 17, 17, 768), (None, 8, 8, 2048)]
    """
    if weights not in (None, "imagenet"):
        raise ValueError(f"`weights` must be None or 'imagenet'; got {weights!r}.")
    base = keras.applications.InceptionV3(
        include_top=False, weights=weights, input_shape=(299, 299, 3)
    )
    outputs = [base.get_layer("mixed7").output, base.get_layer("mixed10").output]
    return keras.Model(base.inputs, outputs, name=name)


def small_cnn(
    width: int = 32, input_shape: tuple = (None, None, 3), name: str = "small_cnn"
) -> keras.Model:
    """A small CNN trunk for the `shapes` preset: four stride-2 conv blocks, trains on a CPU.

    Each block is conv3x3/2 (PyTorch padding 1, no bias) + BatchNorm + LeakyReLU(0.2), with
    `width`, 2, 4 and 8 times `width` channels. The third block's map (stride 8) is the region
    grid, the fourth block's map (stride 16) is average-pooled into the global feature, mirroring
    Inception's Mixed_6e / Mixed_7c split in the DAMSM image encoder.

    Args:
        width: channels of the first block.
        input_shape: NHWC input shape without the batch axis; images in [-1, 1].
        name: model name.

    Returns:
        A model mapping `[B, H, W, 3]` to `(regions [B, H/8, W/8, 4*width], global [B, 8*width])`.

    Example:
    >>> trunk = small_cnn(width=8)
    >>> [tuple(o.shape) for o in trunk(np.zeros([2, 64, 64, 3], "float32"))]
    [(2, 8, 8, 32), (2, 64)]
    """
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    maps = []
    for index, multiple in enumerate((1, 2, 4, 8)):
        x = keras.layers.ZeroPadding2D(1, name=f"block{index}_pad")(x)
        x = keras.layers.Conv2D(
            width * multiple, 3, strides=2, use_bias=False, name=f"block{index}_conv"
        )(x)
        x = batch_norm(f"block{index}_bn")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"block{index}_lrelu")(x)
        maps.append(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="avgpool")(maps[3])
    return keras.Model(inputs, [maps[2], pooled], name=name)
