"""Bad inputs: a corrupted heap is reported (diagnostics with addresses, exit 1) without a
crash or a hang; a truncated core and files that are not cores give one clear line each
(plus an optional 'hint:' line); usage errors exit 2.  Never a Python traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwkit import REPO, describe, heapwalk_env, no_traceback, run_cli

TIMEOUT = 60  # a cycle must not hang the walk


def error_lines(stderr: str) -> list[str]:
    """stderr lines that are not hints (the contract is 'one line plus a hint')."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.lstrip().startswith("hint:")]


def _names(d: dict, addr: int) -> bool:
    return d.get("address") == addr or f"{addr:#x}" in str(d.get("detail", "")) or (
        f"0x{addr:016x}" in str(d.get("detail", "")))


def test_corrupted_core_reports_smashed_size_and_fastbin_cycle(corpora):
    c = corpora.core("corrupt")
    r = run_cli("arenas", c.core, "--json", timeout=TIMEOUT)
    no_traceback(r)
    assert r.returncode == 1, describe(r)
    diags = json.loads(r.stdout)["diagnostics"]
    smashed = c.truth["smashed"]["address"]
    cycle = c.truth["cycle"]["addresses"]
    assert any(_names(d, smashed) for d in diags if d.get("kind") != "cycle"), (
        f"no diagnostic names the smashed chunk {smashed:#x}: {diags}")
    assert any(d.get("kind") == "cycle" and any(_names(d, a) for a in cycle) for d in diags), (
        f"no cycle diagnostic names {[hex(a) for a in cycle]}: {diags}")


@pytest.mark.parametrize("command", [["heaps"], ["bins"], ["tcache"], ["chunks", "--limit", "50"], ["chunks", "--free"]])
def test_corrupted_core_other_commands_finish(corpora, command):
    c = corpora.core("corrupt")
    r = run_cli(*command, c.core, timeout=TIMEOUT)
    no_traceback(r)
    assert r.returncode in (0, 1), describe(r)


def test_corrupted_core_text_report_exits_1(corpora):
    c = corpora.core("corrupt")
    r = run_cli("arenas", c.core, timeout=TIMEOUT)
    no_traceback(r)
    assert r.returncode == 1, describe(r)
    assert f"{c.truth['smashed']['address']:x}" in (r.stdout + r.stderr).lower()


@pytest.fixture(scope="module")
def truncated_core(corpora, tmp_path_factory) -> Path:
    c = corpora.core("arenas", "1", "0")
    dst = tmp_path_factory.mktemp("bad") / "truncated.core"
    shutil.copyfile(c.core, dst)
    size = dst.stat().st_size
    with open(dst, "r+b") as f:
        f.truncate(size // 2)
    return dst


@pytest.mark.parametrize("json_flag", [False, True], ids=["text", "json"])
def test_truncated_core_one_line(truncated_core, json_flag):
    r = run_cli("arenas", truncated_core, *(["--json"] if json_flag else []), timeout=TIMEOUT)
    no_traceback(r)
    assert r.returncode == 1, describe(r)
    lines = error_lines(r.stderr)
    if json_flag and r.stdout.strip():
        # A partial analysis may be printed as JSON with diagnostics saying what was missing.
        doc = json.loads(r.stdout)
        assert doc["diagnostics"], describe(r)
    else:
        assert len(lines) == 1, f"expected one error line:\n{describe(r)}"


def test_truncated_core_every_command(truncated_core):
    for cmd in (["heaps"], ["bins"], ["tcache"], ["chunks", "--limit", "5"]):
        r = run_cli(*cmd, truncated_core, timeout=TIMEOUT)
        no_traceback(r)
        assert r.returncode == 1, f"{cmd}: {describe(r)}"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("bad") / "notes.txt"
    p.write_text("this is not a core file\n" * 100)
    return p


@pytest.mark.parametrize("kind", ["elf-executable", "text", "empty", "missing", "directory"])
def test_not_a_core_one_line_naming_the_file(kind, text_file, tmp_path):
    path = {
        "elf-executable": Path("/bin/ls"),
        "text": text_file,
        "empty": tmp_path / "empty.core",
        "missing": tmp_path / "does-not-exist.core",
        "directory": tmp_path,
    }[kind]
    if kind == "empty":
        path.write_bytes(b"")
    r = run_cli("arenas", path, timeout=TIMEOUT)
    no_traceback(r)
    assert r.returncode == 1, describe(r)
    lines = error_lines(r.stderr)
    assert len(lines) == 1, f"expected one error line:\n{describe(r)}"
    assert str(path) in lines[0] or path.name in lines[0], f"the line does not name {path}: {lines[0]!r}"


@pytest.mark.parametrize(
    "argv",
    [
        ["arenas", "--no-such-option", "CORE"],
        ["no-such-command", "CORE"],
        [],
        ["arenas"],  # neither CORE nor --pid
        ["chunks", "CORE", "--limit", "notanumber"],
        ["chunk", "CORE"],  # ADDR missing
        ["arenas", "CORE", "--pid", "1"],  # both a core and a pid
    ],
    ids=lambda a: " ".join(a) or "(none)",
)
def test_usage_errors_exit_2(corpora, argv):
    core = str(corpora.core("arenas", "1", "0").core)
    r = run_cli(*[core if a == "CORE" else a for a in argv])
    no_traceback(r)
    assert r.returncode == 2, describe(r)


def test_pid_that_does_not_exist(corpora):
    r = run_cli("arenas", "--pid", "999999999")
    no_traceback(r)
    assert r.returncode == 1, describe(r)
    assert len(error_lines(r.stderr)) == 1, describe(r)


SHRINK_SCRIPT = r"""
import json, os, shutil, sys
import heapwalk
src, path = sys.argv[1], sys.argv[2]
shutil.copyfile(src, path)
t = heapwalk.open_core(path)          # mapped now
os.truncate(path, os.path.getsize(path) // 3)  # cut short while mapped
doc = t.report()
kinds = [d["kind"] + ": " + d["detail"] for d in doc.get("diagnostics", [])]
print(json.dumps({"arenas": len(doc.get("retention", {}).get("arenas", [])), "diagnostics": kinds}))
"""


def test_core_truncated_while_mapped_reads_zeros_and_says_so(corpora, tmp_path):
    """A core cut short while heapwalk has it mapped: no SIGBUS (exit 135), a 'truncated'
    diagnostic naming the file (issue 14 item 10)."""
    c = corpora.core("arenas", "1", "0")
    path = tmp_path / "shrinking.core"
    r = subprocess.run([sys.executable, "-c", SHRINK_SCRIPT, str(c.core), str(path)], cwd=str(REPO),
                       env=heapwalk_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{r.returncode}\n{r.stdout}\n{r.stderr}"
    doc = json.loads(r.stdout.splitlines()[-1])
    shrunk = [d for d in doc["diagnostics"] if d.startswith("truncated: ") and "shrank while heapwalk read it" in d]
    assert shrunk and str(path) in shrunk[0], doc["diagnostics"]
