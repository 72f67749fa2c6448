"""Hostile cores whose cost could follow their apparent size or their header counts (issue 14,
items 8, 9 and 12): a core's cost must follow the bytes it holds, and every case must end in
bounded time and memory with the figures of the heap it still describes.

Each case is built here from an intact gcore of corpora/arenas.c (4 threads): program headers
and notes are appended or rewritten, the file kept sparse where the case is about holes. The
oracle is the program's own malloc_info() (assert_matches_oracle): the added headers, notes and
segments describe no malloc memory, so every figure must stay the program's.

Peak memory is the child's ru_maxrss (wait4), which counts the core's file pages it touched: the
16 GiB sparse segment once cost 16.8 GB of it, the 16 M-header table 944 MB.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import corruptkit as ck
from hwkit import ASAN_PRELOAD, REPO, assert_matches_oracle, heapwalk_env

# A hang guard, not a speed test (bench/ measures speed); the sanitizer build runs several
# times slower. The slowest case, `report` on 160 k NT_FILE entries, takes 2.8 s plain (it took
# 112 s while the module index matched every module against every region).
TIMEOUT = 300 if os.environ.get("HEAPWALK_ASAN_PRELOAD") else 120
PEAK_KB = 512 * 1024


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    maxrss_kb: int
    seconds: float

    def __str__(self) -> str:
        return (f"heapwalk {' '.join(self.args)}: rc {self.returncode}, {self.seconds:.1f} s, "
                f"{self.maxrss_kb} KB peak\nstderr: {self.stderr[-2000:]}")


def run(*argv: str) -> Run:
    """heapwalk ARGV with its own peak RSS: a fresh interpreter per run, so RUSAGE_CHILDREN of a
    helper process measures only it."""
    code = ("import os,resource,subprocess,sys,json;"
            "p=subprocess.run([sys.executable,'-m','heapwalk',*sys.argv[1:]],capture_output=True,text=True);"
            "json.dump({'rc':p.returncode,'out':p.stdout,'err':p.stderr,"
            "'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss},sys.stdout)")
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code, *argv], cwd=str(REPO), env=heapwalk_env(),
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    return Run(list(argv), d["rc"], d["out"], d["err"], d["rss"], time.monotonic() - t)


def bounded(r: Run, peak_kb: int = PEAK_KB) -> None:
    if ASAN_PRELOAD:
        peak_kb *= 4  # shadow memory and the allocator's quarantine
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, str(r)
    assert r.returncode in (0, 1), str(r)
    assert r.maxrss_kb < peak_kb, str(r)


@pytest.fixture(scope="module")
def intact(corpora):
    return corpora.core("arenas", "4", "0")


def headers(data: bytes) -> tuple[int, int, list[bytes]]:
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phnum = struct.unpack_from("<H", data, 0x38)[0]
    return phoff, phnum, [data[phoff + i * 56:phoff + (i + 1) * 56] for i in range(phnum)]


def with_headers(dest: Path, data: bytes, phdrs: list[bytes], hole: int = 0, count: int | None = None) -> Path:
    """`data` followed by a new program header table (`phdrs`, then `hole` bytes of hole inside the
    table when `count` names more headers than given) and section header 0 for PN_XNUM."""
    n = count if count is not None else len(phdrs)
    body = bytearray(data) + b"\0" * ((-len(data)) % 8)
    phoff = len(body)
    with open(dest, "wb") as f:
        f.write(body)
        f.write(b"".join(phdrs))
        if hole:
            f.truncate(phoff + n * 56)
            f.seek(0, 2)
        shoff = f.tell()
        sh0 = bytearray(64)
        struct.pack_into("<I", sh0, 44, n)  # sh_info: the real count
        f.write(sh0)
        f.seek(0x20)
        f.write(struct.pack("<QQ", phoff, shoff))
        f.seek(0x38)
        f.write(struct.pack("<HHHH", 0xFFFF if n >= 0xFFFF else n, 64, 1, 0))
    return dest


def with_notes(dest: Path, data: bytes, notes: bytes) -> Path:
    """`data` with its note segment replaced by `notes`, appended after the image (its
    program header table rewritten after that, as with_headers does)."""
    body = bytearray(data) + b"\0" * ((-len(data)) % 8)
    noff = len(body)
    body += notes
    _, _, phdrs = headers(data)
    new = []
    for ph in phdrs:
        t, fl, o, va, pa, fs, ms, al = ck.PHDR.unpack(ph)
        new.append(ck.PHDR.pack(t, fl, noff, va, pa, len(notes), 0, al) if t == ck.PT_NOTE else ph)
    return with_headers(dest, bytes(body), new)


def arenas_match(intact, core: Path) -> None:
    r = run("arenas", str(core), "--json")
    bounded(r)
    assert_matches_oracle(json.loads(r.stdout), intact)


# -- item 8: many PT_LOADs aliasing one page ------------------------------------------------------

def test_262k_segments_aliasing_one_page(intact, tmp_path):
    data = intact.core.read_bytes()
    img = ck.CoreImage(data)
    _, _, phdrs = headers(data)
    page = next(p for p in img.phdrs() if p.type == ck.PT_LOAD and p.filesz >= 4096 and p.flags & 2)
    extra = [ck.PHDR.pack(ck.PT_LOAD, 6, page.offset, 0x100000000000 + i * 4096, 0, 4096, 4096, 4096)
             for i in range(262144)]
    core = with_headers(tmp_path / "alias.core", data, phdrs + extra)
    arenas_match(intact, core)
    for cmd in ("report", "leaks", "classify"):
        r = run(cmd, str(core), "--json")
        bounded(r, 1024 * 1024)
        json.loads(r.stdout)


# -- item 9: NT_FILE entries x regions ------------------------------------------------------------

def test_160k_nt_file_entries(intact, tmp_path):
    data = intact.core.read_bytes()
    img = ck.CoreImage(data)
    seg = img.note_segment()
    n = 160_000
    raw = data[seg.offset:seg.offset + seg.filesz]
    # The new note segment: the old notes, NT_FILE with 160 k entries (in no mapping) after its own.
    notes = bytearray()
    nt = b""
    off = 0
    while off + 12 <= len(raw):
        namesz, descsz, typ = ck.NHDR.unpack_from(raw, off)
        desc = off + 12 + ((namesz + 3) & ~3)
        size = desc - off + ((descsz + 3) & ~3)
        if typ == ck.NT_FILE:
            count, pagesz = struct.unpack_from("<QQ", raw, desc)
            table = raw[desc + 16:desc + 16 + 24 * count]
            names = raw[desc + 16 + 24 * count:desc + descsz]
            nt = struct.pack("<QQ", count + n, pagesz) + table
            nt += b"".join(struct.pack("<QQQ", 0x200000000000 + i * 8192, 0x200000000000 + i * 8192 + 4096, 0)
                           for i in range(n))
            nt += names + b"".join(b"/nonexistent/hw-%06d\0" % i for i in range(n))
            nt += b"\0" * ((-len(nt)) % 4)
        else:
            notes += raw[off:off + size]
        off += size
    assert nt, "the intact core has no NT_FILE note"
    notes += ck.NHDR.pack(5, len(nt), ck.NT_FILE) + b"CORE\0\0\0\0" + nt
    core = with_notes(tmp_path / "files.core", data, bytes(notes))
    arenas_match(intact, core)
    for cmd in ("report", "classify", "leaks"):
        r = run(cmd, str(core), "--json")
        bounded(r, 1024 * 1024)
        json.loads(r.stdout)


# -- item 12: apparent size -------------------------------------------------------------------------

def test_16_gib_sparse_segment(intact, tmp_path):
    data = intact.core.read_bytes()
    _, _, phdrs = headers(data)
    size = 16 << 30
    at = (len(data) + 8 + 56 * (len(phdrs) + 1) + 64 + 4095) & ~4095
    core = with_headers(tmp_path / "sparse.core", data,
                        phdrs + [ck.PHDR.pack(ck.PT_LOAD, 6, at, 0x200000000000, 0, size, size, 4096)])
    with open(core, "r+b") as f:
        f.truncate(at + size)  # a hole: 16 GiB apparent, nothing on disk
    assert os.stat(core).st_blocks * 512 < len(data) + (64 << 20)  # the hole allocates nothing
    arenas_match(intact, core)
    for cmd in ("report", "leaks", "classify"):
        r = run(cmd, str(core), "--json")
        bounded(r)
        json.loads(r.stdout)


def test_16m_program_headers_in_a_sparse_table(intact, tmp_path):
    data = intact.core.read_bytes()
    _, _, phdrs = headers(data)
    core = with_headers(tmp_path / "xnum.core", data, phdrs, hole=1, count=16 << 20)
    assert os.stat(core).st_size > 900 << 20 and os.stat(core).st_blocks * 512 < len(data) + (64 << 20)
    arenas_match(intact, core)
    r = run("report", str(core), "--json")
    bounded(r)


def test_100k_thread_notes(intact, tmp_path):
    data = intact.core.read_bytes()
    img = ck.CoreImage(data)
    seg = img.note_segment()
    pr = bytearray(336)
    more = []
    for i in range(100_000):
        struct.pack_into("<i", pr, 32, 1_000_000 + i)
        more.append(ck.NHDR.pack(5, 336, ck.NT_PRSTATUS) + b"CORE\0\0\0\0" + bytes(pr))
    notes = data[seg.offset:seg.offset + seg.filesz] + b"".join(more)
    core = with_notes(tmp_path / "threads.core", data, notes)
    r = run("arenas", str(core), "--json")
    bounded(r, 1024 * 1024)
    doc = json.loads(r.stdout)
    added = [t for t in doc["threads"] if t["lwp"] >= 1_000_000]
    assert len(added) == 100_000, str(r)
    doc["threads"] = [t for t in doc["threads"] if t["lwp"] < 1_000_000]
    assert_matches_oracle(doc, intact)
    for cmd in ("report", "tcache"):
        r = run(cmd, str(core), "--json")
        bounded(r, 1024 * 1024)
