import math

import pytest

from mirrorgan_tf.evaluation.bleu import corpus_bleu, modified_precision

# NLTK's documented example (nltk.translate.bleu_score), after Papineni et al.
HYP1 = (
    "It is a guide to action which ensures that the military always obeys the commands of the party"
).split()
REF1A = (
    "It is a guide to action that ensures that the military will forever heed Party commands"
).split()
REF1B = (
    "It is the guiding principle which guarantees the military forces always being under the "
    "command of the Party"
).split()
REF1C = (
    "It is the practical guide for the army always to heed the directions of the party"
).split()
HYP2 = "he read the book because he was interested in world history".split()
REF2A = "he was interested in world history because he read the book".split()


def test_identical_sentences_score_one():
    sentence = "a small bird with a red head and black wings".split()
    assert corpus_bleu([[sentence]], [sentence]) == [1.0, 1.0, 1.0, 1.0]


def test_papineni_modified_unigram_precision():
    # Paper Sec. 2.1: "the the the the the the the" against two references -> 2/7.
    refs = ["the cat is on the mat".split(), "there is a cat on the mat".split()]
    assert modified_precision(refs, ["the"] * 7, 1) == (2, 7)
    # Only "the" is clipped (by its count 2 in ref 1): no bigram matches at all.
    assert corpus_bleu([refs], [["the"] * 7])[1] == 0.0


def test_worked_example_sentence_level():
    refs = [REF1A, REF1B, REF1C]
    # Hand count: clipped matches / totals per order, against the three references.
    assert [modified_precision(refs, HYP1, n) for n in (1, 2, 3, 4)] == [
        (17, 18),
        (10, 17),
        (7, 16),
        (4, 15),
    ]
    # c = 18 equals the closest reference length (18, REF1B): no brevity penalty.
    expected = math.exp(
        (math.log(17 / 18) + math.log(10 / 17) + math.log(7 / 16) + math.log(4 / 15)) / 4
    )
    bleu = corpus_bleu([refs], [HYP1])
    assert bleu[3] == pytest.approx(expected, abs=1e-12)
    assert bleu[3] == pytest.approx(0.5045666840058485, abs=1e-12)  # NLTK's documented value
    assert bleu[0] == pytest.approx(17 / 18)
    assert bleu[1] == pytest.approx(math.sqrt(17 / 18 * 10 / 17))


def test_worked_example_corpus_level_sums_counts():
    # Corpus counts: (17+11)/(18+11), (10+9)/(17+10), (7+6)/(16+9), (4+4)/(15+8).
    expected = math.exp(
        (math.log(28 / 29) + math.log(19 / 27) + math.log(13 / 25) + math.log(8 / 23)) / 4
    )
    bleu = corpus_bleu([[REF1A, REF1B, REF1C], [REF2A]], [HYP1, HYP2])
    assert bleu[3] == pytest.approx(expected, abs=1e-12)
    assert bleu[3] == pytest.approx(0.5920778868801042, abs=1e-12)  # NLTK's documented value


def test_brevity_penalty():
    ref = "a b c d e f g h".split()
    hyp = "a b c d".split()
    # All n-grams match; c = 4, r = 8 -> BP = exp(1 - 8/4).
    assert corpus_bleu([[ref]], [hyp]) == pytest.approx([math.exp(-1.0)] * 4)
    # Closest reference length wins: a 4-word reference removes the penalty.
    assert corpus_bleu([[ref, "w x y z".split()]], [hyp]) == pytest.approx([1.0] * 4)


def test_degenerate_inputs():
    assert corpus_bleu([[["a", "b"]]], [[]]) == [0.0] * 4
    with pytest.raises(ValueError, match="one reference list per hypothesis"):
        corpus_bleu([[["a"]]], [["a"], ["b"]])
    with pytest.raises(ValueError, match="list of token lists"):
        corpus_bleu([["a", "b"]], [["a", "b"]])
