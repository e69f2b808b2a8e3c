"""The word vocabulary shared by the text encoder, the captioner and the tokenizer.

Id 0 is `"<end>"` (padding and end of caption, as in the published AttnGAN/MirrorGAN code) and
every vocabulary has an out-of-vocabulary word `"<unk>"` (`Vocabulary.oov_id`). The published
vocabulary (`captions.pickle`) has no such word: `Vocabulary.from_attngan` keeps its ids exactly
and appends `"<unk>"` at id V, and the checkpoint converter adds one embedding row for it.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Mapping, Sequence

END_TOKEN = "<end>"
OOV_TOKEN = "<unk>"


def _as_text(word) -> str:
    # Python 2 pickles may carry words as bytes.
    if isinstance(word, bytes):
        try:
            return word.decode("utf-8")
        except UnicodeDecodeError:
            return word.decode("latin-1")
    return word


class Vocabulary:
    """An ordered list of words; the position of a word is its token id.

    Args:
        words: the words by id. `words[0]` must be `"<end>"`. When `"<unk>"` is missing it is
            appended (id `len(words)`), which keeps the ids of a published vocabulary unchanged.
        origin: where the words came from (e.g. `"captions.pickle"`), used in error messages.

    Example:
        >>> vocab = Vocabulary.from_corpus(["a red bird", "a blue bird"])
        >>> vocab.words
        ['<end>', '<unk>', 'a', 'bird', 'blue', 'red']
        >>> vocab.decode([2, 5, 3, 0, 0])
        'a red bird'
    """

    def __init__(self, words: Sequence[str], origin: str | None = None):
        words = [_as_text(w) for w in words]
        if not words or words[0] != END_TOKEN:
            first = repr(words[0]) if words else "nothing"
            raise ValueError(
                f"a vocabulary must start with {END_TOKEN!r} (id 0 = padding/end), got {first}"
            )
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word or "\n" in word or "\r" in word:
                raise ValueError(
                    f"vocabulary word {i} is {word!r}: words must be non-empty strings without "
                    "line breaks (the vocabulary file holds one word per line)"
                )
        word_to_id: dict[str, int] = {}
        for i, word in enumerate(words):
            if word in word_to_id:
                raise ValueError(
                    f"the vocabulary lists {word!r} twice (ids {word_to_id[word]} and {i})"
                )
            word_to_id[word] = i
        if OOV_TOKEN not in word_to_id:
            word_to_id[OOV_TOKEN] = len(words)
            words.append(OOV_TOKEN)
        self._words = words
        self._word_to_id = word_to_id
        self.origin = origin

    # --- Construction ---------------------------------------------------------------------

    @classmethod
    def from_corpus(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Builds a vocabulary from caption texts with `tokenizer.tokenize_text`.

        Ids: 0 `"<end>"`, 1 `"<unk>"`, then the words seen at least `min_count` times by
        descending count (ties alphabetical).

        Args:
            captions: caption strings.
            min_count: words seen fewer times map to `"<unk>"`.

        Example:
            >>> Vocabulary.from_corpus(["a bird", "a cat"], min_count=2).words
            ['<end>', '<unk>', 'a']
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        from mirrorgan_tf.data.tokenizer import tokenize_text

        counts: collections.Counter[str] = collections.Counter()
        for caption in captions:
            counts.update(tokenize_text(caption))
        kept = sorted(
            (w for w, c in counts.items() if c >= min_count and w not in (END_TOKEN, OOV_TOKEN)),
            key=lambda w: (-counts[w], w),
        )
        return cls([END_TOKEN, OOV_TOKEN, *kept], origin="captions")

    @classmethod
    def from_attngan(
        cls,
        ixtoword: Mapping[int, str] | Sequence[str],
        wordtoix: Mapping[str, int],
        origin: str = "captions.pickle",
    ) -> Vocabulary:
        """Takes over the published vocabulary (`captions.pickle`) with its ids unchanged.

        `"<unk>"` is appended at id V (the published vocabulary has none), so the size is V + 1;
        converted embedding tables get one extra row for it.

        Args:
            ixtoword: id -> word (dict or list), `ixtoword[0] == "<end>"`.
            wordtoix: word -> id, the inverse of `ixtoword`.
            origin: name used in error messages.

        Example:
            >>> vocab = Vocabulary.from_attngan({0: "<end>", 1: "bird"}, {"<end>": 0, "bird": 1})
            >>> vocab.words, vocab.oov_id
            (['<end>', 'bird', '<unk>'], 2)
        """
        if isinstance(ixtoword, Mapping):
            items = {int(k): _as_text(v) for k, v in ixtoword.items()}
        else:
            items = {i: _as_text(w) for i, w in enumerate(ixtoword)}
        size = len(items)
        if sorted(items) != list(range(size)):
            missing = sorted(set(range(size)) - set(items))[:5]
            raise ValueError(
                f"{origin}: ixtoword ids must be 0..{size - 1} without gaps "
                f"(missing e.g. {missing})"
            )
        if size == 0 or items[0] != END_TOKEN:
            raise ValueError(
                f"{origin}: ixtoword[0] must be {END_TOKEN!r}, got {items.get(0)!r}; "
                "is this an AttnGAN captions.pickle?"
            )
        w2i = {_as_text(k): int(v) for k, v in wordtoix.items()}
        if len(w2i) != size:
            raise ValueError(f"{origin}: ixtoword has {size:,} words but wordtoix has {len(w2i):,}")
        for i in range(size):
            if w2i.get(items[i]) != i:
                raise ValueError(
                    f"{origin}: ixtoword and wordtoix disagree: ixtoword[{i}] = {items[i]!r} "
                    f"but wordtoix[{items[i]!r}] = {w2i.get(items[i])!r}"
                )
        return cls([items[i] for i in range(size)], origin=origin)

    @classmethod
    def from_captions_pickle(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads the vocabulary of an AttnGAN `captions.pickle` (see `from_attngan`).

        Args:
            path: the pickle `[train_captions, test_captions, ixtoword, wordtoix]`.

        Example:
            >>> vocab = Vocabulary.from_captions_pickle("data/birds/captions.pickle")
        """
        from mirrorgan_tf.data.safe_pickle import load_pickle

        data = load_pickle(path)
        if not isinstance(data, list | tuple) or len(data) != 4:
            raise ValueError(
                f"{os.fspath(path)}: expected [train_captions, test_captions, ixtoword, "
                f"wordtoix], got a {type(data).__name__}"
                + (f" of {len(data)} items" if isinstance(data, list | tuple) else "")
            )
        return cls.from_attngan(data[2], data[3], origin=os.path.basename(os.fspath(path)))

    # --- Files ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Writes one word per line (line i = id i), UTF-8.

        Args:
            path: the text file to write.

        Example:
            >>> vocab.save("vocab.txt")
        """
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(self._words) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a file written by `save`.

        Args:
            path: the text file, one word per line.

        Example:
            >>> vocab = Vocabulary.load("vocab.txt")
        """
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        words = [line[:-1] if line.endswith("\r") else line for line in lines]
        return cls(words, origin=os.path.basename(os.fspath(path)))

    # --- Lookups --------------------------------------------------------------------------

    @property
    def words(self) -> list[str]:
        """The words by id (a copy)."""
        return list(self._words)

    @property
    def size(self) -> int:
        """The number of words, `"<end>"` and `"<unk>"` included."""
        return len(self._words)

    def __len__(self) -> int:
        return len(self._words)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self._words == other._words

    def __hash__(self) -> int:
        return hash(tuple(self._words))

    def __repr__(self) -> str:
        return f"Vocabulary(size={self.size:,}, origin={self.origin!r})"

    @property
    def oov_id(self) -> int:
        """The id of `"<unk>"`."""
        return self._word_to_id[OOV_TOKEN]

    def word_to_id(self, word: str) -> int:
        """The id of `word`, or `oov_id` when it is unknown."""
        return self._word_to_id.get(word, self.oov_id)

    def id_to_word(self, index: int) -> str:
        """The word of id `index`."""
        index = int(index)
        if not 0 <= index < len(self._words):
            raise ValueError(f"token id {index} is outside the vocabulary [0, {self.size})")
        return self._words[index]

    def encode(self, caption: str | bytes) -> list[int]:
        """Token ids of a caption (no truncation); `[oov_id]` when it has no words."""
        from mirrorgan_tf.data.tokenizer import tokenize_text

        return [self.word_to_id(w) for w in tokenize_text(caption)] or [self.oov_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Joins the words of `ids` with spaces, stopping at the first 0 (`"<end>"`).

        Example:
            >>> vocab.decode([2, 5, 0, 3])
            'a red'
        """
        words = []
        for index in ids:
            index = int(index)
            if index == 0:
                break
            words.append(self.id_to_word(index))
        return " ".join(words)

    # --- Checks ---------------------------------------------------------------------------

    def check_matches(self, rows: int, source: str, columns: int | None = None) -> None:
        """Raises a clear ValueError when a checkpoint's embedding table does not fit.

        A table matches when it has one row per word, or one row less when `"<unk>"` is the
        last word (a published checkpoint: the converter appends the `"<unk>"` row).

        Args:
            rows: rows of the checkpoint's word embedding (or output) table.
            source: the checkpoint's name, for the message.
            columns: the embedding width, for the message.

        Example:
            >>> vocab.check_matches(5450, "text_encoder200.pth", 300)
        """
        rows = int(rows)
        if rows == self.size or (rows == self.size - 1 and self.oov_id == self.size - 1):
            return
        if self.oov_id == self.size - 1:
            origin = self.origin or "the vocabulary file"
            detail = f"{self.size - 1:,} from {origin} + {OOV_TOKEN}"
        else:
            detail = f"from {self.origin}" if self.origin else f"{OOV_TOKEN} at id {self.oov_id}"
        shape = f"{rows:,} x {int(columns):,}" if columns is not None else f"{rows:,} rows"
        raise ValueError(
            f"the vocabulary has {self.size:,} words ({detail}), {source} expects {shape}: "
            "use the vocabulary (captions.pickle) the checkpoint was trained with"
        )
