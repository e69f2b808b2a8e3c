"""The DAMSM image encoder (AttnGAN's CNN_ENCODER): region and global image features."""

from __future__ import annotations

import keras
from keras import ops

from mirrorgan_tf.layers.initializers import kernel_initializer
from mirrorgan_tf.networks.backbones import (
    check_backbone,
    inception_v3_trunk,
    resize_for_backbone,
    small_cnn,
)
from mirrorgan_tf.validation import check_rank

_DEFAULT_INPUT_SIZE = {"inception_v3": 299, "small": None}


def check_image_batch(images, name: str = "images") -> None:
    """Checks that `images` is `[batch, H, W, 3]`; any size is accepted (it is resized).

    Args:
        images: tensor or array.
        name: the argument name used in the error message.

    Raises:
        ValueError: on a rank other than 4 or a channel count other than 3.

    Example:
    >>> check_image_batch(np.zeros([2, 64, 64, 3]))
    """
    check_rank(images, 4, name, "[batch, height, width, 3] images in [-1, 1]")
    if images.shape[-1] is not None and images.shape[-1] != 3:
        raise ValueError(
            f"`{name}` must be [batch, height, width, 3] images in [-1, 1]; "
            f"got {images.shape[-1]} channels."
        )


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class ImageEncoder(keras.Model):
    """DAMSM image encoder: word-level region features and a sentence-level global feature.

    As in AttnGAN (Xu et al., CVPR 2018, Sec. 3.3) and the published code's CNN_ENCODER: images
    are resized bilinearly to 299x299, Inception-v3 runs up to Mixed_6e (Keras "mixed7",
    17x17x768) -> conv1x1 (768 -> nef, no bias) gives the region features, and Mixed_7c
    ("mixed10", 8x8x2048) -> 8x8 average pool -> Dense(2048 -> nef) gives the global feature.
    Inputs are images in [-1, 1], which is Inception-v3's own input range: no conversion.
    As published, the Inception trunk is frozen (`trainable_backbone=False`): only the conv1x1
    and the Dense train (721,152 parameters for nef=256). The "small" backbone (for the
    `shapes` preset) takes the images at their own size unless `input_size` is given; it starts
    from random weights, so pass `trainable_backbone=True` when training with it.

    Args:
        nef: size of the region and global features (256).
        backbone: "inception_v3" or "small".
        weights: None or "imagenet" (Inception only; downloaded by Keras at run time).
        input_size: side the images are resized to; None means the backbone's default
            (299 for Inception, no resizing for "small").
        trainable_backbone: whether the trunk's weights train.
        **kwargs: passed to `keras.Model`.

    Example:
    >>> encoder = ImageEncoder(nef=8, backbone="small")
    >>> regions, sentence = encoder(np.zeros([2, 64, 64, 3], "float32"))
    >>> regions.shape, sentence.shape
    (TensorShape([2, 8, 8, 8]), TensorShape([2, 8]))
    """

    def __init__(
        self,
        nef: int = 256,
        backbone: str = "inception_v3",
        weights: str | None = None,
        input_size: int | None = None,
        trainable_backbone: bool = False,
        **kwargs,
    ):
        check_backbone(backbone, list(_DEFAULT_INPUT_SIZE))
        if weights is not None and backbone != "inception_v3":
            raise ValueError(f"`weights` is only available for 'inception_v3'; got {weights!r}.")
        if backbone == "inception_v3" and input_size not in (None, 299):
            raise ValueError(
                f"Inception-v3 takes 299x299 inputs (`input_size` 299 or None); got {input_size}."
            )
        super().__init__(**kwargs)

        # === Layers ===
        if backbone == "inception_v3":
            self.trunk = inception_v3_trunk(weights=weights)
        else:
            self.trunk = small_cnn()
        self.trunk.trainable = trainable_backbone
        region_channels = self.trunk.outputs[0].shape[-1]
        global_channels = self.trunk.outputs[1].shape[-1]
        # CNN_ENCODER.emb_features: conv1x1 (768 -> nef, no bias).
        self.emb_features = keras.layers.Conv2D(
            nef, 1, use_bias=False, kernel_initializer=kernel_initializer(), name="emb_features"
        )
        # CNN_ENCODER.emb_cnn_code: Linear(2048 -> nef).
        self.emb_cnn_code = keras.layers.Dense(
            nef, kernel_initializer=kernel_initializer(), name="emb_cnn_code"
        )

        # === Config ===
        self.nef = nef
        self.backbone = backbone
        self.weights_source = weights
        self.input_size = input_size
        self.trainable_backbone = trainable_backbone
        self.resolved_input_size = input_size or _DEFAULT_INPUT_SIZE[backbone]

        self.emb_features.build((None, None, None, region_channels))
        self.emb_cnn_code.build((None, global_channels))
        self.built = True

    def call(self, images, training: bool | None = None):
        """Returns `(regions [B, R, R, nef], global [B, nef])` for `[B, H, W, 3]` images.

        Args:
            images: images in [-1, 1], any size (resized to `input_size`).
            training: BatchNorm mode for the trainable parts (a frozen trunk always runs in
                inference mode).
        """
        check_image_batch(images, "images")
        x = ops.cast(images, self.compute_dtype)
        # Inception: nn.Upsample(size=(299, 299), mode="bilinear") in the published code.
        x = resize_for_backbone(x, self.resolved_input_size, self.backbone)
        region_map, global_map = self.trunk(x, training=training)
        regions = self.emb_features(region_map)
        if len(global_map.shape) == 4:
            # F.avg_pool2d(kernel_size=8) on Mixed_7c's 8x8 map = a global average.
            global_map = ops.mean(global_map, axis=(1, 2))
        return regions, self.emb_cnn_code(global_map)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            nef=self.nef,
            backbone=self.backbone,
            # The config describes the architecture; the weights travel with the saved model.
            # Recording "imagenet" here would make every `load_model` download the ImageNet
            # file (and fail offline) only to overwrite it with the saved weights.
            weights=None,
            input_size=self.input_size,
            trainable_backbone=self.trainable_backbone,
        )
        return config
