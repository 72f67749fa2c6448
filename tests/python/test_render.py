"""Text rendering: scalars, tables, diagnostics and golden-ish lines (fake engine)."""

from __future__ import annotations

import pytest

from heapwalk import render
from heapwalk.render import Style


@pytest.mark.parametrize("n,text", [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                    (1572864, "1.5 MiB"), (3 << 30, "3.0 GiB")])
def test_size(n: int, text: str) -> None:
    assert render.size(n) == text


def test_exact_size_shows_both() -> None:
    assert render.exact_size(1572864) == "1.5 MiB (1572864 B)"
    assert render.exact_size(100) == "100 B"


def test_addresses_are_fixed_width() -> None:
    assert render.addr(0x10) == "0x10"
    assert render.addr(0x7FFFF7E19C80) == "0x7ffff7e19c80"
    assert render.addr(None) == "-"


def test_table_alignment_ignores_colour() -> None:
    lines = render.table([render.Column("a", "<"), render.Column("b")],
                         [["x", Style(True).paint("free", "12")], ["yyy", "3"]])
    assert [render.visible_len(l) for l in lines[1:]] == [7, 7]


def test_diagnostic_lines() -> None:
    lines = render.diagnostics([
        {"kind": "cycle", "address": 0x555555559300, "arena": None,
         "detail": "fastbin 0 loops\nback"},
        {"kind": "note", "address": None, "arena": None, "detail": "using heuristics"}])
    assert lines == ["error: cycle at 0x555555559300: fastbin 0 loops back",
                     "note: using heuristics"]
    assert render.diagnostics([{"kind": "symbols", "address": None, "arena": None,
                                "detail": "libc.so.6: file not found", "severity": "warning"}]) == [
        "warning: symbols: libc.so.6: file not found"]


def test_arenas_text(fake, core, run) -> None:
    status, out, _ = run("arenas", core)
    lines = out.splitlines()
    assert lines[0].split() == ["#", "arena", "main", "system", "max", "system", "heaps",
                                "in", "use", "fastbins", "bins", "top", "tcache"]
    assert lines[1].split()[:3] == ["0", "0x7ffff7e19c80", "main"]
    assert any(l.startswith("totals: system 396.0 KiB (405504 B)") for l in lines)
    assert "mmapped: 1 chunk, 1.5 MiB (1576960 B)" in lines
    assert "glibc 2.36 (layout: symbols+profile)" in lines
    assert any(l.split()[:3] == ["1001", "0x7ffff0000030", "(#1)"] for l in lines)
    assert "\x1b[" not in out  # not a terminal


def test_bins_text(fake, core, run) -> None:
    out = run("bins", core, "0")[1]
    assert out.splitlines()[0] == "arena #0 (main) 0x7ffff7e19c80"
    assert "… +2" in out and "top: 0x555555561000, 117.2 KiB (120000 B)" in out


def test_tcache_text(fake, core, run) -> None:
    out = run("tcache", core, "1002")[1]
    assert out.splitlines()[0] == "thread 1002: tcache -, arena -: 0 chunks, 0 B"


def test_chunk_text(fake, core, run) -> None:
    lines = run("chunk", core, "0x7ffff0000048")[1].splitlines()
    assert lines[0] == ("0x7ffff0000048: in chunk 0x7ffff0000020 "
                        "(24 bytes into the user data)")
    assert "  state  tcache" in lines
    assert "  arena  0x7ffff0000030 (#1)" in lines
    assert lines[-1] == "  next   0x7ffff0000040  size 96 B  fastbin"
    assert run("chunk", core, "0x7ffff0000021")[1].splitlines()[0].endswith(
        "(in the chunk header, 15 bytes before the user data)")


def test_colour_only_on_a_terminal(monkeypatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert Style.for_stream(Tty()).enabled
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Style.for_stream(Tty()).enabled


def _groups(resident: bool) -> list:
    gs = [{"label": "glibc arena #%d heaps" % i, "kind": "glibc-arena-heaps", "mapped_bytes": 64 << 20,
           "resident_bytes": (8192 if resident else None), "regions": 2} for i in (10, 2, 1, 11)]
    gs.append({"label": "thread stacks", "kind": "stack", "mapped_bytes": 26 << 20,
               "resident_bytes": (9 << 20) if resident else None, "regions": 53})
    return gs


def test_groups_sort_by_resident_then_numbers_in_order() -> None:
    labels = [g["label"] for g in render.sort_groups(_groups(True))]
    assert labels == ["thread stacks", "glibc arena #1 heaps", "glibc arena #2 heaps",
                      "glibc arena #10 heaps", "glibc arena #11 heaps"]
    labels = [g["label"] for g in render.sort_groups(_groups(False))]  # no residency: by mapped
    assert labels[:4] == ["glibc arena #1 heaps", "glibc arena #2 heaps", "glibc arena #10 heaps",
                          "glibc arena #11 heaps"]


def test_html_group_table_orders_arenas_numerically() -> None:
    from heapwalk import report_html
    doc = {"mappings": {"mapped_bytes": 1 << 30, "resident_bytes": None, "groups": _groups(False)},
           "retention": {}, "pressure": {}, "glibc": {}, "target": {}}
    page = report_html.render_html(doc)
    table = page[page.index('<table class="groups">'):]
    at = [table.index("glibc arena #%d heaps" % i) for i in (1, 2, 10, 11)]
    assert at == sorted(at)


def test_report_text_all_lists_every_group() -> None:
    from heapwalk import cmd_report
    groups = [{"label": "g%d" % i, "kind": "anon", "mapped_bytes": 4096 * (i + 1), "resident_bytes": None,
               "regions": 1} for i in range(30)]
    doc = {"mappings": {"mapped_bytes": 1 << 30, "resident_bytes": None, "groups": groups},
           "retention": {}, "pressure": {}, "glibc": {}, "target": {}, "verdict": []}
    short = "\n".join(cmd_report.render_report(doc))
    every = "\n".join(cmd_report.render_report(doc, show_all=True))
    assert "more groups (--all lists them)" in short and "more groups" not in every
    assert all(("g%d " % i) in every for i in range(30))
