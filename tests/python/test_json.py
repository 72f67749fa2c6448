"""JSON output of every command: schema, shape, determinism (fake engine)."""

from __future__ import annotations

import json

import pytest

import fake_native
from fake_native import HEAP, MAIN, SECOND


def _json(run, *argv):
    status, out, err = run(*argv)
    assert err == "", err
    return status, json.loads(out), out


def test_arenas_json_is_the_engine_report_unchanged(fake, core, run) -> None:
    status, doc, text = _json(run, "arenas", core, "--json")
    assert status == 0
    assert doc == fake_native.ARENAS
    assert list(doc) == ["schema", "glibc", "arenas", "threads", "mmapped", "diagnostics"]
    arena = doc["arenas"][0]
    for key, kind in (("address", int), ("main", bool), ("system_bytes", int),
                      ("max_system_bytes", int), ("heaps", list), ("fastbins", dict),
                      ("bins", dict), ("top_bytes", int), ("tcache", dict), ("in_use", dict)):
        assert isinstance(arena[key], kind), key


@pytest.mark.parametrize("argv,keys", [
    (["heaps"], ["schema", "command", "arenas", "diagnostics"]),
    (["bins"], ["schema", "command", "arenas", "diagnostics"]),
    (["tcache"], ["schema", "command", "threads", "diagnostics"]),
    (["chunks"], ["schema", "command", "chunks", "total", "truncated", "diagnostics"]),
    (["chunk", "0x7ffff0000048"], ["schema", "command", "query", "chunk", "prev", "next",
                                   "arena", "diagnostics"]),
])
def test_wrapped_documents(fake, core, run, argv, keys) -> None:
    status, doc, _ = _json(run, argv[0], core, *argv[1:], "--json")
    assert list(doc) == keys
    assert doc["schema"] == "heapwalk/1" and doc["command"] == argv[0]


def test_heaps_json(fake, core, run) -> None:
    _, doc, _ = _json(run, "heaps", core, "--json")
    assert doc["arenas"][1] == {"index": 1, "address": SECOND, "main": False,
                                "heaps": [{"address": HEAP, "size": 270336,
                                           "mprotect_size": 270336}]}


def test_bins_json_one_arena(fake, core, run) -> None:
    _, doc, _ = _json(run, "bins", core, "1", "--json")
    assert [a["address"] for a in doc["arenas"]] == [SECOND]
    _, doc, _ = _json(run, "bins", core, "--json")
    assert [a["address"] for a in doc["arenas"]] == [MAIN, SECOND]


def test_chunks_json_lists_all_unless_limited(fake, core, run) -> None:
    _, doc, _ = _json(run, "chunks", core, "--json")
    assert len(doc["chunks"]) == doc["total"] == 250 and doc["truncated"] is False
    assert fake.calls[-2] == ("chunks", None, "all", None)
    _, doc, _ = _json(run, "chunks", core, "--json", "--limit", "10", "--used", "--arena", "1")
    assert fake.calls[-2] == ("chunks", 1, "used", 10)
    assert len(doc["chunks"]) == 10 and doc["truncated"] is True


def test_chunks_text_limit_defaults_to_100(fake, core, run) -> None:
    status, out, _ = run("chunks", core)
    assert ("chunks", None, "all", 100) in fake.calls
    assert "… 150 more (use --limit 0 for all)" in out
    run("chunks", core, "--limit", "0", "--free")
    assert ("chunks", None, "free", None) in fake.calls


def test_chunk_json_not_found_is_status_1(fake, core, run) -> None:
    status, doc, _ = _json(run, "chunk", core, "16", "--json")
    assert status == 1 and doc["chunk"] is None and doc["query"] == 16


def test_json_is_deterministic(fake, core, run) -> None:
    outputs = {run("bins", core, "--json")[1] for _ in range(3)}
    assert len(outputs) == 1
    assert next(iter(outputs)).endswith("}\n")


def test_json_never_has_colour(fake, core, run) -> None:
    assert "\x1b[" not in run("arenas", core, "--json")[1]
