"""Text for jemalloc's arenas (issue 16): jemalloc's own statistics under its own names."""

from __future__ import annotations

from typing import Any, Dict, List

from .render import PLAIN, Column, Style, addr, diagnostics, safe, size, table

Record = Dict[str, Any]

#: Per-arena columns: (header, stats key), in jemalloc's terms (stats.arenas.<i>.*).
COLUMNS = [("allocated", "allocated"), ("active", "active"), ("dirty", "dirty"), ("muzzy", "muzzy"),
           ("retained", "retained"), ("mapped", "mapped"), ("resident", "resident"),
           ("metadata", "metadata"), ("tcache", "tcache_bytes")]


def render_jemalloc(doc: Record, style: Style = PLAIN) -> List[str]:
    """The jemalloc section of ``arenas``: one row per arena, totals (stats.*), what a purge
    (arena.<i>.purge) would return, and the thread caches."""
    columns = [Column("#"), Column("arena", "<")] + [Column(h) for h, _ in COLUMNS] + [Column("purge")]
    rows = []
    for a in doc.get("arenas", []):
        s = a.get("stats", {})
        rows.append([str(a.get("index")), addr(a.get("address"))]
                    + [size(s.get(k, 0)) for _, k in COLUMNS] + [size(a.get("reclaimable", 0))])
    out = ["%s (%s, layout: %s)" % (safe(doc.get("version", "jemalloc")), safe(doc.get("module", "")),
                                    safe(doc.get("layout_source", "")))]
    out += table(columns, rows, style)
    st = doc.get("stats", {})
    out.append("")
    out.append("totals: " + ", ".join("%s %s" % (k, size(st.get("stats." + k, 0)))
                                      for k in ("allocated", "active", "metadata", "resident", "mapped",
                                                "retained")))
    out.append("a purge of every arena would return %s (dirty and muzzy pages)"
               % size(sum(a.get("reclaimable", 0) for a in doc.get("arenas", []))))
    caches = doc.get("tcaches", [])
    if caches:
        out.append("")
        out.append("thread caches (%d):" % len(caches))
        out += table([Column("lwp"), Column("tcache", "<"), Column("cached"), Column("objects")],
                     [[str(c.get("lwp") or "-"), addr(c.get("address")), size(c.get("bytes", 0)),
                       str(sum(b.get("count", 0) for b in c.get("bins", [])))] for c in caches],
                     style, indent="  ")
    out += diagnostics(doc.get("diagnostics", []), style)
    return out
