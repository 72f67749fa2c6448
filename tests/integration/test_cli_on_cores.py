"""Every CLI command on the 4-thread core: exit 0, no traceback, `--json` parses and is
consistent with `arenas --json` (and with the oracle where one applies).

Argument order follows `heapwalk COMMAND (CORE | --pid PID) [COMMAND ARGS] [--json]`.
"""

from __future__ import annotations

import json

import pytest

from hwkit import describe, no_traceback, run_cli


@pytest.fixture(scope="module")
def core4(corpora):
    return corpora.core("arenas", "4", "0")


@pytest.fixture(scope="module")
def arenas_doc(core4):
    r = run_cli("arenas", core4.core, "--json")
    assert r.returncode == 0, describe(r)
    return json.loads(r.stdout)


def ok(*args):
    r = run_cli(*args)
    no_traceback(r)
    assert r.returncode == 0, f"{' '.join(map(str, args))}: {describe(r)}"
    assert r.stdout.strip(), "no output"
    return r


def ok_json(*args):
    r = ok(*args, "--json")
    doc = json.loads(r.stdout)
    assert isinstance(doc.get("diagnostics"), list), "every document carries diagnostics"
    return doc


COMMANDS = [
    ["arenas"],
    ["heaps"],
    ["bins"],
    ["bins", "ARENA1"],
    ["tcache"],
    ["tcache", "LWP1"],
    ["chunks", "--limit", "5"],
    ["chunks", "--free", "--limit", "5"],
    ["chunks", "--used", "--limit", "5"],
    ["chunks", "--arena", "ARENA1", "--limit", "5"],
    ["chunk", "ADDR"],
]


def _subst(argv, core4, arenas_doc):
    out = []
    for a in argv:
        if a == "ARENA1":
            a = f"{arenas_doc['arenas'][1]['address']:#x}"
        elif a == "LWP1":
            a = str(core4.truth["threads"][1]["lwp"])
        elif a == "ADDR":
            a = f"{arenas_doc['arenas'][1]['heaps'][0]['address'] + 0x1000:#x}"
        out.append(a)
    return out


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_command_runs(core4, arenas_doc, argv, fmt):
    argv = _subst(argv, core4, arenas_doc)
    args = [argv[0], core4.core, *argv[1:]]
    if fmt == "json":
        ok_json(*args)
    else:
        ok(*args)


def test_heaps_json_matches_arenas(core4, arenas_doc):
    doc = ok_json("heaps", core4.core)
    got = {a["address"]: a["heaps"] for a in doc["arenas"]}
    for a in arenas_doc["arenas"]:
        assert got[a["address"]] == a["heaps"]
        for h in a["heaps"]:
            if not a["main"]:
                assert h["address"] % (64 << 20) == 0, "non-main heaps are HEAP_MAX_SIZE aligned"


def test_bins_json_matches_arenas(core4, arenas_doc):
    doc = ok_json("bins", core4.core)
    by = {a["address"]: a for a in arenas_doc["arenas"]}
    for b in doc["arenas"]:
        a = by[b["address"]]
        assert sum(f["count"] for f in b["fastbins"]) == a["fastbins"]["count"]
        assert sum(f["bytes"] for f in b["fastbins"]) == a["fastbins"]["bytes"]
        assert sum(x["count"] for x in b["bins"]) == a["bins"]["count"]
        assert sum(x["bytes"] for x in b["bins"]) == a["bins"]["bytes"]
        assert b["top"]["size"] == a["top_bytes"]
        for f in b["fastbins"]:  # listed again from the core: the counted chunks, each once
            assert len(f["chunks"]) == len(set(f["chunks"])) == f["count"]
            assert f["size"] * f["count"] == f["bytes"]
        for x in b["bins"]:
            assert len(x["chunks"]) == len({c["address"] for c in x["chunks"]}) == x["count"]
            assert sum(c["size"] for c in x["chunks"]) == x["bytes"]
        kinds = {x["kind"] for x in b["bins"]}
        assert kinds == {"unsorted", "small", "large"}, f"arena {b['address']:#x}: {kinds}"


def test_bins_one_arena_by_index(core4, arenas_doc):
    doc = ok_json("bins", core4.core, "1")
    assert [a["address"] for a in doc["arenas"]] == [arenas_doc["arenas"][1]["address"]]


def test_tcache_json_matches_program(core4):
    doc = ok_json("tcache", core4.core)
    got = {t["lwp"]: t for t in doc["threads"]}
    for t in core4.truth["threads"]:
        g = got[t["lwp"]]
        assert (g["count"], g["bytes"]) == (t["tcache"]["count"], t["tcache"]["bytes"])
        assert sum(b["count"] for b in g["bins"]) == g["count"]
        assert all(b["count"] <= 7 for b in g["bins"]), "tcache_count default is 7"
    one = ok_json("tcache", core4.core, str(core4.truth["threads"][2]["lwp"]))
    assert [t["lwp"] for t in one["threads"]] == [core4.truth["threads"][2]["lwp"]]


def test_chunks_limit_and_free_total(core4, arenas_doc):
    doc = ok_json("chunks", core4.core, "--limit", "5")
    assert len(doc["chunks"]) == 5 and doc["truncated"] is True
    free = ok_json("chunks", core4.core, "--free", "--limit", "5")
    want = sum(a["fastbins"]["count"] + a["bins"]["count"] + 1 + a["tcache"]["count"]
               for a in arenas_doc["arenas"])
    assert free["total"] == want, "free = tcache + fastbins + bins + one top per arena"
    used = ok_json("chunks", core4.core, "--used", "--limit", "5")
    want_used = sum(a["in_use"]["count"] for a in arenas_doc["arenas"]) + arenas_doc["mmapped"]["count"]
    assert used["total"] == want_used, "used = in_use of every arena + mmapped chunks"


def test_chunk_at_address(core4):
    chunks = ok_json("chunks", core4.core, "--used", "--limit", "5")["chunks"]
    target = chunks[-1]
    doc = ok_json("chunk", core4.core, f"{target['address'] + 0x18:#x}")
    assert doc["chunk"]["address"] == target["address"]
    assert doc["chunk"]["size"] == target["size"]
    assert doc["chunk"]["state"] == target["state"]


def test_live_commands(corpora):
    c = corpora.live("arenas", "4", "0")
    for argv in (["heaps"], ["bins", "0"], ["tcache"], ["chunks", "--limit", "5"]):
        ok_json(argv[0], "--pid", str(c.pid), *argv[1:])
    assert c.proc.poll() is None


def test_installed_launcher(corpora, tmp_path):
    """`cmake --install build --prefix P` gives a working P/bin/heapwalk (any prefix)."""
    import subprocess
    from hwkit import REPO
    build = REPO / "build"
    if not (build / "cmake_install.cmake").exists():  # a copied test tree (the ASan run)
        pytest.skip("no CMake build directory next to these tests")
    r = subprocess.run(["cmake", "--install", str(build), "--prefix", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    c = corpora.core("arenas", "1", "0")
    r = subprocess.run([str(tmp_path / "bin" / "heapwalk"), "arenas", str(c.core), "--json"],
                       capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert '"schema": "heapwalk/1"' in r.stdout
