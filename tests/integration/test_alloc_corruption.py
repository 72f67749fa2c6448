"""Corruption corpus for the jemalloc and tcmalloc models (issue 16): broken cores derived
(corruptkit.py) from the cores test_jemalloc.py and test_tcmalloc.py make anyway — Debian's
stripped libjemalloc.so.2 and libtcmalloc.so.4 under corpora/jemalloc_stats.c and
corpora/tcmalloc_stats.c. Cycles in tcmalloc's thread-cache ring, its thread-cache free lists and
a span's object list, a jemalloc tcache ring that loops short of its head, smashed radix-tree
(rtree) leaves and roots (tcmalloc's page map and jemalloc's rtree), a span / extent claiming
memory the core does not have, span lengths and extent sizes that are absurd, cores cut short.

Every case must end within TIMEOUT seconds and MAX_RSS of memory, with diagnostics that name
the damaged address (or one clear error line), exit status 0 or 1 as README's "Exit status" says
(1 whenever an error diagnostic is printed), and no traceback or sanitizer report. The offsets
written here come from docs/jemalloc-layouts.md and docs/tcmalloc-layouts.md."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corruptkit as ck
from hwkit import CACHE, describe, gcore, heapwalk_env, no_traceback, run_cli, source_key, stop

TIMEOUT = 120  # seconds (ASan runs included); the intact cores take well under 2 s
MAX_RSS = 1 << 30  # bytes of peak RSS of one probe

JE_LIB = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
TC_LIB = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4")

# jemalloc 5.3.0 (docs/jemalloc-layouts.md)
JE_ARENA_TCACHE_QL = 10392  # arena_t.tcache_ql (first tcache_slow_t)
JE_RTREE_ROOT = 120  # rtree_t.root[] in je_arena_emap_global
JE_FANOUT = 1 << 18
# tcmalloc 2.10 (docs/tcmalloc-layouts.md)
TC_PAGEMAP = 524288  # PageHeap.pagemap_.root_
TC_ROOT, TC_LEAF = 1 << 17, 1 << 18
TC_NEXT = 4144  # ThreadCache.next_
TC_PAGE_SHIFT = 13

PROBE = r"""
import json, sys
from heapwalk import _native
path, which = sys.argv[1], sys.argv[2]
t = _native.open_core(path)
try:
    if which == "jemalloc":
        try:
            s = t.jemalloc(allocations=True)
            s["allocations"] = len(s["allocations"])
        except RuntimeError as exc:
            s = {"error": str(exc)}
    else:
        s = t.tcmalloc()
        if s is not None:
            s["allocations"] = len(t.tcmalloc_allocations("all"))
    json.dump(s, sys.stdout)
finally:
    t.close()
"""


def read(img: ck.CoreImage, addr: int, n: int) -> bytes:
    off = img.offset_of(addr)
    return bytes(img.b[off:off + n])


def u32(img: ck.CoreImage, addr: int) -> int:
    return int.from_bytes(read(img, addr, 4), "little")


def probe(core: Path, which: str) -> dict:
    """The model's document (allocations counted), in a fresh interpreter, timed and measured."""
    t0 = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = subprocess.run([sys.executable, "-c", PROBE, str(core), which], env=heapwalk_env(),
                       capture_output=True, text=True, timeout=TIMEOUT)
    no_traceback(r)
    assert "Sanitizer" not in r.stderr and "runtime error:" not in r.stderr, describe(r)
    assert r.returncode == 0, describe(r)
    assert time.monotonic() - t0 < TIMEOUT
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert peak <= max(MAX_RSS, before * 1024), f"peak RSS {peak >> 20} MiB"
    return json.loads(r.stdout) or {}


def cli_clean(core: Path, *cmd: str) -> dict | None:
    """One CLI command on the broken core: exit 0/1 (1 when an error diagnostic is printed), no
    traceback; returns its JSON document."""
    r = run_cli(*cmd, str(core), "--json", timeout=TIMEOUT)
    no_traceback(r)
    both = r.stdout + r.stderr
    assert "Sanitizer" not in both and "runtime error:" not in both, describe(r)
    assert r.returncode in (0, 1), describe(r)
    doc = json.loads(r.stdout) if r.stdout.lstrip().startswith("{") else None
    if doc is None:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.lstrip().startswith("hint:")]
        assert r.returncode == 1 and len(lines) == 1, describe(r)
        return None
    if any(d.get("severity") == "error" for d in all_diagnostics(doc)):
        assert r.returncode == 1, f"error diagnostics with exit 0\n{describe(r)}"
    return doc


def all_diagnostics(doc: dict) -> list[dict]:
    """The document's diagnostics and its allocator sections' (jemalloc, tcmalloc)."""
    out = list(doc.get("diagnostics", []))
    for key in ("jemalloc", "tcmalloc"):
        if isinstance(doc.get(key), dict):
            out += doc[key].get("diagnostics", [])
    return out


def errors_naming(doc: dict, address: int) -> list[dict]:
    """The model's error diagnostics that name `address` (as their address or in their text)."""
    h = "%#x" % address
    return [d for d in doc.get("diagnostics", []) if d.get("severity") == "error"
            and (d.get("address") == address or h in d.get("detail", ""))]


# -- the intact cores ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def je_core() -> Path:
    """test_jemalloc.py's core of jemalloc_stats on Debian's stripped library (same cache key)."""
    if not JE_LIB.exists() or not Path("/usr/include/jemalloc/jemalloc.h").exists():
        pytest.skip("libjemalloc-dev is not installed (scripts/setup)")
    from test_jemalloc import _binary  # noqa: PLC0415

    binary = _binary()
    outdir = CACHE / f"jemalloc_stats-{source_key('jemalloc_stats', '-ljemalloc', 'stripped')}"
    core = outdir / "core"
    if not core.exists():
        outdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        r, w = os.pipe()
        proc = subprocess.Popen([str(binary), str(w), str(outdir)], pass_fds=(w,), env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(w)
        from hwkit import await_ready  # noqa: PLC0415

        await_ready(proc, r, 120, "jemalloc_stats")
        try:
            gcore(proc.pid, core)
        finally:
            stop(proc)
    return core


@pytest.fixture(scope="module")
def je_doc(je_core) -> dict:
    doc = probe(je_core, "jemalloc")
    assert "error" not in doc and doc["rtree"], doc
    assert not [d for d in doc["diagnostics"] if d["severity"] == "error"], doc["diagnostics"]
    return doc


@pytest.fixture(scope="module")
def tc_core() -> Path:
    if not TC_LIB.exists() or not Path("/usr/include/gperftools/malloc_extension_c.h").exists():
        pytest.skip("libgoogle-perftools-dev is not installed (scripts/setup)")
    from test_tcmalloc import _core  # noqa: PLC0415

    return _core("debian")[0]


@pytest.fixture(scope="module")
def tc_doc(tc_core) -> dict:
    doc = probe(tc_core, "tcmalloc")
    assert doc.get("allocator") == "tcmalloc", doc
    assert not [d for d in doc["diagnostics"] if d["severity"] == "error"], doc["diagnostics"]
    return doc


def broken(src: Path, tmp_path: Path, edit) -> Path:
    return ck.derive(src, tmp_path / "broken.core", edit)


def check_cli(core: Path, which: str, address: int | None) -> None:
    """arenas and chunks on the broken core: clean, exit 1 when the damage is reported, and one
    of them reports it naming `address`."""
    docs = [cli_clean(core, "arenas"), cli_clean(core, "chunks", "--limit", "1000")]
    if address is not None:
        named = [d for doc in docs if doc for d in errors_naming({"diagnostics": all_diagnostics(doc)}, address)]
        assert named, [all_diagnostics(doc) for doc in docs if doc]


# -- jemalloc --------------------------------------------------------------------------------------


def _je_leaf(img: ck.CoreImage, rtree: int) -> tuple[int, int]:
    """(root index, leaf address) of the first populated root slot."""
    for i in range(JE_FANOUT):
        leaf = img.u64(rtree + JE_RTREE_ROOT + 8 * i)
        if leaf:
            return i, leaf
    raise AssertionError("empty radix tree")


def _je_size_index(size: int) -> int:
    """jemalloc's size class index of `size` (sz_index2size_tab, LG_QUANTUM 4)."""
    tab = [8, 16, 32, 48, 64]
    lg = 6
    while len(tab) < 232:
        for k in range(1, 5):
            tab.append((1 << lg) + k * (1 << (lg - 2)))
        lg += 1
    return tab.index(size)


def test_jemalloc_tcache_ring_loops_short_of_its_head(je_core, je_doc, tmp_path):
    """The tcache_ql ring of an arena: its first tcache_slow_t links to a second one (written
    over memory the program holds, naming the same tcache_t) that links to itself."""
    img0 = ck.CoreImage.load(je_core)
    arena = next(a for a in je_doc["arenas"] if img0.u64(a["address"] + JE_ARENA_TCACHE_QL))["address"]
    first = img0.u64(arena + JE_ARENA_TCACHE_QL)
    held = [a for a, size in _je_held(je_core) if size >= 256]
    fake = (held[0] + 63) & ~63

    def edit(img):
        img.put_u64(first, fake)
        img.put_u64(fake, fake)
        img.put_u64(fake + 8, first)
        img.put_u64(fake + 168, img.u64(first + 168))  # tcache_slow_t.tcache

    bad = broken(je_core, tmp_path, edit)
    got = probe(bad, "jemalloc")
    assert [d for d in got["diagnostics"] if d["kind"] == "cycle" and d["address"] == fake], got["diagnostics"]
    check_cli(bad, "jemalloc", fake)


def test_jemalloc_rtree_root_names_one_leaf_everywhere(je_core, je_doc, tmp_path):
    """4096 root slots all naming the first leaf: read once, the repeats reported, bounded."""
    rtree = je_doc["rtree"]
    img0 = ck.CoreImage.load(je_core)
    i0, leaf = _je_leaf(img0, rtree)

    def edit(img):
        for i in range(4096):
            if i != i0:
                img.put_u64(rtree + JE_RTREE_ROOT + 8 * i, leaf)

    bad = broken(je_core, tmp_path, edit)
    got = probe(bad, "jemalloc")
    assert errors_naming(got, leaf), got["diagnostics"]
    check_cli(bad, "jemalloc", leaf)


def test_jemalloc_rtree_leaf_smashed(je_core, je_doc, tmp_path):
    """Leaf elements naming unmapped edata_t's, an edata_t whose size was smashed to 1 TiB and
    one whose address is not its page."""
    rtree = je_doc["rtree"]
    img0 = ck.CoreImage.load(je_core)
    _, leaf = _je_leaf(img0, rtree)
    elms = [leaf + 8 * j for j in range(JE_FANOUT) if img0.u64(leaf + 8 * j)]
    edatas = []
    for e in elms:
        ed = ((img0.u64(e) << 16) & (1 << 64) - 1) >> 16 & ~127
        if ed not in edatas:
            edatas.append(ed)
    assert len(edatas) >= 3
    victim = edatas[1]

    def edit(img):
        img.put_u64(elms[0], (0x4141414141 << 7) | 1)
        img.put_u64(victim + 16, (1 << 40) | (img.u64(victim + 16) & 0xfff))
        img.put_u64(edatas[2] + 8, img.u64(edatas[2] + 8) + (1 << 30))

    bad = broken(je_core, tmp_path, edit)
    got = probe(bad, "jemalloc")
    assert errors_naming(got, victim), got["diagnostics"]
    assert errors_naming(got, edatas[2]), got["diagnostics"]
    assert [d for d in got["diagnostics"] if d["kind"] == "unreadable"], got["diagnostics"]
    assert got["allocations"] > 0
    check_cli(bad, "jemalloc", victim)


def test_jemalloc_extent_outside_memory(je_core, je_doc, tmp_path):
    """A leaf element for a page the core does not have names a well-formed active extent there:
    reported as outside the target's memory, not listed."""
    rtree = je_doc["rtree"]
    img0 = ck.CoreImage.load(je_core)
    ri, leaf = _je_leaf(img0, rtree)
    loads = [(p.vaddr, p.vaddr + p.memsz) for p in img0.phdrs() if p.type == 1]
    # A page in this leaf's 1 GiB that no segment holds.
    page = next(a for a in ((ri << 30) | (j << 12) for j in range(JE_FANOUT))
                if not any(s <= a < e for s, e in loads))
    # The fake edata_t: 128 bytes, 128-aligned, inside a big allocation the program holds.
    held = [a for a in _je_held(je_core) if a[1] >= 4096]
    assert held, "jemalloc_stats holds no allocation of 4 KiB or more"
    fake = (held[0][0] + 127) & ~127
    szind = _je_size_index(4096)

    def edit(img):
        img.put_u64(fake, (szind << 20))  # arena 0, slab 0, state active
        img.put_u64(fake + 8, page)
        img.put_u64(fake + 16, 4096)
        img.put_u64(leaf + 8 * ((page >> 12) & (JE_FANOUT - 1)), fake | 1)

    bad = broken(je_core, tmp_path, edit)
    got = probe(bad, "jemalloc")
    assert [d for d in errors_naming(got, fake) if d["kind"] == "outside_heap"], got["diagnostics"]
    check_cli(bad, "jemalloc", fake)


def _je_held(core: Path) -> list[tuple[int, int]]:
    truth = json.loads((core.parent / "truth.json").read_text())
    return [(h[0], h[1]) for h in truth.get("held", [])]


def test_jemalloc_truncated_core(je_core, je_doc, tmp_path):
    bad = ck.truncate(je_core, tmp_path / "cut.core", je_core.stat().st_size * 6 // 10)
    probe(bad, "jemalloc")
    cli_clean(bad, "arenas")
    cli_clean(bad, "chunks", "--limit", "1000")


# -- tcmalloc --------------------------------------------------------------------------------------


def _tc_spans(img: ck.CoreImage, pageheap: int) -> list[tuple[int, int]]:
    """(page map element address, Span address) of every span head in the page map."""
    out = []
    root = pageheap + TC_PAGEMAP
    for i in range(TC_ROOT):
        leaf = img.u64(root + 8 * i)
        if not leaf:
            continue
        raw = read(img, leaf, 8 * TC_LEAF)
        for j in range(TC_LEAF):
            s = int.from_bytes(raw[8 * j:8 * j + 8], "little")
            if s and img.u64(s) == (i << 18) | j:
                out.append((leaf + 8 * j, s))
    return out


def test_tcmalloc_thread_cache_ring_cycles(tc_core, tc_doc, tmp_path):
    """The last ThreadCache's next_ names the first: one cycle diagnostic, each cache once."""
    caches = [c["address"] for c in tc_doc["thread_caches"]]
    assert len(caches) >= 2

    def edit(img):
        img.put_u64(caches[-1] + TC_NEXT, caches[0])

    bad = broken(tc_core, tmp_path, edit)
    got = probe(bad, "tcmalloc")
    assert [d for d in errors_naming(got, caches[0]) if d["kind"] == "cycle"], got["diagnostics"]
    assert len(got["thread_caches"]) == len(caches)
    check_cli(bad, "tcmalloc", caches[0])


def test_tcmalloc_thread_cache_free_list_cycles(tc_core, tc_doc, tmp_path):
    """A thread cache's free list whose third object links back to the first."""
    img0 = ck.CoreImage.load(tc_core)
    for c in tc_doc["thread_caches"]:
        for cl in range(1, len(tc_doc["size_classes"])):
            fl = c["address"] + 32 * cl
            if u32(img0, fl + 8) >= 3:
                break
        else:
            continue
        break
    else:
        pytest.skip("no thread cache list of 3 objects")
    o0 = img0.u64(fl)
    o2 = img0.u64(img0.u64(o0))

    def edit(img):
        img.put_u64(o2, o0)

    bad = broken(tc_core, tmp_path, edit)
    got = probe(bad, "tcmalloc")
    assert [d for d in errors_naming(got, o0) if d["kind"] == "cycle"], got["diagnostics"]
    check_cli(bad, "tcmalloc", o0)


def test_tcmalloc_span_object_list_cycles(tc_core, tc_doc, tmp_path):
    """A span's free object list whose first object links to itself."""
    img0 = ck.CoreImage.load(tc_core)
    spans = _tc_spans(img0, tc_doc["globals"]["pageheap_"])
    victim = next((s for _, s in spans if img0.u64(s + 32) and (u32(img0, s + 40) >> 16) & 0xff
                   and img0.u64(img0.u64(s + 32))), None)
    if victim is None:
        pytest.skip("no span with two free objects")
    o0 = img0.u64(victim + 32)

    def edit(img):
        img.put_u64(o0, o0)

    bad = broken(tc_core, tmp_path, edit)
    got = probe(bad, "tcmalloc")
    assert [d for d in errors_naming(got, o0) if d["kind"] == "cycle"], got["diagnostics"]
    check_cli(bad, "tcmalloc", o0)


def test_tcmalloc_span_lengths_absurd(tc_core, tc_doc, tmp_path):
    """A small-object span claiming 2^34 pages and a large in-use span claiming 8 TiB: both
    reported and skipped, the walk bounded."""
    img0 = ck.CoreImage.load(tc_core)
    spans = _tc_spans(img0, tc_doc["globals"]["pageheap_"])
    small = next(s for _, s in spans if (u32(img0, s + 40) >> 16) & 0xff and not (u32(img0, s + 40) >> 24) & 3)
    large = next((s for _, s in spans if not (u32(img0, s + 40) >> 16) & 0xff and not (u32(img0, s + 40) >> 24) & 3),
                 None)

    def edit(img):
        img.put_u64(small + 8, 1 << 34)
        if large:
            img.put_u64(large + 8, 1 << 30)

    bad = broken(tc_core, tmp_path, edit)
    got = probe(bad, "tcmalloc")
    assert [d for d in errors_naming(got, small) if d["kind"] == "layout"], got["diagnostics"]
    if large:
        assert errors_naming(got, large), got["diagnostics"]
    check_cli(bad, "tcmalloc", small)


def test_tcmalloc_page_map_root_names_one_leaf_everywhere(tc_core, tc_doc, tmp_path):
    root = tc_doc["globals"]["pageheap_"] + TC_PAGEMAP
    img0 = ck.CoreImage.load(tc_core)
    i0, leaf = next((i, img0.u64(root + 8 * i)) for i in range(TC_ROOT) if img0.u64(root + 8 * i))

    def edit(img):
        for i in range(4096):
            if i != i0:
                img.put_u64(root + 8 * i, leaf)

    bad = broken(tc_core, tmp_path, edit)
    got = probe(bad, "tcmalloc")
    assert errors_naming(got, leaf), got["diagnostics"]
    check_cli(bad, "tcmalloc", leaf)


def test_tcmalloc_span_outside_memory(tc_core, tc_doc, tmp_path):
    """A page map element for a page the core does not have names a well-formed in-use span
    there (written over a free object): reported as outside the target's memory."""
    pageheap = tc_doc["globals"]["pageheap_"]
    root = pageheap + TC_PAGEMAP
    img0 = ck.CoreImage.load(tc_core)
    i0, leaf = next((i, img0.u64(root + 8 * i)) for i in range(TC_ROOT) if img0.u64(root + 8 * i))
    loads = [(p.vaddr, p.vaddr + p.memsz) for p in img0.phdrs() if p.type == 1]
    raw = read(img0, leaf, 8 * TC_LEAF)
    j = next(j for j in range(TC_LEAF) if not int.from_bytes(raw[8 * j:8 * j + 8], "little")
             and not any(s <= ((i0 << 18) | j) << TC_PAGE_SHIFT < e for s, e in loads))
    page = (i0 << 18) | j
    # A span struct's 48 bytes inside a large allocation the program holds.
    truth = json.loads((tc_core.parent / "truth.json").read_text())
    held = [h for h in truth["held"] if h[2] >= 4096]
    assert held
    fake = (held[0][0] + 63) & ~63

    def edit(img):
        for k in range(6):
            img.put_u64(fake + 8 * k, 0)
        img.put_u64(fake, page)
        img.put_u64(fake + 8, 1)
        img.put_u64(leaf + 8 * j, fake)

    bad = broken(tc_core, tmp_path, edit)
    got = probe(bad, "tcmalloc")
    assert [d for d in errors_naming(got, fake) if d["kind"] == "outside_heap"], got["diagnostics"]
    check_cli(bad, "tcmalloc", fake)


def test_tcmalloc_truncated_core(tc_core, tc_doc, tmp_path):
    bad = ck.truncate(tc_core, tmp_path / "cut.core", tc_core.stat().st_size * 6 // 10)
    probe(bad, "tcmalloc")
    cli_clean(bad, "arenas")
    cli_clean(bad, "chunks", "--limit", "1000")
