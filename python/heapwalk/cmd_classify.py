"""``classify``: what is in the heap — chunks grouped by what they hold.

The engine names every in-use chunk (C++ class by vtable or RTTI, zlib stream groups, content
patterns such as ZIP data or text, structures pointing into a module, else its size class) and
aggregates in C++; this module only renders.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

from . import render
from .commands import ARENA_HELP, Command, Invocation, non_negative, resolve_arena
from .render import Column, Style

Record = Dict[str, Any]

#: Rows shown in text output unless --top is given.
DEFAULT_TOP = 25
#: Chunks ``--list`` shows in text output unless --limit is given.
DEFAULT_LIST = 100


def malloc_owner(target: Any) -> Optional[str]:
    """"jemalloc" or "tcmalloc" when that allocator answers the target's malloc (loaded modules,
    ``alloc::detect``), else None: glibc's ptmalloc."""
    allocators = getattr(target, "allocators", None)
    owner = [a for a in (allocators() if allocators else []) if a.get("owns_malloc")]
    if owner and owner[0].get("allocator") in ("jemalloc", "tcmalloc"):
        return str(owner[0]["allocator"])
    return None


def _rows(rows: List[Record], style: Style, indent: str = "") -> List[str]:
    table_rows = []
    for r in rows:
        name = r.get("name", "?")
        if r.get("sample"):
            name += "  '%s'" % render.clip(render.safe(r["sample"]), 32)
        example = r.get("example_mem")
        if example is None and r.get("example"):
            example = r["example"] + 16  # a report saved before example_mem: chunk + 16
        table_rows.append([str(r.get("count", 0)), render.size(r.get("bytes", 0)),
                           str(r.get("bytes", 0)), r.get("kind", ""), name,
                           render.addr(example)])
    # The example is a user pointer (chunk + 16): `p *(Rect*)ADDR` shows the object.
    return render.table([Column("count"), Column("size"), Column("bytes"), Column("kind", "<"),
                         Column("class", "<"), Column("example", "<")],
                        table_rows, style, indent=indent)


def render_list(listing: Record, style: Style = render.PLAIN,
                allocator: Optional[str] = None) -> List[str]:
    """Text for ``classify --list CLASS``: every instance, user pointer first."""
    chunks = listing.get("chunks", [])
    total = listing.get("total", len(chunks))
    note = "user pointers; chunk = pointer - 16" if not allocator else "user pointers, %s slots" % (
        render.safe(allocator))
    out = [style.paint("bold", "%s of class %s (%s)" % (
        render.plural(total, "chunk"), render.clip(render.safe(listing.get("class", "")), 60),
        note))]
    rows = [[render.addr(c.get("mem")), str(c.get("size", 0)),
             "used" if c.get("used", True) else "free"] for c in chunks]
    out.extend(render.table([Column("pointer", "<"), Column("size"), Column("state", "<")],
                            rows, style))
    if listing.get("truncated"):
        out.append("... %d more (--limit 0 lists all)" % (total - len(chunks)))
    return out


def render_classify(document: Record, names: Dict[int, str], per_arena: bool,
                    style: Style = render.PLAIN) -> List[str]:
    """Text for ``classify``: totals, then (with --per-arena) each arena's rows."""
    allocator = document.get("allocator")
    if "list" in document:
        return render_list(document["list"], style, allocator)
    out = [style.paint("bold", "in-use %s by class (%s %s walked, %s vtable symbols)"
                       % ("chunks" if not allocator else render.safe(allocator) + " allocations",
                          document.get("chunks", 0), "chunks" if not allocator else "slots",
                          document.get("vtable_symbols", 0)))]
    out.extend(_rows(document.get("classes", []), style))
    if "free_classes" in document:
        out.append("")
        out.append(style.paint("bold", "free chunks by stale content"))
        out.extend(_rows(document.get("free_classes", []), style))
        if any("(freed" in (c.get("name") or "") and c.get("kind") == "zlib"
               for c in document.get("free_classes", [])):
            out.append("  (freed zlib rows count streams: a state and, when glibc coalesced it, "
                       "its window)")
    if per_arena:
        for a in document.get("arenas", []):
            label = "mmapped chunks" if a.get("arena") is None else "arena %s" % (
                render.arena_ref(a.get("arena"), names))
            if allocator and a.get("arena") is None:
                label = "%s allocations" % render.safe(allocator)
            out.append("")
            out.append(style.paint("bold", label))
            out.extend(_rows(a.get("classes", []), style, indent="  "))
            if a.get("free_classes"):
                out.append("  free:")
                out.extend(_rows(a["free_classes"], style, indent="  "))
    return out


class Classify(Command):
    """``classify [--arena A] [--free] [--top N] [--per-arena]``."""

    name = "classify"
    summary = "what is in the heap: in-use chunks grouped by class, content or size"
    description = ("Classify every in-use chunk in one pass: C++ objects by vtable (symbols, "
                   "or RTTI when symbols are missing), zlib inflate/deflate streams (z_stream "
                   "+ state + window as one group), content (ZIP/JAR, Java class files, gzip, "
                   "ELF, text, all-zero, pointer arrays), structures that point into a module, "
                   "and everything else by chunk size. --free also classifies the stale "
                   "contents of free chunks and tops: zlib streams zlib has freed (state and "
                   "coalesced window; counted as streams), ZIP/JAR and class-file bytes, freed "
                   "NMT blocks, text, zeros. Examples are user pointers (chunk + 16: "
                   "'p *(Rect*)ADDR' shows the object); a text class's sample is its example's "
                   "own text. --list CLASS lists every chunk of one class (user pointer, size; "
                   "--limit).")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--arena", metavar="ARENA", help=ARENA_HELP)
        parser.add_argument("--free", action="store_true",
                            help="also classify what free chunks still contain")
        parser.add_argument("--top", metavar="N", type=non_negative,
                            help="show the N largest classes (text default %d; JSON: all)"
                                 % DEFAULT_TOP)
        parser.add_argument("--per-arena", action="store_true",
                            help="also break the classes down per arena")
        parser.add_argument("--list", metavar="CLASS",
                            help="list every chunk of CLASS (its name as the class column "
                                 "shows it, e.g. Rect or 'size 48'): user pointers and sizes")
        parser.add_argument("--limit", metavar="N", type=non_negative,
                            help="with --list: at most N chunks (0 = all; text default %d, "
                                 "JSON all)" % DEFAULT_LIST)

    def collect(self, inv: Invocation) -> Record:
        top: Optional[int] = inv.args.top
        if top is None and not inv.json:
            top = DEFAULT_TOP
        owner = malloc_owner(inv.target) if inv.args.arena is None else None
        if owner:
            # jemalloc or tcmalloc answers malloc: its allocations (--arena names a glibc arena).
            limit = inv.args.limit
            if limit is None:
                limit = 0 if inv.json else DEFAULT_LIST
            return render.wrap(self.name, inv.target.alloc_classify(
                owner, bool(inv.args.free), top if inv.args.list is None else None,
                inv.args.list or "", limit))
        arena = resolve_arena(inv, inv.args.arena)
        if inv.args.list is None:
            return render.wrap(self.name, inv.target.classify(arena, bool(inv.args.free), top))
        limit = inv.args.limit
        if limit is None:
            limit = 0 if inv.json else DEFAULT_LIST
        return render.wrap(self.name, inv.target.classify_list(arena, bool(inv.args.free),
                                                               inv.args.list, limit))

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render_classify(document, inv.names(), bool(inv.args.per_arena), inv.style)
