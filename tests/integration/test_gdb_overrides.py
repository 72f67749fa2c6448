"""An override address that holds nothing (issue 15, "Settings"): `set heapwalk main-arena 0x1234`
(and the CLI's --main-arena 0x1234) says that address holds no arena, not a coredump_filter hint
about the core. 0x1234 is in the first page, never mapped in a Linux process (vm.mmap_min_addr)."""

from __future__ import annotations

from hwkit import describe, no_traceback, run_cli, run_gdb


def test_gdb_main_arena_at_an_unmapped_address(corpora):
    c = corpora.core("arenas", "2", "0")
    r = run_gdb(c.binary, c.core, commands=[
        "set heapwalk main-arena 0x1234", "heapwalk arenas", "print $heapwalk_status",
        "set heapwalk main-arena", "set heapwalk mp 0x10", "heapwalk arenas",
        "set heapwalk mp", "heapwalk arenas --json"])
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert "heapwalk: 0x1234 holds no arena" in r.stderr, r.stderr
    assert "heapwalk: 0x10 holds no malloc_par (mp_)" in r.stderr, r.stderr
    assert "set heapwalk main-arena' with no value returns to auto" in r.stderr
    assert "coredump_filter" not in r.stderr
    assert "= 1" in r.stdout
    assert '"schema": "heapwalk/1"' in r.stdout  # back to auto: the arenas are found again


def test_cli_main_arena_at_an_unmapped_address(corpora):
    c = corpora.core("arenas", "2", "0")
    r = run_cli("arenas", c.core, "--main-arena", "0x1234")
    no_traceback(r)
    assert r.returncode == 1, describe(r)
    assert r.stderr.splitlines()[0] == "heapwalk: 0x1234 holds no arena: nothing is mapped " \
        "there in the target", r.stderr
    assert "leave out --main-arena" in r.stderr and "coredump_filter" not in r.stderr
