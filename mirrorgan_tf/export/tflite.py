"""TFLite export of STEM + GLAM: token ids and noise in, the last stage's image out.

The graph keeps to TFLite builtin ops (no Flex, so LiteRT runs it from pip), which sets the
form of the model (see platform-notes.md):
- Tokenization (string ops) stays outside: the app tokenizes with the rule and vocabulary
  written beside the model in `<path>.json`.
- Noise comes in as an input (stateless random ops are Flex-only).
- The bidirectional RNN of STEM is unrolled at the fixed caption length (a looped RNN does
  not lower), from a copy of the text encoder with the same weights.
- The generator's up-sampling convolutions are traced as four 2x2 convolutions
  (`layers.blocks.phase_upsampling`): XNNPACK runs those faster than a transposed one.
- The batch size is fixed (a dynamic batch sends some Conv2D after UpSampling2D to Flex).
- Conversion goes through a SavedModel (`from_concrete_functions` lost the weights).

Model: inputs `token_ids` int32 [B, T] and `noise` float32 [B, z_dim]; output `images` float32
[B, S, S, 3] in [-1, 1] (map to pixels with round((x + 1) * 127.5) clipped to [0, 255]).
Signature key: `serving_default`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mirrorgan_tf import presets
from mirrorgan_tf.export.saved_model import safe_token_ids
from mirrorgan_tf.layers.blocks import phase_upsampling

QUANTIZATIONS = ("none", "float16", "dynamic")
SIGNATURE_KEY = "serving_default"

TOKENIZATION_RULE = (
    "Lowercase the caption (Unicode), find the words with the regular expression \\w+ "
    "(Unicode letters, digits and underscore; Python re.findall(r'\\w+', caption.lower())), "
    "map each word to its line number in `vocabulary` (unknown words -> oov_id), use [oov_id] "
    "for a caption without words, keep the first max_length ids and pad with pad_id (0) to "
    "max_length. Invalid UTF-8 is replaced by U+FFFD first."
)


def unrolled_text_encoder(text_encoder: keras.Model) -> keras.Model:
    """A copy of STEM with `unroll=True` and the same weights (TFLite needs unrolled RNNs).

    Args:
        text_encoder: a built `TextEncoder`.

    Example:
    >>> unrolled = unrolled_text_encoder(model.text_encoder)  # doctest: +SKIP
    """
    config = {**text_encoder.get_config(), "unroll": True}
    copy = type(text_encoder).from_config(config)
    copy.set_weights(text_encoder.get_weights())
    return copy


def _quantize(converter: tf.lite.TFLiteConverter, quantize: str) -> None:
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        # Dynamic-range quantization: int8 weights, float activations.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]


def _write_saved_model(model, directory: str, batch_size: int) -> None:
    config = model.config
    length, z_dim = model.tokenizer.max_length, int(config["z_dim"])
    vocab_size, oov_id = model.tokenizer.vocab_size, model.tokenizer.oov_id
    text_encoder = unrolled_text_encoder(model.text_encoder)
    generator = model.generator

    @tf.function(
        input_signature=[
            tf.TensorSpec([batch_size, length], tf.int32, name="token_ids"),
            tf.TensorSpec([batch_size, z_dim], tf.float32, name="noise"),
        ]
    )
    def serving_default(token_ids, noise):
        # As TextToImage.generate: c_code = mu, mask = ids != 0.
        token_ids = safe_token_ids(token_ids, vocab_size, oov_id)
        words, sentence = text_encoder(token_ids, training=False)
        out = generator(
            noise, sentence, words, tf.not_equal(token_ids, 0),
            training=False, deterministic=True,
        )
        return {"images": tf.cast(out["images"][-1], tf.float32)}

    # Traced with the up-sampling form that XNNPACK runs fastest (see `phase_upsampling`).
    with phase_upsampling():
        serving_default.get_concrete_function()
        archive = keras.export.ExportArchive()  # saves the variables the function uses
        archive.add_endpoint(SIGNATURE_KEY, serving_default)
        archive.write_out(directory, verbose=False)


def tflite_metadata(model, quantize: str, batch_size: int) -> dict[str, Any]:
    """What an app needs beside the .tflite file: tokenization, vocabulary, noise, shapes.

    Args:
        model: the `TextToImage` exported.
        quantize: the quantization used.
        batch_size: the fixed batch size.

    Example:
    >>> tflite_metadata(model, "none", 1)["max_length"]  # doctest: +SKIP
    16
    """
    config = model.config
    size, z_dim = presets.image_sizes(config)[-1], int(config["z_dim"])
    length = model.tokenizer.max_length
    return {
        "format": "tflite",
        "signature_key": SIGNATURE_KEY,
        "preset": config.get("preset"),
        "quantize": quantize,
        "batch_size": batch_size,
        "inputs": {
            "token_ids": {"dtype": "int32", "shape": [batch_size, length]},
            "noise": {"dtype": "float32", "shape": [batch_size, z_dim]},
        },
        "outputs": {
            "images": {
                "dtype": "float32",
                "shape": [batch_size, size, size, 3],
                "range": [-1.0, 1.0],
                "to_uint8": "clip(round((x + 1) * 127.5), 0, 255)",
            }
        },
        "image_size": size,
        "z_dim": z_dim,
        "noise": (
            "standard normal N(0, 1), float32 [batch, z_dim]; the SavedModel's seed s is "
            "tf.random.stateless_normal([1, z_dim], seed=[s, 0])"
        ),
        "max_length": length,
        "pad_id": 0,
        "oov_id": model.tokenizer.oov_id,
        "lowercase": True,
        "word_regex": "\\w+",
        "tokenization": TOKENIZATION_RULE,
        "vocabulary": model.tokenizer.vocabulary.words,
    }


def export_tflite(
    model,
    path: str | os.PathLike,
    quantize: str = "none",
    batch_size: int = 1,
) -> str:
    """Converts STEM + GLAM of a `TextToImage` to a builtin-ops TFLite model.

    Writes `path` and `<path>.json` (see `tflite_metadata`). See the module docstring for the
    model's inputs and outputs.

    Args:
        model: a `TextToImage`.
        path: the .tflite file to write.
        quantize: "none" (float32), "float16" (float16 weights) or "dynamic" (int8 weights,
            dynamic-range quantization).
        batch_size: the fixed batch size B.

    Returns:
        `path`.

    Raises:
        ValueError: for an unknown quantization or a batch size below 1.

    Example:
    >>> export_tflite(model, "/tmp/mirrorgan.tflite", quantize="float16")  # doctest: +SKIP
    '/tmp/mirrorgan.tflite'
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {QUANTIZATIONS}; got {quantize!r}.")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    path = os.fspath(path)
    with tempfile.TemporaryDirectory(prefix="mirrorgan-tflite-") as tmp:
        saved = os.path.join(tmp, "saved_model")
        _write_saved_model(model, saved, int(batch_size))
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, [SIGNATURE_KEY])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        _quantize(converter, quantize)
        flatbuffer = converter.convert()
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    with open(path + ".json", "w", encoding="utf-8") as f:
        json.dump(tflite_metadata(model, quantize, int(batch_size)), f, indent=1)
    return path


def tflite_op_names(path: str | os.PathLike) -> set[str]:
    """The operator names of a .tflite model: builtin names, custom (Flex) ops as `custom:NAME`.

    Args:
        path: a .tflite file.

    Example:
    >>> "CONV_2D" in tflite_op_names("/tmp/mirrorgan.tflite")  # doctest: +SKIP
    True
    """
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as f:
        flatbuffer = schema.Model.GetRootAsModel(f.read(), 0)
    code_names = {
        value: name for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    names = set()
    for i in range(flatbuffer.OperatorCodesLength()):
        code = flatbuffer.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.add(f"custom:{code.CustomCode().decode()}")
        else:
            names.add(code_names.get(builtin, str(builtin)))
    return names


def tokenize_with_metadata(
    captions: Sequence[str | bytes], metadata: Mapping[str, Any]
) -> np.ndarray:
    """Token ids for the TFLite model from `<path>.json` alone (the rule an app implements).

    Python's `re` stands in for the app's Unicode regex engine; `Tokenizer` (core TF ops)
    follows the same rule (see its docstring for the rare Unicode-version differences).

    Args:
        captions: caption strings (bytes are decoded as UTF-8, invalid bytes replaced).
        metadata: the dict read from `<path>.json`.

    Returns:
        int32 [len(captions), max_length].

    Example:
    >>> meta = json.load(open("/tmp/mirrorgan.tflite.json"))  # doctest: +SKIP
    >>> tokenize_with_metadata(["a red circle"], meta).shape  # doctest: +SKIP
    (1, 16)
    """
    index = {word: i for i, word in enumerate(metadata["vocabulary"])}
    length, oov, pad = metadata["max_length"], metadata["oov_id"], metadata["pad_id"]
    rows = []
    for caption in captions:
        if isinstance(caption, bytes):
            caption = caption.decode("utf-8", errors="replace")
        words = re.findall(metadata["word_regex"], caption.lower())
        ids = [index.get(word, oov) for word in words][:length] or [oov]
        rows.append(ids + [pad] * (length - len(ids)))
    return np.array(rows, np.int32).reshape(len(rows), length)
