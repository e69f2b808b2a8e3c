"""pytorch-fid's FID Inception-v3 as a Keras network: FID (and KID) as the field reports them.

DF-GAN, GALIP and most text-to-image papers since report FID computed with `pytorch-fid`
(Seitzer, https://github.com/mseitzer/pytorch-fid), whose network is the TensorFlow 1
Inception graph of the original FID code (`inception-2015-12-05`), ported to PyTorch. It
differs from Keras' ImageNet `InceptionV3` (our default backend) in its weights (1008 classes)
and in one block: the branch pool of Mixed_7c is a 3x3 max pool where the other Inception
blocks average. Its three other FID patches (average pools that do not count the padding, in
Mixed_5b-d, 6b-e and 7b) are what Keras' "same" average pools already do, so the network
here is `keras.applications.InceptionV3` with that one pool swapped.

Preprocessing is pytorch-fid's: images in [0, 1] (uint8 / 255, what its `ToTensor` of a PNG
gives), resized bilinearly to 299x299 without antialiasing (`F.interpolate(...,
align_corners=False)`, which `tf.image.resize` matches), then scaled to [-1, 1]. The features
are the 2048-d average pool (its default `--dims 2048`), in float64; statistics and the
Frechet distance are computed as `inception.StreamingStatistics` / `frechet_distance` do
(`np.cov`'s N - 1 normalisation, as pytorch-fid). The same weights give a 1008-way softmax
(the `fc` layer of the ported graph), so the Inception Score can be read from it too.

The weights are pytorch-fid's published file, downloaded by the user once:

    wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

Reading a `.pth` needs PyTorch (`mirrorgan_tf.convert.torch.load_state_dict`, tensors only,
no code from the file runs); `FIDInception.save_weights` writes a `.weights.h5` that later
loads without it.
"""

from __future__ import annotations

import os

import keras

from mirrorgan_tf.evaluation.inception import (
    INCEPTION_SIZE,
    InceptionClassifier,
    _float32_policy,
    _with_pool_features,
)

PYTORCH_FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
FID_CLASSES = 1008  # the TF1 graph's classifier (1000 ImageNet classes + 8 unused)
# Keras' InceptionV3 average-pools a branch in each of these nine blocks, in creation order.
_AVERAGE_POOL_BLOCKS = (
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7b", "Mixed_7c",
)


def build_fid_inception_network() -> keras.Model:
    """The FID Inception-v3 graph with random weights: images in [-1, 1] at 299x299 in.

    Returns:
        A functional model mapping `[B, 299, 299, 3]` to `(pool features [B, 2048],
        softmax [B, 1008])`.

    Example:
    >>> network = build_fid_inception_network()
    >>> [tuple(o.shape) for o in network.outputs]
    [(None, 2048), (None, 1008)]
    """
    from mirrorgan_tf.convert.layouts import _auto_name_order

    with _float32_policy():
        base = keras.applications.InceptionV3(
            include_top=True, weights=None, classes=FID_CLASSES,
            input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3),
        )
        pools = sorted(
            (x for x in base.layers if isinstance(x, keras.layers.AveragePooling2D)),
            key=_auto_name_order,
        )
        if len(pools) != len(_AVERAGE_POOL_BLOCKS):
            raise AssertionError(f"expected 9 average pools in InceptionV3, found {len(pools)}")
        mixed_7c_pool = pools[-1]

        def clone(layer):
            config = layer.get_config()
            if layer is mixed_7c_pool:
                # pytorch-fid's FIDInceptionE_2: F.max_pool2d(x, 3, stride=1, padding=1).
                return keras.layers.MaxPooling2D(
                    (3, 3), strides=(1, 1), padding="same", name=config["name"]
                )
            return layer.__class__.from_config(config)

        network = keras.models.clone_model(base, clone_function=clone)
        return _with_pool_features(network)


def _entries(network: keras.Model) -> list:
    from mirrorgan_tf.convert import layouts

    entries = []
    for prefix, (conv, bn) in zip(
        layouts.INCEPTION_V3_CONVS, layouts.inception_layers(network), strict=True
    ):
        entries += layouts.folded_conv_bn_entries(prefix, conv, bn)
    dense = [x for x in network.layers if isinstance(x, keras.layers.Dense)]
    return entries + layouts.dense_entries("fc", dense[-1])


def load_pytorch_fid_state(network: keras.Model, state_dict: dict, source: str) -> None:
    """Fills `build_fid_inception_network()` from pytorch-fid's state_dict (numpy arrays).

    Every tensor must be there with its shape; BatchNorm gammas are folded into the kernels
    (Keras' Inception BatchNorms have no scale), exactly.

    Args:
        network: from `build_fid_inception_network`.
        state_dict: `{key: array}` of pytorch-fid's `fid_inception_v3()` (`Conv2d_1a_3x3.conv.
            weight`, ..., `fc.weight`, `fc.bias`).
        source: the file's name, for the messages.

    Example:
    >>> from mirrorgan_tf.convert.torch import load_state_dict
    >>> state = load_state_dict("pt_inception-2015-12-05-6726825d.pth")  # doctest: +SKIP
    >>> load_pytorch_fid_state(build_fid_inception_network(), state, "pt.pth")  # doctest: +SKIP
    """
    from mirrorgan_tf.convert import layouts

    result = layouts.match(_entries(network), state_dict, source, "FID Inception")
    problems = layouts.describe(result, source, "FID Inception")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if
                                           len(problems) > 5 else "")
        raise ValueError(f"{source} is not pytorch-fid's FID Inception weights: {shown}")
    layouts.assign(result.values)


class FIDInception(InceptionClassifier):
    """pytorch-fid's FID Inception-v3, for FID / KID (and an IS from its 1008-way softmax).

    Called like every `InceptionClassifier`: uint8 `[B, H, W, 3]` images (any size; resized
    bilinearly to 299x299) -> `(probabilities [B, 1008], pool features [B, 2048])` in float64,
    the features as `pytorch_fid.fid_score.get_activations` computes them.

    Args:
        network: from `build_fid_inception_network`, with weights.
        source: a description for reports.

    Example:
    >>> inception = FIDInception.from_weights(None)  # random weights: tests only
    >>> probabilities, features = inception(np.zeros([1, 64, 64, 3], np.uint8))
    >>> features.shape
    (1, 2048)
    """

    backend = "pytorch-fid"

    def __init__(self, network: keras.Model, source: str = "custom"):
        super().__init__(network, INCEPTION_SIZE, source)

    @classmethod
    def from_weights(cls, weights: str | None) -> FIDInception:
        """Builds the network and loads pytorch-fid's weights.

        Args:
            weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (needs PyTorch to
                read; see `PYTORCH_FID_WEIGHTS_URL`), a `.weights.h5` written by
                `save_weights`, or None (random weights: tests only).

        Example:
        >>> path = "pt_inception-2015-12-05-6726825d.pth"
        >>> inception = FIDInception.from_weights(path)  # doctest: +SKIP
        """
        network = build_fid_inception_network()
        if weights is None:
            return cls(network, "pytorch-fid (random weights)")
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"No FID Inception weights file {weights!r}; download pytorch-fid's with "
                f"`wget {PYTORCH_FID_WEIGHTS_URL}`."
            )
        if weights.endswith(".weights.h5"):
            network.load_weights(weights)
        elif weights.endswith((".pth", ".pt")):
            from mirrorgan_tf.convert.torch import load_state_dict

            load_pytorch_fid_state(network, load_state_dict(weights), os.path.basename(weights))
        else:
            raise ValueError(
                f"pytorch-fid Inception weights are a .pth file (or a .weights.h5 written by "
                f"FIDInception.save_weights); got {weights!r}."
            )
        return cls(network, f"pytorch-fid {weights}")

    def save_weights(self, path: str) -> str:
        """Writes the network's weights as `.weights.h5`, which `from_weights` reads without torch.

        Args:
            path: a file name ending in `.weights.h5`.

        Example:
        >>> inception = FIDInception.from_weights("pt_inception.pth")  # doctest: +SKIP
        >>> inception.save_weights("fid.weights.h5")  # doctest: +SKIP
        """
        self.network.save_weights(path)
        return path
