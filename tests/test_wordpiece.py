"""The vocabulary of the ASCII WordPiece tokenizer: looked up by scanning the file's bytes for the first pieces,
then through a table, with the same answers either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from picscope.encoders.towers import minilm_folder
from picscope.encoders.wordpiece import AsciiWordPiece, Vocabulary


@pytest.fixture(scope="module")
def vocab_file() -> Path:
    return minilm_folder() / "vocab.txt"


def test_scanning_and_the_table_agree_on_every_piece(vocab_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pieces = vocab_file.read_text(encoding="utf-8").split("\n")[:-1]
    misses = ["", "not-a-piece", "##zzzq", "[cls]", "dog\n", "\ndog", "cat!"]
    scanning = Vocabulary(vocab_file)
    monkeypatch.setattr(scanning, "SCAN_LOOKUPS", len(pieces) + len(misses) + 1)
    table = Vocabulary(vocab_file)
    monkeypatch.setattr(table, "SCAN_LOOKUPS", 0)
    step = 7  # every 7th piece by scanning (all 30,522 would take ~10 s), every piece by the table
    assert [scanning.get(p) for p in pieces[::step]] == list(range(0, len(pieces), step))
    assert [table.get(p) for p in pieces] == list(range(len(pieces)))
    assert [scanning.get(m) for m in misses] == [table.get(m) for m in misses] == [None] * len(misses)
    assert scanning._ids is None and table._ids is not None  # each really took its own path
    assert [scanning.text_of(i) for i in (0, 101, 2003, 30521)] == [pieces[i] for i in (0, 101, 2003, 30521)]


def test_the_table_is_built_after_a_batch_of_lookups(vocab_file: Path) -> None:
    vocab = Vocabulary(vocab_file)
    for _ in range(Vocabulary.SCAN_LOOKUPS):
        assert vocab.get("dog") is not None
    assert vocab._ids is None
    assert vocab.get("cat") == vocab_file.read_text(encoding="utf-8").split("\n").index("cat")
    assert vocab._ids is not None


def test_a_file_without_its_last_newline_reads_the_same(vocab_file: Path, tmp_path: Path) -> None:
    text = vocab_file.read_text(encoding="utf-8")
    bare = tmp_path / "vocab.txt"
    bare.write_text(text.rstrip("\n"), encoding="utf-8")
    last = text.rstrip("\n").split("\n")[-1]
    assert Vocabulary(bare).get(last) == Vocabulary(vocab_file).get(last) == len(text.rstrip("\n").split("\n")) - 1


def test_a_fresh_tokenizer_gives_the_same_ids_as_a_warm_one(vocab_file: Path) -> None:
    texts = ["two dogs playing in the snow", "A man rides a snowboard; it's -5 degrees!", "unbelievably zzzqx"]
    cold = AsciiWordPiece(vocab_file, 256)
    warm = AsciiWordPiece(vocab_file, 256)
    for _ in range(Vocabulary.SCAN_LOOKUPS):
        warm.vocab.get("the")
    assert [cold.ascii_ids(t) for t in texts] == [warm.ascii_ids(t) for t in texts]
    assert cold.vocab._ids is None and warm.vocab._ids is not None
    assert cold.ascii_words(texts[1]) == warm.ascii_words(texts[1])


def test_a_vocabulary_without_the_special_pieces_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "vocab.txt"
    bad.write_text("[PAD]\n[UNK]\ndog\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no \[CLS\], \[SEP\], \[MASK\]"):
        AsciiWordPiece(bad, 256)
