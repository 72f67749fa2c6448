"""``chunks``, ``chunk ADDR`` and ``tcache`` on jemalloc and tcmalloc (issue 16).

When jemalloc or gperftools tcmalloc answers the process's malloc (``Target.allocators()``),
these commands show that allocator's allocations, not glibc's chunks. The engine's
allocator-neutral model (native/alloc/model.h, bound by native/bindings/alloc_model.cpp) walks
and looks up; this module dispatches once on the owner and renders. Every document declares its
``"allocator"``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from . import render, streamed
from .errors import NotFoundError
from .render import PLAIN, Column, Style

Record = Dict[str, Any]

#: The allocators this module handles (glibc's are handled by the ptmalloc commands).
ALLOCATORS = ("jemalloc", "tcmalloc")
#: Items per batch of a streamed listing.
STREAM_BATCH = 16384


def owner(target: Any) -> Optional[str]:
    """"jemalloc" or "tcmalloc" when that allocator owns malloc in ``target``, else None."""
    try:
        found = target.allocators()
    except Exception:  # pylint: disable=broad-except  # an engine or double without detection
        return None
    for a in found or []:
        if a.get("owns_malloc"):
            return a.get("allocator") if a.get("allocator") in ALLOCATORS else None
    return None


def _engine(target: Any, name: str) -> Callable[..., Any]:
    handle = getattr(target, "_handle", None)
    method = getattr(handle, name, None)
    if method is None:
        raise NotFoundError("this heapwalk engine has no %s (rebuild it: scripts/build)" % name)
    return lambda *a, **k: target._call(method, *a, **k)  # pylint: disable=protected-access


def summary(target: Any, allocator: Optional[str] = None) -> Record:
    """The model's header, statistics, pools and thread caches."""
    return _engine(target, "alloc_summary")(allocator)


def pools_section(target: Any) -> Optional[Record]:
    """What ``diff`` compares of a jemalloc/tcmalloc process: {"allocator", "version",
    "pools": [{"index", "name", "stats"}], "stats"}, or None when glibc owns malloc."""
    kind = owner(target)
    if kind is None:
        return None
    s = summary(target, kind)
    return {"allocator": s.get("allocator"), "version": s.get("version"),
            "layout_source": s.get("layout_source"), "stats": s.get("stats", {}),
            "pools": [{"index": p.get("index"), "name": p.get("name"),
                       "address": p.get("address"), "stats": p.get("stats", {})}
                      for p in s.get("pools", [])]}


def _title(doc: Record) -> List[str]:
    return ["%s (layout: %s)" % (render.safe(doc.get("version", doc.get("allocator", "?"))),
                                 render.safe(doc.get("layout_source", ""))),
            "  module %s" % render.safe(doc.get("module", ""))]


# -- chunks ------------------------------------------------------------------------------------

def _encode(rows: Sequence[Any]) -> List[str]:
    form = ('{\n  "address": %d,\n  "size": %d,\n  "state": "%s",\n  "arena": %s,\n'
            '  "pool": %s\n}')
    return [form % (a, s, st, "null" if pa is None else pa, "null" if pi is None else pi)
            for a, s, st, pi, pa in rows]


def _record(row: Sequence[Any]) -> Record:
    a, s, st, pi, pa = row
    return {"address": a, "size": s, "state": st, "arena": pa, "pool": pi}


def chunks(target: Any, state: str, limit: Optional[int], as_json: bool) -> Record:
    """The ``chunks`` document: allocations (and free slots) in address order, filtered by
    state ("all", "used", "free"), at most ``limit`` listed; a streamed list for ``--json``."""
    stream = _engine(target, "alloc_chunk_stream")(state, limit, STREAM_BATCH)
    head = stream.header
    if as_json:
        def diagnostics() -> List[Record]:
            from .commands import set_severities  # pylint: disable=import-outside-toplevel
            record = {"diagnostics": stream.diagnostics()}
            set_severities(record)
            return record["diagnostics"]
        return render.wrap("chunks", {
            "allocator": head["allocator"], "version": head["version"],
            "layout_source": head["layout_source"],
            "chunks": streamed.Stream(stream, _encode),
            "total": streamed.Lazy(lambda: stream.total),
            "truncated": streamed.Lazy(lambda: stream.total > stream.listed),
            "counts": streamed.Lazy(lambda: dict(stream.counts)),
            "diagnostics": streamed.Lazy(diagnostics)})
    if limit is None:  # every slot as text: streamed line by line (stream_lines)
        return render.wrap("chunks", dict(head, chunks=streamed.Stream(stream), total=None,
                                          truncated=False, counts={}, diagnostics=[],
                                          _stream=stream))
    rows = [_record(r) for batch in stream for r in batch]
    return render.wrap("chunks", dict(head, chunks=rows, total=stream.total,
                                      truncated=stream.total > stream.listed,
                                      counts=dict(stream.counts),
                                      diagnostics=stream.diagnostics()))


def _pool_label(c: Record) -> str:
    return "-" if c.get("pool") is None else "#%d" % c["pool"]


def render_chunks(doc: Record, limited_by_default: bool, style: Style = PLAIN) -> List[str]:
    """One line per allocation, then what is not shown and the counts by state."""
    def state(c: Record) -> str:
        st = str(c.get("state", "?"))
        return st if st == "in-use" else style.paint("free", st)
    rows = [[render.addr(c.get("address")), str(c.get("size", 0)), render.size(c.get("size", 0)),
             state(c), _pool_label(c)] for c in doc.get("chunks", [])]
    pool = "page heap" if doc.get("allocator") == "tcmalloc" else "arena"
    out = _title(doc)
    out += render.table([Column("allocation", "<"), Column("size"), Column("human"),
                         Column("state", "<"), Column(pool, "<")], rows, style)
    total = doc.get("total", len(rows))
    more = total - len(rows)
    if more > 0:
        out.append("… %d more (use --limit%s)"
                   % (more, " 0 for all" if limited_by_default else ""))
    counts = doc.get("counts") or {}
    order = ("in-use", "cached", "free", "released", "metadata")
    states = ", ".join("%d %s" % (counts[k], k) for k in order if counts.get(k))
    out.append("%s shown of %d%s" % (render.plural(len(rows), "allocation"), total,
                                     " (slots walked: %s)" % states if states else ""))
    return out


def stream_lines(doc: Record, style: Style = PLAIN) -> Iterator[str]:
    """``render_chunks`` of every slot (``--limit 0`` text), a batch at a time in fixed-width
    columns; fills ``doc``'s total, counts and diagnostics before its last line."""
    stream = doc.pop("_stream")
    yield from _title(doc)
    form = "%-14s  %12s  %10s  %-8s  %s"
    pool = "page heap" if doc.get("allocator") == "tcmalloc" else "arena"
    yield style.paint("bold", (form % ("allocation", "size", "human", "state", pool)).rstrip())
    for batch in stream:
        for a, sz, st, pi, _ in batch:
            state = st if st == "in-use" else style.paint("free", "%-8s" % st)
            yield (form % (render.addr(a), sz, render.size(sz), state,
                           "-" if pi is None else "#%d" % pi)).rstrip()
    from .commands import set_severities  # pylint: disable=import-outside-toplevel
    record = {"diagnostics": stream.diagnostics()}
    set_severities(record)
    doc.update(total=stream.total, counts=dict(stream.counts), diagnostics=record["diagnostics"])
    counts = doc["counts"]
    order = ("in-use", "cached", "free", "released", "metadata")
    states = ", ".join("%d %s" % (counts[k], k) for k in order if counts.get(k))
    yield "%s shown of %d%s" % (render.plural(stream.listed, "allocation"), stream.total,
                                " (slots walked: %s)" % states if states else "")


# -- chunk ADDR --------------------------------------------------------------------------------

def chunk(target: Any, address: int, dump: int) -> Record:
    """The ``chunk ADDR`` document: {"allocator", "query", "chunk": the allocation or None}."""
    doc = _engine(target, "alloc_chunk")(address, dump)
    doc["chunk"] = doc.pop("allocation", None)
    return render.wrap("chunk", doc)


def render_chunk(doc: Record, hexdump: Callable[[bytes, int, str], List[str]],
                 style: Style = PLAIN) -> List[str]:
    """The allocation holding ADDR, its slot, class, pool and extent/span, and its bytes."""
    c = doc.get("chunk") or {}
    query = doc.get("query", 0)
    state = c.get("state", "?")
    off = c.get("offset", 0)
    where = "at its start" if off == 0 else "%d bytes into it" % off
    out = ["%s: %s" % (render.addr(query), style.paint("bold", "in %s allocation %s (%s)" % (
        doc.get("allocator", "?"), render.addr(c.get("address")), where)))]
    out.append("  %-10s %s" % ("state", state))
    out.append("  %-10s %s" % ("pointer", render.addr(c.get("address"))))
    slot = render.exact_size(c.get("size", 0))
    if c.get("size_class") is not None and c.get("size_class") != c.get("size"):
        slot += ", size class %d" % c["size_class"]
    elif c.get("size_class") is not None:
        slot += " (size class)"
    out.append("  %-10s %s" % ("slot size", slot))
    pool = c.get("pool_name") or "-"
    if c.get("arena") is not None:
        pool += " at %s" % render.addr(c["arena"])
    label = "page heap" if doc.get("allocator") == "tcmalloc" else "arena"
    out.append("  %-10s %s" % (label, pool))
    s = c.get("span")
    if s:
        if doc.get("allocator") == "jemalloc":
            line = "%s %s, %s, %s" % (s.get("kind", "extent"), render.addr(s.get("address")),
                                      render.exact_size(s.get("bytes", 0)), s.get("state", "?"))
            if s.get("regions"):
                line += ", %d regions" % s["regions"]
            out.append("  %-10s %s" % ("extent", line))
            out.append("  %-10s %s (edata_t)" % ("", render.addr(s.get("edata"))))
        else:
            line = "%s %s, %s, %s" % (s.get("kind", "span"), render.addr(s.get("address")),
                                      render.plural(s.get("pages", 0), "page"),
                                      s.get("location", "?"))
            out.append("  %-10s %s" % ("span", line))
            if s.get("sizeclass"):
                out.append("  %-10s class %d, %d objects"
                           % ("", s["sizeclass"], s.get("objects", 0)))
    data = bytes.fromhex(c.get("bytes") or "")
    if data:
        out.append("  data at %s, first %d bytes:" % (render.addr(c.get("bytes_at")), len(data)))
        out.extend(hexdump(data, c.get("bytes_at", 0), "    "))
    return out


# -- tcache ------------------------------------------------------------------------------------

def tcache(target: Any, lwp: Optional[int]) -> Record:
    """The ``tcache`` document: every thread cache, or LWP's; NotFoundError for an LWP the
    target does not have."""
    doc = _engine(target, "alloc_tcache")(lwp)
    if lwp is not None and lwp not in doc.get("lwps", []):
        raise NotFoundError("no thread with LWP %d" % lwp,
                            hint="'heapwalk arenas' lists the threads")
    doc["lwp"] = lwp
    return render.wrap("tcache", doc)


def render_tcache(doc: Record, thread_of: Optional[Callable[[int], Optional[int]]],
                  style: Style = PLAIN) -> List[str]:
    """Per thread: its cache's address, objects and bytes, then its bins (size, count, bytes)."""
    caches = doc.get("thread_caches", [])
    what = "tcache" if doc.get("allocator") == "jemalloc" else "ThreadCache"
    out = _title(doc)
    if not caches:
        if doc.get("lwp") is not None:
            out.append("thread LWP %d has no thread cache (it never called malloc, or its "
                       "cache is not found)" % doc["lwp"])
        else:
            out.append("no thread caches")
        return out
    for c in caches:
        who = "thread LWP %s" % (c["lwp"] if c.get("lwp") is not None else "?")
        number = thread_of(c["lwp"]) if thread_of and c.get("lwp") else None
        if number:
            who += " (gdb thread %d)" % number
        out.append("")
        out.append(style.paint("bold", "%s: %s %s" % (who, what, render.addr(c.get("address")))))
        out.append("  %s, %s" % (render.plural(c.get("objects", 0), "object"),
                                 render.exact_size(c.get("bytes", 0))))
        rows = [[str(b.get("size", 0)), str(b.get("count", 0)), render.size(b.get("bytes", 0))]
                for b in c.get("bins", [])]
        if rows:
            out += render.table([Column("size"), Column("count"), Column("bytes")], rows, style,
                                indent="  ")
    return out

