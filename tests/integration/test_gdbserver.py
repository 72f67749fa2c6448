"""gdb's fallback path: a target heapwalk cannot open itself (gdbserver) is read through gdb's
memory API (`open_callback`), and still gives the oracle's numbers."""

from __future__ import annotations

import socket
import subprocess

from hwkit import assert_matches_oracle, describe, extract_json, no_traceback, run_gdb


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gdbserver_target_equals_oracle(corpora):
    c = corpora.live("arenas", "4", "0")
    port = _free_port()
    server = subprocess.Popen(["gdbserver", "--once", "--attach", f"127.0.0.1:{port}", str(c.pid)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # gdbserver prints "Listening on port N" once it accepts connections.
        for line in server.stdout:
            if "Listening on port" in line:
                break
        r = run_gdb(c.binary, commands=[f"target remote 127.0.0.1:{port}", "heapwalk arenas --json"])
        no_traceback(r)
        doc = extract_json(r.stdout)
        assert doc["glibc"]["symbols"]["main_arena"] == "override", doc["glibc"]
        # Through a callback the mappings are unknown, so mmapped chunks are not scanned (a note);
        # glibc's own counters are still compared with malloc_info.
        assert all(d["kind"] == "note" for d in doc["diagnostics"]), describe(r)
        assert r.returncode == 0, describe(r)
        assert_matches_oracle(doc, c)
    finally:
        server.kill()
        server.wait(timeout=30)
