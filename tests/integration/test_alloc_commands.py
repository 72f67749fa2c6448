"""Per-allocation and per-thread commands on jemalloc 5.3.0 and gperftools tcmalloc 2.10 (issue
16): ``chunks``, ``chunk ADDR``, ``tcache`` and ``diff A B``, from the CLI and inside gdb, on
cores and a live process, against what the corpus programs record:

- corpora/jemalloc_stats.c: every allocation its threads hold (address, malloc_usable_size), each
  worker's LWP and arena, and per arena mallctl's current regions of every tcache-able class: a
  worker alone on its arena holds in its tcache exactly curregs (curlextents) less what it holds;
- corpora/tcmalloc_stats.c: every allocation held (address, MallocExtension_GetAllocatedSize) and
  each thread's MallocExtension_GetThreadCacheSize();
- both with "grow": a second snapshot after more allocations; the difference of the statistics
  they printed at each snapshot is the oracle of ``diff``.

Debian's stripped libraries (the symbol-free case) and, when they are built, the -g builds of
the same sources (jemalloc: scripts/build-jemalloc-debug's cache; tcmalloc: scripts/tcmalloc-g):
the "symbols" cases, skipped otherwise (they take long to build).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from hwkit import (CACHE, CFLAGS, CORPORA, REPO, await_ready, describe, extract_json, gcore, no_traceback,
                   run_cli, run_gdb, source_key, stop)

JE_LIB = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
JE_G_DIR = CACHE / "jemalloc-5.3.0-g" / "lib"
TC_G_LIB = Path(os.environ.get("HEAPWALK_TCMALLOC_G", str(CACHE / "tcmalloc-2.10-g" / "libtcmalloc.so")))
TC_LIB = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4")
JE_KEYS = ["pactive", "pdirty", "pmuzzy", "mapped", "retained", "resident", "base", "internal",
           "small.allocated", "large.allocated", "tcache_bytes"]
TC_KEYS = ["generic.current_allocated_bytes", "generic.heap_size", "tcmalloc.slack_bytes",
           "tcmalloc.central_cache_free_bytes", "tcmalloc.transfer_cache_free_bytes",
           "tcmalloc.thread_cache_free_bytes", "tcmalloc.pageheap_free_bytes",
           "tcmalloc.pageheap_unmapped_bytes", "tcmalloc.pageheap_committed_bytes",
           "tcmalloc.pageheap_commit_count", "tcmalloc.pageheap_total_commit_bytes",
           "tcmalloc.pageheap_decommit_count", "tcmalloc.pageheap_total_decommit_bytes",
           "tcmalloc.pageheap_reserve_count", "tcmalloc.pageheap_total_reserve_bytes"]


class Program:
    """A corpus program's two snapshots (cores and truths) and, for the live tests, the
    process itself, alive in its second state."""

    def __init__(self, kind: str, binary: Path, core1: Path, core2: Path, truth1: dict,
                 truth2: dict, proc: subprocess.Popen, live_truth: dict) -> None:
        self.kind, self.binary = kind, binary
        self.core1, self.core2, self.truth1, self.truth2 = core1, core2, truth1, truth2
        self.proc, self.live_truth = proc, live_truth
        self.variant = "stripped"


def _compile(name: str, lib: str) -> Path:
    out = CACHE / "bin" / f"{name}-{source_key(name, lib)}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run(["gcc", *CFLAGS, "-o", str(tmp), str(CORPORA / f"{name}.c"), lib],
                       check=True, capture_output=True)
        tmp.rename(out)
    return out


def _argv(kind: str, binary: Path, fd: int, outdir: Path) -> list[str]:
    if kind == "jemalloc":
        return [str(binary), str(fd), str(outdir), "4", "grow"]
    return [str(binary), "4", str(outdir), str(fd), "grow"]


def _libdir(kind: str, variant: str) -> str | None:
    """LD_LIBRARY_PATH for the "symbols" case: the -g build's directory."""
    if variant != "symbols":
        return None
    return str(JE_G_DIR) if kind == "jemalloc" else str(TC_G_LIB.parent)


def _start(kind: str, binary: Path, outdir: Path, variant: str):
    outdir.mkdir(parents=True, exist_ok=True)
    r, w = os.pipe()
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    if _libdir(kind, variant):
        env["LD_LIBRARY_PATH"] = _libdir(kind, variant)
    proc = subprocess.Popen(_argv(kind, binary, w, outdir), pass_fds=(w,), env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    os.close(w)
    return proc, r


def _ready(proc, r: int, label: str) -> None:
    """One readiness byte on ``r`` (await_ready closes the pipe, so read it through a dup)."""
    await_ready(proc, os.dup(r), 120, label)


@pytest.fixture(scope="module", params=["jemalloc", "tcmalloc", "jemalloc-symbols",
                                        "tcmalloc-symbols"])
def program(request, tmp_path_factory):
    kind, _, variant = request.param.partition("-")
    variant = variant or "stripped"
    lib = JE_LIB if kind == "jemalloc" else TC_LIB
    header = "/usr/include/jemalloc/jemalloc.h" if kind == "jemalloc" else \
        "/usr/include/gperftools/malloc_extension_c.h"
    if not lib.exists() or not Path(header).exists():
        pytest.skip(f"{kind}'s -dev package is not installed (scripts/setup)")
    if variant == "symbols":
        built = JE_G_DIR / "libjemalloc.so.2" if kind == "jemalloc" else TC_G_LIB
        if kind == "tcmalloc" and not built.exists() and "HEAPWALK_TCMALLOC_G" not in os.environ:
            from test_tcmalloc import _g_lib  # noqa: PLC0415  (scripts/tcmalloc-g, cached)
            _g_lib()
        if not built.exists():
            pytest.skip(f"no -g build of {kind} at {built}")
    name = "jemalloc_stats" if kind == "jemalloc" else "tcmalloc_stats"
    binary = _compile(name, "-ljemalloc" if kind == "jemalloc" else "-ltcmalloc")
    outdir = CACHE / f"alloc-commands-{kind}-{variant}-{source_key(name, 'grow')}"
    core1, core2 = outdir / "core1", outdir / "core2"
    if not core2.exists():
        proc, r = _start(kind, binary, outdir, variant)
        try:
            _ready(proc, r, name)
            gcore(proc.pid, core1)
            proc.stdin.write(b"g")
            proc.stdin.flush()
            _ready(proc, r, name)
            gcore(proc.pid, core2)
        finally:
            os.close(r)
            stop(proc)
    truth1 = json.loads((outdir / "truth.json").read_text())
    truth2 = json.loads((outdir / "truth2.json").read_text())
    live_dir = tmp_path_factory.mktemp(f"live-{kind}")
    proc, r = _start(kind, binary, live_dir, variant)
    try:
        _ready(proc, r, name)
    finally:
        os.close(r)
    live = json.loads((live_dir / "truth.json").read_text())
    p = Program(kind, binary, core1, core2, truth1, truth2, proc, live)
    p.variant = variant
    yield p
    stop(proc)


def _held(p: Program, truth: dict) -> dict[int, int]:
    if p.kind == "jemalloc":
        return {a: s for a, s in truth["held"]}
    return {h[0]: h[2] for h in truth["held"]}


def _cli_json(*args) -> dict:
    r = run_cli(*args, "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    return json.loads(r.stdout)


def _check_pool_stats(p: Program, doc: dict, truth: dict) -> None:
    """``arenas --json``: every per-arena (jemalloc) or page-heap (tcmalloc) figure equals the
    allocator's own statistic the program read just before the snapshot."""
    if p.kind == "jemalloc":
        from test_jemalloc import ARENA_KEYS  # noqa: PLC0415
        got = {a["index"]: a["stats"] for a in doc["jemalloc"]["arenas"]}
        wrong = [(a["index"], k, got.get(a["index"], {}).get(k), a[k])
                 for a in truth["arenas"] for k in ARENA_KEYS if got.get(a["index"], {}).get(k) != a[k]]
    else:
        from test_tcmalloc import EXACT  # noqa: PLC0415
        names = EXACT + (["generic.total_physical_bytes"] if p.variant == "symbols" else [])
        wrong = [(k, doc["tcmalloc"]["stats"].get(k), truth["properties"][k]) for k in names
                 if doc["tcmalloc"]["stats"].get(k) != truth["properties"][k]]
    assert not wrong, wrong


def test_pool_stats_equal_the_allocators_own_core_and_live(program):
    p = program
    _check_pool_stats(p, _cli_json("arenas", str(p.core1)), p.truth1)
    _check_pool_stats(p, _cli_json("arenas", "--pid", str(p.proc.pid)), p.live_truth)


def _check_held(p: Program, doc: dict, truth: dict) -> None:
    assert doc["allocator"] == p.kind
    listed = {c["address"]: c for c in doc["chunks"]}
    held = _held(p, truth)
    missing = [a for a in held if a not in listed]
    assert not missing, f"{len(missing)} of {len(held)} held allocations not listed: {missing[:5]}"
    wrong = [(a, s, listed[a]) for a, s in held.items()
             if listed[a]["size"] != s or listed[a]["state"] != "in-use"]
    assert not wrong, f"{len(wrong)} held allocations with another size or state: {wrong[:5]}"
    assert doc["total"] == len(doc["chunks"]) and not doc["truncated"]


def test_chunks_used_lists_every_held_allocation(program):
    p = program
    doc = _cli_json("chunks", p.core1, "--used")
    assert doc["layout_source"] == ("symbols" if p.variant == "symbols" else "search")
    _check_held(p, doc, p.truth1)
    _check_held(p, _cli_json("chunks", p.core2, "--used"), p.truth2)


def test_chunks_free_limit_and_text(program):
    p = program
    free = _cli_json("chunks", p.core1, "--free", "--limit", "50")
    assert len(free["chunks"]) == 50 and free["truncated"] and free["total"] > 50
    assert all(c["state"] in ("cached", "free", "released") for c in free["chunks"])
    held = _held(p, p.truth1)
    assert not [c for c in free["chunks"] if c["address"] in held]
    if p.kind == "tcmalloc":  # thread caches hold objects
        assert free["counts"]["cached"] > 0
    r = run_cli("chunks", p.core1, "--limit", "20", extra_env={"COLUMNS": "80"})
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    lines = r.stdout.splitlines()
    # (the header may wrap the module's path onto its own line: a -g build under a long checkout)
    assert p.kind in " ".join(lines[:4]) and len(lines) > 20
    assert max(len(line) for line in lines) <= 80, r.stdout
    # Every slot as text (streamed): one line each between the header and the footer.
    everything = _cli_json("chunks", p.core1, "--limit", "0")
    r = run_cli("chunks", p.core1, "--limit", "0", extra_env={"COLUMNS": "80"})
    assert r.returncode == 0, describe(r)
    lines = r.stdout.splitlines()
    rows = [x for x in lines if x.startswith("0x")]
    assert len(rows) == everything["total"] == len(everything["chunks"])
    assert rows[0].split()[0] == hex(everything["chunks"][0]["address"])
    assert f"{everything['total']} allocations shown of {everything['total']}" in r.stdout


def test_chunk_addr_finds_held_allocations(program):
    p = program
    held = sorted(_held(p, p.truth1).items())
    sample = held[:: max(1, len(held) // 3)][:3] + [max(held, key=lambda h: h[1])]
    for address, size in sample:
        query = address + min(size - 1, 5)
        doc = _cli_json("chunk", p.core1, hex(query), "--bytes", "16")
        assert doc["allocator"] == p.kind
        c = doc["chunk"]
        assert c and c["address"] == address and c["size"] == size and c["state"] == "in-use", doc
        assert c["offset"] == query - address and c["span"]
        assert len(bytes.fromhex(c["bytes"])) == min(16, size)
        r = run_cli("chunk", p.core1, hex(query), extra_env={"COLUMNS": "80"})
        assert r.returncode == 0, describe(r)
        assert hex(address) in r.stdout and max(len(x) for x in r.stdout.splitlines()) <= 80
    # An address in no allocation: what-is-address, exit 1.
    r = run_cli("chunk", p.core1, "0x1000")
    no_traceback(r)
    assert r.returncode == 1 and "not mapped" in r.stdout, describe(r)
    for hostile in ("0xffffffffffffffff", "0x7fffffffffff", hex(1 << 47)):
        r = run_cli("chunk", p.core1, hostile)
        no_traceback(r)
        assert r.returncode == 1 and "not inside any heap chunk" in r.stdout, describe(r)


def _tcache_oracle(p: Program, truth: dict, doc: dict) -> None:
    caches = {c["lwp"]: c for c in doc["thread_caches"] if c["lwp"]}
    if p.kind == "jemalloc":
        arenas = {a["index"]: a for a in truth["arenas"]}
        per_arena = Counter(t["arena"] for t in truth["threads"])
        for t in truth["threads"]:
            assert per_arena[t["arena"]] == 1, "workers share an arena: no per-thread oracle"
            c = caches.get(t["lwp"])
            assert c, f"no tcache for worker LWP {t['lwp']}: {sorted(caches)}"
            a = arenas[t["arena"]]
            want = {int(size): cur - t["held"].get(size, 0) for size, cur in a["classes"].items()}
            want = {s: n for s, n in want.items() if n}
            got = {b["size"]: b["count"] for b in c["bins"]}
            assert got == want, (t["lwp"], got, want)
            assert c["bytes"] == a["tcache_bytes"] == sum(s * n for s, n in want.items())
    else:
        # A thread may own two ThreadCaches (the main thread's first one, made before its TLS
        # was usable, stays empty): the program's figure is their sum.
        for t in truth["threads"]:
            mine = [c for c in doc["thread_caches"] if c["lwp"] == t["lwp"]]
            assert mine, f"no ThreadCache for LWP {t['lwp']}: {sorted(caches)}"
            assert sum(c["bytes"] for c in mine) == t["cache_bytes"], (t, mine)
            for c in mine:
                assert sum(b["size"] * b["count"] for b in c["bins"]) == c["bytes"]
                assert c["objects"] == sum(b["count"] for b in c["bins"])


def test_tcache_counts_equal_the_programs_records(program):
    p = program
    doc = _cli_json("tcache", p.core1)
    assert doc["allocator"] == p.kind
    _tcache_oracle(p, p.truth1, doc)
    lwp = p.truth1["threads"][1]["lwp"]
    one = _cli_json("tcache", p.core1, "--lwp", str(lwp))
    assert [c["lwp"] for c in one["thread_caches"]] == [lwp]
    r = run_cli("tcache", p.core1, extra_env={"COLUMNS": "80"})
    assert r.returncode == 0, describe(r)
    assert f"thread LWP {lwp}" in r.stdout and max(len(x) for x in r.stdout.splitlines()) <= 80
    r = run_cli("tcache", p.core1, "--lwp", "1")
    no_traceback(r)
    assert r.returncode != 0 and "no thread with LWP 1" in r.stderr, describe(r)


def test_live_process(program):
    p = program
    assert p.proc.poll() is None
    _tcache_oracle(p, p.live_truth, _cli_json("tcache", "--pid", str(p.proc.pid)))
    _check_held(p, _cli_json("chunks", "--pid", str(p.proc.pid), "--used"), p.live_truth)
    assert p.proc.poll() is None


@pytest.mark.parametrize("inputs", ["cores", "saved-reports"])
def test_diff_pool_deltas_equal_the_statistics_differences(program, inputs, tmp_path):
    p = program
    a, b = p.core1, p.core2
    if inputs == "saved-reports":
        a, b = tmp_path / "a.json", tmp_path / "b.json"
        for core, saved in ((p.core1, a), (p.core2, b)):
            saved.write_text(json.dumps(_cli_json("report", str(core), "--no-classes")))
    doc = _cli_json("diff", a, b, "--no-classes")
    assert doc["allocator"] == p.kind
    pools = {x["index"]: x for x in doc["allocator_pools"]["pools"]}
    if p.kind == "jemalloc":
        a1 = {a["index"]: a for a in p.truth1["arenas"]}
        a2 = {a["index"]: a for a in p.truth2["arenas"]}
        checked = 0
        for idx in set(a1) & set(a2):
            for k in JE_KEYS:
                assert pools[idx]["delta"][k] == a2[idx][k] - a1[idx][k], (idx, k)
                checked += 1
        assert pools[0]["delta"]["small.allocated"] > 0 and checked
    else:
        p1, p2 = p.truth1["properties"], p.truth2["properties"]
        delta = pools[0]["delta"]
        for k in TC_KEYS:
            assert delta[k] == p2[k] - p1[k], (k, delta[k], p2[k] - p1[k])
        assert delta["generic.heap_size"] > 0
    r = run_cli("diff", a, b, "--no-classes", extra_env={"COLUMNS": "80"})
    no_traceback(r)
    assert r.returncode in (0, 1), describe(r)
    assert "that changed" in r.stdout and max(len(x) for x in r.stdout.splitlines()) <= 80


def test_gdb_commands_on_core(program):
    p = program
    address, size = sorted(_held(p, p.truth1).items())[10]
    lwp = p.truth1["threads"][1]["lwp"]
    r = run_gdb(p.binary, p.core1, commands=["heapwalk chunks --limit 5",
                                             "heapwalk chunks --limit 0",
                                             f"heapwalk chunk {address + 1:#x}",
                                             "heapwalk tcache --all",
                                             "heapwalk tcache --json --all"], timeout=300)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert p.kind in r.stdout and f"allocation {address:#x}" in r.stdout, r.stdout[-3000:]
    assert f"thread LWP {lwp} (gdb thread" in r.stdout, r.stdout[-3000:]
    _tcache_oracle(p, p.truth1, extract_json(r.stdout))
    # Without THREAD: the selected thread's cache (gdb thread 2 is the first worker).
    r = run_gdb(p.binary, p.core1, commands=["thread 2", "heapwalk tcache --json"], timeout=300)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = extract_json(r.stdout)
    lwps = {c["lwp"] for c in doc["thread_caches"]}
    assert len(lwps) == 1 and lwps <= {t["lwp"] for t in p.truth1["threads"]}, doc


def test_gdb_expression_and_live_process(program):
    """ADDR as a gdb expression (jemalloc_stats keeps its pointers in a global array), and the
    commands in gdb attached to the live process."""
    p = program
    if p.kind == "jemalloc":
        first = p.truth1["held"][0][0]  # held[0][1]: thread 0's first allocation not freed
        r = run_gdb(p.binary, p.core1, commands=["heapwalk chunk held[0][1]"], timeout=300)
        no_traceback(r)
        assert r.returncode == 0 and f"allocation {first:#x}" in r.stdout, describe(r)
    r = run_gdb("-p", str(p.proc.pid), commands=["heapwalk tcache --all --json",
                                                 "heapwalk chunks --used --limit 3"], timeout=300)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    _tcache_oracle(p, p.live_truth, extract_json(r.stdout))
    assert "3 allocations shown of" in r.stdout, r.stdout[-2000:]
    assert p.proc.poll() is None, "gdb detached and the process lives on"
