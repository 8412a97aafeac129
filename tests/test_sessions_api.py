"""Session API: rounds, unseen pages, marks, undo, back, persistence across processes, errors, concurrency."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from picscope import Library
from picscope.errors import ConfigError
from picscope.sessions import NotShownError, Session, SessionError, SessionNotFoundError, StaleRoundError
from tests.feedback_test_doubles import ColourCaptionerTestDouble, ScriptedChatTestDouble, write_colour_images

ENC = "test-colour"


@pytest.fixture()
def lib(tmp_path: Path) -> Library:
    write_colour_images(tmp_path / "photos", per_colour=8)
    library = Library.open(tmp_path / "lib", encoder=ENC)
    library.index(tmp_path / "photos")
    yield library
    library.close()


def _colour(lib: Library, fid: int) -> str:
    rec = lib.get(fid)
    assert rec is not None
    return Path(rec.path).name[:-6]


def test_rounds_never_repeat_images_and_feedback_moves_the_query(lib: Library) -> None:
    s = Session.create(lib, "red", strategy="rocchio", page_size=4)
    first = s.page()
    assert [p.number for p in first] == [1, 2, 3, 4]
    assert all(_colour(lib, p.id) == "red" for p in first)
    s.mark([first[0].id, first[1].id], True)
    s.mark([first[2].id], False)
    assert s.marks() == {first[0].id: True, first[1].id: True, first[2].id: False}
    second = s.next_round()
    assert s.round == 1
    assert not {p.id for p in second} & {p.id for p in first}
    third = s.next_round()
    assert len(set(s.shown_ids())) == len(s.shown_ids()) == 12
    assert third and all(p.round == 2 for p in third)
    hist = s.explain()["history"]
    assert [h["round"] for h in hist] == [0, 1, 2]
    assert "rocchio" in hist[1]["why"] and hist[1]["relevant_so_far"] == 2


def test_repeats_only_when_asked(lib: Library) -> None:
    s = Session.create(lib, "green", page_size=5)
    first = {p.id for p in s.page()}
    again = {p.id for p in s.next_round(allow_repeats=True)}
    assert again & first


def test_undo_takes_back_the_last_mark_action(lib: Library) -> None:
    s = Session.create(lib, "blue", page_size=4)
    ids = [p.id for p in s.page()]
    s.mark(ids[:2], True)
    s.mark([ids[1]], False)  # change of mind: the later mark wins
    assert s.marks()[ids[1]] is False
    removed = s.undo()
    assert [m["id"] for m in removed] == [ids[1]]
    assert s.marks() == {ids[0]: True, ids[1]: True}
    s.undo()
    assert s.marks() == {}
    with pytest.raises(SessionError, match="nothing to undo"):
        s.undo()


def test_back_returns_to_the_previous_round_and_unsees_its_images(lib: Library) -> None:
    s = Session.create(lib, "red", page_size=4)
    s.mark([s.page()[0].id], True)
    r1 = [p.id for p in s.next_round()]
    s.back()
    assert s.round == 0 and s.marks() == {s.page()[0].id: True}
    assert not set(r1) & set(s.shown_ids())
    assert [p.id for p in s.next_round()] == r1  # same marks, same state → same next page
    s.back()
    with pytest.raises(SessionError, match="first round"):
        s.back()


def test_clear_errors(lib: Library) -> None:
    s = Session.create(lib, "red", page_size=3)
    unseen = next(i for i in range(1, 100) if lib.get(i) and i not in s.shown_ids())
    with pytest.raises(NotShownError, match="never shown"):
        s.mark([unseen], True)
    assert s.marks() == {}  # nothing half-written
    with pytest.raises(SessionNotFoundError, match="unknown session id"):
        Session.open(lib, "nope")
    s.next_round(round=0)
    with pytest.raises(StaleRoundError, match="not the current round"):
        s.mark([s.page()[0].id], True, round=0)
    with pytest.raises(StaleRoundError):
        s.next_round(round=0)
    with pytest.raises(SessionError, match="empty query"):
        Session.create(lib, "  ")
    with pytest.raises(ConfigError, match="unknown feedback strategy"):
        Session.create(lib, "red", strategy="magic")


def test_two_handles_on_one_session_see_each_other_and_cannot_race(lib: Library) -> None:
    a = Session.create(lib, "green", page_size=4)
    b = Session.open(lib, a.id)
    a.mark([a.page()[0].id], True)
    assert b.refresh().marks() == a.marks()
    errors: list[Exception] = []
    done: list[int] = []

    def go(s: Session) -> None:
        try:
            s.next_round(round=0)
            done.append(1)
        except StaleRoundError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(Session.open(lib, a.id),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 1 and len(errors) == 3  # exactly one round was added
    assert a.refresh().round == 1 and len(a.explain()["history"]) == 2


def test_session_survives_a_process_restart(lib: Library, tmp_path: Path) -> None:
    s = Session.create(lib, "blue", page_size=4)
    s.mark([s.page()[0].id, s.page()[1].id], True)
    s.next_round()
    s.mark([s.page()[0].id], False)
    lib_path = str(lib.path)
    root = str(Path(__file__).resolve().parents[1])
    code = "\n".join(
        [
            f"import sys; sys.path.insert(0, {root!r}); import tests.feedback_test_doubles",
            "from picscope import Library; from picscope.sessions import Session",
            f"lib = Library.open({lib_path!r}); s = Session.open(lib, {s.id!r})",
            "h = s.explain()['history']",
            "print(s.round, len(s.shown_ids()), sorted(s.marks().values()), h[1]['relevant_so_far'])",
            "s.next_round(); print(s.round)",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["1 8 [False] 2", "2"]
    assert s.refresh().round == 2 and len(s.shown_ids()) == 12
    assert any(x["id"] == s.id for x in Session.list_sessions(lib))


def test_failed_llm_falls_back_to_embedding_feedback_and_says_so(lib: Library) -> None:
    llm = ScriptedChatTestDouble([RuntimeError("server down"), RuntimeError("server down")])
    s = Session.create(lib, "red", strategy="rewrite", page_size=4, llm=llm, vision=ColourCaptionerTestDouble())
    s.mark([s.page()[0].id], True)
    page = s.next_round()
    h = s.explain()["history"][-1]
    assert h["fallback"] and "fell back to embedding feedback" in h["fallback"] and "server down" in h["fallback"]
    assert len(llm.calls) == 1  # one call: retrying is the chat model's job (one retry layer)
    assert page and all(_colour(lib, p.id) == "red" for p in page)


def test_missing_model_backends_fall_back_and_say_so(lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    import picscope.feedback as fb

    def unavailable(library: object, need_llm: bool = True) -> tuple[object, object]:
        raise ConfigError("no chat model configured")

    monkeypatch.setattr(fb, "default_models", unavailable)
    s = Session.create(lib, "green", strategy="combined", page_size=4)
    s.mark([s.page()[0].id], True)
    s.next_round()
    h = s.explain()["history"][-1]
    assert h["fallback"] and "combined unavailable" in h["fallback"] and "rocchio" in h["fallback"]


def test_a_corrupt_session_store_is_a_clear_error(lib: Library) -> None:
    (lib.path / "sessions.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SessionError, match="cannot open the session store"):
        Session.create(lib, "red")
    assert lib.search("red", 3)  # the library itself still works
