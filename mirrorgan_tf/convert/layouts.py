"""Where each tensor of the published PyTorch checkpoints goes in the Keras networks.

Pure mapping tables and numpy transforms, no PyTorch: `mirrorgan_tf.convert.torch` reads the
checkpoints into `{key: numpy array}` and these functions say, for one Keras network, which
checkpoint tensors make each of its variables and how (see `shared/design/mirrorgan-reference.md`,
"Published checkpoints"). The Keras layer names follow the state_dict keys ("." -> "_") wherever
the network has them; the tables below are explicit where they do not.

Transforms (PyTorch -> Keras):
- Linear weight [out, in] -> Dense kernel [in, out]: transpose.
- Conv2d weight [out, in, kh, kw] -> Conv2D kernel [kh, kw, in, out]: transpose (2, 3, 1, 0).
- A 1x1 Conv2d applied to a word sequence [out, in, 1, 1] -> Dense kernel [in, out].
- BatchNorm weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance.
- LSTM: kernel = W_ih^T, recurrent kernel = W_hh^T (gate order i, f, g, o in both), and one
  Keras bias = b_ih + b_hh. GRU: PyTorch gates (r, z, n) -> Keras (z, r, h), and the Keras
  `reset_after` bias [2, 3u] = [b_ih; b_hh].
- Inception-v3 (Keras' BatchNorms have no scale): gamma is folded into the conv kernel and
  the moving mean, exactly: gamma * (conv(x) - m) / s + b = (conv_{gamma W}(x) - gamma m) / s + b.
- Vocabulary tables of a published checkpoint have V rows; the imported vocabulary appends
  "<unk>" at id V (`Vocabulary.from_attngan`), so they get one more row (see `UNK_EMBEDDING_NOTE`,
  `UNK_OUTPUT_NOTE`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

Shape = tuple[int, ...]

UNK_EMBEDDING_NOTE = (
    'the "<unk>" word embedding (id V; the published V-word vocabulary has no <unk>) is the mean '
    "of the checkpoint's rows 1..V-1 (every word but <end>/padding)"
)
UNK_OUTPUT_NOTE = (
    'the "<unk>" output unit (id V) has zero weights and the checkpoint\'s smallest bias: it '
    "scores like the least likely word, the logits of the V published words are unchanged, "
    "greedy decoding practically never picks it, and a teacher-forced loss on an <unk> target "
    "stays finite when fine-tuning"
)

# torchvision Inception-v3's BasicConv2d modules in state_dict order, which is also the order
# in which `keras.applications.InceptionV3` creates its conv2d_bn layers (checked by shape).
_INCEPTION_A = ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
                "branch3x3dbl_3", "branch_pool")
_INCEPTION_B = ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")
_INCEPTION_C = ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
                "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5",
                "branch_pool")
_INCEPTION_D = ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
                "branch7x7x3_4")
_INCEPTION_E = ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
                "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool")
INCEPTION_V3_CONVS: tuple[str, ...] = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    *(f"{block}.{branch}" for block in ("Mixed_5b", "Mixed_5c", "Mixed_5d")
      for branch in _INCEPTION_A),
    *(f"Mixed_6a.{branch}" for branch in _INCEPTION_B),
    *(f"{block}.{branch}" for block in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")
      for branch in _INCEPTION_C),
    *(f"Mixed_7a.{branch}" for branch in _INCEPTION_D),
    *(f"{block}.{branch}" for block in ("Mixed_7b", "Mixed_7c") for branch in _INCEPTION_E),
)  # fmt: skip

# Checkpoint keys that are bookkeeping, not weights.
IGNORED_SUFFIXES = ("num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One Keras variable and the checkpoint tensors it is made from.

    Args:
        variable: the Keras variable to fill.
        keys: the checkpoint keys it reads.
        shapes: the PyTorch shape each key must have.
        convert: arrays of `keys` (in order) -> the variable's value.

    Example:
    >>> dense = keras.layers.Dense(2); dense.build((None, 3))
    >>> entry = dense_entries("fc", dense)[0]
    >>> entry.keys, entry.shapes
    (('fc.weight',), ((2, 3),))
    """

    variable: keras.Variable
    keys: tuple[str, ...]
    shapes: tuple[Shape, ...]
    convert: Callable[..., np.ndarray]


# === Building blocks ===
def _shape(variable) -> Shape:
    return tuple(int(d) for d in variable.shape)


def _transpose(w: np.ndarray) -> np.ndarray:
    return w.T


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)


def _same(w: np.ndarray) -> np.ndarray:
    return w


def dense_entries(prefix: str, layer: keras.layers.Dense) -> list[Entry]:
    """nn.Linear `prefix.weight` [out, in] (+ `prefix.bias`) -> a Dense layer.

    Example:
    >>> dense = keras.layers.Dense(2); dense.build((None, 3))
    >>> [e.keys[0] for e in dense_entries("fc", dense)]
    ['fc.weight', 'fc.bias']
    """
    fan_in, units = _shape(layer.kernel)
    entries = [Entry(layer.kernel, (f"{prefix}.weight",), ((units, fan_in),), _transpose)]
    if layer.use_bias:
        entries.append(Entry(layer.bias, (f"{prefix}.bias",), ((units,),), _same))
    return entries


def conv1x1_as_dense_entries(prefix: str, layer: keras.layers.Dense) -> list[Entry]:
    """A 1x1 nn.Conv2d [out, in, 1, 1] applied to a sequence -> a Dense kernel [in, out].

    Example:
    >>> dense = keras.layers.Dense(2, use_bias=False); dense.build((None, 3))
    >>> conv1x1_as_dense_entries("att.conv_context", dense)[0].shapes
    ((2, 3, 1, 1),)
    """
    fan_in, units = _shape(layer.kernel)
    return [Entry(layer.kernel, (f"{prefix}.weight",), ((units, fan_in, 1, 1),),
                  lambda w: w[:, :, 0, 0].T)]


def conv_entries(prefix: str, layer: keras.layers.Conv2D) -> list[Entry]:
    """nn.Conv2d `prefix.weight` [out, in, kh, kw] (+ bias) -> a Conv2D layer.

    Example:
    >>> conv = keras.layers.Conv2D(4, 3); conv.build((None, 8, 8, 2))
    >>> conv_entries("conv", conv)[0].shapes
    ((4, 2, 3, 3),)
    """
    kh, kw, cin, cout = _shape(layer.kernel)
    entries = [Entry(layer.kernel, (f"{prefix}.weight",), ((cout, cin, kh, kw),), _conv_kernel)]
    if layer.use_bias:
        entries.append(Entry(layer.bias, (f"{prefix}.bias",), ((cout,),), _same))
    return entries


def batch_norm_entries(prefix: str, layer: keras.layers.BatchNormalization) -> list[Entry]:
    """nn.BatchNorm1d/2d `prefix.{weight,bias,running_mean,running_var}` -> BatchNormalization.

    Example:
    >>> bn = keras.layers.BatchNormalization(); bn.build((None, 4))
    >>> [e.keys[0] for e in batch_norm_entries("bn", bn)]
    ['bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var']
    """
    entries = []
    pairs = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
             ("moving_variance", "running_var"))
    for attribute, key in pairs:
        variable = getattr(layer, attribute, None)
        if variable is not None:
            entries.append(Entry(variable, (f"{prefix}.{key}",), (_shape(variable),), _same))
    return entries


def folded_conv_bn_entries(
    prefix: str, conv: keras.layers.Conv2D, bn: keras.layers.BatchNormalization
) -> list[Entry]:
    """torchvision BasicConv2d `prefix.conv` + `prefix.bn` -> Conv2D + scale-less BatchNorm.

    Keras' Inception-v3 BatchNorms have no gamma: it is folded into the kernel (per output
    channel) and the moving mean. Exact for any gamma, negative included.

    Example:
    >>> conv = keras.layers.Conv2D(4, 1, use_bias=False); conv.build((None, 8, 8, 2))
    >>> bn = keras.layers.BatchNormalization(scale=False); bn.build((None, 8, 8, 4))
    >>> len(folded_conv_bn_entries("Mixed_5b.branch1x1", conv, bn))
    3
    """
    kh, kw, cin, cout = _shape(conv.kernel)
    if conv.use_bias or getattr(bn, "gamma", None) is not None:
        raise ValueError(f"{conv.name}/{bn.name} are not Keras Inception-v3 conv2d_bn layers.")
    w, g = f"{prefix}.conv.weight", f"{prefix}.bn.weight"
    return [
        Entry(conv.kernel, (w, g), ((cout, cin, kh, kw), (cout,)),
              lambda weight, gamma: _conv_kernel(weight) * gamma),
        Entry(bn.beta, (f"{prefix}.bn.bias",), ((cout,),), _same),
        Entry(bn.moving_mean, (f"{prefix}.bn.running_mean", g), ((cout,), (cout,)),
              lambda mean, gamma: mean * gamma),
        Entry(bn.moving_variance, (f"{prefix}.bn.running_var",), ((cout,),), _same),
    ]


def _gru_gates(w: np.ndarray, axis: int) -> np.ndarray:
    """PyTorch GRU gate blocks (r, z, n) -> Keras (z, r, h) along `axis`."""
    r, z, n = np.split(w, 3, axis=axis)
    return np.concatenate([z, r, n], axis=axis)


def rnn_entries(prefix: str, layer, suffix: str = "") -> list[Entry]:
    """nn.LSTM/nn.GRU `prefix.{weight,bias}_{ih,hh}_l0{suffix}` -> a Keras LSTM/GRU layer.

    Args:
        prefix: the PyTorch module name, e.g. "rnn".
        layer: the Keras LSTM or GRU layer (one direction).
        suffix: "" for the forward direction, "_reverse" for the backward one.

    Example:
    >>> lstm = keras.layers.LSTM(4); lstm.build((None, None, 3))
    >>> [e.keys for e in rnn_entries("lstm", lstm)][2]
    ('lstm.bias_ih_l0', 'lstm.bias_hh_l0')
    """
    cell = layer.cell
    fan_in, gates_units = _shape(cell.kernel)
    units = _shape(cell.recurrent_kernel)[0]
    names = tuple(f"{prefix}.{kind}_l0{suffix}" for kind in
                  ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    if isinstance(layer, keras.layers.LSTM):
        return [
            Entry(cell.kernel, names[:1], ((gates_units, fan_in),), _transpose),
            Entry(cell.recurrent_kernel, names[1:2], ((gates_units, units),), _transpose),
            Entry(cell.bias, names[2:], ((gates_units,), (gates_units,)), lambda a, b: a + b),
        ]
    if isinstance(layer, keras.layers.GRU):
        if not cell.reset_after:
            raise ValueError("A PyTorch GRU converts to a Keras GRU with reset_after=True only.")
        return [
            Entry(cell.kernel, names[:1], ((gates_units, fan_in),),
                  lambda w: _gru_gates(w.T, axis=1)),
            Entry(cell.recurrent_kernel, names[1:2], ((gates_units, units),),
                  lambda w: _gru_gates(w.T, axis=1)),
            Entry(cell.bias, names[2:], ((gates_units,), (gates_units,)),
                  lambda a, b: _gru_gates(np.stack([a, b]), axis=1)),
        ]
    raise TypeError(f"Not an LSTM or GRU layer: {layer!r}")


def _unk_embedding(table: np.ndarray) -> np.ndarray:
    # The mean of every word but <end> (id 0, also the padding id): see UNK_EMBEDDING_NOTE.
    unk = table[1:].mean(axis=0, keepdims=True) if len(table) > 1 else table[:1]
    return np.concatenate([table, unk], axis=0)


def embedding_entries(prefix: str, layer: keras.layers.Embedding, unk_row: bool) -> list[Entry]:
    """nn.Embedding `prefix.weight` [V, E] -> an Embedding of V rows, or V + 1 with "<unk>".

    Args:
        prefix: the PyTorch module name.
        layer: the Keras Embedding.
        unk_row: the Keras table has one more row than the checkpoint's (UNK_EMBEDDING_NOTE).

    Example:
    >>> emb = keras.layers.Embedding(6, 3); emb.build((None, None))
    >>> embedding_entries("encoder", emb, unk_row=True)[0].shapes
    ((5, 3),)
    """
    rows, width = _shape(layer.embeddings)
    if unk_row:
        return [Entry(layer.embeddings, (f"{prefix}.weight",), ((rows - 1, width),),
                      _unk_embedding)]
    return [Entry(layer.embeddings, (f"{prefix}.weight",), ((rows, width),), _same)]


def vocabulary_dense_entries(prefix: str, layer: keras.layers.Dense, unk_row: bool) -> list[Entry]:
    """The decoder's nn.Linear(H, V) -> Dense(V or V + 1); UNK_OUTPUT_NOTE for the extra unit.

    Example:
    >>> dense = keras.layers.Dense(6); dense.build((None, 4))
    >>> [e.shapes for e in vocabulary_dense_entries("linear", dense, unk_row=True)]
    [((5, 4),), ((5,),)]
    """
    if not unk_row:
        return dense_entries(prefix, layer)
    fan_in, units = _shape(layer.kernel)
    return [
        Entry(layer.kernel, (f"{prefix}.weight",), ((units - 1, fan_in),),
              lambda w: np.concatenate([w.T, np.zeros((fan_in, 1), w.dtype)], axis=1)),
        Entry(layer.bias, (f"{prefix}.bias",), ((units - 1,),),
              lambda b: np.concatenate([b, b.min(keepdims=True)])),
    ]


def up_block_entries(prefix: str, block) -> list[Entry]:
    """The published upBlock (0 upsample, 1 conv, 2 BN, 3 GLU) -> `layers.UpBlock`."""
    return conv_entries(f"{prefix}.1", block.conv) + batch_norm_entries(f"{prefix}.2", block.bn)


def residual_block_entries(prefix: str, block) -> list[Entry]:
    """The published ResBlock `.block.{0,1,3,4}` -> `layers.ResidualBlock`."""
    return (conv_entries(f"{prefix}.block.0", block.conv1)
            + batch_norm_entries(f"{prefix}.block.1", block.bn1)
            + conv_entries(f"{prefix}.block.3", block.conv2)
            + batch_norm_entries(f"{prefix}.block.4", block.bn2))


# === Networks ===
def text_encoder_entries(model, unk_row: bool) -> list[Entry]:
    """RNN_ENCODER (`encoder.weight`, `rnn.*_l0`, `rnn.*_l0_reverse`) -> `TextEncoder`.

    Example:
    >>> from mirrorgan_tf.networks import TextEncoder
    >>> entries = text_encoder_entries(TextEncoder(6, 4, 8), unk_row=True)
    """
    return (embedding_entries("encoder", model.embedding, unk_row)
            + rnn_entries("rnn", model.rnn.forward_layer)
            + rnn_entries("rnn", model.rnn.backward_layer, suffix="_reverse"))


def generator_entries(model) -> list[Entry]:
    """MirrorGAN's G_NET (`ca_net`, `h_net{1,2,3}`, `img_net{1,2,3}`) -> `Generator`.

    Stage 1's Linear converts with a plain transpose (the Keras generator views the GLU output
    channel-major, as PyTorch does); see `Generator`.

    Example:
    >>> from mirrorgan_tf.networks import Generator
    >>> entries = generator_entries(Generator(gf_dim=4, z_dim=8, condition_dim=8, nef=16))
    """
    entries = dense_entries("ca_net.fc", model.ca_net.fc)
    entries += dense_entries("h_net1.fc.0", model.stage1_fc)
    entries += batch_norm_entries("h_net1.fc.1", model.stage1_bn)
    for index, block in enumerate(model.stage1_up, start=1):
        entries += up_block_entries(f"h_net1.upsample{index}", block)
    parts = zip(model.attention, model.fusion, model.residual, model.upsample, strict=True)
    for stage, (attention, fusion, residual, upsample) in enumerate(parts, start=2):
        prefix = f"h_net{stage}"
        entries += conv1x1_as_dense_entries(f"{prefix}.att.conv_context",
                                            attention.word_projection)
        entries += dense_entries(f"{prefix}.att.linear", attention.sentence_projection)
        entries += conv_entries(f"{prefix}.att.conv_sentence_vis", attention.sentence_vision)
        entries += conv_entries(f"{prefix}.conv", fusion)
        for index, block in enumerate(residual):
            entries += residual_block_entries(f"{prefix}.residual.{index}", block)
        entries += up_block_entries(f"{prefix}.upsample", upsample)
    for stage, head in enumerate(model.image_heads, start=1):
        entries += conv_entries(f"img_net{stage}.img.0", head)
    return entries


def mirrorgan_only_keys(num_stages: int) -> list[str]:
    """The generator tensors MirrorGAN adds to AttnGAN's: sentence attention and fusion conv.

    AttnGAN's NEXT_STAGE_G feeds cat[h, word context] straight into the residual blocks; MirrorGAN
    adds the sentence-level attention (`att.linear`, `att.conv_sentence_vis`) and the conv1x1
    fusing cat[h, word context, sentence context] (`conv`). Everything else is shared.

    Example:
    >>> mirrorgan_only_keys(2)
    ['h_net2.att.linear.weight', 'h_net2.att.linear.bias', 'h_net2.att.conv_sentence_vis.weight', 'h_net2.conv.weight']
    """  # noqa: E501
    keys = []
    for stage in range(2, num_stages + 1):
        keys += [f"h_net{stage}.att.linear.weight", f"h_net{stage}.att.linear.bias",
                 f"h_net{stage}.att.conv_sentence_vis.weight", f"h_net{stage}.conv.weight"]
    return keys


def discriminator_prefixes(image_size: int) -> list[tuple[str, str]]:
    """(PyTorch module, kind) of D_NET64/128/256 in state_dict order; kind "conv" or "bn".

    Example:
    >>> discriminator_prefixes(64)[:3]
    [('img_code_s16.0', 'conv'), ('img_code_s16.2', 'conv'), ('img_code_s16.3', 'bn')]
    """
    prefixes = [("img_code_s16.0", "conv")]
    for index in (2, 5, 8):
        prefixes += [(f"img_code_s16.{index}", "conv"), (f"img_code_s16.{index + 1}", "bn")]
    extra = {64: [], 128: ["img_code_s32", "img_code_s32_1"],
             256: ["img_code_s32", "img_code_s64", "img_code_s64_1", "img_code_s64_2"]}
    for name in extra[image_size]:
        prefixes += [(f"{name}.0", "conv"), (f"{name}.1", "bn")]
    prefixes += [("UNCOND_DNET.outlogits.0", "conv"), ("COND_DNET.jointConv.0", "conv"),
                 ("COND_DNET.jointConv.1", "bn"), ("COND_DNET.outlogits.0", "conv")]
    return prefixes


def discriminator_entries(model) -> list[Entry]:
    """D_NET64/128/256 -> `Discriminator` (Keras layer name = PyTorch module with "." -> "_").

    Example:
    >>> from mirrorgan_tf.networks import Discriminator
    >>> entries = discriminator_entries(Discriminator(64, df_dim=4, nef=8))
    """
    layers = {layer.name: layer for layer in
              [*model.encoder_layers, *model.cond_joint_layers, model.uncond_outlogits,
               model.cond_outlogits]}
    entries = []
    for prefix, kind in discriminator_prefixes(model.image_size):
        layer = layers[prefix.replace(".", "_")]
        entries += conv_entries(prefix, layer) if kind == "conv" else batch_norm_entries(
            prefix, layer)
    return entries


def discriminator_size(keys: Iterable[str]) -> int | None:
    """The image size (64, 128, 256) a D_NET state_dict is for, from its keys; None if unknown.

    Example:
    >>> discriminator_size(["img_code_s16.0.weight", "img_code_s32.0.weight"])
    128
    """
    keys = set(keys)
    if not any(k.startswith("img_code_s16.") for k in keys):
        return None
    if any(k.startswith("img_code_s64") for k in keys):
        return 256
    if any(k.startswith("img_code_s32") for k in keys):
        return 128
    return 64


def _auto_name_order(layer) -> int:
    # Keras auto-names `conv2d`, `conv2d_1`, ... in creation order (a per-session counter, so
    # the numbers may be offset, never reordered).
    match = re.search(r"_(\d+)$", layer.name)
    return int(match.group(1)) if match else 0


def inception_layers(trunk: keras.Model) -> list[tuple[keras.layers.Layer, keras.layers.Layer]]:
    """The (Conv2D, BatchNormalization) pairs of a Keras InceptionV3 trunk, in creation order.

    Example:
    >>> from mirrorgan_tf.networks.backbones import inception_v3_trunk
    >>> len(inception_layers(inception_v3_trunk()))
    94
    """
    convs = sorted((x for x in trunk.layers if isinstance(x, keras.layers.Conv2D)),
                   key=_auto_name_order)
    norms = sorted((x for x in trunk.layers if isinstance(x, keras.layers.BatchNormalization)),
                   key=_auto_name_order)
    if len(convs) != len(INCEPTION_V3_CONVS) or len(norms) != len(convs):
        raise ValueError(
            f"Expected a Keras InceptionV3 trunk with {len(INCEPTION_V3_CONVS)} conv + BN "
            f"layers; got {len(convs)} convs and {len(norms)} BatchNorms."
        )
    return list(zip(convs, norms, strict=True))


def image_encoder_entries(model) -> list[Entry]:
    """AttnGAN's CNN_ENCODER (torchvision Inception-v3 trunk, `emb_features`, `emb_cnn_code`).

    The trunk maps by order (Keras auto-names its layers): see INCEPTION_V3_CONVS.

    Example:
    >>> from mirrorgan_tf.networks import ImageEncoder
    >>> entries = image_encoder_entries(ImageEncoder(nef=8))
    """
    if model.backbone != "inception_v3":
        raise ValueError(
            f"Only the Inception-v3 image encoder has a published layout; this one has the "
            f"{model.backbone!r} backbone."
        )
    entries = []
    for prefix, (conv, bn) in zip(INCEPTION_V3_CONVS, inception_layers(model.trunk), strict=True):
        entries += folded_conv_bn_entries(prefix, conv, bn)
    entries += conv_entries("emb_features", model.emb_features)
    entries += dense_entries("emb_cnn_code", model.emb_cnn_code)
    return entries


def _resnet_modules(trunk: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """(torchvision module name, Keras layer) of `backbones.resnet152_torchvision`."""
    pairs = []
    for layer in trunk.layers:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.BatchNormalization):
            continue
        # layer1_0_conv1 -> layer1.0.conv1; layer1_0_downsample_0 -> layer1.0.downsample.0
        match = re.fullmatch(r"layer(\d+)_(\d+)_(\w+?)(?:_(\d))?", layer.name)
        if match:
            stage, index, part, sub = match.groups()
            name = f"layer{stage}.{index}.{part}" + (f".{sub}" if sub else "")
        else:
            name = layer.name
        pairs.append((name, layer))
    return pairs


def captioner_encoder_entries(encoder) -> list[Entry]:
    """STREAM's EncoderCNN (`resnet.0`, `resnet.1`, `resnet.{4..7}.*`, `linear`, `bn`).

    The tutorial's `nn.Sequential(*list(resnet152.children())[:-1])` numbers torchvision's
    children: 0 conv1, 1 bn1, 4-7 layer1-4. `normalize_resnet_keys` turns the named form
    (`resnet.conv1`, `resnet.layer1`) into this one.

    Example:
    >>> from mirrorgan_tf.networks.captioner import CaptionerEncoder
    >>> entries = captioner_encoder_entries(CaptionerEncoder(8, blocks=(1, 1, 1, 1), width=4))
    """
    if encoder.backbone != "resnet152":
        raise ValueError(
            f"Only the ResNet-152 captioner encoder has a published layout; this one has the "
            f"{encoder.backbone!r} backbone."
        )
    entries = []
    for name, layer in _resnet_modules(encoder.resnet):
        # torchvision children 0 conv1, 1 bn1, 4-7 layer1-4 (see the docstring).
        name = {"conv1": "0", "bn1": "1"}.get(name, name)
        name = re.sub(r"^layer(\d)", lambda m: str(int(m.group(1)) + 3), name)
        prefix = f"resnet.{name}"
        if isinstance(layer, keras.layers.Conv2D):
            entries += conv_entries(prefix, layer)
        else:
            entries += batch_norm_entries(prefix, layer)
    entries += dense_entries("linear", encoder.linear)
    entries += batch_norm_entries("bn", encoder.bn)
    return entries


def normalize_resnet_keys(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`resnet.conv1.*` / `resnet.bn1.*` / `resnet.layerK.*` -> `resnet.0/1/(K+3).*`.

    Example:
    >>> sorted(normalize_resnet_keys({"resnet.layer2.0.conv1.weight": 0, "linear.bias": 1}))
    ['linear.bias', 'resnet.5.0.conv1.weight']
    """
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^resnet\.conv1\.", "resnet.0.", key)
        key = re.sub(r"^resnet\.bn1\.", "resnet.1.", key)
        key = re.sub(r"^resnet\.layer(\d)\.", lambda m: f"resnet.{int(m.group(1)) + 3}.", key)
        out[key] = value
    return out


def captioner_decoder_entries(decoder, unk_row: bool) -> list[Entry]:
    """STREAM's DecoderRNN (`embed`, `lstm.*_l0`, `linear`) -> `CaptionerDecoder`.

    Example:
    >>> from mirrorgan_tf.networks.captioner import CaptionerDecoder
    >>> entries = captioner_decoder_entries(CaptionerDecoder(6, 4, 8), unk_row=True)
    """
    return (embedding_entries("embed", decoder.embed, unk_row)
            + rnn_entries("lstm", decoder.lstm)
            + vocabulary_dense_entries("linear", decoder.linear, unk_row))


# Keys that identify what a state_dict is, for "wrong file" messages.
_SIGNATURES = (
    ("a generator (G_NET)", ("ca_net.fc.weight",)),
    ("a text encoder (RNN_ENCODER)", ("encoder.weight", "rnn.weight_ih_l0")),
    ("an image encoder (CNN_ENCODER)", ("emb_cnn_code.weight",)),
    ("a discriminator (D_NET)", ("img_code_s16.0.weight",)),
    ("a captioner encoder (EncoderCNN)", ("linear.weight", "bn.running_mean")),
    ("a captioner decoder (DecoderRNN)", ("embed.weight", "lstm.weight_ih_l0")),
)


def checkpoint_kind(keys: Iterable[str]) -> str | None:
    """What a state_dict looks like, from its keys ("a generator (G_NET)", ...), or None.

    Example:
    >>> checkpoint_kind(["ca_net.fc.weight", "h_net1.fc.0.weight"])
    'a generator (G_NET)'
    """
    keys = set(keys)
    for kind, signature in _SIGNATURES:
        if all(k in keys for k in signature):
            return kind
    return None


# === Network sizes read from the checkpoints ===
# Configuration keys the tensors tell; the rest (words per caption, captions per image, the
# backbones' input sizes, training settings) come from the preset.
INFERRED_KEYS = ("embedding_dim", "nef", "rnn_type", "condition_dim", "z_dim", "gf_dim",
                 "r_num", "num_stages", "df_dim", "captioner_embed_dim", "captioner_hidden_dim")
_DISCRIMINATOR_STAGES = {64: 1, 128: 2, 256: 3}


def _dim(state: Mapping[str, np.ndarray], key: str, axis: int) -> int | None:
    value = state.get(key)
    return None if value is None or np.ndim(value) <= axis else int(np.shape(value)[axis])


def infer_sizes(
    states: Mapping[str, Mapping[str, np.ndarray] | None],
    sources: Mapping[str, str],
    discriminators: Mapping[int, tuple[str, Mapping[str, np.ndarray]]] = (),
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The network sizes the checkpoints' tensors tell, where each was read, and disagreements.

    Read (published layouts, `shared/design/mirrorgan-reference.md`):
    - text encoder: `encoder.weight` [V, E] -> embedding_dim E; `rnn.weight_hh_l0` [G h, h]
      -> nef 2h (bidirectional), rnn_type lstm (G = 4) or gru (G = 3);
    - generator: `ca_net.fc.weight` [4c, nef] -> condition_dim c, nef; `h_net1.fc.0.weight`
      [gf 16 x 4 x 4 x 2, z + c] -> gf_dim, z_dim; `h_net{k}`/`img_net{k}` -> num_stages;
      `h_net2.residual.{i}` -> r_num;
    - discriminators: `img_code_s16.0.weight` [df, 3, 4, 4] -> df_dim;
      `COND_DNET.jointConv.0.weight` [8 df, 8 df + nef, 3, 3] -> nef; the largest one ->
      num_stages when no generator is given;
    - image encoder: `emb_cnn_code.weight` [nef, 2048] -> nef;
    - captioner: encoder `linear.weight` [embed, 2048] and decoder `embed.weight` [V, embed]
      -> captioner_embed_dim; decoder `lstm.weight_hh_l0` [4 h, h] -> captioner_hidden_dim.

    Args:
        states: component name (`text_encoder`, `image_encoder`, `generator`,
            `captioner_encoder`, `captioner_decoder`) -> state_dict as numpy arrays, or None.
        sources: component name -> the file it came from (for the messages).
        discriminators: image size -> (file, state_dict).

    Returns:
        `(sizes, evidence, conflicts)`: `{key: value}`, `{key: "FILE TENSOR [shape]"}` of the
        first tensor that told it, and one message per key on which tensors disagree.

    Example:
    >>> state = {"ca_net.fc.weight": np.zeros([400, 256]),
    ...          "h_net1.fc.0.weight": np.zeros([8192, 200])}
    >>> infer_sizes({"generator": state}, {"generator": "netG.pth"})[0]
    {'condition_dim': 100, 'nef': 256, 'gf_dim': 16, 'z_dim': 100, 'num_stages': 1}
    """
    found: dict[str, list[tuple[Any, str]]] = {}

    def tell(key: str, value, source: str, tensor: str, shape) -> None:
        found.setdefault(key, []).append((value, f"{source} {tensor} {_fmt(shape)}"))

    def read(component: str):
        state = states.get(component)
        return (state, sources.get(component, component)) if state is not None else (None, "")

    state, source = read("text_encoder")
    if state is not None:
        if (e := _dim(state, "encoder.weight", 1)) is not None:
            tell("embedding_dim", e, source, "encoder.weight", state["encoder.weight"].shape)
        hh = state.get("rnn.weight_hh_l0")
        if hh is not None and np.ndim(hh) == 2 and hh.shape[1] and hh.shape[0] % hh.shape[1] == 0:
            gates = hh.shape[0] // hh.shape[1]
            tell("nef", 2 * int(hh.shape[1]), source, "rnn.weight_hh_l0", hh.shape)
            if gates in (3, 4):
                tell("rnn_type", "lstm" if gates == 4 else "gru", source, "rnn.weight_hh_l0",
                     hh.shape)

    state, source = read("generator")
    if state is not None:
        ca = state.get("ca_net.fc.weight")
        if ca is not None and np.ndim(ca) == 2 and ca.shape[0] % 4 == 0:
            tell("condition_dim", int(ca.shape[0]) // 4, source, "ca_net.fc.weight", ca.shape)
            tell("nef", int(ca.shape[1]), source, "ca_net.fc.weight", ca.shape)
        fc = state.get("h_net1.fc.0.weight")
        if fc is not None and np.ndim(fc) == 2 and fc.shape[0] % 512 == 0:
            tell("gf_dim", int(fc.shape[0]) // 512, source, "h_net1.fc.0.weight", fc.shape)
            if ca is not None and np.ndim(ca) == 2:
                tell("z_dim", int(fc.shape[1]) - int(ca.shape[0]) // 4, source,
                     "h_net1.fc.0.weight", fc.shape)
        stages = [k for k in (1, 2, 3)
                  if any(key.startswith((f"h_net{k}.", f"img_net{k}.")) for key in state)]
        if stages:
            tell("num_stages", max(stages), source, f"h_net{max(stages)}/img_net{max(stages)}",
                 ())
        blocks = {int(m.group(1)) for k in state
                  if (m := re.match(r"h_net2\.residual\.(\d+)\.", k))}
        if blocks:
            key = f"h_net2.residual.{max(blocks)}.block.0.weight"
            tell("r_num", max(blocks) + 1, source, f"h_net2.residual.{max(blocks)}",
                 state[key].shape if key in state else ())
        context = state.get("h_net2.att.conv_context.weight")
        if context is not None and np.ndim(context) == 4:
            tell("nef", int(context.shape[1]), source, "h_net2.att.conv_context.weight",
                 context.shape)

    for _, (source, state) in sorted(dict(discriminators).items()):
        first = state.get("img_code_s16.0.weight")
        if first is not None and np.ndim(first) == 4:
            tell("df_dim", int(first.shape[0]), source, "img_code_s16.0.weight", first.shape)
        joint = state.get("COND_DNET.jointConv.0.weight")
        if joint is not None and np.ndim(joint) == 4:
            tell("nef", int(joint.shape[1]) - int(joint.shape[0]), source,
                 "COND_DNET.jointConv.0.weight", joint.shape)
    if discriminators and states.get("generator") is None:
        size, (source, _) = max(dict(discriminators).items())
        if size in _DISCRIMINATOR_STAGES:
            tell("num_stages", _DISCRIMINATOR_STAGES[size], source, f"(a {size}x{size} D_NET)",
                 ())

    state, source = read("image_encoder")
    if state is not None and (n := _dim(state, "emb_cnn_code.weight", 0)) is not None:
        tell("nef", n, source, "emb_cnn_code.weight", state["emb_cnn_code.weight"].shape)

    state, source = read("captioner_encoder")
    if state is not None and (e := _dim(state, "linear.weight", 0)) is not None:
        tell("captioner_embed_dim", e, source, "linear.weight", state["linear.weight"].shape)
    state, source = read("captioner_decoder")
    if state is not None:
        if (e := _dim(state, "embed.weight", 1)) is not None:
            tell("captioner_embed_dim", e, source, "embed.weight", state["embed.weight"].shape)
        if (h := _dim(state, "lstm.weight_hh_l0", 1)) is not None:
            tell("captioner_hidden_dim", h, source, "lstm.weight_hh_l0",
                 state["lstm.weight_hh_l0"].shape)

    sizes, evidence, conflicts = {}, {}, []
    for key, readings in found.items():
        sizes[key], evidence[key] = readings[0]
        values = {value for value, _ in readings}
        if len(values) > 1:
            listing = "; ".join(f"{where} says {value}" for value, where in readings)
            conflicts.append(f"the checkpoints disagree on {key}: {listing}")
    return sizes, evidence, conflicts


# === Matching a state_dict against entries ===
@dataclasses.dataclass
class Match:
    """The result of matching a state_dict against a network's entries.

    Attributes:
        values: (variable, value) for every entry whose tensors are all present and fit.
        missing: checkpoint keys an entry needs that the state_dict lacks.
        unexpected: state_dict keys no entry reads.
        problems: one message per shape mismatch.
        unset: the entries without a value (a key missing or a shape mismatched).
    """

    values: list[tuple[keras.Variable, np.ndarray]]
    missing: list[str]
    unexpected: list[str]
    problems: list[str]
    unset: list[Entry]


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def variable_name(entry: Entry, component: str = "") -> str:
    """`component/variable path` of an entry (Keras paths omit the model's own name).

    Example:
    >>> variable_name(entry, "generator")  # doctest: +SKIP
    'generator/h_net2_conv/kernel'
    """
    return f"{component}/{entry.variable.path}" if component else entry.variable.path


def match(
    entries: Sequence[Entry], state_dict: Mapping[str, np.ndarray], source: str,
    component: str = "",
) -> Match:
    """Checks every entry against `state_dict` and computes the values of those that fit.

    Args:
        entries: from one of the `*_entries` functions.
        state_dict: `{key: numpy array}`.
        source: the checkpoint's name, for the messages.
        component: the network's name, for the messages.

    Returns:
        A `Match`; nothing is assigned.

    Example:
    >>> dense = keras.layers.Dense(2); dense.build((None, 3))
    >>> m = match(dense_entries("fc", dense), {"fc.weight": np.zeros([2, 4])}, "x.pth")
    >>> m.missing, m.problems
    (['fc.bias'], ['x.pth: fc.weight has shape [2, 4], expected [2, 3] (for dense/kernel)'])
    """
    values, missing, problems, unset = [], [], [], []
    used: set[str] = set()
    for entry in entries:
        used.update(entry.keys)
        arrays, fits = [], True
        for key, shape in zip(entry.keys, entry.shapes, strict=True):
            if key not in state_dict:
                if key not in missing:
                    missing.append(key)
                fits = False
                continue
            array = np.asarray(state_dict[key])
            if tuple(array.shape) != tuple(shape):
                message = (f"{source}: {key} has shape {_fmt(array.shape)}, expected "
                           f"{_fmt(shape)} (for {variable_name(entry, component)})")
                if message not in problems:
                    problems.append(message)
                fits = False
            arrays.append(array.astype(np.float32))
        if fits:
            value = np.asarray(entry.convert(*arrays), dtype=np.float32)
            if value.shape != _shape(entry.variable):
                raise AssertionError(f"{entry.keys} -> {value.shape}, {entry.variable.path}")
            values.append((entry.variable, value))
        else:
            unset.append(entry)
    unexpected = [k for k in state_dict
                  if k not in used and not k.endswith(IGNORED_SUFFIXES)]
    return Match(values, missing, unexpected, problems, unset)


def describe(result: Match, source: str, component: str, allowed_missing: Iterable[str] = ()
             ) -> list[str]:
    """One message per problem of a `Match`: missing (except `allowed_missing`), unexpected, shape.

    Example:
    >>> describe(Match([], ["fc.bias"], ["old.weight"], [], []), "x.pth", "generator")[0]
    'x.pth: missing fc.bias (the generator needs it)'
    """
    allowed = set(allowed_missing)
    messages = [f"{source}: missing {key} (the {component} needs it)"
                for key in result.missing if key not in allowed]
    messages += [f"{source}: unexpected {key} (no {component} weight takes it)"
                 for key in result.unexpected]
    return messages + result.problems


def assign(values: Iterable[tuple[keras.Variable, np.ndarray]]) -> None:
    """Assigns computed values to their variables.

    Example:
    >>> assign(match(entries, state_dict, "x.pth").values)  # doctest: +SKIP
    """
    for variable, value in values:
        variable.assign(value.astype(variable.dtype))
