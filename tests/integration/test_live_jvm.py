"""Every command with `--pid` on a live JDK 17 JVM, from the CLI and from gdb attached (issue 11).

On a live process the engine reads through memory::Reader's block cache, not a core's mapping:
`classify --pid` once kept a span across a second read of that cache and indexed the NMT name
table with whatever the refill left there (SIGSEGV, "out of memory", gdb's "virtual memory
exhausted" abort: gdb's own operator new serves the extension).  Here each command must end with
exit 0 or 1 and no crash, and classify's NMT categories and zlib groups must be those a gcore of
the same JVM, taken right after, gives (the JVM is quiescent once ready: nmtkit).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hwkit import describe, extract_json, gcore, no_traceback, run_cli, run_gdb, stop
from nmtkit import LOAD, have_jdk, spawn_jvm

pytestmark = pytest.mark.skipif(not have_jdk(), reason="needs openjdk-17-jdk-headless")

# What a crashed engine leaves in the output (besides a traceback or a signal exit status).
CRASH_MARKS = ("internal-error", "Fatal signal", "Segmentation fault", "out of memory",
               "virtual memory exhausted", "AddressSanitizer", "runtime error:")


@pytest.fixture(scope="module", params=["summary", "detail"])
def jvm(request, tmp_path_factory):
    """A live NmtLoad JVM (NMT summary or detail) and a directory for its files."""
    d = tmp_path_factory.mktemp(f"live-{request.param}")
    proc = spawn_jvm(request.param, d, LOAD)
    try:
        yield proc, d
    finally:
        stop(proc)


def no_crash(r: subprocess.CompletedProcess, what: str) -> None:
    no_traceback(r)
    assert r.returncode in (0, 1), f"{what}: {describe(r)}"
    for mark in CRASH_MARKS:
        assert mark not in r.stdout and mark not in r.stderr, f"{what}: {mark!r}\n{describe(r)}"


def stable_classes(doc: dict) -> dict[str, int]:
    """classify's NMT categories and zlib groups: name -> count (fixed while the JVM is still)."""
    return {c["name"]: c["count"] for c in doc["classes"] if c["kind"] in ("nmt", "zlib")}


def test_cli_commands_on_live_jvm(jvm, tmp_path):
    proc, _ = jvm
    for args in (["classify"], ["nmt"], ["report"], ["report", "--html", str(tmp_path / "r.html")]):
        r = run_cli(*args, "--pid", proc.pid, timeout=120)
        no_crash(r, " ".join(args))
    assert (tmp_path / "r.html").stat().st_size > 0


def test_gdb_commands_on_live_jvm(jvm, tmp_path):
    proc, _ = jvm
    html = tmp_path / "g.html"
    # One attach for all of them; a crash of any ends gdb with a signal or an internal error.
    g = run_gdb("-p", str(proc.pid),
                commands=["heapwalk classify", "heapwalk nmt", "heapwalk report", f"heapwalk report --html {html}",
                          "echo heapwalk-done\\n"],
                timeout=300)
    no_crash(g, "gdb")
    assert "heapwalk-done" in g.stdout, describe(g)
    assert html.stat().st_size > 0


def test_classify_live_equals_gcore(jvm):
    proc, d = jvm
    r = run_cli("classify", "--pid", proc.pid, "--json", timeout=120)
    no_crash(r, "classify --json")
    live = stable_classes(json.loads(r.stdout))
    g = run_gdb("-p", str(proc.pid), commands=["heapwalk classify --json"], timeout=300)
    no_crash(g, "gdb classify --json")
    attached = stable_classes(extract_json(g.stdout))
    core = gcore(proc.pid, Path(d) / "core")
    try:
        c = run_cli("classify", "--json", core, timeout=120)
        no_crash(c, "classify CORE")
        snapshot = stable_classes(json.loads(c.stdout))
    finally:
        core.unlink(missing_ok=True)
    assert any(name.startswith("NMT ") for name in snapshot), snapshot
    assert any(name.startswith("zlib ") for name in snapshot), snapshot
    assert live == snapshot
    assert attached == snapshot


def _no_vvar(doc: dict) -> dict:
    """nmt/classify documents without what a gcore and a snapshot record differently: gcore
    leaves [vvar] out (its 16-24 KiB show in the reconciliation's anonymous and total lines)."""
    out = {k: v for k, v in doc.items() if k not in ("target", "diagnostics")}
    if "nmt" in out:
        out["nmt"] = {k: v for k, v in out["nmt"].items() if k != "reconciliation"}
    return out


def test_snapshot_of_live_jvm_is_small_gdb_opens_it_and_commands_agree_with_gcore(jvm, tmp_path):
    """`snapshot`: at most a quarter of gcore's core (apparent and on disk), gdb opens it, and
    heapwalk's nmt/classify/arenas on it equal those on a gcore taken right after."""
    proc, _ = jvm
    snap = tmp_path / "jvm.snap"
    r = run_cli("snapshot", "--pid", proc.pid, "-o", snap, "--json", timeout=120)
    no_crash(r, "snapshot")
    assert r.returncode == 0, describe(r)
    s = json.loads(r.stdout)["snapshot"]
    assert json.loads(r.stdout)["target"]["capture"]["excluded_bytes"] > 0, "the Java heap is left out"
    core = gcore(proc.pid, tmp_path / "core")  # made sparse by hwkit
    st = core.stat()
    assert s["apparent_bytes"] * 4 <= st.st_size, (s, st.st_size)
    assert s["allocated_bytes"] * 4 <= st.st_blocks * 512, (s, st.st_blocks * 512)
    assert s["gcore_bytes"] >= st.st_size // 2
    java = Path(f"/proc/{proc.pid}/exe").resolve()
    g = run_gdb(str(java), str(snap), commands=["info threads", "info sharedlibrary"], timeout=120)
    assert "libjvm.so" in g.stdout and g.stdout.count("LWP") >= 10, describe(g)
    # The JVM is quiescent but not frozen between the two snapshots (monitor deflation can
    # free an ObjectMonitor): a difference is retried once with a fresh pair.
    for attempt in range(2):
        if attempt:
            snap.unlink()
            r = run_cli("snapshot", "--pid", proc.pid, "-o", snap, timeout=120)
            assert r.returncode == 0, describe(r)
            core = gcore(proc.pid, tmp_path / "core2")
        diffs = []
        for cmd in (["nmt"], ["classify"], ["arenas"]):
            a = run_cli(*cmd, snap, "--json", timeout=120)
            b = run_cli(*cmd, core, "--json", timeout=120)
            no_crash(a, f"{cmd[0]} on the snapshot")
            assert a.returncode == b.returncode, describe(a)
            if _no_vvar(json.loads(a.stdout)) != _no_vvar(json.loads(b.stdout)):
                diffs.append(cmd[0])
        if not diffs:
            break
    assert not diffs, f"snapshot and gcore disagree on {diffs}"
