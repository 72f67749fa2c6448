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
from .cmd_classify import malloc_owner
from .commands import Command, Invocation
from .render import Column, Style

Record = Dict[str, Any]

MiB = 1 << 20
KiB = 1 << 10
#: A cause is named from this share of the process's size (its resident bytes live, its
#: writable mappings in a core: see :func:`footprint`) and at least CAUSE_MIN_BYTES (so a
#: 1 MiB program's 100 KiB are not a cause). Nothing is absolute beyond that floor.
CAUSE_MIN_SHARE = 0.05
CAUSE_MIN_BYTES = 1 * MiB
#: Sub-page fragments (free bytes malloc_trim cannot return) count from this share of the free
#: bytes too (they are a cause of their own only when they are a real part of what is free).
FRAGMENT_MIN_SHARE = 0.2
#: glibc's default M_MMAP_THRESHOLD / M_TRIM_THRESHOLD (malloc.c DEFAULT_MMAP_THRESHOLD_MIN,
#: DEFAULT_TRIM_THRESHOLD): a larger mmap threshold without no_dyn_threshold is the dynamic one.
DEFAULT_THRESHOLD = 128 * KiB
#: Free stale contents count as what the retained memory held from this share of it.
STALE_MIN_SHARE = 0.5
#: Text output shows this many mapping groups (the rest are summed on one line).
TEXT_GROUPS = 14
TOP_CLASSES = 5


def _hs(n: Optional[int]) -> str:
    return render.size(n)


def _n(n: int) -> str:
    return "{:,}".format(n)


def footprint(doc: Record) -> Record:
    """What the process's size is taken to be, the measure causes are ranked against:
    ``{"bytes", "source"}``; live: resident bytes (smaps Rss); a core: its writable mappings
    less each thread stack's pages below its stack pointer (what it has committed, as far as a
    core tells: it has no residency); else the mapped total."""
    maps = doc.get("mappings") or {}
    glibc = doc.get("glibc") or {}
    # Live residency only (smaps): a core's "resident" figure (its saved non-zero pages) is a
    # lower bound shaped by how the core was written, not the process's size.
    if maps.get("resident_bytes") and not str(maps.get("resident_source") or "").startswith("core"):
        return {"bytes": maps["resident_bytes"], "source": "resident"}
    if maps.get("footprint_bytes"):
        return {"bytes": maps["footprint_bytes"], "source": "committed"}
    if maps.get("writable_bytes"):
        return {"bytes": maps["writable_bytes"], "source": "writable"}
    if maps.get("mapped_bytes"):
        return {"bytes": maps["mapped_bytes"], "source": "mapped"}
    return {"bytes": (glibc.get("system_bytes") or 0) + (glibc.get("mmapped_bytes") or 0),
            "source": "glibc"}


def given_back(fig: Record) -> int:
    """Free bytes of ``fig`` (the retention totals, an arena or a heap) that are not memory any
    more: live, the pages pagemap says are not resident (released by an earlier trim, or never
    touched); in a core, the pages of the same ranges that read as zeros or were not saved."""
    if fig.get("released_bytes") is not None:
        return fig["released_bytes"]
    res = fig.get("residency") or {}
    n = 0
    for part in ("trim_ranges", "top_kept_pages"):
        r = res.get(part) or {}
        n += (r.get("zero") or 0) + (r.get("unsaved") or 0)
    return n


def _of(fp: Record) -> str:
    what = {"resident": "resident", "committed": "committed (writable mappings)",
            "writable": "writable mapped", "mapped": "mapped",
            "glibc": "from glibc"}.get(fp["source"], fp["source"])
    return "%s %s" % (_hs(fp["bytes"]), what)


def _share(n: int, fp: Record) -> float:
    return n / fp["bytes"] if fp.get("bytes") else 0.0


def _pct(x: float) -> str:
    return "%.0f %%" % (100 * x) if x >= 0.01 else "<1 %"


def _zlib(rows: List[Record], freed: bool) -> Record:
    """zlib stream classes of ``rows``: live ones (freed=False) or the stale ones of free
    chunks (freed=True): ``{"count", "bytes", "inflate", "deflate"}`` (counts of streams)."""
    out = {"count": 0, "bytes": 0, "inflate": 0, "deflate": 0}
    for c in rows or []:
        name = c.get("name") or ""
        if c.get("kind") != "zlib" or ("(freed" in name) != freed:
            continue
        out["count"] += c.get("count", 0)
        out["bytes"] += c.get("bytes", 0)
        out["inflate" if "inflate" in name else "deflate"] += c.get("count", 0)
    return out


def _streams(z: Record) -> str:
    parts = []
    if z["inflate"]:
        parts.append("%s zlib inflate stream%s" % (_n(z["inflate"]), "" if z["inflate"] == 1 else "s"))
    if z["deflate"]:
        parts.append("%s zlib deflate stream%s" % (_n(z["deflate"]), "" if z["deflate"] == 1 else "s"))
    return " and ".join(parts)


def _ender(z: Record) -> str:
    who = "/".join(w for w, k in (("Inflater", "inflate"), ("Deflater", "deflate")) if z[k]) or "Inflater"
    return who + "s"


def _in_force(params: Record, arenas: int) -> Record:
    """What of glibc's tuning is already set in the target (``mp_``): arena_max, and whether
    the thresholds are fixed (``no_dyn_threshold``: set by mallopt, MALLOC_*_ or tunables)."""
    fixed = params.get("no_dyn_threshold")
    mmap_t = params.get("mmap_threshold") or 0
    return {"arena_max": params.get("arena_max") or 0,
            "fixed_thresholds": bool(fixed),
            # free() of an mmapped chunk raises the threshold up to 32 MiB unless it is fixed
            "dynamic_mmap_raised": fixed == 0 and mmap_t > DEFAULT_THRESHOLD,
            "trim_threshold": params.get("trim_threshold"), "mmap_threshold": mmap_t,
            "arenas": arenas}


def verdict(doc: Record) -> List[Record]:
    """The causes, largest first: ``{"cause", "kind", "bytes", "share", "where", "action",
    "evidence", "summary"}``; ``share`` is of :func:`footprint`. Thresholds are relative to
    it; actions leave out what the target already has in force (``mp_``)."""
    ret = doc.get("retention") or {}
    pres = doc.get("pressure") or {}
    glibc = doc.get("glibc") or {}
    nmt = doc.get("nmt")
    jvm = nmt is not None
    fp = footprint(doc)
    floor = max(CAUSE_MIN_BYTES, CAUSE_MIN_SHARE * fp["bytes"])
    out: List[Record] = []
    system = glibc.get("system_bytes", 0) or 0
    free = ret.get("free_bytes", 0) or 0
    trim = ret.get("trimmable_bytes", 0) or 0
    top = ret.get("top_bytes", 0) or 0
    arenas = pres.get("arenas", 0)
    heaps = pres.get("heaps", 0)
    limit = pres.get("limit")
    force = _in_force(ret.get("params") or {}, arenas)
    used_classes = doc.get("content_classes") or doc.get("classes") or []
    free_classes = doc.get("free_content_classes") or doc.get("free_classes") or []
    trim_how = ("jcmd PID System.trim_native_heap (JDK 17.0.9+; JDK 21+: -XX:TrimNativeHeapInterval)"
                if jvm else "call malloc_trim(0) (e.g. from gdb: call (int) malloc_trim(0))")
    where_arenas = ", ".join("#%d %s" % (a["index"], _hs(a.get("free_bytes")))
                             for a in sorted(ret.get("arenas", []), key=lambda a: (-a.get("free_bytes", 0),
                                                                                   a["index"]))[:3]
                             if a.get("free_bytes"))

    # What glibc holds: its free bytes less the pages already given back (live: pagemap says
    # which free pages are not resident any more, e.g. after an earlier malloc_trim; a core: the
    # pages that read as zeros), so a live target, its snapshot and its gcore agree.
    held = free - given_back(ret)
    if held >= floor:
        stale = _zlib(free_classes, freed=True)
        zlib_held = stale["count"] and stale["bytes"] >= STALE_MIN_SHARE * free
        kept = "free memory kept by %d glibc arena%s" % (arenas, "" if arenas == 1 else "s")
        if heaps:
            kept += " (%d heaps of 64 MiB reserved: %s)" % (heaps, _hs(pres.get("heap_reserved_bytes")))
        evidence = ("%s of %s malloc'd from the system is free (tcache %s, fastbins %s, bins %s, "
                    "tops %s); malloc_trim(0) would return %s now"
                    % (_hs(free), _hs(system), _hs(ret.get("tcache_bytes")),
                       _hs(ret.get("fastbin_bytes")), _hs(ret.get("bin_bytes")),
                       _hs(top), _hs(trim)))
        if ret.get("released_bytes"):
            evidence += "; %s of free pages are already given back" % _hs(ret["released_bytes"])
        elif free - held:
            evidence += ("; %s of free pages read as zeros (given back or never touched: not "
                         "counted as held)" % _hs(free - held))
        if zlib_held:
            evidence += ("; the free chunks still hold the state and window of %s (%s): zlib "
                         "freed them, glibc kept the memory" % (_streams(stale), _hs(stale["bytes"])))
        elif free_classes:
            named = [c for c in free_classes if c.get("kind") not in ("size",)][:3]
            if named:
                evidence += "; stale contents: " + ", ".join(
                    "%s %s" % (c.get("name"), _hs(c.get("bytes"))) for c in named)
        acts: List[str] = []
        if zlib_held:
            acts.append("end() %s promptly (try-with-resources / finally), not left to the GC's "
                        "Cleaner" % _ender(stale))
        if force["arena_max"]:
            evidence += "; MALLOC_ARENA_MAX=%d is in force" % force["arena_max"]
        elif arenas > 2:
            acts.append("MALLOC_ARENA_MAX=2 (each of the %d arenas keeps its own free memory)" % arenas)
        pinned = free - top
        if force["fixed_thresholds"]:
            evidence += ("; the thresholds are already fixed (M_TRIM_THRESHOLD %s, M_MMAP_THRESHOLD "
                         "%s): they cannot return the %s that lies in free chunks below chunks "
                         "in use (a heap shrinks only from its top)"
                         % (_hs(force["trim_threshold"]), _hs(force["mmap_threshold"]), _hs(pinned)))
        acts.append("or trim: %s (returns %s now)" % (trim_how, _hs(trim)) if acts else
                    "trim: %s (returns %s now)" % (trim_how, _hs(trim)))
        if not force["fixed_thresholds"]:
            if force["dynamic_mmap_raised"]:
                acts.append("fix the mmap threshold (MALLOC_MMAP_THRESHOLD_=131072): free() of a "
                            "large mmapped block raised it to %s, so large blocks now come from "
                            "the arenas and stay there" % _hs(force["mmap_threshold"]))
            # Thread arenas' tops shrink on free() from trim_threshold up: only a raised one
            # (the dynamic threshold doubles it) keeps them.
            if ((ret.get("top_kept_bytes") or 0) >= floor
                    and (force["trim_threshold"] or 0) > DEFAULT_THRESHOLD):
                acts.append("lower M_TRIM_THRESHOLD (MALLOC_TRIM_THRESHOLD_) so free() shrinks "
                            "the tops that keep %s" % _hs(ret.get("top_kept_bytes")))
        if pinned >= floor:
            acts.append("or use jemalloc/tcmalloc (free space below chunks in use stays with glibc)")
        already = []
        if force["arena_max"]:
            already.append("MALLOC_ARENA_MAX=%d" % force["arena_max"])
        if force["fixed_thresholds"]:
            already.append("fixed thresholds (trim %s, mmap %s)" % (_hs(force["trim_threshold"]),
                                                                    _hs(force["mmap_threshold"])))
            # A trim threshold set high keeps the tops: the one setting to change.
            if ((ret.get("top_kept_bytes") or 0) >= floor
                    and (force["trim_threshold"] or 0) > DEFAULT_THRESHOLD):
                acts.append("lower M_TRIM_THRESHOLD (set to %s; MALLOC_TRIM_THRESHOLD_=131072): "
                            "the tops keep %s" % (_hs(force["trim_threshold"]),
                                                  _hs(ret.get("top_kept_bytes"))))
        if already:
            acts.insert(0, "%s already in force: what still holds the memory is %s of free "
                           "chunks below chunks in use, which %s"
                        % (" and ".join(already), _hs(pinned),
                           "no threshold returns" if force["fixed_thresholds"] else "fewer arenas do not return"))
        if zlib_held:
            summary = ("%s retained by glibc after %s %s freed (in %d arena%s; malloc_trim would "
                       "return %s now)"
                       % (_hs(held), _streams(stale), "was" if stale["count"] == 1 else "were",
                          arenas, "" if arenas == 1 else "s", _hs(trim)))
        else:
            summary = "%s is %s; malloc_trim would return %s now" % (_hs(held), kept, _hs(trim))
        out.append({"cause": "arena-retention", "kind": "retention", "bytes": held,
                    "where": where_arenas, "action": "; ".join(acts), "evidence": evidence,
                    "summary": summary})
    frag = ret.get("fragment_bytes", 0) or 0
    if frag >= floor and free and frag >= FRAGMENT_MIN_SHARE * free:
        out.append({"cause": "fragmentation", "kind": "fragmentation", "bytes": frag,
                    "where": where_arenas,
                    "action": "malloc_trim cannot return these: %spooling the allocations, or "
                              "another allocator" % ("" if force["arena_max"] else
                                                     "fewer arenas (MALLOC_ARENA_MAX=2), "),
                    "evidence": "%s of free chunks lie in pieces smaller than a page between "
                                "chunks in use" % _hs(frag),
                    "summary": "%s of free memory is fragmented below page size" % _hs(frag)})
    # Each thread arena keeps its own free memory: a cause when that memory is (bytes ranked
    # like any other), never on the arena count alone.
    kept_arenas = sum(a.get("free_bytes", 0) - given_back(a) for a in ret.get("arenas", []) if not a.get("main"))
    if (limit and arenas >= max(8, limit // 2) and not force["arena_max"] and kept_arenas >= floor):
        cores = pres.get("cores")
        out.append({"cause": "arena-count", "kind": "arena count", "bytes": kept_arenas,
                    "where": "%d arenas" % arenas,
                    "action": "MALLOC_ARENA_MAX=2 (or 4): each arena keeps its own free memory "
                              "and 64 MiB heaps",
                    "evidence": "%d arenas of a limit of %d (%s)%s; %d threads, up to %d per "
                                "arena; the thread arenas keep %s free"
                                % (arenas, limit, pres.get("limit_source", ""),
                                   "" if cores is None else ", %d cores" % cores,
                                   pres.get("threads", 0), pres.get("max_threads_per_arena", 0),
                                   _hs(kept_arenas)),
                    "summary": "%d glibc arenas (limit %d) keep %s free: one per busy thread, "
                               "each with its own heaps" % (arenas, limit, _hs(kept_arenas))})
    if jvm:
        un = (nmt or {}).get("untracked_malloc") or {}
        ub = un.get("bytes", 0) or 0
        if ub >= floor:
            z = _zlib(used_classes, freed=False)
            if z["count"] and z["bytes"] >= STALE_MIN_SHARE * ub:
                what = ": %s (%s) held by %s never end()ed" % (_streams(z), _hs(z["bytes"]), _ender(z))
                action = ("end() every %s (try-with-resources / finally; e.g. Spring Boot before "
                          "2.0.5's ZipInflaterInputStream, Jetty's gzip Deflater); find the "
                          "owners with jmap -histo PID | grep -E 'Inflater|Deflater'" % _ender(z)[:-1])
            else:
                top1 = (used_classes or [{}])[0]
                what = (": largest class %s (%d chunks, %s)"
                        % (top1.get("name"), top1.get("count", 0), _hs(top1.get("bytes")))) if top1 else ""
                action = ("find the native library allocating it (zlib streams: Inflater/"
                          "Deflater.end() not called; see `heapwalk classify`)")
            out.append({"cause": "untracked-malloc", "kind": "untracked native", "bytes": ub,
                        "where": "malloc not tracked by NMT", "action": action,
                        "evidence": "%s in %d malloc chunks carry no NMT header"
                                    % (_hs(ub), un.get("count", 0)),
                        "summary": "%s of in-use malloc is not tracked by NMT%s" % (_hs(ub), what)})
    out.extend(allocator_causes(doc, fp, floor))
    owner = _owner(doc)
    if not out and owner is not None:
        healthy = dict(owner.get("in_use_summary") or {})
        healthy["summary"] = "no cause reaches %s of the process (%s): %s" % (
            _pct(CAUSE_MIN_SHARE), _of(fp), healthy.get("summary", ""))
        healthy["allocator"] = owner.get("allocator")
        healthy.pop("virtual", None)
        out.append(healthy)
    if not out:
        out.append({"cause": "in-use", "kind": "in use", "bytes": ret.get("in_use_bytes", 0),
                    "where": "",
                    "action": "nothing large retained to give back; see `heapwalk classify` and "
                              "`heapwalk leaks` for what the memory in use holds",
                    "evidence": "glibc keeps %s free of %s; malloc_trim(0) would return %s"
                                % (_hs(free), _hs(system), _hs(trim)),
                    "summary": "no cause reaches %s of the process (%s): %s in use, %s free, "
                               "malloc_trim(0) would return %s"
                               % (_pct(CAUSE_MIN_SHARE), _of(fp), _hs(ret.get("in_use_bytes", 0)),
                                  _hs(free), _hs(trim))})
    for v in out:
        v["share"] = round(_share(v["bytes"], fp), 4)
    # Address space that is not memory (jemalloc retained, tcmalloc unmapped) after the rest.
    out.sort(key=lambda v: (bool(v.get("virtual")), -v["bytes"], v["cause"]))
    return out


def _owner(doc: Record) -> Optional[Record]:
    """The allocator section (``allocators``) of the allocator that answers malloc(), if it is
    not glibc's."""
    for a in doc.get("allocators") or []:
        if a.get("owns_malloc"):
            return a
    return None


def allocator_causes(doc: Record, fp: Record, floor: float) -> List[Record]:
    """The engine's causes for jemalloc and tcmalloc (``allocators[].causes``: what they keep,
    in their own terms, with their actions) that reach ``floor``; address space only (retained,
    unmapped) counts when it exceeds the process's size too (it costs no memory)."""
    out: List[Record] = []
    for a in doc.get("allocators") or []:
        for c in a.get("causes") or []:
            need = max(floor, fp.get("bytes") or 0) if c.get("virtual") else floor
            if (c.get("bytes") or 0) >= need:
                v = dict(c)
                v["allocator"] = a.get("allocator")
                out.append(v)
    return out


def render_report(doc: Record, style: Style = render.PLAIN, show_all: bool = False) -> List[str]:
    """Text for ``report``; ``show_all``: every mapping group, not only the largest."""
    tgt = doc.get("target") or {}
    glibc = doc.get("glibc") or {}
    ret = doc.get("retention") or {}
    pres = doc.get("pressure") or {}
    maps = doc.get("mappings") or {}
    who = ("pid %s" % tgt.get("pid")) if tgt.get("kind") == "live" else (tgt.get("path") or tgt.get("kind"))
    owner = _owner(doc)
    out = [style.paint("bold", "heapwalk report: %s, glibc %s, %s threads%s"
                       % (render.safe(str(who)), glibc.get("version"), tgt.get("threads"),
                          (", malloc: %s" % render.safe(owner.get("version") or owner.get("allocator")))
                          if owner else ""))]
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
    for a in doc.get("allocators") or []:
        out.append("")
        out.extend(render_allocator(a, style))
    # glibc
    out.append("")
    if owner is not None and not glibc.get("system_bytes") and not glibc.get("mmapped_bytes"):
        # Another allocator answers malloc and nothing reached glibc's: one line, not a table.
        out.append(style.paint("bold", "glibc malloc") + ": unused (%s answers malloc; the main "
                   "arena holds nothing)" % render.safe(owner.get("allocator") or ""))
        return out + _render_tail(doc, style)
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
    return out + _render_tail(doc, style)


def _render_tail(doc: Record, style: Style) -> List[str]:
    """NMT, the top classes and the verdict: the end of ``report`` text."""
    out: List[str] = []
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
    fp = doc.get("footprint") or footprint(doc)
    out.append(style.paint("bold", "verdict") + " (causes by bytes, against the process's %s)"
               % _of(fp))
    for i, v in enumerate(doc.get("verdict", []), 1):
        share = "" if v.get("cause") == "in-use" else " (%s)" % _pct(v.get("share") or 0)
        out.append("  %d. %s%s" % (i, v.get("summary", v.get("cause")), share))
        out.append("     evidence: %s" % v.get("evidence", ""))
        out.append("     action: %s" % v.get("action", ""))
    return out


def _ms(v: Optional[int]) -> str:
    if v is None:
        return "unknown"
    return "-1 (never)" if v < 0 else "%d ms" % v


def render_allocator(a: Record, style: Style = render.PLAIN) -> List[str]:
    """The jemalloc or tcmalloc section of ``report`` text: the allocator's own figures, what
    its release call returns now, its thread caches."""
    f = a.get("figures") or {}
    head = style.paint("bold", render.safe(a.get("version") or a.get("allocator") or "")) + \
        " (%s, layout: %s)%s" % (render.safe(a.get("module") or ""), render.safe(a.get("layout_source") or ""),
                                 ": answers malloc" if a.get("owns_malloc") else "")
    out = [head]
    caches = a.get("thread_caches") or []
    if a.get("allocator") == "jemalloc":
        out.append("  allocated %s of %s active; resident %s, mapped %s, metadata %s; retained %s "
                   "(address space only)"
                   % (_hs(f.get("allocated")), _hs(f.get("active")), _hs(f.get("resident")),
                      _hs(f.get("mapped")), _hs(f.get("metadata")), _hs(f.get("retained"))))
        out.append("  dirty %s + muzzy %s: arena.<i>.purge would return %s now; dirty_decay_ms %s, "
                   "muzzy_decay_ms %s%s"
                   % (_hs(f.get("dirty")), _hs(f.get("muzzy")), _hs(f.get("purge")),
                      _ms(f.get("dirty_decay_ms")), _ms(f.get("muzzy_decay_ms")),
                      "" if f.get("background_thread") is None else
                      ", background_thread %s" % ("true" if f["background_thread"] else "false")))
        out.append("  %d arenas; %d thread caches hold %s" % (len(a.get("arenas") or []), len(caches),
                                                            _hs(f.get("tcache"))))
        arenas = sorted(a.get("arenas") or [], key=lambda p: (-(p.get("stats") or {}).get("dirty", 0),
                                                              p.get("index", 0)))[:8]
        if arenas:
            rows = []
            for p in arenas:
                st = p.get("stats") or {}
                rows.append(["#%d" % p.get("index", 0), _hs(st.get("allocated")), _hs(st.get("active")),
                             _hs(st.get("dirty")), _hs(st.get("muzzy")), _hs(st.get("retained")),
                             _hs(st.get("tcache_bytes"))])
            out.extend(render.table([Column("arena", "<"), Column("allocated"), Column("active"),
                                     Column("dirty"), Column("muzzy"), Column("retained"),
                                     Column("tcache")], rows, style, indent="  "))
    else:
        out.append("  heap size %s: in use %s, page heap free %s, unmapped %s (address space only)"
                   % (_hs(f.get("heap_size")), _hs(f.get("in_use")), _hs(f.get("pageheap_free")),
                      _hs(f.get("pageheap_unmapped"))))
        out.append("  ReleaseFreeMemory() would return %s now" % _hs(f.get("release_free_memory")))
        out.append("  caches: central %s, transfer %s, thread %s (%d thread caches; max total %s)"
                   % (_hs(f.get("central")), _hs(f.get("transfer")), _hs(f.get("thread")), len(caches),
                      _hs(f.get("max_total_thread_cache_bytes"))))
    nmt = a.get("nmt")
    if nmt and nmt.get("headers") == "canary":
        tracked = nmt.get("tracked_count", 0)
        out.append("  JVM: NMT headers carry %s in %s allocations (+ %s of headers); %s in %s "
                   "allocations carry none (malloc NMT does not track)"
                   % (_hs(nmt.get("tracked_bytes")), _n(tracked), _hs(16 * tracked),
                      _hs(nmt.get("untracked_bytes")), _n(nmt.get("untracked_count", 0))))
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
    stale: Optional[List[Record]] = None
    if classes:
        try:
            owner = malloc_owner(target)  # jemalloc/tcmalloc: their slots, not glibc's chunks
            got = (target.alloc_classify(owner, True, SAVED_CLASSES) if owner
                   else target.classify(None, True, SAVED_CLASSES))
            every = got.get("classes", [])
            stale = got.get("free_classes")
            top = every[:TOP_CLASSES]
        except Exception as exc:  # pylint: disable=broad-except  # classes are optional
            doc.setdefault("diagnostics", []).append(
                {"kind": "note", "address": None, "arena": None,
                 "detail": "content classes unavailable: %s" % exc})
    doc["classes"] = top
    if stale is not None:
        doc["free_classes"] = stale[:TOP_CLASSES]
        doc["free_content_classes"] = [{"name": c.get("name"), "kind": c.get("kind"),
                                        "count": c.get("count", 0), "bytes": c.get("bytes", 0)}
                                       for c in stale]
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
    doc["footprint"] = footprint(doc)
    doc["verdict"] = verdict(doc)
    # jemalloc/tcmalloc: the allocator's own statistics per pool, so that `diff` of two saved
    # reports shows their deltas as `diff` of two cores does.
    from .cmd_diff import with_allocator_pools  # noqa: PLC0415  (cmd_diff imports this module)
    return render.wrap("report", with_allocator_pools(target, doc))


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
