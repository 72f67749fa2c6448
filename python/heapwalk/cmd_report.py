"""``report``: one screen that reconciles the process's memory and ends in a verdict.

The engine (``Target.report``) supplies the retention figures (what ``malloc_trim(0)`` would
return, computed the way glibc 2.36's ``mtrim``/``systrim`` release memory), arena pressure,
the mappings grouped and labelled (summing exactly to the mapped total; live, with resident
bytes), the glibc split and, for a JVM, NMT's summary. This module adds the top content
classes (``classify``) and derives the verdict: causes with evidence and an action.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

from . import render
from .commands import Command, Invocation
from .render import Column, Style

Record = Dict[str, Any]

MiB = 1 << 20
#: Free memory kept by glibc counts as a cause from this many bytes and this share of the
#: arenas' system bytes.
RETENTION_MIN_BYTES = 16 * MiB
RETENTION_MIN_SHARE = 0.25
#: Sub-page fragments (free bytes malloc_trim cannot return) count from these.
FRAGMENT_MIN_BYTES = 16 * MiB
FRAGMENT_MIN_SHARE = 0.2
#: In-use malloc not tracked by NMT counts from this many bytes.
UNTRACKED_MIN_BYTES = 64 * MiB
#: Text output shows this many mapping groups (the rest are summed on one line).
TEXT_GROUPS = 14
TOP_CLASSES = 5


def _hs(n: Optional[int]) -> str:
    return render.size(n)


def verdict(doc: Record) -> List[Record]:
    """The causes, largest first: ``{"cause", "bytes", "action", "evidence", "summary"}``."""
    ret = doc.get("retention") or {}
    pres = doc.get("pressure") or {}
    glibc = doc.get("glibc") or {}
    nmt = doc.get("nmt")
    jvm = nmt is not None
    out: List[Record] = []
    system = glibc.get("system_bytes", 0) or 0
    free = ret.get("free_bytes", 0)
    trim = ret.get("trimmable_bytes", 0)
    arenas = pres.get("arenas", 0)
    heaps = pres.get("heaps", 0)
    limit = pres.get("limit")
    trim_how = ("jcmd PID System.trim_native_heap (JDK 17.0.9+; JDK 21+: -XX:TrimNativeHeapInterval)"
                if jvm else "call malloc_trim(0) (e.g. from gdb: call (int) malloc_trim(0))")
    if free >= RETENTION_MIN_BYTES and system and free >= RETENTION_MIN_SHARE * system:
        where = "%d glibc arena%s" % (arenas, "" if arenas == 1 else "s")
        if heaps:
            where += " (%d heaps of 64 MiB reserved: %s)" % (heaps, _hs(pres.get("heap_reserved_bytes")))
        evidence = ("%s of %s malloc'd from the system is free (tcache %s, fastbins %s, bins %s, "
                    "tops %s); malloc_trim(0) would return %s now"
                    % (_hs(free), _hs(system), _hs(ret.get("tcache_bytes")),
                       _hs(ret.get("fastbin_bytes")), _hs(ret.get("bin_bytes")),
                       _hs(ret.get("top_bytes")), _hs(trim)))
        if ret.get("released_bytes"):
            evidence += "; %s of free pages are already given back" % _hs(ret["released_bytes"])
        action = "%s now" % trim_how
        if arenas > 4:
            action += "; cap arenas with MALLOC_ARENA_MAX=4 (or 2)"
        action += ("; lower M_TRIM_THRESHOLD / M_MMAP_THRESHOLD (MALLOC_TRIM_THRESHOLD_, "
                   "MALLOC_MMAP_THRESHOLD_) so free() gives memory back, or use jemalloc/tcmalloc")
        out.append({"cause": "arena-retention", "bytes": free, "action": action,
                    "evidence": evidence,
                    "summary": "%s is free memory kept by %s; malloc_trim would return %s now"
                               % (_hs(free), where, _hs(trim))})
    frag = ret.get("fragment_bytes", 0)
    if frag >= FRAGMENT_MIN_BYTES and free and frag >= FRAGMENT_MIN_SHARE * free:
        out.append({"cause": "fragmentation", "bytes": frag,
                    "action": "malloc_trim cannot return these: fewer arenas (MALLOC_ARENA_MAX), "
                              "pooling the allocations, or another allocator",
                    "evidence": "%s of free chunks lie in pieces smaller than a page between "
                                "chunks in use" % _hs(frag),
                    "summary": "%s of free memory is fragmented below page size" % _hs(frag)})
    if limit and arenas >= max(8, limit // 2) and not (ret.get("params") or {}).get("arena_max"):
        cores = pres.get("cores")
        # Its bytes: the free memory the thread arenas keep (each arena keeps its own).
        kept = sum(a.get("free_bytes", 0) for a in ret.get("arenas", []) if not a.get("main"))
        out.append({"cause": "arena-count", "bytes": kept,
                    "action": "MALLOC_ARENA_MAX=4 (each arena keeps its own free memory and 64 MiB heaps)",
                    "evidence": "%d arenas of a limit of %d (%s)%s; %d threads, up to %d per arena"
                                % (arenas, limit, pres.get("limit_source", ""),
                                   "" if cores is None else ", %d cores" % cores,
                                   pres.get("threads", 0), pres.get("max_threads_per_arena", 0)),
                    "summary": "%d glibc arenas (limit %d): one per busy thread, each with its "
                               "own heaps" % (arenas, limit)})
    if jvm:
        un = (nmt or {}).get("untracked_malloc") or {}
        ub = un.get("bytes", 0) or 0
        if ub >= UNTRACKED_MIN_BYTES:
            top = (doc.get("classes") or [{}])[0] if doc.get("classes") else {}
            what = (": largest class %s (%d chunks, %s)"
                    % (top.get("name"), top.get("count", 0), _hs(top.get("bytes")))) if top else ""
            out.append({"cause": "untracked-malloc", "bytes": ub,
                        "action": "find the native library allocating it (zlib streams: "
                                  "Inflater/Deflater.end() not called; see `heapwalk classify`)",
                        "evidence": "%s in %d malloc chunks carry no NMT header%s"
                                    % (_hs(ub), un.get("count", 0), what),
                        "summary": "%s of in-use malloc is not tracked by NMT%s" % (_hs(ub), what)})
    if not out:
        out.append({"cause": "in-use", "bytes": ret.get("in_use_bytes", 0),
                    "action": "nothing retained to give back; see `heapwalk classify` and "
                              "`heapwalk leaks` for what the memory in use holds",
                    "evidence": "glibc keeps %s free of %s; malloc_trim(0) would return %s"
                                % (_hs(free), _hs(system), _hs(trim)),
                    "summary": "memory is in use (no retention problem)"})
    out.sort(key=lambda v: -v["bytes"])
    return out


def render_report(doc: Record, style: Style = render.PLAIN, show_all: bool = False) -> List[str]:
    """Text for ``report``; ``show_all``: every mapping group, not only the largest."""
    tgt = doc.get("target") or {}
    glibc = doc.get("glibc") or {}
    ret = doc.get("retention") or {}
    pres = doc.get("pressure") or {}
    maps = doc.get("mappings") or {}
    who = ("pid %s" % tgt.get("pid")) if tgt.get("kind") == "live" else (tgt.get("path") or tgt.get("kind"))
    out = [style.paint("bold", "heapwalk report: %s, glibc %s, %s threads"
                       % (who, glibc.get("version"), tgt.get("threads")))]
    # Mappings
    out.append("")
    live = maps.get("resident_bytes") is not None
    src = "smaps/pagemap" if tgt.get("kind") == "live" else "what the core holds"
    out.append(style.paint("bold", "address space by group") +
               (" (by resident bytes: %s)" % src if live else ""))
    groups = render.sort_groups(maps.get("groups", []))
    shown, rest = (groups, []) if show_all else (groups[:TEXT_GROUPS], groups[TEXT_GROUPS:])
    rows = [[g["label"], _hs(g["mapped_bytes"]), _hs(g.get("resident_bytes")) if live else "-",
             str(g.get("regions", 0))] for g in shown]
    if rest:
        rows.append(["%d more groups (--all lists them)" % len(rest), _hs(sum(g["mapped_bytes"] for g in rest)),
                     _hs(sum(g.get("resident_bytes") or 0 for g in rest)) if live else "-",
                     str(sum(g.get("regions", 0) for g in rest))])
    rows.append(["total", _hs(maps.get("mapped_bytes")), _hs(maps.get("resident_bytes")) if live else "-",
                 ""])
    out.extend(render.table([Column("group", "<"), Column("mapped"), Column("resident"),
                             Column("maps")], rows, style, indent="  "))
    # glibc
    out.append("")
    out.append(style.paint("bold", "glibc malloc") +
               ": %s from the system in arenas, %s in mmapped chunks (%d)"
               % (_hs(glibc.get("system_bytes")), _hs(glibc.get("mmapped_bytes")),
                  glibc.get("mmapped_count", 0)))
    out.append("  in use %s; free %s = tcache %s + fastbins %s + bins %s + tops %s"
               % (_hs(ret.get("in_use_bytes")), _hs(ret.get("free_bytes")),
                  _hs(ret.get("tcache_bytes")), _hs(ret.get("fastbin_bytes")),
                  _hs(ret.get("bin_bytes")), _hs(ret.get("top_bytes"))))
    res_src = ret.get("residency_source")
    trim_line = "  malloc_trim(0) would return %s now" % _hs(ret.get("trimmable_bytes"))
    if res_src == "pagemap":
        trim_line += " (of %s in its page ranges; %s already released or never touched)" % (
            _hs(ret.get("trim_range_bytes")), _hs(ret.get("released_bytes")))
    elif res_src == "core":
        z = ((ret.get("residency") or {}).get("trim_ranges") or {})
        trim_line += " at most (a core has no residency: %s of it reads as zero pages)" % _hs(z.get("zero"))
    out.append(trim_line)
    out.append("  kept by malloc_trim: sub-page fragments %s, tops %s (only main_arena's top is "
               "trimmed), tcache %s" % (_hs(ret.get("fragment_bytes")), _hs(ret.get("top_kept_bytes")),
                                        _hs(ret.get("tcache_bytes"))))
    params = ret.get("params") or {}
    out.append("  thresholds: trim %s, top pad %s, mmap %s, arena_max %s"
               % (_hs(params.get("trim_threshold")), _hs(params.get("top_pad")),
                  _hs(params.get("mmap_threshold")), params.get("arena_max") or "unset"))
    lim = pres.get("limit")
    out.append("  arenas: %d%s; %d threads (at most %d per arena); %d heaps (%s used of %s reserved)"
               % (pres.get("arenas", 0),
                  (" of a limit of %d (%s)" % (lim, pres.get("limit_source"))) if lim else
                  " (limit unknown)",
                  pres.get("threads", 0), pres.get("max_threads_per_arena", 0),
                  pres.get("heaps", 0), _hs(pres.get("heap_bytes")),
                  _hs(pres.get("heap_reserved_bytes"))))
    arenas = sorted(ret.get("arenas", []), key=lambda a: -a.get("free_bytes", 0))[:8]
    if arenas:
        rows = [["#%d" % a["index"], str(a.get("threads", 0)), _hs(a.get("system_bytes")),
                 _hs(a.get("in_use_bytes")), _hs(a.get("free_bytes")), _hs(a.get("trimmable_bytes")),
                 _hs(a.get("top_bytes"))] for a in arenas]
        out.extend(render.table([Column("arena", "<"), Column("threads"), Column("system"),
                                 Column("in use"), Column("free"), Column("trimmable"),
                                 Column("top")], rows, style, indent="  "))
    nmt = doc.get("nmt")
    if nmt:
        out.append("")
        out.append(style.paint("bold", "JVM NMT (%s, JDK %s)" % (nmt.get("level"), nmt.get("jdk"))) +
                   ": committed %s" % _hs(nmt.get("total_committed")))
        cats = sorted(nmt.get("categories", []), key=lambda c: -c.get("committed", 0))[:6]
        out.append("  " + ", ".join("%s %s" % (c["name"], _hs(c["committed"])) for c in cats))
        un = nmt.get("untracked_malloc")
        if un:
            out.append("  malloc not tracked by NMT: %s in %d chunks" % (_hs(un.get("bytes")), un.get("count", 0)))
    classes = doc.get("classes") or []
    if classes:
        out.append("")
        out.append(style.paint("bold", "top classes in use"))
        out.append("  " + "; ".join("%s %s (%d)" % (c.get("name"), _hs(c.get("bytes")), c.get("count", 0))
                                    for c in classes[:TOP_CLASSES]))
    out.append("")
    out.append(style.paint("bold", "verdict"))
    for i, v in enumerate(doc.get("verdict", []), 1):
        out.append("  %d. %s" % (i, v.get("summary", v.get("cause"))))
        out.append("     evidence: %s" % v.get("evidence", ""))
        out.append("     action: %s" % v.get("action", ""))
    return out


#: Content classes kept in ``content_classes`` (what ``diff`` compares), largest first.
SAVED_CLASSES = 500


def size_classes(target: Any) -> List[Record]:
    """In-use chunks (heap and mmapped) by chunk size: ``[{"size", "count", "bytes"}]``,
    ascending size (what ``diff`` compares to show "a few KB per connection" growth)."""
    return list(target.size_classes())


def build_report(target: Any, classes: bool = True) -> Record:
    """The ``report`` document of ``target``: the engine's part, the top content classes
    (``classes``, and all of them up to SAVED_CLASSES in ``content_classes``), the in-use
    chunks by size (``size_classes``) and the verdict. A saved ``report --json`` carries
    everything ``diff`` compares."""
    doc = target.report()
    top: List[Record] = []
    every: Optional[List[Record]] = None
    if classes:
        try:
            every = target.classify(None, False, SAVED_CLASSES).get("classes", [])
            top = every[:TOP_CLASSES]
        except Exception as exc:  # pylint: disable=broad-except  # classes are optional
            doc.setdefault("diagnostics", []).append(
                {"kind": "note", "address": None, "arena": None,
                 "detail": "content classes unavailable: %s" % exc})
    doc["classes"] = top
    if every is not None:
        doc["content_classes"] = [{"name": c.get("name"), "kind": c.get("kind"),
                                   "count": c.get("count", 0), "bytes": c.get("bytes", 0)}
                                  for c in every]
    try:
        doc["size_classes"] = size_classes(target)
    except Exception as exc:  # pylint: disable=broad-except  # optional, like classes
        doc.setdefault("diagnostics", []).append(
            {"kind": "note", "address": None, "arena": None,
             "detail": "size classes unavailable: %s" % exc})
    doc["verdict"] = verdict(doc)
    return render.wrap("report", doc)


class Report(Command):
    """``report [--no-classes]``."""

    name = "report"
    summary = "one screen: memory by mapping group, glibc retention and trim, verdict"
    description = ("Reconcile the process's memory: its mappings grouped and labelled (glibc "
                   "main heap, each arena's heaps, mmapped chunks, thread stacks, the JVM's "
                   "Java heap, class space, metaspace and code cache, program, libraries, files, "
                   "other anonymous) summing to the mapped total, largest resident first (live: "
                   "smaps; a core: the pages it holds); glibc's in-use / free / trimmable split, "
                   "computing what malloc_trim(0) would return the way glibc 2.36 releases "
                   "memory (live: only resident pages, from /proc/PID/pagemap); arena "
                   "pressure; top content classes; NMT when a JVM is found; and a verdict "
                   "with evidence and action.")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--no-classes", action="store_true",
                            help="skip the content classification (faster)")
        parser.add_argument("--all", action="store_true",
                            help="list every mapping group (default: the %d largest, the rest "
                                 "summed in one row)" % TEXT_GROUPS)
        parser.add_argument("--html", metavar="FILE",
                            help="also write the report as one self-contained HTML page with "
                                 "charts (no network) to FILE")

    def collect(self, inv: Invocation) -> Record:
        doc = build_report(inv.target, classes=not inv.args.no_classes)
        html_path = getattr(inv.args, "html", None)
        if html_path:
            from . import report_html  # pylint: disable=import-outside-toplevel
            report_html.write(doc, html_path)
        return doc

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render_report(document, inv.style, show_all=getattr(inv.args, "all", False))
