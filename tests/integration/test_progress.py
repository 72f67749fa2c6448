"""Long work on a terminal: a progress line on stderr, and Ctrl-C stops the engine cleanly
(exit 130, no traceback) instead of waiting for the walk to finish."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

from hwkit import REPO, heapwalk_env


def _run_on_pty(args: list[str], interrupt_after_progress: bool) -> tuple[int, str]:
    master, slave = pty.openpty()
    env = dict(heapwalk_env(), HEAPWALK_PROGRESS_AFTER="0")
    proc = subprocess.Popen([sys.executable, "-m", "heapwalk", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    seen, sent = b"", False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if interrupt_after_progress and not sent and b"heapwalk: " in seen and b"%" in seen:
            proc.send_signal(signal.SIGINT)
            sent = True
        if proc.poll() is not None and not ready:
            break
    rc = proc.wait(timeout=60)
    os.close(master)
    return rc, seen.decode(errors="replace")


def test_progress_line_and_ctrl_c(corpora):
    c = corpora.core("many", "5500000", "4")
    rc, err = _run_on_pty(["leaks", str(c.core)], interrupt_after_progress=True)
    assert "%" in err, err  # the progress line was drawn
    assert rc == 130, (rc, err)
    assert "Traceback" not in err, err


def test_no_progress_when_stderr_is_not_a_terminal(corpora):
    c = corpora.core("many", "5500000", "4")
    r = subprocess.run([sys.executable, "-m", "heapwalk", "arenas", str(c.core), "--json"], cwd=REPO,
                       env=dict(heapwalk_env(), HEAPWALK_PROGRESS_AFTER="0"), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0
    assert "\r" not in r.stderr and "%" not in r.stderr, r.stderr
