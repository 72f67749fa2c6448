"""CLI fit and finish (issue 15, "CLI"): --version, per-command usage errors, stable JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any, Dict

import pytest

import heapwalk
import fake_native
from conftest import REPO


def test_version_matches_cmake(run) -> None:
    with open(os.path.join(REPO, "CMakeLists.txt"), encoding="utf-8") as f:
        cmake = re.search(r"project\(heapwalk VERSION ([0-9.]+)", f.read())
    assert cmake is not None
    assert heapwalk.__version__ == cmake.group(1)
    status, out, err = run("--version")
    assert status == 0 and err == ""
    assert out == "heapwalk %s\n" % heapwalk.__version__


def test_version_from_python_m() -> None:
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"))
    proc = subprocess.run([sys.executable, "-m", "heapwalk", "--version"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "heapwalk %s\n" % heapwalk.__version__


@pytest.mark.parametrize("command", ["arenas", "bins", "chunks", "leaks"])
def test_bad_option_gives_the_commands_usage(fake, core, run, command) -> None:
    status, out, err = run(command, core, "--bogus")
    assert status == 2 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("usage: heapwalk %s " % command), err
    assert "COMMAND" not in lines[0]
    assert "unrecognized arguments: --bogus" in err
    assert "try 'heapwalk %s --help'" % command in err
    assert "Traceback" not in err


def test_bad_option_before_the_core(fake, core, run) -> None:
    status, _, err = run("arenas", "--bogus", core)
    assert status == 2
    assert err.startswith("usage: heapwalk arenas ") and "--bogus" in err


def test_chunk_without_addr_names_addr(fake, core, run) -> None:
    status, out, err = run("chunk", core)
    assert status == 2 and out == ""
    assert err.startswith("usage: heapwalk chunk ")
    assert "the following arguments are required: ADDR" in err
    assert "give a CORE file" not in err
    # An address alone still asks for the target.
    status, _, err = run("chunk", "0x10")
    assert status == 2 and "give a CORE file or --pid PID" in err


def _leaks_doc() -> Dict[str, Any]:
    sizes = [{"size": 32, "count": 1, "bytes": 32}]
    return {"schema": "heapwalk/1", "nodes": {"count": 3, "bytes": 96},
            "reachable": {"count": 2, "bytes": 64},
            "leaked": {"count": 1, "bytes": 32, "sizes": sizes, "classes": [],
                       "listed": [{"address": 0x555555559010, "size": 32, "state": "used",
                                   "arena": fake_native.MAIN, "unreferenced": True}],
                       "truncated": False, "arenas": []},
            "unreferenced": {"count": 1, "bytes": 32, "sizes": sizes},
            "roots": [], "anon_roots": False, "words_scanned": 10, "seconds": 0.0123,
            "diagnostics": []}


def test_leaks_json_has_no_timing(fake, core, run, monkeypatch) -> None:
    monkeypatch.setattr(fake_native.FakeTarget, "leaks",
                        lambda self, **_kw: _leaks_doc(), raising=False)
    status, out, err = run("leaks", core, "--json")
    assert status == 0, err
    doc = json.loads(out)
    assert "seconds" not in doc and doc["words_scanned"] == 10

    def timing_keys(value: Any, path: str = "") -> list:
        if isinstance(value, dict):
            return [p for k, v in value.items()
                    for p in ([path + "/" + k] if k.endswith("seconds") and v is not None
                              else []) + timing_keys(v, path + "/" + k)]
        if isinstance(value, list):
            return [p for v in value for p in timing_keys(v, path + "[]")]
        return []
    assert timing_keys(doc) == []
