"""JSON documents written a batch at a time (issue 15, "listings on big heaps").

``chunks --json`` and ``bins --json`` list every chunk of a heap. Their documents hold
:class:`Stream` values (a list the engine yields in batches: ``Target.chunk_stream()``,
``Target.free_list_stream()``) and :class:`Lazy` ones (``total``, ``diagnostics``: known once
the lists before them are written). :func:`pieces` writes such a document as the same bytes as
``render.to_json`` would for the whole document, holding one batch at a time.
:func:`chunk_table` does the same for the ``chunks --limit 0`` text table.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence

from . import render

#: render.to_json's escapes (applied to each piece: it matches single characters).
_JSON_UNSAFE = render._JSON_UNSAFE  # pylint: disable=protected-access

#: Encodes a batch of stream items: each item's JSON as ``json.dumps(item, indent=2)`` writes it.
Encoder = Callable[[Sequence[Any]], List[str]]


class Lazy:
    """A value computed when the writer reaches it (then stored in the document)."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self.compute = compute


class Stream:
    """A JSON list whose items come in batches (``batches`` yields sequences of items)."""

    def __init__(self, batches: Iterable[Sequence[Any]], encode: Optional[Encoder] = None) -> None:
        self.batches = batches
        self.encode: Encoder = encode or _encode_plain
        self.count = 0  #: items written so far


def _encode_plain(items: Sequence[Any]) -> List[str]:
    return [json.dumps(item, indent=2, ensure_ascii=False) for item in items]


def _none_or(value: Optional[int]) -> str:
    return "null" if value is None else str(value)


def encode_chunks(rows: Sequence[Any]) -> List[str]:
    """``(address, size, state, arena, heap)`` tuples as the engine's chunk records."""
    form = '{\n  "address": %d,\n  "size": %d,\n  "state": "%s",\n  "arena": %s,\n  "heap": %s\n}'
    return [form % (a, s, st, "null" if ar is None else ar, "null" if hp is None else hp)
            for a, s, st, ar, hp in rows]


def encode_addresses(items: Sequence[int]) -> List[str]:
    """Fastbin chunks: bare addresses."""
    return [str(a) for a in items]


def encode_sized(items: Sequence[Any]) -> List[str]:
    """Bin chunks: ``(address, size)`` tuples as ``{"address", "size"}`` records."""
    form = '{\n  "address": %d,\n  "size": %d\n}'
    return [form % (a, s) for a, s in items]


def has_streams(value: Any) -> bool:
    """Does ``value`` hold a :class:`Stream` or :class:`Lazy` anywhere?"""
    if isinstance(value, (Stream, Lazy)):
        return True
    if isinstance(value, dict):
        return any(has_streams(v) for v in value.values())
    if isinstance(value, list):
        return any(has_streams(v) for v in value)
    return False


def pieces(document: Any) -> Iterator[str]:
    """The text of ``render.to_json(document)``, in pieces of at most a batch."""
    for piece in _value(document, 0):
        yield _JSON_UNSAFE.sub(lambda m: "\\u%04x" % ord(m.group()), piece)
    yield "\n"


def _value(value: Any, level: int) -> Iterator[str]:
    if isinstance(value, Stream):
        yield from _stream(value, level)
    elif not has_streams(value):
        text = json.dumps(value, indent=2, ensure_ascii=False)
        yield text.replace("\n", "\n" + "  " * level) if level else text
    elif isinstance(value, dict):
        if not value:
            yield "{}"
            return
        inner = "\n" + "  " * (level + 1)
        for i, key in enumerate(list(value)):
            item = value[key]
            if isinstance(item, Lazy):
                item = value[key] = item.compute()
            yield ("{" if i == 0 else ",") + inner + json.dumps(key, ensure_ascii=False) + ": "
            yield from _value(item, level + 1)
        yield "\n" + "  " * level + "}"
    else:  # a list holding streams
        if not value:
            yield "[]"
            return
        inner = "\n" + "  " * (level + 1)
        for i, item in enumerate(value):
            if isinstance(item, Lazy):
                item = value[i] = item.compute()
            yield ("[" if i == 0 else ",") + inner
            yield from _value(item, level + 1)
        yield "\n" + "  " * level + "]"


def _stream(stream: Stream, level: int) -> Iterator[str]:
    inner = "\n" + "  " * (level + 1)
    first = True
    for batch in stream.batches:
        texts = stream.encode(batch)
        if not texts:
            continue
        stream.count += len(texts)
        yield ("[" if first else ",") + ("\n" + ",\n".join(texts)).replace("\n", inner)
        first = False
    yield "[]" if first else "\n" + "  " * level + "]"


# -- text ------------------------------------------------------------------------------------

def chunk_rows(target: Any, arena: Optional[int], state: str, names: Mapping[int, str],
               style: render.Style, batch: int, holder: List[Any]) -> Iterator[List[List[str]]]:
    """The rows of the ``chunks`` table (as ``render.render_chunks`` lays them out), a batch
    at a time; the engine's stream is appended to ``holder``."""
    stream = target.chunk_stream(arena, state, None, batch)
    holder.append(stream)
    paint = render._state  # pylint: disable=protected-access
    addr, size, ref = render.addr, render.size, render.arena_ref
    for rows in stream:
        yield [[addr(a), str(s), size(s), paint(st, style), ref(ar, names)]
               for a, s, st, ar, _ in rows]


def chunk_table(target: Any, arena: Optional[int], state: str, names: Mapping[int, str],
                style: render.Style, batch: int, done: Callable[[Any], None],
                whole: Callable[[], List[str]]) -> Iterator[str]:
    """``render.render_chunks`` of every chunk, line by line: two walks, the first for the
    column widths (the table fits its widest cell). ``done(stream)`` gets the second walk's
    stream (its total and diagnostics) before the footer. A table too wide for the terminal
    (``style.width``), which ``render.table`` splits into parts, comes from ``whole()``: the
    lines rendered from the whole document."""
    columns = [render.Column("chunk", "<"), render.Column("size"), render.Column("human"),
               render.Column("state", "<"), render.Column("arena", "<")]
    widths = [len(c.header) for c in columns]
    visible = render.visible_len
    first: List[Any] = []
    for rows in chunk_rows(target, arena, state, names, style, batch, first):
        for row in rows:
            for i, cell in enumerate(row):
                n = visible(cell)
                if n > widths[i]:
                    widths[i] = n
    width = getattr(style, "width", 0)
    if width:
        try:
            from .termwidth import column_groups  # pylint: disable=import-outside-toplevel
        except ImportError:
            column_groups = None
        if column_groups is not None and len(column_groups(widths, width, indent=0)) > 1:
            yield from whole()
            return

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            pad = " " * (widths[i] - visible(cell))
            parts.append(cell + pad if columns[i].align == "<" else pad + cell)
        return "  ".join(parts).rstrip()

    yield style.paint("bold", line([c.header for c in columns]))
    shown = 0
    second: List[Any] = []
    for rows in chunk_rows(target, arena, state, names, style, batch, second):
        shown += len(rows)
        for row in rows:
            yield line(row)
    stream = second[0]
    done(stream)
    yield "%s shown of %d" % (render.plural(shown, "chunk"), stream.total)
