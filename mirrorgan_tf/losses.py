"""MirrorGAN's loss terms, each a small function named for what it measures.

All functions take logits (not probabilities) and compute in float32, so they are safe under
mixed precision. References: MirrorGAN (Qiao et al., CVPR 2019) Eqs. 8-10; AttnGAN (Xu et al.,
CVPR 2018) Eqs. 7-13 for the DAMSM terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

# A large finite negative for masked logits: exp() of it is exactly 0 in float32, and unlike
# -inf it cannot turn a fully masked row into NaN.
_MASKED = -1e9


def _f32(x) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def binary_cross_entropy(logits, target: float) -> tf.Tensor:
    """Mean sigmoid cross-entropy of `logits` against a constant label (1 real, 0 fake).

    Args:
        logits: any shape.
        target: 1.0 or 0.0.

    Example:
    >>> float(binary_cross_entropy(tf.zeros([4]), 1.0))  # log 2
    0.6931...
    """
    logits = _f32(logits)
    labels = tf.fill(tf.shape(logits), tf.constant(target, tf.float32))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def masked_binary_cross_entropy(logits, target: float, mask) -> tf.Tensor:
    """Sigmoid cross-entropy of `logits` [B] against a constant label, averaged where `mask`.

    Zero when no row is selected.

    Args:
        logits: `[B]`.
        target: 1.0 or 0.0.
        mask: bool `[B]`, the rows that count.

    Example:
    >>> float(masked_binary_cross_entropy(tf.constant([0.0, 5.0]), 1.0, [True, False]))
    0.6931...
    """
    logits = _f32(logits)
    weight = tf.cast(mask, tf.float32)
    per_row = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), tf.constant(target, tf.float32)), logits=logits
    )
    return tf.reduce_sum(weight * per_row) / tf.maximum(tf.reduce_sum(weight), 1.0)


def discriminator_loss(
    real_uncond, fake_uncond, real_cond, fake_cond, mismatched_cond
) -> tf.Tensor:
    """One discriminator's loss, as in the published code (MirrorGAN Eq. 8, AttnGAN).

    (BCE(uncond(real), 1) + BCE(cond(real, s), 1)) / 2
    + (BCE(uncond(fake), 0) + BCE(cond(fake, s), 0) + BCE(cond(real[:-1], s[1:]), 0)) / 3.

    Args:
        real_uncond: unconditional logits of the real images, [B].
        fake_uncond: unconditional logits of the generated images, [B].
        real_cond: conditional logits of the real images with their own sentences, [B].
        fake_cond: conditional logits of the generated images with their sentences, [B].
        mismatched_cond: conditional logits of real images with the next sample's sentence,
            [B - 1].

    Example:
    >>> z = tf.zeros([3])
    >>> float(discriminator_loss(z, z, z, z, z[:2]))  # 2 * log 2
    1.386...
    """
    real = (binary_cross_entropy(real_uncond, 1.0) + binary_cross_entropy(real_cond, 1.0)) / 2.0
    fake = (
        binary_cross_entropy(fake_uncond, 0.0)
        + binary_cross_entropy(fake_cond, 0.0)
        + binary_cross_entropy(mismatched_cond, 0.0)
    ) / 3.0
    return real + fake


def generator_adversarial_loss(fake_uncond, fake_cond) -> tf.Tensor:
    """One stage's adversarial generator term: BCE(uncond(fake), 1) + BCE(cond(fake, s), 1).

    Args:
        fake_uncond: unconditional logits of the generated images, [B].
        fake_cond: conditional logits of the generated images with their sentences, [B].

    Example:
    >>> float(generator_adversarial_loss(tf.zeros([2]), tf.zeros([2])))
    1.386...
    """
    return binary_cross_entropy(fake_uncond, 1.0) + binary_cross_entropy(fake_cond, 1.0)


def kl_loss(mu, logvar) -> tf.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) of conditioning augmentation, mean over all elements.

    Mean of -0.5 * (1 + logvar - mu^2 - exp(logvar)), as in the published code.

    Args:
        mu: [B, c].
        logvar: [B, c].

    Example:
    >>> float(kl_loss(tf.zeros([2, 3]), tf.zeros([2, 3])))
    0.0
    """
    mu, logvar = _f32(mu), _f32(logvar)
    return tf.reduce_mean(-0.5 * (1.0 + logvar - tf.square(mu) - tf.exp(logvar)))


def caption_loss(logits, captions, lengths) -> tf.Tensor:
    """STREAM's caption cross-entropy (MirrorGAN Eq. 10), mean over the real words.

    `logits[:, t]` predicts `captions[:, t]` (the image feature is STREAM's first input step);
    positions at or past each caption's length are masked out, like PyTorch's packed sequences.

    Args:
        logits: [B, T, V] word logits.
        captions: [B, T] int token ids.
        lengths: [B] caption lengths.

    Example:
    >>> logits = tf.one_hot([[1, 2]], 3) * 100.0
    >>> float(caption_loss(logits, [[1, 2]], [2])) < 1e-6
    True
    """
    logits = _f32(logits)
    captions = tf.cast(captions, tf.int32)
    mask = tf.sequence_mask(lengths, maxlen=tf.shape(captions)[1], dtype=tf.float32)
    per_word = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=captions, logits=logits)
    return tf.reduce_sum(per_word * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def centred_l1_loss(
    fake, real, object_weight: float = 10.0, threshold: float = 0.25
) -> tf.Tensor:
    """L1 between generated images and the real images of their captions, each image less its
    own mean colour, `object_weight` times heavier where the real image stands out.

    Not a MirrorGAN term: a paired pixel loss beside the adversarial one, as pix2pix's (Isola
    et al., 2017; ControlGAN, Li et al., 2019, pairs text-to-image generation with a perceptual
    one), for data whose caption nearly fixes the image (`training.paired_loss_weight`, see
    the README). Removing each image's mean makes the loss blind to a background tone the
    caption does not name, which would otherwise be noise on every background pixel. A pixel
    "stands out" (the object, on the built-in dataset's plain backgrounds) where some channel
    of the centred real image exceeds `threshold` in magnitude.

    Args:
        fake: generated images [B, H, W, C] in [-1, 1].
        real: the real images of the same captions, the same shape.
        object_weight: the weight of the pixels that stand out (the others weigh 1).
        threshold: how far from the image's mean colour a pixel stands out.

    Example:
    >>> real = tf.zeros([1, 4, 4, 3])
    >>> float(centred_l1_loss(real + 0.5, real))  # a different tone alone costs nothing
    0.0
    """
    fake, real = _f32(fake), _f32(real)
    fake = fake - tf.reduce_mean(fake, axis=[1, 2], keepdims=True)
    real = real - tf.reduce_mean(real, axis=[1, 2], keepdims=True)
    salient = tf.reduce_max(tf.abs(real), axis=-1, keepdims=True) > threshold
    weight = 1.0 + (object_weight - 1.0) * tf.cast(salient, tf.float32)
    return tf.reduce_mean(weight * tf.abs(fake - real))


def _same_class_mask(class_ids) -> tf.Tensor:
    """mask[i, j] is True where samples i != j share a class: such pairs are not negatives."""
    class_ids = tf.reshape(class_ids, [-1])
    same = tf.equal(class_ids[:, None], class_ids[None, :])
    return tf.logical_and(same, tf.logical_not(tf.eye(tf.size(class_ids), dtype=tf.bool)))


def _matching_cross_entropy(similarities, class_ids) -> tuple[tf.Tensor, tf.Tensor]:
    """Cross-entropy of a [B images, B captions] similarity matrix in both directions."""
    if class_ids is not None:
        similarities = tf.where(_same_class_mask(class_ids), _MASKED, similarities)
    labels = tf.range(tf.shape(similarities)[0])
    image_to_text = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=similarities)
    )
    text_to_image = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=tf.transpose(similarities)
        )
    )
    return image_to_text, text_to_image


def _cosine(a, b, axis: int = -1, eps: float = 1e-8) -> tf.Tensor:
    dot = tf.reduce_sum(a * b, axis=axis)
    norm = tf.norm(a, axis=axis) * tf.norm(b, axis=axis)
    return dot / tf.maximum(norm, eps)


def damsm_sentence_loss(
    image_global, sentence, class_ids=None, gamma3: float = 10.0
) -> tuple[tf.Tensor, tf.Tensor]:
    """DAMSM sentence loss (AttnGAN Eqs. 10-13 on global features), both directions.

    Scores are gamma3 x cosine(image_i, sentence_j); same-class negatives are masked.

    Args:
        image_global: [B, nef] global image features.
        sentence: [B, nef] sentence features.
        class_ids: optional [B] class ids; pairs of different samples of one class are not
            used as negatives.
        gamma3: the scale of the scores.

    Returns:
        (image-to-text loss, text-to-image loss).

    Example:
    >>> x = tf.eye(4)
    >>> [round(float(v), 4) for v in damsm_sentence_loss(x, x, gamma3=100.0)]
    [0.0, 0.0]
    """
    image_global, sentence = _f32(image_global), _f32(sentence)
    similarities = gamma3 * _cosine(image_global[:, None, :], sentence[None, :, :])
    return _matching_cross_entropy(similarities, class_ids)


def damsm_word_similarities(
    regions, words, lengths, gamma1: float = 4.0, gamma2: float = 5.0
) -> tuple[tf.Tensor, tf.Tensor]:
    """Word-level image-text matching scores R(Q, D) of AttnGAN Eqs. 7-10, for every pair.

    For image j and caption i: attention of each region over caption i's words (softmax over
    words, Eq. 8), then of each word over the regions sharpened by gamma1 (Eq. 9); the
    region-context c_t of each word; R = log(sum_t exp(gamma2 * cos(c_t, e_t))) over the
    caption's real words (Eq. 10). Padded words take no part, as when the published code
    slices each caption to its length.

    Args:
        regions: [B_img, H, W, nef] region features.
        words: [B_cap, T, nef] word features.
        lengths: [B_cap] caption lengths.
        gamma1: attention sharpness over regions.
        gamma2: word aggregation.

    Returns:
        (similarities [B_img, B_cap], attention [B_img, B_cap, T, H*W] over regions).

    Example:
    >>> sims, _ = damsm_word_similarities(tf.ones([2, 3, 3, 4]), tf.ones([2, 5, 4]), [5, 2])
    >>> sims.shape
    TensorShape([2, 2])
    """
    regions, words = _f32(regions), _f32(words)
    shape = tf.shape(regions)
    regions = tf.reshape(regions, [shape[0], shape[1] * shape[2], shape[3]])  # [Bi, R, D]
    word_mask = tf.sequence_mask(lengths, maxlen=tf.shape(words)[1])  # [Bc, T]
    # Eq. 7: scores of every region r of image j against every word t of caption i.
    scores = tf.einsum("jrd,itd->jirt", regions, words)
    # Eq. 8: normalise over the caption's real words.
    scores = tf.where(word_mask[None, :, None, :], scores, _MASKED)
    attn = tf.nn.softmax(scores, axis=-1)
    # Eq. 9: each word attends to the regions, sharpened by gamma1.
    attn = tf.nn.softmax(gamma1 * tf.transpose(attn, [0, 1, 3, 2]), axis=-1)  # [Bi, Bc, T, R]
    context = tf.einsum("jitr,jrd->jitd", attn, regions)
    # Eq. 10: aggregate the word relevances of the real words.
    relevance = tf.exp(gamma2 * _cosine(context, words[None]))  # [Bi, Bc, T]
    relevance = tf.where(word_mask[None], relevance, 0.0)
    similarities = tf.math.log(tf.reduce_sum(relevance, axis=-1))
    return similarities, attn


def damsm_word_loss(
    regions,
    words,
    lengths,
    class_ids=None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """DAMSM word loss (AttnGAN Eqs. 7-13 on region and word features), both directions.

    Args:
        regions: [B, H, W, nef] region features.
        words: [B, T, nef] word features.
        lengths: [B] caption lengths.
        class_ids: optional [B] class ids for masking same-class negatives.
        gamma1: attention sharpness over regions.
        gamma2: word aggregation.
        gamma3: the scale of the scores.

    Returns:
        (image-to-text loss, text-to-image loss).

    Example:
    >>> loss0, loss1 = damsm_word_loss(tf.random.normal([3, 2, 2, 4]),
    ...                                tf.random.normal([3, 5, 4]), [5, 3, 1])
    """
    similarities, _ = damsm_word_similarities(regions, words, lengths, gamma1, gamma2)
    return _matching_cross_entropy(gamma3 * similarities, class_ids)


def named_groups(token_ids, groups: Sequence[Sequence[int]]) -> tf.Tensor:
    """Which of G groups of token ids each caption holds a word of: a [B, G] float32 multi-hot.

    Args:
        token_ids: [B, T] token ids (0 pads).
        groups: G groups of token ids (e.g. the ids of `circle`, `disc` and `round` in one).

    Example:
    >>> named_groups(tf.constant([[5, 2], [7, 0]]), [[5], [6, 7], [9]]).numpy().tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    ids = tf.constant([i for group in groups for i in group], tf.int32)
    group_of = tf.constant([g for g, group in enumerate(groups) for _ in group], tf.int32)
    match = tf.cast(tf.equal(tf.cast(token_ids, tf.int32)[..., None], ids), tf.float32)
    return tf.reduce_max(match[..., None] * tf.one_hot(group_of, len(groups)), axis=[1, 2])


def swap_group_words(
    token_ids, groups: Sequence[Sequence[int]], offset
) -> tuple[tf.Tensor, tf.Tensor]:
    """Each word of one of G groups replaced by the first (canonical) word of another group.

    A word of group g becomes the first word of group (g + offset) % G, so an offset in
    [1, G) always picks another group (e.g. "circle" becomes "star"). Used for the
    shape-swapped negatives of the discriminators (`training.swap_negatives`).

    Args:
        token_ids: [B, T] token ids.
        groups: G >= 2 groups of distinct token ids, canonical word first.
        offset: int32 [B, T], the group offset of each token (only words of a group use it).

    Returns:
        The swapped token ids [B, T] and, per caption, whether any word was replaced [B].

    Example:
    >>> ids, swapped = swap_group_words(tf.constant([[5, 2], [4, 0]]), [[5], [6, 7], [9]],
    ...                                 tf.constant([[2, 1], [1, 1]]))
    >>> ids.numpy().tolist(), swapped.numpy().tolist()
    ([[9, 2], [4, 0]], [True, False])
    """
    token_ids = tf.cast(token_ids, tf.int32)
    ids = tf.constant([i for group in groups for i in group], tf.int32)
    group_of = tf.constant([g for g, group in enumerate(groups) for _ in group], tf.int32)
    canonical = tf.constant([group[0] for group in groups], tf.int32)
    match = tf.equal(token_ids[..., None], ids)  # [B, T, K]
    is_word = tf.reduce_any(match, axis=-1)
    group = tf.reduce_sum(tf.cast(match, tf.int32) * group_of, axis=-1)
    replaced = tf.gather(canonical, (group + offset) % len(groups))
    return tf.where(is_word, replaced, token_ids), tf.reduce_any(is_word, axis=-1)


def keyword_code_loss(
    sentence, token_ids, groups: Sequence[Sequence[int]], gamma3: float = 10.0
) -> tf.Tensor:
    """Teaches the first G dimensions of the sentence to name the caption's keyword groups.

    NOT in the published code: a recipe option of DAMSM pretraining (`training.
    damsm_keywords`). For each caption that holds a word of at least one of the G groups
    (e.g. the words for each shape), the cross-entropy of softmax(gamma3 x sentence[:G] /
    |sentence|) against the groups it names (shared evenly when it names several). The
    sentence then carries a plain code of the group, as strong as its other directions,
    learnt from the text alone; captions naming no group add nothing.

    Args:
        sentence: [B, D] sentence features, D >= G.
        token_ids: [B, T] token ids (0 pads).
        groups: G groups of token ids (e.g. the ids of `circle`, `disc` and `round` in one).
        gamma3: the scale of the scores (DAMSM's gamma3).

    Returns:
        Scalar: the mean over the captions naming a group (0 when none does).

    Example:
    >>> sentence = tf.constant([[8.0, 0.0, 0.0], [0.0, 0.0, 8.0]])
    >>> token_ids = tf.constant([[5, 2], [3, 0]])  # 5 names group 0; the second names none
    >>> round(float(keyword_code_loss(sentence, token_ids, [[5], [6, 7]])), 4)
    0.0
    """
    sentence = _f32(sentence)
    named = named_groups(token_ids, groups)
    count = tf.reduce_sum(named, -1, keepdims=True)
    has = tf.cast(count[:, 0] > 0, tf.float32)
    norm = tf.maximum(tf.norm(sentence, axis=-1, keepdims=True), 1e-8)
    logits = gamma3 * sentence[:, : len(groups)] / norm
    terms = tf.nn.softmax_cross_entropy_with_logits(named / tf.maximum(count, 1.0), logits)
    return tf.reduce_sum(terms * has) / tf.maximum(tf.reduce_sum(has), 1.0)


def cell_code_width(classes: Sequence[int], num_cells: int) -> int:
    """The sentence dimensions `cell_code_loss` uses: `num_cells` x the sum of `classes`.

    Args:
        classes: the number of classes of each attribute of a cell.
        num_cells: the number of cells.

    Example:
    >>> cell_code_width((9, 5, 2), 9)
    144
    """
    return num_cells * sum(int(c) for c in classes)


def _cell_code_blocks(sentence, classes: Sequence[int], num_cells: int) -> list[tf.Tensor]:
    """The cell code's logits, one float32 [B, num_cells, count] block per attribute."""
    classes = [int(c) for c in classes]
    width = cell_code_width(classes, num_cells)
    if sentence.shape[-1] is not None and sentence.shape[-1] < width:
        raise ValueError(
            f"the cell code needs {width} sentence dimensions ({num_cells} cells x "
            f"{sum(classes)} classes); the sentence has {sentence.shape[-1]}."
        )
    code = tf.reshape(_f32(sentence)[:, :width], [-1, num_cells, sum(classes)])
    starts = [sum(classes[:i]) for i in range(len(classes))]
    return [code[:, :, start : start + count]
            for start, count in zip(starts, classes, strict=True)]


def cell_code_loss(sentence, cell_labels, classes: Sequence[int]) -> tf.Tensor:
    """Teaches the first dimensions of the sentence to say what each cell of a scene holds.

    NOT in the published code: a recipe option of DAMSM pretraining (`training.
    damsm_cell_code_weight`) for data that says where its objects are (the built-in dataset's
    `SceneSpec.cell_labels`). Cell k owns `sum(classes)` consecutive dimensions starting at
    k x `sum(classes)`, one logit per class of each attribute in turn (for the built-in
    dataset: 8 colours and "empty", 5 shapes, 2 sizes). The loss is the softmax
    cross-entropy of every (cell, attribute) whose label is not -1, summed over the cells
    and attributes and averaged over the batch. Unlike the sentence's own directions, this
    code is additive over the objects: "red circle top left and blue star centre" and
    "blue circle top left and red star centre" differ in it where a bag of words does not.

    Args:
        sentence: [B, D] sentence features, D >= `cell_code_width(classes, C)`.
        cell_labels: int [B, C, A]: the class of each of A attributes of each of C cells,
            -1 where the attribute does not apply (the shape of an empty cell).
        classes: A class counts, one per attribute.

    Returns:
        Scalar: the mean over the batch.

    Example:
    >>> sentence = tf.constant([[9.0, 0.0, 0.0, 9.0, 0.0, 9.0, 9.0, 0.0]])
    >>> labels = tf.constant([[[0, 1], [1, -1]]])  # cell 0: class 0, class 1; cell 1: class 1
    >>> round(float(cell_code_loss(sentence, labels, (2, 2))), 4)
    0.0004
    """
    labels = tf.cast(cell_labels, tf.int32)
    total = 0.0
    for attribute, block in enumerate(_cell_code_blocks(sentence, classes, labels.shape[1])):
        label = labels[:, :, attribute]
        applies = tf.cast(label >= 0, tf.float32)
        terms = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(label, 0), block)
        total += tf.reduce_sum(terms * applies, axis=1)
    return tf.reduce_mean(total)


def read_cell_code(sentence, classes: Sequence[int], num_cells: int) -> tf.Tensor:
    """What the cell code of `cell_code_loss` says: the largest logit's class, int32 [B, C, A].

    Args:
        sentence: [B, D] sentence features.
        classes: the class count of each attribute of a cell.
        num_cells: the number of cells.

    Raises:
        ValueError: if the sentence is narrower than `cell_code_width(classes, num_cells)`.

    Example:
    >>> sentence = tf.constant([[9.0, 0.0, 0.0, 9.0, 0.0, 9.0, 9.0, 0.0]])
    >>> read_cell_code(sentence, (2, 2), 2).numpy().tolist()
    [[[0, 1], [1, 0]]]
    """
    return tf.stack([
        tf.argmax(block, axis=-1, output_type=tf.int32)
        for block in _cell_code_blocks(sentence, classes, num_cells)
    ], axis=-1)
