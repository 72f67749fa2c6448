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

from . import render
from .commands import Command, Invocation
from .errors import HeapwalkError, UsageError
from .render import Column, Style

Record = Dict[str, Any]

#: Text output shows this many rows per table (JSON: all).
TEXT_ROWS = 12
ARENA_FIELDS = ("system_bytes", "in_use_bytes", "free_bytes", "trimmable_bytes", "top_bytes")
NMT_FIELDS = ("reserved", "committed", "malloc")
COUNT_FIELDS = ("count", "bytes")


# -- loading ----------------------------------------------------------------------------------

def _is_json(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head.startswith(b"{")


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
        if not isinstance(doc, dict) or doc.get("schema") != render.SCHEMA:
            raise HeapwalkError("unsupported report schema %r (this heapwalk reads %s)"
                                % (doc.get("schema") if isinstance(doc, dict) else None,
                                   render.SCHEMA), subject=path)
        if doc.get("command", "report") != "report" or "retention" not in doc:
            raise HeapwalkError("not a 'report --json' document (command %r)"
                                % doc.get("command"), subject=path,
                                hint="save one with 'heapwalk report CORE --json > FILE'")
        return doc, "report"
    import heapwalk  # pylint: disable=import-outside-toplevel
    from .cmd_report import build_report  # pylint: disable=import-outside-toplevel
    target = heapwalk.open_core(path, sysroot=sysroot)
    try:
        return build_report(target, classes=classes), "core"
    finally:
        target.close()


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
        out.append("  shrank: " + ", ".join("%d x%s (%s)" % (r["size"], _sc(r["delta"]["count"]),
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
    v = doc["verdict"]
    out.append("")
    out.append("verdict: A %s; B %s" % (", ".join(v["a"]) or "-", ", ".join(v["b"]) or "-"))
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
                   "Usage: heapwalk diff A B.")
    #: The CLI opens no target for this command: it reads its two files itself.
    needs_target = False

    def configure(self, parser: argparse.ArgumentParser) -> None:
        # The CLI gives every command a first positional CORE: that is A. gdb does not.
        if not any(a.dest == "core" for a in parser._actions):  # pylint: disable=protected-access
            parser.add_argument("a", metavar="A",
                                help="the earlier snapshot: a core or a saved 'report --json' file")
        parser.add_argument("b", metavar="B",
                            help="the later snapshot: a core or a saved 'report --json' file "
                                 "(A, the earlier one, is the first file)")
        parser.add_argument("--no-classes", action="store_true",
                            help="for cores: skip the content classification (faster)")

    def collect(self, inv: Invocation) -> Record:
        args = inv.args
        path_a = getattr(args, "core", None) or getattr(args, "a", None)
        path_b = args.b
        if getattr(args, "pid", None) is not None or not path_a:
            raise UsageError("diff compares two files: heapwalk diff A B (cores or saved "
                             "'report --json' documents)")
        sysroot = getattr(args, "sysroot", None)
        classes = not getattr(args, "no_classes", False)
        for path in (path_a, path_b):
            if not os.path.exists(path):
                raise HeapwalkError("no such file", subject=path)
        a, kind_a = load(path_a, sysroot, classes)
        b, kind_b = load(path_b, sysroot, classes)
        return compare(a, b, path_a, path_b, kind_a, kind_b)

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render_diff(document, inv.style)

    def status(self, document: Record) -> int:
        return 0
