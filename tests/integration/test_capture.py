"""Live capture (issue 11): a --pid command stops the process only while its memory is copied,
then analyses the copy; `snapshot --pid PID -o FILE` keeps the copy as a compact core.

Oracles: the program's own malloc_info/mallinfo2 (hwkit.assert_matches_oracle), a gcore of the
same process taken right after (every number of `report --json` but the live-only resident
figures), gdb itself (it must open the snapshot: threads, backtrace, shared libraries).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hwkit import assert_matches_oracle, describe, gcore, no_traceback, run_cli, run_gdb


def test_live_json_says_how_long_the_process_was_stopped(corpora, tmp_path):
    c = corpora.live("arenas", "4", "0")
    # TMPDIR of our own: the temporary copy must not outlive the command.
    for store in ("file", "auto", "memory"):
        r = run_cli("arenas", "--pid", str(c.pid), "--json", "--copy-to", store,
                    extra_env={"TMPDIR": str(tmp_path)})
        no_traceback(r)
        assert r.returncode == 0, describe(r)
        doc = json.loads(r.stdout)
        assert_matches_oracle(doc, c)
        target = doc["target"]
        assert target["kind"] == "live" and target["pid"] == c.pid
        assert 0 < target["frozen_seconds"] < 10
        cap = target["capture"]
        assert target["copied_bytes"] == cap["copied_bytes"] > 0
        assert cap["unreadable_bytes"] == 0
        # a few MiB copied: auto keeps it in memory
        assert cap["store"] == ("file" if store == "file" else "memory"), cap
        assert cap["tmpdir"] == (str(tmp_path) if store == "file" else None)
        assert list(tmp_path.iterdir()) == [], "the temporary copy is gone after the command"
    text = run_cli("arenas", "--pid", str(c.pid))
    assert text.returncode == 0, describe(text)
    assert "live: stopped " in text.stdout and "analysed the copy" in text.stdout
    assert c.proc.poll() is None, "the process runs on"


def test_max_copy_refuses_politely(corpora):
    c = corpora.live("arenas", "4", "0")
    r = run_cli("arenas", "--pid", str(c.pid), "--max-copy", "64k")
    no_traceback(r)
    assert r.returncode == 1, describe(r)
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"heapwalk: pid {c.pid}: the copy would take ") and "--max-copy" in first
    assert r.stdout == ""
    bad = run_cli("arenas", "--pid", str(c.pid), "--max-copy", "lots")
    assert bad.returncode == 2 and "not a size" in bad.stderr
    assert c.proc.poll() is None


#: Figures only a live target has: page residency (what malloc_trim would return *now* counts
#: resident pages only), the arena limit from the process's CPU affinity, the capture itself.
LIVE_ONLY = {"target", "residency", "residency_source", "residency_detail", "resident_bytes",
             "resident_source", "released_bytes", "trimmable_bytes", "cores", "cores_source",
             "limit", "limit_source", "evidence", "diagnostics",
             # the verdict's measure: resident bytes live, committed bytes in a core (issue 12)
             "footprint", "share", "summary", "action"}
#: Mapping groups a gcore cannot tell apart: it records stack guard pages as readable zeros and
#: leaves [vvar]/[vvar_vclock] out, so on the core they are "other anonymous" (or absent).
BLURRED = ("thread stacks", "other anonymous", "kernel (vdso, vvar, vsyscall)")


def _strip_live_only(doc: Any) -> Any:
    """`report --json` without what only a live target has."""
    if isinstance(doc, dict):
        return {k: _strip_live_only(v) for k, v in doc.items() if k not in LIVE_ONLY}
    if isinstance(doc, list):
        return [_strip_live_only(x) for x in doc]
    return doc


def _split_groups(doc: dict) -> int:
    """Removes the BLURRED groups from doc's mappings; returns their mapped bytes."""
    groups = doc["mappings"]["groups"]
    blurred = sum(g["mapped_bytes"] for g in groups if g["label"] in BLURRED)
    doc["mappings"]["groups"] = [g for g in groups if g["label"] not in BLURRED]
    return blurred


def _vvar_bytes(pid: int) -> int:
    n = 0
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith("[vvar]") or line.endswith("[vvar_vclock]"):
            lo, hi = line.split()[0].split("-")
            n += int(hi, 16) - int(lo, 16)
    return n


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _differences(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path}: live {a!r} != core {b!r}"]


def test_live_report_equals_report_of_a_gcore_taken_right_after(corpora, tmp_path):
    c = corpora.live("arenas", "4", "0")
    live = run_cli("report", "--pid", str(c.pid), "--json")
    assert live.returncode in (0, 1), describe(live)
    core = gcore(c.pid, tmp_path / "core")
    off = run_cli("report", str(core), "--json")
    assert off.returncode in (0, 1), describe(off)
    a, b = json.loads(live.stdout), json.loads(off.stdout)
    vvar = _vvar_bytes(c.pid)
    la, lb = _strip_live_only(a), _strip_live_only(b)
    assert _split_groups(la) - vvar == _split_groups(lb)
    assert la["mappings"]["mapped_bytes"] - vvar == lb["mappings"]["mapped_bytes"]
    la["mappings"]["mapped_bytes"] = lb["mappings"]["mapped_bytes"]
    assert [v["cause"] for v in a["verdict"]] == [v["cause"] for v in b["verdict"]]
    diffs = _differences(la, lb)
    assert not diffs, "\n".join(d[:300] for d in diffs[:60])
    assert a["target"]["frozen_seconds"] > 0


def test_snapshot_is_a_core_gdb_opens_and_heapwalk_reads_exactly(corpora, tmp_path):
    c = corpora.live("arenas", "4", "0")
    snap = tmp_path / "snap.core"
    r = run_cli("snapshot", "--pid", str(c.pid), "-o", str(snap), "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    s = doc["snapshot"]
    st = os.stat(snap)
    assert s["apparent_bytes"] == st.st_size
    assert abs(s["allocated_bytes"] - st.st_blocks * 512) <= 64 << 10  # the filesystem's own
    # Untouched pages are holes: the file holds what was copied and its headers, no more (a
    # thread's stack is whole in it only where the process had every page resident: gcore,
    # earlier in this module, makes them resident on kernels without the shared zero page).
    assert s["allocated_bytes"] <= doc["target"]["copied_bytes"] + (1 << 20)
    assert s["threads"] == 4
    assert s["gcore_bytes"] >= s["apparent_bytes"] // 2
    assert not list(tmp_path.glob("*.heapwalk-tmp*")), "no temporary name is left"
    again = run_cli("snapshot", "--pid", str(c.pid), "-o", str(snap))
    assert again.returncode == 1 and "exists" in again.stderr and "--force" in again.stderr
    # heapwalk on the snapshot: exactly the program's own figures.
    a = run_cli("arenas", str(snap), "--json")
    assert a.returncode == 0, describe(a)
    assert_matches_oracle(json.loads(a.stdout), c)
    # gdb on the snapshot: every thread, a backtrace, the shared libraries.
    g = run_gdb(str(c.binary), str(snap), commands=["info threads", "bt", "info sharedlibrary"])
    assert "libc.so.6" in g.stdout, describe(g)
    assert g.stdout.count("Thread 0x") >= 4 or g.stdout.count("LWP") >= 4, describe(g)
    assert "pthread_cond_wait" in g.stdout or "pause" in g.stdout or "main" in g.stdout, describe(g)
    assert c.proc.poll() is None


def test_snapshot_needs_a_live_process(corpora, tmp_path):
    c = corpora.core("arenas", "1", "0")
    r = run_cli("snapshot", str(c.core), "-o", str(tmp_path / "x"))
    no_traceback(r)
    assert r.returncode == 2 and "live process" in r.stderr
    gone = run_cli("snapshot", "--pid", "999999999", "-o", str(tmp_path / "y"))
    assert gone.returncode == 1 and "no such process" in gone.stderr
    assert not (tmp_path / "y").exists()
