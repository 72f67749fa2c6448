"""CLI: argument parsing, exit statuses and one-line errors (fake engine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import heapwalk
from heapwalk import cli
from heapwalk.commands import UsageError, parse_int
from fake_native import MAIN, SECOND, FaultError, FormatError, SymbolError
from conftest import REPO


@pytest.mark.parametrize("text,value", [("0x10", 16), ("0X7fff", 0x7FFF), ("16", 16),
                                        ("0010", 10), ("0", 0), ("0x7fff_f000", 0x7FFFF000)])
def test_parse_int_accepts_hex_and_decimal(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("text", ["zz", "0xg", "-1", "", "1.5"])
def test_parse_int_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_int(text)


@pytest.mark.parametrize("arena,expected", [("0", 0), ("1", 1), (hex(SECOND), SECOND),
                                            (str(MAIN), MAIN)])
def test_arena_index_or_address(fake, core, run, arena, expected) -> None:
    status, out, err = run("bins", core, arena)
    assert status == 0, err
    assert ("bins", expected) in fake.calls


def test_unknown_arena_is_an_analysis_error(fake, core, run) -> None:
    status, out, err = run("bins", core, "7")
    assert status == 1
    assert err.splitlines()[0] == "heapwalk: %s: no arena #7 (the target has 2)" % core
    assert err.splitlines()[1].startswith("hint: ")
    status, _, err = run("chunks", core, "--arena", "0x1234560")
    assert status == 1 and "no arena at 0x1234560" in err


def test_bad_number_is_a_usage_error(fake, core, run) -> None:
    status, out, err = run("bins", core, "zz")
    assert status == 2 and out == ""
    assert err.startswith("heapwalk: ") and "not a number" in err


def test_pid_shifts_positionals(fake, run) -> None:
    status, out, err = run("bins", "--pid", "42", "1")
    assert status == 0, err
    assert fake.calls[0] == ("attach", 42, None)
    assert ("bins", 1) in fake.calls
    status, out, err = run("chunk", "--pid", "42", "0x7ffff0000040")
    assert status == 0, err
    assert ("chunk", 0x7FFFF0000040) in fake.calls


def test_core_and_pid_together_is_a_usage_error(fake, core, run) -> None:
    status, _, err = run("chunk", core, "0x10", "--pid", "42")
    assert status == 2 and "not both" in err


def test_missing_target_is_a_usage_error(fake, run) -> None:
    status, out, err = run("arenas")
    assert status == 2
    assert "give a CORE file or --pid PID" in err


@pytest.mark.parametrize("argv", [[], ["nosuch"], ["chunks", "x", "--free", "--used"],
                                  ["chunks", "x", "--limit", "-3"], ["chunk", "x"],
                                  ["arenas", "x", "--bogus"]])
def test_usage_errors_exit_2(fake, run, argv) -> None:
    status, out, err = run(*argv)
    assert status == 2 and out == ""
    assert "Traceback" not in err


def test_help_lists_commands(run) -> None:
    status, out, err = run("--help")
    assert status == 0
    for name in ("arenas", "heaps", "bins", "tcache", "chunks", "chunk"):
        assert "\n    %s " % name in out


def test_success_is_0_and_notes_do_not_count(fake, core, run) -> None:
    status, out, err = run("arenas", core)
    assert status == 0 and err == ""
    assert "note: libc debug symbols found by build-id" in out


def test_diagnostics_make_status_1(fake, core, run) -> None:
    fake.extra_diagnostics.append({"kind": "bad_size", "address": 0x555555559290,
                                   "arena": MAIN, "detail": "size 0x0 below minimum",
                                   "severity": "error"})
    for command in ("arenas", "heaps", "bins"):
        status, out, err = run(command, core)
        assert status == 1
        assert ("error: bad_size at 0x555555559290 (arena 0x7ffff7e19c80): "
                "size 0x0 below minimum") in out
    status, out, _ = run("arenas", core, "--json")
    assert status == 1


def test_warnings_keep_status_0(fake, core, run) -> None:
    """A warning leaves the result complete and exact: printed, exit status 0."""
    fake.extra_diagnostics.append({"kind": "symbols", "address": None, "arena": None,
                                   "detail": "libc.so.6: file not found under sysroot /x",
                                   "severity": "warning"})
    status, out, _ = run("arenas", core)
    assert status == 0
    assert "warning: symbols: libc.so.6: file not found under sysroot /x" in out
    status, out, _ = run("arenas", core, "--json")
    assert status == 0
    assert json.loads(out)["diagnostics"][-1]["severity"] == "warning"


@pytest.mark.parametrize("kind,status", [("symbols", 0), ("bad_size", 1), ("note", 0),
                                         ("a_kind_nobody_knows", 1)])
def test_severity_from_kind_when_the_field_is_missing(fake, core, run, kind, status) -> None:
    """A diagnostic without ``severity`` (a saved report from an older heapwalk) takes the
    engine's severity of its kind; an unknown kind is an error; the field is filled in."""
    fake.extra_diagnostics.append({"kind": kind, "address": None, "arena": None,
                                   "detail": "x"})
    got, out, _ = run("arenas", core, "--json")
    assert got == status
    expected = {0: ("note", "warning"), 1: ("error",)}[status]
    assert json.loads(out)["diagnostics"][-1]["severity"] in expected


def test_missing_core_is_one_line(fake, run, tmp_path) -> None:
    status, out, err = run("arenas", str(tmp_path / "nope"))
    assert status == 1 and out == ""
    assert err == "heapwalk: %s: no such file\n" % (tmp_path / "nope")


@pytest.mark.parametrize("exc,line,hint", [
    (FormatError("not an ELF core file", "CORE"), "heapwalk: CORE: not an ELF core file",
     "ELF core"),
    (FaultError("cannot read main_arena (16 bytes)", 0x7FFFF7E19C80, 16),
     "heapwalk: 0x7ffff7e19c80: cannot read main_arena (16 bytes)", "truncated"),
    (SymbolError("main_arena not found", "main_arena"),
     "heapwalk: {core}: main_arena not found", "libc6-dbg"),
    (OSError(13, "Permission denied", "CORE"), "heapwalk: CORE: Permission denied", None),
])
def test_engine_errors_are_one_line_and_a_hint(fake, core, run, exc, line, hint) -> None:
    fake.fail = exc
    status, out, err = run("arenas", core)
    lines = err.splitlines()
    assert status == 1 and out == ""
    assert lines[0] == line.format(core=core)
    if hint:
        assert len(lines) == 2 and lines[1].startswith("hint: ") and hint in lines[1]
    else:
        assert len(lines) == 1


def test_engine_error_during_a_query(fake, core, run, monkeypatch) -> None:
    from fake_native import FakeTarget

    def broken(self, addr):
        raise FaultError("chunk header unreadable", addr, 16)
    monkeypatch.setattr(FakeTarget, "chunk", broken)
    status, out, err = run("chunk", core, "0x10")
    assert status == 1
    assert err.splitlines()[0] == "heapwalk: 0x10: chunk header unreadable"


def test_internal_error_has_no_traceback(fake, core, run, monkeypatch) -> None:
    from fake_native import FakeTarget
    monkeypatch.setattr(FakeTarget, "arenas", lambda self: {"arenas": 5})
    status, out, err = run("arenas", core)
    assert status == 1
    assert err.startswith("heapwalk: ") and "internal error" in err
    assert "Traceback" not in err


def test_keyboard_interrupt_exits_130(fake, core, monkeypatch) -> None:
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "run", interrupted)
    assert cli.main(["arenas", core]) == 130


def test_target_is_closed(fake, core, run) -> None:
    run("arenas", core)
    assert fake.calls[-1] == ("close",)


def test_native_missing_is_one_line(monkeypatch, core) -> None:
    import io
    monkeypatch.setattr(heapwalk, "_native", None, raising=False)
    monkeypatch.setitem(sys.modules, "heapwalk._native", None)  # makes the import fail
    listdir = heapwalk.os.listdir
    monkeypatch.setattr(heapwalk.os, "listdir",
                        lambda path: [n for n in listdir(path) if not n.startswith("_native")])
    out, err = io.StringIO(), io.StringIO()
    assert cli.run(["arenas", core], out, err) == 1
    assert err.getvalue() == ("heapwalk: heapwalk's native module is not built: "
                              "run the README's build\n")


def test_native_unloadable_is_one_line_and_a_hint(monkeypatch, core) -> None:
    import io
    monkeypatch.setattr(heapwalk, "_native", None, raising=False)
    monkeypatch.setitem(sys.modules, "heapwalk._native", None)
    monkeypatch.setattr(heapwalk.os, "listdir",
                        lambda path: ["_native.cpython-311-x86_64-linux-gnu.so"])
    out, err = io.StringIO(), io.StringIO()
    assert cli.run(["arenas", core], out, err) == 1
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("heapwalk: heapwalk's native module failed to load: ")
    assert lines[1].startswith("hint: rebuild it") and len(lines) == 2


def test_python_m_entry_point_without_native(tmp_path) -> None:
    """The real entry point: no traceback whatever the state of the build."""
    proc = subprocess.run([sys.executable, "-m", "heapwalk", "arenas", str(tmp_path / "x")],
                          cwd=REPO, env={"PYTHONPATH": REPO + "/python", "PATH": "/usr/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("heapwalk: ")
    proc = subprocess.run([sys.executable, "-m", "heapwalk", "arenas", "--bogus"], cwd=REPO,
                          env={"PYTHONPATH": REPO + "/python", "PATH": "/usr/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
