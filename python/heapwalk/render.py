"""Text rendering of engine records: tables, sizes, addresses, diagnostics, colour.

Everything here is pure (records in, strings out) so that the CLI, gdb and tests share it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

Record = Mapping[str, Any]

#: Addresses are printed as gdb prints them (``0x7faa907217d0``); 0 would be zero-padded widths.
ADDRESS_DIGITS = 0
#: How many chunk addresses a bin line shows before "… +N".
BIN_PREVIEW = 4
SCHEMA = "heapwalk/1"


# -- style -----------------------------------------------------------------------------------

class Style:
    """ANSI styling that is a no-op unless enabled (only on a terminal, never in batch)."""

    _CODES = {"bold": "1", "dim": "2", "warn": "33", "error": "31", "free": "32",
              "head": "1;4", "addr": "34", "size": "36",
              # vis: one colour per chunk, cycled (cmd_chunk.PALETTE)
              "c1": "36", "c2": "35", "c3": "33", "c4": "34", "c5": "32"}

    def __init__(self, enabled: bool = False, width: Optional[int] = None,
                 verbose: bool = False) -> None:
        self.enabled = enabled
        #: The terminal's width (lines and tables are fitted to it); None: no limit.
        self.width = width
        #: ``-v``: provenance (which layout, from where) next to the figures.
        self.verbose = verbose
        #: How many chunk addresses a free list's line shows before ``… +N`` (0: every one).
        self.preview = BIN_PREVIEW

    def paint(self, kind: str, text: str) -> str:
        """Wrap ``text`` in the ANSI code for ``kind`` when enabled."""
        if not self.enabled or not text:
            return text
        return "\x1b[%sm%s\x1b[0m" % (self._CODES[kind], text)

    @staticmethod
    def for_stream(stream: Any, color: str = "auto") -> "Style":
        """Colour iff ``stream`` is a terminal and neither NO_COLOR nor TERM=dumb is set
        (``color`` "always"/"never" decide instead); the width is the terminal's."""
        from .termwidth import stream_width  # pylint: disable=import-outside-toplevel
        width = stream_width(stream)
        if color in ("always", "never"):
            return Style(color == "always", width)
        if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
            return Style(False, width)
        isatty = getattr(stream, "isatty", None)
        try:
            return Style(bool(isatty and isatty()), width)
        except (OSError, ValueError):
            return Style(False, width)


PLAIN = Style(False)


# -- untrusted text --------------------------------------------------------------------------
#
# Every string from a core or a live process (file names, libc's directory, the JDK version,
# NMT category names, text samples, thread names, a saved report given to ``diff``) is
# attacker-controlled: it must never reach a terminal raw.  ``safe`` escapes every character
# that a terminal interprets or that reorders or forges what the reader sees: C0 controls
# (``\n``, ``\r``, ``\t``, ESC ...), DEL, C1 controls (U+0080-U+009F: U+009B is CSI, U+009D
# OSC), the bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and marks
# (U+200E, U+200F, U+061C), the Unicode line and paragraph separators, and lone surrogates
# (never valid text).  The escapes are Python's: ``\x1b``, ``\u202e``.

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                     "\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: The SGR sequences :class:`Style` emits: the only escape sequences text output may carry.
_OWN_SGR = re.compile("(\x1b\\[(?:%s)m)" % "|".join(
    re.escape(code) for code in sorted(set(Style._CODES.values()) | {"0"},  # pylint: disable=W0212
                                       key=len, reverse=True)))


def _escape(match: "re.Match[str]") -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short:
        return short
    code = ord(char)
    return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code


def safe(text: Any) -> str:
    r"""``text`` (any value: ``str()`` of it) with every control, C1 and bidi character escaped
    (``\x1b``, ``\n``, ``\u202e``): what a terminal may be shown of an untrusted string."""
    s = text if isinstance(text, str) else str(text)
    if s.isascii() and s.isprintable():  # the common case, checked in C
        return s
    return _UNSAFE.sub(_escape, s)


def is_safe(text: str) -> bool:
    """True when ``text`` has nothing :func:`safe` would escape."""
    return _UNSAFE.search(text) is None


def safe_doc(value: Any) -> Any:
    """``value`` (a JSON-like document) with :func:`safe` applied to every string, keys
    included; containers are copied only where something changed (a clean document is
    returned as is). Renderers format the result, so no string from the target reaches the
    text raw, and a newline in a file name cannot forge a line."""
    return _safe_walk(value, 0)


def _clean(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _safe_walk(value: Any, depth: int) -> Any:
    # Numbers and None are skipped inline: a chunk list is mostly ints (1 M chunks: ~1.4 s
    # here, against ~12 s to lay out their table).
    kind = type(value)
    if kind is str:
        return value if _clean(value) else safe(value)
    if depth > 200:  # documents are shallow; a hostile one is cut, not followed
        return "…"
    if kind is dict or isinstance(value, dict):
        changed: Optional[Dict[Any, Any]] = None
        keys_dirty = False
        for key, item in value.items():
            if type(key) is str and not _clean(key):
                keys_dirty = True
            t = type(item)
            if t is int or item is None or t is bool or t is float:
                continue
            new = _safe_walk(item, depth + 1)
            if new is not item:
                if changed is None:
                    changed = {}
                changed[key] = new
        if changed is None and not keys_dirty:
            return value
        changed = changed or {}
        return {(safe(k) if type(k) is str else k): changed.get(k, v) for k, v in value.items()}
    if kind is list or kind is tuple or isinstance(value, (list, tuple)):
        items: Optional[List[Any]] = None
        for i, item in enumerate(value):
            t = type(item)
            if t is int or item is None or t is bool or t is float:
                if items is not None:
                    items.append(item)
                continue
            new = _safe_walk(item, depth + 1)
            if items is None and new is not item:
                items = list(value[:i])
            if items is not None:
                items.append(new)
        if items is None:
            return value
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, str):
        return safe(value)
    return value


_TOKEN = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|[nrt])|.", re.S)


def clip(text: str, limit: int) -> str:
    """The first ``limit`` characters of a :func:`safe` string, never cutting an escape in two
    (a cut ``\\x1`` or a trailing backslash would misread as something else)."""
    if len(text) <= limit:
        return text
    end = 0
    for match in _TOKEN.finditer(text):
        if match.end() > limit:
            break
        end = match.end()
    return text[:end]


def safe_line(line: str, style: Optional["Style"] = None) -> str:
    """One line of text output with every control character escaped, keeping only the colour
    codes :class:`Style` itself emits (when ``style`` is enabled): the last guard before a
    terminal, for strings that did not come through :func:`safe_doc`."""
    if line.isascii() and line.isprintable():
        return line
    if style is None or not style.enabled:
        return safe(line)
    return "".join(safe(part) if i % 2 == 0 else part
                   for i, part in enumerate(_OWN_SGR.split(line)))


# -- scalars ---------------------------------------------------------------------------------

def addr(value: Optional[int]) -> str:
    """``0x``-prefixed address as gdb prints it (``0x7faa907217d0``), or ``-`` for None."""
    if value is None:
        return "-"
    return "0x%0*x" % (ADDRESS_DIGITS, value)


def size(nbytes: Optional[int]) -> str:
    """Human-readable size: ``656 B``, ``1.5 KiB``, ``12.0 MiB``."""
    if nbytes is None:
        return "-"
    if abs(nbytes) < 1024:
        return "%d B" % nbytes
    value = float(nbytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if abs(value) < 1024.0 or unit == "TiB":
            return "%.1f %s" % (value, unit)
    raise AssertionError("unreachable")


def exact_size(nbytes: int) -> str:
    """Human and exact, in :func:`size`'s units: ``1.5 MiB (1572864 B)``; small sizes only
    once (``704 B``)."""
    if abs(nbytes) < 1024:
        return "%d B" % nbytes
    return "%s (%d B)" % (size(nbytes), nbytes)


def count_bytes(record: Optional[Record]) -> str:
    """``{"count", "bytes"}`` as ``3 / 1.5 KiB`` (``-`` when empty)."""
    if not record or (not record.get("count") and not record.get("bytes")):
        return "-"
    return "%d / %s" % (record.get("count", 0), size(record.get("bytes", 0)))


def plural(n: int, word: str) -> str:
    """``1 chunk``, ``2 chunks``."""
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


# -- tables ----------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def visible_len(text: str) -> int:
    """Length of ``text`` as displayed (ANSI codes take no room)."""
    return len(_ANSI.sub("", text))


class Column:
    """A table column: a header and an alignment ('<' or '>')."""

    def __init__(self, header: str, align: str = ">") -> None:
        self.header = header
        self.align = align


def table(columns: Sequence[Column], rows: Iterable[Sequence[str]], style: Style = PLAIN,
          indent: str = "") -> List[str]:
    """Lay out ``rows`` under ``columns``; widths fit the widest cell. Returns lines.

    A table wider than ``style.width`` is split into several, one under the other, each
    repeating the first (key) column; a continuation part leaves out the rows it has nothing
    for."""
    rows = [list(row) for row in rows]
    widths = [len(c.header) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], visible_len(cell))

    def line(cells: Sequence[str], which: Sequence[int]) -> str:
        parts = []
        for i in which:
            cell = cells[i] if i < len(cells) else ""
            pad = " " * (widths[i] - visible_len(cell))
            parts.append(cell + pad if columns[i].align == "<" else pad + cell)
        return (indent + "  ".join(parts)).rstrip()

    from .termwidth import column_groups  # pylint: disable=import-outside-toplevel
    groups = ([list(range(len(columns)))] if not style.width
              else column_groups(widths, style.width, indent=len(indent)))
    out: List[str] = []
    for n, which in enumerate(groups):
        if n:
            out.append("")
        out.append(style.paint("bold", line([c.header for c in columns], which)))
        # A continuation part lists only the rows with something in its columns.
        out.extend(line(row, which) for row in rows
                   if not n or any(row[i] for i in which[1:] if i < len(row)))
    return out


# -- diagnostics -----------------------------------------------------------------------------

#: Severities, mildest first. "warning": the result is still complete and exact (exit 0);
#: "error": it is incomplete or may be wrong (exit 1). The engine decides them per kind.
SEVERITIES = ("note", "warning", "error")


def kind_severities() -> Dict[str, str]:
    """The engine's severity of every diagnostic kind (empty when the engine is not loaded)."""
    try:
        import heapwalk  # pylint: disable=import-outside-toplevel
        kinds = heapwalk.native().diagnostic_kinds()
    except Exception:  # pylint: disable=broad-except  # a fake or missing engine: fall back
        return {}
    return {k["kind"]: k["severity"] for k in kinds}


def severity(diagnostic: Record, kinds: Optional[Mapping[str, str]] = None) -> str:
    """The diagnostic's severity: its ``severity`` field (set by the engine); without one (a
    report saved by an older heapwalk, a note made in Python) the engine's severity for its
    kind (``kinds``), else "note" for a note and "error" for anything unknown."""
    value = diagnostic.get("severity")
    if value in SEVERITIES:
        return str(value)
    kind = diagnostic.get("kind")
    if kind == "note":
        return "note"
    return (kinds or {}).get(str(kind), "error")


def is_problem(diagnostic: Record) -> bool:
    """True for a diagnostic whose result is incomplete or may be wrong (exit status 1)."""
    return severity(diagnostic) == "error"


def diagnostics(items: Iterable[Record], style: Style = PLAIN) -> List[str]:
    """``error: <kind> at 0x…: detail`` / ``warning: …`` lines (``note: …`` for notes)."""
    out = []
    for d in items:
        kind = d.get("kind", "unknown")
        where = " at %s" % addr(d["address"]) if d.get("address") is not None else ""
        if d.get("arena") is not None:
            where += " (arena %s)" % addr(d["arena"])
        detail = " ".join(str(d.get("detail", "")).split())
        level = severity(d)
        if level == "note":
            out.append("%s %s" % (style.paint("dim", "note:"), detail))
        elif level == "warning":
            out.append("%s %s%s: %s" % (style.paint("warn", "warning:"), kind, where, detail))
        else:
            out.append("%s %s%s: %s" % (style.paint("error", "error:"), kind, where, detail))
    return out


# -- JSON ------------------------------------------------------------------------------------

#: What json.dumps leaves raw (it escapes only C0, quote and backslash) but a terminal must
#: not see: DEL, C1, bidi controls, separators, lone surrogates. Outside strings JSON is ASCII,
#: so replacing them with ``\\uXXXX`` anywhere in the text keeps the document valid.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                          "\u2066-\u2069\ud800-\udfff]")


def to_json(document: Record) -> str:
    """Deterministic JSON: the engine's key order (it is fixed), 2-space indent, newline.
    Non-ASCII text stays readable; every control and bidi character is a ``\\u`` escape."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda m: "\\u%04x" % ord(m.group()), text) + "\n"


def wrap(command: str, record: Record) -> Dict[str, Any]:
    """``{"schema": "heapwalk/1", "command": …, **record}``; record keys keep their order."""
    document: Dict[str, Any] = {"schema": SCHEMA, "command": command}
    for key, value in record.items():
        if key not in document:
            document[key] = value
    return document


# -- helpers for arenas ----------------------------------------------------------------------

def arena_names(report: Optional[Record]) -> Dict[int, str]:
    """Map arena address -> ``#i`` label from an ``arenas()`` report."""
    names: Dict[int, str] = {}
    for position, arena in enumerate((report or {}).get("arenas", [])):
        names[arena["address"]] = "#%d" % arena.get("index", position)
    return names


def arena_ref(address: Optional[int], names: Mapping[int, str]) -> str:
    """``0x… (#1)`` for a known arena, the bare address otherwise, ``-`` for None."""
    if address is None:
        return "-"
    name = names.get(address)
    return "%s (%s)" % (addr(address), name) if name else addr(address)


def arena_title(arena: Record, position: int) -> str:
    """``arena #0 (main) 0x…`` heading."""
    index = arena.get("index", position)
    main = " (main)" if arena.get("main") else ""
    return "arena #%d%s %s" % (index, main, addr(arena.get("address")))


def preview(addresses: Sequence[int], total: Optional[int] = None,
            limit: int = BIN_PREVIEW) -> str:
    """The first ``limit`` addresses of a list (0: all) and ``… +N`` for the rest."""
    limit = limit if limit > 0 else len(addresses)
    shown = ", ".join(addr(a) for a in addresses[:limit])
    remaining = (total if total is not None else len(addresses)) - min(len(addresses), limit)
    if remaining > 0:
        shown += (", " if shown else "") + "… +%d" % remaining
    return shown


# -- command renderers -----------------------------------------------------------------------

def render_arenas(report: Record, style: Style = PLAIN) -> List[str]:
    """The ``arenas`` text: arena table + totals, threads, mmapped, glibc."""
    arenas = report.get("arenas", [])
    columns = [Column("#"), Column("arena", "<"), Column("main", "<"), Column("system"),
               Column("max system"), Column("heaps"), Column("in use"),
               Column("fastbins"), Column("bins"), Column("top"), Column("tcache")]
    rows = []
    totals = {"system": 0, "max": 0, "heaps": 0, "in_use": [0, 0], "fast": [0, 0],
              "bins": [0, 0], "top": 0, "tcache": [0, 0]}
    for position, a in enumerate(arenas):
        rows.append([str(a.get("index", position)), style.paint("addr", addr(a.get("address"))),
                     "main" if a.get("main") else "",
                     style.paint("size", size(a.get("system_bytes", 0))),
                     size(a.get("max_system_bytes", 0)), str(len(a.get("heaps", []))),
                     count_bytes(a.get("in_use")), count_bytes(a.get("fastbins")),
                     count_bytes(a.get("bins")), size(a.get("top_bytes", 0)),
                     count_bytes(a.get("tcache"))])
        totals["system"] += a.get("system_bytes", 0)
        totals["max"] += a.get("max_system_bytes", 0)
        totals["heaps"] += len(a.get("heaps", []))
        totals["top"] += a.get("top_bytes", 0)
        for key, field in (("in_use", "in_use"), ("fast", "fastbins"), ("bins", "bins"),
                           ("tcache", "tcache")):
            totals[key][0] += (a.get(field) or {}).get("count", 0)
            totals[key][1] += (a.get(field) or {}).get("bytes", 0)
    if len(arenas) > 1:
        rows.append(["", "total", "", size(totals["system"]), size(totals["max"]),
                     str(totals["heaps"]),
                     count_bytes({"count": totals["in_use"][0], "bytes": totals["in_use"][1]}),
                     count_bytes({"count": totals["fast"][0], "bytes": totals["fast"][1]}),
                     count_bytes({"count": totals["bins"][0], "bytes": totals["bins"][1]}),
                     size(totals["top"]),
                     count_bytes({"count": totals["tcache"][0],
                                  "bytes": totals["tcache"][1]})])
    out = table(columns, rows, style)
    free = totals["fast"][1] + totals["bins"][1] + totals["top"] + totals["tcache"][1]
    out.append("")
    out.append("%s: system %s, in use %s in %s, free %s: fastbins %s, bins %s, top %s, "
               "tcache %s" % (style.paint("bold", "totals"), exact_size(totals["system"]),
                              exact_size(totals["in_use"][1]),
                              plural(totals["in_use"][0], "chunk"), exact_size(free),
                              size(totals["fast"][1]), size(totals["bins"][1]),
                              size(totals["top"]), size(totals["tcache"][1])))
    mmapped = report.get("mmapped") or {}
    out.append("%s: %s, %s" % (style.paint("bold", "mmapped"),
                               plural(mmapped.get("count", 0), "chunk"),
                               exact_size(mmapped.get("bytes", 0))))
    threads = report.get("threads", [])
    if threads:
        names = arena_names(report)
        out.append("")
        out.append("%s (%d):" % (style.paint("bold", "threads"), len(threads)))
        trows = []
        for t in threads:
            tc = t.get("tcache") or {}
            trows.append([str(t.get("lwp")), arena_ref(t.get("arena"), names),
                          style.paint("addr", addr(tc.get("address"))), count_bytes(tc)])
        out.extend(table([Column("lwp"), Column("arena", "<"), Column("tcache", "<"),
                          Column("cached")], trows, style, indent="  "))
    glibc = report.get("glibc") or {}
    out.append("")
    source = str(glibc.get("layout_source", "?"))
    out.append("glibc %s (layout: %s)" % (glibc.get("version", "?"),
                                         source if style.verbose else layout_words(source)))
    return out


#: The first word of the engine's ``layout_source`` in plain words (the rest, its profile and
#: the glibc source it encodes, is for ``-v`` and JSON).
_LAYOUT_WORDS = {"dwarf": "from glibc's debug info", "symtab": "from glibc's symbols",
                 "override": "from the addresses you gave",
                 "heuristic": "found by searching memory"}


def layout_words(source: str) -> str:
    """``dwarf (profile 2.35: glibc-2.35 malloc/malloc.c …)`` -> ``from glibc's debug info``."""
    word = source.split(" ", 1)[0]
    return _LAYOUT_WORDS.get(word, word or "?")


def render_heaps(document: Record, style: Style = PLAIN) -> List[str]:
    """The ``heaps`` text: per arena, its heaps."""
    out: List[str] = []
    for position, arena in enumerate(document.get("arenas", [])):
        heaps = arena.get("heaps", [])
        total = sum(h.get("size", 0) for h in heaps)
        prot = sum(h.get("mprotect_size", 0) for h in heaps)
        out.append("%s: %s, size %s, mprotect %s" % (
            style.paint("bold", arena_title(arena, position)), plural(len(heaps), "heap"),
            exact_size(total), exact_size(prot)))
        if heaps:
            out.extend(table([Column("heap", "<"), Column("size"), Column("mprotect size"),
                              Column("bytes")],
                             [[addr(h.get("address")), size(h.get("size", 0)),
                               size(h.get("mprotect_size", 0)), str(h.get("size", 0))]
                              for h in heaps], style, indent="  "))
        out.append("")
    if out:
        out.pop()
    return out


def render_bins(document: Record, style: Style = PLAIN) -> List[str]:
    """The ``bins`` text: per arena, non-empty fastbins and bins, and top."""
    out: List[str] = []
    for position, arena in enumerate(document.get("arenas", [])):
        out.append(style.paint("bold", arena_title(arena, position)))
        fast = arena.get("fastbins", [])
        bins = arena.get("bins", [])
        if fast:
            out.append("  fastbins:")
            out.extend(table(
                [Column("bin"), Column("size"), Column("count"), Column("bytes"),
                 Column("chunks", "<")],
                [[str(f.get("index")), str(f.get("size")), str(f.get("count", 0)),
                  size(f.get("bytes", 0)), preview(f.get("chunks", []), f.get("count"),
                                                         getattr(style, "preview", BIN_PREVIEW))]
                 for f in fast], style, indent="    "))
        else:
            out.append("  fastbins: empty")
        if bins:
            out.append("  bins:")
            out.extend(table(
                [Column("bin"), Column("kind", "<"), Column("count"), Column("bytes"),
                 Column("chunks", "<")],
                [[str(b.get("index")), str(b.get("kind", "")), str(b.get("count", 0)),
                  size(b.get("bytes", 0)),
                  preview([c["address"] if isinstance(c, Mapping) else c
                           for c in b.get("chunks", [])], b.get("count"),
                          getattr(style, "preview", BIN_PREVIEW))]
                 for b in bins], style, indent="    "))
        else:
            out.append("  bins: empty")
        top = arena.get("top") or {}
        out.append("  top: %s, %s" % (addr(top.get("address")),
                                      exact_size(top.get("size", 0))))
        out.append("")
    if out:
        out.pop()
    return out


def render_tcache(document: Record, names: Mapping[int, str],
                  style: Style = PLAIN) -> List[str]:
    """The ``tcache`` text: per thread, its tcache bins."""
    out: List[str] = []
    for t in document.get("threads", []):
        head = "%s: tcache %s, arena %s: %s, %s" % (
            style.paint("bold", "thread %s" % t.get("lwp")),
            style.paint("addr", addr(t.get("address"))), arena_ref(t.get("arena"), names),
            plural(t.get("count", 0), "chunk"),
            style.paint("size", exact_size(t.get("bytes", 0))))
        out.append(head)
        bins = t.get("bins", [])
        if bins:
            out.extend(table(
                [Column("bin"), Column("size"), Column("count"), Column("bytes"),
                 Column("chunks", "<")],
                [[str(b.get("index")), str(b.get("size")), str(b.get("count", 0)),
                  size(b.get("bytes", b.get("size", 0) * b.get("count", 0))),
                  preview(b.get("chunks", []), b.get("count"),
                                                         getattr(style, "preview", BIN_PREVIEW))]
                 for b in bins], style, indent="  "))
        elif t.get("address") is None:
            out.append("  no tcache (thread never called malloc, or tcache disabled)")
        else:
            out.append("  empty")
    return out


def render_chunks(document: Record, names: Mapping[int, str], limited_by_default: bool,
                  style: Style = PLAIN) -> List[str]:
    """The ``chunks`` text: one line per chunk and a footer for the ones not shown."""
    chunks = document.get("chunks", [])
    rows = [[addr(c.get("address")), str(c.get("size", 0)), size(c.get("size", 0)),
             _state(c.get("state", "?"), style), arena_ref(c.get("arena"), names)]
            for c in chunks]
    out = table([Column("chunk", "<"), Column("size"), Column("human"), Column("state", "<"),
                 Column("arena", "<")], rows, style)
    total = document.get("total", len(chunks))
    more = total - len(chunks)
    if more > 0:
        out.append("… %d more (use --limit%s)" % (more, " 0 for all" if limited_by_default
                                                   else ""))
    out.append("%s shown of %d" % (plural(len(chunks), "chunk"), total))
    return out


def _state(state: str, style: Style) -> str:
    """A chunk state, painted green when free (padding is applied by the table)."""
    return state if state in ("used", "mmapped", "fencepost") else style.paint("free", state)


def _chunk_line(label: str, record: Optional[Record], names: Mapping[int, str]) -> str:
    """``prev  0x… size 32 (32 B) tcache`` for a neighbour."""
    if not record:
        return "  %-6s -" % label
    return "  %-6s %s  size %s  %s" % (label, addr(record.get("address")),
                                       exact_size(record.get("size", 0)),
                                       record.get("state", "?"))


def render_chunk(document: Record, names: Mapping[int, str],
                 style: Style = PLAIN) -> List[str]:
    """The ``chunk ADDR`` text: the chunk holding ADDR, its state, arena, neighbours."""
    query = document.get("query")
    c = document.get("chunk")
    if not c:
        return ["%s: not inside any heap chunk" % addr(query)]
    offset = c.get("offset", query - c.get("mem", 0))
    if offset < -16:
        where = "in the memalign lead of its mapping, %d bytes before the user data" % -offset
    elif offset < 0:
        where = "in the chunk header, %d bytes before the user data" % -offset
    elif offset >= c.get("usable", c.get("size", 0)):
        where = "%d bytes into the user data, past the usable size" % offset
    else:
        where = "%d bytes into the user data" % offset
    out = ["%s: %s" % (addr(query), style.paint("bold", "in chunk %s (%s)" % (
        addr(c.get("address")), where)))]
    out.append("  %-6s %s" % ("state", c.get("state", "?")))
    out.append("  %-6s %s" % ("size", exact_size(c.get("size", 0))))
    out.append("  %-6s %s, usable %d" % ("mem", addr(c.get("mem")), c.get("usable", 0)))
    out.append("  %-6s %s" % ("arena", arena_ref(document.get("arena", c.get("arena")),
                                                 names)))
    if c.get("heap") is not None:
        out.append("  %-6s %s" % ("heap", addr(c.get("heap"))))
    m = c.get("mapping")
    if m:
        out.append("  %-6s %s, %s (chunk %d bytes in)" % ("mapped", addr(m["base"]), exact_size(m["size"]),
                                                       c.get("address", 0) - m["base"]))
    out.append(_chunk_line("prev", document.get("prev"), names))
    out.append(_chunk_line("next", document.get("next"), names))
    return out


def natural_key(text: str) -> List[Any]:
    """Sort key that orders embedded numbers numerically ("arena #2" before "arena #10")."""
    return [int(p) if p.isascii() and p.isdigit() else p for p in re.split(r"([0-9]+)", text or "")]

def sort_groups(groups: List[Record]) -> List[Record]:
    """Mapping groups largest first: by resident bytes when known (live: smaps/pagemap; a
    core: what it holds), then by mapped bytes, then by label with numbers in order."""
    return sorted(groups, key=lambda g: (-(g.get("resident_bytes") or 0), -(g.get("mapped_bytes") or 0),
                                         natural_key(g.get("label", ""))))


# -- nmt -------------------------------------------------------------------------------------

#: How many malloc sites / regions the text of ``nmt --detail`` shows.
NMT_DETAIL_LIMIT = 25


def render_nmt(document: Record, style: Style = PLAIN) -> List[str]:
    """``nmt``: jcmd's summary table, header reconstruction, untracked malloc, reconciliation."""
    n = document.get("nmt") or {}
    out: List[str] = []
    level = n.get("level", "unknown")
    libjvm = (n.get("libjvm") or {}).get("path")
    if not libjvm:
        return ["no HotSpot JVM (libjvm.so) in this target"]
    source = str(n.get("source"))
    if not style.verbose:  # plain words; -v and JSON keep the engine's word
        source = {"symtab": "libjvm's NMT counters (found by its symbols)",
                  "headers": "NMT's malloc headers (no counters found)"}.get(source, source)
    out.append("JVM %s (%s), NMT %s; figures from %s" % (
        n.get("jdk") or "version unknown", libjvm, level, source))
    if n.get("layout") and style.verbose:  # provenance: -v and JSON only
        out.append(style.paint("dim", "layout: %s" % n["layout"]))
    out.append("")
    cats = n.get("categories") or []
    if level == "off":
        out.append("Native Memory Tracking is off (-XX:NativeMemoryTracking=off): no categories.")
    elif cats:
        total = n.get("total") or {}
        tm = total.get("malloc") or {}
        mm = total.get("mmap") or {}
        out.append("Total: reserved=%d, committed=%d  (%s / %s)" % (
            total.get("reserved", 0), total.get("committed", 0),
            size(total.get("reserved", 0)), size(total.get("committed", 0))))
        out.append("       malloc: %d #%d" % (tm.get("bytes", 0), tm.get("count", 0)))
        out.append("       mmap:   reserved=%d, committed=%d" % (mm.get("reserved", 0),
                                                               mm.get("committed", 0)))
        if total.get("committed_now") is not None:
            out.append("       with the thread stacks' committed bytes computed now: committed=%d (%s)"
                       % (total["committed_now"], size(total["committed_now"])))
        out.append("")
        rows = []
        for c in cats:
            m, a, v = c.get("malloc") or {}, c.get("arena") or {}, c.get("mmap") or {}
            extra = []
            if c.get("stack"):
                st = c["stack"]
                extra.append("stack %s/%s%s, %s threads" % (
                    size(st["reserved"]), size(st["committed"]),
                    " (NMT's record; now %s)" % size(st["committed_now"])
                    if st.get("committed_now") is not None else "",
                    c.get("threads") if c.get("threads") is not None else "?"))
            if c.get("tracking_overhead"):
                extra.append("headers %s" % size(c["tracking_overhead"]))
            rows.append([c.get("name", "?"), str(c.get("reserved", 0)), str(c.get("committed", 0)),
                         "%d #%d" % (m.get("bytes", 0), m.get("count", 0)) if m.get("bytes") else "",
                         "%d #%d" % (a.get("bytes", 0), a.get("count", 0)) if a.get("bytes") else "",
                         "%d/%d" % (v.get("reserved", 0), v.get("committed", 0))
                         if v.get("reserved") else "",
                         "; ".join(extra)])
        out.extend(table([Column("category", "<"), Column("reserved"), Column("committed"),
                          Column("malloc"), Column("arena"), Column("mmap res/com"),
                          Column("", "<")], rows, style))
    out.extend(render_thread_stacks(n.get("thread_stacks")))
    headers = n.get("headers")
    out.append("")
    if headers:
        hc = headers.get("categories") or []
        if hc:
            out.append("Malloc blocks with an NMT header (%s), by category:" % headers.get("layout"))
            out.extend(table([Column("category", "<"), Column("bytes"), Column("count")],
                             [[h["name"], str(h["bytes"]), str(h["count"])] for h in hc],
                             style, indent="  "))
        else:
            out.append("No malloc block carries an NMT header.")
    un = n.get("untracked_malloc")
    if un is not None:
        out.append("Untracked malloc (in-use chunks without an NMT header): %s in %s" % (
            exact_size(un.get("bytes", 0)), plural(un.get("count", 0), "chunk")))
    g = n.get("glibc")
    if g:
        out.append("glibc: %d arenas, system %s, in use %s (%d chunks), free %s, top %s, "
                   "mmapped %s (%d)" % (g["arenas"], size(g["system"]), size(g["in_use"]),
                                        g["in_use_count"], size(g["free"]), size(g["top"]),
                                        size(g["mmapped"]), g["mmapped_count"]))
    rec = n.get("reconciliation") or []
    if rec:
        out.append("")
        out.append("Address space, line by line:")
        out.extend(table([Column("what", "<"), Column("bytes"), Column("")],
                         [[r["what"], str(r["bytes"]), size(r["bytes"])] for r in rec],
                         style, indent="  "))
        for r in rec:
            if r.get("note"):
                out.append(style.paint("dim", "  %s: %s" % (r["what"], r["note"])))
    sites = n.get("sites")
    if sites:
        out.append("")
        out.append("Malloc sites (%d, largest first):" % len(sites))
        for site in sites[:NMT_DETAIL_LIMIT]:
            out.append("  %d bytes #%d type=%s" % (site["bytes"], site["count"], site["category"]))
            for f in site.get("frames", []):
                out.append("      %s %s" % (addr(f["pc"]), f.get("symbol") or ""))
        if len(sites) > NMT_DETAIL_LIMIT:
            out.append("  … %d more (--json lists all)" % (len(sites) - NMT_DETAIL_LIMIT))
    regions = n.get("regions")
    if regions:
        out.append("")
        out.append("Reserved regions (%d):" % len(regions))
        out.extend(table([Column("base", "<"), Column("size"), Column("committed"),
                          Column("category", "<")],
                         [[addr(r["base"]), str(r["size"]), str(r["committed"]), r["category"]]
                          for r in regions[:NMT_DETAIL_LIMIT * 4]], style, indent="  "))
        out.append("")
        out.extend(render_vm_map(regions[:NMT_DETAIL_LIMIT * 4], style))
        if len(regions) > NMT_DETAIL_LIMIT * 4:
            out.append("… %d more regions (--json lists all)" % (len(regions) - NMT_DETAIL_LIMIT * 4))
    return out


def render_thread_stacks(ts: Optional[Record]) -> List[str]:
    """The thread stacks' committed bytes computed now next to NMT's record of them."""
    if not ts:
        return []
    out = ["", "Thread stacks (%d): committed now %s; NMT's record %s" % (
        ts["regions"], exact_size(ts["committed"]), exact_size(ts["committed_nmt"]))]
    out.append("  NMT does not track stack growth: its record is what the last jcmd "
               "VM.native_memory (or each thread's creation: its guard zones, %s) left in the image;"
               % size(ts.get("guard", 0)))
    out.append("  computed as jcmd's next report would: the guard zones plus the %s." % ts["method"])
    return out


def _frame_lines(frames: Sequence[Record], indent: str) -> List[str]:
    return ["%s[%s] %s" % (indent, addr(f["pc"]), f.get("symbol") or "") for f in frames]


def render_vm_map(regions: Sequence[Record], style: Style = PLAIN) -> List[str]:
    """jcmd ``VM.native_memory detail``'s "Virtual memory map": each reserved region with the
    stack that reserved it, then its committed parts with the stacks that committed them.  As
    jcmd (MemDetailReporter::report_virtual_memory_region), a region committed whole by its own
    stack says "reserved and committed" and does not repeat that part."""
    out = ["Virtual memory map:"]
    for r in regions:
        frames = r.get("frames") or []
        parts = r.get("committed_regions") or []
        whole = r["size"] == r.get("committed")
        out.append("")
        out.append("%s %s %d for %s%s" % (
            style.paint("bold", "[%s - %s]" % (addr(r["base"]), addr(r["base"] + r["size"]))),
            "reserved and committed" if whole else "reserved", r["size"], r["category"],
            " from" if frames else ""))
        out.extend(_frame_lines(frames, "    "))
        if whole and len(parts) == 1 and parts[0]["size"] == r["size"] and parts[0].get("frames") == frames:
            continue
        for c in parts:
            cf = c.get("frames") or []
            out.append("      [%s - %s] committed %d%s" % (addr(c["base"]), addr(c["base"] + c["size"]),
                                                         c["size"], " from" if cf else ""))
            out.extend(_frame_lines(cf, "          "))
    return out
