"""Live targets that are awkward to stop (issue 14 item 11), corpora/attachodd.c.

- a vfork parent (uninterruptible sleep until its stopped child goes on): `--pid` ends in
  bounded time with a one-line error naming the thread and its state, exit 1, and leaves the
  process as it was (not stopped, not traced);
- a zombie thread-group leader whose threads run on: analysed through a live thread (the
  program's own 1000 blocks of 100 bytes are found), not "another debugger attached";
- thread churn: a thread that exits while the process is being stopped is not an error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from hwkit import build, describe, no_traceback, run_cli, spawn_ready, stop


def _state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2]


def _tracer(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return -1


def _spawn(mode: str, tmp_path: Path) -> subprocess.Popen:
    prog = build("attachodd")
    out = tmp_path / mode
    out.mkdir()
    return spawn_ready([str(prog), mode, str(out)])


def test_vfork_parent_times_out_with_a_clear_error(tmp_path):
    proc = _spawn("vfork", tmp_path)
    try:
        deadline = time.monotonic() + 10
        while _state(proc.pid) != "D" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(proc.pid) == "D", "the parent did not reach vfork"
        t0 = time.monotonic()
        r = run_cli("arenas", "--pid", str(proc.pid), extra_env={"HEAPWALK_STOP_TIMEOUT": "2"}, timeout=60)
        took = time.monotonic() - t0
        no_traceback(r)
        assert r.returncode == 1, describe(r)
        first = r.stderr.splitlines()[0]
        assert first.startswith(f"heapwalk: pid {proc.pid}: thread {proc.pid} did not stop within 2 s (state D"), first
        assert took < 20, took
        assert _tracer(proc.pid) == 0 and _state(proc.pid) == "D", "left as it was"
    finally:
        # The stopped vfork child is the parent's; killing the parent's group ends both.
        for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            os.kill(int(p), signal.SIGKILL)
        stop(proc)


def test_zombie_leader_is_analysed_through_its_threads(tmp_path):
    proc = _spawn("zombie", tmp_path)
    try:
        deadline = time.monotonic() + 10
        while _state(proc.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(proc.pid) == "Z"
        r = run_cli("report", "--pid", str(proc.pid), "--json", "--no-classes")
        no_traceback(r)
        assert r.returncode in (0, 1), describe(r)
        assert "another debugger" not in r.stderr
        doc = json.loads(r.stdout)
        sizes = {s["size"]: s["count"] for s in doc["size_classes"]}
        # 1000 blocks of 100 bytes: 112-byte chunks (and a few of libc's own at most).
        assert 1000 <= sizes.get(112, 0) <= 1010, sizes
    finally:
        stop(proc)


def test_thread_churn_is_not_an_error(tmp_path):
    proc = _spawn("churn", tmp_path)
    try:
        for _ in range(20):
            r = run_cli("arenas", "--pid", str(proc.pid), "--json")
            no_traceback(r)
            assert r.returncode == 0, describe(r)
        assert proc.poll() is None and _tracer(proc.pid) == 0
    finally:
        stop(proc)
