"""``diff A --pid PID`` (issue 15, "CLI"): a saved snapshot against the live process now.

The program (corpora arenas) sits idle after printing its truth, so between a saved report of
it and the process now nothing changed: every total's delta is 0, and the in-use bytes both
sides report are the program's own mallinfo2 figures (arena, hblkhd)."""

from __future__ import annotations

import json

from hwkit import describe, no_traceback, run_cli


def test_diff_of_a_saved_report_against_the_live_process(corpora, tmp_path):
    c = corpora.live("arenas", "2", "0")
    pid = str(c.proc.pid)
    saved = run_cli("report", "--pid", pid, "--json")
    assert saved.returncode == 0, describe(saved)
    a = tmp_path / "a.json"
    a.write_text(saved.stdout)
    r = run_cli("diff", str(a), "--pid", pid, "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    assert doc["b"]["kind"] == "live" and doc["b"]["path"] == "pid " + pid
    assert doc["b"]["target"]["pid"] == c.proc.pid and doc["a"]["kind"] == "report"
    assert all(t["delta"] == 0 for t in doc["totals"]), doc["totals"]
    totals = {t["what"]: t for t in doc["totals"]}
    mi = c.truth["mallinfo2"]
    assert totals["glibc system bytes (arenas)"]["b"] == mi["arena"], totals
    assert totals["glibc mmapped chunk bytes"]["b"] == mi["hblkhd"], totals
    assert doc["growth"] == [] and doc["size_classes"] == []
    text = run_cli("diff", "--pid", pid, str(a))  # either order
    assert text.returncode == 0 and "pid " + pid in text.stdout, describe(text)


def test_diff_pid_usage_errors(corpora, tmp_path):
    c = corpora.live("arenas", "2", "0")
    pid = str(c.proc.pid)
    a = tmp_path / "a.json"
    a.write_text("{}")
    for argv in (("diff", "--pid", pid), ("diff", str(a), str(a), "--pid", pid)):
        r = run_cli(*argv)
        no_traceback(r)
        assert r.returncode == 2, describe(r)
        assert r.stderr.startswith("usage: heapwalk diff") or "heapwalk: " in r.stderr, r.stderr
