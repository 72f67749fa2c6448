"""`set/show heapwalk …` in a fresh `gdb -nx -batch` (issue 15, "Settings"), and JSON documents
without timing (issue 15, "CLI": the same core gives byte-identical JSON).

The glibc version's oracle is the corpus program's own ``gnu_get_libc_version()``."""

from __future__ import annotations

import json
import re

from hwkit import describe, extract_json, no_traceback, run_cli, run_gdb

SETTINGS = ("main-arena", "mp", "glibc", "sysroot", "no-symbols", "color")


def _show_lines(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"heapwalk ([a-z-]+):\s+(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_show_heapwalk_lists_every_setting_without_a_target():
    r = run_gdb(commands=["show heapwalk", "set heapwalk no-symbols on",
                          "set heapwalk mp 0x1234", "show heapwalk"])
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    first, second = r.stdout.split("heapwalk main-arena:")[1:3]
    before = _show_lines("heapwalk main-arena:" + first)
    after = _show_lines("heapwalk main-arena:" + second)
    assert tuple(before) == SETTINGS and tuple(after) == SETTINGS, r.stdout
    assert all(v for v in before.values()) and "(not set)" not in r.stdout
    assert before["glibc"] == "auto" and before["no-symbols"] == "off"
    assert after["no-symbols"] == "on" and after["mp"] == "0x1234"


def test_help_set_glibc_says_something_once():
    r = run_gdb(commands=["help set heapwalk glibc", "help show heapwalk glibc"])
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert lines[0] == "Set the glibc version heapwalk assumes."
    assert "Show the glibc version heapwalk assumes." in lines
    assert len(set(lines)) == len(lines) - 1  # only the long help is shared by set and show
    assert "auto" in r.stdout and "2.31" in r.stdout


def test_show_glibc_says_auto_and_the_detected_version(corpora):
    c = corpora.core("arenas", "4", "0")
    version = c.truth["glibc"]
    r = run_gdb(c.binary, c.core, commands=["show heapwalk glibc", "show heapwalk"])
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    lines = r.stdout.splitlines()
    auto = [line for line in lines if line.startswith("auto")]
    assert auto and auto[0].startswith("auto (detected %s, from " % version), r.stdout
    assert _show_lines(r.stdout)["glibc"].startswith("auto (detected %s" % version)


def test_set_glibc_empty_clears_the_setting(corpora):
    c = corpora.core("arenas", "4", "0")
    version = c.truth["glibc"]
    r = run_gdb(c.binary, c.core, commands=[
        "set heapwalk glibc 2.17", "show heapwalk glibc", 'set heapwalk glibc ""',
        "show heapwalk glibc", "heapwalk arenas --json"])
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert "2.17 (forced; detection is off)" in r.stdout
    assert "heapwalk glibc: auto" in r.stdout
    assert '\\"' not in r.stdout + r.stderr and "libc6-dbg" not in r.stdout + r.stderr
    doc = extract_json(r.stdout)
    assert doc["glibc"]["version"] == version
    assert doc["glibc"].get("version_source") != "override"


def _timing(value, path=""):
    """Paths of every non-null ``…seconds`` field (a measurement, never stable)."""
    if isinstance(value, dict):
        return [p for k, v in value.items()
                for p in ([path + "/" + k] if k.endswith("seconds") and v is not None else [])
                + _timing(v, path + "/" + k)]
    if isinstance(value, list):
        return [p for v in value for p in _timing(v, path + "[]")]
    return []


def test_json_documents_of_a_core_are_byte_stable(corpora):
    c = corpora.core("arenas", "4", "0")
    for argv in (["leaks"], ["arenas"], ["bins"], ["tcache"], ["chunks", "--limit", "20"],
                 ["classify"], ["report"]):
        first = run_cli(argv[0], c.core, *argv[1:], "--json")
        second = run_cli(argv[0], c.core, *argv[1:], "--json")
        assert first.returncode == 0, describe(first)
        assert _timing(json.loads(first.stdout)) == [], argv
        assert first.stdout == second.stdout, argv


def test_forced_glibc_says_so_once_and_condenses_misaligned(corpora):
    """`set heapwalk glibc 2.17` on a newer libc: one "detected X, you forced 2.17" line for the
    target, and the flood of `misaligned` diagnostics (the wrong layout) is one line per
    command in text; --json still lists every one."""
    c = corpora.core("arenas", "4", "0")
    version = c.truth["glibc"]
    assert version != "2.17"
    r = run_gdb(c.binary, c.core, commands=[
        "set heapwalk glibc 2.17", "heapwalk arenas", "heapwalk bins", "heapwalk arenas --json"])
    no_traceback(r)
    assert r.stderr.count("detected glibc %s, you forced 2.17" % version) == 1, describe(r)
    doc = extract_json(r.stdout)
    n = sum(1 for d in doc["diagnostics"] if d["kind"] == "misaligned")
    assert n > 1, doc["diagnostics"]
    text = r.stdout[:r.stdout.index('{\n')]
    lines = [line for line in text.splitlines()
             if re.match(r"(error|warning): misaligned", line)]
    assert len(lines) == 2, text
    assert all("%d misaligned chunk pointers under the forced glibc 2.17" % n in line
               for line in lines)


def test_gdb_heapwalk_version():
    r = run_gdb(commands=["heapwalk --version"])
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    cli = run_cli("--version")
    assert cli.returncode == 0 and cli.stdout.startswith("heapwalk ")
    assert r.stdout.splitlines()[-1] == cli.stdout.strip()
