"""gperftools tcmalloc 2.10 (issue 16): heapwalk's tcmalloc model against tcmalloc's own figures.

corpora/tcmalloc_stats.c runs on Debian 12's libtcmalloc (stripped: `.dynsym` only) and, when a
``-g`` build of gperftools 2.10 (default ``build/test-cache/tcmalloc-2.10-g/libtcmalloc.so``, or
``$HEAPWALK_TCMALLOC_G``): scripts/tcmalloc-g builds Debian's source package with Debian's flags
when it is missing, about 4 minutes once), on that build too. The
program reads every MallocExtension_GetNumericProperty value into memory before it parks its
threads, records each thread's MallocExtension_GetThreadCacheSize() and the allocations it holds
(address, MallocExtension_GetAllocatedSize) in truth.json: the oracles. Cores are made with gcore;
the live case captures the running process.

Cases: "dynsym" (Debian's library file present: its exported thread_heaps_, the rest found by
search), "search" (no files at all: everything found in the memory image), "symbols" (the -g
build's .symtab names every static).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwkit import CACHE, CFLAGS, CORPORA, REPO, gcore, heapwalk_env, run_cli, spawn_ready, stop

DEBIAN_LIB = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4")
G_LIB = Path(os.environ.get("HEAPWALK_TCMALLOC_G", str(CACHE / "tcmalloc-2.10-g" / "libtcmalloc.so")))
NTHREADS = "4"

# What the model reads, and prints as JSON, in a separate interpreter (the engine is not loaded
# into pytest's own process).
PROBE = r"""
import json, sys
from heapwalk import _native
path, mode = sys.argv[1], sys.argv[2]
ov = {"no_files": True} if mode == "search" else None
if path.isdigit():
    t = _native.attach(int(path), overrides=ov)
else:
    t = _native.open_core(path, overrides=ov)
s = t.tcmalloc()
s["allocations"] = t.tcmalloc_allocations("in-use")
json.dump(s, sys.stdout)
"""

# MallocExtension properties the model reproduces without metadata_system_bytes_ (a file-local
# static that only the -g build's symbols name).
EXACT = [
    "generic.current_allocated_bytes",
    "generic.heap_size",
    "tcmalloc.slack_bytes",
    "tcmalloc.central_cache_free_bytes",
    "tcmalloc.transfer_cache_free_bytes",
    "tcmalloc.thread_cache_free_bytes",
    "tcmalloc.pageheap_free_bytes",
    "tcmalloc.pageheap_unmapped_bytes",
    "tcmalloc.pageheap_committed_bytes",
    "tcmalloc.pageheap_scavenge_count",
    "tcmalloc.pageheap_commit_count",
    "tcmalloc.pageheap_total_commit_bytes",
    "tcmalloc.pageheap_decommit_count",
    "tcmalloc.pageheap_total_decommit_bytes",
    "tcmalloc.pageheap_reserve_count",
    "tcmalloc.pageheap_total_reserve_bytes",
    "tcmalloc.current_total_thread_cache_bytes",
    "tcmalloc.aggressive_memory_decommit",
]


def _need_debian() -> None:
    if not DEBIAN_LIB.exists() or not Path("/usr/include/gperftools/malloc_extension_c.h").exists():
        pytest.skip("libgoogle-perftools-dev is not installed (scripts/setup)")


def _binary(lib: str) -> Path:
    src = CORPORA / "tcmalloc_stats.c"
    link = {"debian": ["-ltcmalloc"], "minimal": ["-ltcmalloc_minimal"]}.get(
        lib, [str(G_LIB), f"-Wl,-rpath,{G_LIB.parent}"])
    h = hashlib.sha256(src.read_bytes() + " ".join(CFLAGS + link).encode())
    if lib == "g":
        h.update(G_LIB.read_bytes())
    out = CACHE / "bin" / f"tcmalloc_stats-{lib}-{h.hexdigest()[:16]}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        r = subprocess.run(["gcc", *CFLAGS, "-o", str(tmp), str(src), *link],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        tmp.rename(out)
    return out


def _core(lib: str) -> tuple[Path, dict]:
    binary = _binary(lib)
    d = CACHE / "cores" / f"{binary.name}-{NTHREADS}t"
    if not (d / "complete").exists():
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        proc = spawn_ready([str(binary), NTHREADS, str(d)])
        try:
            gcore(proc.pid, d / "core")
        finally:
            stop(proc)
        (d / "complete").write_text("")
    return d / "core", json.loads((d / "truth.json").read_text())


def _probe(target: str, mode: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, target, mode], env=heapwalk_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _check(model: dict, truth: dict, with_metadata: bool) -> None:
    assert model is not None and model["allocator"] == "tcmalloc"
    assert model["version"] == "gperftools 2.10"
    props = truth["properties"]
    for name in EXACT + (["generic.total_physical_bytes"] if with_metadata else []):
        assert model["stats"].get(name) == props[name], name
    pool = model["pools"][0]
    assert pool["name"] == "page heap"
    # What the program holds, summed over the walk, is tcmalloc's current_allocated_bytes.
    assert pool["in_use"] == props["generic.current_allocated_bytes"]
    # ReleaseFreeMemory() returns the page heap's normal free spans.
    assert pool["reclaimable"] == props["tcmalloc.pageheap_free_bytes"]
    assert model["stats"]["release_free_memory_bytes"] == props["tcmalloc.pageheap_free_bytes"]
    # Each thread's cache: the program's MallocExtension_GetThreadCacheSize() per lwp. tcmalloc's
    # list also holds a cache made for the main thread before its TLS was ready (0 bytes).
    by_lwp: dict[int, int] = {}
    for c in model["thread_caches"]:
        by_lwp[c["lwp"]] = by_lwp.get(c["lwp"], 0) + c["bytes"]
        assert c["bytes"] == sum(size * count for size, count in c["bins"])
    for th in truth["threads"]:
        assert by_lwp.get(th["lwp"]) == th["cache_bytes"], th
    total = sum(c["bytes"] for c in model["thread_caches"])
    assert total == props["tcmalloc.thread_cache_free_bytes"]
    # Every allocation the program holds, in use, with tcmalloc's own allocated size.
    in_use = {a: size for a, size, _ in model["allocations"]}
    missing = [h for h in truth["held"] if in_use.get(h[0]) != h[2]]
    assert not missing, missing[:10]
    addrs = [a for a, _, _ in model["allocations"]]
    assert addrs == sorted(addrs)
    assert not [d for d in model["diagnostics"] if d["severity"] == "error"]


@pytest.mark.parametrize("lib", ["debian", "minimal"])
@pytest.mark.parametrize("mode", ["dynsym", "search"])
def test_core_debian_stripped(lib, mode):
    """libtcmalloc.so.4 (libgoogle-perftools4) and libtcmalloc_minimal.so.4."""
    _need_debian()
    core, truth = _core(lib)
    model = _probe(str(core), mode)
    assert model["layout_source"] == "search"
    if mode == "dynsym":
        assert model["how"]["thread_heaps_"] == "dynsym"
    _check(model, truth, with_metadata=False)


def _g_lib() -> Path:
    """The -g build of Debian's gperftools 2.10, built (scripts/tcmalloc-g) when missing."""
    if not G_LIB.exists() and "HEAPWALK_TCMALLOC_G" not in os.environ:
        r = subprocess.run([str(REPO / "scripts" / "tcmalloc-g"), str(G_LIB.parent)],
                           capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0 and G_LIB.exists(), r.stdout + r.stderr
    if not G_LIB.exists():
        pytest.skip(f"no -g build of gperftools 2.10 at {G_LIB}")
    return G_LIB


@pytest.mark.parametrize("mode", ["symbols", "search"])
def test_core_g_build(mode):
    _need_debian()
    _g_lib()
    core, truth = _core("g")
    model = _probe(str(core), mode)
    assert model["layout_source"] == ("symbols" if mode == "symbols" else "search")
    _check(model, truth, with_metadata=mode == "symbols")


def test_live_debian(tmp_path):
    _need_debian()
    proc = spawn_ready([str(_binary("debian")), NTHREADS, str(tmp_path)])
    try:
        truth = json.loads((tmp_path / "truth.json").read_text())
        model = _probe(str(proc.pid), "dynsym")
    finally:
        stop(proc)
    _check(model, truth, with_metadata=False)



def test_cli_arenas_shows_the_page_heap():
    """``arenas`` (text and JSON) carries tcmalloc's page heap in its own property names."""
    _need_debian()
    core, truth = _core("debian")
    r = run_cli("arenas", "--json", str(core))
    assert r.stdout, r.stderr
    doc = json.loads(r.stdout)
    tc = doc["tcmalloc"]
    assert tc["allocator"] == "tcmalloc"
    for name in EXACT:
        assert tc["stats"][name] == truth["properties"][name], name
    t = run_cli("arenas", str(core))
    text = t.stdout
    # glibc's main arena, never used on this process, is idle, not an error (exit 0)
    assert r.returncode == 0 and t.returncode == 0, r.stderr + t.stderr
    assert "main_arena was never used" in t.stdout + t.stderr
    assert "gperftools 2.10" in text and "ReleaseFreeMemory() would return" in text
    assert str(truth["properties"]["generic.heap_size"]) in text
