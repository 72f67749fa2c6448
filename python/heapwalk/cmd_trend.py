"""``trend DIR``: the series of snapshots ``heapwalk watch`` kept, as one table and a chart.

DIR holds what ``watch`` writes: ``snap-NNNNNN.json`` (each a ``report --json`` document plus a
top-level ``"watch"`` key: seq, time, reason, the memory sample taken with it, the freeze, the
core file if any), ``samples.jsonl`` (the frequent samples between snapshots) and
``watch.json`` (the watcher's metadata, with ``"death"`` once the target died). Instead of DIR a
list of saved ``report --json`` files is accepted (``trend A.json B.json C.json``); without a
``watch`` key a file's modification time stands for its time.

Shown per snapshot: the time (relative to the first, and absolute UTC), why it was taken, RSS,
the cgroup's usage against its limit, glibc's in use / free / trimmable totals (per arena in
JSON and HTML), NMT committed per category and the in-use malloc NMT does not track (a JVM);
then the fastest growing in-use chunk sizes and content classes from the first to the last
snapshot, with their growth per hour. ``--jsonl`` prints one flat JSON object per snapshot
(for DuckDB ``read_json_auto``, Spark ``read.json``), ``--html FILE`` writes a self-contained
page with line charts, ``--json`` the series document (``command: "trend"``).

Nothing here raises on a bad snapshot: a file that does not parse, or is not a report, is
skipped with a note; a truncated last line of ``samples.jsonl`` (the watcher was killed) is
skipped, counted in a note.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from . import render
from .commands import Command, Invocation
from .errors import HeapwalkError, UsageError
from .render import Column, Style

Record = Dict[str, Any]

SNAPSHOT_NAME = re.compile(r"^snap-(\d+)\.json$")
SAMPLES_FILE = "samples.jsonl"
WATCH_FILE = "watch.json"
#: Rows of the "fastest growing" tables in text (``--top``); JSON/HTML keep up to GROWTH_KEEP.
DEFAULT_TOP = 8
GROWTH_KEEP = 100
#: Snapshots shown as rows in text (``--rows``; evenly spaced, first and last always).
DEFAULT_ROWS = 40
#: NMT categories shown as columns in text (those that grew most).
TEXT_NMT_COLUMNS = 4
TEXT_WIDTH = 80
#: Short headers for NMT categories in the text table (others are clipped to 10 characters).
NMT_SHORT = {"Native Memory Tracking": "NMT", "Shared class space": "CDS",
             "Arena Chunk": "Arena", "Synchronization": "Sync", "Serviceability": "Svc",
             "String Deduplication": "StrDedup", "Object Monitors": "Monitors"}
HOUR = 3600.0


# -- small helpers ----------------------------------------------------------------------------

def _num(value: Any) -> Optional[int]:
    """An int field, or None (bools and floats from a bad document are not byte counts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _get(doc: Any, *path: str) -> Any:
    cur = doc
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _note(text: str) -> Record:
    return {"kind": "note", "address": None, "arena": None, "detail": text}


def snake(name: str) -> str:
    """``Java Heap`` -> ``java_heap`` (NMT category names as JSON Lines keys)."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or "unnamed"


def short_size(nbytes: Optional[int]) -> str:
    """A size in at most 6 characters for the 80-column table: ``812K``, ``5.12G``, ``-3.1M``."""
    if nbytes is None:
        return "-"
    sign = "-" if nbytes < 0 else ""
    n = abs(nbytes)
    if n < 1024:
        return "%s%dB" % (sign, n)
    value = float(n)
    for unit in "KMGTP":
        value /= 1024.0
        if value < 1000.0 or unit == "P":
            break
    if value >= 100:
        text = "%d" % round(value)
    elif value >= 10:
        text = "%.1f" % value
    else:
        text = "%.2f" % value
    return "%s%s%s" % (sign, text, unit)


def signed_size(nbytes: Optional[int]) -> str:
    if nbytes is None:
        return "-"
    return ("+" if nbytes > 0 else "") + short_size(nbytes)


def duration(seconds: Optional[float]) -> str:
    """``45s``, ``12m03s``, ``3h04m``, ``2d03h``."""
    if seconds is None:
        return "-"
    s = int(round(abs(seconds)))
    sign = "-" if seconds < 0 else ""
    if s < 60:
        return "%s%ds" % (sign, s)
    if s < 3600:
        return "%s%dm%02ds" % (sign, s // 60, s % 60)
    if s < 86400:
        return "%s%dh%02dm" % (sign, s // 3600, (s % 3600) // 60)
    return "%s%dd%02dh" % (sign, s // 86400, (s % 86400) // 3600)


def rel(seconds: Optional[float]) -> str:
    """Time since the first snapshot: ``+12m03s``, ``-3s`` (a sample taken before it)."""
    if seconds is None:
        return "-"
    return ("-" if seconds < 0 else "+") + duration(abs(seconds))


def utc(t: Optional[float], fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if t is None:
        return "-"
    return time.strftime(fmt, time.gmtime(t))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 3, 1)] + "..."


# -- loading ----------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """One loaded snapshot: its report document and the watcher's record of it."""

    path: str
    doc: Record
    watch: Optional[Record]
    seq: int
    time: Optional[float]


def _read_json(path: str) -> Tuple[Optional[Any], Optional[str]]:
    """(document, None) or (None, why it could not be read)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f), None
    except json.JSONDecodeError as exc:
        return None, "not JSON (line %d column %d)" % (exc.lineno, exc.colno)
    except UnicodeDecodeError:
        return None, "not JSON (not UTF-8 text)"
    except ValueError as exc:
        return None, "not JSON (%s)" % " ".join(str(exc).split())
    except OSError as exc:
        return None, exc.strerror or str(exc)


def _snapshot(path: str, position: int, notes: List[Record]) -> Optional[Snapshot]:
    name = os.path.basename(path)
    doc, why = _read_json(path)
    if why is None:
        if not isinstance(doc, dict) or doc.get("schema") != render.SCHEMA:
            why = "not a heapwalk/1 document"
        elif doc.get("command", "report") != "report" or not isinstance(doc.get("retention"),
                                                                         dict):
            why = "not a 'report --json' document (command %r)" % doc.get("command")
    if why is not None:
        notes.append(_note("%s: skipped: %s" % (name, why)))
        return None
    assert isinstance(doc, dict)
    watch = doc.get("watch") if isinstance(doc.get("watch"), dict) else None
    doc = slim(doc)
    seq = _num(_get(watch, "seq"))
    if seq is None:
        m = SNAPSHOT_NAME.match(name)
        seq = int(m.group(1)) if m else position
    t = _float(_get(watch, "time"))
    if t is None:
        t = _float(_get(watch, "sample", "time"))
    if t is None:
        try:
            t = os.stat(path).st_mtime
        except OSError:
            t = None
    return Snapshot(path, doc, watch, seq, t)


def _pick(record: Any, keys: Iterable[str]) -> Any:
    if not isinstance(record, dict):
        return record
    return {k: record[k] for k in keys if k in record}


def _pick_rows(rows: Any, keys: Iterable[str]) -> Any:
    if not isinstance(rows, list):
        return rows
    keys = tuple(keys)
    return [_pick(r, keys) for r in rows]


def slim(doc: Record) -> Record:
    """The parts of a report document the series uses (a long series holds one per snapshot
    in memory: the mapping groups, heaps, residency, NMT's raw tables and the class examples
    are left out)."""
    out: Record = {k: doc[k] for k in ("schema", "command") if k in doc}
    out["target"] = _pick(doc.get("target"), ("kind", "pid", "path", "frozen_seconds"))
    ret = doc.get("retention")
    out["retention"] = dict(_pick(ret, [f for _, (top, f) in GLIBC_FIELDS if top == "retention"]),
                            arenas=_pick_rows(_get(ret, "arenas"),
                                              ("index", "main") + ARENA_FIELDS))
    for key in ("glibc", "pressure"):
        out[key] = _pick(doc.get(key), [f for _, (top, f) in GLIBC_FIELDS if top == key])
    out["mappings"] = _pick(doc.get("mappings"), ("mapped_bytes", "resident_bytes"))
    nmt = doc.get("nmt")
    out["nmt"] = None if not isinstance(nmt, dict) else dict(
        _pick(nmt, ("level", "total_reserved", "total_committed", "malloc_bytes",
                    "untracked_malloc")),
        categories=_pick_rows(_get(nmt, "categories"),
                              ("name", "reserved", "committed", "malloc")))
    for key in ("size_classes", "content_classes", "classes"):
        if key in doc and (key != "classes" or "content_classes" not in doc):
            out[key] = _pick_rows(doc[key], ("size", "name", "kind", "count", "bytes"))
    out["verdict"] = _pick_rows(doc.get("verdict"), ("cause",))
    return out


#: One sample as kept in memory (days of samples every second are millions of lines):
#: (time, rss, rss anon, rss file, cgroup usage, cgroup limit, cgroup oom_kill).
Sample = Tuple[float, Optional[int], Optional[int], Optional[int], Optional[int],
               Optional[int], Optional[int]]
#: The trend document carries at most this many samples (the largest RSS and usage of each
#: stretch of time kept); samples.jsonl has them all, samples_summary covers them all.
MAX_DOC_SAMPLES = 6000


def _compact(rec: Record) -> Sample:
    cg = rec.get("cgroup") if isinstance(rec.get("cgroup"), dict) else {}
    return (float(rec["time"]), _num(rec.get("rss_bytes")), _num(rec.get("rss_anon_bytes")),
            _num(rec.get("rss_file_bytes")), _num(cg.get("usage_bytes")),
            _num(cg.get("limit_bytes")), _num(cg.get("oom_kill")))


def read_samples(path: str) -> Tuple[List[Sample], int]:
    """The samples of ``samples.jsonl`` sorted by time, and how many lines were skipped
    (a line that does not parse, e.g. the last one of a killed watcher, or has no time)."""
    out: List[Sample] = []
    skipped = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                skipped += 1
                continue
            if not isinstance(rec, dict) or _float(rec.get("time")) is None:
                skipped += 1
                continue
            out.append(_compact(rec))
    out.sort(key=lambda r: r[0])
    return out, skipped


def thin_samples(samples: List[Sample], cap: int = MAX_DOC_SAMPLES) -> List[Sample]:
    """At most ``cap`` samples: per stretch of time the ones with the lowest and highest RSS
    and the highest cgroup usage (peaks survive), in time order."""
    if len(samples) <= cap:
        return samples
    buckets = max(cap // 3, 1)
    t0, t1 = samples[0][0], samples[-1][0]
    span = (t1 - t0) or 1.0
    out: List[Sample] = []
    group: List[Sample] = []

    def flush() -> None:
        keep = {min(group, key=lambda s: (s[1] is None, s[1] or 0)),
                max(group, key=lambda s: s[1] or 0), max(group, key=lambda s: s[4] or 0)}
        out.extend(sorted(keep, key=lambda s: s[0]))

    index = 0
    for smp in samples:
        b = min(int((smp[0] - t0) / span * buckets), buckets - 1)
        if b != index and group:
            flush()
            group = []
        index = b
        group.append(smp)
    if group:
        flush()
    return out


@dataclass
class Series:
    """What ``trend`` read: the snapshots (sorted by seq), the samples, watch.json."""

    source: Record
    snapshots: List[Snapshot]
    samples: List[Sample]
    watch: Optional[Record]
    notes: List[Record]


def load_series(paths: Sequence[str]) -> Series:
    """Read DIR (one directory) or a list of snapshot files. Raises HeapwalkError when nothing
    usable is found."""
    notes: List[Record] = []
    samples: List[Sample] = []
    watch: Optional[Record] = None
    if not paths:
        raise UsageError("give a snapshot directory (or snapshot files): heapwalk trend DIR")
    for p in paths:
        if not os.path.exists(p):
            raise HeapwalkError("no such file or directory", subject=p)
    if len(paths) == 1 and os.path.isdir(paths[0]):
        directory = paths[0]
        try:
            names = sorted(n for n in os.listdir(directory) if SNAPSHOT_NAME.match(n))
        except OSError as exc:
            raise HeapwalkError(exc.strerror or str(exc), subject=directory) from None
        files = [os.path.join(directory, n) for n in names]
        source: Record = {"dir": directory, "files": names}
        sp = os.path.join(directory, SAMPLES_FILE)
        if os.path.isfile(sp):
            try:
                samples, skipped = read_samples(sp)
            except OSError as exc:
                samples, skipped = [], 0
                notes.append(_note("%s: not read: %s" % (SAMPLES_FILE, exc.strerror or exc)))
            if skipped:
                notes.append(_note("%s: skipped %d line%s that did not parse (cut short "
                                   "by a kill?)"
                                   % (SAMPLES_FILE, skipped, "" if skipped == 1 else "s")))
        wp = os.path.join(directory, WATCH_FILE)
        if os.path.isfile(wp):
            got, why = _read_json(wp)
            if why is None and isinstance(got, dict):
                watch = got
            else:
                notes.append(_note("%s: skipped: %s" % (WATCH_FILE, why or "not an object")))
        if not files:
            raise HeapwalkError("no snapshots (snap-NNNNNN.json) in this directory",
                                subject=directory,
                                hint="'heapwalk watch --pid PID -o DIR' writes them")
    else:
        for p in paths:
            if os.path.isdir(p):
                raise HeapwalkError("is a directory: give one DIR, or snapshot files",
                                    subject=p)
        files = list(paths)
        source = {"dir": None, "files": files}
    snaps = [s for s in (_snapshot(p, i + 1, notes) for i, p in enumerate(files))
             if s is not None]
    if not snaps:
        raise HeapwalkError("no snapshot could be read (%d skipped)" % len(files),
                            subject=source["dir"] or files[0],
                            hint="each must be a 'heapwalk report --json' document")
    if all(s.watch is not None and _num(s.watch.get("seq")) is not None for s in snaps) \
            or source["dir"] is not None:
        snaps.sort(key=lambda s: (s.seq, s.path))
    if any(s.watch is None for s in snaps):
        notes.append(_note("%d snapshot%s without a 'watch' record: the file's modification "
                           "time stands for its time" % (
                               sum(1 for s in snaps if s.watch is None),
                               "" if sum(1 for s in snaps if s.watch is None) == 1 else "s")))
    pids = sorted({p for p in (_num(_get(s.doc, "target", "pid")) for s in snaps)
                   if p is not None})
    if len(pids) > 1:
        notes.append(_note("the snapshots are of %d processes (pids %s): a restarted target "
                           "starts its figures again" % (len(pids),
                                                         ", ".join(map(str, pids)))))
    return Series(source, snaps, samples, watch, notes)


# -- the series ------------------------------------------------------------------------------

GLIBC_FIELDS = (("in_use_bytes", ("retention", "in_use_bytes")),
                ("free_bytes", ("retention", "free_bytes")),
                ("trimmable_bytes", ("retention", "trimmable_bytes")),
                ("tcache_bytes", ("retention", "tcache_bytes")),
                ("top_bytes", ("retention", "top_bytes")),
                ("fragment_bytes", ("retention", "fragment_bytes")),
                ("system_bytes", ("glibc", "system_bytes")),
                ("mmapped_bytes", ("glibc", "mmapped_bytes")),
                ("arenas", ("pressure", "arenas")),
                ("threads", ("pressure", "threads")))
ARENA_FIELDS = ("system_bytes", "in_use_bytes", "free_bytes", "trimmable_bytes", "top_bytes")


def _cgroup(sample: Optional[Record]) -> Optional[Record]:
    cg = _get(sample, "cgroup")
    if not isinstance(cg, dict):
        return None
    pressure = cg.get("pressure") if isinstance(cg.get("pressure"), dict) else None
    return {"path": cg.get("path"), "version": _num(cg.get("version")),
            "usage_bytes": _num(cg.get("usage_bytes")),
            "limit_bytes": _num(cg.get("limit_bytes")),
            "high_bytes": _num(cg.get("high_bytes")),
            "oom_kill": _num(cg.get("oom_kill")),
            "pressure": None if pressure is None else {
                "some_avg10": _float(pressure.get("some_avg10")),
                "full_avg10": _float(pressure.get("full_avg10"))}}


def _percent(usage: Optional[int], limit: Optional[int]) -> Optional[float]:
    if usage is None or not limit:
        return None
    return round(100.0 * usage / limit, 2)


def _nmt(doc: Record) -> Optional[Record]:
    nmt = doc.get("nmt")
    if not isinstance(nmt, dict):
        return None
    cats = []
    for c in nmt.get("categories") or []:
        if not isinstance(c, dict):
            continue
        m = c.get("malloc")
        if not isinstance(c.get("name"), str):
            continue
        cats.append({"name": c.get("name"), "reserved": _num(c.get("reserved")),
                     "committed": _num(c.get("committed")),
                     "malloc": _num(m.get("bytes")) if isinstance(m, dict) else _num(m)})
    return {"level": nmt.get("level"), "reserved_bytes": _num(nmt.get("total_reserved")),
            "committed_bytes": _num(nmt.get("total_committed")),
            "malloc_bytes": _num(nmt.get("malloc_bytes")), "categories": cats}


def point(snap: Snapshot, t0: Optional[float]) -> Record:
    """The figures of one snapshot (one row of the series)."""
    doc, watch = snap.doc, snap.watch or {}
    sample = watch.get("sample") if isinstance(watch.get("sample"), dict) else None
    rss = _num(_get(sample, "rss_bytes"))
    rss_source = "sample" if rss is not None else None
    if rss is None and _num(_get(doc, "mappings", "resident_bytes")) is not None:
        rss, rss_source = _num(_get(doc, "mappings", "resident_bytes")), "smaps"
    cg = _cgroup(sample)
    untracked = _get(doc, "nmt", "untracked_malloc")
    arenas = []
    for a in _get(doc, "retention", "arenas") or []:
        if isinstance(a, dict):
            row: Record = {"index": _num(a.get("index")), "main": bool(a.get("main"))}
            row.update({f: _num(a.get(f)) for f in ARENA_FIELDS})
            arenas.append(row)
    arenas.sort(key=lambda a: (a["index"] is None, a["index"] or 0))
    return {
        "seq": snap.seq,
        "file": os.path.basename(snap.path),
        "time": snap.time,
        "elapsed_seconds": None if snap.time is None or t0 is None
        else round(snap.time - t0, 3),
        "reason": None if watch.get("reason") is None else str(watch.get("reason")),
        "pid": _num(_get(doc, "target", "pid")),
        "frozen_seconds": _float(watch.get("frozen_seconds"))
        if watch.get("frozen_seconds") is not None
        else _float(_get(doc, "target", "frozen_seconds")),
        "core": watch.get("core") if isinstance(watch.get("core"), str) else None,
        "snapshot_seconds": _float(watch.get("snapshot_seconds")),
        "rss_bytes": rss,
        "rss_source": rss_source,
        "rss_anon_bytes": _num(_get(sample, "rss_anon_bytes")),
        "rss_file_bytes": _num(_get(sample, "rss_file_bytes")),
        "cgroup": cg,
        "cgroup_usage_percent": _percent(_get(cg, "usage_bytes"), _get(cg, "limit_bytes")),
        "mapped_bytes": _num(_get(doc, "mappings", "mapped_bytes")),
        "resident_bytes": _num(_get(doc, "mappings", "resident_bytes")),
        "glibc": {k: _num(_get(doc, *path)) for k, path in GLIBC_FIELDS},
        "arenas": arenas,
        "nmt": _nmt(doc),
        "untracked_bytes": _num(untracked.get("bytes")) if isinstance(untracked, dict) else None,
        "untracked_count": _num(untracked.get("count")) if isinstance(untracked, dict) else None,
        "verdict": [v.get("cause") for v in doc.get("verdict") or [] if isinstance(v, dict)],
        "has_size_classes": isinstance(doc.get("size_classes"), list),
    }


def _by_key(rows: Any, key: str) -> Dict[Any, Record]:
    """Rows by ``key``; rows whose key is not a plain int or str (a bad document) are left
    out."""
    return {r.get(key): r for r in rows or []
            if isinstance(r, dict) and isinstance(r.get(key), (int, str))
            and not isinstance(r.get(key), bool)}


def _classes(doc: Record) -> Optional[List[Record]]:
    got = doc.get("content_classes")
    if not isinstance(got, list):
        got = doc.get("classes")
    return [c for c in got if isinstance(c, dict)] if isinstance(got, list) else None


def _rate(delta: int, hours: Optional[float]) -> Optional[float]:
    return None if not hours else round(delta / hours, 1)


def growth(snaps: Sequence[Snapshot], keep: int = GROWTH_KEEP) -> Record:
    """The in-use chunk sizes and content classes whose bytes grew most from the first to the
    last snapshot: count and bytes growth, per hour, and the count at every snapshot."""
    first, last = snaps[0], snaps[-1]
    hours = None
    if first.time is not None and last.time is not None and last.time > first.time:
        hours = (last.time - first.time) / HOUR

    def rows(key: str, get: Any, extra: Iterable[str]) -> List[Record]:
        per = [_by_key(get(s.doc), key) if isinstance(get(s.doc), list) else None
               for s in snaps]
        a, b = per[0] or {}, per[-1] or {}
        out = []
        for k in set(a) | set(b):
            if k is None:
                continue
            ra, rb = a.get(k) or {}, b.get(k) or {}
            ca, cb = _num(ra.get("count")) or 0, _num(rb.get("count")) or 0
            ba, bb = _num(ra.get("bytes")) or 0, _num(rb.get("bytes")) or 0
            if bb - ba <= 0:
                continue
            row: Record = {key: k}
            for e in extra:
                row[e] = (rb or ra).get(e)
            row.update({"count": cb - ca, "bytes": bb - ba, "first_count": ca,
                        "last_count": cb, "first_bytes": ba, "last_bytes": bb,
                        "count_per_hour": _rate(cb - ca, hours),
                        "bytes_per_hour": _rate(bb - ba, hours),
                        "counts": [None if p is None else _num((p.get(k) or {}).get("count"))
                                   or 0 for p in per]})
            out.append(row)
        out.sort(key=lambda r: (-r["bytes"], str(r[key])))
        return out[:keep]

    have_sizes = all(isinstance(s.doc.get("size_classes"), list) for s in (first, last))
    sizes = rows("size", lambda d: d.get("size_classes"), ()) if have_sizes else []
    classes = rows("name", _classes, ("kind",))
    return {"from_seq": first.seq, "to_seq": last.seq,
            "hours": None if hours is None else round(hours, 6),
            "sizes": sizes, "classes": classes}


def _categories(points: Sequence[Record]) -> List[str]:
    """NMT category names, those that grew most (committed, first to last) first."""
    first: Dict[str, int] = {}
    last: Dict[str, int] = {}
    for p in points:
        for c in (p.get("nmt") or {}).get("categories") or []:
            name = c.get("name")
            if name is None:
                continue
            first.setdefault(name, c.get("committed") or 0)
            last[name] = c.get("committed") or 0
    return sorted(last, key=lambda n: (-(last[n] - first.get(n, 0)), -last[n], n))


def _sample_point(s: Sample, t0: Optional[float]) -> Record:
    t, rss, anon, file, usage, limit, oom = s
    return {"time": t, "elapsed_seconds": None if t0 is None else round(t - t0, 3),
            "rss_bytes": rss, "rss_anon_bytes": anon, "rss_file_bytes": file,
            "cgroup_usage_bytes": usage, "cgroup_limit_bytes": limit,
            "cgroup_usage_percent": _percent(usage, limit), "cgroup_oom_kill": oom}


def _samples_summary(samples: Sequence[Sample], kept: int) -> Optional[Record]:
    if not samples:
        return None
    rss = [s[1] for s in samples if s[1] is not None]
    use = [s for s in samples if s[4] is not None]
    top = max(use, key=lambda s: s[4] or 0) if use else None
    span = samples[-1][0] - samples[0][0]
    return {"count": len(samples), "in_document": kept, "first_time": samples[0][0],
            "last_time": samples[-1][0],
            "interval_seconds": round(span / (len(samples) - 1), 3) if len(samples) > 1
            else None,
            "rss_first_bytes": rss[0] if rss else None, "rss_last_bytes": rss[-1] if rss else None,
            "rss_max_bytes": max(rss) if rss else None,
            "cgroup_usage_max_bytes": top[4] if top else None,
            "cgroup_usage_max_percent": _percent(top[4], top[5]) if top else None}


def build_trend(series: Series) -> Record:
    """The ``trend`` document."""
    snaps = series.snapshots
    t0 = snaps[0].time
    points = [point(s, t0) for s in snaps]
    kept = thin_samples(series.samples)
    samples = [_sample_point(s, t0) for s in kept]
    notes = list(series.notes)
    if len(snaps) == 1:
        notes.append(_note("one snapshot: nothing to compare it with (growth needs two)"))
    missing = [s.seq for s in (snaps[0], snaps[-1]) if not isinstance(s.doc.get("size_classes"),
                                                                       list)]
    if len(snaps) > 1 and missing:
        notes.append(_note("snapshot %s has no size classes (saved by an older heapwalk): no "
                           "chunk-size growth" % ", ".join(map(str, missing))))
    seqs = [s.seq for s in snaps]
    gaps = sum(1 for a, b in zip(seqs, seqs[1:]) if b - a > 1)
    watch = series.watch
    doc: Record = {
        "source": dict(series.source, samples_file=SAMPLES_FILE if series.samples else None),
        "target": {k: _get(snaps[-1].doc, "target", k) for k in ("kind", "pid", "path")},
        "watch": None if watch is None else {k: v for k, v in watch.items() if k != "death"},
        "snapshot_count": len(snaps),
        "seq_gaps": gaps,
        "first_time": t0,
        "last_time": snaps[-1].time,
        "nmt_categories": _categories(points),
        "snapshots": points,
        "samples": samples,
        "samples_summary": _samples_summary(series.samples, len(samples)),
        "growth": growth(snaps) if len(snaps) > 1 else {
            "from_seq": snaps[0].seq, "to_seq": snaps[0].seq, "hours": None, "sizes": [],
            "classes": []},
        "death": watch.get("death") if isinstance(watch, dict) else None,
        "diagnostics": notes,
    }
    return render.wrap("trend", doc)


# -- JSON Lines -------------------------------------------------------------------------------

def jsonl_rows(doc: Record) -> List[Record]:
    """One flat object per snapshot; every line has the same keys (null when absent), so
    ``read_json_auto`` infers one schema."""
    cats = doc.get("nmt_categories") or []
    source = doc.get("source") or {}
    out = []
    for p in doc["snapshots"]:
        cg = p.get("cgroup") or {}
        pressure = cg.get("pressure") or {}
        nmt = p.get("nmt") or {}
        committed = {c.get("name"): c.get("committed") for c in nmt.get("categories") or []}
        row: Record = {
            "dir": source.get("dir"), "file": p["file"], "seq": p["seq"], "time": p["time"],
            "elapsed_seconds": p["elapsed_seconds"], "reason": p["reason"], "pid": p["pid"],
            "frozen_seconds": p["frozen_seconds"], "core": p["core"],
            "rss_bytes": p["rss_bytes"], "rss_anon_bytes": p["rss_anon_bytes"],
            "rss_file_bytes": p["rss_file_bytes"],
            "cgroup_path": cg.get("path"), "cgroup_version": cg.get("version"),
            "cgroup_usage_bytes": cg.get("usage_bytes"),
            "cgroup_limit_bytes": cg.get("limit_bytes"),
            "cgroup_high_bytes": cg.get("high_bytes"),
            "cgroup_usage_percent": p["cgroup_usage_percent"],
            "cgroup_oom_kill": cg.get("oom_kill"),
            "cgroup_pressure_some_avg10": pressure.get("some_avg10"),
            "cgroup_pressure_full_avg10": pressure.get("full_avg10"),
            "mapped_bytes": p["mapped_bytes"], "resident_bytes": p["resident_bytes"],
        }
        for k, v in p["glibc"].items():
            row["glibc_" + k] = v
        row["arenas"] = [dict(a) for a in p["arenas"]]
        row["nmt_reserved_bytes"] = nmt.get("reserved_bytes")
        row["nmt_committed_bytes"] = nmt.get("committed_bytes")
        row["nmt_malloc_bytes"] = nmt.get("malloc_bytes")
        for name in sorted(cats, key=snake):
            row["nmt_%s_committed_bytes" % snake(name)] = committed.get(name)
        row["untracked_bytes"] = p["untracked_bytes"]
        row["untracked_count"] = p["untracked_count"]
        row["verdict"] = list(p["verdict"])
        out.append(row)
    return out


def render_jsonl(doc: Record) -> List[str]:
    return [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in jsonl_rows(doc)]


# -- text -------------------------------------------------------------------------------------

def _reason(text: Any) -> str:
    r = str(text or "-")
    r = re.sub(r"^threshold\s*", ">", r)
    return _clip(r, 9)


def death_lines(death: Any, first: Optional[float]) -> List[str]:
    """How the target ended, from watch.json's ``death`` (the keys ``watch`` writes: signal,
    signal_name, exit_code, oom_killed, oom_kill_before/after, last_usage_bytes, limit_bytes,
    kernel_log, time)."""
    if not isinstance(death, dict):
        return []
    sig = _num(death.get("signal"))
    before, after = _num(death.get("oom_kill_before")), _num(death.get("oom_kill_after"))
    counter = ("oom_kill %d -> %d" % (before, after)
               if before is not None and after is not None else None)
    if sig:
        how = "killed by %s" % (death.get("signal_name") or "signal %d" % sig)
        if death.get("oom_killed"):
            how += " (the OOM killer%s)" % (": " + counter if counter else "")
    elif _num(death.get("exit_code")) is not None:
        how = "exited with status %d" % death["exit_code"]
    else:
        how = "ended (how is unknown%s)" % ("; " + counter if counter else "")
    out = [_clip("target died: " + how, TEXT_WIDTH)]
    t = _float(death.get("time"))
    if t is not None:
        out.append("  at %s UTC%s" % (utc(t), "" if first is None else
                                      " (+%s after the first snapshot)" % duration(t - first)))
    usage, limit = _num(death.get("last_usage_bytes")), _num(death.get("limit_bytes"))
    if usage and limit:
        out.append("  last usage %s of the %s limit (%.1f %%)"
                   % (render.size(usage), render.size(limit), 100.0 * usage / limit))
    if isinstance(death.get("kernel_log"), str) and death["kernel_log"]:
        out.append(_clip("  kernel: " + " ".join(death["kernel_log"].split()), TEXT_WIDTH))
    return out


def fit_table(cols: List[Column], rows: List[List[str]], style: Style,
              droppable: Sequence[int]) -> List[str]:
    """``render.table`` within TEXT_WIDTH: the columns of ``droppable`` (indices, in the
    order they go) are left out while a line is too wide."""
    gone: List[int] = []
    while True:
        keep = [i for i in range(len(cols)) if i not in gone]
        lines = render.table([cols[i] for i in keep], [[r[i] for i in keep] for r in rows],
                             style)
        if all(render.visible_len(line) <= TEXT_WIDTH for line in lines) \
                or len(gone) == len(droppable):
            return lines
        gone.append(droppable[len(gone)])


def _spread(items: Sequence[int], n: int) -> List[int]:  # (a range too)
    """``n`` of ``items`` evenly spaced, the first and the last included."""
    if n >= len(items):
        return list(items)
    if n <= 1:
        return [items[-1]][:n]
    return sorted({items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)})


def shown(reasons: Sequence[Any], rows: int) -> List[int]:
    """Indices of the snapshots shown in text: all of them up to ``rows`` (0 = all); else the
    first, the last and those whose reason differs from the one before (a threshold crossed),
    then evenly spaced others up to ``rows``."""
    count = len(reasons)
    if rows <= 0 or count <= rows:
        return list(range(count))
    key = [0] + [i for i in range(1, count) if reasons[i] != reasons[i - 1]] + [count - 1]
    chosen = set(_spread(sorted(set(key)), rows))
    for i in _spread(range(count), rows):
        if len(chosen) >= rows:
            break
        chosen.add(i)
    return sorted(chosen)


def render_trend(doc: Record, style: Style = render.PLAIN, top: int = DEFAULT_TOP,
                 rows_shown: int = DEFAULT_ROWS) -> List[str]:
    """Text for ``trend`` (80 columns)."""
    every = doc["snapshots"]
    pts = [every[i] for i in shown([p.get("reason") for p in every], rows_shown)]
    src = doc.get("source") or {}
    where = src.get("dir") or "%d files" % len(src.get("files") or [])
    pid = (doc.get("target") or {}).get("pid")
    first, last = doc.get("first_time"), doc.get("last_time")
    span = None if first is None or last is None else last - first
    head = "heapwalk trend: %s" % where
    out = [style.paint("bold", _clip(head, TEXT_WIDTH))]
    gaps = doc.get("seq_gaps") or 0
    out.append("%s, seq %s-%s%s%s" % (render.plural(len(every), "snapshot"), pts[0]["seq"],
                                      pts[-1]["seq"],
                                      " (%s)" % render.plural(gaps, "gap") if gaps else "",
                                      "" if pid is None else ", pid %s" % pid))
    out.append("first %s UTC, last %s (+%s)" % (utc(first), utc(last, "%H:%M:%S")
                                                if first is not None and last is not None
                                                and int(first // 86400) == int(last // 86400)
                                                else utc(last), duration(span)))
    cgs = [p["cgroup"] for p in pts if p.get("cgroup")]
    limits = sorted({c["limit_bytes"] for c in cgs if c.get("limit_bytes")})
    if cgs:
        lim = ("limit " + ", ".join(render.size(x) for x in limits)) if limits else "no limit"
        out.append(_clip("cgroup %s (v%s): %s" % (cgs[-1].get("path"), cgs[-1].get("version"),
                                                 lim), TEXT_WIDTH))
    out.append("")
    same_day = first is not None and last is not None and int(first // 86400) == int(last // 86400)
    fmt = "%H:%M:%S" if same_day else "%m-%d %H:%M"
    cols = [Column("seq"), Column("time (UTC)" if same_day else "UTC", "<"),
            Column("+time", "<"), Column("reason", "<"), Column("RSS")]
    if cgs:
        cols += [Column("cgroup"), Column("%lim")]
    cols += [Column("in use"), Column("free"), Column("trim")]
    rows = []
    for p in pts:
        row = [str(p["seq"]), utc(p["time"], fmt), rel(p["elapsed_seconds"]),
               _reason(p["reason"]), short_size(p["rss_bytes"])]
        if cgs:
            cg = p.get("cgroup") or {}
            pct = p.get("cgroup_usage_percent")
            row += [short_size(cg.get("usage_bytes")), "-" if pct is None else "%d%%" % pct]
        g = p["glibc"]
        row += [short_size(g["in_use_bytes"]), short_size(g["free_bytes"]),
                short_size(g["trimmable_bytes"])]
        rows.append(row)
    # A long seq, a series of many days: drop the absolute time, then trimmable, to fit.
    out.extend(fit_table(cols, rows, style, [1, len(cols) - 1]))
    if len(pts) < len(every):
        out.append("(%d of %d snapshots: changes of reason, the rest evenly spaced; --rows 0 "
                   "shows all)" % (len(pts), len(every)))
    if any(p.get("nmt") for p in pts):
        cats = (doc.get("nmt_categories") or [])[:TEXT_NMT_COLUMNS]
        out.append("")
        out.append(style.paint("bold", "NMT committed") + " (categories that grew most) and "
                   "malloc NMT does not track")
        ncols = [Column("seq"), Column("+time", "<"), Column("NMT total"), Column("untracked")]
        ncols += [Column(NMT_SHORT.get(c, _clip(c, 10))) for c in cats]
        nrows = []
        for p in pts:
            nmt = p.get("nmt") or {}
            by = {c.get("name"): c.get("committed") for c in nmt.get("categories") or []}
            nrows.append([str(p["seq"]), rel(p["elapsed_seconds"]),
                          short_size(nmt.get("committed_bytes")),
                          short_size(p.get("untracked_bytes"))]
                         + [short_size(by.get(c)) for c in cats])
        # The last categories go first when the table is too wide.
        out.extend(fit_table(ncols, nrows, style, list(range(len(ncols) - 1, 3, -1))))
    g = doc["growth"]
    if len(every) > 1:
        over = "seq %s -> %s, %s" % (g["from_seq"], g["to_seq"],
                                     duration(None if g["hours"] is None else g["hours"] * HOUR))
        out.append("")
        out.append(style.paint("bold", "fastest growing chunk sizes") + " (in use, %s)" % over)
        if g["sizes"]:
            rows = [[str(r["size"]), "%+d" % r["count"],
                     "%d -> %d" % (r["first_count"], r["last_count"]), signed_size(r["bytes"]),
                     "-" if r["bytes_per_hour"] is None
                     else signed_size(int(r["bytes_per_hour"])),
                     "-" if r["count_per_hour"] is None else "%+d" % round(r["count_per_hour"])]
                    for r in g["sizes"][:top]]
            out.extend(render.table([Column("size"), Column("count"), Column("first -> last"),
                                     Column("bytes"), Column("bytes/h"), Column("count/h")],
                                    rows, style, indent="  "))
        else:
            out.append("  (none grew)")
        out.append("")
        out.append(style.paint("bold", "fastest growing content classes"))
        if g["classes"]:
            rows = [[_clip(str(r["name"]), 30), _clip(str(r.get("kind") or ""), 8),
                     "%+d" % r["count"], signed_size(r["bytes"]),
                     "-" if r["bytes_per_hour"] is None
                     else signed_size(int(r["bytes_per_hour"])),
                     short_size(r["last_bytes"])]
                    for r in g["classes"][:top]]
            out.extend(render.table([Column("class", "<"), Column("kind", "<"), Column("count"),
                                     Column("bytes"), Column("bytes/h"), Column("last")],
                                    rows, style, indent="  "))
        else:
            out.append("  (none grew)")
    frozen = [p["frozen_seconds"] for p in every if p.get("frozen_seconds") is not None]
    cores = ["%s (seq %s)" % (p["core"], p["seq"]) for p in every if p.get("core")]
    ss = doc.get("samples_summary")
    if frozen or cores or ss:
        out.append("")
    if frozen:
        out.append("freeze per snapshot: %.3f-%.3f s (mean %.3f s)"
                   % (min(frozen), max(frozen), sum(frozen) / len(frozen)))
    if cores:
        out.append(_clip("cores: " + ", ".join(cores), TEXT_WIDTH))
    if ss:
        text = "samples: %d, %s to %s" % (
            ss["count"], rel(ss["first_time"] - first if first is not None else None),
            rel(ss["last_time"] - first if first is not None else None))
        if ss.get("interval_seconds"):
            text += " (every %.3g s)" % ss["interval_seconds"]
        if ss.get("rss_max_bytes") is not None:
            text += "; RSS max %s" % short_size(ss["rss_max_bytes"])
        if ss.get("cgroup_usage_max_bytes") is not None:
            text += "; cgroup max %s" % short_size(ss["cgroup_usage_max_bytes"])
            if ss.get("cgroup_usage_max_percent") is not None:
                text += " (%d%%)" % ss["cgroup_usage_max_percent"]
        out.append(_clip(text, TEXT_WIDTH))
    out.extend(death_lines(doc.get("death"), first))
    return out


# -- the command ------------------------------------------------------------------------------

def _top(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more: %r" % text)
    return value


def _rows(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (all) or more: %r" % text)
    return value


class Trend(Command):
    """``trend DIR``."""

    name = "trend"
    summary = "the series of snapshots 'watch' kept: one table, a chart, what grew fastest"
    description = ("Read the snapshots 'heapwalk watch' wrote to DIR (snap-NNNNNN.json, "
                   "samples.jsonl, watch.json), or a list of saved 'report --json' files, and "
                   "show the series: per snapshot the time, why it was taken, RSS, the "
                   "cgroup's usage against its limit, glibc in use / free / trimmable, NMT "
                   "committed per category and malloc NMT does not track; then the in-use "
                   "chunk sizes and content classes that grew fastest from the first to the "
                   "last snapshot (count, bytes, per hour). --jsonl: one JSON object per "
                   "snapshot per line; --html FILE: a page with line charts. A snapshot that "
                   "does not parse is skipped with a note. Usage: heapwalk trend DIR.")
    #: The CLI opens no target for this command: it reads its files itself.
    needs_target = False
    #: The CLI's first positional is DIR (or the first snapshot file).
    core_metavar = "DIR"
    core_help = ("the directory 'heapwalk watch' wrote (snap-NNNNNN.json ...), or the first "
                 "of several snapshot files")
    missing_core = "give a snapshot directory: heapwalk trend DIR (or files: trend A.json B.json)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        # The CLI gives every command a first positional CORE: that is DIR. gdb does not.
        if not any(a.dest == "core" for a in parser._actions):  # pylint: disable=protected-access
            parser.add_argument("dir", metavar="DIR",
                                help="the directory 'heapwalk watch' wrote (or a snapshot file)")
        parser.add_argument("more", nargs="*", metavar="FILE",
                            help="more snapshot files (instead of DIR: trend A.json B.json ...)")
        parser.add_argument("--jsonl", action="store_true",
                            help="print one JSON object per snapshot per line (JSON Lines, "
                                 "for DuckDB read_json_auto / Spark read.json)")
        parser.add_argument("--html", metavar="FILE",
                            help="also write the series as one self-contained HTML page with "
                                 "line charts (no network) to FILE")
        parser.add_argument("--top", metavar="N", type=_top, default=DEFAULT_TOP,
                            help="rows of the fastest-growing tables in text (default %d)"
                                 % DEFAULT_TOP)
        parser.add_argument("--rows", metavar="N", type=_rows, default=DEFAULT_ROWS,
                            help="snapshots shown in the text table: the first, the last, "
                                 "every change of reason, the rest evenly spaced, N in all "
                                 "(default %d; 0 = all)"
                                 % DEFAULT_ROWS)

    def collect(self, inv: Invocation) -> Record:
        args = inv.args
        first = getattr(args, "core", None) or getattr(args, "dir", None)
        if getattr(args, "pid", None) is not None or not first:
            raise UsageError("trend reads a snapshot directory: heapwalk trend DIR (or "
                             "snapshot files: heapwalk trend A.json B.json ...)")
        if getattr(args, "jsonl", False) and getattr(args, "json", False):
            raise UsageError("give --json or --jsonl, not both")
        doc = build_trend(load_series([first, *(getattr(args, "more", None) or [])]))
        html_path = getattr(args, "html", None)
        if html_path:
            from . import trend_html  # pylint: disable=import-outside-toplevel
            trend_html.write(doc, html_path)
        return doc

    def render(self, document: Record, inv: Invocation) -> List[str]:
        if getattr(inv.args, "jsonl", False):
            # stdout stays JSON Lines: the notes go to stderr instead of after the lines.
            for line in render.diagnostics(document.get("diagnostics", [])):
                sys.stderr.write(line + "\n")
            document["diagnostics"] = []
            return render_jsonl(document)
        return render_trend(document, inv.style, getattr(inv.args, "top", DEFAULT_TOP),
                            getattr(inv.args, "rows", DEFAULT_ROWS))

    def status(self, document: Record) -> int:
        return 0
