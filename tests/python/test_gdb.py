"""gdb front end in a fresh ``gdb -nx -batch``: loading from any cwd, help, and target
selection (core vs live) with the fake engine injected inside gdb."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import List

import pytest

from conftest import HERE, REPO

GDB = shutil.which("gdb")
pytestmark = pytest.mark.skipif(GDB is None, reason="gdb not installed")
GDBINIT = os.path.join(REPO, "gdbinit")
FAKE = ("python import sys; sys.path.insert(0, %r); import fake_native, heapwalk; "
        "heapwalk._native = fake_native.FakeNative()" % HERE)
COMMANDS = ("arenas", "heaps", "bins", "tcache", "chunks", "chunk")


def gdb(args: List[str], cwd: str) -> subprocess.CompletedProcess:
    """Run a fresh batch gdb with the repo's gdbinit."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("HEAPWALK_ROOT", None)
    return subprocess.run([GDB, "-nx", "-batch", "-x", GDBINIT] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _ex(*commands: str) -> List[str]:
    out: List[str] = []
    for command in commands:
        out += ["-ex", command]
    return out


def test_help_from_another_cwd(tmp_path) -> None:
    proc = gdb(_ex("help heapwalk"), str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for name in COMMANDS:
        assert "heapwalk %s -- " % name in proc.stdout


def test_listing_and_subcommand_help(tmp_path) -> None:
    proc = gdb(_ex("heapwalk", "help heapwalk chunks"), str(tmp_path))
    assert "commands:\n  arenas" in proc.stdout
    assert "usage: heapwalk chunks [-h] [--arena ARENA] [--free | --used]" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_errors_are_one_line_without_target(tmp_path) -> None:
    proc = gdb(_ex("heapwalk arenas", "heapwalk chunks --bogus", "heapwalk chunk --help"),
               str(tmp_path))
    err = proc.stderr.splitlines()
    assert err[0] == "heapwalk: no process or core file"
    assert err[1].startswith("hint: ")
    assert err[2] == "heapwalk: chunks: unrecognized arguments: --bogus"
    assert "Traceback" not in proc.stderr
    assert "usage: heapwalk chunk [-h] [--json] [-v] ADDR" in proc.stdout


def test_completion(tmp_path) -> None:
    proc = gdb(_ex("complete heapwalk ch", "complete heapwalk chunks --f"), str(tmp_path))
    assert proc.stdout.splitlines() == ["heapwalk chunk", "heapwalk chunks",
                                        "heapwalk chunks --free"]


@pytest.fixture(scope="module")
def true_core(tmp_path_factory) -> str:
    """A small core of /bin/true, made by gdb itself."""
    path = str(tmp_path_factory.mktemp("core") / "true.core")
    proc = subprocess.run([GDB, "-nx", "-batch", "-ex", "starti", "-ex", "gcore " + path,
                           "/bin/true"], capture_output=True, text=True, timeout=120)
    if not os.path.exists(path):
        pytest.skip("cannot make a core here: %s" % proc.stderr.strip())
    return path


def test_core_target_uses_open_core(tmp_path, true_core) -> None:
    proc = gdb(["/bin/true", true_core] + _ex(
        FAKE, "heapwalk arenas --json", "heapwalk chunk $pc - $pc + 0x7ffff0000048",
        "python print('CALLS', heapwalk._native.calls)"), str(tmp_path))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert '"schema": "heapwalk/1"' in proc.stdout
    assert "in chunk 0x7ffff0000020" in proc.stdout
    calls = proc.stdout.split("CALLS", 1)[1]
    assert "('open_core', %r, None)" % true_core in calls
    assert calls.count("open_core") == 1  # cached between commands


def test_live_target_uses_attach_with_threads(tmp_path) -> None:
    proc = gdb(["/bin/true"] + _ex(
        "starti", FAKE, "heapwalk tcache",
        "python print('CALLS', heapwalk._native.calls[0][:2], "
        "[sorted(t) for t in heapwalk._native.calls[0][2]], "
        "heapwalk._native.calls[0][2][0]['lwp'] == gdb.selected_inferior().pid)"),
        str(tmp_path))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "thread 1000: tcache" in proc.stdout
    line = proc.stdout.split("CALLS", 1)[1].splitlines()[0]
    assert "('attach'," in line and "[['fs_base', 'lwp', 'regs', 'rsp']] True" in line
