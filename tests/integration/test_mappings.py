"""Thread stacks' committed bytes and the mapping groups of a JVM, against jcmd and smaps
(issue 12, points 6 and 7).

One JDK 17 JVM (corpora/java/StackLoad.java: 16 threads, each 2000 interpreted frames deep,
parked; NMT summary) is looked at in this order, because each step changes what the next sees:

1. before any jcmd: `nmt --pid` and `report --pid` (heapwalk's capture copies only resident
   pages, so it leaves the residency as it found it) and /proc/PID/smaps right after;
2. `snapshot --pid`: a core holding only the resident pages;
3. `jcmd VM.native_memory summary`, the oracle: its report probes every thread stack with
   mincore and records the committed parts in the image;
4. gcore (made sparse). gcore reads every page of every mapping, which maps the zero page into
   each untouched stack page: a jcmd after it reports the stacks fully committed (observed:
   28311552 of 28311552 bytes), so it must come last.

NMT's image before step 3 holds only the guard zones HotSpot committed when it created each
thread (16 KiB per Java thread): the "stale" figure of the issue.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import hwkit
from hwkit import CACHE, CORPORA, READY_TIMEOUT, describe, gcore, no_traceback, run_cli, stop
from nmtkit import JAVA, JAVAC, have_jdk, jcmd_nmt, parse_jcmd

pytestmark = pytest.mark.skipif(not have_jdk(), reason="needs openjdk-17-jdk-headless")

SOURCE = CORPORA / "java" / "StackLoad.java"
FLAGS = ["-XX:NativeMemoryTracking=summary", "-Xint", "-XX:+UseSerialGC", "-XX:-UsePerfData",
         "-Xms64m", "-Xmx64m"]
THREADS, DEPTH = 16, 2000
#: Computed against jcmd: jcmd's own Attach Listener thread (started by that jcmd) adds about
#: 130 KiB to jcmd's figure, ~1.5 % of the ~8.5 MiB of stacks here.
TOLERANCE = 0.03


def build_class() -> Path:
    out = CACHE / "java" / ("stackload-" + hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12])
    if (out / "StackLoad.class").exists():
        return out
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    r = subprocess.run([str(JAVAC), "-nowarn", "-d", str(tmp), str(SOURCE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def cli_json(*args: Any) -> dict:
    r = run_cli(*args, "--json", timeout=300)
    no_traceback(r)
    assert r.returncode in (0, 1), describe(r)
    return json.loads(r.stdout)


def smaps(pid: int) -> list[dict]:
    """/proc/PID/smaps: one record per mapping (start, end, path, rss)."""
    out: list[dict] = []
    head = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s*(.*)$")
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = head.match(line)
        if m:
            out.append({"start": int(m.group(1), 16), "end": int(m.group(2), 16), "path": m.group(3),
                        "rss": 0})
        elif line.startswith("Rss:") and out:
            out[-1]["rss"] = int(line.split()[1]) * 1024
    return out


@pytest.fixture(scope="module")
def jvm(tmp_path_factory):
    d = tmp_path_factory.mktemp("stackload")
    cp = build_class()
    fifo = d / "ready.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    proc = subprocess.Popen([str(JAVA), *FLAGS, "-cp", str(cp), "StackLoad", str(d), str(fifo),
                             f"threads={THREADS}", f"depth={DEPTH}", "direct=4"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hwkit.await_ready(proc, rfd, READY_TIMEOUT, "StackLoad")
    try:
        got: dict[str, Any] = {"dir": d, "pid": proc.pid}
        got["nmt_live"] = cli_json("nmt", "--pid", proc.pid)["nmt"]
        got["report_live"] = cli_json("report", "--pid", proc.pid, "--no-classes")
        got["smaps"] = smaps(proc.pid)
        r = run_cli("snapshot", "--pid", proc.pid, "-o", d / "snap.core", timeout=300)
        assert r.returncode == 0, describe(r)
        got["jcmd"] = parse_jcmd(jcmd_nmt(proc.pid))
        got["core"] = gcore(proc.pid, d / "core")
        yield got
    finally:
        stop(proc)


def thread_stacks(nmt: dict) -> dict:
    ts = nmt["thread_stacks"]
    assert ts is not None, "no thread stack figures"
    return ts


def jcmd_stack(jvm) -> tuple[int, int]:
    st = jvm["jcmd"].categories["Thread"].stack
    assert st is not None
    return st


def close(a: int, b: int, tol: float = TOLERANCE) -> bool:
    return abs(a - b) <= tol * max(a, b)


# -- point 6: thread stacks ---------------------------------------------------------------------

def test_stack_committed_live_matches_jcmd(jvm):
    """`nmt --pid` before any jcmd: NMT's record is the guard zones only; the computed figure is
    jcmd's (taken after) within 3 %."""
    ts = thread_stacks(jvm["nmt_live"])
    reserved, committed = jcmd_stack(jvm)
    assert ts["source"] == "pagemap"
    assert ts["committed_nmt"] * 4 < committed, (ts, committed)  # stale: guard zones only
    assert close(ts["committed"], committed), (ts, committed)
    # The stacks reach DEPTH frames: far more than one page per thread resident.
    assert ts["committed"] > THREADS * 256 * 1024
    assert ts["reserved"] <= reserved


def test_stack_committed_on_snapshot_matches_jcmd(jvm):
    """The core heapwalk took before any jcmd: computed from the pages it holds."""
    doc = cli_json("nmt", jvm["dir"] / "snap.core")["nmt"]
    ts = thread_stacks(doc)
    _, committed = jcmd_stack(jvm)
    assert ts["source"] == "core"
    assert ts["committed_nmt"] * 4 < committed
    assert close(ts["committed"], committed), (ts, committed)
    thread = next(c for c in doc["categories"] if c["name"] == "Thread")
    assert thread["stack"]["committed"] == ts["committed_nmt"]  # jcmd's arithmetic on the image
    assert thread["stack"]["committed_now"] == ts["committed"]
    assert thread["committed_now"] - thread["committed"] == ts["committed"] - ts["committed_nmt"]


def test_stack_committed_on_gcore_after_jcmd(jvm):
    """gcore after jcmd: the image holds jcmd's record; the computed figure agrees with it."""
    doc = cli_json("nmt", jvm["core"])["nmt"]
    ts = thread_stacks(doc)
    _, committed = jcmd_stack(jvm)
    assert ts["committed_nmt"] == committed
    assert close(ts["committed"], committed), (ts, committed)


def test_nmt_text_says_which_figure_is_stale(jvm):
    r = run_cli("nmt", jvm["dir"] / "snap.core")
    no_traceback(r)
    assert "NMT's record" in r.stdout and "committed now" in r.stdout, r.stdout


def test_diff_reports_no_thread_growth(jvm):
    """Between the snapshot (NMT's record: guard zones) and the gcore after jcmd (NMT's record:
    every stack probed), NMT's Thread committed grows by megabytes; the stacks did not (one
    thread more: jcmd's Attach Listener)."""
    a = cli_json("diff", jvm["dir"] / "snap.core", jvm["core"], "--no-classes")
    thread = next(r for r in a["nmt"] if r["name"] == "Thread")
    _, committed = jcmd_stack(jvm)
    assert abs(thread["delta"]["committed"]) < 0.03 * committed, thread
    nmt_a = thread_stacks(cli_json("nmt", jvm["dir"] / "snap.core")["nmt"])["committed_nmt"]
    assert committed - nmt_a > 4 << 20  # what the diff would have shown from NMT's record


# -- point 7: the mapping groups -----------------------------------------------------------------

def groups_by_label(doc: dict) -> dict[str, dict]:
    return {g["label"]: g for g in doc["mappings"]["groups"]}


@pytest.mark.parametrize("which", ["live", "snapshot", "gcore"])
def test_jvm_reservations_labelled_with_jcmd_sizes(jvm, which):
    doc = {"live": lambda: jvm["report_live"],
           "snapshot": lambda: cli_json("report", jvm["dir"] / "snap.core", "--no-classes"),
           "gcore": lambda: cli_json("report", jvm["core"], "--no-classes")}[which]()
    g = groups_by_label(doc)
    cats = jvm["jcmd"].categories
    assert g["Java heap"]["mapped_bytes"] == cats["Java Heap"].mmap[0] == 64 << 20
    assert g["class space (compressed class space)"]["mapped_bytes"] == cats["Class"].mmap[0]
    assert g["metaspace"]["mapped_bytes"] == cats["Metaspace"].mmap[0]
    assert g["code cache (CodeHeap)"]["mapped_bytes"] == cats["Code"].mmap[0]
    assert g["CDS archive (shared class space)"]["mapped_bytes"] == cats["Shared class space"].mmap[0]
    # Every NMT thread stack region (jcmd's reserved, less jcmd's own new thread) is a stack.
    assert g["thread stacks"]["mapped_bytes"] >= cats["Thread"].stack[0] - (2 << 20)
    assert sum(x["mapped_bytes"] for x in doc["mappings"]["groups"]) == doc["mappings"]["mapped_bytes"]


def test_live_resident_equals_smaps(jvm):
    """Live: the groups' resident bytes add up to smaps' Rss (taken right after, JVM parked)."""
    doc = jvm["report_live"]
    rss = sum(m["rss"] for m in jvm["smaps"])
    groups = doc["mappings"]["groups"]
    total = sum(g["resident_bytes"] for g in groups)
    assert total == doc["mappings"]["resident_bytes"]
    assert close(total, rss, 0.02), (total, rss)
    stacks = groups_by_label(doc)["thread stacks"]["resident_bytes"]
    assert stacks >= thread_stacks(jvm["nmt_live"])["committed"] - (1 << 20)


def test_snapshot_resident_is_what_it_holds(jvm):
    """A core's resident column is what it holds: the saved pages that are not all zero. For
    heapwalk's snapshot (only resident pages copied) the thread stacks agree with smaps; memory
    that is resident but still zero (direct buffers: zeroed on allocation) does not count."""
    core = cli_json("report", jvm["dir"] / "snap.core", "--no-classes")
    live = groups_by_label(jvm["report_live"])
    g = groups_by_label(core)
    assert core["mappings"]["resident_bytes"] is not None
    assert close(g["thread stacks"]["resident_bytes"], live["thread stacks"]["resident_bytes"], 0.05), (
        g["thread stacks"], live["thread stacks"])
    for label, x in g.items():
        if label in live and live[label]["resident_bytes"] is not None and "mapped files" not in label:
            assert x["resident_bytes"] <= live[label]["resident_bytes"] + (256 << 10), (label, x, live[label])
    assert g["Java heap"]["resident_bytes"] == 0  # left out of the snapshot


def test_text_sorted_by_resident_and_all_flag(jvm):
    snap = jvm["dir"] / "snap.core"
    doc = cli_json("report", snap, "--no-classes")
    n = len(doc["mappings"]["groups"])
    r = run_cli("report", snap, "--no-classes", "--all")
    no_traceback(r)
    rows = table_rows(r.stdout)
    assert len(rows) == n and "more groups" not in r.stdout
    resident = [parse_size(x[-2]) for x in rows]
    assert resident == sorted(resident, reverse=True)
    r = run_cli("report", snap, "--no-classes")
    assert n <= 14 or "more groups (--all lists them)" in r.stdout


def table_rows(text: str) -> list[list[str]]:
    """The group rows of the text table (between its header and the total)."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.strip().startswith("group "))
    out = []
    for line in lines[i + 1:]:
        if line.strip().startswith("total"):
            break
        out.append(re.split(r"\s{2,}", line.strip()))
    return out


def parse_size(s: str) -> float:
    num, unit = s.split()
    return float(num) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]


@pytest.mark.parametrize("which", ["live", "gcore"])
def test_nmt_reconciliation_never_negative(jvm, which):
    doc = jvm["nmt_live"] if which == "live" else cli_json("nmt", jvm["core"])["nmt"]
    rec = {r["what"]: r for r in doc["reconciliation"]}
    assert all(r["bytes"] >= 0 for r in doc["reconciliation"]), doc["reconciliation"]
    lines = [r for r in doc["reconciliation"] if r["what"] != "total mapped"]
    assert sum(r["bytes"] for r in lines) == rec["total mapped"]["bytes"]
    # The CDS archive is a file mapping inside NMT's "Shared class space": counted once.
    assert "CDS archive" in rec["mapped files"].get("note", "")


def test_jvm_reservations_without_nmt(tmp_path):
    """NMT off (the usual production JVM): the Java heap's and the code cache's reservations
    come from vmStructs (Universe::_collectedHeap->_reserved, CodeCache::_heaps), live and in a
    snapshot, whose read-only libjvm names are read from the file."""
    cp = build_class()
    fifo = tmp_path / "ready.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    proc = subprocess.Popen([str(JAVA), "-XX:NativeMemoryTracking=off", "-Xint", "-XX:+UseSerialGC",
                             "-XX:-UsePerfData", "-Xms32m", "-Xmx32m", "-XX:ReservedCodeCacheSize=24m",
                             "-cp", str(cp), "StackLoad", str(tmp_path), str(fifo), "threads=2", "depth=10"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hwkit.await_ready(proc, rfd, READY_TIMEOUT, "StackLoad (NMT off)")
    try:
        live = groups_by_label(cli_json("report", "--pid", proc.pid, "--no-classes"))
        r = run_cli("snapshot", "--pid", proc.pid, "-o", tmp_path / "snap.core", timeout=300)
        assert r.returncode == 0, describe(r)
    finally:
        stop(proc)
    core = groups_by_label(cli_json("report", tmp_path / "snap.core", "--no-classes"))
    for g in (live, core):
        assert g["Java heap"]["mapped_bytes"] == 32 << 20
        assert g["code cache (CodeHeap)"]["mapped_bytes"] == 24 << 20
