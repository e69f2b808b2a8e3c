"""Tests for STREAM: the captioner's encoder, decoder, teacher forcing, greedy and beam search."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.networks.captioner import Captioner, CaptionerDecoder, CaptionerEncoder


def _trainable_count(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _images(batch, size=64, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, [batch, size, size, 3]).astype("float32")


def _features(batch, dim, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=[batch, dim])).astype("float32")


def _captions(batch, length, vocab, seed=0):
    return np.random.default_rng(seed).integers(1, vocab, [batch, length]).astype("int32")


def _tiny_captioner(backbone="small", **kwargs):
    if backbone == "resnet152":
        kwargs.setdefault("blocks", (1, 1, 1, 1))
        kwargs.setdefault("width", 4)
        kwargs.setdefault("input_size", 32)
    return Captioner(vocab_size=11, embed_dim=8, hidden_dim=16, backbone=backbone, **kwargs)


def test_encoder_published_trainable_count():
    encoder = CaptionerEncoder(embed_dim=256, backbone="resnet152")
    # ResNet-152 trunk 58,143,808 + Linear 2048*256 + 256 + BatchNorm1d 2*256.
    assert _trainable_count(encoder) == 58_668_864
    assert encoder.bn.momentum == pytest.approx(0.99) and encoder.bn.epsilon == 1e-5
    assert encoder.resolved_input_size == 224


@pytest.mark.parametrize("vocab, published", [(5450, 5_768_010), (27297, 22_568_353)])
def test_decoder_published_count_less_one_lstm_bias(vocab, published):
    decoder = CaptionerDecoder(vocab, embed_dim=256, hidden_dim=512)
    # PyTorch's LSTM has b_ih and b_hh (4 * 512 each); Keras has one.
    assert _trainable_count(decoder) == published - 2048


def test_encoder_feeds_the_trunk_imagenet_normalised_images():
    encoder = CaptionerEncoder(embed_dim=8, backbone="resnet152", blocks=(1, 1, 1, 1), width=4)
    images = _images(2, 32)
    resized = tf.image.resize(images, (224, 224), method="bilinear").numpy()
    mean = np.array([0.485, 0.456, 0.406], "float32")
    std = np.array([0.229, 0.224, 0.225], "float32")
    normalised = ((resized + 1.0) / 2.0 - mean) / std
    want = encoder.bn(encoder.linear(encoder.resnet(normalised, training=False)), training=False)
    got = encoder(images, training=False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", ["small", "resnet152"])
def test_captioner_logit_shapes(backbone):
    captioner = _tiny_captioner(backbone)
    images = _images(3)
    for length in (1, 7, 20):
        logits = captioner(images, _captions(3, length, 11), training=False)
        assert logits.shape == (3, length, 11) and logits.dtype == "float32"


def test_decoder_logit_shapes_for_every_length():
    decoder = CaptionerDecoder(11, embed_dim=8, hidden_dim=16)
    for batch in (1, 3):
        features = _features(batch, 8)
        for length in range(1, 21):
            logits = decoder(features, _captions(batch, length, 11), training=False)
            assert logits.shape == (batch, length, 11)


def test_teacher_forcing_is_causal_and_starts_from_the_image():
    decoder = CaptionerDecoder(11, embed_dim=8, hidden_dim=16)
    features = _features(2, 8)
    captions = _captions(2, 8, 11)
    logits = np.asarray(decoder(features, captions))
    for t in range(8):
        changed = captions.copy()
        changed[:, t:] = (changed[:, t:] % 10) + 1  # every future token differs
        other = np.asarray(decoder(features, changed))
        # Step t predicts word t from the image and captions[:, :t] only.
        np.testing.assert_allclose(other[:, : t + 1], logits[:, : t + 1], rtol=1e-6, atol=1e-6)
        if t + 1 < 8:
            assert np.abs(other[:, t + 1] - logits[:, t + 1]).max() > 1e-6
    # The first step sees only the image.
    unrelated = np.asarray(decoder(features, _captions(2, 8, 11, seed=5)))
    np.testing.assert_allclose(unrelated[:, 0], logits[:, 0], rtol=1e-6, atol=1e-6)
    other_image = np.asarray(decoder(_features(2, 8, seed=9), captions))
    assert np.abs(other_image[:, 0] - logits[:, 0]).max() > 1e-6


def _teacher_forced_log_probs(decoder, features, ids):
    logits = decoder(features, ids)
    return np.asarray(tf.nn.log_softmax(logits, axis=-1))


def test_greedy_is_the_argmax_chain_and_pads_after_end():
    keras.utils.set_random_seed(3)
    # A 3-word vocabulary makes <end> (id 0) common, at varying steps.
    decoder = CaptionerDecoder(3, embed_dim=8, hidden_dim=16)
    features = _features(64, 8, scale=3.0)
    ids = np.asarray(decoder.greedy(features, max_length=8))
    assert ids.shape == (64, 8) and ids.dtype == np.int32
    log_probs = _teacher_forced_log_probs(decoder, features, ids)
    first_ends = []
    for row in range(64):
        zeros = np.flatnonzero(ids[row] == 0)
        end = zeros[0] if zeros.size else 8
        first_ends.append(end)
        assert (ids[row, end:] == 0).all()
        # Up to and including <end>, each id is the argmax given the previous ids.
        np.testing.assert_array_equal(
            ids[row, : end + 1], log_probs[row, : end + 1].argmax(-1)[: min(end + 1, 8)]
        )
    # The test only means something if <end> comes at different steps, not always first.
    assert len(set(first_ends)) > 1 and max(first_ends) > 0


def test_beam_size_one_equals_greedy_eager_and_traced():
    decoder = CaptionerDecoder(11, embed_dim=8, hidden_dim=16, max_length=12)
    features = _features(5, 8, scale=3.0)
    greedy = np.asarray(decoder.greedy(features))
    beam = np.asarray(decoder.beam_search(features, beam_size=1))
    np.testing.assert_array_equal(greedy, beam)
    traced_greedy = tf.function(lambda f: decoder.greedy(f))
    traced_beam = tf.function(lambda f: decoder.beam_search(f, beam_size=3))
    np.testing.assert_array_equal(np.asarray(traced_greedy(features)), greedy)
    np.testing.assert_array_equal(
        np.asarray(traced_beam(features)), np.asarray(decoder.beam_search(features, beam_size=3))
    )


def _sequence_score(log_probs_row, ids_row):
    score = 0.0
    for t, token in enumerate(ids_row):
        score += log_probs_row[t, token]
        if token == 0:
            break
    return score


def test_wide_beam_finds_the_exhaustive_best_caption():
    keras.utils.set_random_seed(4)
    vocab, length = 3, 3
    decoder = CaptionerDecoder(vocab, embed_dim=8, hidden_dim=16)
    features = _features(6, 8, scale=3.0)
    # Keeping vocab ** (length - 1) beams keeps every prefix: beam search is then exact.
    beam = np.asarray(decoder.beam_search(features, beam_size=9, max_length=length))
    candidates = [
        c for c in itertools.product(range(vocab), repeat=length)
        if all(c[i] == 0 for i in range(length) if 0 in c[:i])
    ]
    for row in range(6):
        tiled = np.repeat(features[row : row + 1], len(candidates), axis=0)
        log_probs = _teacher_forced_log_probs(decoder, tiled, np.array(candidates, "int32"))
        scores = [_sequence_score(log_probs[i], c) for i, c in enumerate(candidates)]
        best = candidates[int(np.argmax(scores))]
        np.testing.assert_array_equal(beam[row], best)
        zeros = np.flatnonzero(beam[row] == 0)
        if zeros.size:
            assert (beam[row, zeros[0]:] == 0).all()


@pytest.mark.parametrize("backbone", ["small", "resnet152"])
def test_config_and_keras_file_round_trip(tmp_path, backbone):
    captioner = _tiny_captioner(backbone, max_length=6, name="stream")
    images, captions = _images(2), _captions(2, 5, 11)
    expected = np.asarray(captioner(images, captions, training=False))
    expected_ids = np.asarray(captioner.generate(images, beam_size=2))
    config = captioner.get_config()
    clone = Captioner.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(captioner.get_weights())
    path = tmp_path / "stream.keras"
    captioner.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Captioner)
    for other in (clone, loaded):
        np.testing.assert_array_equal(np.asarray(other(images, captions, training=False)), expected)
        np.testing.assert_array_equal(np.asarray(other.generate(images, beam_size=2)), expected_ids)
    for part in (captioner.encoder, captioner.decoder):
        again = type(part).from_config(part.get_config())
        assert again.get_config() == part.get_config()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("backbone", ["small", "resnet152"])
def test_mixed_precision_gives_float32_logits(policy, backbone):
    keras.mixed_precision.set_global_policy(policy)
    try:
        captioner = _tiny_captioner(backbone, max_length=5)
        logits = captioner(_images(2), _captions(2, 4, 11), training=True)
        assert logits.dtype == "float32" and logits.shape == (2, 4, 11)
        assert np.isfinite(np.asarray(logits)).all()
        ids = captioner.generate(_images(2), beam_size=2)
        assert ids.shape == (2, 5) and ids.dtype == "int32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_inputs_raise_clear_errors():
    captioner = _tiny_captioner()
    images = _images(2)
    with pytest.raises(ValueError, match="captions"):
        captioner(images, np.array([[1, 11]], "int32"))
    with pytest.raises(ValueError, match="captions"):
        captioner(images, np.array([[1, -1]], "int32"))
    with pytest.raises(ValueError, match="captions"):
        captioner.decoder(_features(1, 8), np.array([[3, 20]], "int32"))
    with pytest.raises(ValueError, match="images"):
        captioner(np.zeros([64, 64, 3], "float32"), _captions(1, 3, 11))
    with pytest.raises(ValueError, match="images"):
        captioner.generate(np.zeros([1, 64, 64, 1], "float32"))
    with pytest.raises(ValueError, match="features"):
        captioner.decoder.greedy(_features(1, 9))
    with pytest.raises(ValueError, match="beam_size"):
        captioner.decoder.beam_search(_features(1, 8), beam_size=0)
    with pytest.raises(ValueError, match="backbone"):
        CaptionerEncoder(backbone="inception_v3")
