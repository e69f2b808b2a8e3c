"""Tests for mirrorgan_tf/data/vocabulary.py."""

import pickle

import pytest

from mirrorgan_tf.data.vocabulary import END_TOKEN, OOV_TOKEN, Vocabulary

CAPTIONS = [
    "A small bird with red wings.",
    "this bird is red and white",
    "A bird: small, red; Café crème!",
    "Ärger über den Vogel",
]


def _attngan_vocab(words):
    # The published build_dictionary: <end> at 0, then the words from id 1.
    ixtoword = {0: END_TOKEN}
    wordtoix = {END_TOKEN: 0}
    for i, word in enumerate(words, start=1):
        ixtoword[i] = word
        wordtoix[word] = i
    return ixtoword, wordtoix


def test_from_corpus_order_and_min_count():
    vocab = Vocabulary.from_corpus(CAPTIONS)
    assert vocab.words[:2] == [END_TOKEN, OOV_TOKEN]
    assert vocab.oov_id == 1
    # bird 3, red 3, a 2, small 2, then count-1 words alphabetically.
    assert vocab.words[2:6] == ["bird", "red", "a", "small"]
    rest = vocab.words[6:]
    assert rest == sorted(rest) and "café" in rest and "ärger" in rest
    vocab2 = Vocabulary.from_corpus(CAPTIONS, min_count=2)
    assert vocab2.words == [END_TOKEN, OOV_TOKEN, "bird", "red", "a", "small"]
    assert vocab2.word_to_id("wings") == vocab2.oov_id
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.from_corpus(CAPTIONS, min_count=0)


def test_lookups_and_decode():
    vocab = Vocabulary.from_corpus(CAPTIONS)
    assert len(vocab) == vocab.size == len(vocab.words)
    assert vocab.id_to_word(vocab.word_to_id("café")) == "café"
    assert vocab.word_to_id("never-seen") == vocab.oov_id
    ids = vocab.encode("A red bird, unseen!") + [0, 0, vocab.word_to_id("red")]
    assert vocab.decode(ids) == "a red bird <unk>"
    assert vocab.encode("...") == [vocab.oov_id]
    with pytest.raises(ValueError, match="outside"):
        vocab.id_to_word(vocab.size)


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.from_corpus(CAPTIONS + ["日本語 のとり ελληνικά"])
    path = tmp_path / "vocab.txt"
    vocab.save(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == vocab.words  # line i = id i, readable text
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.words == vocab.words
    assert loaded.word_to_id("ελληνικά") == vocab.word_to_id("ελληνικά")
    assert loaded.oov_id == vocab.oov_id
    # Windows line endings are tolerated.
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert Vocabulary.load(path) == vocab


def test_constructor_checks():
    with pytest.raises(ValueError, match="must start with '<end>'"):
        Vocabulary(["bird", "<end>"])
    with pytest.raises(ValueError, match="twice"):
        Vocabulary([END_TOKEN, "bird", "bird"])
    with pytest.raises(ValueError, match="line breaks"):
        Vocabulary([END_TOKEN, "two\nlines"])
    # <unk> is appended when missing.
    assert Vocabulary([END_TOKEN, "bird"]).words == [END_TOKEN, "bird", OOV_TOKEN]


def test_from_attngan_keeps_ids_and_appends_unk():
    words = ["a", "bird", "small", "red", "wings", "this"]
    ixtoword, wordtoix = _attngan_vocab(words)
    vocab = Vocabulary.from_attngan(ixtoword, wordtoix)
    for word, index in wordtoix.items():
        assert vocab.word_to_id(word) == index
        assert vocab.id_to_word(index) == word
    assert vocab.oov_id == len(wordtoix) == 7
    assert vocab.size == len(wordtoix) + 1
    assert vocab.word_to_id("unseen") == 7


def test_from_attngan_rejects_bad_dicts():
    ixtoword, wordtoix = _attngan_vocab(["a", "bird"])
    with pytest.raises(ValueError, match=r"ixtoword\[0\] must be '<end>'"):
        Vocabulary.from_attngan({0: "a", 1: "<end>"}, {"a": 0, "<end>": 1})
    with pytest.raises(ValueError, match="disagree"):
        Vocabulary.from_attngan(ixtoword, {**wordtoix, "a": 2, "bird": 1})
    with pytest.raises(ValueError, match="disagree"):
        Vocabulary.from_attngan(ixtoword, {END_TOKEN: 0, "a": 1, "bird": 7})
    with pytest.raises(ValueError, match="has 3 words but wordtoix has 2"):
        Vocabulary.from_attngan(ixtoword, {END_TOKEN: 0, "a": 1})
    with pytest.raises(ValueError, match="without gaps"):
        Vocabulary.from_attngan({0: END_TOKEN, 2: "a"}, {END_TOKEN: 0, "a": 2})


def test_from_captions_pickle(tmp_path):
    ixtoword, wordtoix = _attngan_vocab(["bird", "red", "wings"])
    train = [[1, 2], [2, 3, 1]]
    test = [[3]]
    path = tmp_path / "captions.pickle"
    with open(path, "wb") as f:
        pickle.dump([train, test, ixtoword, wordtoix], f, protocol=2)
    vocab = Vocabulary.from_captions_pickle(path)
    assert vocab.words == [END_TOKEN, "bird", "red", "wings", OOV_TOKEN]
    assert vocab.origin == "captions.pickle"
    with open(path, "wb") as f:
        pickle.dump([train, test], f, protocol=2)
    with pytest.raises(ValueError, match="expected"):
        Vocabulary.from_captions_pickle(path)


def test_check_matches(tmp_path):
    ixtoword, wordtoix = _attngan_vocab([f"w{i}" for i in range(5_449)])
    vocab = Vocabulary.from_attngan(ixtoword, wordtoix)
    assert vocab.size == 5_451
    vocab.check_matches(5_451, "converted.weights.h5")
    vocab.check_matches(5_450, "text_encoder200.pth", 300)  # published: <unk> row appended later
    with pytest.raises(ValueError) as error:
        vocab.check_matches(27_297, "text_encoder100.pth", 300)
    message = str(error.value)
    assert "5,451 words (5,450 from captions.pickle + <unk>)" in message
    assert "text_encoder100.pth expects 27,297 x 300" in message
    # A saved/loaded vocabulary keeps the rule (<unk> is last).
    vocab.save(tmp_path / "vocab.txt")
    Vocabulary.load(tmp_path / "vocab.txt").check_matches(5_450, "text_encoder200.pth")

    native = Vocabulary.from_corpus(CAPTIONS)
    native.check_matches(native.size, "text_encoder.weights.h5")
    with pytest.raises(ValueError, match=f"has {native.size} words"):
        native.check_matches(native.size - 1, "text_encoder.weights.h5")
