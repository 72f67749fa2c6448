"""gperftools tcmalloc in the ``arenas`` report (issue 16): the page heap and the caches, in
tcmalloc's own terms (MallocExtension property names), from the engine's tcmalloc model."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from . import render
from .render import PLAIN, Column, Style

Record = Dict[str, Any]

# (label, property) rows of the page heap table, in tcmalloc's MallocExtension names.
_ROWS = [
    ("heap size (system)", "generic.heap_size"),
    ("in use by the program", "generic.current_allocated_bytes"),
    ("page heap free (committed)", "tcmalloc.pageheap_free_bytes"),
    ("page heap unmapped (released)", "tcmalloc.pageheap_unmapped_bytes"),
    ("page heap committed", "tcmalloc.pageheap_committed_bytes"),
    ("central cache free", "tcmalloc.central_cache_free_bytes"),
    ("transfer cache free", "tcmalloc.transfer_cache_free_bytes"),
    ("thread caches", "tcmalloc.thread_cache_free_bytes"),
    ("ReleaseFreeMemory() would return", "release_free_memory_bytes"),
]


def with_tcmalloc(target: Any, report: Record) -> Record:
    """``report`` plus ``"tcmalloc"`` (``{"allocator": "tcmalloc", ...}``) when the target uses
    tcmalloc; the report itself is not modified."""
    handle = getattr(target, "_handle", None)
    if getattr(handle, "tcmalloc", None) is None:  # an engine (or a test double) without it
        return report
    summary = target._call(handle.tcmalloc)
    if summary is None:
        return report
    out = dict(report)
    out["tcmalloc"] = summary
    return out


def render_tcmalloc(summary: Optional[Record], style: Style = PLAIN) -> List[str]:
    """The page heap section of ``arenas`` text (nothing when the target has no tcmalloc)."""
    if not summary:
        return []
    stats = summary.get("stats", {})
    lines = ["", "%s (%s, layout: %s): page heap" % (
        render.safe(summary.get("version", "tcmalloc")), render.safe(summary.get("module", "")),
        render.safe(summary.get("layout_source", "")))]
    rows = [[label, render.size(stats.get(key)), str(stats[key]) if key in stats else "-"]
            for label, key in _ROWS]
    lines += render.table([Column("", "<"), Column("size"), Column("bytes")], rows, style,
                          indent="  ")
    caches = summary.get("thread_caches", [])
    if caches:
        lines.append("")
        lines.append("  thread caches: %d" % len(caches))
        rows = [[str(c["lwp"]) if c.get("lwp") is not None else "-",
                 render.addr(c.get("address")), render.size(c.get("bytes")),
                 str(sum(n for _, n in c.get("bins", [])))] for c in caches]
        columns = [Column("lwp"), Column("ThreadCache", "<"), Column("bytes"), Column("objects")]
        lines += render.table(columns, rows, style, indent="  ")
    for d in summary.get("diagnostics", []):
        lines.append("  %s: %s" % (render.safe(d.get("kind")), render.safe(d.get("detail"))))
    return lines
