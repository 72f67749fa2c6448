"""Corruption corpus: broken cores derived from the cores the suite already makes, and small
synthetic ones written from scratch.

Every derived core starts as a copy of an intact gcore; the edits address target memory (the
file offset of a virtual address comes from the core's PT_LOAD headers) or the ELF structures
themselves (program headers, the NT_FILE note).  Nothing here needs heapwalk: the addresses of
main_arena, heaps, chunks and free lists come from heapwalk's JSON on the intact core, which the
tests obtain once per session.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

PT_NULL, PT_LOAD, PT_NOTE = 0, 1, 4
NT_PRSTATUS, NT_PRPSINFO, NT_FILE = 1, 3, 0x46494C45
PHDR = struct.Struct("<IIQQQQQQ")
NHDR = struct.Struct("<III")
SAFE_LINKING = True  # glibc >= 2.32 (the host's 2.36)


@dataclass
class Phdr:
    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass
class FileEntry:
    start: int
    end: int
    pgoff: int
    path: str
    path_offset: int  # file offset of the path's first byte


class CoreImage:
    """A mutable ELF core: read/write target memory and the core's own headers."""

    def __init__(self, data: bytes):
        self.b = bytearray(data)
        if self.b[:4] != b"\x7fELF":
            raise ValueError("not an ELF file")

    @classmethod
    def load(cls, path: Path) -> "CoreImage":
        return cls(path.read_bytes())

    def save(self, path: Path) -> Path:
        path.write_bytes(bytes(self.b))
        return path

    # -- headers ------------------------------------------------------------------------------
    @property
    def phoff(self) -> int:
        return struct.unpack_from("<Q", self.b, 0x20)[0]

    @property
    def phnum(self) -> int:
        return struct.unpack_from("<H", self.b, 0x38)[0]

    def phdrs(self) -> list[Phdr]:
        out = []
        for i in range(self.phnum):
            t, fl, off, va, _pa, fs, ms, _al = PHDR.unpack_from(self.b, self.phoff + i * PHDR.size)
            out.append(Phdr(i, t, fl, off, va, fs, ms))
        return out

    def set_phdr_type(self, index: int, type_: int) -> None:
        struct.pack_into("<I", self.b, self.phoff + index * PHDR.size, type_)

    def load_holding(self, addr: int) -> Phdr:
        for p in self.phdrs():
            if p.type == PT_LOAD and p.vaddr <= addr < p.vaddr + p.memsz:
                return p
        raise KeyError(f"no PT_LOAD holds {addr:#x}")

    def note_segment(self) -> Phdr:
        return next(p for p in self.phdrs() if p.type == PT_NOTE)

    # -- memory -------------------------------------------------------------------------------
    def offset_of(self, addr: int) -> int:
        p = self.load_holding(addr)
        rel = addr - p.vaddr
        if rel + 8 > p.filesz:
            raise KeyError(f"{addr:#x} is not saved in the core")
        return p.offset + rel

    def u64(self, addr: int) -> int:
        return struct.unpack_from("<Q", self.b, self.offset_of(addr))[0]

    def put_u64(self, addr: int, value: int) -> None:
        struct.pack_into("<Q", self.b, self.offset_of(addr), value & (2**64 - 1))

    # -- notes --------------------------------------------------------------------------------
    def notes(self) -> list[tuple[int, int, int, int]]:
        """(type, name, desc offset, desc size) of every note."""
        seg = self.note_segment()
        return parse_notes(self.b, seg.offset, seg.offset + seg.filesz)

    def file_entries(self) -> list[FileEntry]:
        return parse_file_entries(self.b, self.notes())

    def rename_file(self, old: str, new: str) -> int:
        """Rewrites every NT_FILE path equal to `old` with `new` (same length: the note's other
        strings keep their offsets); returns how many were rewritten."""
        if len(new) != len(old):
            raise ValueError(f"{new!r} must have the length of {old!r}")
        n = 0
        for f in self.file_entries():
            if f.path == old:
                self.b[f.path_offset:f.path_offset + len(old)] = new.encode()
                n += 1
        return n


def parse_notes(b: bytes | bytearray, off: int, end: int) -> list[tuple[int, str, int, int]]:
    """(type, name, desc offset, desc size) of every note in b[off:end]."""
    out = []
    while off + NHDR.size <= end:
        namesz, descsz, typ = NHDR.unpack_from(b, off)
        name = bytes(b[off + 12: off + 12 + namesz]).rstrip(b"\0").decode(errors="replace")
        desc = off + 12 + ((namesz + 3) & ~3)
        out.append((typ, name, desc, descsz))
        off = desc + ((descsz + 3) & ~3)
    return out


def parse_file_entries(b: bytes | bytearray, notes: list[tuple[int, str, int, int]]) -> list[FileEntry]:
    """The NT_FILE note's mappings (path offsets index `b`)."""
    _typ, _n, desc, _size = next(n for n in notes if n[0] == NT_FILE and n[1] == "CORE")
    count, _page = struct.unpack_from("<QQ", b, desc)
    s = desc + 16 + count * 24
    out = []
    for i in range(count):
        start, end, pgoff = struct.unpack_from("<QQQ", b, desc + 16 + i * 24)
        e = b.index(0, s)
        out.append(FileEntry(start, end, pgoff, bytes(b[s:e]).decode(), s))
        s = e + 1
    return out


def same_length(path: str, like: str) -> str:
    """`path` left-padded with '/' to the length of `like` ('//x' names the same file as '/x')."""
    if len(path) > len(like):
        raise ValueError(f"{path!r} is longer than {like!r}")
    return "/" * (len(like) - len(path)) + path


def protect(field_address: int, ptr: int) -> int:
    """glibc's PROTECT_PTR (safe-linking) for a pointer stored at `field_address`."""
    return ((field_address >> 12) ^ ptr) if SAFE_LINKING else ptr


def derive(src: Path, dest: Path, edit) -> Path:
    """Copies core `src` to `dest` and applies `edit(CoreImage)` to it."""
    img = CoreImage.load(src)
    edit(img)
    return img.save(dest)


def truncate(src: Path, dest: Path, size: int) -> Path:
    shutil.copyfile(src, dest)
    with open(dest, "r+b") as f:
        f.truncate(size)
    return dest


# -- synthetic cores -----------------------------------------------------------------------------


def synthetic_core(files: list[tuple[int, int, str]], loads: list[tuple[int, bytes]],
                   lwp: int = 4242) -> bytes:
    """A minimal x86-64 ELF core: one PT_NOTE (NT_PRSTATUS for one thread, NT_PRPSINFO and an
    NT_FILE listing `files` = (start, end, path)) and one PT_LOAD per (vaddr, bytes)."""

    def note(name: bytes, typ: int, desc: bytes) -> bytes:
        name += b"\0"
        pad = lambda b: b + b"\0" * ((-len(b)) % 4)  # noqa: E731
        return NHDR.pack(len(name), len(desc), typ) + pad(name) + pad(desc)

    prstatus = bytearray(336)
    struct.pack_into("<i", prstatus, 32, lwp)
    prpsinfo = bytearray(136)
    struct.pack_into("<i", prpsinfo, 24, lwp)
    nt = struct.pack("<QQ", len(files), 4096)
    nt += b"".join(struct.pack("<QQQ", s, e, 0) for s, e, _ in files)
    nt += b"".join(p.encode() + b"\0" for _, _, p in files)
    notes = note(b"CORE", NT_PRSTATUS, bytes(prstatus)) + note(b"CORE", NT_PRPSINFO, bytes(prpsinfo))
    notes += note(b"CORE", NT_FILE, nt)

    phnum = 1 + len(loads)
    ehdr = bytearray(64)
    ehdr[:16] = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 4, 62, 1, 0, 64, 0, 0, 64, PHDR.size, phnum, 0, 0, 0)
    off = 64 + phnum * PHDR.size
    phdrs = PHDR.pack(PT_NOTE, 0, off, 0, 0, len(notes), 0, 1)
    body = bytearray(notes)
    for vaddr, data in loads:
        pad = (-(off + len(body))) % 4096
        body += b"\0" * pad
        o = off + len(body)
        phdrs += PHDR.pack(PT_LOAD, 6, o, vaddr, 0, len(data), len(data), 4096)
        body += data
    return bytes(ehdr) + phdrs + bytes(body)
