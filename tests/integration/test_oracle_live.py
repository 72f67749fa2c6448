"""`heapwalk arenas --pid PID --json` on the still-running process gives the same numbers.

The process is idle in pause() (its threads in pthread_cond_wait) after printing its ground
truth, so its heap cannot change under us; the engine freezes it anyway while it reads.
"""

from __future__ import annotations

import json

import pytest

from hwkit import ARENA_CONFIGS, assert_matches_oracle, config_id, describe, no_traceback, run_cli


@pytest.mark.parametrize("cfg", ARENA_CONFIGS, ids=config_id)
def test_live_arenas_equal_malloc_info_mallinfo2_and_program(corpora, cfg):
    threads, arena_max = cfg
    c = corpora.live("arenas", str(threads), str(arena_max))
    r = run_cli("arenas", "--pid", str(c.pid), "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert_matches_oracle(json.loads(r.stdout), c)
    assert c.proc.poll() is None, "the process survives being walked"


def test_live_and_core_agree_after_walk_twice(corpora):
    """Walking twice gives the same document (the engine detached cleanly the first time)."""
    c = corpora.live("arenas", "4", "0")
    first = run_cli("arenas", "--pid", str(c.pid), "--json")
    second = run_cli("arenas", "--pid", str(c.pid), "--json")
    assert first.returncode == 0 and second.returncode == 0, describe(second)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["arenas"] == b["arenas"] and a["mmapped"] == b["mmapped"]
    assert c.proc.poll() is None
