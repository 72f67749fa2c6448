"""`heapwalk leaks`: the conservative reachability pass against corpora/leaks.c's ground truth.

The program drops the last pointer to 14 blocks (plain blocks of several sizes, an mmapped
chunk, an mmapped chunk from posix_memalign (not at its mapping's start), a cycle, a list whose tail is referenced only by its head, a block referenced only from
the stale contents of a freed chunk, a block in the second thread's arena) and keeps 10 others
reachable in different ways (a global, main's stack, register r12, inside another block, an
interior pointer to a block's last byte from inside a block, an interior pointer from a global,
TLS, an mmapped chunk and a 64-aligned one from globals, the second thread's stack).  It prints their addresses in
truth.json, wipes every other copy (see the comment at the top of leaks.c) and waits.

The leaked set restricted to the program's blocks must be exactly the truth, with the right
`unreferenced` flags, and no reachable block may be reported.  libc's own chunks (each thread's
tcache_perthread_struct, the second thread's dtv, the stdout buffer, an open FILE and its
buffer) are all reachable on glibc 2.36 — through static TLS, the second thread's TCB, libc's
.data and _IO_list_all — so the libc-internal leaked set is asserted to be empty.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from hwkit import (CACHE, REPO, build, describe, gcore, heapwalk_env, import_heapwalk,
                   no_traceback, source_key, spawn_ready, stop)

HEADER = 16  # chunk header: mem = chunk address + 16


class Leaks:
    """The leaks program: its truth, a core of it, and a live process (started on demand)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.binary = build("leaks")
        self._core = None
        self._live = None

    def core(self):
        if self._core is None:
            d = CACHE / "cores" / f"leaks-{source_key('leaks')}"
            if not (d / "complete").exists():
                if d.exists():
                    shutil.rmtree(d)
                d.mkdir(parents=True)
                proc = spawn_ready([str(self.binary), str(d)])
                try:
                    gcore(proc.pid, d / "core")
                finally:
                    stop(proc)
                (d / "complete").write_text("ok\n")
            self._core = (d / "core", json.loads((d / "truth.json").read_text()))
        return self._core

    def live(self):
        if self._live is None or self._live[0].poll() is not None:
            d = self.tmp / "live-leaks"
            d.mkdir(parents=True, exist_ok=True)
            proc = spawn_ready([str(self.binary), str(d)])
            self._live = (proc, json.loads((d / "truth.json").read_text()))
        return self._live

    def close(self):
        if self._live is not None:
            stop(self._live[0])


@pytest.fixture(scope="module")
def leaks(tmp_path_factory):
    corpus = Leaks(tmp_path_factory.mktemp("leaks"))
    yield corpus
    corpus.close()


def leaks_doc(target, **kw):
    from heapwalk import cmd_leaks  # noqa: PLC0415

    return cmd_leaks.query(target, kw.get("arena"), kw.get("limit"), kw.get("largest", False),
                           kw.get("anon_roots", False))


def check_against_truth(doc, truth):
    """Every mismatch between a `leaks` document and truth.json."""
    bad = []
    listed = {c["address"]: c for c in doc["leaked"]["listed"]}
    if doc["leaked"]["truncated"] or len(listed) != doc["leaked"]["count"]:
        bad.append(f"leaked list truncated: {len(listed)} of {doc['leaked']['count']}")
    if sorted(listed) != sorted(doc["leaked"]["chunks"]):
        bad.append("leaked.chunks and leaked.listed differ")
    want = {b["mem"] - HEADER: b for b in truth["leaked"]}
    kept = {b["mem"] - HEADER: b for b in truth["reachable"]}
    freed = {b["mem"] - HEADER: b for b in truth["freed"]}
    program = set(want) | set(kept) | set(freed)
    got = {a for a in listed if a in program}
    for a in sorted(set(want) - got):
        bad.append(f"not reported as leaked: {want[a]['what']} at {a:#x}")
    for a in sorted(got - set(want)):
        what = (kept.get(a) or freed.get(a))["what"]
        bad.append(f"reported as leaked but reachable/free: {what} at {a:#x}")
    for a in sorted(got & set(want)):
        if listed[a]["unreferenced"] != want[a]["unreferenced"]:
            bad.append(f"{want[a]['what']}: unreferenced {listed[a]['unreferenced']}, "
                       f"expected {want[a]['unreferenced']}")
    libc = sorted(set(listed) - program)
    if libc:
        bad.append("libc-internal chunks reported as leaked (all are reachable on 2.36): " +
                   ", ".join(f"{a:#x} size {listed[a]['size']}" for a in libc))
    unref = [c for c in listed.values() if c["unreferenced"]]
    if doc["unreferenced"]["count"] != len(unref):
        bad.append(f"unreferenced.count {doc['unreferenced']['count']} != {len(unref)} flagged")
    if doc["leaked"]["bytes"] != sum(c["size"] for c in listed.values()):
        bad.append("leaked.bytes is not the sum of the listed sizes")
    if doc["nodes"]["count"] != doc["reachable"]["count"] + doc["leaked"]["count"]:
        bad.append("nodes != reachable + leaked")
    real = [d for d in doc.get("diagnostics", []) if d.get("kind") != "note"]
    if real:
        bad.append(f"diagnostics: {real[:3]}")
    return bad


def test_core_leaked_is_exactly_the_dropped_blocks(leaks):
    core, truth = leaks.core()
    hw = import_heapwalk()
    with hw.open_core(core) as t:
        doc = leaks_doc(t)
        bad = check_against_truth(doc, truth)
        assert not bad, "\n".join(bad)
        # The freed block is a free (tcache) chunk: neither node nor leak, and the leaked block
        # whose only pointer sits in its stale contents stays leaked (checked above).
        gone = truth["freed"][0]["mem"]
        assert t.chunk(gone)["chunk"]["state"] == "tcache"
        # Sizes: mmapped 600 KiB and (aligned) 300 KiB leaks, the rest by chunk size.
        mm = sorted((c for c in doc["leaked"]["listed"] if c["state"] == "mmapped"), key=lambda c: c["size"])
        assert [c["arena"] for c in mm] == [None, None]
        assert 300 * 1024 <= mm[0]["size"] < 600 * 1024 <= mm[1]["size"]
        # The aligned chunk is found at its own header, not at its mapping's stale one.
        want = next(b for b in truth["leaked"] if b["what"] == "mmapped, 4096-aligned")
        assert want["mem"] % 4096 == 0 and mm[0]["address"] == want["mem"] - HEADER
        # `chunk` names its mapping, and an address in the lead below the header is in it too.
        for q in (want["mem"], want["mem"] - 4000):
            rec = t.chunk(q)["chunk"]
            assert rec["address"] == want["mem"] - HEADER and rec["state"] == "mmapped", rec
            m = rec["mapping"]
            assert m["base"] % 4096 == 0 and 0 < rec["address"] - m["base"] < 4096 + HEADER, m
            assert m["size"] % 4096 == 0 and m["base"] + m["size"] >= want["mem"] + want["size"], m
        assert sum(s["count"] for s in doc["leaked"]["sizes"]) == doc["leaked"]["count"]
        assert sum(s["bytes"] for s in doc["unreferenced"]["sizes"]) == doc["unreferenced"]["bytes"]
        kinds = {r["kind"]: r for r in doc["roots"]}
        assert kinds["registers"]["ranges"] == 2 and kinds["stack"]["ranges"] == 2


def test_core_largest_limit_and_arena(leaks):
    core, truth = leaks.core()
    hw = import_heapwalk()
    with hw.open_core(core) as t:
        top = leaks_doc(t, largest=True, limit=3)
        sizes = [c["size"] for c in top["leaked"]["listed"]]
        assert len(sizes) == 3 and sizes == sorted(sizes, reverse=True)
        assert top["leaked"]["truncated"] and top["leaked"]["count"] == len(truth["leaked"])
        assert sizes[0] >= 600 * 1024  # the mmapped chunk
        # The second thread's arena: only its one leaked block.
        one = leaks_doc(t, arena=1)
        assert [c["address"] for c in one["leaked"]["listed"]] == [
            b["mem"] - HEADER for b in truth["leaked"] if b["what"].startswith("thread arena")]


def test_live_leaked_is_exactly_the_dropped_blocks(leaks):
    proc, truth = leaks.live()
    hw = import_heapwalk()
    with hw.attach(proc.pid) as t:
        bad = check_against_truth(leaks_doc(t), truth)
    assert not bad, "\n".join(bad)
    assert proc.poll() is None, "the process survives the pass"


def test_live_without_registers_or_stacks_loses_those_roots(leaks):
    """Negative control: the register and stack roots are what keeps those blocks."""
    proc, truth = leaks.live()
    hw = import_heapwalk()
    with hw.attach(proc.pid) as t:
        threads = t.describe()["threads"]
    bare = [{"lwp": th["lwp"], "fs_base": th["fs_base"]} for th in threads]
    t = hw.native().attach(proc.pid, threads=bare)
    try:
        doc = t.leaks()
    finally:
        t.close()
    listed = {c["address"] for c in doc["leaked"]["listed"]}
    by_what = {b["what"]: b["mem"] - HEADER for b in truth["reachable"]}
    # (The second thread's block stays reachable: without rsp, the TLS window below its
    # fs_base, at the top of its stack mapping, is scanned whole.)
    for what in ("register r12", "main's stack"):
        assert by_what[what] in listed, f"{what} should be leaked without registers/stacks"
    for what in ("global", "inside a block", "TLS", "interior pointer (global)"):
        assert by_what[what] not in listed, what
    notes = " ".join(d["detail"] for d in doc["diagnostics"] if d["kind"] == "note")
    assert "registers unknown" in notes and "stack pointer unknown" in notes


CLI = """
import sys
from heapwalk import cli, commands
if "leaks" not in commands.COMMANDS:  # until the registry lists it
    from heapwalk.cmd_leaks import Leaks
    commands.COMMANDS["leaks"] = Leaks()
sys.exit(cli.run(sys.argv[1:], sys.stdout, sys.stderr))
"""


def run_leaks_cli(*args):
    return subprocess.run([sys.executable, "-c", CLI, "leaks", *map(str, args)], cwd=str(REPO),
                          env=heapwalk_env(), capture_output=True, text=True, timeout=120)


def test_cli_json_and_text(leaks):
    core, truth = leaks.core()
    r = run_leaks_cli(core, "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    assert doc["schema"] == "heapwalk/1" and doc["command"] == "leaks"
    assert not check_against_truth(doc, truth)
    assert isinstance(doc["leaked"]["chunks"], list) and all(isinstance(a, int) for a in doc["leaked"]["chunks"])

    r = run_leaks_cli(core, "--limit", "2")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert "leaked" in r.stdout and "unreferenced" in r.stdout and "roots: registers" in r.stdout
    assert f"… {len(truth['leaked']) - 2} more" in r.stdout

    proc, live_truth = leaks.live()
    r = run_leaks_cli("--pid", proc.pid, "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert not check_against_truth(json.loads(r.stdout), live_truth)
