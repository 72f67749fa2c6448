"""jemalloc 5.3.0 (Debian 12 libjemalloc2): heapwalk's per-arena figures against jemalloc's own
statistics (mallctl after "epoch", printed by corpora/jemalloc_stats.c before it parks its
threads), and every allocation the program holds found with its size.

Two libraries: Debian's stripped one (heapwalk finds je_arenas and the radix tree by searching
the library's data) and a -g build of the same source with Debian's flags
(scripts/build-jemalloc-debug: its .symtab names them)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hwkit import CACHE, CFLAGS, CORPORA, REPO, gcore, import_heapwalk, source_key, spawn_ready, stop

DEBIAN_LIB = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
DEBUG_DIR = CACHE / "jemalloc-5.3.0-g" / "lib"
ARENA_KEYS = ["pactive", "pdirty", "pmuzzy", "mapped", "retained", "resident", "base", "internal",
              "small.allocated", "large.allocated", "tcache_bytes"]

pytestmark = pytest.mark.skipif(not DEBIAN_LIB.exists() or not Path("/usr/include/jemalloc/jemalloc.h").exists(),
                                reason="libjemalloc-dev is not installed (scripts/setup)")


def _binary() -> Path:
    out = CACHE / "bin" / f"jemalloc_stats-{source_key('jemalloc_stats', '-ljemalloc')}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run(["gcc", *CFLAGS, "-o", str(tmp), str(CORPORA / "jemalloc_stats.c"), "-ljemalloc"],
                       check=True, capture_output=True)
        tmp.rename(out)
    return out


def _debug_lib() -> Path:
    if not (DEBUG_DIR / "libjemalloc.so.2").exists():
        subprocess.run([str(REPO / "scripts" / "build-jemalloc-debug"), str(DEBUG_DIR.parent)], check=True,
                       capture_output=True, timeout=1800)
    return DEBUG_DIR


@pytest.fixture(scope="module", params=["stripped", "symbols"])
def snapshot(request):
    """(core, truth, variant): a gcore of jemalloc_stats on Debian's library or the -g build."""
    variant = request.param
    binary = _binary()
    key = source_key("jemalloc_stats", "-ljemalloc", variant)
    outdir = CACHE / f"jemalloc_stats-{key}"
    core, truth = outdir / "core", outdir / "truth.json"
    if not core.exists():
        outdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if variant == "symbols":
            env["LD_LIBRARY_PATH"] = str(_debug_lib())
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
    return core, json.loads(truth.read_text()), variant


def _model(core: Path) -> dict:
    hw = import_heapwalk()
    t = hw.open_core(str(core))
    try:
        return t.jemalloc(allocations=True)
    finally:
        t.close()


def test_detects_jemalloc_as_the_malloc_owner(snapshot):
    core, _, _ = snapshot
    hw = import_heapwalk()
    t = hw.open_core(str(core))
    try:
        found = t.allocators()
    finally:
        t.close()
    assert found[0]["allocator"] == "jemalloc" and found[0]["owns_malloc"], found
    assert found[-1]["allocator"] == "ptmalloc" and not found[-1]["owns_malloc"], found


def test_per_arena_stats_equal_jemallocs_own(snapshot):
    core, truth, variant = snapshot
    doc = _model(core)
    assert doc["allocator"] == "jemalloc"
    assert doc["layout_source"] == ("symbols" if variant == "symbols" else "search")
    assert not [d for d in doc["diagnostics"] if d["severity"] == "error"], doc["diagnostics"]
    got = {a["index"]: a["stats"] for a in doc["arenas"]}
    assert sorted(got) == [a["index"] for a in truth["arenas"]]
    wrong = [(a["index"], k, got[a["index"]].get(k), a[k])
             for a in truth["arenas"] for k in ARENA_KEYS if got[a["index"]].get(k) != a[k]]
    assert not wrong, wrong
    for k, v in truth["stats"].items():
        assert doc["stats"]["stats." + k] == v, k
    # The thread caches heapwalk read add up to each arena's tcache_bytes.
    assert sum(c["bytes"] for c in doc["tcaches"]) == sum(a["tcache_bytes"] for a in truth["arenas"])


def test_every_held_allocation_found_with_its_size(snapshot):
    core, truth, _ = snapshot
    doc = _model(core)
    allocs = doc["allocations"]
    addrs = [a[0] for a in allocs]
    assert addrs == sorted(addrs)
    by_addr = {a[0]: a for a in allocs}
    wrong = [(hex(p), size, by_addr.get(p)) for p, size in truth["held"]
             if p not in by_addr or by_addr[p][1] != size or by_addr[p][2] != "in-use"]
    assert not wrong, wrong[:10]
    # Objects in tcaches are the arenas' tcache_bytes, exactly.
    cached = sum(a[1] for a in allocs if a[2] == "cached")
    assert cached == sum(a["tcache_bytes"] for a in truth["arenas"])


def test_cli_arenas_shows_jemalloc(snapshot):
    core, truth, _ = snapshot
    from hwkit import extract_json, run_cli  # noqa: PLC0415
    r = run_cli("arenas", "--json", str(core))
    doc = extract_json(r.stdout)
    assert doc["allocator"] == "jemalloc"
    je = doc["jemalloc"]
    assert [a["stats"]["resident"] for a in je["arenas"]] == [a["resident"] for a in truth["arenas"]]
    t = run_cli("arenas", str(core))
    text = t.stdout
    assert "jemalloc 5.3.0" in text and "purge" in text
    # glibc's main arena, never used on this process, is idle, not an error (exit 0)
    assert r.returncode == 0 and t.returncode == 0, r.stderr + t.stderr
    assert "main_arena was never used" in t.stdout + t.stderr


@pytest.mark.parametrize("damage", ["leaves", "arena_slot", "tcache_cycle"])
def test_corrupt_jemalloc_is_diagnosed_never_fatal(snapshot, damage, tmp_path):
    """Smashed radix-tree leaves, a je_arenas slot naming garbage, a tcache list that loops:
    diagnostics (or one clean error), never a crash, hang or traceback."""
    core, _, variant = snapshot
    if variant != "stripped":
        pytest.skip("one library is enough")
    from corruptkit import derive  # noqa: PLC0415
    from hwkit import run_cli  # noqa: PLC0415
    doc = _model(core)
    rtree = doc["rtree"]
    arena1 = doc["arenas"][1]["address"]

    def edit(img) -> None:
        if damage == "leaves":
            # The first populated root slot's leaf: a few elements now name unmapped edata_t's
            # and one names the arena itself (not an edata_t).
            for i in range(1 << 18):
                leaf = img.u64(rtree + 120 + 8 * i)
                if leaf:
                    break
            elms = [leaf + 8 * j for j in range(1 << 18) if img.u64(leaf + 8 * j)][:6]
            for k, e in enumerate(elms[:5]):
                img.put_u64(e, (0x4141414141 << 7) | 1 | (k << 48))
            img.put_u64(elms[5], arena1 | 1)
        elif damage == "arena_slot":
            slots = [a["address"] for a in doc["arenas"]]
            # The je_arenas slot of arena 1 sits right after arena 0's: find it in the data.
            img.put_u64(_slot_of(img, doc, slots[1]), 0x4141414141414140)
        else:
            first = img.u64(arena1 + 10392)
            img.put_u64(first, first + 0x100000)  # qre_next into another thread's memory
            img.put_u64(first + 0x100000, first + 0x100000)

    bad = derive(core, tmp_path / "core", edit)
    r = run_cli("arenas", "--json", str(bad))
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (0, 1), r.stderr
    hw = import_heapwalk()
    t = hw.open_core(str(bad))
    try:
        try:
            got = t.jemalloc(allocations=True)
        except RuntimeError as exc:
            assert "jemalloc" in str(exc)
            return
    finally:
        t.close()
    if damage == "leaves":
        assert any(d["kind"] in ("unreadable", "layout") for d in got["diagnostics"]), got["diagnostics"]


def _slot_of(img, doc: dict, value: int) -> int:
    """The address of the je_arenas slot holding ``value`` (searched near arena 0's slot)."""
    base = doc["rtree"] - 0xd5aa0 + 0xcd6c0  # je_arenas, docs/jemalloc-layouts.md
    for i in range(16):
        if img.u64(base + 8 * i) == value:
            return base + 8 * i
    raise AssertionError("je_arenas slot not found")


def test_live_process_matches_its_own_stats(tmp_path):
    """--pid: the live (captured) process on Debian's stripped library."""
    from hwkit import await_ready  # noqa: PLC0415
    r, w = os.pipe()
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    proc = subprocess.Popen([str(_binary()), str(w), str(tmp_path)], pass_fds=(w,), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(w)
    try:
        await_ready(proc, r, 120, "jemalloc_stats")
        truth = json.loads((tmp_path / "truth.json").read_text())
        hw = import_heapwalk()
        t = hw.attach(proc.pid)
        try:
            doc = t.jemalloc(allocations=True)
        finally:
            t.close()
    finally:
        stop(proc)
    got = {a["index"]: a["stats"] for a in doc["arenas"]}
    wrong = [(a["index"], k, got[a["index"]].get(k), a[k])
             for a in truth["arenas"] for k in ARENA_KEYS if got[a["index"]].get(k) != a[k]]
    assert not wrong, wrong
    by_addr = {a[0]: a for a in doc["allocations"]}
    assert all(p in by_addr and by_addr[p][1] == size for p, size in truth["held"])


def test_gdb_arenas_shows_jemalloc(snapshot):
    core, truth, variant = snapshot
    if variant != "stripped":
        pytest.skip("one library is enough")
    from hwkit import run_gdb  # noqa: PLC0415
    r = run_gdb(str(_binary()), str(core), commands=["heapwalk arenas --json"])
    assert "Traceback" not in r.stderr + r.stdout
    from hwkit import extract_json  # noqa: PLC0415
    doc = extract_json(r.stdout)
    assert doc["allocator"] == "jemalloc"
    assert [a["stats"]["mapped"] for a in doc["jemalloc"]["arenas"]] == [a["mapped"] for a in truth["arenas"]]


def test_cli_chunks_lists_held_allocations(snapshot):
    core, truth, _ = snapshot
    from hwkit import extract_json, run_cli  # noqa: PLC0415
    doc = extract_json(run_cli("chunks", "--used", "--json", str(core)).stdout)
    assert doc["allocator"] == "jemalloc"
    got = {c["address"]: c["size"] for c in doc["chunks"]}
    assert doc["total"] == len(doc["chunks"])
    assert all(got.get(p) == size for p, size in truth["held"])
