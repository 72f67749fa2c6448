"""`heapwalk nmt` on JDK 21 (Debian trixie's openjdk-21, run in the trixie chroot), against
`jcmd VM.native_memory summary scale=1` and `detail` taken in the chroot (chrootjdk, JDK21).

Same oracle and arithmetic as test_nmt.py (JDK 17), plus what jcmd 21 prints and 17 does not:
the malloc, arena and mmap peaks of every category, categories shown for their peaks alone
("Unknown" with reserved=0), the thread stacks' peak.  The engine reads the cores with
``--sysroot`` = the chroot (libjvm's .symtab from there).  Nothing is skipped: when the chroot
or the JDK cannot be made, the tests fail with the reason.
"""

from __future__ import annotations

import json
import re

import pytest

from chrootjdk import JDK21, ChrootJdkCorpora, parse_peaks
from hwkit import CACHE, describe, no_traceback, run_cli
from nmtkit import parse_jcmd
from test_nmt import check_sites_and_regions, chunk, compare_with_jcmd

# JDK 21's attach listener formats each reply into a bufferedStream created with a 1 MiB initial
# buffer (mtInternal; the largest site of the cached detail report:
# bufferedStream::bufferedStream <- attach_listener_thread_entry, malloc=1048576 #1), freed once
# the reply is sent, with the operation itself.  So "Internal" in the image holds up to these
# fewer blocks / bytes than jcmd printed (observed: 3 blocks, 1051682 bytes); nothing else may
# differ.
JCMD21_INTERNAL_MAX_COUNT = 4
JCMD21_INTERNAL_MAX_BYTES = (1 << 20) + 16384
CLI_TIMEOUT = 300


@pytest.fixture(scope="module")
def jdk21():
    c = ChrootJdkCorpora(JDK21, CACHE)
    yield c
    c.close()


def compare21(doc: dict, jcmd_text: str) -> list[str]:
    """compare_with_jcmd (every category's reserved, committed, malloc, arena, mmap, stack,
    threads, tracking overhead; totals) plus the peaks jcmd 21 prints."""
    bad = compare_with_jcmd(doc, jcmd_text, JCMD21_INTERNAL_MAX_COUNT, JCMD21_INTERNAL_MAX_BYTES)
    ours = {c["name"]: c for c in doc["nmt"]["categories"]}
    for name, p in parse_peaks(jcmd_text).items():
        o = ours.get(name)
        if o is None:
            continue
        for what in ("malloc", "arena"):
            if what in p:
                got = o[what].get("peak")
                got = (got["bytes"], got["count"]) if got else None
                # "(at peak)" prints the current figures; "Internal"'s may differ by the residual.
                if got != p[what] and not (name == "Internal" and what == "malloc"):
                    bad.append(f"{name}.{what} peak: jcmd {p[what]}, heapwalk {got}")
        if "mmap" in p and p["mmap"] != o["mmap"].get("peak"):
            bad.append(f"{name}.mmap peak: jcmd {p['mmap']}, heapwalk {o['mmap'].get('peak')}")
        if p.get("stack") and p["stack"] != o.get("stack", {}).get("peak"):
            bad.append(f"{name}.stack peak: jcmd {p['stack']}, heapwalk {o.get('stack', {}).get('peak')}")
    return bad


def check_headers_equal_tables(n: dict) -> None:
    """Header reconstruction == NMT's own (raw, unadjusted) malloc counters, per category."""
    headers = {h["name"]: (h["bytes"], h["count"]) for h in n["headers"]["categories"]}
    raw = {c["name"]: (c["malloc"]["bytes"], c["malloc"]["count"]) for c in n["raw"] if c["malloc"]["count"]}
    assert headers == raw
    assert sum(c for _, c in headers.values()) == n["all_mallocs"]["count"]
    assert sum(b for b, _ in headers.values()) == n["all_mallocs"]["bytes"]


@pytest.mark.parametrize("level", ["summary", "detail"])
def test_core_matches_jcmd(jdk21, level):
    c = jdk21.core(level)
    doc = jdk21.nmt(c.core)
    n = doc["nmt"]
    assert n["level"] == level
    assert n["source"] == "symtab"
    assert n["jdk"] and n["jdk"].startswith("21."), n["jdk"]
    assert "28 types" in n["layout"] and "NMTUtil::_strings" in n["layout"], n["layout"]
    j = parse_jcmd(c.jcmd)
    assert len(j.categories) >= 20 and "GCCardSet" not in j.categories  # SerialGC: no card sets
    bad = compare21(doc, c.jcmd)
    assert not bad, "\n".join(bad)
    assert not [d for d in doc["diagnostics"] if d["kind"] != "note"], doc["diagnostics"]


@pytest.mark.parametrize("level", ["summary", "detail"])
def test_headers_equal_nmt_tables(jdk21, level):
    n = jdk21.nmt(jdk21.core(level).core)["nmt"]
    assert n["headers"]["layout"].startswith("canary 0xE99E")
    check_headers_equal_tables(n)
    g = n["glibc"]
    assert n["headers"]["chunks"]["bytes"] + n["untracked_malloc"]["bytes"] == g["in_use"] + g["mmapped"]


def test_headers_without_jvm_symbols(jdk21):
    """--no-symbols: no file at all, so no NMT tables; the per-category malloc totals come from
    the headers, named by the built-in 21u table (libjvm's path names JDK 21), and equal the
    tables read with symbols."""
    c = jdk21.core("summary")
    with_syms = jdk21.nmt(c.core)["nmt"]
    r = run_cli("nmt", c.core, "--no-symbols", "--json", timeout=CLI_TIMEOUT)
    no_traceback(r)
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    assert doc is not None, describe(r)
    n = doc["nmt"]
    assert n["source"] == "headers", n["layout"]
    assert "21u" in n["names_from"], n["names_from"]
    ours = {x["name"]: (x["malloc"]["bytes"], x["malloc"]["count"]) for x in n["categories"]}
    raw = {x["name"]: (x["malloc"]["bytes"], x["malloc"]["count"]) for x in with_syms["raw"] if x["malloc"]["count"]}
    assert ours == raw


def test_nmt_off(jdk21):
    c = jdk21.core("off")
    n = jdk21.nmt(c.core)["nmt"]
    assert n["level"] == "off"
    assert n["categories"] == []
    assert n["headers"]["categories"] == []
    assert n["untracked_malloc"]["bytes"] == n["glibc"]["in_use"] + n["glibc"]["mmapped"]


def test_untracked_covers_zlib(jdk21):
    c = jdk21.core("summary")
    n = jdk21.nmt(c.core)["nmt"]
    inflaters, deflaters = c.truth["inflaters"], c.truth["deflaters"]
    sizes = {s["size"]: s["count"] for s in n["headers"]["untracked_sizes"]}
    assert sizes.get(chunk(64 * 1024), 0) >= 4 * deflaters
    assert sizes.get(chunk(112), 0) >= inflaters + deflaters
    assert n["untracked_malloc"]["bytes"] >= inflaters * 32 * 1024 + deflaters * 256 * 1024


def parse_jcmd21_sites(text: str) -> dict[tuple, tuple[int, int]]:
    """jcmd 21 detail's malloc sites ("[0x...]func+0xoff" frames, no space after the address)."""
    out: dict[tuple, tuple[int, int]] = {}
    frames: list[str] = []
    for line in text.split("Details:", 1)[-1].splitlines():
        m = re.match(r"^\[0x[0-9a-f]+\]\s*(.*)$", line)
        if m:
            frames.append(m.group(1).strip())
            continue
        m = re.match(r"^\s+\(malloc=(\d+) type=[^#)]*(?:#(\d+))?", line)
        if m and frames:
            out[tuple(frames)] = (int(m.group(1)), int(m.group(2) or 0))
        if not line.strip() or m:
            frames = []
    return out


def test_detail_sites_and_regions(jdk21):
    c = jdk21.core("detail")
    check_sites_and_regions(jdk21.nmt(c.core, detail=True)["nmt"], parse_jcmd21_sites(c.jcmd_detail))


def test_live_pid_matches_jcmd(jdk21):
    """The running JVM in the chroot, read through /proc/PID/mem; its maps name host paths
    inside the chroot, which --sysroot maps back."""
    c = jdk21.live("summary")
    r = run_cli("nmt", "--pid", c.pid, "--sysroot", jdk21.root, "--json", timeout=CLI_TIMEOUT)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    assert doc["nmt"]["jdk"].startswith("21."), doc["nmt"]["layout"]
    bad = compare21(doc, c.jcmd)
    assert not bad, "\n".join(bad)
    check_headers_equal_tables(doc["nmt"])


def test_cli_text(jdk21):
    c = jdk21.core("summary")
    r = run_cli("nmt", c.core, "--sysroot", jdk21.root, timeout=CLI_TIMEOUT)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    for name in parse_jcmd(c.jcmd).categories:
        assert name in r.stdout
