"""Caption tokenizer built from core TensorFlow ops, shared by training and serving.

`Tokenizer` reproduces `tokenize_text` (`re.findall(r"\\w+", caption.lower())` in Python)
with `tf.strings` ops and a `tf.lookup.StaticHashTable`, so it runs inside `tf.data`, traces
into a `tf.function` and loads from a SavedModel in plain TensorFlow (no tensorflow_text).

Known residual differences with the Python rule (measured on every code point, TF 2.21 with
Python 3.11 / Unicode 14.0): RE2's Unicode tables are newer than Python 3.11's, so 4,388
characters assigned after Unicode 14.0 (e.g. Kawi, U+11F00..) are word characters here but not
in Python 3.11; ICU's lowercase tables in TF lack ~40 mappings added in Unicode 14.0
(Vithkuqi U+10570.., U+2C2F, U+A7C0, U+A7D0, U+A7D6, U+A7D8). Captions in the published data
sets use none of them.
"""

from __future__ import annotations

import os
import re

import tensorflow as tf

from mirrorgan_tf.data.vocabulary import Vocabulary

# Python's `\w` for str patterns is `ch.isalnum() or ch == "_"`: the letter categories
# (Lu, Ll, Lt, Lm, Lo) and the number categories (Nd, Nl, No), underscore included, and
# nothing else -- combining marks (\p{M}) are NOT word characters, so "e\u0301" splits after
# "e" in Python too. RE2's `\w` is ASCII-only, hence the explicit classes (checked against
# `re.fullmatch(r"\w", ch)` for all code points in tests/data/test_tokenizer.py).
_NON_WORD = r"[^\p{L}\p{N}_]+"


_WORD = re.compile(r"\w+")


def tokenize_text(caption: str | bytes) -> list[str]:
    """Splits a caption into lowercase words: `re.findall(r"\\w+", caption.lower())`.

    This is the one tokenization rule of the package (`Vocabulary.from_corpus` uses it and
    `Tokenizer` reproduces it with TensorFlow ops). It follows the published loader
    (`RegexpTokenizer(r"\\w+")` on `caption.lower()`) except that the published code also
    dropped non-ASCII characters inside words ("café" -> "caf"); here words keep them.

    Args:
        caption: the caption text; bytes are decoded as UTF-8 with invalid bytes replaced.

    Returns:
        The words, in order (an empty list for a caption without word characters).

    Example:
        >>> tokenize_text("A small bird, with red-brown wings.")
        ['a', 'small', 'bird', 'with', 'red', 'brown', 'wings']
    """
    if isinstance(caption, bytes):
        caption = caption.decode("utf-8", errors="replace")
    return _WORD.findall(caption.lower())


class Tokenizer(tf.Module):
    """Maps caption strings to padded token ids with core TensorFlow ops.

    Lowercases (Unicode-aware), splits into `\\w+` words, maps unknown words to
    `vocabulary.oov_id` and captions without words to a single `oov_id` (never an empty
    sequence). Invalid UTF-8 is replaced by U+FFFD first, so any bytes tokenize.

    Args:
        vocabulary: the `Vocabulary` giving the ids.
        max_length: the length of the id sequences (the published birds setting is 18).
        vocabulary_file: optional path of `vocabulary` saved with `Vocabulary.save`; the lookup
            table is then initialised from this file, which a SavedModel keeps as an asset.
        name: the module name.

    Example:
        >>> vocab = Vocabulary.from_corpus(["a small red bird", "a blue bird"])
        >>> tokenizer = Tokenizer(vocab, max_length=4)
        >>> ids, lengths = tokenizer(tf.constant(["A red bird!", ""]))
        >>> ids.numpy().tolist(), lengths.numpy().tolist()
        ([[2, 5, 3, 0], [1, 0, 0, 0]], [3, 1])
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        max_length: int,
        vocabulary_file: str | os.PathLike | None = None,
        name: str | None = None,
    ):
        super().__init__(name=name)
        if not isinstance(vocabulary, Vocabulary):
            raise TypeError(f"vocabulary must be a Vocabulary, got {type(vocabulary).__name__}")
        if int(max_length) != max_length or max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        # === Config ===
        self.vocabulary = vocabulary
        self.max_length = int(max_length)
        self.oov_id = vocabulary.oov_id
        self.vocab_size = vocabulary.size
        self.vocabulary_file = None if vocabulary_file is None else os.fspath(vocabulary_file)
        # === Lookup table ===
        if self.vocabulary_file is None:
            initializer = tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocabulary.words, tf.string),
                tf.range(vocabulary.size, dtype=tf.int64),
            )
        else:
            if Vocabulary.load(self.vocabulary_file) != vocabulary:
                raise ValueError(
                    f"{self.vocabulary_file} does not hold the given vocabulary; write it with "
                    "vocabulary.save() or use Tokenizer.from_vocabulary_file()"
                )
            # A file initialiser makes the SavedModel carry the vocabulary as an asset.
            initializer = tf.lookup.TextFileInitializer(
                self.vocabulary_file,
                key_dtype=tf.string,
                key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                value_dtype=tf.int64,
                value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            )
        self._table = tf.lookup.StaticHashTable(initializer, default_value=self.oov_id)

    @classmethod
    def from_vocabulary_file(cls, path: str | os.PathLike, max_length: int) -> Tokenizer:
        """A tokenizer whose table is read from a vocabulary file (a SavedModel asset).

        Args:
            path: a file written by `Vocabulary.save` (one word per line, line i = id i).
            max_length: the length of the id sequences.

        Example:
            >>> tokenizer = Tokenizer.from_vocabulary_file("vocab.txt", max_length=18)
        """
        return cls(Vocabulary.load(path), max_length, vocabulary_file=path)

    # --- Tokenization ---------------------------------------------------------------------

    def words(self, captions: tf.Tensor) -> tf.RaggedTensor:
        """The lowercase words of each caption, `tf.string` ragged `[batch, None]`.

        Args:
            captions: `tf.string` `[batch]`.

        Example:
            >>> tokenizer.words(tf.constant(["A red-brown bird."])).to_list()
            [[b'a', b'red', b'brown', b'bird']]
        """
        captions = tf.convert_to_tensor(captions, tf.string)
        captions = tf.strings.unicode_transcode(
            captions, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        # tf.strings.lower stops at a NUL character; NUL is not a word character anyway.
        captions = tf.strings.regex_replace(captions, r"\x00", " ")
        captions = tf.strings.lower(captions, encoding="utf-8")
        captions = tf.strings.regex_replace(captions, _NON_WORD, " ")
        return tf.strings.split(captions)

    def _lookup(self, words: tf.RaggedTensor) -> tf.RaggedTensor:
        return tf.ragged.map_flat_values(lambda w: tf.cast(self._table.lookup(w), tf.int32), words)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, captions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Tokenizes a batch of captions, truncating long ones (inference mode).

        Args:
            captions: `tf.string` `[batch]`.

        Returns:
            `(token_ids, lengths)`: int32 `[batch, max_length]` (0-padded) and int32 `[batch]`
            (at least 1: a caption without words gives `[oov_id]`).
        """
        ids = self._lookup(self.words(captions))
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        dense = ids.to_tensor(default_value=0, shape=[None, self.max_length])
        first = tf.where(lengths > 0, dense[:, 0], self.oov_id)
        dense = tf.concat([first[:, None], dense[:, 1:]], axis=1)
        return dense, tf.clip_by_value(lengths, 1, self.max_length)

    def tokenize_for_training(self, caption: tf.Tensor, seed) -> tuple[tf.Tensor, tf.Tensor]:
        """Tokenizes one caption, keeping a random ordered subset of an over-long caption.

        As the published loader (`get_caption`): a caption with more than `max_length` words
        keeps `max_length` of them chosen at random, in their original order. Stateless random
        ops make the choice a function of `seed` only.

        Args:
            caption: scalar `tf.string`.
            seed: int `[2]` (or a scalar int) for `tf.random.stateless_uniform`.

        Returns:
            `(token_ids, length)`: int32 `[max_length]` and an int32 scalar.

        Example:
            >>> ids, length = tokenizer.tokenize_for_training(tf.constant("a red bird"), [1, 2])
        """
        caption = tf.convert_to_tensor(caption, tf.string)
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        if seed.shape.rank == 0:
            seed = tf.stack([seed, tf.constant(0, tf.int64)])
        ids = self._lookup(self.words(tf.reshape(caption, [1]))).flat_values
        # No words -> [oov_id], as in __call__.
        ids = tf.concat([ids, [self.oov_id]], axis=0)[: tf.maximum(tf.size(ids), 1)]
        count = tf.size(ids)
        length = tf.minimum(count, self.max_length)
        scores = tf.random.stateless_uniform([count], seed=seed)
        keep = tf.sort(tf.math.top_k(scores, k=length).indices)
        ids = tf.gather(ids, keep)
        ids = tf.pad(ids, [[0, self.max_length - length]])
        return tf.ensure_shape(ids, [self.max_length]), length
