"""The gdb face: a fresh `gdb -nx -batch -x <repo>/gdbinit` on a core and on a live process
gives the same numbers as the oracle, and every command runs without a Python traceback."""

from __future__ import annotations

import json
import re

import pytest

from hwkit import (
    ARENA_CONFIGS,
    assert_matches_oracle,
    config_id,
    describe,
    extract_json,
    no_traceback,
    run_cli,
    run_gdb,
)


@pytest.mark.parametrize("cfg", ARENA_CONFIGS, ids=config_id)
def test_gdb_on_core_equals_oracle(corpora, cfg):
    threads, arena_max = cfg
    c = corpora.core("arenas", str(threads), str(arena_max))
    r = run_gdb(c.binary, c.core, commands=["heapwalk arenas --json"])
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert_matches_oracle(extract_json(r.stdout), c)


@pytest.mark.parametrize("cfg", ARENA_CONFIGS, ids=config_id)
def test_gdb_on_live_process_equals_oracle(corpora, cfg):
    threads, arena_max = cfg
    c = corpora.live("arenas", str(threads), str(arena_max))
    r = run_gdb("-p", str(c.pid), commands=["heapwalk arenas --json"])
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert_matches_oracle(extract_json(r.stdout), c)
    assert c.proc.poll() is None, "gdb detached and the process lives on"


def _hexes(text: str) -> set[int]:
    return {int(h, 16) for h in re.findall(r"0x[0-9a-fA-F]+", text)}


def _some_used_chunk(core) -> int:
    r = run_cli("chunks", core, "--used", "--limit", "5", "--json")
    assert r.returncode == 0, describe(r)
    chunks = json.loads(r.stdout)["chunks"]
    assert chunks, "no used chunks listed"
    return next((ch for ch in chunks if ch["state"] == "used"), chunks[0])["address"]


def test_gdb_commands_run_without_traceback(corpora):
    c = corpora.core("arenas", "4", "0")
    addr = _some_used_chunk(c.core)
    lwp = c.truth["threads"][1]["lwp"]
    commands = [
        f"heapwalk chunk {addr + 0x18:#x}",
        "heapwalk bins",
        "heapwalk bins 1",
        "heapwalk tcache",
        f"heapwalk tcache --lwp {lwp}",
        "heapwalk heaps",
        "heapwalk chunks --limit 5",
        "heapwalk chunks --free --limit 5",
        "heapwalk arenas",
    ]
    for cmd in commands:
        r = run_gdb(c.binary, c.core, commands=[cmd])
        no_traceback(r)
        assert r.returncode == 0, f"{cmd}: {describe(r)}"
        assert r.stdout.strip(), f"{cmd}: no output"
        if cmd.startswith("heapwalk chunk "):
            assert addr in _hexes(r.stdout), f"{cmd}: chunk {addr:#x} not named:\n{r.stdout}"
        if cmd.startswith("heapwalk tcache --lwp "):
            assert str(lwp) in r.stdout


def test_gdb_errors_are_one_line_without_traceback(corpora):
    c = corpora.core("arenas", "1", "0")
    for cmd in ["heapwalk nosuchcommand", "heapwalk chunk notanaddress", "heapwalk chunks --bogus"]:
        r = run_gdb(c.binary, c.core, commands=[cmd])
        no_traceback(r)


def test_gdb_on_live_process_other_commands(corpora):
    c = corpora.live("arenas", "4", "0")
    for cmd in ["heapwalk heaps", "heapwalk tcache", "heapwalk bins 0", "heapwalk chunks --limit 5"]:
        r = run_gdb("-p", str(c.pid), commands=[cmd])
        no_traceback(r)
        assert r.returncode == 0, f"{cmd}: {describe(r)}"
    assert c.proc.poll() is None


def test_gdb_settings_override_symbols(corpora):
    """`set heapwalk no-symbols on` makes the engine find glibc's state from memory alone, and
    `set heapwalk main-arena EXPR` (a gdb expression) wins over every other way; the numbers
    still equal the oracle."""
    c = corpora.core("arenas", "4", "0")
    r = run_gdb(c.binary, c.core, commands=["set heapwalk no-symbols on", "heapwalk arenas --json"])
    no_traceback(r)
    doc = extract_json(r.stdout)
    assert doc["glibc"]["symbols"]["main_arena"] == "heuristic:arena-ring", doc["glibc"]
    assert_matches_oracle(doc, c, version_range_ok=True)
    r = run_gdb(c.binary, c.core, commands=["set heapwalk main-arena &main_arena",
                                             "show heapwalk main-arena", "heapwalk arenas --json"])
    no_traceback(r)
    doc = extract_json(r.stdout)
    assert doc["glibc"]["symbols"]["main_arena"] == "override", doc["glibc"]
    assert_matches_oracle(doc, c)
