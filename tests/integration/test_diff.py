"""`heapwalk diff` and the seeds' scenarios (issue 6 acceptance).

- Inflater leak with many threads: corpora/java/ConnGrowth.java leaks 2000 Inflaters over 32
  threads; `report`'s verdict names `untracked-malloc` and the zlib inflate streams.
- Arena retention after a burst: test_retention.py::test_burst_verdict_names_arena_retention
  (corpora/fragment.c in `burst` mode; verdict `arena-retention`).
- Direct-buffer growth between two snapshots: ConnGrowth opens 500 "connections" (a direct
  ByteBuffer of 8 KiB and an Unsafe block of 3000 bytes each), is snapshotted, opens 2000 more
  and is snapshotted again (same process); `diff` shows NMT "Other" growing by exactly what the
  program allocated and the two chunk sizes whose count grew by 2000.
- diff of saved `report --json` documents equals diff of the cores; errors are one line.
"""

from __future__ import annotations

import json

import pytest

from hwkit import describe, extract_json, import_heapwalk, no_traceback, run_cli, run_gdb

NMT_HEADER = 16  # JDK 17 MallocHeader in front of every NMT-tracked malloc block (17.0.x
# updates add a 2-byte footer canary, hence the range below)


def chunk_sizes(block: int) -> range:
    """The glibc chunk sizes (x86-64) an NMT-tracked malloc of ``block`` bytes may take."""
    lo = (block + NMT_HEADER + 8 + 15) & ~15
    return range(lo, lo + 33, 16)


def cli_json(*args: str) -> dict:
    r = run_cli(*args, "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def snaps():
    import nmtkit  # noqa: PLC0415
    if not nmtkit.have_jdk():
        pytest.skip("no JDK")
    import seedkit  # noqa: PLC0415
    return seedkit.snapshots()


@pytest.fixture(scope="module")
def saved(snaps, tmp_path_factory):
    d = tmp_path_factory.mktemp("saved")
    out = {}
    for name, core in (("a", snaps.core_a), ("b", snaps.core_b)):
        r = run_cli("report", str(core), "--json")
        no_traceback(r)
        assert r.returncode == 0, describe(r)
        (d / f"{name}.json").write_text(r.stdout)
        out[name] = d / f"{name}.json"
    return out


def test_inflater_leak_verdict_names_zlib_streams(snaps, saved):
    doc = json.loads(saved["a"].read_text())
    v = doc["verdict"]
    assert v[0]["cause"] == "untracked-malloc", v
    assert "zlib inflate stream" in v[0]["summary"] and "Inflater" in v[0]["action"], v[0]
    top = doc["classes"][0]
    assert top["name"] == "zlib inflate stream + window" and top["count"] == snaps.truth_a["inflaters"]
    un = doc["nmt"]["untracked_malloc"]["bytes"]
    assert v[0]["bytes"] == un and un >= top["bytes"] >= 64 << 20
    # many threads: the streams sit in many arenas
    assert doc["pressure"]["threads"] >= snaps.truth_a["threads"]


def test_diff_shows_direct_buffer_growth(snaps):
    t1, t2 = snaps.truth_a, snaps.truth_b
    grown = t2["connections"] - t1["connections"]
    per_conn = t1["buffer"] + t1["session"]
    doc = cli_json("diff", str(snaps.core_a), str(snaps.core_b))
    assert doc["schema"] == "heapwalk/1" and doc["command"] == "diff"
    assert doc["a"]["kind"] == doc["b"]["kind"] == "core"
    nmt = {r["name"]: r for r in doc["nmt"]}
    other = nmt["Other"]["delta"]
    # NMT counts the requested sizes: what the program allocated in between, plus whatever
    # the JDK itself put in Other meanwhile (17.0.15: 8 bytes; 17.0.21: none).
    assert 0 <= other["malloc"] - grown * per_conn < 256, other
    assert other["committed"] == other["malloc"]
    # The category that grew most is Other.
    assert max(doc["nmt"], key=lambda r: r["delta"]["committed"])["name"] == "Other"
    # "A few KB per connection": the two chunk sizes whose count grew by `grown`, largest first.
    g = doc["growth"]
    assert g[0]["size"] in chunk_sizes(t1["buffer"]) and g[0]["count"] == grown, g[:4]
    assert g[1]["size"] in chunk_sizes(t1["session"]) and g[1]["count"] == grown, g[:4]
    assert g[0]["bytes"] == grown * g[0]["size"]
    assert g[0]["a_count"] >= t1["connections"]
    # Nothing else grew by more than a few KiB.
    assert sum(x["bytes"] for x in g[2:]) < 64 << 10, g[2:]
    totals = {t["what"]: t for t in doc["totals"]}
    assert totals["malloc not tracked by NMT"]["delta"] == 0
    assert totals["glibc in use"]["delta"] == g[0]["bytes"] + g[1]["bytes"] + sum(
        x["delta"]["bytes"] for x in doc["size_classes"] if x["size"] not in (g[0]["size"], g[1]["size"]))
    # Content classes: the NMT-tracked "Other" blocks, two per connection.
    cls = {c["name"]: c for c in doc["classes"]}
    assert cls["NMT Other"]["delta"]["count"] == 2 * grown
    # The arena the main thread allocates from grew; the zlib arenas did not move.
    changed = [a for a in doc["arenas"] if a["delta"]["in_use_bytes"] > 1 << 20]
    assert len(changed) == 1 and changed[0]["delta"]["in_use_bytes"] >= grown * per_conn
    assert doc["verdict"]["a"][0] == doc["verdict"]["b"][0] == "untracked-malloc"
    # Text: the tables a person reads.
    r = run_cli("diff", str(snaps.core_a), str(snaps.core_b))
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert "chunk sizes whose count grew" in r.stdout and "NMT categories that changed" in r.stdout
    line = next(l for l in r.stdout.splitlines() if l.strip().startswith("Other"))
    assert "+21.3 MiB" in line or "+%s" % "21." in line, line
    assert ("%d  +%d" % (g[0]["size"], grown)) in r.stdout


def test_diff_of_saved_reports_equals_diff_of_cores(snaps, saved):
    cores = cli_json("diff", str(snaps.core_a), str(snaps.core_b))
    reports = cli_json("diff", str(saved["a"]), str(saved["b"]))
    mixed = cli_json("diff", str(saved["a"]), str(snaps.core_b))
    assert reports["a"]["kind"] == "report" and mixed["b"]["kind"] == "core"
    for d in (reports, mixed):
        for k in ("totals", "arenas", "nmt", "classes", "size_classes", "growth", "mappings", "verdict"):
            assert d[k] == cores[k], k
    # Deterministic: the same inputs give the same bytes.
    again = run_cli("diff", str(saved["a"]), str(saved["b"]), "--json")
    assert again.stdout == json.dumps(reports, indent=2, ensure_ascii=False) + "\n"
    # A saved report carries what diff needs.
    a = json.loads(saved["a"].read_text())
    assert a["schema"] == "heapwalk/1" and a["command"] == "report"
    assert {"size_classes", "content_classes", "retention", "nmt", "mappings"} <= set(a)
    assert sum(s["count"] for s in a["size_classes"]) > 1000
    # gdb: the same command, no inferior needed.
    g = run_gdb(commands=["heapwalk diff --json %s %s" % (saved["a"], saved["b"])])
    no_traceback(g)
    gd = extract_json(g.stdout)
    assert gd["growth"] == reports["growth"] and gd["nmt"] == reports["nmt"]
    # A snapshot against itself: nothing changed.
    same = cli_json("diff", str(saved["a"]), str(snaps.core_a))
    assert all(t["delta"] == 0 for t in same["totals"])
    assert same["growth"] == [] and same["classes"] == [] and same["size_classes"] == []


def test_diff_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    other = tmp_path / "v2.json"
    other.write_text(json.dumps({"schema": "heapwalk/2", "command": "report", "retention": {}}))
    arenas = tmp_path / "arenas.json"
    arenas.write_text(json.dumps({"schema": "heapwalk/1", "command": "arenas"}))
    for a, b, what in ((bad, bad, "not a JSON report"), (other, other, "schema"),
                       (arenas, arenas, "not a 'report --json'"),
                       (tmp_path / "missing", bad, "no such file")):
        r = run_cli("diff", str(a), str(b))
        no_traceback(r)
        assert r.returncode == 1, describe(r)
        assert what in r.stderr and r.stderr.startswith("heapwalk: "), r.stderr
    r = run_cli("diff", str(bad))
    no_traceback(r)
    assert r.returncode == 2, describe(r)


def test_compare_orders_growth_by_bytes():
    """compare() on two synthetic documents: growth sorted by bytes grown, ties by size."""
    import_heapwalk()
    from heapwalk.cmd_diff import compare  # noqa: PLC0415

    def doc(sizes, cls, in_use):
        return {"schema": "heapwalk/1", "command": "report", "target": {"pid": 1},
                "retention": {"in_use_bytes": in_use, "arenas": [{"index": 0, "main": True, "in_use_bytes": in_use}]},
                "size_classes": [{"size": s, "count": n, "bytes": s * n} for s, n in sizes],
                "content_classes": [{"name": k, "kind": "size", "count": n, "bytes": b} for k, n, b in cls],
                "verdict": [{"cause": "in-use"}], "nmt": None}
    a = doc([(32, 10), (4096, 1), (64, 5)], [("x", 1, 100)], 1000)
    b = doc([(32, 20), (4096, 3), (64, 5), (128, 1)], [("x", 2, 300), ("y", 1, 5)], 9000)
    d = compare(a, b)
    assert [(g["size"], g["count"], g["bytes"]) for g in d["growth"]] == [(4096, 2, 8192), (32, 10, 320), (128, 1, 128)]
    assert [c["name"] for c in d["classes"]] == ["x", "y"]
    assert d["arenas"][0]["delta"]["in_use_bytes"] == 8000
    assert d["nmt"] is None
    assert compare(a, b) == d
