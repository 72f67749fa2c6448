"""Fuzz harness for the text renderers (issue 14: hostile cores must not reach a terminal raw).

Sample documents shaped like the engine's (every string field a renderer reads), with random
hostile strings put into every string field: C0 controls, ESC sequences (OSC 0 title, OSC 52
clipboard, CSI), DEL, C1 (U+009B CSI, U+009D OSC), bidi overrides and isolates, line
separators, lone surrogates, and random bytes decoded the way the bindings decode them
(``backslashreplace``) or otherwise (``surrogateescape``, Latin-1).  Each document goes through
the path every front end uses (``commands.execute`` with a stub engine behind the real
``heapwalk.target.Target``; ``diff`` through saved report files), in text (plain and coloured)
and JSON, plus ``errors.describe_error`` and the HTML report.  Asserted: no control character
out (only ``\\n`` between lines, only Style's own colour codes when colour is on), JSON that
parses back to the same document, one-line errors.  Fixed seed; HEAPWALK_FUZZ_ITERATIONS
overrides the iteration count (e.g. a long run: 200000)."""

from __future__ import annotations

import copy
import json
import os
import random
import re
from typing import Any, Callable, Dict, List, Optional

import pytest

from heapwalk import commands as registry
from heapwalk import cmd_diff, render, report_html
from heapwalk.commands import Invocation
from heapwalk.errors import HeapwalkError, describe_error
from heapwalk.render import Style
from heapwalk.target import Target

import fake_native

ITERATIONS = int(os.environ.get("HEAPWALK_FUZZ_ITERATIONS", "3000"))
SEED = 0x14_2026

A0, A1, H0 = 0x7FFFF7E19C80, 0x7FFFF0000030, 0x555555559000

# -- hostile strings --------------------------------------------------------------------------

HOSTILE = [
    "\x1b]0;pwned\x07", "\x1b]52;c;ZWNobyBwd25lZA==\x07", "\x1b[2J", "\x1b[31m", "\x1b[0m",
    "\n warning: FAKE all clear", "\r", "\rheapwalk: ok", "\t", "\x00", "\x7f", "\x9b2J",
    "\x9d0;t\x9c", "\x85", "\u202e", "\u202a", "\u2066", "\u2069", "\u200f", "\u2028",
    "\u2029", "\udcff", "\ud800", "\\x1b", "%s%d", "{}", "é", "€", "中文", "\U0001F600",
    "libc.so.6", "/usr/lib/x86_64-linux-gnu/libjvm.so", "Java Heap", "\x1b", "\x08\x08\x08",
]
#: Every character text output must never carry raw (lines are split on "\n" first).
FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                       "\u2066-\u2069\ud800-\udfff]")
OWN_SGR = re.compile("\x1b\\[(?:0|1|2|31|32|33|34|36|1;4)m")


def hostile(rng: random.Random) -> str:
    """A random string built to break a terminal."""
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(rng.choice(HOSTILE) for _ in range(rng.randrange(1, 5)))
    if kind == 1:  # any code point below U+3000, surrogates included
        return "".join(chr(rng.randrange(0x3000)) for _ in range(rng.randrange(0, 40)))
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 48)))
    if kind == 2:
        return raw.decode("utf-8", "backslashreplace")  # what the bindings produce
    if kind == 3:
        return raw.decode("utf-8", "surrogateescape")
    if kind == 4:
        return raw.decode("latin-1")
    return "name" + rng.choice(HOSTILE) + "tail"


def mutate(doc: Any, rng: random.Random, rate: float) -> Any:
    """A copy of ``doc`` with (a ``rate`` share of) its string values replaced."""
    if isinstance(doc, dict):
        return {k: mutate(v, rng, rate) for k, v in doc.items()}
    if isinstance(doc, list):
        return [mutate(v, rng, rate) for v in doc]
    if isinstance(doc, str) and rng.random() < rate:
        return hostile(rng)
    return doc


# -- sample documents (the engine's shapes, see native/bindings/API.md) -------------------------

def _diag(kind: str = "note", detail: str = "libc debug symbols found by build-id") -> Dict[str, Any]:
    return {"kind": kind, "address": A0 + 0x40, "arena": A0, "detail": detail}


DIAGS = [_diag(), _diag("corrupt-size", "chunk size 0x4141 beyond the heap (file /lib/libc.so.6)")]


def _classes() -> List[Dict[str, Any]]:
    return [{"name": "std::string", "kind": "c++", "count": 12, "bytes": 4096, "example": H0 + 0x10},
            {"name": "text", "kind": "content", "count": 3, "bytes": 300, "example": H0 + 0x90,
             "sample": "GET /index.html HTTP/1.1\r\nHost: x"},
            {"name": "references libz.so.1", "kind": "module", "count": 1, "bytes": 64,
             "example": None}]


def _report_engine() -> Dict[str, Any]:
    return {
        "schema": "heapwalk/1",
        "target": {"kind": "core", "path": "/tmp/core.1234", "pid": None, "threads": 4},
        "retention": {"in_use_bytes": 10 << 20, "free_bytes": 90 << 20, "trimmable_bytes": 80 << 20,
                      "tcache_bytes": 1000, "top_bytes": 5000, "fastbin_bytes": 64, "bin_bytes": 90 << 20,
                      "fragment_bytes": 40 << 20, "top_kept_bytes": 0, "released_bytes": 4096,
                      "trim_range_bytes": 80 << 20, "residency_source": "core",
                      "residency_detail": "from /proc/1234/pagemap",
                      "residency": {"trim_ranges": {"zero": 4096, "unsaved": 0}},
                      "params": {"trim_threshold": 131072, "top_pad": 131072, "mmap_threshold": 131072,
                                 "arena_max": 0},
                      "arenas": [{"index": 0, "main": True, "threads": 1, "system_bytes": 50 << 20,
                                  "in_use_bytes": 5 << 20, "free_bytes": 45 << 20,
                                  "trimmable_bytes": 40 << 20, "top_bytes": 5000},
                                 {"index": 1, "main": False, "threads": 3, "system_bytes": 50 << 20,
                                  "in_use_bytes": 5 << 20, "free_bytes": 45 << 20,
                                  "trimmable_bytes": 40 << 20, "top_bytes": 0}]},
        "pressure": {"arenas": 16, "limit": 16, "limit_source": "8 x cores (affinity)", "cores": 2,
                     "cores_source": "sched_getaffinity", "threads": 40, "max_threads_per_arena": 3,
                     "heaps": 15, "heap_bytes": 60 << 20, "heap_reserved_bytes": 960 << 20},
        "glibc": {"version": "2.36", "system_bytes": 100 << 20, "mmapped_bytes": 1 << 20,
                  "mmapped_count": 1},
        "mappings": {"mapped_bytes": 2 << 30, "resident_bytes": None, "resident_source": "none",
                     "groups": [{"label": "glibc main heap", "kind": "glibc-main-heap",
                                 "mapped_bytes": 50 << 20, "resident_bytes": None, "regions": 1,
                                 "arena": A0},
                                {"label": "/usr/lib/x86_64-linux-gnu/libc.so.6", "kind": "library",
                                 "mapped_bytes": 2 << 20, "resident_bytes": None, "regions": 5,
                                 "arena": None}]},
        "nmt": {"level": "summary", "jdk": "17.0.21+7-Debian-1deb12u1",
                "categories": [{"name": "Java Heap", "reserved": 1 << 30, "committed": 1 << 29,
                                "malloc": 0},
                               {"name": "Class", "reserved": 1 << 20, "committed": 1 << 20,
                                "malloc": 4096}],
                "total_reserved": 2 << 30, "total_committed": 1 << 30, "malloc_bytes": 1 << 20,
                "untracked_malloc": {"bytes": 100 << 20, "count": 1000}},
        "diagnostics": DIAGS,
    }


def _nmt() -> Dict[str, Any]:
    frames = [{"pc": 0x7F0000001000, "symbol": "libjvm.so!os::malloc(unsigned long)+0x1f"},
              {"pc": 0x7F0000002000, "symbol": ""}]
    return {"schema": "heapwalk/1", "nmt": {
        "level": "detail", "jdk": "17.0.21+7", "source": "NMT's snapshot in libjvm.so",
        "layout": "JDK 17 (MallocHeader 16 bytes)", "names_from": "libjvm.so .rodata",
        "libjvm": {"path": "/usr/lib/jvm/java-17/lib/server/libjvm.so", "base": 0x7F0000000000,
                   "build_id": "abcdef", "symbols": "/usr/lib/debug/.build-id/ab/cdef.debug"},
        "categories": [{"name": "Java Heap", "reserved": 1 << 30, "committed": 1 << 29,
                        "malloc": {"bytes": 0, "count": 0}, "arena": {"bytes": 0, "count": 0},
                        "mmap": {"reserved": 1 << 30, "committed": 1 << 29}},
                       {"name": "Thread", "reserved": 1 << 20, "committed": 1 << 19,
                        "malloc": {"bytes": 4096, "count": 3}, "arena": {"bytes": 100, "count": 1},
                        "mmap": {"reserved": 0, "committed": 0},
                        "stack": {"reserved": 1 << 20, "committed": 1 << 16}, "threads": 12,
                        "tracking_overhead": 256}],
        "total": {"reserved": 2 << 30, "committed": 1 << 30, "malloc": {"bytes": 4096, "count": 3},
                  "mmap": {"reserved": 1 << 30, "committed": 1 << 29}},
        "untracked_malloc": {"bytes": 1 << 20, "count": 10},
        "headers": {"layout": "MallocHeader (JDK 17)",
                    "categories": [{"index": 2, "name": "Thread", "bytes": 4096, "count": 3}],
                    "chunks": {"bytes": 4096, "count": 3}, "untracked_sizes": []},
        "glibc": {"arenas": 2, "system": 1 << 24, "in_use": 1 << 23, "in_use_count": 100,
                  "free": 1 << 22, "top": 1 << 20, "mmapped": 1 << 20, "mmapped_count": 1},
        "reconciliation": [{"what": "Java Heap", "bytes": 1 << 30},
                           {"what": "total mapped", "bytes": 2 << 30}],
        "sites": [{"frames": frames, "category": "Thread", "bytes": 4096, "count": 3}],
        "regions": [{"base": 0x7F1000000000, "size": 1 << 20, "committed": 1 << 16,
                     "category": "Thread", "frames": frames,
                     "committed_regions": [{"base": 0x7F1000000000, "size": 1 << 16,
                                            "frames": frames}]}]},
        "diagnostics": DIAGS}


def _leaks() -> Dict[str, Any]:
    sizes = [{"size": 32, "count": 2, "bytes": 64}]
    return {"schema": "heapwalk/1", "nodes": {"count": 100, "bytes": 10000},
            "reachable": {"count": 98, "bytes": 9936},
            "leaked": {"count": 2, "bytes": 64, "sizes": sizes, "chunks": [H0 + 0x10],
                       "classes": _classes(),
                       "listed": [{"address": H0 + 0x10, "size": 32, "state": "used", "arena": A0,
                                   "unreferenced": True}],
                       "truncated": False, "arenas": [{"arena": A0, "count": 1, "bytes": 32},
                                                      {"arena": None, "count": 1, "bytes": 32}]},
            "unreferenced": {"count": 1, "bytes": 32, "sizes": sizes},
            "roots": [{"kind": "registers", "ranges": 4, "bytes": 0, "unreadable": 0},
                      {"kind": "stack", "ranges": 4, "bytes": 1 << 20, "unreadable": 4096}],
            "anon_roots": False, "words_scanned": 1000, "seconds": 0.01, "diagnostics": DIAGS}


def _classify() -> Dict[str, Any]:
    return {"schema": "heapwalk/1", "chunks": 100, "vtable_symbols": 3, "classes": _classes(),
            "free_classes": _classes(),
            "arenas": [{"arena": A0, "classes": _classes(), "free_classes": _classes()},
                       {"arena": None, "classes": _classes()}],
            "diagnostics": DIAGS}


def _with_strings(doc: Dict[str, Any]) -> Dict[str, Any]:
    """The fake engine's canned documents, given string fields where the engine has them."""
    doc = copy.deepcopy(doc)
    doc.setdefault("diagnostics", []).extend(copy.deepcopy(DIAGS))
    glibc = doc.get("glibc")
    if isinstance(glibc, dict):
        glibc.update({"libc": "/lib/x86_64-linux-gnu/libc.so.6", "debug_file": "/usr/lib/debug/x",
                      "version_source": "libc's .rodata", "build_id": "00ff"})
    return doc


class StubEngine:
    """The engine behind ``heapwalk.target.Target``: returns the documents it is given."""

    def __init__(self, docs: Dict[str, Any]) -> None:
        self.docs = docs

    def _doc(self, name: str) -> Any:
        return copy.deepcopy(self.docs[name])

    def describe(self) -> Dict[str, Any]:
        return {"kind": "core", "path": "/tmp/core", "pid": None, "threads": [], "modules": [],
                "diagnostics": []}

    def arenas(self) -> Any:
        return self._doc("arenas")

    def bins(self, arena: Optional[int] = None) -> Any:
        return self._doc("bins")

    def tcache(self, lwp: Optional[int] = None) -> Any:
        return self._doc("tcache")

    def chunks(self, arena: Optional[int] = None, state: str = "all", limit: Optional[int] = None) -> Any:
        return self._doc("chunks")

    def chunk(self, addr: int) -> Any:
        return self._doc("chunk")

    def classify(self, arena: Optional[int] = None, free: bool = False, top: Optional[int] = None) -> Any:
        return self._doc("classify")

    def leaks(self, **_kw: Any) -> Any:
        return self._doc("leaks")

    def size_classes(self) -> Any:
        return [{"size": 32, "count": 10, "bytes": 320}, {"size": 4096, "count": 1, "bytes": 4096}]

    def nmt(self, detail: bool = False) -> Any:
        return self._doc("nmt")

    def report(self, residency: bool = True) -> Any:
        return self._doc("report")

    def close(self) -> None:
        pass


def base_docs() -> Dict[str, Any]:
    native = fake_native.FakeNative()
    t = native.open_core("/tmp/core")
    return {"arenas": _with_strings(t.arenas()), "bins": _with_strings(t.bins()),
            "tcache": _with_strings(t.tcache()), "chunks": _with_strings(t.chunks()),
            "chunk": _with_strings(t.chunk(fake_native.HEAP + 0x20)),
            "classify": _classify(), "leaks": _leaks(), "nmt": _nmt(), "report": _report_engine()}


#: The documents each command reads (the others stay intact).
READS = {"arenas": ["arenas", "bins"], "heaps": ["arenas"], "bins": ["bins"],
         "tcache": ["tcache", "bins"], "chunks": ["chunks", "bins"], "chunk": ["chunk", "bins"],
         "nmt": ["nmt"], "classify": ["classify", "bins"], "leaks": ["leaks", "bins"],
         "report": ["report", "classify"]}
COMMAND_ARGS = {"arenas": [], "heaps": [], "bins": [], "tcache": [], "chunks": ["--limit", "0"],
                "chunk": ["0x7ffff0000020"], "nmt": ["--detail"],
                "classify": ["--free", "--per-arena"], "leaks": ["--largest"], "report": []}


# -- checks -----------------------------------------------------------------------------------

def assert_clean_text(text: str, what: str, colour: bool = False) -> None:
    """No control character but the newlines between lines; colour: only Style's codes."""
    assert "\r" not in text, "%s: a carriage return in %r" % (what, text[:2000])
    for line in text.split("\n"):
        shown = OWN_SGR.sub("", line) if colour else line
        bad = FORBIDDEN.search(shown)
        assert bad is None, "%s: raw %r in line %r" % (what, bad.group(), line)


def assert_clean_json(text: str, document: Any, what: str) -> None:
    body = text.replace("\n", "")
    bad = FORBIDDEN.search(body)
    assert bad is None, "%s: raw %r in JSON" % (what, bad.group())
    # As json.dumps' own escapes would give it back (two lone surrogates in a row come back as
    # one astral character either way; the engine's strings never carry surrogates).
    assert json.loads(text) == json.loads(json.dumps(document)), "%s: not the document" % what


def run_command(name: str, engine: StubEngine, json_out: bool, colour: bool) -> registry.Output:
    command = registry.COMMANDS[name]
    parser = registry.build_parser(command, "heapwalk " + name)
    args = parser.parse_args(COMMAND_ARGS[name] + (["--json"] if json_out else []))
    target = Target(engine, "/tmp/core", "core")
    return registry.execute(command, Invocation(target, args, style=Style(colour)))


# -- the harness ------------------------------------------------------------------------------

def test_safe_escapes_every_forbidden_character() -> None:
    for code in list(range(0x20)) + list(range(0x7F, 0xA0)) + [0x61C, 0x200E, 0x200F, 0x2028,
                                                               0x2029] + \
            list(range(0x202A, 0x202F)) + list(range(0x2066, 0x206A)) + [0xD800, 0xDCFF]:
        out = render.safe("a%sb" % chr(code))
        assert FORBIDDEN.search(out) is None and out.startswith("a\\") and out.endswith("b"), hex(code)
    assert render.safe("\x1b]0;t\x07") == "\\x1b]0;t\\x07"
    assert render.safe("a\nb\r\t") == "a\\nb\\r\\t"
    assert render.safe("\u202egnp.exe") == "\\u202egnp.exe"
    assert render.safe("\x9b") == "\\x9b"
    assert render.safe("héllo wörld €") == "héllo wörld €"  # readable text stays as it is
    doc = {"a": ["x", {"b": "y"}], "n": 1}
    assert render.safe_doc(doc) is doc  # a clean document is not copied


def test_text_renderers_never_emit_control_characters() -> None:
    rng = random.Random(SEED)
    docs = base_docs()
    names = sorted(COMMAND_ARGS)
    for i in range(ITERATIONS):
        name = names[i % len(names)]
        rate = rng.choice((0.2, 0.6, 1.0))
        engine = StubEngine({k: mutate(v, rng, rate) if k in READS[name] else v
                             for k, v in docs.items()})
        colour = rng.random() < 0.3
        what = "%s #%d" % (name, i)
        out = run_command(name, engine, False, colour)
        assert_clean_text(out.text, what, colour)
        if i % 4 == 0:
            out = run_command(name, engine, True, False)
            assert_clean_json(out.text, out.document, what + " --json")


def test_escaped_forms_appear_in_text() -> None:
    """The hostile bytes are shown, escaped: the reader sees that something is there."""
    docs = base_docs()
    docs["report"]["mappings"]["groups"][1]["label"] = "/lib/\x1b]0;pwned\x07\n warning: FAKE\u202e.so"
    out = run_command("report", StubEngine(docs), False, False)
    assert "/lib/\\x1b]0;pwned\\x07\\n warning: FAKE\\u202e.so" in out.text
    assert not any(line.startswith(" warning: FAKE") for line in out.text.split("\n"))
    docs["classify"]["classes"][1]["sample"] = "caf\\xc3 \x9b\r"
    out = run_command("classify", StubEngine(docs), False, False)
    assert "'caf\\xc3 \\x9b\\r'" in out.text
    out = run_command("report", StubEngine(docs), True, False)
    assert "\\u001b]0;pwned\\u0007\\n warning: FAKE\\u202e.so" in out.text


def test_error_lines_never_emit_control_characters() -> None:
    rng = random.Random(SEED + 1)
    makers: List[Callable[[], BaseException]] = [
        lambda: HeapwalkError(hostile(rng), subject=hostile(rng), hint=hostile(rng)),
        lambda: OSError(2, hostile(rng), hostile(rng)),
        lambda: fake_native.FormatError(hostile(rng), hostile(rng)),
        lambda: fake_native.SymbolError(hostile(rng), hostile(rng)),
        lambda: fake_native.FaultError(hostile(rng), 0x1000, 8),
        lambda: ValueError(hostile(rng)),
    ]
    for i in range(ITERATIONS):
        exc = makers[i % len(makers)]()
        line, hint = describe_error(exc, hostile(rng), fake_native.Error, live=bool(i & 1))
        for text in (line, hint or ""):
            assert "\n" not in text
            assert_clean_text(text, "error #%d" % i)


def _saved_report(docs: Dict[str, Any]) -> Dict[str, Any]:
    from heapwalk.cmd_report import build_report  # pylint: disable=import-outside-toplevel
    return build_report(Target(StubEngine(docs), "/tmp/core", "core"))


def test_diff_of_hostile_saved_reports(tmp_path) -> None:
    rng = random.Random(SEED + 2)
    docs = base_docs()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    command = registry.COMMANDS["diff"]
    parser = registry.build_parser(command, "heapwalk diff")
    for i in range(max(ITERATIONS // 10, 50)):
        for path in (a, b):
            doc = mutate(_saved_report(docs), rng, rng.choice((0.3, 1.0)))
            doc["schema"], doc["command"] = "heapwalk/1", "report"
            path.write_text(json.dumps(doc))
        args = parser.parse_args([str(a), str(b)] + (["--json"] if i % 3 == 0 else []))
        out = registry.execute(command, Invocation(None, args))  # type: ignore[arg-type]
        if i % 3 == 0:
            assert_clean_json(out.text, out.document, "diff #%d --json" % i)
        else:
            assert_clean_text(out.text, "diff #%d" % i)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 1 << 63, 1 << 64, (1 << 64) + 1, -(1 << 70), 10 ** 300))
    if kind == 3:
        return rng.choice((0.5, 1e308, -0.0, float("inf"), float("nan")))
    if kind == 4:
        return hostile(rng)
    if kind == 5:
        return rng.randrange(1 << 20)
    if kind == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(("name", "index", "bytes", "count", "label", "cause", "x")):
            _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _scramble(doc: Any, rng: random.Random, rate: float) -> Any:
    """``doc`` with some values (containers too) replaced by random JSON of any type."""
    if rng.random() < rate:
        return _random_json(rng)
    if isinstance(doc, dict):
        return {k: _scramble(v, rng, rate) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_scramble(v, rng, rate) for v in doc]
    return doc


def test_diff_survives_random_structures(tmp_path) -> None:
    """Saved reports with values of random types: diff compares them or refuses one with a
    HeapwalkError; nothing else escapes load, compare or the renderer."""
    rng = random.Random(SEED + 4)
    good = _saved_report(base_docs())
    good_path = tmp_path / "good.json"
    good_path.write_text(json.dumps(good))
    bad_path = tmp_path / "bad.json"
    refused = 0
    for i in range(max(ITERATIONS // 3, 100)):
        rate = rng.choice((0.02, 0.1, 0.3))
        doc = {k: _scramble(v, rng, rate) for k, v in good.items()}
        doc["schema"], doc["command"] = "heapwalk/1", "report"
        doc.setdefault("retention", {})
        bad_path.write_text(json.dumps(doc))
        try:
            a, _ = cmd_diff.load(str(good_path))
            b, _ = cmd_diff.load(str(bad_path))
        except HeapwalkError as exc:
            refused += 1
            line, _hint = describe_error(exc, None)
            assert line.startswith("heapwalk: %s: " % bad_path), line
            continue
        result = cmd_diff.compare(a, b, "A", "B")
        assert_clean_text("\n".join(render.safe_line(ln) for ln in
                                     cmd_diff.render_diff(render.safe_doc(result))), "diff #%d" % i)
        render.to_json(result)
    assert refused, "no scrambled report was refused"


def test_watch_text_never_emits_control_characters() -> None:
    """watch's summary: the kernel's OOM line names the process (its comm, chosen by the
    target), the cgroup path, snapshot files, and the diff of the first and last snapshots.
    Rendered as execute renders every command: an escaped document, every line checked."""
    from heapwalk.cmd_diff import compare  # pylint: disable=import-outside-toplevel
    from heapwalk.cmd_watch import render_watch  # pylint: disable=import-outside-toplevel
    rng = random.Random(SEED + 5)
    report = _saved_report(base_docs())
    doc = {"watch": {"pid": 42, "cgroup": "/sys/fs/cgroup/app.slice",
                     "death": {"signal": 9, "signal_name": "SIGKILL", "oom_killed": True,
                               "oom_kill_before": 0, "oom_kill_after": 1,
                               "last_usage_bytes": 1 << 30, "limit_bytes": 1 << 31,
                               "kernel_log": "Out of memory: Killed process 42 (java) total-vm"}},
           "snapshots": [{"file": "snap-0001.json", "reason": "start",
                          "sample": {"rss_bytes": 1 << 20, "cgroup": {"limit_bytes": 1 << 31,
                                                                      "usage_bytes": 1 << 30}}},
                         {"file": "snap-0002.json", "reason": "threshold 90 %",
                          "sample": {"rss_bytes": 1 << 21}}],
           "diff": compare(report, report, "snap-0001.json", "snap-0002.json")}
    for i in range(max(ITERATIONS // 10, 50)):
        shown = render.safe_doc(mutate(doc, rng, rng.choice((0.3, 1.0))))
        lines = render_watch(shown, Style(bool(i & 1)))
        assert_clean_text("\n".join(render.safe_line(ln, Style(bool(i & 1))) for ln in lines),
                          "watch #%d" % i, colour=bool(i & 1))


# Hostile structures in a saved report: each must be refused with one error naming the file.
HOSTILE_REPORTS: List[Any] = [
    [], [{"schema": "heapwalk/1"}],
    {"schema": ["heapwalk/1"] * 10, "command": "report", "retention": {}},
    {"schema": "heapwalk/1", "command": {"x": 1}, "retention": {}},
    {"schema": "heapwalk/1", "command": "report", "retention": []},
    {"schema": "heapwalk/1", "command": "report", "retention": {"in_use_bytes": "1"}},
    {"schema": "heapwalk/1", "command": "report", "retention": {"in_use_bytes": 10 ** 30}},
    {"schema": "heapwalk/1", "command": "report", "retention": {"in_use_bytes": 1.5}},
    {"schema": "heapwalk/1", "command": "report", "retention": {"arenas": {"0": {}}}},
    {"schema": "heapwalk/1", "command": "report", "retention": {"arenas": [{"index": None}]}},
    {"schema": "heapwalk/1", "command": "report", "retention": {"arenas": [{"index": "0"}]}},
    {"schema": "heapwalk/1", "command": "report", "retention": {}, "target": []},
    {"schema": "heapwalk/1", "command": "report", "retention": {}, "target": {"pid": [1]}},
    {"schema": "heapwalk/1", "command": "report", "retention": {}, "mappings": {"groups": [1]}},
    {"schema": "heapwalk/1", "command": "report", "retention": {},
     "mappings": {"groups": [{"label": ["x"]}]}},
    {"schema": "heapwalk/1", "command": "report", "retention": {}, "nmt": "on"},
    {"schema": "heapwalk/1", "command": "report", "retention": {},
     "nmt": {"categories": [{"name": "x", "malloc": "big"}]}},
    {"schema": "heapwalk/1", "command": "report", "retention": {},
     "size_classes": [{"size": True, "count": 1}]},
    {"schema": "heapwalk/1", "command": "report", "retention": {},
     "content_classes": [{"name": None}]},
    {"schema": "heapwalk/1", "command": "report", "retention": {}, "verdict": [{"cause": 3}]},
    {"schema": "heapwalk/1", "command": "report", "retention": {}, "verdict": "in-use"},
]
HOSTILE_TEXTS = ["[" * 100000 + "]" * 100000, '{"schema": ' * 50000, "{" + "1" * 10000,
                 '{"schema": "heapwalk/1", "command": "report", "retention": {"in_use_bytes": '
                 + "9" * 5000 + "}}", '{"a": NaN, "retention": Infinity}', "{\xff}",
                 '{"schema": "heapwalk/1\\u001b]0;x\\u0007", "command": "report"}']


@pytest.mark.parametrize("case", range(len(HOSTILE_REPORTS) + len(HOSTILE_TEXTS)))
def test_diff_refuses_hostile_structures(tmp_path, run, case) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_saved_report(base_docs())))
    bad = tmp_path / "bad.json"
    if case < len(HOSTILE_REPORTS):
        bad.write_text(json.dumps(HOSTILE_REPORTS[case]))
    else:
        text = HOSTILE_TEXTS[case - len(HOSTILE_REPORTS)]
        bad.write_bytes(text.encode("utf-8", "surrogateescape") if "\xff" not in text
                        else b"{\xff}")
    for a, b in ((good, bad), (bad, good)):
        status, out, err = run("diff", str(a), str(b))
        assert status == 1, (status, out, err)
        lines = [ln for ln in err.splitlines() if not ln.startswith("hint:")]
        assert len(lines) == 1 and lines[0].startswith("heapwalk: %s: " % bad), err
        assert "internal error" not in err and "Traceback" not in err, err
        assert str(good) not in lines[0], err
        assert_clean_text(err, "diff error")


def test_html_report_escapes_hostile_strings() -> None:
    rng = random.Random(SEED + 3)
    docs = base_docs()
    for i in range(max(ITERATIONS // 20, 30)):
        page = report_html.render_html(mutate(_saved_report(docs), rng, 1.0))
        for line in page.split("\n"):
            bad = FORBIDDEN.search(line)
            assert bad is None, "html #%d: raw %r" % (i, bad.group())
        assert "script-src 'sha256-" in page and "unsafe-inline'; img" not in page


def test_cli_error_naming_a_hostile_file(run, tmp_path) -> None:
    name = tmp_path / "core\x1b]0;pwned\x07\n warning: FAKE\u202e"
    status, out, err = run("arenas", str(name))
    assert status == 1 and out == ""
    assert_clean_text(err, "missing core")
    assert "\\x1b]0;pwned\\x07\\n warning: FAKE\\u202e: no such file" in err
    assert len(err.splitlines()) == 1, err

