"""``trend`` on synthetic snapshot directories (no engine needed): layout, JSONL schema, HTML
escaping and polylines, odd inputs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from heapwalk import cmd_trend, commands, trend_html

GiB = 1 << 30
MiB = 1 << 20
T0 = 1796300000.0


def report(in_use: int, sizes: Dict[int, int], nmt: Optional[Dict[str, int]] = None,
           classes: Optional[List[Dict[str, Any]]] = None, pid: int = 42) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "schema": "heapwalk/1", "command": "report",
        "target": {"kind": "live", "path": "/proc/%d" % pid, "pid": pid, "threads": 3},
        "retention": {"in_use_bytes": in_use, "free_bytes": in_use // 10,
                      "trimmable_bytes": in_use // 20, "tcache_bytes": 1000, "top_bytes": 5000,
                      "fragment_bytes": 0,
                      "arenas": [{"index": 0, "main": True, "system_bytes": in_use,
                                  "in_use_bytes": in_use // 2, "free_bytes": 1,
                                  "trimmable_bytes": 0, "top_bytes": 0},
                                 {"index": 1, "main": False, "system_bytes": in_use,
                                  "in_use_bytes": in_use // 2, "free_bytes": 2,
                                  "trimmable_bytes": 0, "top_bytes": 0}]},
        "pressure": {"arenas": 2, "threads": 3},
        "glibc": {"version": "2.36", "system_bytes": in_use * 2, "mmapped_bytes": 0},
        "mappings": {"mapped_bytes": 4 * GiB, "resident_bytes": in_use * 3, "groups": []},
        "nmt": None,
        "size_classes": [{"size": s, "count": c, "bytes": s * c} for s, c in sorted(sizes.items())],
        "content_classes": classes or [],
        "classes": (classes or [])[:5],
        "verdict": [{"cause": "in-use"}],
        "diagnostics": [],
    }
    if nmt is not None:
        doc["nmt"] = {"level": "summary", "jdk": "17.0.9",
                      "categories": [{"name": k, "reserved": v * 2, "committed": v,
                                      "malloc": {"bytes": v // 2, "count": 1}}
                                     for k, v in nmt.items()],
                      "total_reserved": 2 * sum(nmt.values()),
                      "total_committed": sum(nmt.values()), "malloc_bytes": 1,
                      "untracked_malloc": {"bytes": 77 * MiB, "count": 2000}}
    return doc


def sample(t: float, rss: int, usage: Optional[int] = None, limit: int = 8 * GiB,
           version: int = 2) -> Dict[str, Any]:
    return {"time": t, "pid": 42, "rss_bytes": rss, "rss_anon_bytes": rss - MiB,
            "rss_file_bytes": MiB,
            "cgroup": {"path": "/kubepods/burstable/pod-1234/" + "c" * 64, "version": version,
                       "usage_bytes": usage if usage is not None else rss + 100 * MiB,
                       "limit_bytes": limit, "high_bytes": None, "oom_kill": 0,
                       "pressure": {"some_avg10": 1.5, "full_avg10": 0.25}}}


def write_dir(d: Path, docs: List[Dict[str, Any]], seqs: List[int], times: List[float],
              reasons: List[str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for doc, seq, t, reason in zip(docs, seqs, times, reasons):
        doc = dict(doc)
        doc["watch"] = {"seq": seq, "time": t, "reason": reason,
                        "sample": sample(t, doc["retention"]["in_use_bytes"] * 3),
                        "frozen_seconds": 0.25, "core": None}
        (d / ("snap-%06d.json" % seq)).write_text(json.dumps(doc))


def jvm_dir(tmp_path: Path) -> Path:
    d = tmp_path / "w"
    docs = []
    for i in range(5):
        docs.append(report(
            (1 + i) * GiB, {8224: 500 + 2000 * i, 3040: 500 + 2000 * i, 48: 10},
            nmt={"Java Heap": 2 * GiB, "Class": 100 * MiB, "Thread": 30 * MiB + i * MiB,
                 "Other": 20 * MiB + i * 20 * MiB, "Arena Chunk": MiB,
                 "Shared class space": 12 * MiB},
            classes=[{"name": "NMT Other", "kind": "nmt", "count": 1000 + 4000 * i,
                      "bytes": (1000 + 4000 * i) * 5000},
                     {"name": "zlib inflate stream + window", "kind": "zlib", "count": 2000,
                      "bytes": 80 * MiB}]))
    # three days, the ring dropped seq 3 and 4
    times = [T0, T0 + 3600, T0 + 86400, T0 + 2 * 86400, T0 + 3 * 86400 + 61]
    write_dir(d, docs, [1, 2, 5, 6, 9], times,
              ["first", "periodic", "threshold 70%", "threshold 85%", "predicted"])
    with open(d / "samples.jsonl", "w") as f:
        for k in range(5000):
            t = T0 + k * 52.0
            f.write(json.dumps(sample(t, GiB + k * MiB, limit=8 * GiB)) + "\n")
        f.write('{"time": 1796')  # cut short
    (d / "watch.json").write_text(json.dumps({"target": {"pid": 42}, "death": {
        "pid": 42, "time": T0 + 3 * 86400 + 70, "signal": 9, "signal_name": "SIGKILL",
        "oom_killed": True, "oom_kill_before": 3, "oom_kill_after": 4,
        "kernel_log": "Memory cgroup out of memory: Killed process 42 (java) " + "x" * 100,
        "last_usage_bytes": 8 * GiB - MiB, "limit_bytes": 8 * GiB}}))
    return d


def test_text_fits_80_columns_and_names_nmt(tmp_path: Path, run) -> None:
    d = jvm_dir(tmp_path)
    status, out, err = run("trend", str(d))
    assert status == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "UTC" in out and "+3d00h" in out
    assert "NMT committed" in out
    # The NMT columns: the categories that grew most, Other first.
    header = next(line for line in lines if line.startswith("seq") and "NMT total" in line)
    assert header.split()[5] == "Other", header
    assert "8224" in out and "+8000" in out
    assert "note: samples.jsonl: skipped 1 line" in out
    assert "target died: killed by SIGKILL (the OOM killer: oom_kill 3 -> 4)\n" \
        "  at 2026-12-06 12:14:30 UTC (+3d00h after the first snapshot)\n" in out
    assert "  last usage 8.0 GiB of the 8.0 GiB limit (100.0 %)" in out
    assert "  kernel: Memory cgroup out of memory: Killed process 42 (java) xxx" in out


def test_json_document(tmp_path: Path, run) -> None:
    d = jvm_dir(tmp_path)
    status, out, _ = run("trend", str(d), "--json")
    assert status == 0
    doc = json.loads(out)
    assert doc["command"] == "trend" and doc["schema"] == "heapwalk/1"
    assert [p["seq"] for p in doc["snapshots"]] == [1, 2, 5, 6, 9]
    assert doc["seq_gaps"] == 2
    assert doc["nmt_categories"][0] == "Other"
    top = doc["growth"]["sizes"][0]
    assert top["size"] == 8224 and top["count"] == 8000
    assert top["counts"] == [500, 2500, 4500, 6500, 8500]
    hours = (3 * 86400 + 61) / 3600
    assert top["bytes_per_hour"] == round(8000 * 8224 / hours, 1)
    assert [c["name"] for c in doc["growth"]["classes"]] == ["NMT Other"]
    assert doc["snapshots"][0]["cgroup"]["version"] == 2
    assert doc["snapshots"][0]["cgroup_usage_percent"] == round(
        100.0 * (3 * GiB + 100 * MiB) / (8 * GiB), 2)
    assert doc["samples_summary"]["count"] == 5000 == len(doc["samples"])
    assert doc["death"]["signal"] == 9
    # Deterministic: the same input gives the same bytes.
    assert run("trend", str(d), "--json")[1] == out


def test_jsonl_one_schema(tmp_path: Path, run) -> None:
    d = tmp_path / "w"
    a = report(GiB, {64: 1}, nmt={"Java Heap": GiB})
    b = report(2 * GiB, {64: 5}, nmt={"Java Heap": GiB, "Arena Chunk": 3 * MiB})
    write_dir(d, [a, b], [1, 2], [T0, T0 + 10], ["first", "periodic"])
    status, out, err = run("trend", str(d), "--jsonl")
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and set(rows[0]) == set(rows[1])
    assert rows[0]["nmt_arena_chunk_committed_bytes"] is None
    assert rows[1]["nmt_arena_chunk_committed_bytes"] == 3 * MiB
    assert rows[1]["nmt_java_heap_committed_bytes"] == GiB
    assert rows[1]["untracked_bytes"] == 77 * MiB
    assert rows[1]["cgroup_pressure_some_avg10"] == 1.5
    assert rows[0]["arenas"][1]["index"] == 1 and rows[0]["glibc_arenas"] == 2
    for key in ("time", "seq", "rss_bytes", "cgroup_usage_bytes", "cgroup_limit_bytes",
                "glibc_in_use_bytes", "glibc_free_bytes", "glibc_trimmable_bytes"):
        assert key in rows[0]
    assert err == ""


def test_html_escapes_and_draws_one_polyline_per_series(tmp_path: Path, run) -> None:
    d = jvm_dir(tmp_path)
    evil = '<script>alert("x")</script>'
    p = d / "snap-000009.json"
    doc = json.loads(p.read_text())
    doc["content_classes"].append({"name": evil, "kind": "class", "count": 10 ** 6,
                                   "bytes": 10 ** 9})
    doc["watch"]["reason"] = evil
    p.write_text(json.dumps(doc))
    page = tmp_path / "t.html"
    status, _, err = run("trend", str(d), "--html", str(page))
    assert status == 0, err
    text = page.read_text()
    assert evil not in text and "&lt;script&gt;" in text
    assert text.count("<script>") == 1  # the page's own
    memory = text.split('id="chart-memory"', 1)[1].split("</svg>", 1)[0]
    series = re.findall(r'<polyline class="series[^"]*" data-series="([^"]+)"', memory)
    assert series == ["rss", "cgroup_usage", "cgroup_limit", "glibc_in_use", "glibc_free",
                      "nmt_committed", "untracked"]
    # 5000 samples are thinned to about two points per pixel column.
    rss = re.search(r'data-series="rss" stroke="[^"]*" points="([^"]*)"', memory).group(1)
    assert 100 < len(rss.split()) <= trend_html.MAX_POINTS + 10
    nmt = text.split('id="chart-nmt"', 1)[1].split("</svg>", 1)[0]
    assert len(re.findall(r"<polyline ", nmt)) == 6
    grown = text.split('id="chart-growth"', 1)[1].split("</svg>", 1)[0]
    assert re.findall(r'data-series="([^"]+)"', grown) == ["size:8224", "size:3040"]
    assert "8,500" in grown or "8,000" in grown  # counts on the y axis
    assert not re.search(r"(https?:)?//(?!www\.w3\.org/2000/svg)[a-z]", text)  # no fetch


def test_thin_keeps_the_peak() -> None:
    pts = [(float(i), 100) for i in range(10000)]
    pts[7777] = (7777.0, 10 ** 9)
    out = trend_html._thin(pts)  # pylint: disable=protected-access
    assert len(out) <= trend_html.MAX_POINTS and (7777.0, 10 ** 9) in out
    assert out == sorted(out)


def test_files_without_watch_records(tmp_path: Path, run) -> None:
    files = []
    for i, n in enumerate((100, 300, 700)):
        f = tmp_path / ("r%d.json" % i)
        f.write_text(json.dumps(report(n * MiB, {1008: n})))
        os.utime(f, (T0 + i * 60, T0 + i * 60))
        files.append(str(f))
    status, out, err = run("trend", *files, "--json")
    assert status == 0, err
    doc = json.loads(out)
    assert [p["seq"] for p in doc["snapshots"]] == [1, 2, 3]
    assert [p["elapsed_seconds"] for p in doc["snapshots"]] == [0, 60, 120]
    assert doc["snapshots"][0]["rss_source"] == "smaps"
    assert doc["growth"]["sizes"][0]["count"] == 600
    assert any("modification time" in n["detail"] for n in doc["diagnostics"])


def test_one_snapshot_and_bad_ones(tmp_path: Path, run) -> None:
    d = tmp_path / "w"
    write_dir(d, [report(GiB, {64: 1})], [7], [T0], ["first"])
    (d / "snap-000008.json").write_text('{"schema": "heapwalk/2", "command": "report"}')
    (d / "snap-000009.json").write_text("[1, 2")
    status, out, err = run("trend", str(d))
    assert status == 0, err
    assert "1 snapshot, seq 7-7" in out
    assert "note: snap-000008.json: skipped: not a heapwalk/1 document" in out
    assert "note: snap-000009.json: skipped: not JSON" in out
    assert "note: one snapshot" in out


def test_errors(tmp_path: Path, run) -> None:
    status, out, err = run("trend", str(tmp_path))
    assert status == 1 and out == ""
    assert err.splitlines()[0] == "heapwalk: %s: no snapshots (snap-NNNNNN.json) in this " \
                                  "directory" % tmp_path
    status, _, err = run("trend", "--pid", "1")
    assert status == 2
    status, _, err = run("trend", str(tmp_path), str(tmp_path))
    assert status == 1 and "is a directory" in err


def test_gdb_parser_takes_dir() -> None:
    parser = commands.build_parser(commands.COMMANDS["trend"], "heapwalk trend")
    args = parser.parse_args(["/tmp/x", "--jsonl", "--top", "3"])
    assert args.dir == "/tmp/x" and args.jsonl and args.top == 3


def test_short_size_and_duration() -> None:
    assert cmd_trend.short_size(1023) == "1023B"
    assert cmd_trend.short_size(1024) == "1.00K"
    assert cmd_trend.short_size(int(1023.9 * MiB)) == "1.00G"
    assert cmd_trend.short_size(999 * MiB) == "999M"
    assert cmd_trend.short_size(5 * GiB + GiB // 4) == "5.25G"
    assert cmd_trend.short_size(-3 * MiB) == "-3.00M"
    assert all(len(cmd_trend.short_size(n)) <= 5 for n in (999, 10 ** 5, 10 ** 8, 10 ** 11))
    assert cmd_trend.duration(59) == "59s" and cmd_trend.duration(3599) == "59m59s"
    assert cmd_trend.duration(3 * 3600 + 240) == "3h04m"
    assert cmd_trend.duration(2 * 86400 + 3 * 3600) == "2d03h"
    assert cmd_trend.snake("Shared class space") == "shared_class_space"


def test_bad_types_never_raise(tmp_path: Path, run) -> None:
    d = tmp_path / "w"
    good = report(GiB, {64: 1, 128: 2}, nmt={"Other": MiB})
    write_dir(d, [good, report(2 * GiB, {64: 3})], [1, 2], [T0, T0 + 60],
              ["first", "periodic"])
    p = d / "snap-000002.json"
    bad = json.loads(p.read_text())
    bad["nmt"] = report(0, {}, nmt={"Other": 2 * MiB})["nmt"]
    bad["retention"]["in_use_bytes"] = "lots"
    bad["retention"]["arenas"] = "none"
    bad["size_classes"] = [1, {"size": "x", "count": 2}, {"size": [1], "count": 1},
                           {"size": 64, "count": None, "bytes": 7.5}, {"size": 128}]
    bad["content_classes"] = [{"name": None}, {"name": {"a": 1}, "bytes": 5}, "x"]
    bad["nmt"]["categories"] = [{"name": None, "committed": 5}, 7, {"name": "Other",
                                                                     "committed": "big"}]
    bad["nmt"]["untracked_malloc"] = [1]
    bad["target"]["pid"] = [42]
    bad["verdict"] = [None, {"cause": "x"}]
    bad["glibc"] = "2.36"
    bad["mappings"] = None
    bad["watch"] = {"seq": "2", "time": "later", "sample": [1], "reason": 5, "core": 3,
                    "frozen_seconds": "slow"}
    p.write_text(json.dumps(bad))
    (d / "samples.jsonl").write_text('{"time": "x"}\n[]\n{"time": 1.0, "cgroup": "v2"}\n'
                                     '{"time": 2.0, "rss_bytes": "big", "cgroup": {"usage_bytes": '
                                     '[1], "limit_bytes": 0}}\n\xff\xfe\n')
    (d / "watch.json").write_text('{"death": "yes"')
    for extra in ((), ("--json",), ("--jsonl",), ("--html", str(tmp_path / "x.html"))):
        status, out, err = run("trend", str(d), *extra)
        assert status == 0, (extra, err)
        assert "Traceback" not in out + err
    status, out, _ = run("trend", str(d), "--json")
    doc = json.loads(out)
    assert [p["seq"] for p in doc["snapshots"]] == [1, 2]
    notes = " ".join(n["detail"] for n in doc["diagnostics"])
    assert "watch.json: skipped" in notes and "samples.jsonl: skipped 3 lines" in notes


def test_long_series_shows_reason_changes_and_spread() -> None:
    reasons = ["first"] + ["periodic"] * 98 + ["threshold 85%"] + ["periodic"] * 100
    got = cmd_trend.shown(reasons, 10)
    assert len(got) == 10 and got[0] == 0 and got[-1] == 199
    assert {99, 100} <= set(got)
    assert cmd_trend.shown(reasons, 0) == list(range(200))
    assert cmd_trend.shown(reasons[:5], 10) == list(range(5))


def test_rows_option(tmp_path: Path, run) -> None:
    d = tmp_path / "w"
    n = 60
    write_dir(d, [report((i + 1) * MiB, {64: i}) for i in range(n)], list(range(1, n + 1)),
              [T0 + 60 * i for i in range(n)], ["first"] + ["periodic"] * (n - 1))
    status, out, _ = run("trend", str(d))
    assert status == 0
    rows = [line for line in out.splitlines() if re.match(r"^\s*\d+\s+\d\d:\d\d", line)]
    assert len(rows) == cmd_trend.DEFAULT_ROWS
    assert "(40 of 60 snapshots" in out
    status, out, _ = run("trend", str(d), "--rows", "0")
    rows = [line for line in out.splitlines() if re.match(r"^\s*\d+\s+\d\d:\d\d", line)]
    assert len(rows) == n


def test_wide_series_still_fits(tmp_path: Path, run) -> None:
    d = tmp_path / "w"
    n = 3
    docs = [report((i + 1) * GiB, {64: i}, nmt={"Java Heap": GiB, "Metaspace X": i * MiB,
                                                 "Serviceability": i, "Internal Long": i * 9,
                                                 "Tracing Stuff": i * 7})
            for i in range(n)]
    write_dir(d, docs, [999997, 999998, 999999], [T0, T0 + 5 * 86400, T0 + 12 * 86400],
              ["first", "threshold 95%", "predicted"])
    status, out, _ = run("trend", str(d))
    assert status == 0
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "+12d00h" in out and "999999" in out


def test_usage_names_dir(run) -> None:
    status, out, err = run("trend")
    assert status == 2 and "give a snapshot directory: heapwalk trend DIR" in err
    status, out, _ = run("trend", "--help")
    assert status == 0 and "[DIR] [FILE ...]" in out
    status, out, err = run("arenas")
    assert status == 2 and "give a CORE file or --pid PID" in err


def test_many_samples_are_thinned_keeping_peaks(tmp_path: Path, run) -> None:
    d = tmp_path / "w"
    write_dir(d, [report(GiB, {64: 1}), report(GiB, {64: 2})], [1, 2], [T0, T0 + 86400],
              ["first", "periodic"])
    n = 40000
    with open(d / "samples.jsonl", "w") as f:
        for k in range(n):
            rss = GiB + (k % 100) * MiB + (3 * GiB if k == 23456 else 0)
            f.write(json.dumps(sample(T0 + k * 2.0, rss, usage=rss)) + "\n")
    status, out, err = run("trend", str(d), "--json")
    assert status == 0, err
    doc = json.loads(out)
    ss = doc["samples_summary"]
    assert ss["count"] == n and ss["in_document"] == len(doc["samples"])
    assert len(doc["samples"]) <= cmd_trend.MAX_DOC_SAMPLES
    assert ss["rss_max_bytes"] == 4 * GiB + 56 * MiB
    assert max(s["rss_bytes"] for s in doc["samples"]) == ss["rss_max_bytes"]
    times = [s["time"] for s in doc["samples"]]
    assert times == sorted(times) and times[0] == T0
