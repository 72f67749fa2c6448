#!/usr/bin/env python3
"""heapwalk benchmark (issue 7): cores of 1 M, 10 M and 50 M chunks (and one with 64+ arenas),
and (issue 16) a 10 M-allocation core per other allocator (corpora/many.c with Debian's
libjemalloc.so.2 or libtcmalloc.so.4 preloaded: the model's construction and whole walk, against
the floor over the extents / spans the allocator maps),
each engine operation timed in a fresh process with its peak anonymous memory, against the floor
(reading the walked heap bytes once through a fresh mmap) measured in the same run, and a
gdb-API Python walker (how gef/pwndbg walk) as the reference point.

    /usr/bin/python3 bench/bench.py [--sizes 1M,10M] [--arenas 0|70] [--no-gdb-walker]
                                    [--allocators jemalloc,tcmalloc] [--allocator-size 10M]
                                    [--repeat N] [--json FILE]
    /usr/bin/python3 bench/bench.py --live [--sizes 10M] [--live-threads 4] [--repeat N] [--json FILE]

--live (issue 11, bench/bench_live.py) runs only the live rows instead: one live many process
per size (default 10M) with corpora/freezeprobe.c preloaded; each CLI command's freeze (measured
inside the target) and wall time with --pid, gcore's freeze on the same process, the same
commands on that core, and the process_vm_readv copy floor; it prints BENCH_LIVE {...}.

Not a test: prints a table and one JSON line (BENCH {...}); --json also writes it to FILE.
Cores are cached under build/bench-cache/issue7/ (gcc, gcore; tens of seconds for 50 M).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HEAPWALK_BENCH_CACHE", REPO / "build" / "bench-cache" / "issue7"))
PY = "/usr/bin/python3"

OPS = {
    # name: (setup, timed) — Python run in a fresh process; `t` is the target.
    "open": ("", "t = N.open_core(CORE, None, OV); t.describe()"),
    "arenas": ("t = N.open_core(CORE, None, OV)", "t.arenas()"),
    "bins+tcache": ("t = N.open_core(CORE, None, OV); t.arenas()", "t.bins(); t.tcache()"),
    "classify": ("t = N.open_core(CORE, None, OV); t.arenas()", "t.classify()"),
    "nmt-headers": ("t = N.open_core(CORE, None, OV); t.arenas()", "t.nmt(False)"),
    "leaks": ("t = N.open_core(CORE, None, OV); t.arenas()", "t.leaks(limit=0)"),
    "report": ("t = N.open_core(CORE, None, OV); t.arenas()", "t.report() if hasattr(t, 'report') else None"),
    # Issue 15 listings: the streamed CLI documents (chunks/bins --json, written a batch at a
    # time) against the same documents built whole (the pre-streaming way); compare the rows'
    # seconds and peak memory (e.g. --ops chunks-json,chunks-json-whole).
    "chunks-json": ("import os; from heapwalk import cli",
                    "cli.run(['chunks', CORE, '--json', '--limit', '0'], open(os.devnull, 'w'), sys.stderr)"),
    "chunks-json-whole": ("from heapwalk import render as R; t = N.open_core(CORE, None, OV)",
                          "R.to_json(R.wrap('chunks', t.chunks(None, 'all', None)))"),
    "bins-json": ("import os; from heapwalk import cli",
                  "cli.run(['bins', CORE, '--json'], open(os.devnull, 'w'), sys.stderr)"),
    "bins-json-whole": ("from heapwalk import render as R; t = N.open_core(CORE, None, OV)",
                        "R.to_json(R.wrap('bins', t.bins(None)))"),
    # Issue 16: the jemalloc / tcmalloc model built and walked whole (je_arenas and the radix
    # tree found by search on Debian's stripped library; tcmalloc's page map, lists and the walk
    # that sums what is in use), one small document out.
    "jemalloc-walk": ("t = N.open_core(CORE, None, OV)", "t.jemalloc_chunks('used', 1)"),
    "tcmalloc-walk": ("t = N.open_core(CORE, None, OV)", "t.tcmalloc()"),
}

ALLOCATORS = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
              "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(name: str, src: Path, extra: list[str]) -> Path:
    out = CACHE / "bin" / name
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(out), str(src), *extra], check=True)
    return out


def make_core(chunks: int, threads: int, arena_max: int, preload: str = "") -> Path:
    d = CACHE / "cores" / (f"many-{chunks}-{threads}-{arena_max}" + (f"-{Path(preload).name}" if preload else ""))
    core = d / "core"
    many_bin = CACHE / "bin" / "many"
    # A core older than the program binary cannot be read by gdb (its r_debug moved): remade.
    if (d / "complete").exists() and not (many_bin.exists() and many_bin.stat().st_mtime > core.stat().st_mtime):
        return core
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    many = build("many", REPO / "corpora" / "many.c", [])
    env = dict(os.environ)
    if arena_max:
        env["GLIBC_TUNABLES"] = f"glibc.malloc.arena_max={arena_max}"
    if preload:
        env["LD_PRELOAD"] = preload
    r, w = os.pipe()
    log(f"making a core of {chunks:,} chunks, {threads} threads ...")
    proc = subprocess.Popen([str(many), str(chunks), str(w), str(threads)], pass_fds=(w,), env=env)
    os.close(w)
    ready, _, _ = select.select([r], [], [], 1800)
    if not ready or not os.read(r, 1):
        proc.kill()
        raise SystemExit("many did not become ready")
    os.close(r)
    subprocess.run(["gcore", "-o", str(d / "core.tmp"), str(proc.pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait()
    Path(f"{d}/core.tmp.{proc.pid}").rename(core)
    (d / "complete").write_text("ok\n")
    return core


def segments(core: Path) -> list[tuple[int, int, int]]:
    """(vaddr, file offset, file size) of every PT_LOAD of a 64-bit core."""
    with open(core, "rb") as f:
        eh = f.read(64)
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        out = []
        for _ in range(phnum):
            p_type, _flags, off, vaddr, _pa, filesz, _memsz, _al = struct.unpack("<IIQQQQQQ", f.read(phentsize))
            if p_type == 1:
                out.append((vaddr, off, filesz))
    return out


def floor(core: Path, ranges: list[tuple[int, int]], helper: Path) -> float:
    segs = segments(core)
    args = []
    for start, end in ranges:
        for vaddr, off, size in segs:
            lo, hi = max(start, vaddr), min(end, vaddr + size)
            if lo < hi:
                args.append(f"{off + lo - vaddr}:{hi - lo}")
    out = subprocess.run([str(helper), str(core), *args], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


class CoreMemory:
    """Reads target memory from a core's PT_LOAD segments (for the floor's ranges)."""

    def __init__(self, core: Path):
        import mmap  # noqa: PLC0415
        self.f = open(core, "rb")
        self.m = mmap.mmap(self.f.fileno(), 0, prot=mmap.PROT_READ)
        self.segs = sorted(segments(core))

    def read(self, addr: int, n: int) -> bytes:
        import bisect  # noqa: PLC0415
        i = bisect.bisect_right(self.segs, (addr, 1 << 64, 0)) - 1
        if i >= 0:
            vaddr, off, size = self.segs[i]
            if vaddr <= addr and addr + n <= vaddr + size:
                return self.m[off + addr - vaddr:off + addr - vaddr + n]
        return b""

    def u64s(self, addr: int, n: int) -> list[int]:
        import array  # noqa: PLC0415
        a = array.array("Q")
        a.frombytes(self.read(addr, 8 * n))
        return a.tolist()


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def allocator_ranges(core: Path, which: str, doc: dict) -> list[tuple[int, int]]:
    """The address ranges the allocator maps as heap: jemalloc's extents (every edata_t its
    radix tree names) or tcmalloc's spans (every span head of its page map), layouts from
    docs/jemalloc-layouts.md and docs/tcmalloc-layouts.md."""
    mem = CoreMemory(core)
    out = []
    if which == "jemalloc":
        seen = set()
        for ri, leaf in enumerate(mem.u64s(doc["rtree"] + 120, 1 << 18)):
            if not leaf:
                continue
            for v in mem.u64s(leaf, 1 << 18):
                e = (v & ((1 << 48) - 1)) & ~127
                if e and e not in seen:
                    seen.add(e)
                    addr, size = mem.u64s(e + 8, 2) or (0, 0)
                    out.append((addr, addr + (size & ~4095)))
    else:
        root = doc["globals"]["pageheap_"] + 524288
        for i, leaf in enumerate(mem.u64s(root, 1 << 17)):
            if not leaf:
                continue
            for j, s in enumerate(mem.u64s(leaf, 1 << 18)):
                if s:
                    start, length = mem.u64s(s, 2) or (0, 0)
                    if start == (i << 18) | j:
                        out.append((start << 13, (start + length) << 13))
    return merge(out)


def run_op(core: Path, op: str, overrides: dict, cold: bool = False) -> tuple[float, int]:
    """Seconds of the timed part and peak anonymous RSS (bytes) of a fresh process. `cold`: an
    empty DWARF layout cache, so the libc debug file's DWARF is parsed in the timed part."""
    setup, timed = OPS[op]
    code = ("import sys, time, json; sys.path.insert(0, %r)\n"
            "from heapwalk import _native as N\nCORE = %r; OV = %r\n%s\n"
            "t0 = time.perf_counter()\n%s\nprint('T', time.perf_counter() - t0)\n"
            % (str(REPO / "python"), str(core), overrides or None, setup, timed))
    env = dict(os.environ)
    if cold:
        env["HEAPWALK_CACHE_DIR"] = str(CACHE / "cold-layout-cache")
        shutil.rmtree(env["HEAPWALK_CACHE_DIR"], ignore_errors=True)
    proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.002)
    out, err = proc.communicate()
    secs = [float(line.split()[1]) for line in out.splitlines() if line.startswith("T ")]
    if proc.returncode != 0 or not secs:
        raise RuntimeError(f"{op} failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    return secs[0], peak


def gdb_walker(core: Path, style: str) -> tuple[int, float]:
    many = CACHE / "bin" / "many"
    env = dict(os.environ, HEAPWALK_GDB_STYLE=style)
    out = subprocess.run(["gdb", "-nx", "-batch", "-ex", f"source {REPO / 'bench' / 'gdb_walker.py'}",
                          str(many), str(core)], capture_output=True, text=True, timeout=7200, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("GDBWALK "):
            _, n, secs, _style = line.split()
            return int(n), float(secs)
    raise RuntimeError("gdb walker failed: " + out.stderr[-500:])


def parse_size(s: str) -> int:
    """'10M' -> 10,000,000; '250000' -> 250,000."""
    return int(float(s[:-1]) * 1e6) if s[-1] in "Mm" else int(s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="chunks per core (default 1M,10M,50M; --live: 10M)")
    ap.add_argument("--arenas", type=int, default=70, help="threads of the many-arenas core (0: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-gdb-walker", action="store_true")
    ap.add_argument("--gdb-styles", default="gef,value,raw",
                    help="gdb-API walkers to run on the first core (gef: ~265 s per 1 M chunks)")
    ap.add_argument("--ops", default=",".join(o for o in OPS if "json" not in o),
                    help="operations (also: chunks-json, chunks-json-whole, bins-json, bins-json-whole)")
    ap.add_argument("--allocators", default="jemalloc,tcmalloc",
                    help="other allocators preloaded into many for their own core ('' : none)")
    ap.add_argument("--allocator-size", default="10M", help="allocations per allocator core")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--live", action="store_true", help="the live rows only (bench/bench_live.py)")
    ap.add_argument("--live-threads", type=int, default=4, help="threads of the live target")
    args = ap.parse_args()
    if args.live:
        from bench_live import main_live  # noqa: E402  (bench/ is the script's directory)
        sizes = [(s, parse_size(s)) for s in (args.sizes or "10M").split(",")]
        return main_live(REPO, CACHE, build, PY, sizes, args.live_threads, args.repeat, args.json, log)
    helper = build("floor", REPO / "bench" / "floor.c", [])
    sys.path.insert(0, str(REPO / "python"))
    from heapwalk import _native as N  # noqa: E402

    configs = []
    for s in (args.sizes or "1M,10M,50M").split(","):
        configs.append((f"{s}", parse_size(s), 4, 0))
    if args.arenas:
        configs.append((f"{args.arenas} arenas", 2_000_000, args.arenas, 128))
    results = []
    for which in filter(None, args.allocators.split(",")):
        n = parse_size(args.allocator_size)
        core = make_core(n, 4, 0, ALLOCATORS[which])
        t = N.open_core(str(core))
        doc = t.jemalloc() if which == "jemalloc" else t.tcmalloc()
        t.close()
        ranges = allocator_ranges(core, which, doc)
        row = {"core": f"{args.allocator_size} {which}", "core_bytes": core.stat().st_size, "chunks": n,
               "arenas": len(doc.get("arenas", doc.get("pools", []))),
               "heap_bytes": sum(e - s for s, e in ranges), "ops": {}}
        row["floor_seconds"] = min(floor(core, ranges, helper) for _ in range(args.repeat))
        for method, ov in (("symbols", {}), ("no-symbols", {"no_files": True})):
            op = f"{which}-walk"
            try:
                runs = [run_op(core, op, ov) for _ in range(args.repeat)]
            except RuntimeError as e:
                row["ops"][f"{op} ({method})"] = {"error": str(e)}
                continue
            secs = min(r[0] for r in runs)
            row["ops"][f"{op} ({method})"] = {"seconds": round(secs, 4), "peak_anon_bytes": max(r[1] for r in runs),
                                              "chunks_per_second": int(n / secs) if secs else None}
        results.append(row)
        log(f"{which}: done")
    for label, n, threads, amax in configs:
        core = make_core(n, threads, amax)
        t = N.open_core(str(core))
        doc = t.arenas()
        t.close()
        arenas = doc["arenas"]
        if amax and len(arenas) < min(threads, amax):
            log(f"{label}: only {len(arenas)} arenas for {threads} threads (stale cached core? remove {core.parent})")
        chunks = sum(a["in_use"]["count"] + (a["fastbins"] or {}).get("count", 0) + a["bins"]["count"]
                     + a["tcache"]["count"] + 1 for a in arenas) + doc["mmapped"]["found"]["count"]
        ranges = [(h["address"], h["address"] + h["size"]) for a in arenas for h in a["heaps"]]
        heap_bytes = sum(e - s for s, e in ranges)
        row = {"core": label, "core_bytes": core.stat().st_size, "chunks": chunks, "arenas": len(arenas),
               "heap_bytes": heap_bytes, "ops": {}}
        row["floor_seconds"] = min(floor(core, ranges, helper) for _ in range(args.repeat))
        for op in args.ops.split(","):
            for method, ov in (("symbols", {}), ("symbols, cold cache", {}), ("no-symbols", {"no_files": True})):
                if method != "symbols" and op not in ("arenas",):
                    continue
                try:
                    runs = [run_op(core, op, ov, cold="cold" in method) for _ in range(args.repeat)]
                except RuntimeError as e:
                    row["ops"][f"{op} ({method})"] = {"error": str(e)}
                    continue
                secs = min(r[0] for r in runs)
                row["ops"][f"{op} ({method})"] = {"seconds": round(secs, 4), "peak_anon_bytes": max(r[1] for r in runs),
                                                  "chunks_per_second": int(chunks / secs) if secs else None}
        if not args.no_gdb_walker and label == configs[0][0]:
            for style in args.gdb_styles.split(","):
                log(f"{label}: gdb-API walker, {style} style")
                n_gdb, secs = gdb_walker(core, style)
                row[f"gdb_api_walker_{style}"] = {"chunks": n_gdb, "seconds": round(secs, 2),
                                                  "chunks_per_second": int(n_gdb / secs)}
        results.append(row)
        log(f"{label}: done")
    # table
    print(f"{'core':>10} {'chunks':>12} {'heap MiB':>9} {'floor s':>8}  operation                       seconds   M chunks/s  peak anon MiB  x floor")
    for row in results:
        first = True
        for op, r in row["ops"].items():
            lead = (f"{row['core']:>10} {row['chunks']:>12,} {row['heap_bytes'] / 2**20:>9.0f} {row['floor_seconds']:>8.3f}"
                    if first else " " * 42)
            first = False
            if "error" in r:
                print(f"{lead}  {op:<30} {r['error']}")
                continue
            print(f"{lead}  {op:<30} {r['seconds']:>8.3f} {r['chunks_per_second'] / 1e6:>11.2f} "
                  f"{r['peak_anon_bytes'] / 2**20:>14.1f} {r['seconds'] / row['floor_seconds']:>8.2f}")
        for style in ("gef", "value", "raw"):
            g = row.get(f"gdb_api_walker_{style}")
            if not g:
                continue
            mine = row["ops"].get("arenas (symbols)", {}).get("chunks_per_second")
            print(f"{'':>42}  gdb walker ({style:<5})             {g['seconds']:>8.2f} {g['chunks_per_second'] / 1e6:>11.4f}"
                  + (f"   heapwalk is {mine / g['chunks_per_second']:,.0f}x faster per chunk" if mine else ""))
    line = json.dumps({"results": results}, sort_keys=True)
    print("BENCH " + line)
    if args.json:
        Path(args.json).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
