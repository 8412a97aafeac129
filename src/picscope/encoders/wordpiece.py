"""BERT's uncased WordPiece tokenizer for ASCII text, in plain Python, for the start of a new process.

`tokenizers.Tokenizer.from_file` parses MiniLM's 460 kB `tokenizer.json` in 40-90 ms on the 2-core machine: a
third of what a `picscope search TEXT` process spends above the import floor (README, "A new process per command").
A query is a few words, so this looks its pieces up in the model's `vocab.txt` (`Vocabulary`) and tokenises ASCII
text itself. Only ASCII: there BERT's normaliser is control-character removal and lowercasing, its punctuation is
ASCII punctuation, and there are no accents or CJK characters to treat, so the result equals the `tokenizers`
library's ids exactly (`tests/test_towers.py` checks every Flickr8k caption and edge cases). `ascii_ids` returns
None for any other text, and the caller uses `tokenizers`.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_PUNCT = frozenset(string.punctuation)
_SPACE = frozenset(" \t\n\r")
MAX_WORD_CHARS = 100  # longer words become [UNK], as in BERT
_DROP = {c: None for c in range(128) if not chr(c).isprintable() and chr(c) not in _SPACE}  # control characters


class Vocabulary:
    """Piece → id of a `vocab.txt` (one piece per line; a piece's id is its line number), and back.

    A query needs a dozen pieces, so the first lookups search the file's bytes (~20 µs each) instead of building a
    table of all 30,522 (~10 ms, a twentieth of a search process); after `SCAN_LOOKUPS` of them (a batch of
    texts) the table is built and used.
    """

    SCAN_LOOKUPS = 256

    def __init__(self, vocab_file: str | Path) -> None:
        data = Path(vocab_file).read_bytes()
        self._data = b"\n" + data + (b"" if data.endswith(b"\n") else b"\n")  # every piece between two newlines
        self._ids: dict[str, int] | None = None
        self._pieces: list[str] | None = None
        self._found: dict[int, str] = {}  # id → piece, for the pieces looked up by scanning
        self._scans = 0

    def get(self, piece: str) -> int | None:
        if self._ids is None:
            self._scans += 1
            if self._scans <= self.SCAN_LOOKUPS:
                at = self._data.find(b"\n" + piece.encode("utf-8") + b"\n")
                if at < 0:
                    return None
                found = self._data.count(b"\n", 0, at)  # the newlines before a piece's own: its line number
                self._found[found] = piece
                return found
            pieces = self._lines()
            self._ids = dict(zip(pieces, range(len(pieces)), strict=True))  # ~2x faster than a comprehension
        return self._ids.get(piece)

    def id_of(self, piece: str) -> int:
        found = self.get(piece)
        if found is None:
            raise KeyError(piece)
        return found

    def text_of(self, piece_id: int) -> str:
        """The piece with id `piece_id`."""
        known = self._found.get(piece_id)
        return known if known is not None else self._lines()[piece_id]

    def _lines(self) -> list[str]:
        if self._pieces is None:
            self._pieces = self._data[1:-1].decode("utf-8").split("\n")
        return self._pieces


class AsciiWordPiece:
    """Token ids of ASCII text for an uncased BERT vocabulary (`vocab.txt`, one piece per line)."""

    def __init__(self, vocab_file: str | Path, max_len: int) -> None:
        self.vocab = Vocabulary(vocab_file)
        missing = [s for s in SPECIAL if self.vocab.get(s) is None]
        if missing:
            raise ValueError(f"{vocab_file}: no {', '.join(missing)} in the vocabulary")
        self.unk, self.cls, self.sep = (self.vocab.id_of(s) for s in ("[UNK]", "[CLS]", "[SEP]"))
        self.max_len = max_len

    def ascii_ids(self, text: str) -> list[int] | None:
        """[CLS] pieces [SEP], truncated to `max_len` ids; None when `text` is not ASCII or names a special token
        (the `tokenizers` library keeps "[MASK]" and its kind whole)."""
        if not text.isascii() or ("[" in text and any(s in text for s in SPECIAL)):
            return None
        ids = [self.cls]
        for word in self._words(text):
            ids.extend(self._pieces(word))
        ids = ids[: self.max_len - 1]
        ids.append(self.sep)
        return ids

    def ascii_words(self, text: str) -> tuple[list[int], list[tuple[int, list[tuple[int, int]]]]] | None:
        """`ascii_ids`, and each word (or punctuation mark) of `text`: its first character and, per token kept,
        (position among the ids, the character its piece ends before) — what the `tokenizers` library's `word_ids`
        and `offsets` give; None as for `ascii_ids`."""
        ids = self.ascii_ids(text)
        if ids is None:
            return None
        words: list[tuple[int, list[tuple[int, int]]]] = []
        pos = 1  # after [CLS]
        for start, end in self._spans(text):
            pieces = self._pieces(text[start:end].lower().translate(_DROP))
            if pieces == [self.unk]:
                ends = [end]
            else:  # a piece covers its characters (less "##"), counted without the dropped control characters
                kept_chars = [i for i in range(start, end) if ord(text[i]) not in _DROP]
                ends, count = [], 0
                for piece in pieces:
                    count += len(self.vocab.text_of(piece).removeprefix("##"))
                    ends.append(kept_chars[min(count, len(kept_chars)) - 1] + 1)
            kept = [(p, e) for p, e in zip(range(pos, pos + len(pieces)), ends, strict=True) if p < len(ids) - 1]
            if kept:
                words.append((start, kept))
            pos += len(pieces)
        return ids, words

    @staticmethod
    def _spans(text: str) -> list[tuple[int, int]]:
        """(start, end) of each word and punctuation mark, as `_words` splits them."""
        spans: list[tuple[int, int]] = []
        start = None
        for i, ch in enumerate(text):
            if ch not in _SPACE and not ch.isprintable():
                continue
            if ch in _SPACE or ch in _PUNCT:
                if start is not None:
                    spans.append((start, i))
                    start = None
                if ch in _PUNCT:
                    spans.append((i, i + 1))
                continue
            if start is None:
                start = i
        if start is not None:
            spans.append((start, len(text)))
        return spans

    @staticmethod
    def _words(text: str) -> list[str]:
        """Lowercased words and single punctuation characters; control characters dropped without splitting the
        word (BERT's cleaning)."""
        words: list[str] = []
        current: list[str] = []
        for ch in text:
            if ch not in _SPACE and not ch.isprintable():
                continue
            if ch in _SPACE or ch in _PUNCT:
                if current:
                    words.append("".join(current).lower())
                    current = []
                if ch in _PUNCT:
                    words.append(ch)
                continue
            current.append(ch)
        if current:
            words.append("".join(current).lower())
        return words

    def _pieces(self, word: str) -> list[int]:
        """Greedy longest-match-first WordPiece; the whole word is [UNK] when a part matches nothing."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unk]
        out: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return [self.unk]
            out.append(found)
            start = end
        return out
