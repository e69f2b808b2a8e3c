"""Global-local attention against a loop-by-loop NumPy restatement of the published code."""

import keras
import numpy as np
import pytest

from mirrorgan_tf.layers import GlobalLocalAttention


def _softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _reference(layer, h, words, c_code, mask):
    """Published GlobalAttentionGeneral (MirrorGAN), one sample at a time, own mask per sample."""
    w_ctx = np.asarray(layer.word_projection.kernel)  # [nef, C]
    w_lin, b_lin = (np.asarray(w) for w in layer.sentence_projection.get_weights())
    w_vis = np.asarray(layer.sentence_vision.kernel)[0, 0]  # [C, C]
    batch, height, width, channels = h.shape
    word_ctx = np.zeros_like(h, np.float64)
    sent_ctx = np.zeros_like(h, np.float64)
    attn = np.zeros([batch, height, width, words.shape[1]])
    for b in range(batch):
        source = words[b] @ w_ctx  # [T, C]
        target = h[b].reshape(-1, channels)  # [HW, C] (query-major)
        scores = target @ source.T  # [HW, T]
        scores[:, ~mask[b]] = -np.inf
        a = _softmax(scores, axis=1)
        word_ctx[b] = (a @ source).reshape(height, width, channels)
        attn[b] = a.reshape(height, width, -1)
        s = c_code[b] @ w_lin + b_lin  # [C]
        vis = (h[b] * s) @ w_vis
        sent_ctx[b] = s * _softmax(vis, axis=-1)
    return word_ctx, sent_ctx, attn


def _inputs(rng, batch=3, size=4, channels=6, length=5, nef=8, c=7, lengths=(5, 2, 3)):
    h = rng.normal(size=[batch, size, size, channels]).astype("float32")
    words = rng.normal(size=[batch, length, nef]).astype("float32")
    c_code = rng.normal(size=[batch, c]).astype("float32")
    mask = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
    return h, words, c_code, mask


def test_matches_reference_with_per_sample_masks():
    rng = np.random.default_rng(0)
    h, words, c_code, mask = _inputs(rng)
    layer = GlobalLocalAttention(6)
    outputs = [np.asarray(t) for t in layer(h, words, c_code, mask)]
    expected = _reference(layer, h, words, c_code, mask)
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert outputs[2].shape == (3, 4, 4, 5)
    assert outputs[2].dtype == np.float32


def test_padded_words_get_zero_attention_and_rows_sum_to_one():
    rng = np.random.default_rng(1)
    h, words, c_code, mask = _inputs(rng, lengths=(1, 4, 5))
    _, _, attn = GlobalLocalAttention(6)(h, words, c_code, mask)
    attn = np.asarray(attn)
    for b in range(3):
        assert np.all(attn[b][..., ~mask[b]] == 0.0)
        np.testing.assert_allclose(attn[b].sum(-1), 1.0, rtol=1e-5)
    # The published batch-major mask repeat would give sample 0 other samples' masks; with a
    # one-word caption every pixel must attend to that word only.
    np.testing.assert_allclose(attn[0][..., 0], 1.0, rtol=1e-6)


def test_each_sample_is_independent_of_the_others():
    rng = np.random.default_rng(2)
    h, words, c_code, mask = _inputs(rng, lengths=(2, 5, 3))
    layer = GlobalLocalAttention(6)
    together = [np.asarray(t) for t in layer(h, words, c_code, mask)]
    perm = np.array([2, 0, 1])
    permuted = layer(h[perm], words[perm], c_code[perm], mask[perm])
    for full, part in zip(together, permuted, strict=True):
        np.testing.assert_allclose(np.asarray(part), full[perm], rtol=1e-5, atol=1e-6)
    for b in range(3):
        alone = layer(h[b : b + 1], words[b : b + 1], c_code[b : b + 1], mask[b : b + 1])
        for full, part in zip(together, alone, strict=True):
            np.testing.assert_allclose(np.asarray(part)[0], full[b], rtol=1e-5, atol=1e-6)


def test_padded_word_features_do_not_matter():
    rng = np.random.default_rng(3)
    h, words, c_code, mask = _inputs(rng, lengths=(2, 5, 3))
    layer = GlobalLocalAttention(6)
    changed = words.copy()
    changed[~mask] = rng.normal(size=changed[~mask].shape) * 100
    for a, b in zip(layer(h, words, c_code, mask), layer(h, changed, c_code, mask), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_empty_caption_is_finite_with_zero_attention():
    rng = np.random.default_rng(4)
    h, words, c_code, mask = _inputs(rng, lengths=(0, 5, 3))
    word_ctx, _, attn = GlobalLocalAttention(6)(h, words, c_code, mask)
    assert np.all(np.isfinite(word_ctx)) and np.all(np.asarray(attn)[0] == 0.0)


def test_without_mask_every_word_counts():
    rng = np.random.default_rng(5)
    h, words, c_code, _ = _inputs(rng)
    layer = GlobalLocalAttention(6)
    full = np.ones([3, 5], bool)
    for a, b in zip(layer(h, words, c_code), layer(h, words, c_code, full), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_sentence_attention_is_softmax_over_channels():
    rng = np.random.default_rng(6)
    h, words, c_code, mask = _inputs(rng)
    layer = GlobalLocalAttention(6)
    _, sent_ctx, _ = layer(h, words, c_code, mask)
    s = c_code @ np.asarray(layer.sentence_projection.kernel) + np.asarray(
        layer.sentence_projection.bias
    )
    # sentence_context / s is the channel softmax: positive, sums to 1 over C at each pixel.
    ratio = np.asarray(sent_ctx) / s[:, None, None, :]
    np.testing.assert_allclose(ratio.sum(-1), 1.0, rtol=1e-4)
    assert np.all(ratio > 0)


def test_rejects_wrong_channel_count():
    rng = np.random.default_rng(7)
    h, words, c_code, mask = _inputs(rng)
    with pytest.raises(ValueError, match="channels"):
        GlobalLocalAttention(5)(h, words, c_code, mask)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    rng = np.random.default_rng(8)
    h, words, c_code, mask = _inputs(rng)
    try:
        keras.mixed_precision.set_global_policy(policy)
        layer = GlobalLocalAttention(6)
        word_ctx, sent_ctx, attn = layer(h, words, c_code, mask)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert attn.dtype == "float32"
    for t in (word_ctx, sent_ctx, attn):
        assert np.all(np.isfinite(np.asarray(t, np.float32)))
    assert np.all(np.asarray(attn).transpose(0, 3, 1, 2)[~mask] == 0.0)


def test_config_round_trip_and_save_load(tmp_path):
    layer = GlobalLocalAttention(6, name="att")
    clone = GlobalLocalAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    inputs = [keras.Input([4, 4, 6]), keras.Input([5, 8]), keras.Input([7]),
              keras.Input([5], dtype="bool")]
    model = keras.Model(inputs, list(layer(*inputs)))
    rng = np.random.default_rng(9)
    data = list(_inputs(rng))
    path = str(tmp_path / "attention.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(model(data), loaded(data), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
