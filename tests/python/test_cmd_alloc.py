"""cmd_alloc's renderers and diff's allocator pools (issue 16), on canned documents: 80 columns,
target text escaped, deltas per pool and statistic."""

from __future__ import annotations

from heapwalk import cmd_alloc, cmd_diff, render
from heapwalk.cmd_chunk import hexdump

EVIL = "/lib/libjemalloc.so.2\x1b[31m\r"


def _head(kind: str = "jemalloc") -> dict:
    return {"allocator": kind, "version": "jemalloc 5.3.0", "module": EVIL,
            "layout_source": "search", "diagnostics": []}


def _fits(lines: list) -> None:
    for line in lines:
        assert len(line) <= 80, line
        assert "\x1b" not in line and "\r" not in line, repr(line)


def test_render_chunks_tcache_chunk_fit_and_escape() -> None:
    doc = render.safe_doc(dict(_head(), chunks=[
        {"address": 0x7f0000001000, "size": 16, "state": "in-use", "arena": 0x7f0000400000,
         "pool": 1},
        {"address": 0x7f0000001010, "size": 16, "state": "cached", "arena": 0x7f0000400000,
         "pool": 1}], total=5, counts={"in-use": 3, "cached": 2}))
    lines = cmd_alloc.render_chunks(doc, True)
    _fits(lines)
    assert "\\x1b" in lines[1] and "3 in-use, 2 cached" in lines[-1]
    doc = render.safe_doc(dict(_head(), lwp=None, thread_caches=[
        {"lwp": 42, "address": 0x7f0000500000, "bytes": 48, "objects": 3,
         "bins": [{"size": 16, "count": 3, "bytes": 48}]}]))
    lines = cmd_alloc.render_tcache(doc, lambda lwp: 2)
    _fits(lines)
    assert any("thread LWP 42 (gdb thread 2)" in x for x in lines)
    doc = render.safe_doc(dict(_head(), query=0x7f0000001013, chunk={
        "address": 0x7f0000001010, "size": 16, "state": "in-use", "offset": 3, "pool": 1,
        "arena": 0x7f0000400000, "pool_name": "arena 1", "size_class": 16,
        "span": {"kind": "slab", "address": 0x7f0000001000, "bytes": 4096, "state": "active",
                 "edata": 0x7f0000600000, "regions": 256},
        "bytes": "41" * 16, "bytes_at": 0x7f0000001010}))
    lines = cmd_alloc.render_chunk(doc, hexdump)
    _fits(lines)
    assert "3 bytes into it" in lines[0] and any("256 regions" in x for x in lines)


def _report(stats: dict) -> dict:
    return {"schema": render.SCHEMA, "command": "report", "retention": {},
            "allocator_pools": {"allocator": "jemalloc", "version": "jemalloc 5.3.0",
                                "pools": [{"index": 0, "name": "arena 0", "stats": stats}]}}


def test_diff_allocator_pools_deltas() -> None:
    a = _report({"allocated": 100, "dirty": 4096, "muzzy": 0})
    b = _report({"allocated": 350, "dirty": 0, "retained": 8192})
    cmd_diff.check_report(a)
    doc = cmd_diff.compare(a, b)
    assert doc["allocator"] == "jemalloc"
    pool = doc["allocator_pools"]["pools"][0]
    assert pool["delta"] == {"allocated": 250, "dirty": -4096, "muzzy": 0, "retained": 8192}
    lines = cmd_diff.render_diff(doc)
    _fits(lines)
    assert any("arena 0 that changed" in x for x in lines)
    # A pool only in B, and a report without pools on one side.
    c = _report({"allocated": 1})
    c["allocator_pools"]["pools"].append({"index": 3, "name": "arena 3", "stats": {"active": 4096}})
    doc = cmd_diff.compare({"schema": render.SCHEMA, "retention": {}}, c)
    ins = {p["index"]: p["in"] for p in doc["allocator_pools"]["pools"]}
    assert ins == {0: "b", 3: "b"}
    assert any("glibc" in d["detail"] for d in doc["diagnostics"])
