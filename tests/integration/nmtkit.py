"""NMT test kit: the Java corpus (corpora/java/NmtLoad.java), its cores and live JVMs, and a
parser for `jcmd PID VM.native_memory summary scale=1` (the oracle).

A JVM is started with -XX:NativeMemoryTracking=<level> and flags that keep it quiescent once it
is ready (-Xint: no compiler threads; SerialGC: no concurrent GC threads; -XX:-UsePerfData: no
sampler) and small reservations (cores of ~1.3 GB, ~180 MB on disk once made sparse).  Readiness: the program writes one byte
to a FIFO the test created (select with a timeout, no sleeps).  Then the test runs jcmd and,
immediately after, gcore; both outputs are cached under a key hashing the program source, the
JDK build and the arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hwkit
from hwkit import CACHE, CORPORA, READY_TIMEOUT, gcore, stop

JAVA_HOME = Path(os.environ.get("HEAPWALK_JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"))
JAVA = JAVA_HOME / "bin" / "java"
JAVAC = JAVA_HOME / "bin" / "javac"
JCMD = JAVA_HOME / "bin" / "jcmd"
LIBJVM = JAVA_HOME / "lib" / "server" / "libjvm.so"
SOURCE = CORPORA / "java" / "NmtLoad.java"

JVM_FLAGS = ["-Xint", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xms16m", "-Xmx16m",
             "-XX:CompressedClassSpaceSize=16m", "-XX:ReservedCodeCacheSize=8m",
             "-XX:MaxMetaspaceSize=32m", "-Xss512k"]
# The load every NMT corpus carries: zlib streams leaked over 4 threads, direct buffers,
# Unsafe blocks, extra classes.
LOAD = ["inflaters=24", "deflaters=12", "idle=10", "threads=4", "direct=6", "unsafe=9", "classes=5"]


def have_jdk() -> bool:
    return JAVA.exists() and JAVAC.exists() and JCMD.exists()


def _jdk_fingerprint() -> str:
    r = subprocess.run([str(JAVA), "-version"], capture_output=True, text=True)
    bid = ""
    try:
        out = subprocess.run(["readelf", "-n", str(LIBJVM)], capture_output=True, text=True).stdout
        m = re.search(r"Build ID: ([0-9a-f]+)", out)
        bid = m.group(1) if m else ""
    except OSError:
        pass
    return r.stderr.strip() + "|" + bid


def _key(*extra: str) -> str:
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update(_jdk_fingerprint().encode())
    for e in (*JVM_FLAGS, *extra):
        h.update(b"\0" + e.encode())
    return h.hexdigest()[:16]


def build_java(cache: Path = CACHE) -> Path:
    """Compile NmtLoad.java (cached by source and JDK) and return the classpath directory."""
    out = cache / "java" / _key("classes")
    if (out / "NmtLoad.class").exists():
        return out
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    r = subprocess.run([str(JAVAC), "-nowarn", "-d", str(tmp), str(SOURCE)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"javac failed:\n{r.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def spawn_jvm(level: str, outdir: Path, load: list[str], timeout: float = READY_TIMEOUT) -> subprocess.Popen:
    """Start NmtLoad with NMT at `level`; return once it signalled readiness on a FIFO."""
    cp = build_java()
    fifo = outdir / "ready.fifo"
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)
    # Open our end first (non-blocking) so the JVM's open for writing does not block forever.
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        proc = subprocess.Popen(
            [str(JAVA), f"-XX:NativeMemoryTracking={level}", *JVM_FLAGS, "-cp", str(cp), "NmtLoad",
             str(outdir), str(fifo), *load],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except BaseException:
        os.close(rfd)
        raise
    return hwkit.await_ready(proc, rfd, timeout, f"NmtLoad (NMT {level})")


def jcmd_nmt(pid: int, what: str = "summary") -> str:
    r = subprocess.run([str(JCMD), str(pid), "VM.native_memory", what, "scale=1"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"jcmd failed: {r.stdout}{r.stderr}")
    return r.stdout


def oracle(pid: int, level: str, outdir: Path) -> str:
    """The summary jcmd prints, taken twice: the first run starts the Attach Listener thread
    and makes NMT record the committed parts of every thread stack (it allocates list nodes,
    mtNMT, *after* copying the malloc counters, so that run's figures miss them); the second
    run's figures are then what the image holds, except for the blocks the attach operation
    itself holds while it reports (see test_nmt.JCMD_INTERNAL_*)."""
    first = jcmd_nmt(pid, "detail" if level == "detail" else "summary")
    if level == "detail":
        (outdir / "jcmd-detail.txt").write_text(first)
    return jcmd_nmt(pid, "summary")


# ---------------------------------------------------------------------------------------------
# jcmd output
# ---------------------------------------------------------------------------------------------

@dataclass
class JcmdCategory:
    name: str
    reserved: int
    committed: int
    malloc: tuple[int, int] = (0, 0)  # (bytes, count)
    arena: tuple[int, int] = (0, 0)
    mmap: tuple[int, int] = (0, 0)  # (reserved, committed)
    stack: tuple[int, int] | None = None
    threads: int | None = None
    tracking_overhead: int | None = None


@dataclass
class JcmdSummary:
    disabled: bool
    total: tuple[int, int] = (0, 0)
    total_malloc: tuple[int, int] | None = (0, 0)  # None: not printed (jcmd 11)
    total_mmap: tuple[int, int] | None = (0, 0)
    categories: dict[str, JcmdCategory] = field(default_factory=dict)


# JDK 21 adds ", readonly=N" to "Shared class space" (MemSummaryReporter::report_summary_of_type).
_CAT = re.compile(r"^-\s*(.+?) \(reserved=(\d+), committed=(\d+)(?:, readonly=\d+)?\)")


def parse_jcmd(text: str) -> JcmdSummary:
    if "Native memory tracking is not enabled" in text:
        return JcmdSummary(disabled=True)
    s = JcmdSummary(disabled=False)
    m = re.search(r"^Total: reserved=(\d+), committed=(\d+)", text, re.M)
    s.total = (int(m.group(1)), int(m.group(2)))
    # jcmd 11 prints no "malloc:" / "mmap:" lines under Total (memReporter.cpp of jdk11u).
    m = re.search(r"^\s+malloc: (\d+) #(\d+)", text, re.M)
    s.total_malloc = (int(m.group(1)), int(m.group(2))) if m else None
    m = re.search(r"^\s+mmap:\s+reserved=(\d+), committed=(\d+)", text, re.M)
    s.total_mmap = (int(m.group(1)), int(m.group(2))) if m else None
    cur: JcmdCategory | None = None
    for line in text.splitlines():
        m = _CAT.match(line)
        if m:
            cur = JcmdCategory(m.group(1).strip(), int(m.group(2)), int(m.group(3)))
            s.categories[cur.name] = cur
            continue
        if cur is None:
            continue
        line = line.strip()
        if line.startswith("(  ") or line.startswith("(    "):
            continue  # metaspace / class-count sub-lines
        if (m := re.match(r"\(malloc=(\d+)(?: #(\d+))?", line)):
            cur.malloc = (int(m.group(1)), int(m.group(2) or 0))
        elif (m := re.match(r"\(arena=(\d+) #(\d+)", line)):
            cur.arena = (int(m.group(1)), int(m.group(2)))
        elif (m := re.match(r"\(mmap: reserved=(\d+), committed=(\d+)", line)):
            cur.mmap = (int(m.group(1)), int(m.group(2)))
        elif (m := re.match(r"\(stack: reserved=(\d+), committed=(\d+)", line)):
            cur.stack = (int(m.group(1)), int(m.group(2)))
        elif (m := re.match(r"\(threads? #(\d+)", line)):  # 17: "thread #", 21: "threads #"
            cur.threads = int(m.group(1))
        elif (m := re.match(r"\(tracking overhead=(\d+)", line)):
            cur.tracking_overhead = int(m.group(1))
    return s


@dataclass
class JcmdCommitted:
    base: int
    size: int
    frames: list[str]  # "function+0xoff" as jcmd prints them, "" for an unnamed pc


@dataclass
class JcmdReserved:
    base: int
    size: int
    category: str
    all_committed: bool  # "reserved and committed"
    frames: list[str]
    committed: list[JcmdCommitted] = field(default_factory=list)

    def committed_parts(self) -> list[JcmdCommitted]:
        """The committed regions NMT holds: jcmd does not print the single part of a region
        committed whole by the stack that reserved it (MemDetailReporter::
        report_virtual_memory_region), only "reserved and committed"."""
        if self.all_committed and not self.committed:
            return [JcmdCommitted(self.base, self.size, self.frames)]
        return self.committed


_RESERVED = re.compile(r"^\[0x([0-9a-f]+) - 0x([0-9a-f]+)\] (reserved and committed|reserved) (\d+) "
                       r"for (.+?)(?: from)?\s*$")
_COMMITTED = re.compile(r"^\s*\[0x([0-9a-f]+) - 0x([0-9a-f]+)\] committed (\d+)(?: from)?\s*$")
_FRAME = re.compile(r"^\s+\[0x[0-9a-f]+\] ?(.*)$")


def parse_jcmd_vm_map(text: str) -> list[JcmdReserved]:
    """The "Virtual memory map" of `jcmd VM.native_memory detail scale=1`: each reserved region
    (address order) with its stack and committed parts, each with its stack."""
    if "Virtual memory map:" not in text:
        return []
    body = text.split("Virtual memory map:", 1)[1].split("Details:", 1)[0]
    out: list[JcmdReserved] = []
    frames: list[str] | None = None  # the stack being read (a region's or a committed part's)
    for line in body.splitlines():
        if (m := _RESERVED.match(line)):
            out.append(JcmdReserved(int(m.group(1), 16), int(m.group(4)), m.group(5),
                                    m.group(3) != "reserved", []))
            frames = out[-1].frames
        elif (m := _COMMITTED.match(line)) and out:
            out[-1].committed.append(JcmdCommitted(int(m.group(1), 16), int(m.group(3)), []))
            frames = out[-1].committed[-1].frames
        elif (m := _FRAME.match(line)) and frames is not None:
            frames.append(m.group(1).strip())
    return out


# ---------------------------------------------------------------------------------------------
# cores and live JVMs
# ---------------------------------------------------------------------------------------------

@dataclass
class JvmCorpus:
    level: str
    outdir: Path
    truth: dict[str, Any]
    jcmd: str  # summary (scale=1) captured just before the snapshot, "" with NMT off
    jcmd_detail: str = ""
    core: Path | None = None
    proc: subprocess.Popen | None = None

    @classmethod
    def cached(cls, level: str, d: Path) -> "JvmCorpus":
        """A snapshot cached in `d`: truth.json, core and the jcmd outputs taken before it."""
        def text(name: str) -> str:
            return (d / name).read_text() if (d / name).exists() else ""
        return cls(level, d, json.loads((d / "truth.json").read_text()), text("jcmd.txt"),
                   text("jcmd-detail.txt"), core=d / "core")

    @property
    def summary(self) -> JcmdSummary:
        return parse_jcmd(self.jcmd)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class JvmCorpora:
    def __init__(self, cache: Path, tmp: Path):
        self.cache = cache
        self.tmp = tmp
        self._cores: dict[str, JvmCorpus] = {}
        self._live: list[JvmCorpus] = []

    def core(self, level: str, load: list[str] = LOAD) -> JvmCorpus:
        key = f"{level}-" + _key(level, *load)
        if key in self._cores:
            return self._cores[key]
        d = self.cache / "jvm-cores" / key
        if not (d / "complete").exists():
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            proc = spawn_jvm(level, d, load)
            try:
                if level != "off":
                    (d / "jcmd.txt").write_text(oracle(proc.pid, level, d))
                gcore(proc.pid, d / "core")
            finally:
                stop(proc)
            (d / "complete").write_text("ok\n")
        c = JvmCorpus.cached(level, d)
        self._cores[key] = c
        return c

    def live(self, level: str, load: list[str] = LOAD) -> JvmCorpus:
        d = self.tmp / f"jvm-live-{level}-{len(self._live)}"
        d.mkdir(parents=True)
        proc = spawn_jvm(level, d, load)
        text = oracle(proc.pid, level, d) if level != "off" else ""
        c = JvmCorpus(level, d, json.loads((d / "truth.json").read_text()), text, proc=proc)
        self._live.append(c)
        return c

    def close(self) -> None:
        for c in self._live:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait(timeout=30)
            if c.proc is not None and c.proc.stderr:
                c.proc.stderr.close()
        self._live.clear()
