"""Exit status per diagnostic kind (issue 12 point 2): 0 when the result is complete and exact
(notes and warnings printed with it), 1 when it is incomplete or may be wrong, 2 for usage errors.

The oracle is README's table (kind -> severity -> exit status), parsed here, plus what each case
did to the core: every case derives a core (corruptkit.py) from an intact one with one deliberate
edit whose diagnostic kind is known in advance, and checks that this kind is reported and that
the exit status is the one README gives for the worst severity printed.  The missing-sysroot case
also checks the figures against the program's own malloc_info (the result is exact, so exit 0).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

import corruptkit as ck
from hwkit import REPO, compare_with_oracle, describe, import_heapwalk, no_traceback, run_cli, run_gdb
from test_corruption import Intact

TIMEOUT = 120
STATUS_OF_SEVERITY = {"note": 0, "warning": 0, "error": 1}


def readme_table() -> dict[str, tuple[str, int]]:
    """kind -> (severity, exit status) from README's diagnostic table."""
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| (note|warning|error) \| .+ \| ([012]) \|$", text, re.M)
    assert rows, "README has no diagnostic table"
    return {kind: (sev, int(status)) for kind, sev, status in rows}


TABLE = readme_table()


def expected_status(diags: list[dict]) -> int:
    return max([TABLE.get(d["kind"], ("error", 1))[1] for d in diags] + [0])


def check(r, expect_kind: str | None, what: str) -> dict:
    """The JSON document of `r`: `expect_kind` is among its diagnostics, every diagnostic's
    severity is README's for its kind, and the exit status is README's for the worst one."""
    no_traceback(r)
    assert r.stdout.lstrip().startswith("{"), f"{what}: no JSON\n{describe(r)}"
    doc = json.loads(r.stdout)
    diags = doc.get("diagnostics", [])
    for d in diags:
        assert d["kind"] in TABLE, f"{what}: kind {d['kind']!r} is not in README's table"
        assert d.get("severity") == TABLE[d["kind"]][0], f"{what}: {d}"
    if expect_kind is not None:
        assert any(d["kind"] == expect_kind for d in diags), (
            f"{what}: no {expect_kind} diagnostic\n{json.dumps(diags, indent=1)[:3000]}")
    want = expected_status(diags)
    if expect_kind is not None:
        want = max(want, TABLE[expect_kind][1])
    assert r.returncode == want, f"{what}: exit {r.returncode}, README says {want}\n{describe(r)}"
    return doc


# -- the table itself ---------------------------------------------------------------------------


def test_readme_table_is_the_engines_and_covers_every_kind_the_sources_add():
    kinds = {k["kind"]: k["severity"] for k in import_heapwalk().native().diagnostic_kinds()}
    assert {k: s for k, (s, _) in TABLE.items()} == kinds
    for kind, (sev, status) in TABLE.items():
        assert status == STATUS_OF_SEVERITY[sev], (kind, sev, status)
    added = set()
    for src in (REPO / "native").rglob("*.cpp"):
        added |= set(re.findall(r'\.add\(\s*"([a-z_]+)"', src.read_text()))
    added.add("note")  # Diagnostics::note()
    assert added <= set(TABLE), f"kinds added in native/ but not in README: {added - set(TABLE)}"


# -- cores ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one(corpora) -> Intact:
    return Intact(corpora.core("arenas", "1", "0").core)


@pytest.fixture(scope="module")
def four(corpora) -> Intact:
    return Intact(corpora.core("arenas", "4", "0").core)


@pytest.fixture(scope="module")
def layout():
    return import_heapwalk().native().layout("2.36")  # the host's glibc (safe-linking, 2.36 offsets)


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "edited.core"


# -- 0: notes only, and warnings -----------------------------------------------------------------


def test_intact_core_exits_0(corpora, one):
    c = corpora.core("arenas", "1", "0")
    r = run_cli("arenas", c.core, "--json", timeout=TIMEOUT)
    doc = check(r, None, "intact")
    assert r.returncode == 0
    assert not compare_with_oracle(doc, c)


SYSROOT_COMMANDS = [["arenas"], ["heaps"], ["bins"], ["tcache"], ["chunks", "--limit", "10"],
                    ["classify"], ["leaks", "--limit", "10"], ["report", "--no-classes"], ["nmt"]]


@pytest.mark.parametrize("prog", [("1", "0"), ("4", "0")], ids=["1t", "4t"])
def test_sysroot_without_libc_is_a_warning_and_exact(corpora, tmp_path, prog):
    """--sysroot naming a directory without the core's libc: the symbol-free path finds glibc's
    state; the result equals malloc_info, so every command exits 0 and prints the warning."""
    c = corpora.core("arenas", *prog)
    root = tmp_path / "empty-sysroot"
    root.mkdir()
    r = run_cli("arenas", c.core, "--json", "--sysroot", root, timeout=TIMEOUT)
    doc = check(r, "symbols", "arenas --sysroot")
    assert r.returncode == 0
    problems = compare_with_oracle(doc, c, version_range_ok=True, allowed_diagnostics=("note", "symbols"))
    assert not problems, "\n".join(problems)
    # libc's file is not used; its symbols may still come from the host's debug file (same
    # build-id), else from the image alone.
    assert doc["glibc"]["symbols"]["main_arena"] in ("debug-symtab", "heuristic:arena-ring"), doc["glibc"]
    for cmd in SYSROOT_COMMANDS:
        r = run_cli(*cmd, c.core, "--sysroot", root, timeout=TIMEOUT)
        no_traceback(r)
        assert r.returncode == 0, f"{cmd}: {describe(r)}"
        assert "warning: symbols" in r.stdout, f"{cmd}: the warning is not printed\n{describe(r)}"
        assert "error:" not in r.stdout, describe(r)


def test_diff_inherits_warnings_and_errors(one, out, tmp_path):
    root = tmp_path / "empty-sysroot"
    root.mkdir()
    r = run_cli("diff", one.core, one.core, "--no-classes", "--sysroot", root, "--json", timeout=TIMEOUT)
    doc = check(r, "symbols", "diff with a warning")
    assert r.returncode == 0 and any(d["detail"].startswith("A: ") for d in doc["diagnostics"])
    victim = one.used()[len(one.used()) // 2]
    ck.derive(one.core, out, lambda img: img.put_u64(victim + 8, 0x4141414141414141))
    r = run_cli("diff", one.core, out, "--no-classes", "--json", timeout=TIMEOUT)
    doc = check(r, "bad_size", "diff with a smashed B")
    assert any(d["detail"].startswith("B: ") for d in doc["diagnostics"] if d["kind"] == "bad_size")


# -- 1: one case per error kind --------------------------------------------------------------------


def _fastbin_edit(one: Intact, layout, value_of):
    head = one.main_arena + layout["ms_fastbins"]

    def edit(img: ck.CoreImage) -> None:
        for i in range(layout["nfastbins"]):
            if img.u64(head + 8 * i):
                img.put_u64(head + 8 * i, value_of(img, img.u64(head + 8 * i)))
                return
        pytest.skip("no fastbin in the intact core")
    return edit


def case_bad_size(one, layout):
    victim = one.used()[len(one.used()) // 2]
    return lambda img: img.put_u64(victim + 8, 0x4141414141414141), "arenas", []


def case_cycle(one, layout):
    chunks = one.fastbin(2)
    first, last = chunks[0], chunks[-1]
    return lambda img: img.put_u64(last + 16, ck.protect(last + 16, first)), "arenas", []


def case_bad_fd_bk(one, layout):
    chunks = one.binned(2)
    other = one.used()[1]
    return lambda img: img.put_u64(chunks[1] + 24, other), "bins", []


def case_misaligned(one, layout):
    return _fastbin_edit(one, layout, lambda img, p: p + 8), "arenas", []


def case_outside_heap(one, layout):
    """The fastbin head points into a used chunk's data, at a fake chunk of the bin's size: inside
    the heap, but not on a chunk boundary of the heap walk."""
    big = next(c for c in one.chunks if c["state"] == "used" and c["size"] >= 0x100 and c["address"] != one.chunks[0]["address"])
    head = one.main_arena + layout["ms_fastbins"]

    def edit(img: ck.CoreImage) -> None:
        for i in range(layout["nfastbins"]):
            p = img.u64(head + 8 * i)
            if p:
                fake = big["address"] + 0x40
                img.put_u64(fake + 8, img.u64(p + 8))  # the same size field
                img.put_u64(fake + 16, ck.protect(fake + 16, 0))
                img.put_u64(head + 8 * i, fake)
                return
        pytest.skip("no fastbin in the intact core")
    return edit, "arenas", []


def case_double_free(one, layout):
    """A fastbin chunk is also put at the head of the tcache bin of its size."""
    fb = one.fastbin(1)[0]
    tc = one.arenas["threads"][0]["tcache"]["address"]

    def edit(img: ck.CoreImage) -> None:
        size = img.u64(fb + 8) & ~7
        idx = (size - 32) // 16
        img.put_u64(tc + layout["tc_entries"] + 8 * idx, fb + 16)
        struct.pack_into("<H", img.b, img.offset_of(tc + layout["tc_counts"] + 2 * idx), 1)
        img.put_u64(fb + 16, ck.protect(fb + 16, 0))  # one chunk in both lists
    return edit, "arenas", []


def case_bad_tcache(one, layout):
    """A tcache bin's count says one chunk more than its list holds."""
    tc = one.arenas["threads"][0]["tcache"]["address"]
    b = next((b for b in one.tcache["threads"][0]["bins"] if b["chunks"]), None)
    if b is None:
        pytest.skip("no tcache bin in the intact core")
    idx = b["index"] if "index" in b else (b["size"] - 32) // 16

    def edit(img: ck.CoreImage) -> None:
        off = img.offset_of(tc + layout["tc_counts"] + 2 * idx)
        (n,) = struct.unpack_from("<H", img.b, off)
        struct.pack_into("<H", img.b, off, n + 1)
    return edit, "tcache", []


def case_unreadable(one, layout):
    """The main arena's top chunk header points at an address no segment holds."""
    return lambda img: img.put_u64(one.main_arena + layout["ms_top"], 0x10000), "arenas", []


def case_truncated(one, layout):
    return None, "arenas", []


def case_mmapped_mismatch(one, layout):
    if not one.arenas["mmapped"]["count"]:
        pytest.skip("no mmapped chunk in the intact core")

    def edit(img: ck.CoreImage) -> None:
        n = img.u64(one.mp + layout["mp_n_mmaps"])
        img.put_u64(one.mp + layout["mp_n_mmaps"], (n & ~0xFFFFFFFF) | ((n + 1) & 0xFFFFFFFF))
    return edit, "arenas", []


def case_incomplete(one, layout):
    """Without symbols, the threads' tcache is found by a TLS search for a pointer to a
    tcache_perthread_struct chunk: with that pointer zeroed in every saved mapping outside the
    heap, no method finds it, and the tcache chunks count as in use."""
    tc = one.arenas["threads"][0]["tcache"]["address"]
    heaps = [(h["address"], h["address"] + h["size"]) for a in one.heaps["arenas"] for h in a["heaps"]]

    def edit(img: ck.CoreImage) -> None:
        needle = struct.pack("<Q", tc)
        hits = 0
        for p in img.phdrs():
            if p.type != ck.PT_LOAD or not p.filesz or any(lo <= p.vaddr < hi for lo, hi in heaps):
                continue
            seg = bytes(img.b[p.offset:p.offset + p.filesz])
            for m in re.finditer(re.escape(needle), seg):
                if m.start() % 8 == 0:
                    img.b[p.offset + m.start():p.offset + m.start() + 8] = b"\0" * 8
                    hits += 1
        assert hits, "the tcache pointer was not found outside the heap"
    return edit, "arenas", ["--no-symbols"]


ERROR_CASES = {
    "bad_size": case_bad_size, "cycle": case_cycle, "bad_fd_bk": case_bad_fd_bk,
    "misaligned": case_misaligned, "outside_heap": case_outside_heap,
    "double_free": case_double_free, "bad_tcache": case_bad_tcache, "unreadable": case_unreadable,
    "truncated": case_truncated, "mmapped_mismatch": case_mmapped_mismatch,
    "incomplete": case_incomplete,
}


@pytest.mark.parametrize("kind", list(ERROR_CASES))
def test_error_kind_exits_1(one, layout, out, kind):
    edit, command, extra = ERROR_CASES[kind](one, layout)
    if kind == "truncated":  # cut in the middle of the notes: the file mappings' list is partial
        notes = one.img.note_segment()
        ck.truncate(one.core, out, notes.offset + notes.filesz // 2)
    else:
        ck.derive(one.core, out, edit)
    r = run_cli(command, out, "--json", *extra, timeout=TIMEOUT)
    check(r, kind, f"{kind} ({command} --json)")
    assert r.returncode == 1
    r = run_cli(command, out, *extra, timeout=TIMEOUT)  # text: the same status, an error: line
    no_traceback(r)
    assert r.returncode == 1 and f"error: {kind}" in r.stdout, describe(r)


def test_heap_info_exits_1(four, layout, out):
    """A thread arena's heap_info names another arena."""
    a = next(a for a in four.heaps["arenas"] if not a["main"])
    hp = a["heaps"][0]["address"]
    ck.derive(four.core, out, lambda img: img.put_u64(hp + layout["hi_ar_ptr"], four.main_arena))
    r = run_cli("arenas", out, "--json", timeout=TIMEOUT)
    check(r, "heap_info", "heap_info")
    assert r.returncode == 1


def test_gdb_status_variable(corpora, one, out):
    """$heapwalk_status holds what the CLI would exit with."""
    c = corpora.core("arenas", "1", "0")
    victim = one.used()[len(one.used()) // 2]
    ck.derive(one.core, out, lambda img: img.put_u64(victim + 8, 0x4141414141414141))
    for core, want in ((c.core, 0), (out, 1)):
        r = run_gdb(c.binary, core, commands=["heapwalk arenas", "print $heapwalk_status"], timeout=TIMEOUT)
        no_traceback(r)
        assert re.search(r"^\$1 = %d$" % want, r.stdout, re.M), describe(r)
    r = run_gdb(c.binary, c.core, commands=["heapwalk chunks --limit -1", "print $heapwalk_status"],
                timeout=TIMEOUT)
    assert re.search(r"^\$1 = 2$", r.stdout, re.M), describe(r)


# -- 2: usage errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["chunks", "--limit", "-1"], ["leaks", "--limit", "-1"],
                                  ["classify", "--top", "-1"], ["chunks", "--limit", "x"],
                                  ["arenas", "--no-such-option"], ["chunk"]],
                         ids=["chunks-limit", "leaks-limit", "classify-top", "limit-word", "option",
                              "missing-addr"])
def test_usage_errors_exit_2(one, argv):
    r = run_cli(argv[0], one.core, *argv[1:], timeout=TIMEOUT)
    no_traceback(r)
    assert r.returncode == 2, describe(r)
    assert r.stdout == ""


@pytest.mark.parametrize("pid", ["0", "-1"])
def test_bad_pid_is_a_usage_error(pid):
    r = run_cli("arenas", "--pid", pid, timeout=TIMEOUT)
    assert r.returncode == 2, describe(r)


# -- the case on other glibc versions: kernel cores from Debian chroots -------------------


@pytest.fixture(scope="module")
def vcorpora():
    from hwkit import ChrootCorpora, KernelCores  # noqa: PLC0415 - only this test needs chroots

    k = KernelCores()
    c = ChrootCorpora(k)
    yield c
    c.close()
    k.restore()


@pytest.mark.parametrize("suite", ["bullseye", "trixie", "sid"])
def test_chroot_core_with_empty_sysroot_exits_0(vcorpora, tmp_path, suite):
    """glibc 2.31 / 2.41 / 2.43 kernel cores, --sysroot naming an empty directory: the
    symbol-free path analyses them exactly (malloc_info), so exit 0 with the warning printed."""
    c = vcorpora.core(suite, "arenas", "4", "0")
    root = tmp_path / "empty-sysroot"
    root.mkdir()
    r = run_cli("arenas", c.core, "--json", "--sysroot", root, timeout=TIMEOUT)
    doc = check(r, "symbols", f"{suite} arenas --sysroot")
    assert r.returncode == 0
    problems = compare_with_oracle(doc, c, version=c.version, version_range_ok=True,
                                   allowed_diagnostics=("note", "symbols"))
    assert not problems, f"glibc {c.version}:\n  " + "\n  ".join(problems)
    for cmd in (["report", "--no-classes"], ["classify"], ["chunks", "--limit", "5"]):
        r = run_cli(*cmd, c.core, "--sysroot", root, timeout=TIMEOUT)
        no_traceback(r)
        assert r.returncode == 0 and "warning: symbols" in r.stdout, f"{suite} {cmd}: {describe(r)}"


# -- layout: JDK 21's malloc site table in a chunk of the wrong size ------------------------------


def test_layout_exits_1(tmp_path):
    """JDK 21 keeps its malloc site table in a malloc'd block of 4099 buckets: with that chunk's
    size field saying 4 KiB, the table does not have the shape of the layout (only the buckets
    that fit are read), a `layout` error, exit 1."""
    from chrootjdk import JDK21, ChrootJdkCorpora  # noqa: PLC0415 - chroot JDK only here
    from hwkit import CACHE  # noqa: PLC0415
    from test_nmt_corruption import SparseCore, symtab  # noqa: PLC0415

    jdk = ChrootJdkCorpora(JDK21, CACHE)
    try:
        c = jdk.core("detail")
        core = SparseCore(c.core)
        sym = symtab(jdk.host(JDK21.libjvm))["_ZN15MallocSiteTable6_tableE"]
        table = core.u64(core.libjvm_base() + sym)
        assert table, "no malloc site table pointer in the JDK 21 detail core"
        broken = core.patched(tmp_path / "layout.core", {table - 8: 0x1000 | 1})
        r = run_cli("nmt", broken, "--detail", "--json", "--sysroot", jdk.root, timeout=TIMEOUT * 3)
        check(r, "layout", "nmt --detail (JDK 21, site table chunk 4 KiB)")
        assert r.returncode == 1
        broken.unlink()
    finally:
        jdk.close()
