"""`heapwalk nmt` on JDK 11 (Debian bullseye's openjdk-11, run in the bullseye chroot, glibc
2.31), against `jcmd VM.native_memory summary scale=1` and `detail` taken in the chroot
(chrootjdk, JDK11).

Same oracle and arithmetic as test_nmt.py (JDK 17), with what 11u does differently
(docs/hotspot-nmt.md, "JDK 11"): 21 types, 16-byte counters with a trailing _tracking_header,
a 40-byte NativeCallStack, the thread count kept in Thread Stack's malloc count, no total
malloc line and no Arena Chunk count in jcmd's text, and bit-field malloc headers without a
canary.  The engine reads the cores with ``--sysroot`` = the chroot (libjvm's .symtab from
there).  Nothing is skipped: when the chroot or the JDK cannot be made, the tests fail with
the reason.
"""

from __future__ import annotations

import json

import pytest

from chrootjdk import JDK11, ChrootJdkCorpora
from hwkit import CACHE, describe, no_traceback, run_cli
from nmtkit import parse_jcmd
from test_nmt import (check_sites_and_regions, check_vm_map, check_vm_map_text, chunk, compare_with_jcmd,
                      parse_jcmd_sites)

CLI_TIMEOUT = 300
HEADER = 16  # sizeof(MallocHeader)


@pytest.fixture(scope="module")
def jdk11():
    c = ChrootJdkCorpora(JDK11, CACHE)
    yield c
    c.close()


def raw_malloc(n: dict) -> dict[str, tuple[int, int]]:
    """NMT's own (unadjusted) malloc counters by category, without Thread Stack's: 11u counts
    threads there (record_malloc(0, mtThreadStack) per stack), blocks that have no header."""
    return {c["name"]: (c["malloc"]["bytes"], c["malloc"]["count"]) for c in n["raw"]
            if c["malloc"]["count"] and c["name"] != "Thread Stack"}


def check_headers_equal_tables(n: dict) -> None:
    """Header reconstruction == NMT's malloc counters per category; the header count equals
    _tracking_header's count, whose size is 16 bytes per header."""
    headers = {h["name"]: (h["bytes"], h["count"]) for h in n["headers"]["categories"]}
    assert headers == raw_malloc(n)
    count = sum(c for _, c in headers.values())
    assert n["all_mallocs"] == {"count": count, "bytes": HEADER * count}


@pytest.mark.parametrize("level", ["summary", "detail"])
def test_core_matches_jcmd(jdk11, level):
    c = jdk11.core(level)
    doc = jdk11.nmt(c.core)
    n = doc["nmt"]
    assert n["level"] == level
    assert n["source"] == "symtab"
    assert n["jdk"] and n["jdk"].startswith("11."), n["jdk"]
    assert "21 types" in n["layout"] and "40-byte NativeCallStack" in n["layout"], n["layout"]
    j = parse_jcmd(c.jcmd)
    assert j.total_malloc is None  # jcmd 11 prints no malloc total
    assert "Synchronizer" in j.categories and "Arena Chunk" in j.categories
    assert j.categories["Arena Chunk"].malloc[1] == 0  # ...nor an Arena Chunk count
    bad = compare_with_jcmd(doc, c.jcmd)
    assert not bad, "\n".join(bad)
    assert not [d for d in doc["diagnostics"] if d["kind"] != "note"], doc["diagnostics"]
    # Threads: Thread Stack's malloc count (jcmd's "(thread #N)").
    stack = next(x for x in n["raw"] if x["name"] == "Thread Stack")
    thread = next(x for x in n["categories"] if x["name"] == "Thread")
    assert thread["threads"] == stack["malloc"]["count"] == j.categories["Thread"].threads


@pytest.mark.parametrize("level", ["summary", "detail"])
def test_headers_equal_nmt_tables(jdk11, level):
    n = jdk11.nmt(jdk11.core(level).core)["nmt"]
    assert n["headers"]["layout"].startswith("bit fields"), n["headers"]["layout"]
    if level == "detail":
        assert "malloc site of the same type" in n["headers"]["layout"]
    check_headers_equal_tables(n)
    g = n["glibc"]
    assert n["headers"]["chunks"]["bytes"] + n["untracked_malloc"]["bytes"] == g["in_use"] + g["mmapped"]


@pytest.mark.parametrize("level", ["summary", "detail"])
def test_headers_without_jvm_symbols(jdk11, level):
    """--no-symbols: no canary anywhere, so the bit-field header is assumed (a note says so and
    that it is unproven); names from the built-in 11u table; the per-category malloc totals
    equal the tables read with symbols on these cores."""
    c = jdk11.core(level)
    with_syms = jdk11.nmt(c.core)["nmt"]
    r = run_cli("nmt", c.core, "--no-symbols", "--json", timeout=CLI_TIMEOUT)
    no_traceback(r)
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    assert doc is not None, describe(r)
    n = doc["nmt"]
    assert n["source"] == "headers", n["layout"]
    assert "11u" in n["names_from"], n["names_from"]
    assert any("not proven exact without symbols" in d["detail"] for d in doc["diagnostics"]), doc["diagnostics"]
    ours = {x["name"]: (x["malloc"]["bytes"], x["malloc"]["count"]) for x in n["categories"]}
    assert ours == raw_malloc(with_syms)


def test_nmt_off(jdk11):
    c = jdk11.core("off")
    n = jdk11.nmt(c.core)["nmt"]
    assert n["level"] == "off"
    assert n["categories"] == []
    # Level off: no header is looked for; every in-use chunk is untracked.
    assert n["headers"]["categories"] == [] and n["headers"]["layout"] == "none (NMT off)"
    assert n["untracked_malloc"]["bytes"] == n["glibc"]["in_use"] + n["glibc"]["mmapped"]
    # Without symbols the level is unknown: the few chunks that pass by chance are not counted.
    r = run_cli("nmt", c.core, "--no-symbols", "--json", timeout=CLI_TIMEOUT)
    no_traceback(r)
    doc = json.loads(r.stdout)
    h = doc["nmt"]["headers"]
    assert h["categories"] == [], h["categories"]
    assert any("too few for NMT to be on" in d["detail"] for d in doc["diagnostics"]), doc["diagnostics"]
    g = doc["nmt"]["glibc"]
    assert doc["nmt"]["untracked_malloc"]["bytes"] == g["in_use"] + g["mmapped"]


def test_untracked_covers_zlib(jdk11):
    c = jdk11.core("summary")
    n = jdk11.nmt(c.core)["nmt"]
    inflaters, deflaters = c.truth["inflaters"], c.truth["deflaters"]
    sizes = {s["size"]: s["count"] for s in n["headers"]["untracked_sizes"]}
    assert sizes.get(chunk(64 * 1024), 0) >= 4 * deflaters
    assert sizes.get(chunk(112), 0) >= inflaters + deflaters
    assert n["untracked_malloc"]["bytes"] >= inflaters * 32 * 1024 + deflaters * 256 * 1024


def test_detail_sites_and_regions(jdk11):
    c = jdk11.core("detail")
    doc = jdk11.nmt(c.core, detail=True)
    n = doc["nmt"]
    # 11u counts threads in Thread Stack (record_malloc(0, mtThreadStack)): no site has them.
    check_sites_and_regions(n, parse_jcmd_sites(c.jcmd_detail), not_malloc=("Thread Stack",))
    # 11u has no mtMetaspace: the metaspace is reserved as "Class".
    check_vm_map(doc, c.jcmd_detail, metaspace="Class")
    r = run_cli("nmt", c.core, "--detail", "--sysroot", jdk11.root, timeout=CLI_TIMEOUT)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    check_vm_map_text(r.stdout, c.jcmd_detail, metaspace="Class")


def test_live_pid_matches_jcmd(jdk11):
    """The running JVM in the chroot, read through /proc/PID/mem; --sysroot maps its paths."""
    c = jdk11.live("summary")
    r = run_cli("nmt", "--pid", c.pid, "--sysroot", jdk11.root, "--json", timeout=CLI_TIMEOUT)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    assert doc["nmt"]["jdk"].startswith("11."), doc["nmt"]["layout"]
    bad = compare_with_jcmd(doc, c.jcmd)
    assert not bad, "\n".join(bad)
    check_headers_equal_tables(doc["nmt"])


def test_cli_text(jdk11):
    c = jdk11.core("summary")
    r = run_cli("nmt", c.core, "--sysroot", jdk11.root, timeout=CLI_TIMEOUT)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    for name in parse_jcmd(c.jcmd).categories:
        assert name in r.stdout
    assert "bit fields" in r.stdout
