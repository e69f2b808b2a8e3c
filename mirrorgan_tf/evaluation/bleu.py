"""Corpus BLEU-1..4 (Papineni et al., "BLEU: a Method for Automatic Evaluation of Machine
Translation", ACL 2002), in pure Python, for scoring STREAM's captions.

BLEU-N = BP * exp(sum_{n=1..N} (1/N) * log p_n), where p_n is the corpus-level modified n-gram
precision (each hypothesis n-gram count clipped by its largest count in any one reference,
summed over the corpus, divided by the number of hypothesis n-grams) and BP is the brevity
penalty exp(1 - r / c) when c <= r (c: total hypothesis length; r: the sum over sentences of
the reference length closest to the hypothesis length, the shorter one on a tie), else 1.
No smoothing: BLEU-N is 0 when some p_n (n <= N) is 0, as in the paper and in NLTK's
`corpus_bleu` without a smoothing function, so the values are comparable with those tables.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence


def _ngrams(tokens: Sequence[str], n: int) -> collections.Counter:
    return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def modified_precision(
    references: Sequence[Sequence[str]], hypothesis: Sequence[str], n: int
) -> tuple[int, int]:
    """Clipped n-gram matches and total n-grams of one hypothesis (Papineni et al. Sec. 2.1).

    Args:
        references: the reference token lists of this hypothesis.
        hypothesis: the hypothesis tokens.
        n: the n-gram order.

    Returns:
        (clipped matching n-gram count, number of hypothesis n-grams).

    Example:
    >>> refs = ["the cat is on the mat".split(), "there is a cat on the mat".split()]
    >>> modified_precision(refs, "the the the the the the the".split(), 1)  # the paper's 2/7
    (2, 7)
    """
    counts = _ngrams(hypothesis, n)
    max_ref_counts: collections.Counter = collections.Counter()
    for reference in references:
        for gram, count in _ngrams(reference, n).items():
            max_ref_counts[gram] = max(max_ref_counts[gram], count)
    clipped = sum(min(count, max_ref_counts[gram]) for gram, count in counts.items())
    return clipped, max(len(hypothesis) - n + 1, 0)


def _closest_reference_length(references: Sequence[Sequence[str]], length: int) -> int:
    return min((len(r) for r in references), key=lambda r: (abs(r - length), r))


def corpus_bleu(
    references: Sequence[Sequence[Sequence[str]]],
    hypotheses: Sequence[Sequence[str]],
    max_order: int = 4,
) -> list[float]:
    """Corpus BLEU-1 .. BLEU-`max_order` with uniform weights and no smoothing.

    Args:
        references: for each hypothesis, a list of one or more reference token lists.
        hypotheses: the hypothesis token lists.
        max_order: the largest n-gram order.

    Returns:
        [BLEU-1, ..., BLEU-max_order], each in [0, 1].

    Example:
    >>> corpus_bleu([["a red bird sits on a branch".split()]],
    ...             ["a red bird sits on a branch".split()])
    [1.0, 1.0, 1.0, 1.0]
    """
    if len(references) != len(hypotheses):
        raise ValueError(
            f"corpus_bleu needs one reference list per hypothesis, got {len(references)} "
            f"reference lists for {len(hypotheses)} hypotheses"
        )
    for index, refs in enumerate(references):
        if not refs or isinstance(refs[0], str):
            raise ValueError(
                f"references[{index}] must be a non-empty list of token lists (one per "
                f"reference), got {refs!r:.80}"
            )
    matches = [0] * max_order
    totals = [0] * max_order
    hyp_length = ref_length = 0
    for refs, hyp in zip(references, hypotheses, strict=True):
        hyp_length += len(hyp)
        ref_length += _closest_reference_length(refs, len(hyp))
        for n in range(1, max_order + 1):
            clipped, total = modified_precision(refs, hyp, n)
            matches[n - 1] += clipped
            totals[n - 1] += total
    if hyp_length == 0:
        return [0.0] * max_order
    brevity = 1.0 if hyp_length > ref_length else math.exp(1.0 - ref_length / hyp_length)
    scores = []
    log_sum = 0.0
    for n in range(1, max_order + 1):
        if matches[n - 1] == 0 or math.isinf(log_sum):
            log_sum = -math.inf
            scores.append(0.0)
            continue
        log_sum += math.log(matches[n - 1] / totals[n - 1])
        scores.append(brevity * math.exp(log_sum / n))
    return scores
