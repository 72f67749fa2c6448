"""`report --html FILE`: one self-contained page, rendered in headless Chromium (Debian's
`chromium` package): its charts are in the DOM with the expected labels, its script ran, and the
screenshot (read back as PNG) is not blank.

Cores: corpora/fragment.c in burst mode (16 arenas keeping a burst's memory) and, with a JDK,
the seeds' ConnGrowth JVM core (NMT chart, zlib classes).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from hwkit import describe, gcore, no_traceback, run_cli

CHROMIUM = Path(os.environ.get("HEAPWALK_CHROMIUM", "/usr/bin/chromium"))
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-default-apps", "--disable-extensions", "--mute-audio"]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        pytest.skip("no chromium (apt-get install chromium)")
    profile = tmp / "chrome-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([str(CHROMIUM), *CHROME_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit non-interlaced PNG, with its filters undone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def render_page(page: Path, tmp: Path) -> tuple[str, Path]:
    """The DOM after scripts ran (--dump-dom) and a 1280x2000 screenshot."""
    url = page.resolve().as_uri()
    dom = chromium(tmp, "--virtual-time-budget=3000", "--dump-dom", url)
    assert dom.returncode == 0 and "<svg" in dom.stdout, f"{dom.returncode}\n{dom.stderr[-2000:]}"
    png = tmp / "shot.png"
    shot = chromium(tmp, f"--screenshot={png}", "--window-size=1280,2000", "--hide-scrollbars", url)
    assert shot.returncode == 0 and png.exists(), f"{shot.returncode}\n{shot.stderr[-2000:]}"
    return dom.stdout, png


def svg(dom: str, chart_id: str) -> str:
    m = re.search(r'<svg[^>]*id="%s".*?</svg>' % re.escape(chart_id), dom, re.S)
    assert m, f"no svg#{chart_id} in the DOM"
    return m.group(0)


def labels(svg_text: str) -> list[str]:
    import html  # noqa: PLC0415
    return [html.unescape(t) for t in re.findall(r'data-label="([^"]*)"', svg_text)]


def check_screenshot(png: Path) -> None:
    assert png.stat().st_size > 20_000, png.stat().st_size
    width, height, rows = read_png(png)
    assert (width, height) == (1280, 2000)
    colours = set()
    for y in range(0, height, 7):
        row = rows[y]
        bpp = len(row) // width
        for x in range(0, width, 5):
            colours.add(row[x * bpp:x * bpp + 3])
    assert len(colours) > 20, f"screenshot looks blank: {len(colours)} colours"
    # The palette's first colour (mapping bar, first segment) is on screen.
    assert bytes.fromhex("4e79a7") in colours


@pytest.fixture(scope="module")
def burst_core(tmp_path_factory):
    from test_retention import Fragment  # noqa: PLC0415  # waits on stdin once ready
    f = Fragment(16, "burst")
    try:
        core = gcore(f.pid, tmp_path_factory.mktemp("burst") / "core")
    finally:
        f.close()
    return core


def test_html_report_renders_with_charts(burst_core, tmp_path):
    page = tmp_path / "report.html"
    r = run_cli("report", str(burst_core), "--html", str(page), "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    text = page.read_text()
    # Self-contained: no URL the browser could fetch.
    assert not re.search(r'(src|href)\s*=\s*"(?!#|data:)', text), "external reference in the page"
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    assert "Content-Security-Policy" in text
    dom, png = render_page(page, tmp_path)
    assert 'data-rendered="1"' in dom, "the page's script did not run"
    # Mapping reconciliation: one segment per group (the smallest summed as "other"), the legend
    # names the glibc groups, and the bar's title is the mapped total.
    m = svg(dom, "chart-mappings")
    segs = [l for l in labels(m) if ":" in l]
    groups = doc["mappings"]["groups"]
    assert len(segs) == min(len(groups), 11)
    assert any(l.startswith("glibc arena #1 heaps") for l in segs), segs
    assert "mapped: " in m
    # glibc split and per-arena bars: every arena of the burst has a row with its three parts.
    g = svg(dom, "chart-glibc")
    assert {l.split(":")[0] for l in labels(g) if ":" in l} == {"in use", "tcache", "fastbins", "bins", "tops"}
    a = svg(dom, "chart-arenas")
    rows = {l.split(" in use:")[0] for l in labels(a) if " in use:" in l}
    assert len(rows) == doc["pressure"]["arenas"] >= 16, rows
    assert any("trimmable:" in l for l in labels(a))
    # Verdict in the page.
    assert doc["verdict"][0]["cause"] in dom and "arena-retention" in dom
    check_screenshot(png)


def test_html_report_of_a_jvm_has_nmt_and_classes(tmp_path):
    import nmtkit  # noqa: PLC0415
    if not nmtkit.have_jdk():
        pytest.skip("no JDK")
    import seedkit  # noqa: PLC0415
    snaps = seedkit.snapshots()
    page = tmp_path / "jvm.html"
    r = run_cli("report", str(snaps.core_b), "--html", str(page))
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert "verdict" in r.stdout  # text output still printed
    dom, png = render_page(page, tmp_path)
    nmt = labels(svg(dom, "chart-nmt"))
    assert any(l.startswith("Other committed:") for l in nmt), nmt
    assert any(l.startswith("malloc not tracked by NMT") for l in nmt), nmt
    cls = [l for l in labels(svg(dom, "chart-classes")) if ":" in l]
    assert cls[0].startswith("zlib inflate stream + window (2000) bytes:"), cls[:3]
    assert "untracked-malloc" in dom
    check_screenshot(png)


def test_html_write_error_is_one_line(burst_core, tmp_path):
    r = run_cli("report", str(burst_core), "--no-classes", "--html", str(tmp_path / "no" / "dir" / "x.html"))
    no_traceback(r)
    assert r.returncode == 1, describe(r)
    assert r.stderr.startswith("heapwalk: ")
