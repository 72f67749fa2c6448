"""Hostile text (issue 14, items 2, 7 and 13): strings a core carries never reach a terminal raw,
bytes that are not UTF-8 never break a command, and a hostile saved report given to ``diff``
ends in one error line naming it.

The cores are derived (corruptkit.py) from the small ``arenas 1 0`` core: NT_FILE paths
rewritten (same length) to carry terminal escapes (OSC 0 title, CSI 2J), a forged line
(``\\n warning: FAKE all clear``), ``\\r``, U+202E, C1 controls in UTF-8 (U+009B, U+009D) and a
byte that is not UTF-8 (``\\xff``); in-use chunks overwritten with text the classifier samples:
Latin-1 with raw C1 bytes, UTF-8 cut mid-character by the 40-byte sample, and text with
``\\r\\n``, tabs, bidi controls and C1 characters.  Every command runs on them (CLI text and
--json, ``report --html``, gdb), and the check is on bytes: stdout and stderr decode as UTF-8,
hold no C0 control but the newline, no DEL, no C1, no bidi control, and the escaped forms are
there instead.  ``nmt`` runs on these C cores (no JVM: the JVM strings are covered by the
binding's decoding and tests/python/test_render_fuzz.py)."""

from __future__ import annotations

import json
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import corruptkit as ck
from hwkit import ASAN_PRELOAD, CACHE, GDBINIT, REPO, heapwalk_env

TIMEOUT = 120
#: What a renamed file carries (UTF-8 bytes; \xff is not UTF-8).
NAME_PAYLOAD = (b"/t/\x1b]0;pwned\x07\n warning: FAKE all clear\r\xe2\x80\xae\xc2\x9b\xc2\x9d"
                b"\xff\x1b[2J")
NAME_ESCAPED = ("/t/\\x1b]0;pwned\\x07\\n warning: FAKE all clear\\r\\u202e\\x9b\\x9d\\xff"
                "\\x1b[2J")
#: Heap text the classifier samples (its first 40 bytes), and how text output starts showing
#: the sample (it shows 32 characters of the escaped form).
TEXTS = {
    "latin1": (b"caf\xe9 cr\xe8me br\xfbl\xe9e na\xefve \x9b2J \x85 fa\xe7ade and more text",
               "'caf\\xe9 cr\\xe8me br\\xfbl\\xe9e na"),
    "cut-utf8": (b"x" + "é".encode() * 40, "'x" + "é" * 19 + "\\xc3'"),
    "controls": (b"GET /\r\n warning: FAKE\t\xe2\x80\xae\xc2\x9b\xe2\x81\xa6 and then more",
                 "'GET /\\r\\n warning: FAKE\\t\\u202e'"),
}
COMMANDS = [["arenas"], ["heaps"], ["bins"], ["tcache"], ["chunks", "--limit", "50"],
            ["classify", "--free", "--per-arena"], ["leaks"], ["report"], ["nmt"]]
C0 = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]")
UNSAFE = re.compile("[\x80-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def run_bytes(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python3 -m heapwalk ARGS`` with stdout/stderr as bytes (nothing decoded for us)."""
    return subprocess.run([sys.executable, "-m", "heapwalk", *map(str, args)], cwd=str(cwd),
                          env=heapwalk_env(), capture_output=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)


def assert_clean_bytes(data: bytes, what: str) -> str:
    """Byte-level: UTF-8, no C0 but the newline, no DEL, no C1, no bidi control; the text."""
    text = data.decode("utf-8")  # strict: a raw \xff (or a lone C1 byte) fails here
    bad = C0.search(data)
    assert bad is None, "%s: raw byte %r in %r" % (what, bad.group(), data[:3000])
    bad_char = UNSAFE.search(text)
    assert bad_char is None, "%s: raw %r in %r" % (what, bad_char.group(), text[:3000])
    assert "Traceback" not in text, "%s: a traceback\n%s" % (what, text[-3000:])
    assert "internal error" not in text, "%s: %s" % (what, text[-3000:])
    return text


def assert_run_clean(r: subprocess.CompletedProcess, what: str) -> tuple[str, str]:
    out = assert_clean_bytes(r.stdout, what + " (stdout)")
    err = assert_clean_bytes(r.stderr, what + " (stderr)")
    assert r.returncode in (0, 1), "%s: exit %d\n%s\n%s" % (what, r.returncode, out[-2000:], err[-2000:])
    if r.returncode == 1 and not out:
        lines = [ln for ln in err.splitlines() if ln and not ln.startswith("hint:")]
        assert len(lines) == 1, "%s: expected one error line:\n%s" % (what, err)
    return out, err


def rename_bytes(img: ck.CoreImage, old: str, new: bytes) -> int:
    """Every NT_FILE path equal to ``old`` rewritten with ``new`` (same length, any bytes)."""
    assert len(new) == len(old.encode()), (new, old)
    n = 0
    for f in img.file_entries():
        if f.path == old:
            img.b[f.path_offset:f.path_offset + len(new)] = new
            n += 1
    return n


def fit(payload: bytes, like: str) -> bytes:
    """``payload`` padded with 'x' (or cut) to the byte length of path ``like``."""
    size = len(like.encode())
    return payload[:size] if len(payload) >= size else payload + b"x" * (size - len(payload))


class Cores:
    """The derived cores, made once per module."""

    def __init__(self, src: Path, binary: Path, tmp: Path):
        self.src, self.binary, self.tmp = src, binary, tmp
        r = run_bytes("chunks", src, "--used", "--json", "--limit", "0", cwd=REPO)
        assert r.returncode == 0, r.stderr
        chunks = sorted(json.loads(r.stdout)["chunks"], key=lambda c: c["address"])
        # Every in-use heap chunk but the first (the tcache struct): the first one the walk
        # meets is the one the classifier samples.
        self.victims = [(c["address"], c["size"]) for c in chunks if c["state"] == "used"][1:]
        assert len(self.victims) > 2, "no in-use chunk to write text into"
        img = ck.CoreImage.load(src)
        files = img.file_entries()
        self.exe = next(f.path for f in files if Path(f.path).name == binary.name)
        self.exe_start = min(f.start for f in files if f.path == self.exe)
        self.libc = next(f.path for f in files if "/libc.so" in f.path)

    def derive(self, name: str, rename: dict[str, bytes], text: bytes | None) -> Path:
        def edit(img: ck.CoreImage) -> None:
            for old, new in rename.items():
                assert rename_bytes(img, old, fit(new, old)), old
            if text is None:
                return
            # The first chunk points into the program (class "references <its file name>"),
            # the others hold the text (cut to what fits; too small: zeros).
            first, size = self.victims[0]
            off = img.offset_of(first + 16)
            img.b[off:off + size - 16] = struct.pack("<Q", self.exe_start + 0x10) + b"\0" * (size - 24)
            for v, size in self.victims[1:]:
                usable = size - 16
                data = text[:usable - 1] + b"\0" if usable > 40 else b""
                off = img.offset_of(v + 16)
                img.b[off:off + usable] = data + b"\0" * (usable - len(data))
        return ck.derive(self.src, self.tmp / (name + ".core"), edit)


@pytest.fixture(scope="module")
def cores(corpora, tmp_path_factory) -> Cores:
    c = corpora.core("arenas", "1", "0")
    return Cores(c.core, c.binary, tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def names_core(cores) -> Path:
    """The program's own path and the Latin-1 text: what every command is run on."""
    return cores.derive("names", {cores.exe: NAME_PAYLOAD}, TEXTS["latin1"][0])


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_every_command_on_hostile_names(names_core, cmd, json_out):
    r = run_bytes(*cmd, names_core, *(["--json"] if json_out else []))
    out, _err = assert_run_clean(r, " ".join(cmd))
    if json_out and out:
        doc = json.loads(out)
        assert doc["schema"] == "heapwalk/1"


#: The program's file name (what "references ..." names) as text and JSON must show it.
BASE_ESCAPED = NAME_ESCAPED[len("/t/"):]
BASE_JSON = ("\\u001b]0;pwned\\u0007\\n warning: FAKE all clear\\r\\u202e\\u009b\\u009d\\\\xff"
             "\\u001b[2J")


def test_escaped_names_are_shown(names_core):
    """classify names the program a chunk points into: escaped, on one line, no forged line;
    in JSON, as JSON escapes (the \\xff byte as the text \\xff)."""
    for cmd in (["classify"], ["report"]):
        out, _ = assert_run_clean(run_bytes(*cmd, names_core), cmd[0])
        assert "references " + BASE_ESCAPED in out, out
        assert not any(ln.lstrip().startswith("warning: FAKE") for ln in out.splitlines()), out
    out, _ = assert_run_clean(run_bytes("classify", names_core, "--json"), "classify --json")
    assert "references " + BASE_JSON in out, out
    names = [c["name"] for c in json.loads(out)["classes"]]
    assert any(n.startswith("references \x1b]0;pwned\x07\n") and "\\xff" in n for n in names), names


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_classify_samples_of_hostile_text(cores, names_core, kind):
    text, shown = TEXTS[kind]
    core = names_core if kind == "latin1" else cores.derive(kind, {}, text)
    out, _ = assert_run_clean(run_bytes("classify", core), "classify " + kind)
    assert shown in out, out
    out, _ = assert_run_clean(run_bytes("classify", core, "--json"), "classify --json " + kind)
    doc = json.loads(out)
    samples = [c.get("sample") for c in doc["classes"] if c["name"] == "text"]
    assert samples == [text[:40].decode("utf-8", "backslashreplace")], doc["classes"]
    out, _ = assert_run_clean(run_bytes("report", core, "--json"), "report --json " + kind)
    report = json.loads(out)
    assert any(c["name"] == "text" for c in report["content_classes"]), "report dropped its classes"
    assert not [d for d in report["diagnostics"] if "classes unavailable" in d.get("detail", "")]
    assert_run_clean(run_bytes("leaks", core), "leaks " + kind)


def test_nmt_names_a_hostile_libjvm(cores):
    """A mapping named ``<escapes>/libjvm.so``: nmt and report take it for a JVM and name the
    file (the JVM line, a note that it has no symbols): escaped, in text, JSON and errors."""
    name = NAME_PAYLOAD + b"/libjvm.so"
    size = len(cores.exe.encode())
    jvm = name[:len(NAME_PAYLOAD)] + b"x" * (size - len(name)) + b"/libjvm.so"
    core = cores.derive("jvmname", {cores.exe: jvm}, None)
    out, _ = assert_run_clean(run_bytes("nmt", core), "nmt (libjvm named with escapes)")
    assert NAME_ESCAPED in out, out
    assert not any(ln.lstrip().startswith("warning: FAKE") for ln in out.splitlines()), out
    out, _ = assert_run_clean(run_bytes("nmt", core, "--json"), "nmt --json")
    assert json.loads(out)["nmt"]["libjvm"]["path"].endswith("/libjvm.so")
    for cmd in (["nmt", "--detail"], ["report"], ["report", "--json"]):
        assert_run_clean(run_bytes(*cmd, core), " ".join(cmd) + " (libjvm named with escapes)")


def test_live_process_mapping_a_hostile_name(tmp_path):
    """A live process can name its mappings too: a library loaded from a directory whose name
    carries escapes (and \\xff), called libjvm.so so that nmt names it."""
    d = bytes(tmp_path) + b"/\x1b]0;pwned\x07 warning\xe2\x80\xae\xc2\x9b\xff\x1b[2J"
    os.mkdir(d)
    lib = d + b"/libjvm.so"
    shutil.copyfile("/lib/x86_64-linux-gnu/libz.so.1", lib)
    code = ("import ctypes, os, sys, time; ctypes.CDLL(os.fsdecode(sys.argv[1].encode("
            "'utf-8', 'surrogateescape'))); print('ready', flush=True); time.sleep(300)")
    proc = subprocess.Popen([b"/usr/bin/python3", b"-c", code.encode(), lib], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        for cmd in (["nmt"], ["nmt", "--json"], ["report"], ["classify"]):
            r = run_bytes(*cmd, "--pid", str(proc.pid))
            out, _ = assert_run_clean(r, " ".join(cmd) + " --pid (a hostile mapping name)")
            if cmd == ["nmt"]:
                assert "\\x1b]0;pwned\\x07 warning\\u202e\\x9b\\xff\\x1b[2J/libjvm.so" in out, out
        assert proc.poll() is None, "the target died"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def jvm_core(tmp_path_factory) -> Path:
    import nmtkit  # noqa: PLC0415
    if not nmtkit.have_jdk():
        pytest.skip("no JDK")
    return nmtkit.JvmCorpora(CACHE, tmp_path_factory.mktemp("jvm")).core("summary").core


def test_nmt_with_a_hostile_jdk_version(jvm_core, tmp_path):
    """The JDK version string (in the JVM's heap) with an escape, a newline, \\xff and U+202E:
    nmt and report show it escaped (item 7: a bad byte in it must not break nmt)."""
    r = run_bytes("nmt", jvm_core, "--json")
    assert r.returncode == 0, r.stderr
    jdk = json.loads(r.stdout)["nmt"]["jdk"].encode()
    assert len(jdk) >= 18, jdk
    evil = jdk[:5] + b"\x1b]0;p\x07\n\xff\xe2\x80\xaex" + jdk[17:]  # 12 bytes for 12
    shown = jdk[:5].decode() + "\\x1b]0;p\\x07\\n\\xff\\u202ex" + jdk[17:].decode()
    core = tmp_path / "jdk.core"
    subprocess.run(["cp", "--sparse=always", str(jvm_core), str(core)], check=True)
    n = 0
    with open(core, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        pos = m.find(jdk + b"\0")
        while pos >= 0:
            m[pos:pos + len(jdk)] = evil
            n += 1
            pos = m.find(jdk + b"\0", pos + 1)
    assert n, "the version string is not in the core"
    out, _ = assert_run_clean(run_bytes("nmt", core), "nmt (hostile JDK version)")
    assert "JVM " + shown in out, out
    out, _ = assert_run_clean(run_bytes("nmt", core, "--json"), "nmt --json (hostile JDK version)")
    assert json.loads(out)["nmt"]["categories"], "nmt lost its categories"
    out, _ = assert_run_clean(run_bytes("report", core), "report (hostile JDK version)")
    assert "JDK " + shown in out, out
    assert_run_clean(run_bytes("report", core, "--json"), "report --json (hostile JDK version)")


def test_libc_with_a_hostile_name(cores):
    """libc's own path rewritten: found by build-id or from memory, or one clean error line."""
    core = cores.derive("libc", {cores.libc: NAME_PAYLOAD}, None)
    for cmd in (["arenas"], ["arenas", "--json"], ["report"], ["classify"]):
        assert_run_clean(run_bytes(*cmd, core), " ".join(cmd) + " (libc renamed)")


def test_html_report_of_hostile_names(names_core, tmp_path):
    page = tmp_path / "r.html"
    assert_run_clean(run_bytes("report", names_core, "--html", page), "report --html")
    html = page.read_bytes()
    assert_clean_bytes(html.replace(b"\n", b""), "the HTML page")
    assert ("references " + BASE_ESCAPED).encode() in html
    assert b"script-src 'sha256-" in html and b"'unsafe-inline'; img" not in html


def test_error_naming_a_hostile_file(tmp_path):
    """A core path with escapes in an error line: escaped, one line."""
    name = tmp_path / "core\x1b]0;x\x07\n warning: FAKE\u202e"
    name.write_bytes(b"not a core")
    r = run_bytes("arenas", name)
    _, err = assert_run_clean(r, "arenas on a text file")
    assert r.returncode == 1 and "\\x1b]0;x\\x07\\n warning: FAKE\\u202e" in err, err


# -- diff ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(names_core, tmp_path_factory) -> Path:
    r = run_bytes("report", names_core, "--json")
    assert r.returncode in (0, 1), r.stderr
    path = tmp_path_factory.mktemp("saved") / "names.json"
    path.write_bytes(r.stdout)
    return path


def test_diff_of_hostile_reports(saved, tmp_path):
    doc = json.loads(saved.read_text())
    doc["mappings"]["groups"].append({"label": "\x1b]52;c;cHduZWQ=\x07\n warning: FAKE \u202e\x9d",
                                      "kind": "file\x1b[2J", "mapped_bytes": 4096, "regions": 1,
                                      "resident_bytes": None, "arena": None})
    doc["content_classes"].append({"name": "evil\r\x1b[31m\u2066", "kind": "c++\x7f",
                                   "count": 1, "bytes": 64})
    doc["verdict"].append({"cause": "fake\n verdict: all clear\x1b]0;t\x07"})
    b = tmp_path / "b.json"
    b.write_text(json.dumps(doc))
    for extra in ([], ["--json"]):
        out, _ = assert_run_clean(run_bytes("diff", saved, b, *extra), "diff " + " ".join(extra))
        if not extra:
            assert "\\x1b]52;c;cHduZWQ=\\x07\\n warning: FAKE \\u202e\\x9d" in out, out
            assert "evil\\r\\x1b[31m\\u2066" in out and "fake\\n verdict: all clear" in out, out
            assert not any(ln.startswith(" verdict: all clear") for ln in out.splitlines())
        else:
            json.loads(out)


@pytest.mark.parametrize("case", ["types", "deep", "huge", "nan", "missing", "bad-utf8", "list"])
def test_diff_on_hostile_json_names_the_file(saved, tmp_path, case):
    doc = json.loads(saved.read_text())
    if case == "types":
        doc["retention"]["arenas"] = {"0": doc["retention"]["arenas"]}
        data = json.dumps(doc).encode()
    elif case == "deep":
        data = b'{"schema": "heapwalk/1", "command": "report", "retention": ' + b"[" * 200000 + b"]" * 200000 + b"}"
    elif case == "huge":
        doc["glibc"]["system_bytes"] = 10 ** 400
        data = json.dumps(doc).encode()
    elif case == "nan":
        doc["retention"]["in_use_bytes"] = float("nan")
        data = json.dumps(doc).encode()
    elif case == "missing":
        data = json.dumps({"schema": "heapwalk/1", "command": "report", "retention": {},
                           "mappings": {"groups": [{"kind": "x"}]}}).encode()
    elif case == "bad-utf8":
        data = b'{"schema": "heapwalk/1", "command": "report\xff"}'
    else:
        data = b"[" + json.dumps(doc).encode() + b"]"
    bad = tmp_path / ("hostile-%s.json" % case)
    bad.write_bytes(data)
    for a, b in ((saved, bad), (bad, saved)):
        r = run_bytes("diff", a, b)
        _, err = assert_run_clean(r, "diff %s" % case)
        assert r.returncode == 1, err
        first = err.splitlines()[0]
        assert first.startswith("heapwalk: %s: " % bad), err
        assert str(saved) not in first, err


# -- gdb ----------------------------------------------------------------------------------------


def test_gdb_output_is_escaped(cores, names_core):
    """Inside gdb: the command output and the error lines (gdb's own warnings about the files
    the core names are gdb's, so only what lies between the markers is checked)."""
    if ASAN_PRELOAD:
        pytest.skip("gdb cannot host the ASan build (it hangs with libasan preloaded)")
    cmds = ["report", "classify", "arenas", "nmt", "leaks", "report --json", "classify --json",
            "chunk 0x10"]
    argv = ["gdb", "-nx", "-batch", "-x", str(GDBINIT)]
    for c in cmds:
        argv += ["-ex", "echo @@begin %s\\n" % c, "-ex", "heapwalk " + c, "-ex", "echo @@end\\n"]
    argv += [str(cores.binary), str(names_core)]
    r = subprocess.run(argv, cwd="/", env=heapwalk_env(), capture_output=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    both = r.stdout + b"\n" + r.stderr
    sections = re.findall(rb"@@begin ([^\n]*)\n(.*?)@@end", r.stdout, re.S)
    assert len(sections) == len(cmds), both[-4000:]
    for name, body in sections:
        assert_clean_bytes(body, "gdb heapwalk %s" % name.decode())
    # Errors go to stderr: each heapwalk line there must be clean too.
    for line in r.stderr.split(b"\n"):
        if line.startswith(b"heapwalk:") or line.startswith(b"hint:"):
            assert_clean_bytes(line, "gdb error line")
    report = sections[0][1].decode()
    assert "references " + BASE_ESCAPED in report, report
    assert TEXTS["latin1"][1] in sections[1][1].decode()
