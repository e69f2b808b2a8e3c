"""STEM text encoder: PyTorch packed-sequence semantics, masking, validation, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.networks.text_encoder import TextEncoder, caption_mask

TOKENS = np.array(
    [
        [4, 9, 2, 7, 3, 0, 0],
        [5, 0, 0, 0, 0, 0, 0],
        [8, 6, 1, 1, 2, 9, 3],
        [3, 2, 0, 0, 0, 0, 0],
    ],
    dtype="int32",
)
LENGTHS = [5, 1, 7, 2]


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _small(**kwargs):
    kwargs.setdefault("embedding_dim", 8)
    kwargs.setdefault("nef", 12)
    return TextEncoder(vocab_size=10, **kwargs)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_lstm(x, cell, reverse=False):
    """Keras LSTM cell (gates i, f, c, o) over an unpadded sequence; returns outputs and h."""
    kernel, recurrent, bias = (np.asarray(w, np.float64) for w in cell.get_weights())
    units = recurrent.shape[0]
    h = np.zeros(units)
    c = np.zeros(units)
    steps = range(len(x) - 1, -1, -1) if reverse else range(len(x))
    outputs = np.zeros([len(x), units])
    for t in steps:
        z = x[t] @ kernel + h @ recurrent + bias
        i, f, g, o = np.split(z, 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outputs[t] = h
    return outputs, h


@pytest.mark.parametrize(
    "vocab_size, expected",
    # Published PyTorch counts minus 2 x 512 (one LSTM bias per gate block in Keras, two in torch).
    [(5450, 2_075_320 - 1024), (27297, 8_629_420 - 1024)],
)
def test_parameter_count_matches_published(vocab_size, expected):
    assert _trainable_count(TextEncoder(vocab_size)) == expected


def test_caption_mask_ends_at_first_zero():
    mask = np.asarray(caption_mask(np.array([[4, 7, 0, 5], [0, 3, 3, 3], [1, 2, 3, 4]])))
    np.testing.assert_array_equal(
        mask, [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    )


def test_matches_numpy_lstm_reference():
    encoder = _small()
    words, sentence = (np.asarray(t) for t in encoder(TOKENS, training=False))
    table = np.asarray(encoder.embedding.embeddings, np.float64)
    for b, length in enumerate(LENGTHS):
        x = table[TOKENS[b, :length]]
        fw_out, fw_h = _numpy_lstm(x, encoder.rnn.forward_layer.cell)
        bw_out, bw_h = _numpy_lstm(x, encoder.rnn.backward_layer.cell, reverse=True)
        np.testing.assert_allclose(sentence[b], np.concatenate([fw_h, bw_h]), atol=1e-5)
        np.testing.assert_allclose(
            words[b, :length], np.concatenate([fw_out, bw_out], -1), atol=1e-5
        )
        assert np.all(words[b, length:] == 0.0)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_padded_batch_equals_unpadded_single_captions(rnn_type):
    encoder = _small(rnn_type=rnn_type)
    words, sentence = (np.asarray(t) for t in encoder(TOKENS, training=False))
    for b, length in enumerate(LENGTHS):
        w1, s1 = encoder(TOKENS[b : b + 1, :length], training=False)
        np.testing.assert_allclose(sentence[b], np.asarray(s1)[0], atol=1e-6)
        np.testing.assert_allclose(words[b, :length], np.asarray(w1)[0], atol=1e-6)


def test_padded_token_ids_change_nothing():
    encoder = _small()
    changed = TOKENS.copy()
    changed[0, 6] = 9
    changed[1, 2:] = [1, 2, 3, 4, 5]
    changed[3, 3] = 7
    for a, b in zip(encoder(TOKENS, training=False), encoder(changed, training=False),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_batch_permutation_permutes_outputs():
    encoder = _small()
    perm = np.array([2, 0, 3, 1])
    full = encoder(TOKENS, training=False)
    permuted = encoder(TOKENS[perm], training=False)
    for a, b in zip(full, permuted, strict=True):
        np.testing.assert_allclose(np.asarray(a)[perm], np.asarray(b), atol=1e-6)


def test_unroll_matches_loop():
    looped = _small()
    unrolled = _small(unroll=True)
    unrolled.set_weights(looped.get_weights())
    for a, b in zip(looped(TOKENS, training=False), unrolled(TOKENS, training=False),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_unroll_needs_static_length():
    encoder = _small(unroll=True)
    fn = tf.function(
        lambda ids: encoder(ids, training=False),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    with pytest.raises(ValueError, match="static caption length"):
        fn.get_concrete_function()


def test_dropout_only_in_training():
    encoder = _small(dropout=0.5)
    a = np.asarray(encoder(TOKENS, training=False)[1])
    b = np.asarray(encoder(TOKENS, training=False)[1])
    c = np.asarray(encoder(TOKENS, training=True)[1])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize(
    "ids, match",
    [
        (np.array([[1, 10, 0]]), "token_ids"),
        (np.array([[1, -1, 0]]), "token_ids"),
        (np.array([1, 2, 0]), "rank 2"),
        (np.array([[[1, 2, 0]]]), "rank 2"),
    ],
)
def test_rejects_bad_token_ids(ids, match):
    with pytest.raises(ValueError, match=match):
        _small()(ids)


def test_rejects_bad_config():
    with pytest.raises(ValueError, match="rnn_type"):
        TextEncoder(10, rnn_type="rnn")
    with pytest.raises(ValueError, match="nef"):
        TextEncoder(10, nef=7)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_float32(policy):
    try:
        keras.mixed_precision.set_global_policy(policy)
        encoder = _small()
        words, sentence = encoder(TOKENS, training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert words.dtype == "float32" and sentence.dtype == "float32"
    assert np.all(np.isfinite(words)) and np.all(np.isfinite(sentence))


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_config_round_trip_and_save_load(tmp_path, rnn_type):
    encoder = _small(rnn_type=rnn_type, dropout=0.25, name="stem")
    config = encoder.get_config()
    assert config["dropout"] == 0.25 and config["rnn_type"] == rnn_type
    clone = TextEncoder.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(encoder.get_weights())
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, TextEncoder)
    expected = encoder(TOKENS, training=False)
    for other in (clone, loaded):
        for a, b in zip(expected, other(TOKENS, training=False), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_normalize_sentence_rescales_the_sentence_only():
    plain = _small()
    normalized = _small(normalize_sentence=True)
    normalized.set_weights(plain.get_weights())
    words, sentence = plain(TOKENS, training=False)
    n_words, n_sentence = normalized(TOKENS, training=False)
    np.testing.assert_array_equal(np.asarray(words), np.asarray(n_words))
    # Same direction, norm sqrt(nef) (nef = 12).
    np.testing.assert_allclose(np.linalg.norm(n_sentence, axis=-1), np.sqrt(12.0), rtol=1e-5)
    cosine = np.sum(np.asarray(sentence) * np.asarray(n_sentence), -1) / (
        np.linalg.norm(sentence, axis=-1) * np.sqrt(12.0)
    )
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-5)
    assert TextEncoder.from_config(normalized.get_config()).normalize_sentence
    # Off by default: the published behaviour.
    assert not plain.normalize_sentence
