"""``leaks``: leak candidates from a conservative reachability pass (issue 5).

The engine (``native/analysis/reach.*``) treats every in-use and mmapped chunk as a node and
scans the roots — each thread's registers, its stack from rsp (red zone included) to the end
of the mapping, the TLS around fs_base, writable module data and the anonymous region right
after a module (``--anon-roots``: every anonymous writable region) — for 8-aligned words that
point into a chunk's user data (interior pointers included), then the reached chunks likewise.
Free chunks are neither roots nor nodes.  ``leaked``: not reachable; ``unreferenced``: no
scanned word points into it at all (a subset of leaked).
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

from . import render
from .cmd_classify import malloc_owner
from .commands import ARENA_HELP, Command, Invocation, _limit, resolve_arena
from .render import Column, Style

Record = Dict[str, Any]

#: Text output lists this many leaked chunks unless ``--limit`` is given.
DEFAULT_TEXT_LIMIT = 20
#: Text output shows this many rows of the size histogram.
SIZE_ROWS = 10

ROOT_NAMES = {"registers": "registers", "stack": "stacks", "tls": "TLS",
              "module_data": "module data", "anonymous": "anonymous memory"}


def query(target: Any, arena: Optional[int], limit: Optional[int], largest: bool,
          anon_roots: bool) -> Record:
    """The engine's ``leaks`` document (through the Python Target when it forwards it); over
    jemalloc's or tcmalloc's slots when that allocator answers malloc and no arena is named."""
    owner = malloc_owner(target) if arena is None else None
    if owner:
        return target.alloc_leaks(owner, limit=limit, largest=largest, anon_roots=anon_roots)
    method = getattr(target, "leaks", None)
    if method is None:  # heapwalk.target.Target without a leaks() forwarder yet
        method = target._handle.leaks  # pylint: disable=protected-access
    return method(arena=arena, limit=limit, largest=largest, anon_roots=anon_roots)


class Leaks(Command):
    """``leaks``: chunks no root reaches (conservative reachability)."""

    name = "leaks"
    summary = "leak candidates: in-use chunks no thread, stack, TLS or global data reaches"
    description = (
        "Find the in-use chunks (mmapped ones included) that nothing reachable points to: "
        "roots are every thread's registers, its stack from the stack pointer, the TLS around "
        "its thread pointer and the writable data of every module; any 8-aligned word pointing "
        "into a chunk's user data (interior pointers included) is an edge. Free chunks are "
        "neither roots nor scanned. 'leaked' chunks are not reachable; 'unreferenced' ones "
        "have no pointer to them at all. Text output lists %d chunks unless --limit is given; "
        "JSON lists all of them unless --limit is given. In a JVM the Java heap is only a root "
        "with --anon-roots, and native addresses Java keeps in long fields count only as plain "
        "words." % DEFAULT_TEXT_LIMIT)

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--arena", metavar="ARENA",
                            help=ARENA_HELP + "; report only its chunks (the graph is the "
                                              "whole process)")
        parser.add_argument("--limit", metavar="N", type=_limit,
                            help="list at most N leaked chunks (0 = all; text default %d)"
                                 % DEFAULT_TEXT_LIMIT)
        parser.add_argument("--largest", action="store_true",
                            help="list the largest leaked chunks first (default: address "
                                 "order)")
        parser.add_argument("--anon-roots", dest="anon_roots", action="store_true",
                            help="treat every anonymous writable mapping (not heaps, not "
                                 "stacks) as a root too, e.g. a Java heap")

    def _limit(self, inv: Invocation) -> Optional[int]:
        limit = inv.args.limit
        if limit is None:
            return None if inv.json else DEFAULT_TEXT_LIMIT
        return limit or None

    def collect(self, inv: Invocation) -> Record:
        arena = resolve_arena(inv, inv.args.arena)
        document = query(inv.target, arena, self._limit(inv), bool(inv.args.largest),
                         bool(inv.args.anon_roots))
        # No timing in a document: the same core gives byte-identical JSON (issue 15).
        document.pop("seconds", None)
        return render.wrap(self.name, document)

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render_leaks(document, inv.names(), inv.args.limit is None,
                            bool(getattr(inv.args, "largest", False)), inv.style)


def _roots_line(roots: List[Record]) -> str:
    parts = []
    for r in roots:
        if not r.get("ranges"):
            continue
        name = ROOT_NAMES.get(r.get("kind"), r.get("kind", "?"))
        if r.get("kind") == "registers":
            parts.append("%s of %s" % (name, render.plural(r["ranges"], "thread")))
        else:
            parts.append("%s %s" % (name, render.size(r.get("bytes", 0))))
            if r.get("unreadable"):
                parts[-1] += " (%s unreadable)" % render.size(r["unreadable"])
    return "roots: " + (", ".join(parts) if parts else "none")


def render_leaks(document: Record, names: Dict[int, str], limited_by_default: bool,
                 largest: bool, style: Style = render.PLAIN) -> List[str]:
    """The ``leaks`` text: totals, the size histogram, the listed chunks, the roots."""
    leaked = document.get("leaked", {})
    unref = document.get("unreferenced", {})
    allocator = document.get("allocator")
    out = [style.paint("head", "leak candidates") + " (conservative reachability%s)" % (
        "; %s slots, addresses are user pointers" % render.safe(allocator) if allocator else "")]
    rows = []
    for label, rec in (("in-use chunks", document.get("nodes")),
                       ("reachable", document.get("reachable")),
                       ("leaked", leaked), ("unreferenced", unref)):
        rec = rec or {}
        rows.append([label, str(rec.get("count", 0)), render.size(rec.get("bytes", 0)),
                     str(rec.get("bytes", 0))])
    out += render.table([Column("", "<"), Column("count"), Column("human"), Column("bytes")],
                        rows, style, indent="  ")
    sizes = leaked.get("sizes", [])
    if sizes:
        unref_by_size = {s["size"]: s["count"] for s in unref.get("sizes", [])}
        out.append("")
        out.append("leaked by chunk size%s" % (
            " (the %d with the most bytes)" % SIZE_ROWS if len(sizes) > SIZE_ROWS else ""))
        out += render.table(
            [Column("size"), Column("count"), Column("bytes"), Column("human"),
             Column("unreferenced")],
            [[str(s["size"]), str(s["count"]), str(s["bytes"]), render.size(s["bytes"]),
              str(unref_by_size.get(s["size"], 0))] for s in sizes[:SIZE_ROWS]],
            style, indent="  ")
    classes = leaked.get("classes", [])
    if classes:
        out.append("")
        out.append("leaked by class (what the chunks hold)")
        out += render.table(
            [Column("count"), Column("human"), Column("kind", "<"), Column("class", "<")],
            [[str(c.get("count", 0)), render.size(c.get("bytes", 0)), c.get("kind", ""),
              c.get("name", "") + ("  '%s'" % render.clip(render.safe(c["sample"]), 24)
                                   if c.get("sample") else "")]
             for c in classes[:SIZE_ROWS]], style, indent="  ")
    by_arena = leaked.get("arenas", [])
    if len(by_arena) > 1:
        out.append("")
        out.append("leaked by arena")
        out += render.table(
            [Column("arena", "<"), Column("count"), Column("human")],
            [[render.arena_ref(a.get("arena"), names) if a.get("arena") is not None
              else "mmapped", str(a.get("count", 0)), render.size(a.get("bytes", 0))]
             for a in by_arena], style, indent="  ")
    listed = leaked.get("listed", [])
    if listed:
        out.append("")
        out.append("leaked chunks (%s)" % ("largest first" if largest else "address order"))
        out += render.table(
            [Column("chunk", "<"), Column("size"), Column("human"), Column("state", "<"),
             Column("arena", "<"), Column("referenced", "<")],
            [[render.addr(c.get("address")), str(c.get("size", 0)), render.size(c.get("size", 0)),
              c.get("state", "used"), render.arena_ref(c.get("arena"), names),
              "no" if c.get("unreferenced") else "yes"] for c in listed],
            style, indent="  ")
    more = leaked.get("count", 0) - len(listed)
    if more > 0:
        out.append("  … %d more (use --limit%s)" % (more, " 0 for all" if limited_by_default
                                                     else ""))
    out.append("")
    out.append(_roots_line(document.get("roots", [])) +
               (" (anonymous memory included)" if document.get("anon_roots") else ""))
    return out
