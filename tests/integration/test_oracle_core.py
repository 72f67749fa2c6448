"""`heapwalk arenas --json CORE` equals glibc's own accounting of the same process.

The oracle is what the program printed just before gcore snapshotted it: malloc_info's XML
(per arena and global), mallinfo2(), and the program's record of what each thread put in its
tcache, fastbins and bins and what it holds (live and mmapped).  See hwkit.compare_with_oracle
for the mapping and for the in_use tolerance (derived from libc's own allocations).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwkit import (
    ARENA_CONFIGS,
    assert_matches_oracle,
    compare_mmapped_chunks,
    config_id,
    describe,
    import_heapwalk,
    no_traceback,
    run_cli,
)


@pytest.mark.parametrize("cfg", ARENA_CONFIGS, ids=config_id)
def test_core_arenas_equal_malloc_info_mallinfo2_and_program(corpora, cfg):
    threads, arena_max = cfg
    c = corpora.core("arenas", str(threads), str(arena_max))
    r = run_cli("arenas", c.core, "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    assert_matches_oracle(doc, c)
    bad = compare_mmapped_chunks([str(c.core)], c.truth)
    assert not bad, bad


def test_dwarf_layout_cache_cold_warm_and_damaged_all_equal_malloc_info(corpora, tmp_path):
    """The DWARF-derived layout is cached by build-id: a cold run (parses DWARF, stores), a warm
    run (reads the cache), a run over a damaged cache entry (ignored, re-stored) and a run with
    the cache off all match glibc's own figures."""
    c = corpora.core("arenas", "4", "0")
    cache = tmp_path / "cache"
    states = []
    for step in ("cold", "warm", "damaged", "off"):
        env = {"HEAPWALK_CACHE_DIR": str(cache), "HEAPWALK_NO_CACHE": "0"}
        if step == "damaged":
            for f in cache.iterdir():
                f.write_text(f.read_text().splitlines()[0] + "\nstruct malloc_state x\n")
        if step == "off":
            env["HEAPWALK_NO_CACHE"] = "1"
        r = run_cli("arenas", c.core, "--json", extra_env=env)
        no_traceback(r)
        assert r.returncode == 0, describe(r)
        doc = json.loads(r.stdout)
        assert_matches_oracle(doc, c)
        assert doc["glibc"]["symbols"]["layout"] == "dwarf", doc["glibc"]["symbols"]
        states.append(doc["glibc"]["symbols"]["layout_cache"].split()[0])
    assert states == ["stored", "hit", "stored", "off"]
    assert len(list(cache.iterdir())) == 1


@pytest.mark.parametrize("cfg", ARENA_CONFIGS, ids=config_id)
def test_in_process_api_equals_cli(corpora, cfg):
    """heapwalk.open_core(path).arenas() gives the same numbers as the CLI."""
    heapwalk = import_heapwalk()
    threads, arena_max = cfg
    c = corpora.core("arenas", str(threads), str(arena_max))
    t = heapwalk.open_core(str(c.core))
    try:
        doc = t.arenas()
    finally:
        close = getattr(t, "close", None)
        if close:
            close()
    assert_matches_oracle(doc, c)


# Arenas that outgrow one 64 MiB heap: heap_info chains, fenceposts between heaps, and (at some
# heap ends) the glibc quirk where the old top was too small to free: sysmalloc marks it as an
# in-use chunk `(old_size + CHUNK_HDR_SZ) | PREV_INUSE`, without NON_MAIN_ARENA, in a non-main
# arena.  Walks of such healthy heaps must give no diagnostics.
MANY_CONFIGS = [("5500000", "4")]  # the benchmark's shape: 3 heaps per thread arena


@pytest.mark.parametrize("cfg", MANY_CONFIGS, ids=lambda c: f"{int(c[0]) // 1000}k-{c[1]}t")
def test_multi_heap_arenas_equal_malloc_info(corpora, cfg):
    c = corpora.core("many", *cfg)
    r = run_cli("arenas", c.core, "--json")
    no_traceback(r)
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    assert doc is not None, describe(r)
    assert any(len(a["heaps"]) > 1 for a in doc["arenas"]), "some arena has a chain of heaps"
    assert_matches_oracle(doc, c, in_use=False)
    assert r.returncode == 0, describe(r)


def test_truncated_libc_in_sysroot_picks_the_layout_that_fits(corpora, tmp_path):
    """A libc cut short in the sysroot gives no banner or version definitions; the debug symbols
    (by build-id) still name main_arena. Several layouts fit a malloc_state there (2.36's and
    2.42's, whose tcache struct differs): the one whose tcache struct size is that of the main
    heap's first chunk must be chosen, so every figure equals glibc's own."""
    c = corpora.core("arenas", "4", "0")
    root = tmp_path / "sysroot"
    libc = root / "usr/lib/x86_64-linux-gnu/libc.so.6"
    libc.parent.mkdir(parents=True)
    libc.write_bytes(Path("/usr/lib/x86_64-linux-gnu/libc.so.6").read_bytes()[:5000])
    r = run_cli("arenas", c.core, "--json", "--sysroot", root)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    assert doc["glibc"]["symbols"]["main_arena"] == "debug-symtab", doc["glibc"]
    assert_matches_oracle(doc, c, version_range_ok=True)
