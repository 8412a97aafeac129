"""The results table drawn without rich (`picscope.cli.table`)."""

from __future__ import annotations

import io

from picscope.cli.table import Column, print_table, render, width

COLS = [Column("#", right=True, dim=True), Column("score", right=True), Column("path")]


def test_columns_line_up_with_a_heavy_header_rule() -> None:
    text = render(COLS, [["1", "0.412", "/a/cat.jpg"], ["10", "0.05", "/b/dog.png"]])
    lines = text.splitlines()
    assert lines[0] == " # ┃ score ┃ path"
    assert lines[1] == "━━━╇━━━━━━━╇━━━━━━━━━━━"
    assert lines[2] == " 1 │ 0.412 │ /a/cat.jpg"
    assert lines[3] == "10 │  0.05 │ /b/dog.png"
    assert len({width(line) for line in lines[1:]}) == 1  # every row as wide as the rule


def test_wide_characters_take_two_cells_and_control_characters_are_shown_safely() -> None:
    assert width("猫.jpg") == 6 and width("cafe\u0301") == 4
    lines = render(COLS, [["1", "0.5", "猫.jpg"], ["2", "0.4", "a\nb.jpg"]]).splitlines()
    assert len(lines) == 4 and lines[3].endswith("a?b.jpg")  # one row per result, whatever the name holds
    assert width(lines[3]) == width(lines[1]) and width(lines[2]) == width(lines[1]) - 1  # 猫 counts two cells


def test_the_last_column_folds_to_the_width_given() -> None:
    path = "/photos/" + "x" * 50 + ".jpg"
    lines = render(COLS, [["1", "0.5", path]], max_width=40).splitlines()
    assert all(width(line) <= 40 for line in lines) and len(lines) > 3
    body = [line.split("│")[-1].strip() for line in lines[2:]]
    assert "".join(body) == path and lines[3].startswith("  │       │ ")


def test_styles_only_on_request_and_ascii_when_the_stream_cannot_encode_boxes() -> None:
    styled = render(COLS, [["1", "0.5", "a.jpg"]], styled=True)
    assert "\x1b[1m" in styled and "\x1b[2m" in styled
    class Utf8(io.StringIO):
        encoding = "utf-8"

    stream = Utf8()
    print_table(COLS, [["1", "0.5", "a.jpg"]], stream)  # not a terminal: no styles, no folding
    assert "\x1b[" not in stream.getvalue() and "┃" in stream.getvalue()

    class Latin1(io.StringIO):
        encoding = "latin-1"

    plain = Latin1()
    print_table(COLS, [["1", "0.5", "a.jpg"]], plain)
    assert plain.getvalue().splitlines()[:2] == ["# | score | path", "--+-------+------"]
