"""Chunk inspection (issue 15): ``try_free``, ``chunk``, ``vis`` and ``classify`` examples.

corpora/tryfree.c sets up one pointer per case (a valid chunk, a tcache double free, a fastbin
double free, an unsorted double free, a misaligned pointer, a fake size, a smashed next size, a
good and a bad mmapped chunk) and, in a forked child per case, really frees it: the oracle for
``try_free`` is glibc's own abort message (or the child surviving). It also prints the address,
size and contents of a text chunk for ``chunk``/``vis`` and of a freed chunk of 'D's for
``classify``'s samples. Each gdb run is a fresh ``gdb -nx -batch``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from hwkit import (CACHE, build, describe, extract_json, gcore, no_traceback, run_cli, run_gdb,
                   source_key, spawn_ready, stop)

CASES = ["valid", "tcache2", "fasttop", "prev", "misaligned", "fakesize", "nextfast", "mmapped",
         "badmmap"]


@pytest.fixture(scope="module")
def tryfree() -> tuple[Path, Path, dict]:
    binary = build("tryfree")
    d = CACHE / "cores" / f"tryfree-{source_key('tryfree')}"
    if not (d / "complete").exists():
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        proc = spawn_ready([str(binary), str(d)])
        try:
            gcore(proc.pid, d / "core")
        finally:
            stop(proc)
        (d / "complete").write_text("ok\n")
    return binary, d / "core", json.loads((d / "truth.json").read_text())


def _expected(case: dict) -> tuple[bool, str]:
    """(aborts, glibc's message) as the child found them."""
    aborted = case["status"] != 0
    if aborted:
        assert case["status"] == 128 + 6, case  # SIGABRT from malloc_printerr
        assert case["message"], case
    return aborted, case["message"]


@pytest.mark.parametrize("name", CASES)
def test_try_free_cli_names_glibcs_check(tryfree, name):
    _, core, truth = tryfree
    case = truth["cases"][name]
    aborts, message = _expected(case)
    r = run_cli("try_free", core, hex(case["ptr"]), "--json")
    no_traceback(r)
    doc = json.loads(r.stdout)
    assert doc["aborts"] is aborts, describe(r)
    assert r.returncode == (1 if aborts else 0), describe(r)
    if aborts:
        assert doc["message"] == message, describe(r)
        assert doc["action"] == "abort"
        assert [c for c in doc["checks"] if not c["passed"]], doc
    else:
        assert doc["message"] is None
        assert doc["action"] == ("munmap" if name == "mmapped" else "tcache"), doc
    # Text output names the same message.
    t = run_cli("try_free", core, hex(case["ptr"]))
    assert t.returncode == r.returncode, describe(t)
    first = t.stdout.splitlines()[0]
    assert (("aborts: " + message) in first) if aborts else ("succeeds" in first), first


@pytest.mark.parametrize("name", ["valid", "tcache2", "fasttop", "prev", "misaligned",
                                  "fakesize"])
def test_try_free_gdb(tryfree, name):
    binary, core, truth = tryfree
    case = truth["cases"][name]
    aborts, message = _expected(case)
    r = run_gdb(binary, core, commands=["heapwalk try_free (char*)%d" % case["ptr"],
                                        "print $heapwalk_status"])
    no_traceback(r)
    out = r.stdout
    if aborts:
        assert "aborts: " + message in out, describe(r)
        assert re.search(r"^\$1 = 1$", out, re.M), describe(r)
    else:
        assert "succeeds, puts the chunk in the tcache" in out, describe(r)
        assert re.search(r"^\$1 = 0$", out, re.M), describe(r)


def _chunk_json(core: Path, address: int, *extra: str) -> dict:
    r = run_cli("chunk", core, hex(address), "--json", *extra)
    no_traceback(r)
    return json.loads(r.stdout)


def test_chunk_fields_and_hexdump_cli(tryfree):
    _, core, truth = tryfree
    text = truth["text"]
    doc = _chunk_json(core, text["ptr"] + 5)
    c = doc["chunk"]
    assert c["address"] == text["chunk"] and c["mem"] == text["ptr"]
    assert c["size"] == text["size"] and c["size_field"] == text["size_field"]
    assert c["flags"] == (["PREV_INUSE"] if text["size_field"] & 1 else [])
    assert c["state"] == "used" and c["offset"] == 5
    data = bytes.fromhex(c["bytes"])
    assert len(data) == 64
    assert data.startswith(text["content"].encode() + b"\0")
    r = run_cli("chunk", core, hex(text["ptr"]), "--bytes", "16")
    assert r.returncode in (0, 1), describe(r)
    assert "|hello tryfree: t|" in r.stdout, describe(r)
    assert "flags  0x%x: PREV_INUSE" % text["size_field"] in r.stdout, describe(r)


def test_chunk_tcache_fd_and_key_decoded(tryfree):
    _, core, truth = tryfree
    ptr = truth["cases"]["tcache2"]["ptr"]
    c = _chunk_json(core, ptr)["chunk"]
    assert c["state"] == "tcache"
    # Alone in its bin (the program freed one 0x40 chunk): next is NULL, stored as the
    # safe-linking mask (&e->next >> 12) on 2.32+.
    assert c["fd"] == 0
    assert c["fd_stored"] in (0, ptr >> 12)
    assert c["key_matches"] in ("tcache_key", "tcache")


def test_chunk_fastbin_fd_decoded(tryfree):
    _, core, truth = tryfree
    c = _chunk_json(core, truth["cases"]["fasttop"]["ptr"])["chunk"]
    assert c["state"] == "fastbin"
    assert c["fd"] == 0  # the only chunk of its fastbin
    assert c["bk"] is None


def test_chunk_outside_heap_says_what_it_is(tryfree):
    binary, core, _ = tryfree
    r = run_gdb(binary, core, commands=["heapwalk chunk $rsp", "heapwalk chunk &main",
                                        "heapwalk chunk 8"])
    no_traceback(r)
    assert "on the stack of thread LWP" in r.stdout and "(gdb thread 1)" in r.stdout, describe(r)
    assert "tryfree" in r.stdout and "at main+0x0" in r.stdout, describe(r)
    assert "not mapped in the target" in r.stdout, describe(r)


def test_chunk_gdb_shows_flags_fd_and_hexdump(tryfree):
    binary, core, truth = tryfree
    text = truth["text"]
    r = run_gdb(binary, core, commands=["heapwalk chunk (char*)%d" % text["ptr"],
                                        "heapwalk chunk (char*)%d" % truth["cases"]["tcache2"]["ptr"]])
    no_traceback(r)
    assert "PREV_INUSE" in r.stdout and "|hello tryfree: t|" in r.stdout, describe(r)
    assert "safe-linking" in r.stdout and "= tcache_key" in r.stdout, describe(r)


def _vis_lines(out: str) -> list[str]:
    return [l for l in out.splitlines() if re.match(r"^0x[0-9a-f]+  ", l)]


def test_vis_cli_and_gdb(tryfree):
    binary, core, truth = tryfree
    text = truth["text"]
    r = run_cli("vis", core, hex(text["ptr"]), "2", "--json")
    no_traceback(r)
    doc = json.loads(r.stdout)
    first = doc["chunks"][0]
    assert first["address"] == text["chunk"] and first["size"] == text["size"]
    data = bytes.fromhex(first["bytes"])
    assert int.from_bytes(data[8:16], "little") == text["size_field"]
    assert data[16:16 + len(text["content"])] == text["content"].encode()
    assert len(doc["chunks"]) == 2 and doc["chunks"][1]["address"] == text["chunk"] + text["size"]
    for runner in ("cli", "gdb"):
        if runner == "cli":
            t = run_cli("vis", core, hex(text["ptr"]), "2", extra_env={"COLUMNS": "80"})
            out = t.stdout
        else:
            t = run_gdb(binary, core, commands=["heapwalk vis (char*)%d 2" % text["ptr"]])
            out = t.stdout
        no_traceback(t)
        assert "\x1b[" not in out, "no colour when not a terminal"
        lines = _vis_lines(out)
        assert lines and all(len(l) <= 80 for l in lines), out
        assert lines[0].startswith("0x%x  size 0x%x  used" % (text["chunk"], text["size"])), out
        assert ("0x%016x" % text["size_field"]) in lines[1], out
        assert "hello tr" in out and "yfree: t" in out, out


def test_vis_default_starts_at_first_chunk(tryfree):
    _, core, _ = tryfree
    doc = json.loads(run_cli("vis", core, "--json").stdout)
    assert len(doc["chunks"]) == 10
    addrs = [c["address"] for c in doc["chunks"]]
    assert all(b == a + c["size"] for a, b, c in zip(addrs, addrs[1:], doc["chunks"]))


def test_classify_examples_are_user_pointers_with_their_own_text(tryfree):
    binary, core, truth = tryfree
    r = run_cli("classify", core, "--free", "--json")
    no_traceback(r)
    doc = json.loads(r.stdout)
    used = {c["name"]: c for c in doc["classes"]}
    free = {c["name"]: c for c in doc["free_classes"]}
    for row in list(used.values()) + list(free.values()):
        if row["example"]:
            assert row["example_mem"] == row["example"] + 16
    # Each text row's sample is its own example's text: the used row's example holds it (the
    # environment string setenv() copied, or the program's text), the free row is the freed
    # 'D's (the first 16 bytes are the tcache links), though the 'D's come first in the heap.
    row = used["text"]
    data = bytes.fromhex(_chunk_json(core, row["example_mem"])["chunk"]["bytes"])
    assert data.startswith(row["sample"].encode()), (row, data)
    assert set(row["sample"]) != {"D"}, row
    assert free["text"]["example_mem"] == truth["dtext"], free["text"]
    assert set(free["text"]["sample"]) == {"D"}, free["text"]
    t = run_cli("classify", core)
    assert "0x%x" % row["example_mem"] in t.stdout, describe(t)


def test_classify_list(tryfree):
    binary, core, truth = tryfree
    r = run_cli("classify", core, "--list", "text", "--json")
    no_traceback(r)
    listing = json.loads(r.stdout)["list"]
    assert listing["class"] == "text"
    hit = [c for c in listing["chunks"] if c["mem"] == truth["text"]["ptr"]]
    assert hit and hit[0]["size"] == truth["text"]["size"] and hit[0]["used"], listing
    assert listing["total"] == len(listing["chunks"]) and not listing["truncated"]
    # With --free, the freed 'D's are listed as free text; --limit bounds the list.
    r = run_cli("classify", core, "--free", "--list", "text", "--limit", "0", "--json")
    listing = json.loads(r.stdout)["list"]
    assert any(c["mem"] == truth["dtext"] and not c["used"] for c in listing["chunks"]), listing
    r = run_cli("classify", core, "--free", "--list", "text", "--limit", "1", "--json")
    short = json.loads(r.stdout)["list"]
    assert len(short["chunks"]) == 1 and short["total"] == listing["total"]
    assert short["truncated"] is (listing["total"] > 1)
    g = run_gdb(binary, core, commands=["heapwalk classify --list text --limit 1"])
    no_traceback(g)
    assert "of class text" in g.stdout, describe(g)
