#!/usr/bin/python3
"""Seed corpora for the fuzz targets, cut from real cores.

    fuzz/make_seeds.py OUTDIR [--heap-bytes N] [--seg-bytes N] CORE...

For each core it writes
  OUTDIR/core/<name>   the core with every PT_LOAD cut to --seg-bytes (notes kept whole), so
                       the parser sees real headers, notes (NT_PRSTATUS, NT_FILE, ...) and data;
  OUTDIR/heap/<name>   and OUTDIR/nmt/<name>: the synthetic-image format of fuzz_common.h with
                       main_arena, mp_ and the first --heap-bytes of every heap (addresses from
                       `heapwalk heaps/arenas --json`);
and OUTDIR/elf/ gets a small shared object compiled on the spot (TLS, versions, symtab).
The committed seeds in fuzz/corpus/ were made with the defaults; scripts/test and the long runs
make bigger ones at run time into build-fuzz/corpus/.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PT_LOAD, PT_NOTE = 1, 4


def phdrs(b: bytes):
    phoff, = struct.unpack_from("<Q", b, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", b, 0x36)
    for i in range(phnum):
        yield list(struct.unpack_from("<IIQQQQQQ", b, phoff + i * phentsize))


def slice_core(b: bytes, seg_bytes: int) -> bytes:
    """Keeps headers and notes; every PT_LOAD keeps at most seg_bytes of its file bytes."""
    phoff, = struct.unpack_from("<Q", b, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", b, 0x36)
    hdr_end = phoff + phentsize * phnum
    out = bytearray(b[:hdr_end])
    for i, ph in enumerate(phdrs(b)):
        typ, flags, off, vaddr, paddr, filesz, memsz, align = ph
        if typ in (PT_LOAD, PT_NOTE):
            keep = filesz if typ == PT_NOTE else min(filesz, seg_bytes)
            new_off = len(out)
            out += b[off:off + keep]
            struct.pack_into("<IIQQQQQQ", out, phoff + i * phentsize, typ, flags, new_off, vaddr, paddr,
                             keep, memsz, align)
    return bytes(out)


class Core:
    def __init__(self, path: Path):
        self.b = path.read_bytes()
        self.loads = [ph for ph in phdrs(self.b) if ph[0] == PT_LOAD]

    def read(self, addr: int, n: int) -> bytes:
        for _t, _f, off, vaddr, _p, filesz, memsz, _a in self.loads:
            if vaddr <= addr < vaddr + memsz:
                rel = addr - vaddr
                n = min(n, memsz - rel)
                data = self.b[off + rel:off + min(filesz, rel + n)] if rel < filesz else b""
                return data + bytes(n - len(data))
        return b""


def heapwalk_json(cmd: str, core: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    r = subprocess.run([sys.executable, "-m", "heapwalk", cmd, str(core), "--json"], env=env,
                       capture_output=True, text=True, timeout=300)
    return json.loads(r.stdout)


def image(core: Path, heap_bytes: int) -> bytes:
    """fuzz_common.h's format: header, regions, threads, bytes."""
    a = heapwalk_json("arenas", core)
    h = heapwalk_json("heaps", core)
    g = a["glibc"]
    c = Core(core)
    ma, mp = g["main_arena"], g["mp_"]
    lo = min(ma, mp) & ~0xF
    hi = max(ma, mp) + 0x900
    regions = [(lo, c.read(lo, hi - lo))]
    for ar in h["arenas"]:
        for hp in ar["heaps"][:2]:
            if len(regions) >= 6:
                break
            regions.append((hp["address"], c.read(hp["address"], min(hp["size"], heap_bytes))))
    threads = [(0, t["tcache"]["address"] if t.get("tcache") else 0, t.get("arena") or 0)
               for t in a.get("threads", [])][:3]
    out = bytearray(struct.pack("<BBBBQQ", 0, 0, len(regions) - 1, len(threads), ma, mp))
    for addr, data in regions:
        out += struct.pack("<QI", addr, len(data))
    for t in threads:
        out += struct.pack("<QQQ", *t)
    for _addr, data in regions:
        out += data
    return bytes(out)


def elf_seed(dest: Path) -> None:
    src = r"""
__thread long tls_var;
int main_arena[4];
int mp_ = 1;
int get(void) { return (int)tls_var + main_arena[1] + mp_; }
"""
    with tempfile.TemporaryDirectory() as d:
        c = Path(d) / "s.c"
        ver = Path(d) / "v.map"
        c.write_text(src)
        ver.write_text("GLIBC_2.2.5 { global: get; }; GLIBC_2.34 { global: mp_; } GLIBC_2.2.5;\n")
        so = Path(d) / "s.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-nostdlib", "-ftls-model=initial-exec",
                        "-Wl,--build-id", f"-Wl,--version-script={ver}", "-o", str(so), str(c)], check=True)
        dest.write_bytes(so.read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir", type=Path)
    ap.add_argument("cores", type=Path, nargs="*")
    ap.add_argument("--heap-bytes", type=int, default=8192)
    ap.add_argument("--seg-bytes", type=int, default=512)
    o = ap.parse_intermixed_args()
    for t in ("core", "elf", "heap", "nmt"):
        (o.outdir / t).mkdir(parents=True, exist_ok=True)
    elf_seed(o.outdir / "elf" / "small.so")
    for core in o.cores:
        name = core.parent.name.rsplit("-", 1)[0] if core.name == "core" else core.name
        (o.outdir / "core" / name).write_bytes(slice_core(core.read_bytes(), o.seg_bytes))
        try:
            img = image(core, o.heap_bytes)
        except Exception as e:  # noqa: BLE001 - a core heapwalk cannot read gives no heap seed
            print(f"{core}: no heap seed ({e})", file=sys.stderr)
            continue
        (o.outdir / "heap" / name).write_bytes(img)
        (o.outdir / "nmt" / name).write_bytes(img)
        finder = bytearray(img)
        finder[0] |= 1
        (o.outdir / "heap" / (name + "-finder")).write_bytes(bytes(finder))


if __name__ == "__main__":
    main()
