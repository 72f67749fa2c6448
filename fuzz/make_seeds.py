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
With --nmt-core (a JDK 17 NMT detail core) OUTDIR/nmt/ also gets a seed for fuzz_nmt's flag 4:
libjvm's NMT statics and the C-heap windows their lists and chains point into.
With --alloc-fuzzers DIR (a fuzz build: DIR/fuzz_jemalloc, DIR/fuzz_tcmalloc) every core that
loads libjemalloc or libtcmalloc also gives OUTDIR/jemalloc/<name> or OUTDIR/tcmalloc/<name>: the
target itself runs its model over the core with every read recorded (HEAPWALK_FUZZ_SEED, see
fuzz/fuzz_alloc.h) and writes what it read as its sparse image (and a -nodirect copy).
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


# fuzz_nmt.cpp's kNmtSymbols, in its order, with the 17.0.21 sizes: with flag 4 the harness
# places them one after the other (8-aligned) from the first region's start.
NMT_SYMBOLS = [("_ZN10MemTracker15_tracking_levelE", 4), ("_ZN19MallocMemorySummary9_snapshotE", 0x6e0),
               ("_ZN20VirtualMemorySummary9_snapshotE", 0x1b0),
               ("_ZN20VirtualMemoryTracker17_reserved_regionsE", 8), ("_ZN15MallocSiteTable6_tableE", 0xff8),
               ("_ZN18ThreadStackTracker13_thread_countE", 8), ("_ZN19Abstract_VM_Version13_s_vm_releaseE", 8),
               ("_ZN7NMTUtil18_memory_type_namesE", 0xd8), ("_ZN10NMTPreInit6_tableE", 8),
               ("_ZNK12MallocHeader21check_block_integrityEv", 0x1d9),
               ("_ZN15MallocSiteTable27_hash_entry_allocation_siteE", 8),
               ("_ZN15MallocSiteTable28_hash_entry_allocation_stackE", 8),
               ("_ZNK12MallocHeader20print_block_on_errorEP12outputStreamPh", 0xa5)]
WINDOW = 256 * 1024


class SeekCore:
    """A core's memory by vaddr, read with seeks (JVM cores are 1.3 GB)."""

    def __init__(self, path: Path):
        self.f = open(path, "rb")  # noqa: SIM115 - lives as long as the object
        head = self.f.read(1 << 20)
        self.loads = [ph for ph in phdrs(head) if ph[0] == PT_LOAD]
        note = next(ph for ph in phdrs(head) if ph[0] == PT_NOTE)
        self.f.seek(note[2])
        self.notes = self.f.read(note[5])

    def read(self, addr: int, n: int) -> bytes:
        for _t, _f, off, vaddr, _p, filesz, memsz, _a in self.loads:
            if vaddr <= addr < vaddr + memsz:
                rel = addr - vaddr
                n = min(n, memsz - rel)
                self.f.seek(off + rel)
                data = self.f.read(max(0, min(filesz, rel + n) - rel)) if rel < filesz else b""
                return data + bytes(n - len(data))
        return b""

    def u64(self, addr: int) -> int:
        b = self.read(addr, 8)
        return struct.unpack("<Q", b)[0] if len(b) == 8 else 0

    def file_base(self, suffix: str) -> int:
        """The lowest start of an NT_FILE mapping whose path ends with `suffix`."""
        off, best = 0, None
        while off + 12 <= len(self.notes):
            namesz, descsz, typ = struct.unpack_from("<III", self.notes, off)
            desc = off + 12 + ((namesz + 3) & ~3)
            if typ == 0x46494C45:
                count, _page = struct.unpack_from("<QQ", self.notes, desc)
                names = self.notes[desc + 16 + 24 * count:desc + descsz].split(b"\0")
                for i in range(count):
                    start = struct.unpack_from("<Q", self.notes, desc + 16 + 24 * i)[0]
                    if names[i].decode(errors="replace").endswith(suffix):
                        best = start if best is None else min(best, start)
            off = desc + ((descsz + 3) & ~3)
        if best is None:
            raise KeyError(suffix)
        return best


def dense_windows(targets: list[int], most: int, window: int = WINDOW) -> list[int]:
    """Greedily, up to `most` window-sized page-aligned windows holding the most targets."""
    targets = sorted(t for t in targets if t)
    windows: list[int] = []
    while targets and len(windows) < most:
        best, best_n, j = 0, 0, 0
        for i, t in enumerate(targets):
            while targets[j] < t - window + 128:
                j += 1
            if i - j + 1 > best_n:
                best, best_n = (t & ~0xFFF) + 0x1000 - window, i - j + 1
        windows.append(best)
        targets = [t for t in targets if not best <= t < best + window]
    return windows


def nmt_seed(core: Path, libjvm: Path, window: int = WINDOW) -> bytes:
    """fuzz_nmt's flag-4 format from a real JDK 17 NMT core: the first region holds libjvm's NMT
    statics at the harness's places; up to five 256 KiB windows of the C heap hold what they
    point at (the reserved-region list and its nodes, the site chains, the release string)."""
    c = SeekCore(core)
    base = c.file_base("/libjvm.so")
    out = subprocess.run(["nm", "-S", "--defined-only", str(libjvm)], capture_output=True, text=True,
                         check=True).stdout
    syms = {f[3]: int(f[0], 16) for f in (ln.split() for ln in out.splitlines()) if len(f) == 4}
    statics = bytearray()
    for name, size in NMT_SYMBOLS:
        data = c.read(base + syms[name], size) if name in syms else bytes(size)
        statics += data + bytes(((size + 7) & ~7) - len(data))
    # What the reader will follow: the region list and its committed lists, then the site chains.
    regions_t: list[int] = []
    lst = c.u64(base + syms["_ZN20VirtualMemoryTracker17_reserved_regionsE"])
    regions_t.append(lst)
    node = c.u64(lst + 8)
    while node and len(regions_t) < 5000:
        regions_t.append(node)
        com = c.u64(node + 24)
        while com and len(regions_t) < 5000:
            regions_t.append(com)
            com = c.u64(com + 48)
        node = c.u64(node + 80)
    sites_t: list[int] = [c.u64(base + syms["_ZN19Abstract_VM_Version13_s_vm_releaseE"])]
    table = base + syms["_ZN15MallocSiteTable6_tableE"]
    for i in range(511):
        e = c.u64(table + 8 * i)
        while e and len(sites_t) < 20000:
            sites_t.append(e)
            e = c.u64(e + 80)
    # Up to three windows where the region nodes are densest, the rest for the site entries.
    windows = dense_windows(regions_t, 3, window)
    windows += dense_windows([t for t in sites_t if not any(w <= t < w + window for w in windows)],
                             5 - len(windows), window)
    # The harness names the lowest region libjvm: the statics go below every heap window (their
    # own address does not matter, only what they point at).
    regions = [(0x10000, bytes(statics))] + [(w, c.read(w, window)) for w in sorted(windows)]
    body = bytearray(struct.pack("<BBBBQQ", 4 | 2, 0, len(regions) - 1, 0, 0, 0))
    for addr, data in regions:
        body += struct.pack("<QI", addr, len(data))
    for _addr, data in regions:
        body += data
    return bytes(body)


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


def with_flags(img: bytes, bits: int) -> bytes:
    """`img` with `bits` set in its flags byte (fuzz_common.h: the first byte)."""
    out = bytearray(img)
    out[0] |= bits
    return bytes(out)


def alloc_seeds(core: Path, fuzzers: Path, outdir: Path, max_bytes: int = 0) -> None:
    """The jemalloc / tcmalloc seed of `core` when it loads that allocator (fuzz_alloc.h)."""
    name = core.parent.name if core.name == "core" else core.name
    for which in ("jemalloc", "tcmalloc"):
        binary = fuzzers / f"fuzz_{which}"
        if not binary.exists():
            continue
        (outdir / which).mkdir(parents=True, exist_ok=True)
        dest = outdir / which / name
        env = dict(os.environ, HEAPWALK_FUZZ_SEED=f"{core}:{dest}",
                   ASAN_OPTIONS="detect_leaks=0")
        if max_bytes:
            env["HEAPWALK_FUZZ_SEED_MAX"] = str(max_bytes)
        r = subprocess.run([str(binary)], env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not dest.exists():
            continue  # the core does not use that allocator
        img = dest.read_bytes()
        (outdir / which / (name + "-nodirect")).write_bytes(bytes([img[0] | 0x80]) + img[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir", type=Path)
    ap.add_argument("cores", type=Path, nargs="*")
    ap.add_argument("--heap-bytes", type=int, default=8192)
    ap.add_argument("--seg-bytes", type=int, default=512)
    ap.add_argument("--nmt-core", type=Path, action="append", default=[],
                    help="a JDK 17 NMT detail core: an NMT seed with libjvm's statics (flag 4)")
    ap.add_argument("--nmt-window", type=int, default=WINDOW, help="bytes of each C-heap window of an NMT seed")
    ap.add_argument("--libjvm", type=Path, default=Path("/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"))
    ap.add_argument("--alloc-fuzzers", type=Path, default=None,
                    help="a fuzz build directory: jemalloc/tcmalloc seeds made by its fuzz_jemalloc/fuzz_tcmalloc")
    ap.add_argument("--alloc-max-bytes", type=int, default=0,
                    help="cap each jemalloc/tcmalloc seed near this size (the module's bytes first)")
    o = ap.parse_intermixed_args()
    if o.alloc_fuzzers:
        for core in o.cores:
            alloc_seeds(core, o.alloc_fuzzers, o.outdir, o.alloc_max_bytes)
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
        # The same image read through the Reader's cache (flag 0x80, fuzz::kNoDirect), with the
        # chunk-walking analyses (heap flag 2), as a live process is read.
        (o.outdir / "heap" / (name + "-nodirect")).write_bytes(with_flags(img, 0x80 | 2))
        (o.outdir / "nmt" / (name + "-nodirect")).write_bytes(with_flags(img, 0x80))
    for core in o.nmt_core:
        name = core.parent.name.rsplit("-", 1)[0] if core.name == "core" else core.name
        seed = nmt_seed(core, o.libjvm, o.nmt_window)
        (o.outdir / "nmt" / (name + "-statics")).write_bytes(seed)
        (o.outdir / "nmt" / (name + "-statics-nodirect")).write_bytes(with_flags(seed, 0x80))


if __name__ == "__main__":
    main()
