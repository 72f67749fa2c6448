"""``report --html FILE``: the report as one self-contained HTML page.

Everything is inline (CSS, a few lines of JS, SVG charts); the page loads nothing (its
Content-Security-Policy forbids any fetch). Charts, each an ``<svg class="chart" id=…>``:

- ``chart-mappings``: the process's mappings as one stacked bar, one segment per group
  (largest first, the smallest summed as "other"), summing to the mapped total;
- ``chart-glibc``: glibc's memory from the system split into in use / tcache / fastbins /
  bins / tops, and what malloc_trim(0) would return;
- ``chart-arenas``: per arena (most system bytes first) in use / free kept / trimmable bars;
- ``chart-classes``: the top content classes by bytes;
- ``chart-nmt`` (JVM): NMT categories by committed bytes.

The charts are static SVG (they render without JS); the script only adds hover highlighting and
marks the page rendered (``<body data-rendered="1">``).
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import render

Record = Dict[str, Any]

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#8c564b", "#17becf", "#bcbd22")
#: Mapping groups drawn as their own segment (the rest are summed as "other").
MAX_SEGMENTS = 10
MAX_ARENAS = 24
MAX_CLASSES = 12
WIDTH = 1000


def _e(text: Any) -> str:
    """HTML-escaped, with control and bidi characters shown as escapes (render.safe): a name
    from a hostile core must not reorder or hide what the page shows."""
    return html.escape(render.safe("" if text is None else str(text)), quote=True)


def _hs(n: Optional[int]) -> str:
    return render.size(n)


def _svg(chart_id: str, title: str, height: int, body: List[str]) -> str:
    return ('<svg class="chart" id="%s" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg" '
            'viewBox="0 0 %d %d" width="%d" height="%d">\n<title>%s</title>\n%s\n</svg>'
            % (chart_id, _e(title), WIDTH, height, WIDTH, height, _e(title), "\n".join(body)))


def _rect(x: float, y: float, w: float, h: float, color: str, label: str, cls: str = "seg") -> str:
    return ('<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" data-label="%s">'
            '<title>%s</title></rect>' % (cls, x, y, max(w, 0.0), h, color, _e(label), _e(label)))


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str = "lbl") -> str:
    return '<text class="%s" x="%.1f" y="%.1f" text-anchor="%s">%s</text>' % (cls, x, y, anchor, _e(text))


def stacked_bar(chart_id: str, title: str, parts: Sequence[Tuple[str, int]]) -> str:
    """One horizontal bar split into ``parts`` (label, bytes), with a legend below it."""
    total = sum(max(b, 0) for _, b in parts) or 1
    body = [_text(0, 16, "%s: %s" % (title, _hs(total)), cls="ttl")]
    x, bar_w = 0.0, float(WIDTH)
    for i, (label, b) in enumerate(parts):
        w = bar_w * max(b, 0) / total
        color = PALETTE[i % len(PALETTE)]
        body.append(_rect(x, 26, w, 40, color, "%s: %s" % (label, _hs(b))))
        if w > 70:
            body.append(_text(x + 4, 51, _hs(b), cls="in"))
        x += w
    # legend: 2 columns
    for i, (label, b) in enumerate(parts):
        col, row = i % 2, i // 2
        lx, ly = col * (WIDTH / 2), 88 + row * 20
        body.append(_rect(lx, ly - 11, 12, 12, PALETTE[i % len(PALETTE)], label, cls="key"))
        body.append(_text(lx + 18, ly, "%s — %s (%.1f %%)" % (label, _hs(b), 100.0 * b / total),
                          cls="leg"))
    height = 88 + ((len(parts) + 1) // 2) * 20
    return _svg(chart_id, title, height, body)


def bar_rows(chart_id: str, title: str, rows: Sequence[Tuple[str, Sequence[Tuple[str, int]]]],
             keys: Sequence[str]) -> str:
    """One horizontal bar per row, each split into the same ``keys`` (a legend on top)."""
    label_w, row_h = 260.0, 22
    top = max((sum(max(v, 0) for _, v in parts) for _, parts in rows), default=0) or 1
    body = [_text(0, 16, title, cls="ttl")]
    for i, key in enumerate(keys):
        body.append(_rect(label_w + i * 170, 26, 12, 12, PALETTE[i % len(PALETTE)], key, cls="key"))
        body.append(_text(label_w + i * 170 + 18, 37, key, cls="leg"))
    avail = WIDTH - label_w - 90
    for r, (label, parts) in enumerate(rows):
        y = 50 + r * row_h
        body.append(_text(label_w - 8, y + 14, label, anchor="end", cls="rowlbl"))
        x = label_w
        for i, (key, v) in enumerate(parts):
            w = avail * max(v, 0) / top
            body.append(_rect(x, y + 2, w, row_h - 6, PALETTE[keys.index(key) % len(PALETTE)],
                              "%s %s: %s" % (label, key, _hs(v))))
            x += w
        body.append(_text(x + 6, y + 14, _hs(sum(v for _, v in parts)), cls="val"))
    return _svg(chart_id, title, 50 + len(rows) * row_h + 6, body)


def _mapping_parts(doc: Record) -> List[Tuple[str, int]]:
    groups = sorted((doc.get("mappings") or {}).get("groups", []),
                    key=lambda g: (-g.get("mapped_bytes", 0), render.natural_key(g.get("label", ""))))
    parts = [(g.get("label", "?"), g.get("mapped_bytes", 0)) for g in groups[:MAX_SEGMENTS]]
    rest = groups[MAX_SEGMENTS:]
    if rest:
        parts.append(("other (%d groups)" % len(rest), sum(g.get("mapped_bytes", 0) for g in rest)))
    return parts


def _glibc_parts(doc: Record) -> List[Tuple[str, int]]:
    ret = doc.get("retention") or {}
    return [("in use", ret.get("in_use_bytes", 0) or 0), ("tcache", ret.get("tcache_bytes", 0) or 0),
            ("fastbins", ret.get("fastbin_bytes", 0) or 0), ("bins", ret.get("bin_bytes", 0) or 0),
            ("tops", ret.get("top_bytes", 0) or 0)]


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    out = ['<table class="%s"><thead><tr>%s</tr></thead><tbody>'
           % (cls, "".join("<th>%s</th>" % _e(h) for h in headers))]
    for r in rows:
        out.append("<tr>%s</tr>" % "".join("<td>%s</td>" % _e(c) for c in r))
    out.append("</tbody></table>")
    return "".join(out)


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666} section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:12px 16px;margin:12px 0}
svg.chart{display:block;max-width:100%;height:auto;margin:8px 0}
svg .ttl{font-weight:600;font-size:14px} svg .in{fill:#fff;font-size:12px} svg .leg,svg .rowlbl,svg .val{font-size:12px}
svg rect.seg{stroke:#fff;stroke-width:1} svg rect.hl{opacity:.6}
table{border-collapse:collapse;margin:6px 0} td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}
td:first-child,th:first-child{text-align:left}
.verdict li{margin:6px 0} .cause{font-weight:600;color:#b22}
.ev,.act{color:#444} code{background:#f0f0f0;padding:0 3px}
"""

JS = """
document.querySelectorAll('svg.chart rect.seg').forEach(function(r){
  r.addEventListener('mouseenter',function(){r.classList.add('hl');});
  r.addEventListener('mouseleave',function(){r.classList.remove('hl');});
});
document.body.setAttribute('data-rendered','1');
document.body.setAttribute('data-charts', String(document.querySelectorAll('svg.chart').length));
"""
#: The CSP allows exactly this script (its hash), not any inline script.
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()


def _allocator_section(a: Record) -> str:
    """jemalloc's or tcmalloc's part: a bar of what it holds and a table of its own figures."""
    f = a.get("figures") or {}
    name = a.get("allocator") or ""
    if name == "jemalloc":
        bar = [("allocated", f.get("allocated") or 0),
               ("active, not allocated", max(0, (f.get("active") or 0) - (f.get("allocated") or 0))),
               ("dirty", f.get("dirty") or 0), ("muzzy", f.get("muzzy") or 0)]
        rows = [["allocated", _hs(f.get("allocated"))], ["active", _hs(f.get("active"))],
                ["resident", _hs(f.get("resident"))], ["mapped", _hs(f.get("mapped"))],
                ["metadata", _hs(f.get("metadata"))], ["retained (address space only)", _hs(f.get("retained"))],
                ["dirty", _hs(f.get("dirty"))], ["muzzy", _hs(f.get("muzzy"))],
                ["thread caches", _hs(f.get("tcache"))],
                ["arena.<i>.purge would return", _hs(f.get("purge"))],
                ["dirty_decay_ms", f.get("dirty_decay_ms", "-")], ["arenas", f.get("arenas", "-")]]
    else:
        bar = [("in use", f.get("in_use") or 0), ("page heap free", f.get("pageheap_free") or 0),
               ("central + transfer", (f.get("central") or 0) + (f.get("transfer") or 0)),
               ("thread caches", f.get("thread") or 0)]
        rows = [["heap size", _hs(f.get("heap_size"))], ["in use", _hs(f.get("in_use"))],
                ["page heap free", _hs(f.get("pageheap_free"))],
                ["page heap unmapped (address space only)", _hs(f.get("pageheap_unmapped"))],
                ["central cache", _hs(f.get("central"))], ["transfer cache", _hs(f.get("transfer"))],
                ["thread caches", _hs(f.get("thread"))],
                ["ReleaseFreeMemory() would return", _hs(f.get("release_free_memory"))]]
    return ('<section id="%s"><h2>%s%s</h2>%s%s</section>'
            % (_e(name), _e(a.get("version") or name), " (answers malloc)" if a.get("owns_malloc") else "",
               stacked_bar("chart-" + _e(name), "%s memory" % name, bar), _table(["figure", "value"], rows)))


def render_html(doc: Record) -> str:
    """The page for a ``report`` document."""
    tgt = doc.get("target") or {}
    glibc = doc.get("glibc") or {}
    ret = doc.get("retention") or {}
    pres = doc.get("pressure") or {}
    maps = doc.get("mappings") or {}
    who = ("pid %s" % tgt.get("pid")) if tgt.get("kind") == "live" else (tgt.get("path") or tgt.get("kind"))
    parts: List[str] = []
    parts.append("<h1>heapwalk report: %s</h1>" % _e(who))
    owner = next((a for a in doc.get("allocators") or [] if a.get("owns_malloc")), None)
    parts.append('<div class="sub">%sglibc %s, %s threads, %s mapped%s</div>'
                 % ("malloc: %s, " % _e(owner.get("version")) if owner else "",
                    _e(glibc.get("version")), _e(tgt.get("threads")), _e(_hs(maps.get("mapped_bytes"))),
                    "" if maps.get("resident_bytes") is None else ", %s resident" % _e(_hs(maps["resident_bytes"]))))
    # Verdict first: what to do.
    items = []
    for v in doc.get("verdict") or []:
        items.append('<li><span class="cause">%s</span> — %s<br><span class="ev">evidence: %s</span><br>'
                     '<span class="act">action: %s</span></li>'
                     % (_e(v.get("cause")), _e(v.get("summary", "")), _e(v.get("evidence", "")),
                        _e(v.get("action", ""))))
    parts.append('<section id="verdict"><h2>Verdict</h2><ol class="verdict">%s</ol></section>' % "".join(items))
    # Mappings
    parts.append('<section id="mappings"><h2>Address space by group</h2>')
    parts.append(stacked_bar("chart-mappings", "mapped", _mapping_parts(doc)))
    live = maps.get("resident_bytes") is not None
    rows = [[g.get("label"), g.get("kind"), _hs(g.get("mapped_bytes")),
             _hs(g.get("resident_bytes")) if live else "-", g.get("regions", 0)]
            for g in render.sort_groups(maps.get("groups", []))]
    rows.append(["total", "", _hs(maps.get("mapped_bytes")), _hs(maps.get("resident_bytes")) if live else "-", ""])
    parts.append(_table(["group", "kind", "mapped", "resident", "maps"], rows, "groups"))
    parts.append("</section>")
    # jemalloc / tcmalloc (issue 16): the allocator's own figures, before glibc's
    for a in doc.get("allocators") or []:
        parts.append(_allocator_section(a))
    # glibc
    parts.append('<section id="glibc"><h2>glibc malloc</h2>')
    parts.append(stacked_bar("chart-glibc", "glibc memory in arenas", _glibc_parts(doc)))
    parts.append("<p>malloc_trim(0) would return <b>%s</b> now; kept by it: sub-page fragments %s, "
                 "tops %s, tcache %s. %s in %d mmapped chunks. Arenas: %d%s; %d threads; %d heaps "
                 "(%s reserved).</p>"
                 % (_e(_hs(ret.get("trimmable_bytes"))), _e(_hs(ret.get("fragment_bytes"))),
                    _e(_hs(ret.get("top_kept_bytes"))), _e(_hs(ret.get("tcache_bytes"))),
                    _e(_hs(glibc.get("mmapped_bytes"))), glibc.get("mmapped_count", 0) or 0,
                    pres.get("arenas", 0) or 0,
                    (" of a limit of %d" % pres["limit"]) if pres.get("limit") else "",
                    pres.get("threads", 0) or 0, pres.get("heaps", 0) or 0,
                    _e(_hs(pres.get("heap_reserved_bytes")))))
    arenas = sorted(ret.get("arenas", []), key=lambda a: (-(a.get("system_bytes") or 0), a.get("index", 0)))
    arenas = arenas[:MAX_ARENAS]
    keys = ["in use", "free kept", "trimmable"]
    arows = []
    for a in arenas:
        free = a.get("free_bytes", 0) or 0
        trim = min(a.get("trimmable_bytes", 0) or 0, free)
        arows.append(("arena #%s%s (%d threads)" % (a.get("index"), " main" if a.get("main") else "",
                                                    a.get("threads", 0) or 0),
                      [("in use", a.get("in_use_bytes", 0) or 0), ("free kept", free - trim),
                       ("trimmable", trim)]))
    if arows:
        parts.append(bar_rows("chart-arenas", "per arena: in use / free kept / trimmable", arows, keys))
    parts.append("</section>")
    # NMT
    nmt = doc.get("nmt")
    if nmt:
        parts.append('<section id="nmt"><h2>JVM Native Memory Tracking (%s, JDK %s)</h2>'
                     % (_e(nmt.get("level")), _e(nmt.get("jdk"))))
        cats = sorted(nmt.get("categories", []), key=lambda c: (-(c.get("committed") or 0), c.get("name", "")))
        cats = [c for c in cats if c.get("committed")][:MAX_CLASSES]
        un = nmt.get("untracked_malloc") or {}
        crow = [(c.get("name"), [("committed", c.get("committed") or 0)]) for c in cats]
        if un.get("bytes"):
            crow.append(("malloc not tracked by NMT", [("committed", un.get("bytes") or 0)]))
            crow.sort(key=lambda r: -r[1][0][1])
        parts.append(bar_rows("chart-nmt", "NMT categories by committed bytes", crow, ["committed"]))
        parts.append("</section>")
    # Classes
    classes = doc.get("content_classes") or doc.get("classes") or []
    if classes:
        top = classes[:MAX_CLASSES]
        parts.append('<section id="classes"><h2>Top content classes in use</h2>')
        parts.append(bar_rows("chart-classes", "in-use chunks by class (bytes)",
                              [("%s (%d)" % (c.get("name"), c.get("count", 0)),
                                [("bytes", c.get("bytes", 0) or 0)]) for c in top], ["bytes"]))
        parts.append(_table(["class", "kind", "count", "bytes"],
                            [[c.get("name"), c.get("kind"), c.get("count"), _hs(c.get("bytes"))] for c in top]))
        parts.append("</section>")
    diags = doc.get("diagnostics") or []
    if diags:
        parts.append('<section id="diagnostics"><h2>Diagnostics</h2><ul>%s</ul></section>'
                     % "".join("<li>%s: %s</li>" % (_e(d.get("kind")), _e(d.get("detail"))) for d in diags))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; script-src '%s'; img-src data:\">\n"
            "<title>heapwalk report: %s</title>\n<style>%s</style></head>\n<body>\n%s\n"
            "<script>%s</script>\n</body></html>\n" % (SCRIPT_HASH, _e(who), CSS, "\n".join(parts), JS))


def write(doc: Record, path: str) -> None:
    """Write the page for ``doc`` to ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_html(doc))
