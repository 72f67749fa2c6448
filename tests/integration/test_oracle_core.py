"""`heapwalk arenas --json CORE` equals glibc's own accounting of the same process.

The oracle is what the program printed just before gcore snapshotted it: malloc_info's XML
(per arena and global), mallinfo2(), and the program's record of what each thread put in its
tcache, fastbins and bins and what it holds (live and mmapped).  See hwkit.compare_with_oracle
for the mapping and for the in_use tolerance (derived from libc's own allocations).
"""

from __future__ import annotations

import json

import pytest

from hwkit import (
    ARENA_CONFIGS,
    assert_matches_oracle,
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
