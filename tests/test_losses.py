"""Loss terms against loop-by-loop NumPy restatements of the published PyTorch code."""

import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf import losses


def _softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _ce(logits, labels):
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean()


def _masks(class_ids):
    b = len(class_ids)
    masks = np.zeros([b, b], bool)
    for i in range(b):
        mask = class_ids == class_ids[i]
        mask[i] = False
        masks[i] = mask
    return masks


def _reference_words_loss(regions, words, lengths, class_ids, g1, g2, g3):
    """AttnGAN's words_loss, one caption at a time, as published (NCHW replaced by NHWC)."""
    b = regions.shape[0]
    context = regions.reshape(b, -1, regions.shape[-1])  # [B, R, D]
    sims = np.zeros([b, b])
    for i in range(b):
        word = words[i, : lengths[i]]  # [L, D]
        for j in range(b):
            attn = context[j] @ word.T  # [R, L]
            attn = _softmax(attn, axis=1)  # Eq. 8: over words
            attn = _softmax(g1 * attn.T, axis=1)  # Eq. 9: over regions, [L, R]
            weighted = attn @ context[j]  # [L, D]
            cos = (word * weighted).sum(1) / np.maximum(
                np.linalg.norm(word, axis=1) * np.linalg.norm(weighted, axis=1), 1e-8
            )
            sims[j, i] = np.log(np.exp(g2 * cos).sum())
    sims = sims * g3
    sims[_masks(class_ids)] = -np.inf
    labels = np.arange(b)
    return _ce(sims, labels), _ce(sims.T, labels)


def _reference_sent_loss(image, sentence, class_ids, g3):
    norm = np.linalg.norm(image, axis=1)[:, None] * np.linalg.norm(sentence, axis=1)[None]
    scores = image @ sentence.T / np.maximum(norm, 1e-8) * g3
    scores[_masks(class_ids)] = -np.inf
    labels = np.arange(len(image))
    return _ce(scores, labels), _ce(scores.T, labels)


def test_damsm_word_loss_matches_published_loop():
    rng = np.random.default_rng(0)
    regions = rng.normal(size=[5, 3, 3, 8]).astype("float32")
    words = rng.normal(size=[5, 6, 8]).astype("float32")
    lengths = np.array([6, 1, 3, 4, 2])
    class_ids = np.array([0, 1, 0, 2, 1])
    # Padded positions hold garbage: they must not matter.
    words[1, 1:] = 100.0
    got = losses.damsm_word_loss(regions, words, lengths, class_ids, 4.0, 5.0, 10.0)
    want = _reference_words_loss(regions, words, lengths, class_ids, 4.0, 5.0, 10.0)
    np.testing.assert_allclose([float(g) for g in got], want, rtol=1e-4, atol=1e-4)


def test_damsm_sentence_loss_matches_published():
    rng = np.random.default_rng(1)
    image = rng.normal(size=[6, 8]).astype("float32")
    sentence = rng.normal(size=[6, 8]).astype("float32")
    class_ids = np.array([3, 3, 1, 2, 1, 0])
    got = losses.damsm_sentence_loss(image, sentence, class_ids, gamma3=10.0)
    want = _reference_sent_loss(image, sentence, class_ids, 10.0)
    np.testing.assert_allclose([float(g) for g in got], want, rtol=1e-5, atol=1e-5)


def test_same_class_negatives_do_not_count():
    rng = np.random.default_rng(2)
    image = rng.normal(size=[4, 8]).astype("float32")
    sentence = rng.normal(size=[4, 8]).astype("float32")
    # Make sample 1's sentence identical to sample 0's image: a strong negative for row 0...
    sentence[1] = image[0] * 5
    unmasked = losses.damsm_sentence_loss(image, sentence, [0, 1, 2, 3])[0]
    # ...unless samples 0 and 1 share a class, in which case it is masked out.
    masked = losses.damsm_sentence_loss(image, sentence, [0, 0, 2, 3])[0]
    assert float(masked) < float(unmasked)



def test_swap_group_words_moves_each_group_word_by_its_offset():
    groups = [[3, 4], [5], [6, 7]]
    ids = tf.constant([[3, 9, 7, 0], [9, 9, 0, 0], [4, 5, 2, 0]])
    offset = tf.constant([[1, 2, 2, 1], [1, 1, 1, 1], [2, 1, 1, 2]])
    swapped, flags = losses.swap_group_words(ids, groups, offset)
    # 3 (group 0) + 1 -> group 1's 5; 7 (group 2) + 2 -> group 1's 5; 4 + 2 -> 6; 5 + 1 -> 6.
    assert swapped.numpy().tolist() == [[5, 9, 5, 0], [9, 9, 0, 0], [6, 6, 2, 0]]
    assert flags.numpy().tolist() == [True, False, True]


def test_keyword_code_loss_matches_a_loop_and_skips_captions_naming_no_group():
    rng = np.random.default_rng(3)
    sentence = rng.normal(size=[4, 6]).astype("float32")
    groups = [[5], [6, 7], [9]]
    token_ids = np.array([[5, 2, 0], [7, 6, 3], [2, 3, 4], [9, 5, 0]], np.int32)
    got = float(losses.keyword_code_loss(sentence, token_ids, groups, gamma3=10.0))
    terms = []
    for row, ids in zip(sentence, token_ids, strict=True):
        named = np.array([any(i in g for i in ids) for g in groups], np.float64)
        if not named.any():  # caption 2 names no group: no term
            continue
        logits = 10.0 * row[:3] / np.linalg.norm(row)
        log_p = logits - np.log(np.exp(logits).sum())
        terms.append(-(named / named.sum() * log_p).sum())  # caption 3 names two groups
    assert len(terms) == 3
    assert got == pytest.approx(np.mean(terms), rel=1e-5)
    # A sentence whose first dimensions name the group scores near 0; none named: exactly 0.
    plain = np.zeros([1, 6], np.float32)
    plain[0, 1] = 8.0
    assert float(losses.keyword_code_loss(plain, [[6, 0, 0]], groups)) < 1e-3
    assert float(losses.keyword_code_loss(plain, [[2, 3, 0]], groups)) == 0.0

def test_cell_code_loss_matches_a_loop_and_skips_attributes_that_do_not_apply():
    rng = np.random.default_rng(4)
    classes = (3, 2)  # 2 cells x 5 dims
    sentence = rng.normal(size=[3, 12]).astype("float32")  # 2 spare dimensions
    labels = np.array([[[0, 1], [2, -1]], [[1, 0], [1, 1]], [[2, -1], [2, -1]]], np.int32)
    got = float(losses.cell_code_loss(sentence, labels, classes))
    total = 0.0
    for row, cells in zip(sentence, labels, strict=True):
        for cell, cell_labels in enumerate(cells):
            start = 5 * cell
            for count, label in zip(classes, cell_labels, strict=True):
                logits = row[start : start + count].astype(np.float64)
                start += count
                if label >= 0:
                    total -= logits[label] - np.log(np.exp(logits).sum())
    assert got == pytest.approx(total / 3, rel=1e-5)
    # The code read back is the labels, where they apply; a code written from the labels
    # scores near 0; a sentence too narrow for the code is refused by both.
    code = np.zeros([3, 12], np.float32)
    for b, cells in enumerate(labels):
        for cell, (first, second) in enumerate(cells):
            code[b, 5 * cell + first] = 20.0
            code[b, 5 * cell + 3 + max(second, 0)] = 20.0
    assert float(losses.cell_code_loss(code, labels, classes)) < 1e-6
    read = losses.read_cell_code(code, classes, 2).numpy()
    np.testing.assert_array_equal(np.where(labels < 0, 0, labels), read)
    assert losses.cell_code_width(classes, 2) == 10
    with pytest.raises(ValueError, match="needs 10 sentence dimensions"):
        losses.cell_code_loss(sentence[:, :8], labels, classes)
    with pytest.raises(ValueError, match="needs 10 sentence dimensions"):
        losses.read_cell_code(sentence[:, :8], classes, 2)


def test_discriminator_and_generator_losses():
    real = tf.constant([2.0, -1.0, 0.5])
    fake = tf.constant([-3.0, 0.2, 1.0])

    def bce(x, y):
        p = 1 / (1 + np.exp(-np.asarray(x, "float64")))
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))

    got = losses.discriminator_loss(real, fake, real * 2, fake * 2, real[:2])
    want = (bce(real, 1) + bce(real * 2, 1)) / 2 + (
        bce(fake, 0) + bce(fake * 2, 0) + bce(real[:2], 0)
    ) / 3
    assert float(got) == pytest.approx(want, rel=1e-5)
    got = losses.generator_adversarial_loss(fake, fake * 2)
    assert float(got) == pytest.approx(bce(fake, 1) + bce(fake * 2, 1), rel=1e-5)


def test_centred_l1_loss_matches_a_pixel_loop_and_ignores_the_tone():
    rng = np.random.default_rng(0)
    real = rng.uniform(-0.1, 0.1, [2, 6, 6, 3]).astype("float32")
    real[0, 1:3, 2:4] = [0.8, -0.6, -0.6]  # an object that stands out of its background
    fake = rng.uniform(-1, 1, [2, 6, 6, 3]).astype("float32")
    total = 0.0
    for b in range(2):
        r, f = real[b] - real[b].mean((0, 1)), fake[b] - fake[b].mean((0, 1))
        for y in range(6):
            for x in range(6):
                weight = 10.0 if np.abs(r[y, x]).max() > 0.25 else 1.0
                total += weight * np.abs(f[y, x] - r[y, x]).sum()
    got = losses.centred_l1_loss(fake, real)
    assert float(got) == pytest.approx(total / fake.size, rel=1e-5)
    tone = np.array([0.3, -0.2, 0.1], "float32")  # another background tone for each
    assert float(losses.centred_l1_loss(fake + tone, real - tone)) == pytest.approx(
        float(got), rel=1e-5
    )
    assert float(losses.centred_l1_loss(real + tone, real)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.centred_l1_loss(fake, real, object_weight=1.0)) < float(got)


def test_kl_loss_matches_formula():
    mu = np.array([[0.5, -1.0]], "float32")
    logvar = np.array([[0.2, -0.3]], "float32")
    want = np.mean(-0.5 * (1 + logvar - mu**2 - np.exp(logvar)))
    assert float(losses.kl_loss(mu, logvar)) == pytest.approx(want, rel=1e-6)


def test_caption_loss_ignores_positions_past_length():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=[2, 4, 7]).astype("float32")
    captions = np.array([[1, 2, 3, 0], [4, 0, 0, 0]])
    lengths = np.array([3, 1])
    got = float(losses.caption_loss(logits, captions, lengths))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    terms = [-logp[0, t, captions[0, t]] for t in range(3)] + [-logp[1, 0, 4]]
    assert got == pytest.approx(np.mean(terms), rel=1e-5)
    logits[1, 2:] = 1000.0  # past the length: no effect
    assert float(losses.caption_loss(logits, captions, lengths)) == pytest.approx(got, rel=1e-6)


def test_losses_accept_half_precision_inputs():
    logits = tf.constant([[0.5, -0.5]], tf.float16)
    assert losses.binary_cross_entropy(logits, 1.0).dtype == tf.float32
    regions = tf.random.normal([2, 2, 2, 4], dtype=tf.float32)
    words = tf.random.normal([2, 3, 4])
    out = losses.damsm_word_loss(tf.cast(regions, tf.bfloat16), tf.cast(words, tf.bfloat16), [3, 2])
    assert all(np.isfinite(float(v)) for v in out)
