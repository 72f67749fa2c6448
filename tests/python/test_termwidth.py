"""termwidth: fitting text to a terminal (issue 15, "80 columns"): widths from $COLUMNS and the
terminal, wide tables split into parts that repeat the key column, long lines wrapped without
separating a size from its unit, colour codes taking no room."""

from __future__ import annotations

import io

from heapwalk import render, termwidth


def test_stream_width_from_columns_and_pipes(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert termwidth.stream_width(io.StringIO()) == 100
    monkeypatch.setenv("COLUMNS", "10")
    assert termwidth.stream_width(io.StringIO()) == termwidth.MIN_WIDTH
    monkeypatch.delenv("COLUMNS")
    assert termwidth.stream_width(io.StringIO()) is None  # a pipe or a file: no limit
    assert termwidth.gdb_width(None) is None and termwidth.gdb_width(0) is None
    assert termwidth.gdb_width(80) == 80 and termwidth.gdb_width(20) == termwidth.MIN_WIDTH


def test_wrap_keeps_sizes_whole_and_indents():
    line = "  totals: system 528.0 KiB (540672 B), in use 188.3 KiB (192800 B) in 91 chunks"
    out = termwidth.wrap_line(line, 40)
    assert all(len(part) <= 40 for part in out) and len(out) > 1
    assert all(part.startswith("    ") for part in out[1:])
    assert " ".join(p.strip() for p in out) == line.strip()
    assert not any(p.rstrip().endswith(("528.0", "188.3")) for p in out)
    word = "x" * 100
    assert [len(p) for p in termwidth.wrap_line(word, 40)] == [40, 40, 24]


def test_colour_codes_take_no_room():
    style = render.Style(True, 30)
    line = style.paint("bold", "a" * 20) + " " + style.paint("addr", "0x7faa907217d0")
    assert termwidth.visible_len(line) == 35
    out = termwidth.fit([line], 30)
    assert len(out) == 2 and all(termwidth.visible_len(p) <= 30 for p in out)


def test_wide_table_splits_and_repeats_the_key_column():
    cols = [render.Column("#"), render.Column("a", "<"), render.Column("b"), render.Column("c")]
    rows = [["0", "x" * 30, "y" * 30, ""], ["1", "x" * 30, "y" * 30, "z" * 30]]
    whole = render.table(cols, rows, render.Style(False, None))
    assert len(whole) == 3 and len(whole[2]) > 80
    lines = render.table(cols, rows, render.Style(False, 80))
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].split() == ["#", "a", "b"] and "" in lines
    rest = lines[lines.index("") + 1:]
    assert rest[0].split() == ["#", "c"] and [r.split()[0] for r in rest[1:]] == ["1"]


def test_addresses_and_units():
    assert render.addr(0x7FAA907217D0) == "0x7faa907217d0"
    assert render.exact_size(704) == "704 B" and render.exact_size(15696) == "15.3 KiB (15696 B)"
