"""``trend --html FILE``: the series as one self-contained HTML page.

The house style of ``report --html`` (report_html.py: inline CSS, a Content-Security-Policy that
forbids every fetch, static SVG, every text escaped). Charts, each an ``<svg class="chart">``:

- ``chart-memory``: a line chart over time, one ``<polyline class="series"
  data-series=KEY>`` per series that has data — RSS and the cgroup's usage and limit (from the
  samples and the snapshots), glibc in use and free, NMT committed, malloc NMT does not track
  (from the snapshots) — with a tick per snapshot on the time axis;
- ``chart-nmt`` (JVM): NMT committed per category (those that grew most), one polyline each;
- ``chart-growth``: the in-use count of the fastest growing chunk sizes at each snapshot.

Then the tables: the series (every figure), glibc in use per arena, NMT per category, the
fastest growing chunk sizes and content classes, how the target died, the notes.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import render
from .cmd_trend import duration, rel, utc
from .report_html import CSS, PALETTE, _e, _table

Record = Dict[str, Any]
Point = Tuple[float, int]

WIDTH = 1000
HEIGHT = 380
LEFT, RIGHT, TOP, BOTTOM = 90, 20, 56, 40
#: A series of more points than this is thinned (min and max kept per pixel column).
MAX_POINTS = 2 * (WIDTH - LEFT - RIGHT)
MAX_NMT_LINES = 8
MAX_GROWTH_LINES = 6
MAX_ARENA_COLUMNS = 12
MAX_ROWS = 50

TREND_CSS = CSS + """
svg polyline.series{fill:none;stroke-width:2} svg polyline.limit{stroke-dasharray:6 4}
svg .axis{stroke:#999;stroke-width:1} svg .grid{stroke:#eee;stroke-width:1}
svg .snap{stroke:#555;stroke-width:1} svg .tick{font-size:11px;fill:#555}
.scroll{overflow-x:auto} .scroll td,.scroll th{white-space:nowrap}
"""

JS = """
document.querySelectorAll('svg.chart polyline.series').forEach(function(p){
  p.addEventListener('mouseenter',function(){p.style.strokeWidth='4';});
  p.addEventListener('mouseleave',function(){p.style.strokeWidth='';});
});
document.body.setAttribute('data-rendered','1');
document.body.setAttribute('data-charts', String(document.querySelectorAll('svg.chart').length));
"""


def _thin(points: List[Point]) -> List[Point]:
    """At most about MAX_POINTS points: per bucket of time the lowest and highest kept, in
    time order (peaks survive)."""
    if len(points) <= MAX_POINTS:
        return points
    buckets = MAX_POINTS // 2
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0) or 1.0
    out: List[Point] = []
    current: List[Point] = []
    index = 0
    for p in points:
        b = min(int((p[0] - t0) / span * buckets), buckets - 1)
        if b != index and current:
            lo = min(current, key=lambda q: q[1])
            hi = max(current, key=lambda q: q[1])
            out.extend(sorted({lo, hi}))
            current = []
        index = b
        current.append(p)
    if current:
        lo = min(current, key=lambda q: q[1])
        hi = max(current, key=lambda q: q[1])
        out.extend(sorted({lo, hi}))
    return out


def _merge(*lists: Sequence[Point]) -> List[Point]:
    merged = sorted({p for points in lists for p in points})
    return _thin(merged)


def memory_series(doc: Record) -> List[Tuple[str, str, List[Point]]]:
    """(key, label, [(elapsed seconds, bytes)]) of every series of the memory chart that has
    at least one point."""
    pts = doc.get("snapshots") or []
    samples = doc.get("samples") or []

    def snap(get: Any) -> List[Point]:
        out = []
        for p in pts:
            v = get(p)
            if p.get("elapsed_seconds") is not None and isinstance(v, int):
                out.append((float(p["elapsed_seconds"]), v))
        return out

    def samp(key: str) -> List[Point]:
        return [(float(s["elapsed_seconds"]), s[key]) for s in samples
                if s.get("elapsed_seconds") is not None and isinstance(s.get(key), int)]

    series = [
        ("rss", "RSS", _merge(samp("rss_bytes"), snap(lambda p: p.get("rss_bytes")))),
        ("cgroup_usage", "cgroup usage",
         _merge(samp("cgroup_usage_bytes"),
                snap(lambda p: (p.get("cgroup") or {}).get("usage_bytes")))),
        ("cgroup_limit", "cgroup limit",
         _merge(samp("cgroup_limit_bytes"),
                snap(lambda p: (p.get("cgroup") or {}).get("limit_bytes")))),
        ("glibc_in_use", "glibc in use", snap(lambda p: p["glibc"].get("in_use_bytes"))),
        ("glibc_free", "glibc free", snap(lambda p: p["glibc"].get("free_bytes"))),
        ("nmt_committed", "NMT committed",
         snap(lambda p: (p.get("nmt") or {}).get("committed_bytes"))),
        ("untracked", "malloc not tracked by NMT", snap(lambda p: p.get("untracked_bytes"))),
    ]
    return [s for s in series if s[2]]


def nmt_series(doc: Record) -> List[Tuple[str, str, List[Point]]]:
    out = []
    for name in (doc.get("nmt_categories") or [])[:MAX_NMT_LINES]:
        points = []
        for p in doc.get("snapshots") or []:
            for c in (p.get("nmt") or {}).get("categories") or []:
                if c.get("name") == name and isinstance(c.get("committed"), int) \
                        and p.get("elapsed_seconds") is not None:
                    points.append((float(p["elapsed_seconds"]), c["committed"]))
        if points:
            out.append(("nmt:" + str(name), str(name), points))
    return out


def growth_series(doc: Record) -> List[Tuple[str, str, List[Point]]]:
    """The in-use count of each of the fastest growing chunk sizes at every snapshot."""
    pts = doc.get("snapshots") or []
    out = []
    for r in ((doc.get("growth") or {}).get("sizes") or [])[:MAX_GROWTH_LINES]:
        points = [(float(p["elapsed_seconds"]), c) for p, c in zip(pts, r.get("counts") or [])
                  if p.get("elapsed_seconds") is not None and isinstance(c, int)]
        if points:
            out.append(("size:%s" % r["size"], "%s-byte chunks" % r["size"], points))
    return out


def _ticks(hi: float, n: int = 5, binary: bool = False) -> List[float]:
    """Round tick values from 0 to ``hi``: 1, 2, 2.5 or 5 times a power of ten (of the
    power-of-1024 unit the axis is labelled in, for bytes)."""
    if hi <= 0:
        return [0.0]
    unit = 1.0
    if binary:
        while hi / unit >= 1024:
            unit *= 1024
    step = hi / unit / n
    mag = 10.0 ** math.floor(math.log10(step)) if step > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if step <= m * mag:
            step = m * mag
            break
    if not binary or unit == 1.0:
        step = max(step, 1.0)
    step *= unit
    out, v = [], 0.0
    while v <= hi * 1.0001:
        out.append(v)
        v += step
    return out


def _count(n: int) -> str:
    return "{:,}".format(n)


def line_chart(chart_id: str, title: str, series: List[Tuple[str, str, List[Point]]],
               marks: Sequence[Tuple[float, str]], dashed: Sequence[str] = (),
               unit: Callable[[int], str] = render.size) -> str:
    """A line chart: one polyline per series, y from 0 (bytes, or what ``unit`` formats), x
    the elapsed time."""
    xs = [x for _, _, pts in series for x, _ in pts] + [x for x, _ in marks]
    ys = [y for _, _, pts in series for _, y in pts]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    y1 = float(max(ys) if ys else 1) * 1.05 or 1.0
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return TOP + ph - y / y1 * ph

    body = ['<text class="ttl" x="0" y="16">%s</text>' % _e(title)]
    for i, (key, label, _) in enumerate(series):
        lx, ly = (i % 4) * 240, 34 + (i // 4) * 16
        color = PALETTE[i % len(PALETTE)]
        body.append('<rect class="key" x="%d" y="%d" width="14" height="4" fill="%s"/>'
                    % (lx, ly - 5, color))
        body.append('<text class="leg" x="%d" y="%d">%s</text>' % (lx + 20, ly, _e(label)))
    for v in _ticks(y1, binary=unit is render.size):
        y = sy(v)
        body.append('<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>'
                    % (LEFT, y, WIDTH - RIGHT, y))
        body.append('<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>'
                    % (LEFT - 6, y + 4, _e(unit(int(v)))))
    for k in range(6):
        x = x0 + (x1 - x0) * k / 5
        body.append('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>'
                    % (sx(x), HEIGHT - BOTTOM + 16, _e(rel(x))))
    body.append('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>'
                % (LEFT, TOP + ph, WIDTH - RIGHT, TOP + ph))
    body.append('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>'
                % (LEFT, TOP, LEFT, TOP + ph))
    for x, label in marks:
        body.append('<line class="snap" x1="%.1f" y1="%d" x2="%.1f" y2="%d"><title>%s</title>'
                    '</line>' % (sx(x), TOP + ph, sx(x), TOP + ph + 6, _e(label)))
    for i, (key, label, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in pts)
        cls = "series limit" if key in dashed else "series"
        body.append('<polyline class="%s" data-series="%s" stroke="%s" points="%s">'
                    '<title>%s</title></polyline>' % (cls, _e(key), color, coords, _e(label)))
        if len(pts) <= 200:
            for x, y in pts:
                body.append('<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s %s: %s'
                            '</title></circle>' % (sx(x), sy(y), color, _e(label),
                                                  _e(rel(x)), _e(unit(y))))
    return ('<svg class="chart" id="%s" role="img" aria-label="%s" '
            'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d">\n'
            '<title>%s</title>\n%s\n</svg>'
            % (chart_id, _e(title), WIDTH, HEIGHT, WIDTH, HEIGHT, _e(title), "\n".join(body)))


def _hs(n: Optional[int]) -> str:
    return render.size(n)


def _series_table(doc: Record) -> str:
    headers = ["seq", "time (UTC)", "+time", "reason", "RSS", "RSS anon", "RSS file",
               "cgroup usage", "cgroup limit", "% of limit", "oom_kill", "PSI some avg10",
               "glibc in use", "glibc free", "trimmable", "tcache", "tops", "mmapped chunks",
               "arenas", "threads", "NMT committed", "untracked malloc", "frozen s", "core",
               "verdict", "file"]
    rows = []
    for p in doc["snapshots"]:
        cg = p.get("cgroup") or {}
        g = p["glibc"]
        pct = p.get("cgroup_usage_percent")
        rows.append([p["seq"], utc(p["time"]), rel(p["elapsed_seconds"]),
                     p.get("reason") or "-", _hs(p["rss_bytes"]), _hs(p["rss_anon_bytes"]),
                     _hs(p["rss_file_bytes"]), _hs(cg.get("usage_bytes")),
                     _hs(cg.get("limit_bytes")), "-" if pct is None else "%.1f %%" % pct,
                     "-" if cg.get("oom_kill") is None else cg["oom_kill"],
                     "-" if not cg.get("pressure") else cg["pressure"].get("some_avg10"),
                     _hs(g["in_use_bytes"]), _hs(g["free_bytes"]), _hs(g["trimmable_bytes"]),
                     _hs(g["tcache_bytes"]), _hs(g["top_bytes"]), _hs(g["mmapped_bytes"]),
                     "-" if g["arenas"] is None else g["arenas"],
                     "-" if g["threads"] is None else g["threads"],
                     _hs((p.get("nmt") or {}).get("committed_bytes")),
                     _hs(p.get("untracked_bytes")),
                     "-" if p.get("frozen_seconds") is None else "%.3f" % p["frozen_seconds"],
                     p.get("core") or "-", ", ".join(p.get("verdict") or []) or "-", p["file"]])
    return '<div class="scroll">%s</div>' % _table(headers, rows, "series")


def _arena_table(doc: Record) -> Optional[str]:
    pts = doc["snapshots"]
    last = {a["index"]: a for a in pts[-1]["arenas"]} if pts else {}
    order = sorted(last, key=lambda i: (-(last[i].get("in_use_bytes") or 0),
                                        i if i is not None else -1))
    order = order[:MAX_ARENA_COLUMNS]
    if not order:
        return None
    rows = []
    for p in pts:
        by = {a["index"]: a for a in p["arenas"]}
        rows.append([p["seq"], rel(p["elapsed_seconds"])]
                    + ["%s / %s / %s" % (_hs((by.get(i) or {}).get("in_use_bytes")),
                                         _hs((by.get(i) or {}).get("free_bytes")),
                                         _hs((by.get(i) or {}).get("trimmable_bytes")))
                       for i in order])
    return '<div class="scroll">%s</div>' % _table(
        ["seq", "+time"] + ["arena #%s%s" % (i, " main" if last[i].get("main") else "")
                            for i in order], rows, "arenas")


def _nmt_table(doc: Record) -> Optional[str]:
    cats = doc.get("nmt_categories") or []
    pts = doc["snapshots"]
    if not cats or not any(p.get("nmt") for p in pts):
        return None
    rows = []
    for p in pts:
        by = {c.get("name"): c.get("committed") for c in (p.get("nmt") or {}).get("categories")
              or []}
        rows.append([p["seq"], rel(p["elapsed_seconds"])]
                    + [_hs(by.get(c)) for c in cats])
    return '<div class="scroll">%s</div>' % _table(["seq", "+time"] + cats, rows, "nmt")


def _death_value(key: str, value: Any) -> str:
    if key.endswith("_bytes") and isinstance(value, int) and not isinstance(value, bool):
        return render.exact_size(value)
    if key == "time" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return utc(value) + " UTC"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _per_hour(v: Optional[float], nbytes: bool) -> str:
    if v is None:
        return "-"
    if nbytes:
        return ("+" if v >= 0 else "-") + _hs(int(abs(v))) + "/h"
    return "%+.1f/h" % v


def render_html(doc: Record) -> str:
    """The page for a ``trend`` document."""
    src = doc.get("source") or {}
    who = src.get("dir") or ", ".join(src.get("files") or [])
    pts = doc["snapshots"]
    parts = ["<h1>heapwalk trend: %s</h1>" % _e(who)]
    tgt = doc.get("target") or {}
    parts.append('<div class="sub">%s, seq %s–%s, pid %s; first %s UTC, last %s UTC '
                 '(+%s)</div>'
                 % (_e(render.plural(len(pts), "snapshot")), _e(pts[0]["seq"]),
                    _e(pts[-1]["seq"]), _e(tgt.get("pid")), _e(utc(doc.get("first_time"))),
                    _e(utc(doc.get("last_time"))),
                    _e(duration((doc.get("last_time") or 0) - (doc.get("first_time") or 0)))))
    death = doc.get("death")
    if isinstance(death, dict):
        parts.append('<section id="death"><h2>How the target died</h2>%s</section>'
                     % _table(["what", "value"], [[k, _death_value(k, v)]
                                                  for k, v in sorted(death.items())
                                                  if not isinstance(v, (dict, list))]))
    marks = [(float(p["elapsed_seconds"]), "seq %s: %s" % (p["seq"], p.get("reason") or "-"))
             for p in pts if p.get("elapsed_seconds") is not None]
    parts.append('<section id="memory"><h2>Memory over time</h2>')
    parts.append(line_chart("chart-memory", "memory over time (ticks: snapshots)",
                            memory_series(doc), marks, dashed=("cgroup_limit",)))
    parts.append(_series_table(doc))
    parts.append("</section>")
    arenas = _arena_table(doc)
    if arenas:
        parts.append('<section id="arenas"><h2>glibc per arena: in use / free / trimmable</h2>'
                     '%s</section>' % arenas)
    nmt = _nmt_table(doc)
    if nmt:
        parts.append('<section id="nmt"><h2>NMT committed per category</h2>')
        parts.append(line_chart("chart-nmt", "NMT committed per category (those that grew "
                                "most)", nmt_series(doc), marks))
        parts.append(nmt)
        parts.append("</section>")
    g = doc.get("growth") or {}
    if len(pts) > 1:
        parts.append('<section id="growth"><h2>Fastest growing (seq %s → %s, %s)</h2>'
                     % (_e(g.get("from_seq")), _e(g.get("to_seq")),
                        _e(duration(None if g.get("hours") is None else g["hours"] * 3600))))
        grown = growth_series(doc)
        if grown:
            parts.append(line_chart("chart-growth", "in-use count of the fastest growing chunk "
                                    "sizes", grown, marks, unit=_count))
        parts.append("<h3>in-use chunk sizes</h3>")
        parts.append(_table(["size", "count", "first → last", "bytes", "bytes/h", "count/h",
                             "count per snapshot"],
                            [[r["size"], "%+d" % r["count"],
                              "%d → %d" % (r["first_count"], r["last_count"]),
                              "+" + _hs(r["bytes"]), _per_hour(r["bytes_per_hour"], True),
                              _per_hour(r["count_per_hour"], False),
                              " ".join("-" if c is None else str(c) for c in r["counts"])]
                             for r in (g.get("sizes") or [])[:MAX_ROWS]], "sizes"))
        parts.append("<h3>content classes</h3>")
        parts.append(_table(["class", "kind", "count", "bytes", "bytes/h", "last bytes"],
                            [[r["name"], r.get("kind"), "%+d" % r["count"], "+" + _hs(r["bytes"]),
                              _per_hour(r["bytes_per_hour"], True), _hs(r["last_bytes"])]
                             for r in (g.get("classes") or [])[:MAX_ROWS]], "classes"))
        parts.append("</section>")
    diags = doc.get("diagnostics") or []
    if diags:
        parts.append('<section id="diagnostics"><h2>Notes</h2><ul>%s</ul></section>'
                     % "".join("<li>%s: %s</li>" % (_e(d.get("kind")), _e(d.get("detail")))
                               for d in diags))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n"
            "<title>heapwalk trend: %s</title>\n<style>%s</style></head>\n<body>\n%s\n"
            "<script>%s</script>\n</body></html>\n" % (_e(who), TREND_CSS, "\n".join(parts), JS))


def write(doc: Record, path: str) -> None:
    """Write the page for ``doc`` to ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_html(doc))
