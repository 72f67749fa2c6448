"""`report` on jemalloc 5.3.0 and gperftools tcmalloc 2.10 (issue 16): the allocator's part
(figures in its own terms, what its release call returns, verdicts with its own actions) and the
mappings attributed to it, against the allocator's own statistics printed by the programs before
they park:

- corpora/jemalloc_stats.c and corpora/tcmalloc_stats.c (multi-threaded; mallctl after "epoch",
  MallocExtension_GetNumericProperty): every figure of the report's allocator section equals
  the allocator's own;
- corpora/alloc_retain.c, preloaded with either allocator: "healthy" (holds what it allocated:
  no alarming verdict) and "retain" (frees 90 %: jemalloc with dirty_decay_ms:-1 keeps it dirty,
  tcmalloc with TCMALLOC_RELEASE_RATE=0 keeps it in the page heap) — the verdict names the
  allocator's own action with the allocator's own figure;
- a JVM (corpora/java/InflaterRetain.java, NMT summary) with each allocator preloaded: report
  reconciles NMT, the allocator and the mappings; the Inflater leak is named as on glibc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hwkit import CACHE, CFLAGS, CORPORA, await_ready, gcore, run_cli, source_key, stop

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4")
PAGE = 4096
MiB = 1 << 20

need_je = pytest.mark.skipif(not JEMALLOC.exists() or not Path("/usr/include/jemalloc/jemalloc.h").exists(),
                             reason="libjemalloc-dev is not installed (scripts/setup)")
need_tc = pytest.mark.skipif(not TCMALLOC.exists() or
                             not Path("/usr/include/gperftools/malloc_extension_c.h").exists(),
                             reason="libgoogle-perftools-dev is not installed (scripts/setup)")


def _binary(name: str, *link: str) -> Path:
    out = CACHE / "bin" / f"{name}-{source_key(name, *link)}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run(["gcc", *CFLAGS, "-o", str(tmp), str(CORPORA / f"{name}.c"), *link],
                       check=True, capture_output=True)
        tmp.rename(out)
    return out


def _core(tag: str, argv_before_fd: list[str], argv_after_fd: list[str], env: dict[str, str]) -> tuple[Path, dict]:
    """A cached gcore of a program started with READY_FD between the two argument lists."""
    d = CACHE / "cores" / ("alloc-report-" + tag + "-" +
                           source_key("alloc_retain", *argv_before_fd, *argv_after_fd,
                                      *sorted(f"{k}={v}" for k, v in env.items())))
    if not (d / "complete").exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        argv_before_fd = [a.replace("OUTDIR", str(d)) for a in argv_before_fd]
        argv_after_fd = [a.replace("OUTDIR", str(d)) for a in argv_after_fd]
        r, w = os.pipe()
        full = {**os.environ, **env}
        if "LD_PRELOAD" not in env:
            full.pop("LD_PRELOAD", None)
        proc = subprocess.Popen([*argv_before_fd, str(w), *argv_after_fd], pass_fds=(w,), env=full,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(w)
        await_ready(proc, r, 120, tag)
        try:
            gcore(proc.pid, d / "core")
        finally:
            stop(proc)
        (d / "complete").write_text("ok\n")
    return d / "core", json.loads((d / "truth.json").read_text())


def _report(core: Path, *extra: str) -> tuple[dict, str]:
    r = run_cli("report", "--json", str(core), *extra, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    t = run_cli("report", str(core), *extra, timeout=600)
    assert t.returncode == 0, t.stderr
    return doc, t.stdout


def _section(doc: dict, allocator: str) -> dict:
    got = [a for a in doc["allocators"] if a["allocator"] == allocator]
    assert len(got) == 1, doc["allocators"]
    return got[0]


def _groups(doc: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in doc["mappings"]["groups"]:
        out[g["label"]] = out.get(g["label"], 0) + g["mapped_bytes"]
    return out


def _check_sum(doc: dict) -> None:
    assert sum(g["mapped_bytes"] for g in doc["mappings"]["groups"]) == doc["mappings"]["mapped_bytes"]


def _verdict_lines(text: str) -> list[str]:
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("verdict"))
    return lines[i + 1:]


# ---------------------------------------------------------------------------------------------
# jemalloc
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def je_stats():
    binary = _binary("jemalloc_stats", "-ljemalloc")
    return _core("jemalloc-stats", [str(binary)], ["OUTDIR"], {})


def _je_retain(mode: str, conf: str | None = None):
    binary = _binary("alloc_retain", "-ldl")
    env = {"LD_PRELOAD": str(JEMALLOC)}
    if conf:
        env["MALLOC_CONF"] = conf
    return _core("je-" + mode, [str(binary), mode, "OUTDIR"], [], env)


@need_je
def test_jemalloc_report_figures_equal_jemallocs_own(je_stats):
    core, truth = je_stats
    doc, text = _report(core, "--no-classes")
    assert doc["allocator"] == "jemalloc"
    je = _section(doc, "jemalloc")
    assert je["owns_malloc"] and je["version"] == "jemalloc 5.3.0"
    f = je["figures"]
    for k, v in truth["stats"].items():
        assert f[k] == v, (k, f[k], v)
    arenas = {a["index"]: a for a in truth["arenas"]}
    assert sorted(a["index"] for a in je["arenas"]) == sorted(arenas)
    for a in je["arenas"]:
        want = arenas[a["index"]]
        for k in ("pactive", "pdirty", "pmuzzy", "retained", "mapped", "resident", "tcache_bytes"):
            assert a["stats"][k] == want[k], (a["index"], k)
    dirty = sum(a["pdirty"] for a in truth["arenas"]) * PAGE
    muzzy = sum(a["pmuzzy"] for a in truth["arenas"]) * PAGE
    assert f["dirty"] == dirty and f["muzzy"] == muzzy
    # arena.<i>.purge returns the dirty and the muzzy pages.
    assert f["purge"] == je["reclaimable_bytes"] == dirty + muzzy
    assert f["tcache"] == sum(a["tcache_bytes"] for a in truth["arenas"])
    # The mappings: jemalloc's extents and base blocks are its own groups; their bytes are
    # jemalloc's stats.mapped, its retained address space stats.retained.
    groups = _groups(doc)
    _check_sum(doc)
    assert groups["jemalloc extents"] + groups["jemalloc metadata (base)"] == truth["stats"]["mapped"], groups
    assert groups.get("jemalloc retained (address space only)", 0) == truth["stats"]["retained"], groups
    assert "jemalloc 5.3.0" in text.splitlines()[0]
    assert "arena.<i>.purge would return" in text
    # glibc's main arena is still reported beside it.
    assert doc["glibc"]["version"] and "glibc malloc" in text


@need_je
def test_jemalloc_healthy_program_gets_no_alarming_verdict():
    core, truth = _je_retain("healthy")
    assert truth["allocator"] == "jemalloc"
    doc, text = _report(core)
    assert doc["allocator"] == "jemalloc"
    v = doc["verdict"]
    assert v[0]["cause"] == "in-use", v
    assert not [x for x in v if x["cause"].startswith("jemalloc-")], v
    lines = _verdict_lines(text)
    assert "no cause reaches" in lines[0] and "jemalloc:" in lines[0], lines
    f = _section(doc, "jemalloc")["figures"]
    assert f["allocated"] == truth["stats"]["allocated"]


@need_je
def test_jemalloc_dirty_pages_without_decay_are_the_cause():
    core, truth = _je_retain("retain", "dirty_decay_ms:-1")
    assert truth["dirty_decay_ms"] == -1
    doc, text = _report(core)
    je = _section(doc, "jemalloc")
    dirty = sum(a["pdirty"] for a in truth["arenas"]) * PAGE
    muzzy = sum(a["pmuzzy"] for a in truth["arenas"]) * PAGE
    assert dirty >= 20 * MiB, truth
    assert je["figures"]["dirty"] == dirty and je["figures"]["dirty_decay_ms"] == -1
    first = doc["verdict"][0]
    assert first["cause"] == "jemalloc-dirty" and first["allocator"] == "jemalloc", doc["verdict"]
    assert first["bytes"] == dirty
    assert "dirty_decay_ms:10000" in first["action"] and "dirty_decay_ms:-1" in first["action"], first
    assert "background_thread:true" in first["action"] and "arena.4096.purge" in first["action"], first
    assert "-1 (never)" in first["evidence"], first
    assert first["share"] >= 0.05
    assert "purge would return" in first["summary"] and str(dirty + muzzy) not in first["summary"]
    lines = _verdict_lines(text)
    assert lines[0].startswith("  1. jemalloc keeps ") and "dirty pages not yet decayed" in lines[0], lines
    # Nothing virtual ranks before what is resident.
    kinds = [bool(x.get("virtual")) for x in doc["verdict"]]
    assert kinds == sorted(kinds)


@need_je
def test_jemalloc_report_html(tmp_path):
    core, _ = _je_retain("retain", "dirty_decay_ms:-1")
    out = tmp_path / "r.html"
    r = run_cli("report", "--no-classes", "--html", str(out), str(core), timeout=600)
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert '<section id="jemalloc">' in page and 'id="chart-jemalloc"' in page, page[:2000]
    assert "purge would return" in page and "jemalloc-dirty" in page


# ---------------------------------------------------------------------------------------------
# tcmalloc
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tc_stats():
    binary = _binary("tcmalloc_stats", "-ltcmalloc")
    return _core("tcmalloc-stats", [str(binary), "4", "OUTDIR"], [], {})


def _tc_retain(mode: str, env: dict[str, str] | None = None):
    binary = _binary("alloc_retain", "-ldl")
    return _core("tc-" + mode, [str(binary), mode, "OUTDIR"], [], {"LD_PRELOAD": str(TCMALLOC), **(env or {})})


@need_tc
def test_tcmalloc_report_figures_equal_tcmallocs_own(tc_stats):
    core, truth = tc_stats
    doc, text = _report(core, "--no-classes")
    assert doc["allocator"] == "tcmalloc"
    tc = _section(doc, "tcmalloc")
    p = truth["properties"]
    f = tc["figures"]
    assert f["heap_size"] == p["generic.heap_size"]
    assert f["in_use"] == p["generic.current_allocated_bytes"]
    assert f["pageheap_free"] == p["tcmalloc.pageheap_free_bytes"]
    assert f["pageheap_unmapped"] == p["tcmalloc.pageheap_unmapped_bytes"]
    assert f["central"] == p["tcmalloc.central_cache_free_bytes"]
    assert f["transfer"] == p["tcmalloc.transfer_cache_free_bytes"]
    assert f["thread"] == p["tcmalloc.thread_cache_free_bytes"]
    # ReleaseFreeMemory() returns the page heap's free (normal) spans.
    assert f["release_free_memory"] == tc["reclaimable_bytes"] == p["tcmalloc.pageheap_free_bytes"]
    groups = _groups(doc)
    _check_sum(doc)
    spans = groups.get("tcmalloc page heap spans", 0)
    unmapped = groups.get("tcmalloc unmapped spans (address space only)", 0)
    assert spans + unmapped == p["generic.heap_size"], groups
    assert unmapped == p["tcmalloc.pageheap_unmapped_bytes"], groups
    assert "ReleaseFreeMemory() would return" in text and "gperftools 2.10" in text.splitlines()[0]


@need_tc
def test_tcmalloc_healthy_program_gets_no_alarming_verdict():
    core, truth = _tc_retain("healthy")
    assert truth["allocator"] == "tcmalloc"
    doc, text = _report(core)
    v = doc["verdict"]
    assert v[0]["cause"] == "in-use", v
    assert not [x for x in v if x["cause"].startswith("tcmalloc-")], v
    assert "tcmalloc:" in _verdict_lines(text)[0]


@need_tc
def test_tcmalloc_page_heap_free_is_the_cause():
    core, truth = _tc_retain("retain", {"TCMALLOC_RELEASE_RATE": "0"})
    p = truth["properties"]
    assert p["tcmalloc.pageheap_free_bytes"] >= 10 * MiB, p
    doc, text = _report(core)
    tc = _section(doc, "tcmalloc")
    assert tc["figures"]["pageheap_free"] == p["tcmalloc.pageheap_free_bytes"]
    causes = {v["cause"]: v for v in doc["verdict"]}
    free = causes["tcmalloc-pageheap-free"]
    assert free["bytes"] == p["tcmalloc.pageheap_free_bytes"]
    assert "ReleaseFreeMemory()" in free["action"] and "TCMALLOC_RELEASE_RATE" in free["action"], free
    # Each cause's bytes are tcmalloc's own figure.
    if "tcmalloc-thread-caches" in causes:
        assert causes["tcmalloc-thread-caches"]["bytes"] == p["tcmalloc.thread_cache_free_bytes"]
        assert "TCMALLOC_MAX_TOTAL_THREAD_CACHE_BYTES" in causes["tcmalloc-thread-caches"]["action"]
    if "tcmalloc-central-caches" in causes:
        assert causes["tcmalloc-central-caches"]["bytes"] == (p["tcmalloc.central_cache_free_bytes"] +
                                                               p["tcmalloc.transfer_cache_free_bytes"])
    top = doc["verdict"][0]
    assert top["allocator"] == "tcmalloc" and not top.get("virtual"), doc["verdict"]
    assert any("ReleaseFreeMemory() would return" in line for line in _verdict_lines(text))


# ---------------------------------------------------------------------------------------------
# A JVM with jemalloc or tcmalloc preloaded (NMT summary)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jdk():
    import nmtkit  # noqa: PLC0415
    if not nmtkit.have_jdk():
        pytest.skip("no JDK")
    import verdictkit  # noqa: PLC0415
    return verdictkit


def _jvm(jdk, lib: Path):
    return jdk.scenario("leak-" + lib.name.split(".")[0], ["mode=leak", "inflaters=380", "threads=4"],
                        env={"LD_PRELOAD": str(lib)})


def _check_jvm(jdk, s, allocator: str) -> tuple[dict, str]:
    doc, text = _report(s.core)
    assert doc["allocator"] == allocator
    sec = _section(doc, allocator)
    assert sec["owns_malloc"]
    # NMT is read and its reservations labelled beside the allocator's memory.
    nmt = doc["nmt"]
    assert nmt is not None and nmt["level"] == "summary"
    jcmd = s.nmt
    assert nmt["total_committed"] >= 0 and jcmd.total[1] > 0
    groups = _groups(doc)
    _check_sum(doc)
    assert "Java heap" in groups, groups
    mine = sum(b for k, b in groups.items() if k.startswith(allocator))
    assert mine >= 0.5 * sec["in_use_bytes"], (groups, sec["in_use_bytes"])
    # glibc's main arena is still there.
    assert "glibc malloc" in text
    # The allocator's in-use split by NMT's headers: NMT's own malloc total is what the headers
    # carry plus the 16-byte headers themselves (jcmd's "malloc=" total counts its tracking
    # overhead), the blocks the attach operation holds while it reports aside.
    split = sec["nmt"]
    assert split is not None and split["headers"] == "canary", split
    jm = jcmd.total_malloc[0]
    assert abs(split["tracked_bytes"] + 16 * split["tracked_count"] - jm) <= 0.01 * jm, (split, jm)
    un = nmt["untracked_malloc"]
    n = s.truth["inflaters"]
    assert un["bytes"] >= n * 32768, (un, n)
    return doc, text


@need_je
def test_jvm_on_jemalloc_reconciles_nmt_jemalloc_and_mappings(jdk):
    _check_jvm(jdk, _jvm(jdk, JEMALLOC), "jemalloc")


@need_tc
def test_jvm_on_tcmalloc_reconciles_nmt_tcmalloc_and_mappings(jdk):
    _check_jvm(jdk, _jvm(jdk, TCMALLOC), "tcmalloc")


@need_je
@need_tc
@pytest.mark.parametrize("lib", [JEMALLOC, TCMALLOC], ids=["jemalloc", "tcmalloc"])
def test_jvm_names_the_inflater_leak_as_on_glibc(jdk, lib):
    s = _jvm(jdk, lib)
    doc, text = _report(s.core)
    n = s.truth["inflaters"]
    zlib = next(c for c in doc["classes"] if c["name"] == "zlib inflate stream + window")
    assert zlib["count"] == n
    first = doc["verdict"][0]
    assert first["cause"] == "untracked-malloc", doc["verdict"]
    assert ("%d zlib inflate streams" % n) in first["summary"] and "end()" in first["action"], first


# ---------------------------------------------------------------------------------------------
# Live processes
# ---------------------------------------------------------------------------------------------

def _live(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, dict]:
    binary = _binary("alloc_retain", "-ldl")
    r, w = os.pipe()
    proc = subprocess.Popen([str(binary), "retain", str(tmp_path), str(w)], pass_fds=(w,),
                            env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    os.close(w)
    await_ready(proc, r, 120, "alloc_retain (live)")
    return proc, json.loads((tmp_path / "truth.json").read_text())


def _live_report(pid: int) -> dict:
    r = run_cli("report", "--json", "--no-classes", "--pid", str(pid), timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@need_je
def test_live_jemalloc_dirty_pages_are_the_cause(tmp_path):
    proc, truth = _live(tmp_path, {"LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": "dirty_decay_ms:-1"})
    try:
        doc = _live_report(proc.pid)
    finally:
        stop(proc)
    assert doc["target"]["kind"] == "live" and doc["allocator"] == "jemalloc"
    je = _section(doc, "jemalloc")
    dirty = sum(a["pdirty"] for a in truth["arenas"]) * PAGE
    for k, v in truth["stats"].items():
        assert je["figures"][k] == v, k
    assert je["figures"]["dirty"] == dirty
    first = doc["verdict"][0]
    assert first["cause"] == "jemalloc-dirty" and first["bytes"] == dirty, doc["verdict"]
    assert doc["footprint"]["source"] == "resident"
    _check_sum(doc)
    groups = _groups(doc)
    assert groups["jemalloc extents"] + groups["jemalloc metadata (base)"] == truth["stats"]["mapped"], groups


@need_tc
def test_live_tcmalloc_page_heap_free_is_the_cause(tmp_path):
    proc, truth = _live(tmp_path, {"LD_PRELOAD": str(TCMALLOC), "TCMALLOC_RELEASE_RATE": "0"})
    try:
        doc = _live_report(proc.pid)
    finally:
        stop(proc)
    assert doc["target"]["kind"] == "live" and doc["allocator"] == "tcmalloc"
    p = truth["properties"]
    tc = _section(doc, "tcmalloc")
    assert tc["figures"]["pageheap_free"] == p["tcmalloc.pageheap_free_bytes"]
    assert tc["figures"]["in_use"] == p["generic.current_allocated_bytes"]
    first = doc["verdict"][0]
    assert first["cause"] == "tcmalloc-pageheap-free", doc["verdict"]
    assert first["bytes"] == p["tcmalloc.pageheap_free_bytes"]


@need_je
def test_jemalloc_options_from_a_library_with_symbols():
    """A -g build of 5.3.0 (scripts/build-jemalloc-debug, as test_jemalloc.py makes it): its
    .symtab names opt.* and the background thread state, read into the figures and actions."""
    lib = CACHE / "jemalloc-5.3.0-g" / "lib" / "libjemalloc.so.2"
    if not lib.exists():
        pytest.skip("no -g build of jemalloc at %s (tests/integration/test_jemalloc.py makes it)" % lib)
    binary = _binary("alloc_retain", "-ldl")
    core, truth = _core("je-g-retain", [str(binary), "retain", "OUTDIR"], [],
                        {"LD_PRELOAD": str(lib), "MALLOC_CONF": "dirty_decay_ms:-1,tcache_max:16384"})
    doc, _ = _report(core, "--no-classes")
    je = _section(doc, "jemalloc")
    assert je["layout_source"] == "symbols"
    f = je["figures"]
    assert f["opt.dirty_decay_ms"] == truth["dirty_decay_ms"] == -1 == f["dirty_decay_ms"]
    assert f["opt.tcache_max"] == 16384 and f["background_thread"] == 0
    assert f["dirty"] == sum(a["pdirty"] for a in truth["arenas"]) * PAGE
    first = doc["verdict"][0]
    assert first["cause"] == "jemalloc-dirty" and "background threads off" in first["evidence"], first
    groups = _groups(doc)
    assert groups["jemalloc extents"] + groups["jemalloc metadata (base)"] == truth["stats"]["mapped"], groups


# ---------------------------------------------------------------------------------------------
# Corruption: the structures report follows beyond the model (radix tree, base blocks)
# ---------------------------------------------------------------------------------------------

ARENA_BASE, BASE_BLOCKS, RTREE_ROOT = 78936, 160, 120  # arena_t.base, base_t.blocks, rtree_t.root


@need_je
@pytest.mark.parametrize("case", ["base-cycle", "base-size", "rtree-unreadable-leaf", "rtree-leaf-is-root"])
def test_jemalloc_corruption_gives_diagnostics(case, tmp_path):
    from test_corruption import assert_clean  # noqa: PLC0415
    from test_nmt_corruption import SparseCore  # noqa: PLC0415
    from hwkit import import_heapwalk  # noqa: PLC0415

    core, _ = _je_retain("retain", "dirty_decay_ms:-1")
    hw = import_heapwalk()
    t = hw.open_core(str(core))
    try:
        je = t.jemalloc()
    finally:
        t.close()
    sc = SparseCore(core)
    arena0 = next(a["address"] for a in je["arenas"] if a["index"] == 0)
    blocks = sc.u64(sc.u64(arena0 + ARENA_BASE) + BASE_BLOCKS)
    root = je["rtree"] + RTREE_ROOT
    first = next(root + 8 * i for i in range(1 << 18) if sc.u64(root + 8 * i))
    edits = {"base-cycle": {blocks + 8: blocks},
             "base-size": {blocks: 12345},
             "rtree-unreadable-leaf": {first: 0xdead0000},
             "rtree-leaf-is-root": {first: root}}[case]
    bad = sc.patched(tmp_path / "core", edits)
    for extra in (["--json"], []):
        r = run_cli("report", "--no-classes", *extra, str(bad), timeout=300)
        doc = assert_clean(r, case)
        if doc is not None:
            assert doc["allocator"] == "jemalloc"
            _check_sum(doc)
            if case.startswith("base"):
                assert any("base block" in d["detail"] for d in doc["diagnostics"]), doc["diagnostics"]
