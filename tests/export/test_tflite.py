"""Tests for mirrorgan_tf/export/tflite.py: each quantization run with LiteRT against Keras."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.export.tflite import (
    export_tflite,
    tflite_op_names,
    tokenize_with_metadata,
    unrolled_text_encoder,
)
from tests.export.test_saved_model import tiny_model

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

CAPTIONS = ["a small red circle at the top left", "", "zzz unknown ?!", "x" * 10_000]
BATCH = 2


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2, as 255 for uint8 pixels)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(4.0 / mse)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tf.keras.utils.set_random_seed(2)
    model = tiny_model(with_captioner=False)
    folder = tmp_path_factory.mktemp("tflite")
    paths = {
        quantize: export_tflite(
            model, os.path.join(folder, f"tiny_{quantize}.tflite"), quantize, BATCH
        )
        for quantize in ("none", "float16", "dynamic")
    }
    token_ids = model.tokenizer(tf.constant(CAPTIONS[:BATCH]))[0].numpy()
    noise = np.random.default_rng(0).normal(size=[BATCH, model.config["z_dim"]])
    noise = noise.astype("float32")
    words, sentence = model.text_encoder(token_ids, training=False)
    keras_images = model.generator(
        noise, sentence, words, tf.not_equal(token_ids, 0), training=False, deterministic=True
    )["images"][-1].numpy()
    return {
        "model": model,
        "paths": paths,
        "token_ids": token_ids,
        "noise": noise,
        "keras": keras_images,
    }


def run_tflite(path: str, token_ids: np.ndarray, noise: np.ndarray) -> np.ndarray:
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return runner(token_ids=token_ids, noise=noise)["images"]


def test_float32_matches_keras(converted):
    images = run_tflite(converted["paths"]["none"], converted["token_ids"], converted["noise"])
    assert images.dtype == np.float32 and images.shape == (BATCH, 128, 128, 3)
    assert np.abs(images - converted["keras"]).max() <= 1e-4
    assert images.std() > 1e-3  # not a constant image


@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_quantized_psnr(converted, quantize):
    args = converted["token_ids"], converted["noise"]
    reference = run_tflite(converted["paths"]["none"], *args)
    images = run_tflite(converted["paths"][quantize], *args)
    assert psnr(images, reference) >= 30.0
    assert not np.array_equal(images, reference)  # quantization did change the weights
    sizes = {q: os.path.getsize(p) for q, p in converted["paths"].items()}
    assert sizes[quantize] < 0.8 * sizes["none"], sizes


def test_builtin_ops_only(converted):
    for path in converted["paths"].values():
        ops = tflite_op_names(path)
        assert "CONV_2D" in ops and "FULLY_CONNECTED" in ops
        assert not [op for op in ops if op.startswith("custom:")], ops
        # Up-sampling traced as phases (XNNPACK's faster form), not a transposed convolution.
        assert "DEPTH_TO_SPACE" in ops and "TRANSPOSE_CONV" not in ops, ops
        # LiteRT from pip has no Flex delegate: allocation fails on any Flex op.
        Interpreter(model_path=path).allocate_tensors()


def test_signature_shapes(converted):
    model = converted["model"]
    runner = Interpreter(model_path=converted["paths"]["none"]).get_signature_runner(
        "serving_default"
    )
    inputs = runner.get_input_details()
    assert list(inputs["token_ids"]["shape"]) == [BATCH, model.tokenizer.max_length]
    assert inputs["token_ids"]["dtype"] == np.int32
    assert list(inputs["noise"]["shape"]) == [BATCH, model.config["z_dim"]]
    assert list(runner.get_output_details()["images"]["shape"]) == [BATCH, 128, 128, 3]


def test_metadata_tokenizes_like_the_tokenizer(converted):
    model = converted["model"]
    path = converted["paths"]["none"]
    with open(path + ".json", encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["vocabulary"] == model.tokenizer.vocabulary.words
    assert meta["max_length"] == model.tokenizer.max_length and meta["pad_id"] == 0
    assert meta["z_dim"] == 8 and meta["image_size"] == 128 and meta["batch_size"] == BATCH
    assert meta["oov_id"] == model.tokenizer.oov_id and "\\w+" in meta["tokenization"]
    captions = CAPTIONS + [b"\xff\xfe red \xc3( circle", "Large BLUE, square!!", "a\x00b"]
    want = model.tokenizer(tf.constant(captions))[0].numpy()
    np.testing.assert_array_equal(tokenize_with_metadata(captions, meta), want)
    # The app path end to end: tokenize from the JSON, run LiteRT.
    ids = tokenize_with_metadata(CAPTIONS[2:4], meta)
    images = run_tflite(path, ids, converted["noise"])
    assert np.all(np.isfinite(images)) and np.abs(images).max() <= 1.0


def test_out_of_vocabulary_ids_do_not_fail(converted):
    ids = converted["token_ids"].copy()
    ids[0, 0] = 10_000
    ids[1, 0] = -3
    images = run_tflite(converted["paths"]["none"], ids, converted["noise"])
    assert np.all(np.isfinite(images))


def test_unrolled_text_encoder_is_the_same_function(converted):
    model = converted["model"]
    unrolled = unrolled_text_encoder(model.text_encoder)
    assert unrolled.unroll and not model.text_encoder.unroll
    ids = converted["token_ids"]
    for a, b in zip(unrolled(ids, training=False), model.text_encoder(ids, training=False),
                    strict=True):
        assert np.abs(a.numpy() - b.numpy()).max() <= 1e-6


def test_bad_arguments(converted, tmp_path):
    with pytest.raises(ValueError, match="quantize"):
        export_tflite(converted["model"], tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(ValueError, match="batch_size"):
        export_tflite(converted["model"], tmp_path / "m.tflite", batch_size=0)
