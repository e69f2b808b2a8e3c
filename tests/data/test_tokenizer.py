"""Tests for mirrorgan_tf/data/tokenizer.py."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.data.tokenizer import Tokenizer, tokenize_text
from mirrorgan_tf.data.vocabulary import Vocabulary

TRICKY = [
    "A small bird with a red-brown crown, and white wings.",
    "this bird's beak is 2.5 cm long; it has 3 toes!!!",
    "Café crème with a dash of ÄRGER and Ärger",
    "ΈΝΑ ΜΙΚΡΌ ΠΟΥΛΊ ΟΔΟΣ ΣΑ",  # Greek, with a word-final sigma
    "一只小鸟 站在 树枝上",  # CJK
    "a bird 🐦 with 🌈 colours 🎨",
    "",
    "   ",
    "?!... --- ,,,",
    "a   bird\twith\ttabs\nand\n\nnewlines\r\nend",
    "snake_case under_score __dunder__ _",
    "e\u0301t\u00e9 na\u0308ive",  # combining marks are not word characters in Python
    "İstanbul ǅemal Ⅻ ½ ²",  # lowercasing that changes length; letter numbers; No digits
    "x" * 10_000,
    ("bird " * 2_000).strip(),
    "the quick brown fox jumps over the lazy dog " * 200,
    "نقار الخشب على الشجرة",  # Arabic
    "a\x00b nul",
    "tab\u00a0nbsp\u2003em\u3000ideographic",
]
MAX_LENGTH = 8


def _reference_ids(caption: str, vocab: Vocabulary, max_length: int) -> tuple[list[int], int]:
    words = re.findall(r"\w+", caption.lower())
    ids = [vocab.word_to_id(w) for w in words][:max_length] or [vocab.oov_id]
    return ids + [0] * (max_length - len(ids)), len(ids)


@pytest.fixture(scope="module")
def vocab():
    # Built from half of the captions so the other half exercises unknown words.
    return Vocabulary.from_corpus(TRICKY[::2])


@pytest.fixture(scope="module")
def tokenizer(vocab):
    return Tokenizer(vocab, max_length=MAX_LENGTH)


def test_tokenize_text_is_python_regex():
    for caption in TRICKY:
        assert tokenize_text(caption) == re.findall(r"\w+", caption.lower())
    assert tokenize_text(b"\xff\xfe Bird") == ["bird"]


def test_tricky_captions_match_python_reference(vocab, tokenizer):
    ids, lengths = tokenizer(tf.constant(TRICKY))
    assert ids.dtype == tf.int32 and lengths.dtype == tf.int32
    assert ids.shape == (len(TRICKY), MAX_LENGTH)
    for i, caption in enumerate(TRICKY):
        expected_ids, expected_length = _reference_ids(caption, vocab, MAX_LENGTH)
        assert ids[i].numpy().tolist() == expected_ids, repr(caption[:60])
        assert int(lengths[i]) == expected_length, repr(caption[:60])
    # Unknown words really occur and map to <unk>.
    assert (ids.numpy() == vocab.oov_id).sum() > 3


def test_words_match_python_reference(tokenizer):
    words = tokenizer.words(tf.constant(TRICKY)).to_list()
    for caption, got in zip(TRICKY, words, strict=True):
        expected = re.findall(r"\w+", caption.lower())
        assert [w.decode("utf-8") for w in got] == expected, repr(caption[:60])


def test_long_captions_are_untruncated_by_words(tokenizer):
    words = tokenizer.words(tf.constant(["x" * 10_000, ("bird " * 2_000).strip()]))
    assert words.row_lengths().numpy().tolist() == [1, 2_000]
    assert len(words[0, 0].numpy()) == 10_000


def test_word_characters_match_python_for_all_assigned_code_points():
    # Python's \w versus the tokenizer's class, on every character assigned in Python's
    # Unicode version (characters assigned later are the documented residual difference).
    chars = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]
    python = np.array([bool(re.fullmatch(r"\w", ch)) for ch in chars])
    from mirrorgan_tf.data.tokenizer import _NON_WORD

    tf_word = ~tf.strings.regex_full_match(tf.constant(chars), _NON_WORD).numpy()
    mismatched = [f"U+{ord(chars[i]):04X}" for i in np.nonzero(python != tf_word)[0]]
    assert not mismatched, mismatched[:20]


def test_invalid_utf8_does_not_crash(vocab, tokenizer):
    raw = [b"\xff\xfe bird", b"\xc3", b"caf\xc3\xa9 \x80bird", b"\xed\xa0\x80wing\xf4\x90\x80\x80"]
    ids, lengths = tokenizer(tf.constant(raw))
    bird = vocab.word_to_id("bird")
    assert ids[0].numpy().tolist() == [bird] + [0] * (MAX_LENGTH - 1)
    assert lengths.numpy().tolist() == [1, 1, 2, 1]
    assert ids[1, 0] == vocab.oov_id  # only a replacement character: no words
    for i, caption in enumerate(raw):
        # Same as Python decoding with replacement first.
        expected = _reference_ids(caption.decode("utf-8", "replace"), vocab, MAX_LENGTH)[0]
        assert ids[i].numpy().tolist() == expected


def test_empty_batch(tokenizer):
    ids, lengths = tokenizer(tf.constant([], tf.string))
    assert ids.shape == (0, MAX_LENGTH) and lengths.shape == (0,)


def test_traces_with_dynamic_batch(vocab, tokenizer):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(captions):
        return tokenizer(captions)

    for batch in (TRICKY[:3], TRICKY[3:4], []):
        ids, lengths = tokenize(tf.constant(batch, tf.string))
        expected = [_reference_ids(c, vocab, MAX_LENGTH)[0] for c in batch]
        assert ids.numpy().tolist() == expected
    assert tokenize.experimental_get_tracing_count() == 1


def test_tokenize_for_training_short_caption_unchanged(vocab, tokenizer):
    caption = "a small bird with white wings"
    ids, length = tokenizer.tokenize_for_training(tf.constant(caption), seed=[3, 4])
    expected, expected_length = _reference_ids(caption, vocab, MAX_LENGTH)
    assert ids.numpy().tolist() == expected and int(length) == expected_length
    ids, length = tokenizer.tokenize_for_training(tf.constant("!!"), seed=[3, 4])
    assert ids.numpy().tolist() == [vocab.oov_id] + [0] * (MAX_LENGTH - 1) and int(length) == 1


def test_tokenize_for_training_keeps_ordered_random_subset():
    words = [f"w{i:02d}" for i in range(30)]
    vocab = Vocabulary.from_corpus([" ".join(words)])
    tokenizer = Tokenizer(vocab, max_length=MAX_LENGTH)
    caption = tf.constant(" ".join(words))
    all_ids = [vocab.word_to_id(w) for w in words]

    def run(seed):
        ids, length = tokenizer.tokenize_for_training(caption, seed=tf.constant(seed))
        assert int(length) == MAX_LENGTH and ids.shape == (MAX_LENGTH,)
        return ids.numpy().tolist()

    subsets = [run([s, 0]) for s in range(6)]
    for ids in subsets:
        positions = [all_ids.index(i) for i in ids]
        assert positions == sorted(positions) and len(set(positions)) == MAX_LENGTH
        assert 0 not in ids
    assert run([0, 0]) == subsets[0]  # repeatable
    assert len({tuple(s) for s in subsets}) > 1  # differs across seeds
    assert subsets[0] != all_ids[:MAX_LENGTH] or subsets[1] != all_ids[:MAX_LENGTH]


def test_tokenize_for_training_in_tf_data(vocab, tokenizer):
    dataset = tf.data.Dataset.from_tensor_slices(TRICKY[:4]).enumerate()
    dataset = dataset.map(lambda i, c: tokenizer.tokenize_for_training(c, tf.stack([i, i])))
    for caption, (ids, length) in zip(TRICKY[:4], dataset, strict=True):
        expected, expected_length = _reference_ids(caption, vocab, MAX_LENGTH)
        if expected_length < MAX_LENGTH:
            assert ids.numpy().tolist() == expected
        assert int(length) == expected_length


class _Serving(tf.Module):
    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, captions):
        ids, lengths = self.tokenizer(captions)
        return {"token_ids": ids, "lengths": lengths}


@pytest.mark.parametrize("from_file", [False, True])
def test_saved_model_round_trip(tmp_path, vocab, from_file):
    if from_file:
        vocab_path = tmp_path / "source" / "vocab.txt"
        vocab_path.parent.mkdir()
        vocab.save(vocab_path)
        tokenizer = Tokenizer.from_vocabulary_file(vocab_path, MAX_LENGTH)
    else:
        tokenizer = Tokenizer(vocab, MAX_LENGTH)
    export_dir = str(tmp_path / "saved")
    module = _Serving(tokenizer)
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.tokenize})
    if from_file:
        # The vocabulary travels as an asset: the SavedModel works without the source file.
        assert (tmp_path / "saved" / "assets" / "vocab.txt").read_text("utf-8") == (
            vocab_path.read_text("utf-8")
        )
        shutil.rmtree(vocab_path.parent)
    loaded = tf.saved_model.load(export_dir)
    captions = tf.constant(TRICKY)
    expected_ids, expected_lengths = tokenizer(captions)
    out = loaded.signatures["serving_default"](captions=captions)
    np.testing.assert_array_equal(out["token_ids"].numpy(), expected_ids.numpy())
    np.testing.assert_array_equal(out["lengths"].numpy(), expected_lengths.numpy())
    out = loaded.tokenize(tf.constant([], tf.string))
    assert out["token_ids"].shape == (0, MAX_LENGTH)


def test_saved_model_loads_in_plain_tensorflow(tmp_path, vocab):
    # A fresh process that imports only TensorFlow (not mirrorgan_tf) stands in for serving.
    vocab.save(tmp_path / "vocab.txt")
    tokenizer = Tokenizer.from_vocabulary_file(tmp_path / "vocab.txt", MAX_LENGTH)
    module = _Serving(tokenizer)
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures=module.tokenize)
    script = textwrap.dedent(
        f"""
        import sys, tensorflow as tf
        loaded = tf.saved_model.load({str(tmp_path / "saved")!r})
        out = loaded.signatures["serving_default"](captions=tf.constant(["Café crème, Ärger!"]))
        assert "mirrorgan_tf" not in sys.modules
        print(out["token_ids"].numpy()[0].tolist())
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = _reference_ids("Café crème, Ärger!", vocab, MAX_LENGTH)[0]
    assert result.stdout.strip().splitlines()[-1] == str(expected)


def test_constructor_checks(vocab, tmp_path):
    with pytest.raises(ValueError, match="max_length"):
        Tokenizer(vocab, max_length=0)
    with pytest.raises(TypeError, match="Vocabulary"):
        Tokenizer(["<end>", "a"], max_length=4)
    Vocabulary.from_corpus(["other words"]).save(tmp_path / "other.txt")
    with pytest.raises(ValueError, match="does not hold the given vocabulary"):
        Tokenizer(vocab, 4, vocabulary_file=tmp_path / "other.txt")
