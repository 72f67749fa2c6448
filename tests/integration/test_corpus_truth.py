"""The corpora programs themselves: their ground truth shows every free-list kind.

These need no heapwalk at all; they prove that the oracle tests below test what they claim
(chunks in tcache, fastbins, unsorted, small and large bins, top, plus mmapped chunks).
"""

from __future__ import annotations

import pytest

from hwkit import ARENA_CONFIGS, config_id

SMALL_MAX = 0x3F0  # glibc 2.36 x86-64: small bins hold chunks < MIN_LARGE_SIZE (0x400)
FAST_MAX = 0x80  # default global_max_fast for 64-bit


@pytest.mark.parametrize("cfg", ARENA_CONFIGS, ids=config_id)
def test_every_arena_has_every_free_list_kind(corpora, cfg):
    threads, arena_max = cfg
    c = corpora.core("arenas", str(threads), str(arena_max))
    info, truth = c.info, c.truth
    assert len(truth["threads"]) == threads
    distinct = {("main" if t["main_arena"] else t["arena"]) for t in truth["threads"]}
    assert len(info.heaps) == len(distinct), "every arena is used by some thread"
    if threads == 16:
        assert len(info.heaps) >= 2
    if arena_max:
        assert len(info.heaps) == arena_max, "M_ARENA_MAX makes threads share arenas"
    for h in info.heaps:
        assert h.fast_count > 0, f"heap {h.nr}: no fastbin chunks"
        assert h.unsorted and h.unsorted["count"] > 0, f"heap {h.nr}: no unsorted chunks"
        # Bin entries (not fastbin ones) carry the PREV_INUSE bit in from/to: odd numbers.
        binned = [s for s in h.sizes if s["from"] % 2 == 1 and s["to"] % 16 == 1]
        assert any(s["to"] - 1 <= SMALL_MAX for s in binned), f"heap {h.nr}: no small-bin chunks"
        assert any(s["from"] - 1 > SMALL_MAX for s in binned), f"heap {h.nr}: no large-bin chunks"
        assert h.rest_count >= 1  # the top chunk
    # tcache: every thread put some there; mmapped: every thread holds some.
    assert all(t["tcache"]["count"] > 0 for t in truth["threads"])
    assert info.mmap_count == sum(t["mmapped"]["count"] for t in truth["threads"]) > 0
    assert info.mmap_size == sum(t["mmapped"]["bytes"] for t in truth["threads"])
    # The program's own bookkeeping agrees with malloc_info's totals.
    assert info.fast_count == sum(t["fastbins"]["count"] for t in truth["threads"])
    assert info.fast_size == sum(t["fastbins"]["bytes"] for t in truth["threads"])
    binned_count = sum(t[k]["count"] for t in truth["threads"] for k in ("unsorted", "small", "large"))
    assert info.rest_count == binned_count + len(info.heaps)
    mi = truth["mallinfo2"]
    assert mi["ordblks"] == info.rest_count and mi["smblks"] == info.fast_count
    assert mi["hblks"] == info.mmap_count and mi["hblkhd"] == info.mmap_size
    # malloc_info's rest size includes one PREV_INUSE bit per binned chunk; mallinfo2 does not.
    assert info.rest_size - binned_count == mi["fordblks"] - mi["fsmblks"]
    assert "Total (incl. mmap)" in c.stats_text


def test_corrupt_program_reports_its_damage(corpora):
    c = corpora.core("corrupt")
    t = c.truth
    assert t["smashed"]["new_size_field"] != t["smashed"]["old_size_field"]
    assert len(t["cycle"]["addresses"]) == 2
    assert all(a % 16 == 0 for a in [t["smashed"]["address"], *t["cycle"]["addresses"]])
    assert c.core.stat().st_size > 0
