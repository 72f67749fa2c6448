"""Integration test kit: corpora programs, their ground truth, their cores and live processes.

Programs in ``corpora/`` are compiled with ``gcc -O1 -g -pthread`` into a cache directory
(``$HEAPWALK_TEST_CACHE``, default ``<repo>/build/test-cache``).  A program signals that its heap
state is final by writing one byte to a pipe (no sleeps); it has written its ground truth
(``malloc_info.xml``, ``malloc_stats.txt``, ``truth.json``) before that.  Cores are made with
``gcore`` and cached under a key that hashes the program source, the arguments, the compiler and
the glibc version, so reruns reuse them.  Live processes are started fresh for each session and
killed at its end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CORPORA = REPO / "corpora"
GDBINIT = REPO / "gdbinit"
CACHE = Path(os.environ.get("HEAPWALK_TEST_CACHE", str(REPO / "build" / "test-cache")))
CFLAGS = ["-O1", "-g", "-pthread"]
# Sanitizer runs (scripts/test): pytest itself starts with the ASan runtime in LD_PRELOAD; only
# heapwalk's own processes (the CLI, gdb) get it again (heapwalk_env), never the corpus programs
# or gcore, whose glibc heaps must stay glibc's (ASan's malloc would replace them).
ASAN_PRELOAD = os.environ.get("HEAPWALK_ASAN_PRELOAD", "")
if ASAN_PRELOAD:
    os.environ.pop("LD_PRELOAD", None)
READY_TIMEOUT = 120.0  # seconds to wait for the readiness byte
CLI_TIMEOUT = 120

# The thread configurations of the acceptance criteria: (threads including main, M_ARENA_MAX).
# 16 threads on a 2-core machine get 16 arenas (glibc's limit is 8 * cores), so a fourth
# configuration forces sharing (16 threads over 4 arenas) to exercise per-arena attribution of
# several threads' tcaches and live chunks.
ARENA_CONFIGS = [(1, 0), (4, 0), (16, 0), (16, 4)]


def config_id(cfg: tuple[int, int]) -> str:
    threads, arena_max = cfg
    return f"{threads}t" + (f"-max{arena_max}" if arena_max else "")


# ---------------------------------------------------------------------------------------------
# building and running corpora
# ---------------------------------------------------------------------------------------------


def _tool_fingerprint() -> str:
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()
    libc = os.confstr("CS_GNU_LIBC_VERSION") or "?"
    return f"{gcc[0] if gcc else '?'}|{libc}|{' '.join(CFLAGS)}"


_FINGERPRINT: str | None = None


def source_key(name: str, *extra: str) -> str:
    global _FINGERPRINT
    if _FINGERPRINT is None:
        _FINGERPRINT = _tool_fingerprint()
    h = hashlib.sha256()
    h.update((CORPORA / f"{name}.c").read_bytes())
    h.update(_FINGERPRINT.encode())
    for e in extra:
        h.update(b"\0" + e.encode())
    return h.hexdigest()[:16]


def build(name: str, cache: Path = CACHE) -> Path:
    """Compile corpora/<name>.c (cached by source hash) and return the binary's path."""
    out = cache / "bin" / f"{name}-{source_key(name)}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    r = subprocess.run(
        ["gcc", *CFLAGS, "-o", str(tmp), str(CORPORA / f"{name}.c")],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"gcc failed for {name}.c:\n{r.stderr}")
    tmp.rename(out)
    return out


def spawn_ready(argv_before_fd: list[str], argv_after_fd: list[str] = (), timeout: float = READY_TIMEOUT) -> subprocess.Popen:
    """Start a program whose READY_FD argument comes after ``argv_before_fd``; return once it
    has written its readiness byte (select with a timeout on a pipe, no sleeping)."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [*argv_before_fd, str(w), *argv_after_fd],
            pass_fds=(w,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(w)
    return await_ready(proc, r, timeout, argv_before_fd[0])


def await_ready(proc: subprocess.Popen, r: int, timeout: float, label: str) -> subprocess.Popen:
    """Wait (select with a timeout, no sleeping) for the readiness byte on pipe ``r``; close it.
    Kill the program and raise with its stderr when it times out or exits first."""
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        byte = os.read(r, 1) if ready else b""
    finally:
        os.close(r)
    if not byte:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        why = "timed out" if not ready else f"exited with {proc.returncode}"
        raise RuntimeError(f"{label} {why} before signalling readiness{disk_note(CACHE)}: "
                           f"{err.decode(errors='replace')}")
    return proc


def disk_note(path: Path) -> str:
    """' (N MiB free on PATH's file system)', for errors that a full disk may explain."""
    try:
        free = shutil.disk_usage(path if path.is_dir() else path.parent).free
    except OSError:
        return ""
    return f" ({free >> 20} MiB free under {path})"


def sparsify(core: Path) -> None:
    """Turn the core's zero-filled blocks into holes (``fallocate --dig-holes``): gcore writes
    every reserved page, a 64 MiB PROT_NONE heap tail or an untouched stack included, so a JVM core
    of 1.3 GB occupies about 180 MB afterwards. The bytes read back are the same; a file system
    that cannot punch holes keeps the file as it is."""
    subprocess.run(["fallocate", "--dig-holes", str(core)], capture_output=True, check=False)


def gcore(pid: int, dest: Path, timeout: float = 600) -> Path:
    """Snapshot a running process with gdb's gcore into ``dest`` (atomically, made sparse)."""
    prefix = dest.parent / (dest.name + ".tmp")
    r = subprocess.run(
        ["gcore", "-o", str(prefix), str(pid)], capture_output=True, text=True, timeout=timeout
    )
    made = Path(f"{prefix}.{pid}")
    if r.returncode != 0 or not made.exists():
        made.unlink(missing_ok=True)
        raise RuntimeError(f"gcore failed ({r.returncode}){disk_note(dest.parent)}: {r.stdout}{r.stderr}")
    sparsify(made)
    made.rename(dest)
    return dest


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    if proc.stderr:
        proc.stderr.close()


# ---------------------------------------------------------------------------------------------
# malloc_info XML
# ---------------------------------------------------------------------------------------------


@dataclass
class HeapFigures:
    """One ``<heap nr=...>`` of malloc_info (glibc 2.36 malloc/malloc.c __malloc_info)."""

    nr: int
    fast_count: int | None  # None: no <total type="fast"> (glibc 2.43 has no fastbins)
    fast_size: int | None
    rest_count: int  # binned chunks + 1 (the top chunk)
    rest_size: int  # binned chunks' size fields *with flag bits* (chunksize_nomask) + top's size
    system_current: int
    system_max: int
    aspace_total: int
    aspace_mprotect: int
    subheaps: int | None
    sizes: list[dict[str, int]] = field(default_factory=list)  # <size .../> (fastbins, then bins)
    unsorted: dict[str, int] | None = None


@dataclass
class MallocInfo:
    heaps: list[HeapFigures]
    fast_count: int | None
    fast_size: int | None
    rest_count: int
    rest_size: int
    mmap_count: int
    mmap_size: int
    system_current: int
    system_max: int
    aspace_total: int
    aspace_mprotect: int


def _attrs(e: ET.Element) -> dict[str, int]:
    return {k: int(v) for k, v in e.attrib.items() if re.fullmatch(r"-?\d+", v)}


def _typed(parent: ET.Element, tag: str) -> dict[str, dict[str, int]]:
    return {e.get("type"): _attrs(e) for e in parent.findall(tag)}


def parse_malloc_info(text: str) -> MallocInfo:
    root = ET.fromstring(text)
    heaps = []
    for h in root.findall("heap"):
        tot, sysm, asp = _typed(h, "total"), _typed(h, "system"), _typed(h, "aspace")
        sizes_el = h.find("sizes")
        sizes = [_attrs(s) for s in sizes_el.findall("size")] if sizes_el is not None else []
        uns = sizes_el.find("unsorted") if sizes_el is not None else None
        heaps.append(
            HeapFigures(
                nr=int(h.get("nr")),
                fast_count=tot["fast"]["count"] if "fast" in tot else None,
                fast_size=tot["fast"]["size"] if "fast" in tot else None,
                rest_count=tot["rest"]["count"],
                rest_size=tot["rest"]["size"],
                system_current=sysm["current"]["size"],
                system_max=sysm["max"]["size"],
                aspace_total=asp["total"]["size"],
                aspace_mprotect=asp["mprotect"]["size"],
                subheaps=asp.get("subheaps", {}).get("size"),
                sizes=sizes,
                unsorted=_attrs(uns) if uns is not None else None,
            )
        )
    tot, sysm, asp = _typed(root, "total"), _typed(root, "system"), _typed(root, "aspace")
    return MallocInfo(
        heaps=heaps,
        fast_count=tot["fast"]["count"] if "fast" in tot else None,
        fast_size=tot["fast"]["size"] if "fast" in tot else None,
        rest_count=tot["rest"]["count"],
        rest_size=tot["rest"]["size"],
        mmap_count=tot["mmap"]["count"],
        mmap_size=tot["mmap"]["size"],
        system_current=sysm["current"]["size"],
        system_max=sysm["max"]["size"],
        aspace_total=asp["total"]["size"],
        aspace_mprotect=asp["mprotect"]["size"],
    )


# ---------------------------------------------------------------------------------------------
# corpora as fixtures
# ---------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    name: str
    args: list[str]
    binary: Path
    outdir: Path
    truth: dict[str, Any]
    info: MallocInfo | None
    core: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def stats_text(self) -> str:
        p = self.outdir / "malloc_stats.txt"
        return p.read_text() if p.exists() else ""


def _load(name: str, args: list[str], binary: Path, outdir: Path) -> Corpus:
    truth = json.loads((outdir / "truth.json").read_text())
    xml = outdir / "malloc_info.xml"
    info = parse_malloc_info(xml.read_text()) if xml.exists() else None
    return Corpus(name, list(args), binary, outdir, truth, info)


def _argv(name: str, binary: Path, outdir: Path, args: list[str]) -> tuple[list[str], list[str]]:
    """(arguments before READY_FD, arguments after it) for each corpus program."""
    if name == "arenas":  # arenas NTHREADS OUTDIR READY_FD [ARENA_MAX]
        return [str(binary), args[0], str(outdir)], list(args[1:])
    if name == "corrupt":  # corrupt OUTDIR READY_FD
        return [str(binary), str(outdir)], []
    if name == "many":  # many NCHUNKS READY_FD [NTHREADS] [OUTDIR]
        return [str(binary), args[0]], [*args[1:2], str(outdir)]
    raise ValueError(name)


class Corpora:
    """Session-wide cache of corpus cores and live processes."""

    def __init__(self, cache: Path, tmp: Path):
        self.cache = cache
        self.tmp = tmp
        self._cores: dict[tuple, Corpus] = {}
        self._live: dict[tuple, Corpus] = {}

    def core(self, name: str, *args: str) -> Corpus:
        key = (name, *args)
        if key in self._cores:
            return self._cores[key]
        binary = build(name, self.cache)
        d = self.cache / "cores" / f"{name}-{'-'.join(args) or 'default'}-{source_key(name, *args)}"
        core = d / "core"
        if not (d / "complete").exists():
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            before, after = _argv(name, binary, d, list(args))
            proc = spawn_ready(before, after)
            try:
                gcore(proc.pid, core)
            finally:
                stop(proc)
            (d / "complete").write_text("ok\n")
        c = _load(name, list(args), binary, d)
        c.core = core
        self._cores[key] = c
        return c

    def live(self, name: str, *args: str) -> Corpus:
        key = (name, *args)
        c = self._live.get(key)
        if c is not None and c.proc is not None and c.proc.poll() is None:
            return c
        binary = build(name, self.cache)
        d = self.tmp / f"live-{name}-{'-'.join(args) or 'default'}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        before, after = _argv(name, binary, d, list(args))
        proc = spawn_ready(before, after)
        c = _load(name, list(args), binary, d)
        c.proc = proc
        self._live[key] = c
        return c

    def close(self) -> None:
        for c in self._live.values():
            if c.proc is not None:
                stop(c.proc)
        self._live.clear()


# ---------------------------------------------------------------------------------------------
# running heapwalk
# ---------------------------------------------------------------------------------------------


def heapwalk_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "python") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONHOME", None)
    if ASAN_PRELOAD:
        env["LD_PRELOAD"] = ASAN_PRELOAD
    return env


def run_cli(*args: str, timeout: float = CLI_TIMEOUT,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python3 -m heapwalk ARGS`` from the repository root, under the test's interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "heapwalk", *map(str, args)],
        cwd=str(REPO),
        env={**heapwalk_env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_gdb(*gdb_args: str, commands: list[str], timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """A fresh ``gdb -nx -batch -x <repo>/gdbinit`` running ``commands`` (from /, to prove the
    gdbinit works from any working directory).  In the sanitizer run the rest of the calling test
    is skipped: gdb 13 hangs at start-up with libasan preloaded, so it cannot host that build
    (the plain run covers every gdb step)."""
    if ASAN_PRELOAD:
        import pytest  # noqa: PLC0415 - only the sanitizer run needs it here
        pytest.skip("gdb cannot host the ASan build (it hangs with libasan preloaded)")
    argv = ["gdb", "-nx", "-batch", "-x", str(GDBINIT)]
    for c in commands:
        argv += ["-ex", c]
    argv += list(map(str, gdb_args))
    return subprocess.run(
        argv, cwd="/", env=heapwalk_env(), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def extract_json(text: str) -> Any:
    """The first JSON object in ``text`` (gdb may print other lines around it)."""
    dec = json.JSONDecoder()
    for m in re.finditer(r"^\{", text, re.M):
        try:
            obj, _ = dec.raw_decode(text[m.start():])
            return obj
        except json.JSONDecodeError:
            continue
    raise AssertionError(f"no JSON object in output:\n{text[:4000]}")


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stdout and "Traceback" not in r.stderr, (
        f"Python traceback in output:\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    )


def describe(r: subprocess.CompletedProcess) -> str:
    return f"exit {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"


# ---------------------------------------------------------------------------------------------
# the oracle comparison shared by the core, live and gdb tests
# ---------------------------------------------------------------------------------------------

# libc's own chunks that the arenas program cannot list by pointer but knows the size of:
# glibc >= 2.30 allocates one tcache_perthread_struct per thread (uint16_t counts[64] +
# tcache_entry *entries[64] = 0x280 bytes, chunk 0x290) from the thread's arena on its first
# malloc.  truth.json lists it per thread, along with the FILE fopen() allocated and the dtv
# that pthread_create() calloc'd for every new thread (both in main_arena, made by the main
# thread).  SLACK covers libc allocations we have not identified; it is zero because the list
# above was found complete on glibc 2.36 (and a non-zero difference must be explained, not
# absorbed).
IN_USE_SLACK_COUNT = 0
IN_USE_SLACK_BYTES = 0

# malloc_info's <total type="rest"> adds the binned chunks' size fields with
# chunksize_nomask(), i.e. with their flag bits.  A free chunk in a bin always has PREV_INUSE
# set (a free predecessor would have been coalesced) and _int_free/_int_malloc write binned
# headers as `size | PREV_INUSE` (no NON_MAIN_ARENA bit, even in thread arenas), so
# rest.size == bins.bytes + top_bytes + bins.count * PREV_INUSE.  mallinfo2() masks the flags,
# which the totals check confirms independently.
PREV_INUSE = 1


def _arena_key(a: dict) -> Any:
    return "main" if a.get("main") else a["address"]


def version_matches(expected: str, got: Any) -> bool:
    """``got`` (heapwalk's ``glibc.version``) is ``expected`` or a range ``A-B`` containing it
    (without symbols the version may only be known as the range of the layout that fits)."""
    if not isinstance(got, str):
        return False
    if got == expected:
        return True

    def num(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))

    m = re.fullmatch(r"(\d+\.\d+)\s*-\s*(\d+\.\d+)", got)
    return bool(m) and num(m.group(1)) <= num(expected) <= num(m.group(2))


def compare_with_oracle(doc: dict, c: Corpus, *, tcache: bool = True, in_use: bool = True,
                        version: str = "2.36", version_range_ok: bool = False,
                        allowed_diagnostics: tuple[str, ...] = ("note",)) -> list[str]:
    """Every mismatch between a heapwalk ``arenas`` document and the program's ground truth,
    as 'field: expected X, got Y' lines (empty when everything matches).

    ``version``: the target's glibc (``version_range_ok``: a range containing it is accepted,
    for analyses without symbols).  When malloc_info has no ``<total type="fast">`` (glibc
    2.43 has no fastbins) the arenas' ``fastbins`` must be null and count as 0 in the totals.
    ``allowed_diagnostics``: diagnostic kinds that do not count as a mismatch."""
    bad: list[str] = []

    def eq(what: str, expected: Any, got: Any) -> None:
        if expected != got:
            bad.append(f"{what}: expected {expected!r}, got {got!r}")

    info, truth = c.info, c.truth
    assert info is not None
    eq("schema", "heapwalk/1", doc.get("schema"))
    got_version = (doc.get("glibc") or {}).get("version")
    if not (version_matches(version, got_version) if version_range_ok else got_version == version):
        bad.append(f"glibc.version: expected {version!r}{' (or a range containing it)' if version_range_ok else ''}, "
                   f"got {got_version!r}")
    arenas = doc["arenas"]
    no_fast = info.fast_count is None

    def fb(a: dict, k: str) -> int:
        return (a.get("fastbins") or {}).get(k) or 0

    eq("number of arenas (malloc_info <heap> count)", len(info.heaps), len(arenas))
    if arenas:
        eq("arenas[0].main", True, arenas[0].get("main"))
    for i, (a, h) in enumerate(zip(arenas, info.heaps)):
        name = f"arena[{i}]@{a['address']:#x}"
        if h.fast_count is None:
            eq(f"{name}.fastbins (malloc_info has no fast total)", None, a.get("fastbins"))
        else:
            eq(f"{name}.fastbins.count", h.fast_count, (a.get("fastbins") or {}).get("count"))
            eq(f"{name}.fastbins.bytes", h.fast_size, (a.get("fastbins") or {}).get("bytes"))
        eq(f"{name}.bins.count+1 (rest count)", h.rest_count, a["bins"]["count"] + 1)
        eq(f"{name}.bins.bytes+top_bytes+bins.count*PREV_INUSE (rest size)", h.rest_size,
           a["bins"]["bytes"] + a["top_bytes"] + a["bins"]["count"] * PREV_INUSE)
        eq(f"{name}.system_bytes", h.system_current, a["system_bytes"])
        eq(f"{name}.max_system_bytes", h.system_max, a["max_system_bytes"])
        eq(f"{name}.sum(heaps.size) (aspace total)", h.aspace_total, sum(x["size"] for x in a["heaps"]))
        eq(f"{name}.sum(heaps.mprotect_size) (aspace mprotect)", h.aspace_mprotect,
           sum(x["mprotect_size"] for x in a["heaps"]))
        if h.subheaps is not None:
            eq(f"{name}.len(heaps) (aspace subheaps)", h.subheaps, len(a["heaps"]))

    # Totals against mallinfo2() and malloc_info's global figures.
    mi = truth["mallinfo2"]
    fast_b = sum(fb(a, "bytes") for a in arenas)
    free_b = sum(fb(a, "bytes") + a["bins"]["bytes"] + a["top_bytes"] for a in arenas)
    system = sum(a["system_bytes"] for a in arenas)
    eq("sum(system_bytes) (mallinfo2.arena)", mi["arena"], system)
    eq("sum(bins.count+1) (mallinfo2.ordblks)", mi["ordblks"], sum(a["bins"]["count"] + 1 for a in arenas))
    eq("sum(fastbins.count) (mallinfo2.smblks)", mi["smblks"], sum(fb(a, "count") for a in arenas))
    eq("sum(fastbins.bytes) (mallinfo2.fsmblks)", mi["fsmblks"], fast_b)
    eq("sum(fastbins+bins+top bytes) (mallinfo2.fordblks)", mi["fordblks"], free_b)
    eq("sum(system_bytes)-free (mallinfo2.uordblks)", mi["uordblks"], system - free_b)
    eq("mmapped.count (mallinfo2.hblks)", mi["hblks"], doc["mmapped"]["count"])
    eq("mmapped.bytes (mallinfo2.hblkhd)", mi["hblkhd"], doc["mmapped"]["bytes"])
    if arenas:
        eq("arenas[0].top_bytes (mallinfo2.keepcost)", mi["keepcost"], arenas[0]["top_bytes"])
    eq("mmapped.count (malloc_info mmap count)", info.mmap_count, doc["mmapped"]["count"])
    eq("mmapped.bytes (malloc_info mmap size)", info.mmap_size, doc["mmapped"]["bytes"])
    eq("sum(system_bytes) (malloc_info system current)", info.system_current, system)
    eq("sum(max_system_bytes) (malloc_info system max)", info.system_max,
       sum(a["max_system_bytes"] for a in arenas))

    # What the program holds in mmapped chunks (it is the only one making any).
    if "threads" in truth:
        eq("mmapped.count (program)", sum(t["mmapped"]["count"] for t in truth.get("threads", [])),
           doc["mmapped"]["count"])
        eq("mmapped.bytes (program)", sum(t["mmapped"]["bytes"] for t in truth["threads"]),
           doc["mmapped"]["bytes"])

    by_addr = {a["address"]: a for a in arenas}
    main_addr = arenas[0]["address"] if arenas else None

    def truth_arena(t: dict) -> Any:
        return main_addr if t.get("main_arena") else t["arena"]

    # Threads: matched by lwp; tcache counts are what the program put there.
    threads = {t["lwp"]: t for t in doc["threads"]}
    for t in truth.get("threads", []):
        got = threads.get(t["lwp"])
        if got is None:
            bad.append(f"thread lwp {t['lwp']}: missing from threads {sorted(threads)}")
            continue
        eq(f"thread {t['lwp']}.arena", truth_arena(t), got.get("arena"))
        if tcache:
            eq(f"thread {t['lwp']}.tcache.count", t["tcache"]["count"], got["tcache"]["count"])
            eq(f"thread {t['lwp']}.tcache.bytes", t["tcache"]["bytes"], got["tcache"]["bytes"])
    if "threads" in truth:
        eq("number of threads", len(truth["threads"]), len(doc["threads"]))

    # Per arena: the tcache'd chunks of the threads attached to it, the free lists the
    # program filled, and in_use = what the program holds + libc's own chunks.
    per: dict[Any, dict[str, int]] = {}
    for t in truth.get("threads", []):
        p = per.setdefault(truth_arena(t), dict.fromkeys(
            ["tc", "tcb", "fb", "fbb", "live", "liveb"], 0))
        p["tc"] += t["tcache"]["count"]
        p["tcb"] += t["tcache"]["bytes"]
        p["fb"] += t["fastbins"]["count"]
        p["fbb"] += t["fastbins"]["bytes"]
        p["live"] += t["live"]["count"]
        p["liveb"] += t["live"]["bytes"]
    for lc in truth.get("libc_chunks", []):
        key = main_addr if lc.get("main_arena") else lc["arena"]
        p = per.setdefault(key, dict.fromkeys(["tc", "tcb", "fb", "fbb", "live", "liveb"], 0))
        p["live"] += 1
        p["liveb"] += lc["size"]
    for key, p in per.items():
        a = by_addr.get(key)
        if a is None:
            bad.append(f"arena {key!r} (from truth.json) not found among {[hex(x) for x in by_addr]}")
            continue
        name = f"arena@{key:#x}"
        if not no_fast and truth.get("has_fastbins", True):
            eq(f"{name}.fastbins.count (program)", p["fb"], fb(a, "count"))
            eq(f"{name}.fastbins.bytes (program)", p["fbb"], fb(a, "bytes"))
        if tcache:
            eq(f"{name}.tcache.count", p["tc"], a["tcache"]["count"])
            eq(f"{name}.tcache.bytes", p["tcb"], a["tcache"]["bytes"])
        if in_use:
            dc = a["in_use"]["count"] - p["live"]
            db = a["in_use"]["bytes"] - p["liveb"]
            if not (0 <= dc <= IN_USE_SLACK_COUNT and 0 <= db <= IN_USE_SLACK_BYTES):
                bad.append(
                    f"{name}.in_use: expected program + libc within slack "
                    f"(count {p['live']}..{p['live'] + IN_USE_SLACK_COUNT}, bytes "
                    f"{p['liveb']}..{p['liveb'] + IN_USE_SLACK_BYTES}), got count "
                    f"{a['in_use']['count']} bytes {a['in_use']['bytes']}")

    # A healthy heap has no diagnostics other than notes.
    real = [d for d in doc.get("diagnostics", []) if d.get("kind") not in allowed_diagnostics]
    if real:
        bad.append(f"diagnostics on a healthy heap: {real[:5]}")
    return bad


def compare_mmapped_chunks(target: list[str], truth: dict) -> list[str]:
    """The mmapped chunks ``chunks --used --json`` lists against the pointers the program holds
    (``mmapped_mems``, among them a posix_memalign one that is not at its mapping's start)."""
    want = sorted(m for t in truth.get("threads", []) for m in t.get("mmapped_mems", []))
    if not want:
        return ["the truth lists no mmapped_mems"]
    r = run_cli("chunks", *target, "--used", "--json")
    if r.returncode != 0 or not r.stdout.strip().startswith("{"):
        return [f"chunks --used failed: {describe(r)}"]
    got = sorted(c["address"] + 16 for c in json.loads(r.stdout)["chunks"] if c["state"] == "mmapped")
    if got == want:
        return []
    return [f"mmapped chunk pointers: missing {[hex(a) for a in sorted(set(want) - set(got))]}, "
            f"not the program's {[hex(a) for a in sorted(set(got) - set(want))]}"]


def assert_matches_oracle(doc: dict, c: Corpus, **kw: Any) -> None:
    bad = compare_with_oracle(doc, c, **kw)
    assert not bad, f"{len(bad)} mismatch(es) against the oracle for {c.name} {c.args}:\n  " + "\n  ".join(bad)


def import_heapwalk():
    """The heapwalk package from <repo>/python, for in-process use."""
    p = str(REPO / "python")
    if p not in sys.path:
        sys.path.insert(0, p)
    import heapwalk  # noqa: PLC0415

    return heapwalk


# ---------------------------------------------------------------------------------------------
# other glibc versions: corpora built and run inside Debian chroots, kernel-written cores
# ---------------------------------------------------------------------------------------------

# suite -> the glibc version its libc6 carries (corpora/chroots.sh builds them; bookworm = 2.36
# is the host).
SUITES = {"bullseye": "2.31", "trixie": "2.41", "sid": "2.43"}
CHROOT_CACHE = Path(os.environ.get("HEAPWALK_CHROOT_CACHE", "/var/cache/heapwalk/chroots"))
CHROOTS_SH = CORPORA / "chroots.sh"
CHROOTS_TIMEOUT = 3600  # debootstrap of one suite (network bound)
CHROOT_GCC_TIMEOUT = 300
CORE_DUMP_TIMEOUT = 300
# The arenas program's tcache truth assumes 7 chunks per bin; glibc 2.43's default is 16.
# The tunable is glibc's default everywhere else, so every chroot run gets it.
CHROOT_TUNABLES = "glibc.malloc.tcache_count=7"
CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")


def ensure_chroot(suite: str) -> Path:
    """The chroot of ``suite`` (built by corpora/chroots.sh when missing; cached)."""
    root = CHROOT_CACHE / suite
    if not (root / ".heapwalk-ready").exists():
        env = dict(os.environ, HEAPWALK_CHROOT_CACHE=str(CHROOT_CACHE))
        try:
            r = subprocess.run(["bash", str(CHROOTS_SH), suite], capture_output=True, text=True,
                               timeout=CHROOTS_TIMEOUT, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"corpora/chroots.sh {suite} timed out after {CHROOTS_TIMEOUT}s") from e
        if r.returncode != 0 or not (root / ".heapwalk-ready").exists():
            raise RuntimeError(f"corpora/chroots.sh {suite} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return root


def chroot_glibc(root: Path) -> str:
    """The Debian version of the chroot's libc6 (e.g. ``2.41-12+deb13u4``)."""
    p = root / ".heapwalk-glibc"
    return p.read_text().strip() if p.exists() else "?"


class KernelCores:
    """Makes the kernel write cores as ``core`` in the dumping process's working directory.

    ``/proc/sys/kernel/core_pattern`` is set to ``core`` for the session when it is something
    else (needs root) and restored by ``restore()``.  ``why_not`` says why kernel cores cannot
    be made (None when they can)."""

    def __init__(self) -> None:
        self.saved: str | None = None
        self.why_not: str | None = None
        try:
            cur = CORE_PATTERN.read_text().strip()
        except OSError as e:
            self.why_not = f"cannot read {CORE_PATTERN}: {e}"
            return
        if cur == "core":
            return
        try:
            CORE_PATTERN.write_text("core\n")
            self.saved = cur
        except OSError as e:
            self.why_not = f"core_pattern is {cur!r} and cannot be set to 'core': {e}"

    def restore(self) -> None:
        if self.saved is not None:
            try:
                CORE_PATTERN.write_text(self.saved + "\n")
            except OSError:
                pass
            self.saved = None


@dataclass
class ChrootCorpus(Corpus):
    suite: str = ""
    root: Path | None = None
    version: str = ""  # glibc major.minor
    core_method: str = ""  # "kernel" or "gcore"


def _raise_core_limit() -> None:
    """preexec_fn: `ulimit -c unlimited` and the default coredump_filter (anonymous private and
    shared memory, ELF headers) in the child, whatever the parent had."""
    import resource  # noqa: PLC0415

    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    try:
        with open("/proc/self/coredump_filter", "w") as f:
            f.write("0x33")
    except OSError:
        pass


def spawn_ready_in_chroot(root: Path, workdir: str, argv_before_fd: list[str],
                          argv_after_fd: list[str] = (), timeout: float = READY_TIMEOUT) -> subprocess.Popen:
    """Start ``argv`` (in-chroot paths) inside ``root`` with working directory ``workdir``
    (in-chroot), the core limit raised and CHROOT_TUNABLES set; return once it signalled
    readiness.  chroot(8) and sh exec the program, so the Popen's pid is the program's."""
    r, w = os.pipe()
    env = dict(os.environ, GLIBC_TUNABLES=CHROOT_TUNABLES)
    env.pop("LD_PRELOAD", None)
    try:
        proc = subprocess.Popen(
            ["chroot", str(root), "/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", workdir,
             *argv_before_fd, str(w), *argv_after_fd],
            pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=env, preexec_fn=_raise_core_limit,
        )
    finally:
        os.close(w)
    return await_ready(proc, r, timeout, f"{root}: {argv_before_fd[0]}")


def kernel_core(proc: subprocess.Popen, rundir: Path, dest: Path, sig: int = 11,
                timeout: float = CORE_DUMP_TIMEOUT) -> Path:
    """Kill ``proc`` with ``sig`` (SIGSEGV) and move the core the kernel wrote into ``rundir``
    (its working directory; ``core`` or ``core.PID``) to ``dest``."""
    pid = proc.pid
    os.kill(pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        raise RuntimeError(f"pid {pid} did not die within {timeout}s of signal {sig}")
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    for name in ("core", f"core.{pid}"):
        made = rundir / name
        if made.exists():
            shutil.move(str(made), str(dest))
            sparsify(dest)
            return dest
    raise RuntimeError(
        f"the kernel wrote no core for pid {pid} (exit {proc.returncode}) in {rundir}: "
        f"core_pattern={CORE_PATTERN.read_text().strip()!r}; stderr: {err[-2000:]}")


class ChrootCorpora:
    """Corpus programs compiled and run inside the chroots of ``SUITES``, with kernel-written
    cores cached outside the repository under ``<cache>/<suite>/`` (default
    ``$HEAPWALK_CHROOT_CACHE/cores``; key: program source, the chroot's libc6 version, CFLAGS,
    arguments, tunables) and live processes killed by ``close()``.  Binaries live in the chroot
    (``/hw/bin``), programs run with ``/hw/run/<key>`` as working directory, where the kernel
    writes ``core``."""

    def __init__(self, kernel: KernelCores, cache: Path = CHROOT_CACHE / "cores"):
        self.cache = cache
        self.kernel = kernel
        self._roots: dict[str, Path] = {}
        self._cores: dict[tuple, ChrootCorpus] = {}
        self._live: list[ChrootCorpus] = []

    def root(self, suite: str) -> Path:
        if suite not in self._roots:
            self._roots[suite] = ensure_chroot(suite)
        return self._roots[suite]

    def key(self, suite: str, name: str, *args: str) -> str:
        root = self.root(suite)
        h = hashlib.sha256()
        h.update((CORPORA / f"{name}.c").read_bytes())
        for e in (suite, chroot_glibc(root), " ".join(CFLAGS), CHROOT_TUNABLES, *args):
            h.update(b"\0" + e.encode())
        return h.hexdigest()[:16]

    def build(self, suite: str, name: str) -> str:
        """Compile corpora/<name>.c inside the chroot; returns the binary's in-chroot path."""
        root = self.root(suite)
        k = self.key(suite, name)
        inside = f"/hw/bin/{name}-{k}"
        if (root / inside.lstrip("/")).exists():
            return inside
        (root / "hw" / "src").mkdir(parents=True, exist_ok=True)
        (root / "hw" / "bin").mkdir(parents=True, exist_ok=True)
        src = f"/hw/src/{name}-{k}.c"
        shutil.copyfile(CORPORA / f"{name}.c", root / src.lstrip("/"))
        tmp = inside + ".tmp"
        r = subprocess.run(["chroot", str(root), "gcc", *CFLAGS, "-o", tmp, src],
                           capture_output=True, text=True, timeout=CHROOT_GCC_TIMEOUT,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"gcc in {root} failed for {name}.c:\n{r.stderr}")
        os.rename(root / tmp.lstrip("/"), root / inside.lstrip("/"))
        return inside

    def _start(self, suite: str, name: str, args: list[str], rundir_in: str) -> subprocess.Popen:
        root = self.root(suite)
        binary = self.build(suite, name)
        before, after = _argv(name, Path(binary), Path(rundir_in), args)
        return spawn_ready_in_chroot(root, rundir_in, before, after)

    def _corpus(self, suite: str, name: str, args: list[str], binary_in: str, d: Path) -> ChrootCorpus:
        root = self.root(suite)
        base = _load(name, args, root / binary_in.lstrip("/"), d)
        return ChrootCorpus(**base.__dict__, suite=suite, root=root, version=SUITES[suite])

    def core(self, suite: str, name: str, *args: str) -> ChrootCorpus:
        key = (suite, name, *args)
        if key in self._cores:
            return self._cores[key]
        root = self.root(suite)
        # Kernel cores; gcore only when the kernel cannot write them and the version allows
        # (gdb's gcore loses the thread stacks/TLS of glibc 2.43 processes: their madvise guard
        # regions make it fail a read and write zeros for the rest).
        how = "kernel"
        if self.kernel.why_not:
            if tuple(map(int, SUITES[suite].split("."))) >= (2, 43):
                raise RuntimeError(
                    f"cannot make a kernel core of a glibc {SUITES[suite]} process "
                    f"({self.kernel.why_not}), and gcore cannot snapshot glibc >= 2.43 threads "
                    "(guard regions in their stacks): run as root with core_pattern settable")
            how = "gcore"
        k = self.key(suite, name, *args, how)
        stem = f"{name}-{'-'.join(args) or 'default'}-{how}"
        d = self.cache / suite / f"{stem}-{k}"
        if not (d / "complete").exists():
            if d.parent.exists():  # cores of older versions of the program or the chroot
                for old in d.parent.glob(f"{stem}-*"):
                    if old.is_dir() and re.fullmatch(r"[0-9a-f]{16}", old.name[len(stem) + 1:]):
                        shutil.rmtree(old, ignore_errors=True)
            d.mkdir(parents=True)
            rundir_in = f"/hw/run/{name}-{k}"
            rundir = root / rundir_in.lstrip("/")
            if rundir.exists():
                shutil.rmtree(rundir)
            rundir.mkdir(parents=True)
            proc = self._start(suite, name, list(args), rundir_in)
            try:
                if how == "kernel":
                    kernel_core(proc, rundir, d / "core.tmp")
                else:
                    gcore(proc.pid, d / "core.tmp")
            finally:
                stop(proc)
            for f in rundir.iterdir():
                shutil.move(str(f), str(d / f.name))
            rundir.rmdir()
            (d / "core.tmp").rename(d / "core")
            (d / "complete").write_text("ok\n")
        c = self._corpus(suite, name, list(args), self.build(suite, name), d)
        c.core = d / "core"
        c.core_method = how
        self._cores[key] = c
        return c

    def live(self, suite: str, name: str, *args: str) -> ChrootCorpus:
        """A fresh live process (killed by close())."""
        root = self.root(suite)
        k = self.key(suite, name, *args)
        rundir_in = f"/hw/run/live-{name}-{k}-{os.getpid()}"
        rundir = root / rundir_in.lstrip("/")
        if rundir.exists():
            shutil.rmtree(rundir)
        rundir.mkdir(parents=True)
        proc = self._start(suite, name, list(args), rundir_in)
        c = self._corpus(suite, name, list(args), self.build(suite, name), rundir)
        c.proc = proc
        self._live.append(c)
        return c

    def close(self) -> None:
        for c in self._live:
            if c.proc is not None:
                stop(c.proc)
            if c.outdir.exists():
                shutil.rmtree(c.outdir, ignore_errors=True)
        self._live.clear()
