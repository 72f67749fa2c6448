"""Corruption corpus: cores cut short, missing segments, smashed heaps, looping free lists and
arena rings, and NT_FILE paths that try to leave the sysroot.  Every case must end with
diagnostics or one clear error line, exit status 1 (0 when only notes and warnings are left: the
result is then complete and exact), no traceback, no
sanitizer report, within a bounded time; gdb must stay usable after a broken core; paths named in
a core are only opened under the sysroot and their contents only parsed as ELF.

The broken cores are derived (corruptkit.py) from the small ``arenas 1 0`` core (one arena) and
the ``arenas 4 0`` core (four arenas) the other tests make anyway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import corruptkit as ck
from hwkit import REPO, describe, heapwalk_env, no_traceback, run_cli, run_gdb

TIMEOUT = 60  # seconds: every case must finish well within this (the walk must not loop)
HEAP_COMMANDS = [["arenas", "--json"], ["bins", "--json"], ["tcache", "--json"],
                 ["chunks", "--json", "--limit", "100000"], ["leaks", "--json"], ["classify", "--json"]]
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.lstrip().startswith("hint:")]


def assert_clean(r: subprocess.CompletedProcess, what: str = "") -> dict | None:
    """The contract of every case; returns the JSON document when one was printed."""
    no_traceback(r)
    both = r.stdout + r.stderr
    assert "Sanitizer" not in both and "runtime error:" not in both, f"{what}: sanitizer report\n{describe(r)}"
    assert r.returncode in (0, 1), f"{what}: exit {r.returncode}\n{describe(r)}"
    doc = None
    if r.stdout.lstrip().startswith("{"):
        doc = json.loads(r.stdout)
    diags = (doc or {}).get("diagnostics", [])
    errors = [d for d in diags if d.get("severity") == "error"]
    if r.returncode == 0:
        # Exit 0: the result is complete and exact; notes and warnings may be printed.
        assert not errors, f"{what}: exit 0 with error diagnostics\n{describe(r)}"
        assert doc is not None or not any(ln.startswith("error:") for ln in r.stdout.splitlines()), (
            f"{what}: exit 0 with error lines\n{describe(r)}")
    elif doc is None and any(ln.startswith("error:") for ln in r.stdout.splitlines()):
        pass  # a text report whose error diagnostics are printed as "error:" lines
    elif not errors:
        lines = error_lines(r.stderr)
        assert len(lines) == 1, f"{what}: expected error diagnostics or one error line\n{describe(r)}"
    return doc


def run_all(core: Path, commands=HEAP_COMMANDS, *extra: str) -> list[dict | None]:
    out = []
    for cmd in commands:
        r = run_cli(*cmd, core, *extra, timeout=TIMEOUT)
        out.append(assert_clean(r, " ".join(cmd)))
    return out


# -- the intact cores and what heapwalk says about them ---------------------------------------------


class Intact:
    def __init__(self, core: Path):
        self.core = core

        def j(*cmd: str) -> dict:
            r = run_cli(*cmd, core, "--json", timeout=TIMEOUT)
            assert r.returncode == 0, describe(r)
            return json.loads(r.stdout)

        self.arenas = j("arenas")
        self.heaps = j("heaps")
        self.bins = j("bins")
        self.tcache = j("tcache")
        self.chunks = j("chunks", "--limit", "100000")["chunks"]
        g = self.arenas["glibc"]
        self.main_arena, self.mp = g["main_arena"], g["mp_"]
        self.img = ck.CoreImage.load(core)
        # malloc_state.next: the word of main_arena that holds the next arena of the ring.
        ring = {a["address"] for a in self.arenas["arenas"]}
        self.next_off = next(o for o in range(0x800, 0x900, 8)
                             if self.img.u64(self.main_arena + o) in ring
                             and self.img.u64(self.main_arena + o + 8) == 0)  # next_free: NULL

    def fastbin(self, min_len: int = 1) -> list[int]:
        for fb in self.bins["arenas"][0]["fastbins"]:
            if len(fb["chunks"]) >= min_len:
                return [c["address"] if isinstance(c, dict) else c for c in fb["chunks"]]
        pytest.skip("no fastbin of that length in the intact core")

    def tcache_bin(self, min_len: int = 1) -> list[int]:
        for b in self.tcache["threads"][0]["bins"]:
            if len(b["chunks"]) >= min_len:
                return [c["address"] if isinstance(c, dict) else c for c in b["chunks"]]
        pytest.skip("no tcache bin of that length in the intact core")

    def binned(self, min_len: int = 2) -> list[int]:
        for b in self.bins["arenas"][0]["bins"]:
            if len(b["chunks"]) >= min_len:
                return [c["address"] if isinstance(c, dict) else c for c in b["chunks"]]
        pytest.skip("no doubly linked bin of that length in the intact core")

    def used(self) -> list[int]:
        return [c["address"] for c in self.chunks if c["state"] == "used"]


@pytest.fixture(scope="module")
def one(corpora) -> Intact:
    return Intact(corpora.core("arenas", "1", "0").core)


@pytest.fixture(scope="module")
def four(corpora) -> Intact:
    return Intact(corpora.core("arenas", "4", "0").core)


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "broken.core"


# -- truncation ------------------------------------------------------------------------------------


def _cut_points(img: ck.CoreImage, main_arena: int, heap: int) -> dict[str, int]:
    notes = img.note_segment()
    return {
        "ehdr-only": 64,
        "mid-phdrs": img.phoff + (img.phnum // 2) * ck.PHDR.size + 7,
        "mid-notes": notes.offset + notes.filesz // 2,
        "mid-first-load": (lambda p: p.offset + p.filesz // 2)(
            next(p for p in img.phdrs() if p.type == ck.PT_LOAD and p.filesz)),
        "in-heap": img.offset_of(heap) + 0x1000,
        "in-main-arena": img.offset_of(main_arena) + 0x40,
        "last-byte": len(img.b) - 1,
    }


@pytest.mark.parametrize("cut", ["ehdr-only", "mid-phdrs", "mid-notes", "mid-first-load", "in-heap",
                                 "in-main-arena", "last-byte"])
def test_truncated(one, out, cut):
    heap = one.heaps["arenas"][0]["heaps"][0]["address"]
    size = _cut_points(one.img, one.main_arena, heap)[cut]
    ck.truncate(one.core, out, size)
    cmds = HEAP_COMMANDS if cut in ("in-heap", "last-byte") else [["arenas", "--json"], ["arenas"]]
    for doc in run_all(out, cmds):
        if doc is not None and cut != "last-byte":
            assert doc["diagnostics"], f"{cut}: no diagnostic for a truncated core"


# -- missing PT_LOAD segments -------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["main_arena", "heap", "mp_", "all-loads"])
def test_missing_load(one, out, what):
    def edit(img: ck.CoreImage) -> None:
        if what == "all-loads":
            for p in img.phdrs():
                if p.type == ck.PT_LOAD:
                    img.set_phdr_type(p.index, ck.PT_NULL)
            return
        addr = {"main_arena": one.main_arena, "mp_": one.mp,
                "heap": one.heaps["arenas"][0]["heaps"][0]["address"]}[what]
        img.set_phdr_type(img.load_holding(addr).index, ck.PT_NULL)

    ck.derive(one.core, out, edit)
    run_all(out, HEAP_COMMANDS if what == "heap" else [["arenas", "--json"], ["chunks", "--json"]])


# -- smashed heaps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0x8, 0xFFFFFFFFFFFFFFF0, 0x4141414141414141, 0x10 | 1, 0x100000 | 1],
                         ids=["zero", "tiny", "huge", "garbage", "minsize-minus", "past-top"])
def test_smashed_size(one, out, value):
    used = one.used()
    victims = [used[len(used) // 4], used[len(used) // 2], used[-2]]

    def edit(img):
        for v in victims:
            img.put_u64(v + 8, value)

    ck.derive(one.core, out, edit)
    docs = run_all(out)
    if value not in (0x10 | 1,):
        arenas = docs[0]
        assert arenas is not None and arenas["diagnostics"], "a smashed size went unnoticed"


def test_smashed_top_and_system_mem(one, out):
    def edit(img):
        img.put_u64(one.main_arena + 0x60, 0x4141414141414141)  # top (2.36: after fastbinsY)
        img.put_u64(one.main_arena + one.next_off + 24, 1 << 60)  # system_mem

    ck.derive(one.core, out, edit)
    run_all(out)


def test_every_chunk_header_zeroed(one, out):
    def edit(img):
        for c in one.chunks:
            img.put_u64(c["address"] + 8, 0)

    ck.derive(one.core, out, edit)
    run_all(out)


# -- looping free lists, safe-linking garbage ---------------------------------------------------------


def test_tcache_cycle(one, out):
    a, b = one.tcache_bin(2)[:2]
    ck.derive(one.core, out, lambda img: img.put_u64(b + 16, ck.protect(b + 16, a + 16)))
    docs = run_all(out)
    assert any(d.get("kind") in ("cycle", "bad_pointer", "tcache") or "cycle" in d.get("detail", "")
               for d in docs[2]["diagnostics"]), docs[2]["diagnostics"]


def test_tcache_self_loop(one, out):
    a = one.tcache_bin(1)[0]
    ck.derive(one.core, out, lambda img: img.put_u64(a + 16, ck.protect(a + 16, a + 16)))
    run_all(out)


def test_fastbin_cycle(one, out):
    chunks = one.fastbin(2)
    first, last = chunks[0], chunks[-1]
    ck.derive(one.core, out, lambda img: img.put_u64(last + 16, ck.protect(last + 16, first)))
    docs = run_all(out)
    assert docs[0]["diagnostics"], "a fastbin cycle went unnoticed"


@pytest.mark.parametrize("where", ["tcache", "fastbin"])
@pytest.mark.parametrize("garbage", [0x4141414141414141, 0x1, 0x7FFFFFFFF000], ids=["ascii", "one", "unmapped"])
def test_safe_linking_garbage(one, out, where, garbage):
    c = (one.tcache_bin(2) if where == "tcache" else one.fastbin(1))[0]
    ck.derive(one.core, out, lambda img: img.put_u64(c + 16, garbage))
    docs = run_all(out)
    assert any(d["diagnostics"] for d in docs if d), f"{where} garbage went unnoticed"


def test_doubly_linked_bin_cycle(one, out):
    chunks = one.binned(2)

    def edit(img):
        img.put_u64(chunks[1] + 16, chunks[0])  # fd back to the first: never reaches the bin head
        img.put_u64(chunks[0] + 24, chunks[1])  # bk the same way

    ck.derive(one.core, out, edit)
    docs = run_all(out)
    assert docs[1]["diagnostics"], "a bin cycle went unnoticed"


def test_bin_head_garbage(one, out):
    def edit(img):
        for i in range(0, 254 * 8, 8):  # every bins[] word of main_arena
            img.put_u64(one.main_arena + 0x70 + i, 0x4343434343434343 + i)

    ck.derive(one.core, out, edit)
    run_all(out)


# -- the arena ring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["garbage", "unmapped", "into-heap", "self-offset"])
def test_arena_ring_main_never_closes(one, out, target):
    heap = one.heaps["arenas"][0]["heaps"][0]["address"]
    value = {"garbage": 0x4141414141414141, "unmapped": 0x10000,
             "into-heap": heap + 0x1000, "self-offset": one.main_arena + 0x100}[target]
    ck.derive(one.core, out, lambda img: img.put_u64(one.main_arena + one.next_off, value))
    run_all(out, [["arenas", "--json"], ["heaps", "--json"], ["chunks", "--json"], ["leaks", "--json"]])


def test_arena_ring_loops_without_main(four, out):
    """The last arena's `next` points at itself: the ring never returns to main_arena."""
    ring = [a["address"] for a in four.arenas["arenas"]]
    last = next(a for a in ring if four.img.u64(a + four.next_off) == four.main_arena)
    second = four.img.u64(four.main_arena + four.next_off)

    def edit(img):
        img.put_u64(last + four.next_off, last)
        if second != last:
            img.put_u64(second + four.next_off, second)  # and another self-loop earlier on

    ck.derive(four.core, out, edit)
    docs = run_all(out, [["arenas", "--json"], ["heaps", "--json"], ["chunks", "--json", "--limit", "10"]])
    assert docs[0] and docs[0]["diagnostics"], "an open arena ring went unnoticed"


# -- NT_FILE paths and the sysroot --------------------------------------------------------------------


def _strace(args: list[str], log: Path) -> subprocess.CompletedProcess | None:
    if not shutil.which("strace"):
        return None
    return subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2,execve", "-o", str(log),
         sys.executable, "-m", "heapwalk", *args],
        cwd=str(REPO), env=heapwalk_env(), capture_output=True, text=True, timeout=TIMEOUT * 2)


def _opened(log: Path) -> list[str]:
    out = []
    for ln in log.read_text(errors="replace").splitlines():
        if "open" in ln and '"' in ln and "ENOENT" not in ln:
            out.append(ln.split('"')[1])
    return out


def _with_libc_path(one, out, new_path: str) -> Path:
    img = ck.CoreImage.load(one.core)
    assert img.rename_file(LIBC, ck.same_length(new_path, LIBC)) > 0
    return img.save(out)


@pytest.mark.parametrize("path", ["/../../../../../etc/passwd", "/usr/../../../etc/passwd"])
def test_nt_file_dotdot_stays_in_sysroot(one, out, tmp_path, path):
    core = _with_libc_path(one, out, path)
    root = tmp_path / "sysroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")  # inside: may be opened
    r = run_cli("arenas", core, "--json", "--sysroot", root, timeout=TIMEOUT)
    assert_clean(r, path)
    log = tmp_path / "strace.log"
    s = _strace(["arenas", str(core), "--json", "--sysroot", str(root)], log)
    if s is not None:
        assert "/etc/passwd" not in _opened(log), "a path from the core left the sysroot"


def test_nt_file_symlink_out_of_sysroot_not_followed(one, out, tmp_path):
    core = ck.derive(one.core, out, lambda img: None)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(LIBC, outside / "libc.so.6")
    root = tmp_path / "sysroot"
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / LIBC.lstrip("/")).symlink_to(outside / "libc.so.6")
    (root / "lib").symlink_to("/usr/lib")  # an absolute symlink leaving the root
    r = run_cli("arenas", core, "--json", "--sysroot", root, timeout=TIMEOUT)
    doc = assert_clean(r, "symlink")
    if doc is not None:
        assert str(outside) not in json.dumps(doc["glibc"]), doc["glibc"]
    log = tmp_path / "strace.log"
    if _strace(["arenas", str(core), "--json", "--sysroot", str(root)], log) is not None:
        assert not [p for p in _opened(log) if p.startswith(str(outside))], "followed a symlink out of the sysroot"


@pytest.mark.parametrize("kind", ["fifo", "directory", "text", "truncated-elf", "dev-null-link"])
def test_sysroot_file_that_is_not_an_elf_file(one, out, tmp_path, kind):
    """What the core names is opened without blocking and only parsed as ELF."""
    core = ck.derive(one.core, out, lambda img: None)
    root = tmp_path / "sysroot"
    d = root / "usr/lib/x86_64-linux-gnu"
    d.mkdir(parents=True)
    p = root / LIBC.lstrip("/")
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "directory":
        p.mkdir()
    elif kind == "text":
        p.write_text("\x7fELF but not really\n" * 50)
    elif kind == "truncated-elf":
        p.write_bytes(Path(LIBC).read_bytes()[:5000])
    else:
        (root / "dev").mkdir()
        (root / "dev" / "null").write_bytes(b"")
        p.symlink_to("../../../dev/null")  # relative, stays inside: an empty regular file
    r = run_cli("arenas", core, "--json", "--sysroot", root, timeout=TIMEOUT)
    assert_clean(r, kind)


def test_nt_file_path_to_non_elf_without_sysroot(one, out):
    core = _with_libc_path(one, out, "/etc/passwd")
    run_all(core, [["arenas", "--json"], ["classify", "--json"]])


# -- synthetic cores ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["dotdot", "relative", "no-loads-but-notes", "garbage-memory"])
def test_synthetic_core(tmp_path, case):
    page = bytes(range(256)) * 16
    files = {
        "dotdot": [(0x400000, 0x401000, "/../../../../etc/passwd"), (0x7f0000000000, 0x7f0000001000, "/proc/self/mem")],
        "relative": [(0x400000, 0x401000, "../../etc/shadow"), (0x401000, 0x402000, "libc.so.6")],
        "no-loads-but-notes": [(0x400000, 0x401000, "/bin/true")],
        "garbage-memory": [(0x7f0000000000, 0x7f0000200000, LIBC)],
    }[case]
    loads = [] if case == "no-loads-but-notes" else [(0x400000, page), (0x7f0000000000, page * 8)]
    core = tmp_path / f"{case}.core"
    core.write_bytes(ck.synthetic_core(files, loads))
    root = tmp_path / "sysroot"
    root.mkdir()
    for extra in ([], ["--sysroot", str(root)]):
        r = run_cli("arenas", core, "--json", *extra, timeout=TIMEOUT)
        assert_clean(r, f"{case} {extra}")
        r = run_cli("nmt", core, *extra, timeout=TIMEOUT)
        assert_clean(r, f"nmt {case} {extra}")


# -- gdb stays usable ---------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", ["ring", "missing-main-arena"])
def test_gdb_usable_after_broken_core(corpora, one, out, broken):
    c = corpora.core("arenas", "1", "0")

    def edit(img):
        if broken == "ring":
            img.put_u64(one.main_arena + one.next_off, 0x4141414141414141)
            img.put_u64(one.main_arena + 0x60, 0x4141414141414141)
        else:
            img.set_phdr_type(img.load_holding(one.main_arena).index, ck.PT_NULL)

    ck.derive(one.core, out, edit)
    r = run_gdb(c.binary, out, commands=["heapwalk arenas", "heapwalk chunks", "info threads",
                                         "print 6*7"], timeout=TIMEOUT * 2)
    no_traceback(r)
    both = r.stdout + r.stderr
    assert "Sanitizer" not in both and "runtime error:" not in both, describe(r)
    assert "Target Id" in r.stdout, f"info threads did not run after heapwalk:\n{describe(r)}"
    assert "$1 = 42" in r.stdout, describe(r)


def test_core_that_is_a_fifo(tmp_path):
    """Opening the core must not block waiting for a writer."""
    p = tmp_path / "pipe.core"
    os.mkfifo(p)
    r = run_cli("arenas", p, timeout=TIMEOUT)
    assert_clean(r, "fifo core")
    assert r.returncode == 1 and p.name in error_lines(r.stderr)[0], describe(r)
