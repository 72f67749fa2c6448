"""80 columns (issue 15, "80 columns, colour, units"): gdb run interactively in a pseudo-terminal
of 80x24 (gdb takes its ``width`` from the terminal, styling is on) and the CLI at COLUMNS=80:
no line of ``arenas``, ``report``, ``nmt`` or ``tcache`` is wider than the terminal, colour
codes taking no room; addresses print as gdb prints them (no zero padding).

The JVM core is nmtkit's (the same cached fixture test_nmt.py uses)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from hwkit import ASAN_PRELOAD, CACHE, GDBINIT, describe, heapwalk_env, run_cli
from nmtkit import JAVA, JvmCorpora, have_jdk

WIDTH = 80
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")
COMMANDS = ("arenas", "report", "tcache", "bins")


@pytest.fixture(scope="module")
def jvms(tmp_path_factory):
    c = JvmCorpora(CACHE, tmp_path_factory.mktemp("jvm"))
    yield c
    c.close()


def gdb_in_pty(binary: str, core: str, commands: list[str], timeout: float = 240.0,
               raw: bool = False) -> str:
    """Everything an interactive gdb printed to an 80x24 terminal running ``commands`` (each
    framed by ``==N==`` markers), CRs dropped, ANSI codes removed unless ``raw``."""
    if ASAN_PRELOAD:
        pytest.skip("gdb cannot host the ASan build (it hangs with libasan preloaded)")
    # -iex: before the core is loaded (its thread list would stop at the pager).
    argv = ["gdb", "-nx", "-q", "-iex", "set pagination off", "-iex", "set confirm off",
            "-x", str(GDBINIT)]
    for i, c in enumerate(commands):
        argv += ["-ex", "echo ==%d==\\n" % i, "-ex", c]
    argv += ["-ex", "echo ==end==\\n", "-ex", "quit", binary, core]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, WIDTH, 0, 0))
    env = dict(heapwalk_env(), TERM="xterm", COLUMNS=str(WIDTH), LINES="24")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd="/", env=env,
                            start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r", "")
    return text if raw else _ANSI.sub("", text)


def _sections(text: str, n: int) -> list[str]:
    out = []
    for i in range(n):
        start = text.index("==%d==\n" % i) + len("==%d==\n" % i)
        end = text.index("==%d==" % (i + 1)) if i + 1 < n else text.index("==end==")
        out.append(text[start:end])
    return out


def _too_wide(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > WIDTH]


def test_gdb_at_80_columns_arenas_report_tcache_bins(corpora):
    c = corpora.core("arenas", "4", "0")
    text = gdb_in_pty(c.binary, c.core, ["heapwalk %s" % name for name in COMMANDS]
                      + ["show width"])
    parts = _sections(text, len(COMMANDS) + 1)
    assert "80" in parts[-1], text[-2000:]
    for name, part in zip(COMMANDS, parts):
        assert "Traceback" not in part and "error:" not in part.split("\n")[0], part
        assert len(part.splitlines()) > 3, (name, text[-3000:])
        assert _too_wide(part) == [], (name, part)
    arenas = parts[0]
    assert "0x00" not in arenas and "dwarf (profile" not in arenas
    assert re.search(r"\b0x[1-9a-f][0-9a-f]{7,}\b", arenas), arenas


def test_gdb_at_80_columns_nmt(jvms):
    if not have_jdk():
        pytest.skip("no JDK")
    c = jvms.core("summary")
    text = gdb_in_pty(str(JAVA), str(c.core), ["heapwalk nmt", "heapwalk arenas"])
    nmt, arenas = _sections(text, 2)
    assert "JVM" in nmt and "Total: reserved=" in nmt, nmt[:3000]
    assert _too_wide(nmt) == [] and _too_wide(arenas) == [], (nmt, arenas)
    assert "layout:" not in nmt  # provenance is for -v and JSON


def test_cli_at_80_columns(corpora):
    c = corpora.core("arenas", "4", "0")
    for name in COMMANDS + ("heaps", "chunks"):
        r = run_cli(name, c.core, extra_env={"COLUMNS": str(WIDTH)})
        assert r.returncode == 0, describe(r)
        if name in COMMANDS:
            assert _too_wide(r.stdout) == [], (name, r.stdout)
        assert "\x1b[" not in r.stdout  # a pipe: no colour
    r = run_cli("arenas", c.core, "--color", "always", extra_env={"COLUMNS": str(WIDTH)})
    assert r.returncode == 0 and "\x1b[1m" in r.stdout, describe(r)
    assert _too_wide(_ANSI.sub("", r.stdout)) == [], r.stdout
    r = run_cli("arenas", c.core, "--color", "never", extra_env={"COLUMNS": str(WIDTH)})
    assert "\x1b[" not in r.stdout
    plain = run_cli("arenas", c.core, extra_env={"COLUMNS": "300"})
    verbose = run_cli("arenas", c.core, "-v", extra_env={"COLUMNS": "300"})
    assert "dwarf (profile" not in plain.stdout and "(layout: from glibc's debug info)" in \
        plain.stdout, plain.stdout
    assert "dwarf (profile" in verbose.stdout, verbose.stdout
    for line in plain.stdout.splitlines():  # one unit style: B, KiB, ..., never "bytes"
        assert not re.search(r"\d bytes\b", line), line


def test_nmt_cli_at_80_columns(jvms):
    if not have_jdk():
        pytest.skip("no JDK")
    c = jvms.core("summary")
    r = run_cli("nmt", c.core, extra_env={"COLUMNS": str(WIDTH)})
    assert r.returncode in (0, 1), describe(r)
    assert _too_wide(r.stdout) == [], r.stdout
    assert "layout:" not in r.stdout
    v = run_cli("nmt", c.core, "-v", extra_env={"COLUMNS": "400"})
    assert "layout:" in v.stdout, v.stdout


def test_gdb_colours_as_on_a_terminal_unless_told_not_to(corpora):
    c = corpora.core("arenas", "4", "0")
    text = gdb_in_pty(c.binary, c.core, ["heapwalk arenas", "set heapwalk color off",
                                         "heapwalk arenas", "show heapwalk color"], raw=True)
    on, _, off, shown = _sections(text, 4)
    assert "\x1b[1m#  arena" in on and "\x1b[34m0x" in on, on  # headings, addresses
    assert not any(code in off for code in ("\x1b[1m", "\x1b[34m", "\x1b[36m")), off
    assert "off" in _ANSI.sub("", shown)
