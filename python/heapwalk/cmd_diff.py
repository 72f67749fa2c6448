"""``diff A B``: what grew and shrank between two snapshots of the same program.

A and B are each a core file or a saved ``report --json`` document (schema ``heapwalk/1``;
cores are analysed with :func:`heapwalk.cmd_report.build_report`, so both kinds compare the
same figures). Compared: the totals (mapped, glibc system / in use / free / trimmable /
mmapped, NMT committed and untracked malloc), each arena (matched by ring index), each NMT
category, each content class, each in-use chunk size ("a few KB per connection": the size
classes whose count grew, sorted by bytes grown) and the mapping groups. The JSON output is
deterministic: every list has a total order (delta, then name or size).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import cmd_alloc, render
from .commands import Command, Invocation, problem_status
from .errors import HeapwalkError, UsageError, describe_error
from .render import Column, Style

Record = Dict[str, Any]

#: Text output shows this many rows per table (JSON: all).
TEXT_ROWS = 12
ARENA_FIELDS = ("system_bytes", "in_use_bytes", "free_bytes", "trimmable_bytes", "top_bytes")
NMT_FIELDS = ("reserved", "committed", "malloc")
COUNT_FIELDS = ("count", "bytes")


# -- loading ----------------------------------------------------------------------------------

def _is_json(path: str) -> bool:
    """A JSON document (an object, or a list: refused as a report), not a core."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head[:1] in (b"{", b"[")


#: The largest magnitude a figure of a saved report may have (every figure is a 64-bit count).
MAX_FIGURE = 1 << 64
#: The shape of what :func:`compare` reads from a saved report: for each field, the type it
#: must have when present ("int"/"str" may also be null, "name" may not; a dict is an object
#: whose listed fields are checked, a one-item list a list of such items). Other fields are
#: not read and not checked; a missing field counts as absent (null or zero).
_INTS = ("in_use_bytes", "free_bytes", "trimmable_bytes", "tcache_bytes", "top_bytes",
         "fragment_bytes", "system_bytes", "mmapped_bytes")
_COUNTED = {"name": "name", "kind": "str", "count": "int", "bytes": "int"}
REPORT_SHAPE: Dict[str, Any] = {
    "target": {"kind": "str", "path": "str", "pid": "int", "threads": "int"},
    "mappings": {"mapped_bytes": "int", "resident_bytes": "int",
                 "groups": [{"label": "name", "kind": "str", "mapped_bytes": "int",
                             "regions": "int"}]},
    "glibc": {"version": "str", "system_bytes": "int", "mmapped_bytes": "int"},
    "retention": dict({f: "int" for f in _INTS},
                      arenas=[dict({f: "int" for f in ARENA_FIELDS}, index="index")]),
    "pressure": {"arenas": "int", "threads": "int", "heaps": "int"},
    "nmt": {"jdk": "str", "total_reserved": "int", "total_committed": "int",
            "malloc_bytes": "int", "untracked_malloc": {"bytes": "int"},
            "categories": [{"name": "name", "reserved": "int", "committed": "int",
                            "malloc": "malloc"}]},
    "size_classes": [{"size": "index", "count": "int", "bytes": "int"}],
    "content_classes": [_COUNTED],
    "classes": [_COUNTED],
    "verdict": [{"cause": "name"}],
    "allocator_pools": {"allocator": "str", "version": "str",
                        "pools": [{"index": "index", "name": "str"}]},
}
_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number", bool: "true/false", type(None): "null"}


def _bad(where: str, want: str, value: Any) -> HeapwalkError:
    got = _TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, int) and not isinstance(value, bool) and want == "an integer":
        got = "an integer out of range"
    return HeapwalkError("not a usable 'report --json' document: %s: expected %s, got %s"
                         % (where, want, got))


def _brief(value: Any) -> str:
    """A field's value for an error line: a short string or number as repr, else its type."""
    if isinstance(value, str):
        return repr(value[:40] + ("…" if len(value) > 40 else ""))
    if value is None or isinstance(value, bool) or _figure(value):
        return repr(value)
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _loaded(path: str, sysroot: Optional[str], classes: bool) -> Tuple[Record, str]:
    """:func:`load`, every failure an error naming ``path`` (diff reads two files: the CLI's
    default subject is the first one, whichever failed)."""
    try:
        return load(path, sysroot, classes)
    except HeapwalkError as exc:
        if exc.subject is None:
            exc.subject = path
        raise
    except Exception as exc:  # pylint: disable=broad-except
        if os.environ.get("HEAPWALK_DEBUG"):
            raise
        import heapwalk  # pylint: disable=import-outside-toplevel
        try:
            native: Optional[type] = heapwalk.native().Error
        except HeapwalkError:
            native = None
        if isinstance(exc, OSError) or (native is not None and isinstance(exc, native)):
            line, hint = describe_error(exc, path, native)
            message = line[len("heapwalk: "):]
            if path not in message:
                message = "%s: %s" % (path, message)
            raise HeapwalkError(message, subject="", hint=hint) from None
        raise HeapwalkError("internal error: %s: %s" % (type(exc).__name__, exc), subject=path,
                            hint="please report this; HEAPWALK_DEBUG=1 shows the "
                                 "traceback") from None


def _live_report(args: Any, classes: bool) -> Record:
    """The report of the live process ``args.pid`` now (copied as ``report --pid`` copies it:
    the target options --sysroot, --max-copy, --copy-to, overrides apply)."""
    from .cli import open_target  # pylint: disable=import-outside-toplevel
    from .cmd_report import build_report  # pylint: disable=import-outside-toplevel
    target = open_target(args)
    try:
        doc = with_allocator_pools(target, build_report(target, classes=classes))
    finally:
        target.close()
    tgt = doc.setdefault("target", {})
    if isinstance(tgt, dict):
        tgt.setdefault("kind", "live")
        tgt.setdefault("pid", args.pid)
    return doc


def _figure(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_FIGURE <= value <= MAX_FIGURE


def check_report(doc: Record, shape: Any = None, where: str = "") -> None:
    """Raise a HeapwalkError naming the first field of ``doc`` that does not have the type
    :func:`compare` needs (a saved report may have been edited or crafted: wrong types, numbers
    beyond 64 bits, NaN...). Bounded by the shape, not by the document's depth."""
    shape = REPORT_SHAPE if shape is None else shape
    if isinstance(shape, dict):
        if not isinstance(doc, dict):
            raise _bad(where or "the document", "an object", doc)
        for key, sub in shape.items():
            value = doc.get(key)
            if value is None and sub not in ("name", "index"):
                continue
            check_report(value, sub, "%s.%s" % (where, key) if where else key)
    elif isinstance(shape, list):
        if not isinstance(doc, list):
            raise _bad(where, "a list", doc)
        for i, item in enumerate(doc):
            check_report(item, shape[0], "%s[%d]" % (where, i))
    elif shape in ("int", "index"):
        if not _figure(doc) and not (shape == "int" and doc is None):
            raise _bad(where, "an integer", doc)
    elif shape in ("str", "name"):
        if not isinstance(doc, str) and not (shape == "str" and doc is None):
            raise _bad(where, "a string", doc)
    elif shape == "malloc":  # NMT malloc: bytes, or {"bytes", "count"}
        if isinstance(doc, dict):
            check_report(doc, {"bytes": "int"}, where)
        elif doc is not None and not _figure(doc):
            raise _bad(where, "an integer or an object", doc)


def load(path: str, sysroot: Optional[str] = None, classes: bool = True) -> Tuple[Record, str]:
    """The report document of ``path`` (a core or a saved report) and its kind."""
    if not os.path.exists(path):
        raise HeapwalkError("no such file", subject=path)
    if os.path.isdir(path):
        raise HeapwalkError("is a directory, not a core file or a saved report", subject=path)
    if _is_json(path):
        try:
            with open(path, "r", encoding="utf-8") as f:
                doc = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HeapwalkError("not a JSON report: %s" % exc, subject=path,
                                hint="save one with 'heapwalk report CORE --json > FILE'") from None
        except RecursionError:
            raise HeapwalkError("not a usable JSON report: nested too deeply", subject=path,
                                hint="save one with 'heapwalk report CORE --json > FILE'") from None
        except MemoryError:
            raise HeapwalkError("not a usable JSON report: too large to load",
                                subject=path) from None
        if not isinstance(doc, dict) or doc.get("schema") != render.SCHEMA:
            raise HeapwalkError("unsupported report schema %s (this heapwalk reads %s)"
                                % (_brief(doc.get("schema") if isinstance(doc, dict) else None),
                                   render.SCHEMA), subject=path)
        if doc.get("command", "report") != "report" or "retention" not in doc:
            raise HeapwalkError("not a 'report --json' document (command %s)"
                                % _brief(doc.get("command")), subject=path,
                                hint="save one with 'heapwalk report CORE --json > FILE'")
        try:
            check_report(doc)
        except HeapwalkError as exc:
            exc.subject = path
            exc.hint = "save one with 'heapwalk report CORE --json > FILE'"
            raise
        return doc, "report"
    import heapwalk  # pylint: disable=import-outside-toplevel
    from .cmd_report import build_report  # pylint: disable=import-outside-toplevel
    target = heapwalk.open_core(path, sysroot=sysroot)
    try:
        return with_allocator_pools(target, build_report(target, classes=classes)), "core"
    finally:
        target.close()


def with_allocator_pools(target: Any, doc: Record) -> Record:
    """``doc`` with ``"allocator_pools"`` (issue 16: jemalloc's arenas or tcmalloc's page heap
    with the allocator's own statistics) when jemalloc or tcmalloc owns malloc in ``target``."""
    if "allocator_pools" in doc:
        return doc
    try:
        section = cmd_alloc.pools_section(target)
    except HeapwalkError:
        raise
    except Exception as exc:  # pylint: disable=broad-except  # the engine's Error: not found
        doc.setdefault("diagnostics", []).append(
            {"kind": "layout", "address": None, "arena": None, "severity": "error",
             "detail": "allocator statistics: %s" % exc})
        return doc
    if section is not None:
        doc["allocator_pools"] = section
    return doc


# -- comparing --------------------------------------------------------------------------------

def _num(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _pair(a: Optional[Record], b: Optional[Record], fields: Iterable[str]) -> Record:
    a = a or {}
    b = b or {}
    va = {f: _num(a.get(f)) for f in fields}
    vb = {f: _num(b.get(f)) for f in fields}
    return {"a": va, "b": vb, "delta": {f: vb[f] - va[f] for f in fields}}


def _total(what: str, a: Any, b: Any) -> Record:
    return {"what": what, "a": _num(a), "b": _num(b), "delta": _num(b) - _num(a)}


def _get(doc: Record, *path: str) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _totals(a: Record, b: Record) -> List[Record]:
    rows = [("mapped bytes", ("mappings", "mapped_bytes")),
            ("glibc system bytes (arenas)", ("glibc", "system_bytes")),
            ("glibc mmapped chunk bytes", ("glibc", "mmapped_bytes")),
            ("glibc in use", ("retention", "in_use_bytes")),
            ("glibc free", ("retention", "free_bytes")),
            ("malloc_trim would return", ("retention", "trimmable_bytes")),
            ("tcache", ("retention", "tcache_bytes")),
            ("tops", ("retention", "top_bytes")),
            ("sub-page fragments", ("retention", "fragment_bytes")),
            ("arenas", ("pressure", "arenas")),
            ("threads", ("pressure", "threads")),
            ("64 MiB heaps", ("pressure", "heaps")),
            ("NMT reserved", ("nmt", "total_reserved")),
            ("NMT committed", ("nmt", "total_committed")),
            ("NMT malloc", ("nmt", "malloc_bytes")),
            ("malloc not tracked by NMT", ("nmt", "untracked_malloc", "bytes"))]
    out = []
    for what, path in rows:
        va, vb = _get(a, *path), _get(b, *path)
        if path == ("nmt", "total_committed"):  # with the thread stacks computed now
            va = _get(a, "nmt", "total_committed_now") or va
            vb = _get(b, "nmt", "total_committed_now") or vb
        if va is None and vb is None:
            continue
        out.append(_total(what, va, vb))
    ca = _get(a, "mappings", "resident_bytes")
    cb = _get(b, "mappings", "resident_bytes")
    if ca is not None or cb is not None:
        out.insert(1, _total("resident bytes", ca, cb))
    return out


def _arenas(a: Record, b: Record) -> List[Record]:
    ia = {x.get("index"): x for x in _get(a, "retention", "arenas") or []}
    ib = {x.get("index"): x for x in _get(b, "retention", "arenas") or []}
    out = []
    for idx in sorted(set(ia) | set(ib), key=lambda i: (i is None, i)):
        row: Record = {"index": idx, "main": bool((ia.get(idx) or ib.get(idx) or {}).get("main")),
                       "in": "both" if idx in ia and idx in ib else ("a" if idx in ia else "b")}
        row.update(_pair(ia.get(idx), ib.get(idx), ARENA_FIELDS))
        out.append(row)
    return out


def _keyed(rows_a: List[Record], rows_b: List[Record], key: str, fields: Tuple[str, ...],
           changed_only: bool = False) -> List[Record]:
    ia = {r.get(key): r for r in rows_a or []}
    ib = {r.get(key): r for r in rows_b or []}
    out = []
    for k in set(ia) | set(ib):
        row: Record = {key: k}
        ref = ib.get(k) or ia.get(k) or {}
        if "kind" in ref:
            row["kind"] = ref["kind"]
        row.update(_pair(ia.get(k), ib.get(k), fields))
        if changed_only and not any(row["delta"].values()):
            continue
        out.append(row)
    main = fields[-1] if "bytes" in fields else fields[1]
    out.sort(key=lambda r: (-r["delta"][main], str(r[key])))
    return out


def _nmt_rows(doc: Record) -> List[Record]:
    rows = []
    for c in _get(doc, "nmt", "categories") or []:
        m = c.get("malloc")
        # Thread: the stacks' committed bytes computed now, not NMT's stale record of them.
        rows.append({"name": c.get("name"), "reserved": c.get("reserved"),
                     "committed": c.get("committed_now", c.get("committed")),
                     "malloc": m.get("bytes") if isinstance(m, dict) else m})
    return rows


def _groups(doc: Record) -> List[Record]:
    """Mapping groups summed by label."""
    by: Dict[str, Record] = {}
    for g in _get(doc, "mappings", "groups") or []:
        r = by.setdefault(g.get("label"), {"label": g.get("label"), "kind": g.get("kind"),
                                           "mapped_bytes": 0, "regions": 0})
        r["mapped_bytes"] += _num(g.get("mapped_bytes"))
        r["regions"] += _num(g.get("regions"))
    return list(by.values())


def _classes(doc: Record) -> List[Record]:
    got = doc.get("content_classes")
    if got is None:
        got = doc.get("classes") or []
    return [{"name": c.get("name"), "kind": c.get("kind"), "count": c.get("count"),
             "bytes": c.get("bytes")} for c in got]


def _source(path: str, kind: str, doc: Record) -> Record:
    tgt = doc.get("target") or {}
    return {"path": path, "kind": kind, "target": {"kind": tgt.get("kind"),
                                                   "path": tgt.get("path"),
                                                   "pid": tgt.get("pid"),
                                                   "threads": tgt.get("threads")},
            "glibc": _get(doc, "glibc", "version"),
            "jdk": _get(doc, "nmt", "jdk"),
            "has_size_classes": "size_classes" in doc,
            "has_content_classes": "content_classes" in doc}


# -- the diff's own verdict --------------------------------------------------------------------

#: Growth counts as a finding from this share of B's size (cmd_report.footprint) and at least
#: DIFF_MIN_BYTES: a leak matters long before it is a large part of the process.
DIFF_MIN_SHARE = 0.01
DIFF_MIN_BYTES = 256 << 10
#: The size classes (and arenas) named as where growth is: the largest, until they cover this
#: share of it (at most DIFF_WHERE_ROWS).
DIFF_WHERE_SHARE = 0.8
DIFF_WHERE_ROWS = 3

#: What allocates each NMT category's malloc, and how to find the call site.
NMT_WHO = {
    "Other": ("Unsafe.allocateMemory / direct ByteBuffers (ByteBuffer.allocateDirect, Netty's "
              "direct pools)",
              "find the Unsafe.allocateMemory / ByteBuffer.allocateDirect caller that never frees "
              "(Netty: -Dio.netty.leakDetection.level=paranoid, and watch "
              "PlatformDependent.usedDirectMemory()); -XX:NativeMemoryTracking=detail and jcmd PID "
              "VM.native_memory detail.diff give the call stack"),
    "Internal": ("JVM internals (JVMTI, perf data, command-line parsing) and, before JDK 17, "
                 "Unsafe.allocateMemory",
                 "jcmd PID VM.native_memory baseline, later detail.diff: the growing call site"),
    "Class": ("class metadata (class loaders defining classes)",
              "look for class loaders that are created per request and never released "
              "(jcmd PID VM.classloader_stats)"),
    "Thread": ("thread structures (threads started and never ended)",
               "look for threads that are created and never end (jcmd PID Thread.print)"),
    "Symbol": ("the symbol table (interned names)",
               "look for String.intern() or generated class names per request"),
}


def _sz(n: int) -> str:
    return render.size(abs(n))


def _where_rows(rows: List[Record], total: int, key: str) -> List[Record]:
    out: List[Record] = []
    got = 0
    for r in rows:
        if r[key] <= 0 or len(out) >= DIFF_WHERE_ROWS:
            break
        out.append(r)
        got += r[key]
        if got >= DIFF_WHERE_SHARE * total:
            break
    return out


def _delta(doc: Record, what: str) -> int:
    for t in doc["totals"]:
        if t["what"] == what:
            return t["delta"]
    return 0


def growth_verdict(a: Record, b: Record, doc: Record) -> List[Record]:
    """What grew between A and B, of which kind, where, with its bytes and an action:
    ``[{"cause", "kind", "bytes", "share", "where", "summary", "evidence", "action"}]``,
    largest first. Kinds: "leak of in-use memory" (chunks in use grew; NMT-tracked or not),
    "untracked native" (in-use malloc NMT does not track, or anonymous mappings outside glibc
    and NMT), "retention" (free memory kept by glibc grew), "fragmentation"."""
    from .cmd_report import footprint, verdict as report_verdict  # pylint: disable=import-outside-toplevel
    fp = footprint(b)
    floor = max(DIFF_MIN_BYTES, DIFF_MIN_SHARE * fp["bytes"])
    of_b = "%s %s" % (render.size(fp["bytes"]), {"resident": "resident", "committed": "committed",
                                                 "writable": "writable mapped"}.get(fp["source"], fp["source"]))
    jvm = b.get("nmt") is not None
    out: List[Record] = []
    d_in = _delta(doc, "glibc in use") + _delta(doc, "glibc mmapped chunk bytes")
    d_free = _delta(doc, "glibc free")
    d_frag = _delta(doc, "sub-page fragments")
    d_trim = _delta(doc, "malloc_trim would return")
    d_untracked = _delta(doc, "malloc not tracked by NMT")
    growth = doc.get("growth") or []
    grown_bytes = sum(g["bytes"] for g in growth)
    if d_in >= floor:
        sizes = _where_rows(growth, grown_bytes, "bytes")
        arenas = sorted((r for r in doc["arenas"] if r["delta"]["in_use_bytes"] > 0),
                        key=lambda r: (-r["delta"]["in_use_bytes"], r["index"]))
        arenas = [r for r in arenas if r["delta"]["in_use_bytes"] >= 0.1 * d_in][:DIFF_WHERE_ROWS]
        nmt = sorted((r for r in doc.get("nmt") or [] if r["delta"]["malloc"] > 0),
                     key=lambda r: (-r["delta"]["malloc"], r["name"]))
        cat = nmt[0] if nmt and nmt[0]["delta"]["malloc"] >= 0.25 * d_in else None
        cls = [c for c in doc.get("classes") or [] if c["delta"]["bytes"] >= 0.1 * d_in][:DIFF_WHERE_ROWS]
        what_sizes = ", ".join("%s chunks of %d B" % ("{:+,}".format(g["count"]), g["size"])
                               for g in sizes)
        where = []
        if arenas:
            where.append("arena " + ", ".join("#%s%s (%s)" % (r["index"], " main" if r.get("main") else "",
                                                             _sd(r["delta"]["in_use_bytes"]))
                                              for r in arenas))
        if sizes:
            where.append("size " + ", ".join("%d B x %s" % (g["size"], "{:+,}".format(g["count"]))
                                             for g in sizes))
        untracked = jvm and d_untracked >= 0.5 * d_in
        who = ""
        action = ""
        if cat is not None and not untracked:
            per = ""
            for c in (cls if len(sizes) == 1 else []):  # one new size: its request size
                if c.get("name") == "NMT " + cat["name"] and c["delta"]["count"] > 0:
                    per = " (%s B requested each)" % "{:,}".format(cat["delta"]["malloc"] // c["delta"]["count"])
            where.append("NMT %s %s%s" % (cat["name"], _sd(cat["delta"]["malloc"]), per))
            who_act = NMT_WHO.get(cat["name"])
            who = ", i.e. " + who_act[0] if who_act else ""
            action = who_act[1] if who_act else (
                "jcmd PID VM.native_memory baseline, later summary.diff / detail.diff: the call site "
                "of NMT %s's growth" % cat["name"])
        elif untracked:
            where.append("not tracked by NMT %s" % _sd(d_untracked))
            z = [c for c in cls if c.get("kind") == "zlib"]
            if z:
                who = ", i.e. zlib streams (Inflater/Deflater never end()ed)"
                action = "end() every Inflater/Deflater (try-with-resources / finally)"
            else:
                action = ("a native library's malloc, not tracked by NMT: `heapwalk classify` and "
                          "`heapwalk leaks` on B name what the new chunks hold")
        else:
            action = ("`heapwalk leaks` on B (unreferenced chunks) and `heapwalk classify` name "
                      "what the new chunks hold")
        if cls:
            where.append("content " + ", ".join("%s %s" % (c["name"], "{:+,}".format(c["delta"]["count"]))
                                                for c in cls))
        kind = "untracked native" if untracked else "leak of in-use memory"
        not_ret = ("a leak of memory in use, not retention (glibc free %s)" % _sd(d_free)
                   if d_free < 0.25 * d_in else "with free memory growing too (%s)" % _sd(d_free))
        summary = "in-use memory grew by %s" % _sz(d_in)
        if what_sizes:
            summary += ": %s" % what_sizes
        if cat is not None and not untracked:
            summary += ", NMT %s%s" % (cat["name"], who)
        elif untracked:
            summary += ", not tracked by NMT%s" % who
        summary += "; " + not_ret
        out.append({"cause": "in-use-growth", "kind": kind, "bytes": d_in, "where": "; ".join(where),
                    "summary": summary,
                    "evidence": "glibc in use %s (mmapped chunks included), free %s, malloc_trim "
                                "would return %s more; %s of it in chunk sizes whose count grew"
                                % (_sd(d_in), _sd(d_free), _sd(d_trim), _sz(grown_bytes)),
                    "action": action})
    elif jvm and d_untracked >= floor:
        out.append({"cause": "untracked-growth", "kind": "untracked native", "bytes": d_untracked,
                    "where": "malloc not tracked by NMT",
                    "summary": "in-use malloc not tracked by NMT grew by %s" % _sz(d_untracked),
                    "evidence": "glibc in use %s" % _sd(d_in),
                    "action": "`heapwalk classify` on B names what it holds"})
    if d_free >= floor and d_free > d_in:
        rv = [v for v in report_verdict(b) if v.get("cause") == "arena-retention"]
        act = rv[0]["action"] if rv else "malloc_trim(0) / jcmd PID System.trim_native_heap"
        arenas = sorted((r for r in doc["arenas"] if r["delta"]["free_bytes"] > 0),
                        key=lambda r: (-r["delta"]["free_bytes"], r["index"]))[:DIFF_WHERE_ROWS]
        # What was freed: the zlib streams whose stale state B's free chunks hold.
        stale = sum(c.get("count", 0) for c in b.get("free_content_classes") or []
                    if c.get("kind") == "zlib" and "(freed" in (c.get("name") or ""))
        gone = [c for c in doc.get("classes") or [] if c.get("kind") == "zlib" and c["delta"]["count"] < 0]
        freed = ""
        if stale:
            freed = ": %s zlib stream%s %s freed%s and glibc kept the memory" % (
                "{:,}".format(stale), "" if stale == 1 else "s", "was" if stale == 1 else "were",
                (" (%s)" % ", ".join("%s %s" % (c["name"], "{:+,}".format(c["delta"]["count"])) for c in gone))
                if gone else "")
        shrank = (", as memory in use shrank by %s" % _sz(d_in)) if d_in < 0 else " (in use %s)" % _sd(d_in)
        out.append({"cause": "retention-growth", "kind": "retention", "bytes": d_free,
                    "where": "arena " + ", ".join("#%s (%s)" % (r["index"], _sd(r["delta"]["free_bytes"]))
                                                  for r in arenas),
                    "summary": "free memory kept by glibc grew by %s%s%s: retention, not a leak%s"
                               % (_sz(d_free), shrank, freed,
                                  "; malloc_trim would return %s more" % _sz(d_trim) if d_trim > 0 else ""),
                    "evidence": rv[0]["evidence"] if rv else "",
                    "action": act})
    if d_frag >= floor:
        out.append({"cause": "fragmentation-growth", "kind": "fragmentation", "bytes": d_frag,
                    "where": "", "summary": "sub-page fragments grew by %s" % _sz(d_frag),
                    "evidence": "free pieces smaller than a page between chunks in use",
                    "action": "fewer arenas (MALLOC_ARENA_MAX), pooling, or another allocator"})
    anon = [m for m in doc.get("mappings") or [] if m.get("kind") == "anon" and m["delta"]["mapped_bytes"] >= floor]
    for m in anon:
        out.append({"cause": "anonymous-growth", "kind": "untracked native", "bytes": m["delta"]["mapped_bytes"],
                    "where": m["label"],
                    "summary": "anonymous mappings outside glibc's heaps%s grew by %s"
                               % (" and NMT" if jvm else "", _sz(m["delta"]["mapped_bytes"])),
                    "evidence": "%s: %s regions" % (m["label"], _sc(m["delta"]["regions"])),
                    "action": "a native library's own mmap (not malloc): `heapwalk report` on B "
                              "lists the mappings"})
    if not out:
        out.append({"cause": "no-growth", "kind": "none", "bytes": max(d_in, d_free, 0), "where": "",
                    "summary": "nothing grew by %s or more (%s of B's %s): in use %s, free %s"
                               % (render.size(int(floor)), "%.0f %%" % (100 * DIFF_MIN_SHARE), of_b,
                                  _sd(d_in), _sd(d_free)),
                    "evidence": "", "action": "nothing to do between these snapshots"})
    for v in out:
        v["share"] = round(v["bytes"] / fp["bytes"], 4) if fp.get("bytes") else 0.0
    out.sort(key=lambda v: (-v["bytes"], v["cause"]))
    return out


#: The statistics ``diff`` text shows per pool (JSON: every statistic the model has).
POOL_TEXT_STATS = {
    "jemalloc": ("allocated", "active", "dirty", "muzzy", "retained", "mapped", "resident",
                 "metadata", "tcache_bytes", "small.allocated", "large.allocated"),
    "tcmalloc": ("generic.heap_size", "generic.current_allocated_bytes",
                 "tcmalloc.pageheap_free_bytes", "tcmalloc.pageheap_unmapped_bytes",
                 "tcmalloc.pageheap_committed_bytes", "tcmalloc.central_cache_free_bytes",
                 "tcmalloc.transfer_cache_free_bytes", "tcmalloc.thread_cache_free_bytes",
                 "release_free_memory_bytes"),
}


def _pool_stats(doc: Record) -> Dict[Any, Record]:
    pools = _get(doc, "allocator_pools", "pools") or []
    return {p.get("index"): p for p in pools if isinstance(p, dict)}


def _allocator_rows(a: Record, b: Record) -> Optional[Record]:
    """Per pool (matched by index), every statistic of the allocator in A, B and B - A."""
    sa, sb = a.get("allocator_pools"), b.get("allocator_pools")
    if not sa and not sb:
        return None
    kind = (sb or sa or {}).get("allocator")
    pa, pb = _pool_stats(a), _pool_stats(b)
    pools = []
    for idx in sorted(set(pa) | set(pb), key=lambda i: (i is None, i)):
        xa = (pa.get(idx) or {}).get("stats") or {}
        xb = (pb.get(idx) or {}).get("stats") or {}
        xa = xa if isinstance(xa, dict) else {}
        xb = xb if isinstance(xb, dict) else {}
        keys = sorted(k for k in set(xa) | set(xb) if isinstance(k, str))
        row = _pair(xa, xb, keys)
        row.update({"index": idx, "name": (pb.get(idx) or pa.get(idx) or {}).get("name"),
                    "in": "both" if idx in pa and idx in pb else ("a" if idx in pa else "b")})
        pools.append(row)
    return {"allocator": kind,
            "a": (sa or {}).get("allocator"), "b": (sb or {}).get("allocator"),
            "version": (sb or sa or {}).get("version"), "pools": pools}


def compare(a: Record, b: Record, path_a: str = "A", path_b: str = "B",
            kind_a: str = "report", kind_b: str = "report") -> Record:
    """The ``diff`` document of two report documents."""
    notes: List[Record] = []

    def note(text: str) -> None:
        notes.append({"kind": "note", "address": None, "arena": None, "detail": text})

    ta, tb = a.get("target") or {}, b.get("target") or {}
    if ta.get("pid") is not None and tb.get("pid") is not None and ta.get("pid") != tb.get("pid"):
        note("A is pid %s, B is pid %s: two processes (arenas are matched by index, "
             "so their figures compare only if the program behaves the same)"
             % (ta.get("pid"), tb.get("pid")))
    for name, doc in (("A", a), ("B", b)):
        if "size_classes" not in doc:
            note("%s has no size classes (a report saved by an older heapwalk)" % name)
        if "content_classes" not in doc:
            note("%s has only its top content classes (saved with --no-classes or by an "
                 "older heapwalk)" % name)
    if (a.get("nmt") is None) != (b.get("nmt") is None):
        note("only one of A and B has NMT figures")
    sizes = _keyed(a.get("size_classes") or [], b.get("size_classes") or [], "size",
                   COUNT_FIELDS, changed_only=True)
    growth = [{"size": r["size"], "count": r["delta"]["count"], "bytes": r["delta"]["bytes"],
               "a_count": r["a"]["count"], "b_count": r["b"]["count"]}
              for r in sizes if r["delta"]["count"] > 0]
    growth.sort(key=lambda r: (-r["bytes"], r["size"]))
    doc: Record = {
        "a": _source(path_a, kind_a, a),
        "b": _source(path_b, kind_b, b),
        "totals": _totals(a, b),
        "arenas": _arenas(a, b),
        "nmt": _keyed(_nmt_rows(a), _nmt_rows(b), "name", NMT_FIELDS)
        if (a.get("nmt") or b.get("nmt")) else None,
        "classes": _keyed(_classes(a), _classes(b), "name", COUNT_FIELDS, changed_only=True),
        "size_classes": sizes,
        "growth": growth,
        "mappings": _keyed(_groups(a), _groups(b), "label", ("regions", "mapped_bytes"),
                           changed_only=True),
        "verdict": {"a": [v.get("cause") for v in a.get("verdict") or []],
                    "b": [v.get("cause") for v in b.get("verdict") or []]},
        "diagnostics": notes,
    }
    pools = _allocator_rows(a, b)
    if pools is not None:
        doc["allocator"] = pools["allocator"]
        doc["allocator_pools"] = pools
        for name, kind in (("A", pools["a"]), ("B", pools["b"])):
            if kind is None:
                note("%s has no %s statistics (glibc owns its malloc, or a report saved "
                     "without allocator_pools)" % (name, pools["allocator"]))
        if pools["a"] and pools["b"] and pools["a"] != pools["b"]:
            note("A's malloc is %s, B's is %s" % (pools["a"], pools["b"]))
    doc["verdict"]["growth"] = growth_verdict(a, b, doc)
    return render.wrap("diff", doc)


# -- text -------------------------------------------------------------------------------------

def _sd(n: int) -> str:
    """Signed size."""
    if n == 0:
        return "0"
    return ("+" if n > 0 else "-") + render.size(abs(n))


def _sc(n: int) -> str:
    return "%+d" % n if n else "0"


def render_diff(doc: Record, style: Style = render.PLAIN) -> List[str]:
    """Text for ``diff``."""
    out = [style.paint("bold", "heapwalk diff: A = %s (%s), B = %s (%s)"
                       % (doc["a"]["path"], doc["a"]["kind"], doc["b"]["path"], doc["b"]["kind"]))]
    out.append("")
    out.append(style.paint("bold", "totals"))
    rows = []
    for t in doc["totals"]:
        plain = t["what"] in ("arenas", "threads", "64 MiB heaps")
        f = str if plain else render.size
        rows.append([t["what"], f(t["a"]), f(t["b"]), _sc(t["delta"]) if plain else _sd(t["delta"]),
                     "" if plain else str(t["delta"])])
    out.extend(render.table([Column("", "<"), Column("A"), Column("B"), Column("change"),
                             Column("bytes")], rows, style, indent="  "))
    arenas = [r for r in doc["arenas"] if any(r["delta"].values())]
    if arenas:
        out.append("")
        out.append(style.paint("bold", "arenas that changed") + " (%d of %d)"
                   % (len(arenas), len(doc["arenas"])))
        rows = [["#%s%s" % (r["index"], "" if r["in"] == "both" else " (only %s)" % r["in"].upper())]
                + [_sd(r["delta"][f]) for f in ARENA_FIELDS] + [render.size(r["b"]["in_use_bytes"])]
                for r in sorted(arenas, key=lambda r: (-abs(r["delta"]["in_use_bytes"]), r["index"]))[:TEXT_ROWS]]
        out.extend(render.table([Column("arena", "<"), Column("system"), Column("in use"),
                                 Column("free"), Column("trimmable"), Column("top"),
                                 Column("B in use")], rows, style, indent="  "))
    nmt = [r for r in doc.get("nmt") or [] if any(r["delta"].values())]
    if nmt:
        out.append("")
        out.append(style.paint("bold", "NMT categories that changed"))
        rows = [[r["name"], render.size(r["b"]["committed"]), _sd(r["delta"]["reserved"]),
                 _sd(r["delta"]["committed"]), _sd(r["delta"]["malloc"])]
                for r in sorted(nmt, key=lambda r: (-abs(r["delta"]["committed"]), r["name"]))[:TEXT_ROWS]]
        out.extend(render.table([Column("category", "<"), Column("B committed"),
                                 Column("reserved"), Column("committed"), Column("malloc")],
                                rows, style, indent="  "))
    if doc["growth"]:
        out.append("")
        out.append(style.paint("bold", "chunk sizes whose count grew") + " (by bytes grown)")
        rows = [[str(g["size"]), _sc(g["count"]), "%d -> %d" % (g["a_count"], g["b_count"]),
                 _sd(g["bytes"])] for g in doc["growth"][:TEXT_ROWS]]
        out.extend(render.table([Column("size"), Column("count"), Column("A -> B"),
                                 Column("bytes")], rows, style, indent="  "))
    shrunk = sorted([r for r in doc["size_classes"] if r["delta"]["count"] < 0],
                    key=lambda r: (r["delta"]["bytes"], r["size"]))
    if shrunk:
        out.append("  shrank: " + ", ".join(
            "size %d: %s chunks (%s)" % (r["size"], _sc(r["delta"]["count"]),
                                         _sd(r["delta"]["bytes"]))
            for r in shrunk[:6]))
    if doc["classes"]:
        out.append("")
        out.append(style.paint("bold", "content classes that changed"))
        cls = sorted(doc["classes"], key=lambda r: (-abs(r["delta"]["bytes"]), r["name"]))
        rows = [[r["name"], r.get("kind", ""), _sc(r["delta"]["count"]), _sd(r["delta"]["bytes"]),
                 render.size(r["b"]["bytes"])] for r in cls[:TEXT_ROWS]]
        out.extend(render.table([Column("class", "<"), Column("kind", "<"), Column("count"),
                                 Column("bytes"), Column("B bytes")], rows, style, indent="  "))
    if doc["mappings"]:
        out.append("")
        out.append(style.paint("bold", "mapping groups that changed"))
        maps = sorted(doc["mappings"], key=lambda r: (-abs(r["delta"]["mapped_bytes"]), r["label"]))
        rows = [[r["label"], _sc(r["delta"]["regions"]), _sd(r["delta"]["mapped_bytes"]),
                 render.size(r["b"]["mapped_bytes"])] for r in maps[:TEXT_ROWS]]
        out.extend(render.table([Column("group", "<"), Column("maps"), Column("mapped"),
                                 Column("B mapped")], rows, style, indent="  "))
    out.extend(_render_pools(doc.get("allocator_pools"), style))
    v = doc["verdict"]
    out.append("")
    out.append(style.paint("bold", "verdict") + " (what grew from A to B)")
    for i, f in enumerate(v.get("growth") or [], 1):
        out.append("  %d. %s" % (i, f["summary"]))
        if f.get("where"):
            out.append("     where: %s" % f["where"])
        if f.get("evidence"):
            out.append("     evidence: %s" % f["evidence"])
        out.append("     action: %s" % f["action"])
    out.append("  snapshot verdicts: A %s; B %s" % (", ".join(v["a"]) or "-", ", ".join(v["b"]) or "-"))
    return out


def _render_pools(pools: Optional[Record], style: Style) -> List[str]:
    """Each pool whose statistics changed: the main ones in the allocator's names."""
    if not pools:
        return []
    shown = POOL_TEXT_STATS.get(str(pools.get("allocator")), ())
    out: List[str] = []
    for p in pools.get("pools", []):
        keys = [k for k in shown if p["delta"].get(k)]
        if not keys:
            continue
        out.append("")
        out.append(style.paint("bold", "%s %s that changed" % (
            render.safe(pools.get("version") or pools.get("allocator")),
            render.safe(p.get("name") or "pool %s" % p.get("index"))))
                   + ("" if p.get("in") == "both" else " (only in %s)" % str(p.get("in")).upper()))
        rows = [[k, render.size(p["a"][k]), render.size(p["b"][k]), _sd(p["delta"][k])]
                for k in keys]
        out.extend(render.table([Column("statistic (exact in --json)", "<"), Column("A"),
                                 Column("B"), Column("change")], rows, style, indent="  "))
    return out


def inherited_diagnostics(name: str, doc: Record) -> List[Record]:
    """One diagnostic per kind of warning or error ``doc`` (snapshot ``name``) carries, so a
    diff built on an incomplete snapshot says so and exits 1 (its figures may be wrong)."""
    kinds = render.kind_severities()
    seen: Dict[str, List[Record]] = {}
    for d in doc.get("diagnostics") or []:
        if isinstance(d, dict) and render.severity(d, kinds) != "note":
            seen.setdefault(str(d.get("kind")), []).append(d)
    out = []
    for kind in sorted(seen):
        first = seen[kind][0]
        more = len(seen[kind]) - 1
        detail = "%s: %s%s" % (name, " ".join(str(first.get("detail", "")).split()),
                               " (and %d more)" % more if more else "")
        out.append({"kind": kind, "address": first.get("address"), "arena": first.get("arena"),
                    "detail": detail, "severity": render.severity(first, kinds)})
    return out


class Diff(Command):
    """``diff A B``."""

    name = "diff"
    summary = "what grew and shrank between two snapshots (cores or saved report --json)"
    description = ("Compare two snapshots of the same program — each a core file or a saved "
                   "'report --json' document — and show what grew and shrank: totals, each "
                   "arena (system, in use, free, trimmable, top), each NMT category "
                   "(reserved, committed, malloc), each content class, each in-use chunk size "
                   "(the sizes whose count grew, by bytes grown) and the mapping groups. "
                   "Usage: heapwalk diff A B, or heapwalk diff A --pid PID: a saved snapshot "
                   "against the live process now (B is a report of it, taken as 'report "
                   "--pid' takes one).")
    #: The CLI opens no target for this command: it reads its two files itself.
    needs_target = False

    def configure(self, parser: argparse.ArgumentParser) -> None:
        # The CLI gives every command a first positional CORE: that is A. gdb does not.
        if not any(a.dest == "core" for a in parser._actions):  # pylint: disable=protected-access
            parser.add_argument("a", metavar="A",
                                help="the earlier snapshot: a core or a saved 'report --json' file")
        parser.add_argument("b", metavar="B", nargs="?",
                            help="the later snapshot: a core or a saved 'report --json' file "
                                 "(A, the earlier one, is the first file); with --pid PID, "
                                 "B is the live process now")
        parser.add_argument("--no-classes", action="store_true",
                            help="for cores: skip the content classification (faster)")

    def collect(self, inv: Invocation) -> Record:
        args = inv.args
        pid = getattr(args, "pid", None)
        # With --pid the CLI moves its CORE word into B: A is whichever file was named.
        named = [p for p in (getattr(args, "core", None), getattr(args, "a", None), args.b) if p]
        if pid is not None:
            if len(named) != 1:
                raise UsageError("with --pid, diff takes one snapshot: heapwalk diff A --pid PID "
                                 "(A: a core or a saved 'report --json' document)")
            path_a, path_b = named[0], None
        elif len(named) != 2:
            raise UsageError("diff compares two snapshots: heapwalk diff A B, or heapwalk diff "
                             "A --pid PID (cores or saved 'report --json' documents)")
        else:
            path_a, path_b = named
        sysroot = getattr(args, "sysroot", None)
        classes = not getattr(args, "no_classes", False)
        for path in (path_a, path_b):
            if path is not None and not os.path.exists(path):
                raise HeapwalkError("no such file", subject=path)
        a, kind_a = _loaded(path_a, sysroot, classes)
        if path_b is None:
            b, kind_b = _live_report(args, classes), "live"
            path_b = "pid %d" % pid
        else:
            b, kind_b = _loaded(path_b, sysroot, classes)
        doc = compare(a, b, path_a, path_b, kind_a, kind_b)
        doc.setdefault("diagnostics", []).extend(
            inherited_diagnostics("A", a) + inherited_diagnostics("B", b))
        return doc

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render_diff(document, inv.style)

    def status(self, document: Record) -> int:
        return problem_status(document)
