"""Verdict scenarios of issue 12: corpora/java/InflaterRetain.java snapshotted once.

A scenario is a mode (``leak``: Inflaters kept and never end()ed; ``freed``: dropped and end()ed
by the JDK's Cleaner after a GC, glibc keeping what zlib freed), an Inflater count over some
threads, the JVM's size (-Xms/-Xmx with AlwaysPreTouch) and the malloc environment
(MALLOC_ARENA_MAX, the fixed thresholds of seeds/003). The JVM runs with nmtkit's quiescent
flags and NMT summary; before the core, jcmd's NMT summary is saved (the oracle of NMT
figures) and the program's own truth.json (what it did, its VmRSS). Cores are made sparse and
cached under a key hashing the source, the JDK build, the flags, the environment and the
arguments, like nmtkit's and seedkit's.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hwkit
import nmtkit
from hwkit import CACHE, CORPORA, READY_TIMEOUT, gcore, stop

SOURCE = CORPORA / "java" / "InflaterRetain.java"
# nmtkit's quiescent flags, then a Java heap touched up front: the JVM's size.
FLAGS = ["--add-opens", "java.base/java.util.zip=ALL-UNNAMED", "-XX:NativeMemoryTracking=summary",
         *nmtkit.JVM_FLAGS, "-XX:+AlwaysPreTouch"]
#: seeds/003's fixes: four arenas and the thresholds fixed at 128 KiB.
TUNED_ENV = {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "131072",
             "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_TOP_PAD_": "131072",
             "MALLOC_MMAP_MAX_": "65536"}
#: glibc chunk bytes of one used Inflater: z_stream (112 B calloc) + inflate_state (7160 B) +
#: its 32 KiB window, each with its 8-byte header, rounded to 16 (x86-64).
INFLATER_CHUNK_BYTES = 128 + 7168 + 32784


@dataclass
class TwoSnapshots:
    dir: Path
    core_a: Path
    core_b: Path
    truth_a: dict[str, Any]
    truth_b: dict[str, Any]


@dataclass
class Scenario:
    dir: Path
    core: Path
    truth: dict[str, Any]
    jcmd: str

    @property
    def nmt(self) -> nmtkit.JcmdSummary:
        return nmtkit.parse_jcmd(self.jcmd)


def _key(*extra: str) -> str:
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update(nmtkit._jdk_fingerprint().encode())  # pylint: disable=protected-access
    for e in (*FLAGS, *extra):
        h.update(b"\0" + e.encode())
    return h.hexdigest()[:16]


def build(cache: Path = CACHE) -> Path:
    out = cache / "java" / ("inflaterretain-" + _key("classes"))
    if (out / "InflaterRetain.class").exists():
        return out
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    r = subprocess.run([str(nmtkit.JAVAC), "-nowarn", "-d", str(tmp), str(SOURCE)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"javac failed:\n{r.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def scenario(name: str, args: list[str], heap_mib: int = 96, env: dict[str, str] | None = None,
             cache: Path = CACHE) -> Scenario:
    """The core of InflaterRetain run with `args` (cached)."""
    env = env or {}
    jvm = [*FLAGS, f"-Xms{heap_mib}m", f"-Xmx{heap_mib}m"]
    d = cache / "jvm-cores" / (f"verdict-{name}-" + _key(*jvm, *sorted(f"{k}={v}" for k, v in env.items()),
                                                          *args))
    if not (d / "complete").exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        cp = build(cache)
        fifo = d / "ready.fifo"
        os.mkfifo(fifo)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            proc = subprocess.Popen([str(nmtkit.JAVA), *jvm, "-cp", str(cp), "InflaterRetain", str(d),
                                     str(fifo), *args],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env={**os.environ, **env})
        except BaseException:
            os.close(rfd)
            raise
        hwkit.await_ready(proc, rfd, READY_TIMEOUT, f"InflaterRetain {name}")
        try:
            (d / "jcmd.txt").write_text(nmtkit.oracle(proc.pid, "summary", d))
            gcore(proc.pid, d / "core")
        finally:
            stop(proc)
            fifo.unlink(missing_ok=True)
        (d / "complete").write_text("ok\n")
    return Scenario(d, d / "core", json.loads((d / "truth.json").read_text()), (d / "jcmd.txt").read_text())


def spawn(outdir: Path, args: list[str], heap_mib: int = 96, env: dict[str, str] | None = None
          ) -> tuple[subprocess.Popen, dict[str, Any]]:
    """A live InflaterRetain (the caller kills it), once it is ready, and its truth.json."""
    cp = build()
    fifo = outdir / "ready.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        proc = subprocess.Popen([str(nmtkit.JAVA), *FLAGS, f"-Xms{heap_mib}m", f"-Xmx{heap_mib}m", "-cp", str(cp),
                                 "InflaterRetain", str(outdir), str(fifo), *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, **(env or {})})
    except BaseException:
        os.close(rfd)
        raise
    hwkit.await_ready(proc, rfd, READY_TIMEOUT, "InflaterRetain (live)")
    return proc, json.loads((outdir / "truth.json").read_text())


def _ready(rfd: int, proc: subprocess.Popen, what: str) -> None:
    ready, _, _ = select.select([rfd], [], [], READY_TIMEOUT)
    if not ready or not os.read(rfd, 1):
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise RuntimeError(f"InflaterRetain {what} not ready (exit {proc.returncode}){hwkit.disk_note(CACHE)}: "
                           f"{err.decode(errors='replace')[-2000:]}")


def two_snapshots(name: str, args: list[str], heap_mib: int = 96, cache: Path = CACHE) -> TwoSnapshots:
    """InflaterRetain run with `args` and then=free: a core after phase 1 (Inflaters leaked) and
    one after phase 2 (the same Inflaters end()ed by the Cleaner), of the same process (cached)."""
    jvm = [*FLAGS, f"-Xms{heap_mib}m", f"-Xmx{heap_mib}m"]
    args = [*args, "then=free"]
    d = cache / "jvm-cores" / (f"verdict-{name}-" + _key(*jvm, *args))
    if not (d / "complete").exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        cp = build(cache)
        fifo = d / "ready.fifo"
        os.mkfifo(fifo)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        keep = os.open(fifo, os.O_WRONLY)  # the FIFO must not read as EOF between the phases
        proc = subprocess.Popen([str(nmtkit.JAVA), *jvm, "-cp", str(cp), "InflaterRetain", str(d), str(fifo), *args],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _ready(rfd, proc, "phase 1")
            gcore(proc.pid, d / "core-a")
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            _ready(rfd, proc, "phase 2")
            gcore(proc.pid, d / "core-b")
        finally:
            os.close(rfd)
            os.close(keep)
            if proc.stdin:
                proc.stdin.close()
            stop(proc)
            fifo.unlink(missing_ok=True)
        (d / "complete").write_text("ok\n")
    return TwoSnapshots(d, d / "core-a", d / "core-b", json.loads((d / "truth.json").read_text()),
                        json.loads((d / "truth-2.json").read_text()))


def leak_then_freed() -> TwoSnapshots:
    """3,040 Inflaters leaked over 8 threads, then dropped and end()ed: leak becomes retention."""
    return two_snapshots("leak-then-freed", ["mode=leak", "inflaters=3040", "threads=8"])


# The three single-snapshot scenarios of the acceptance.
def inflater_leak() -> Scenario:
    """~15 MiB of Inflaters leaked (380 x ~40 KiB over 4 threads) in a ~150 MiB JVM."""
    return scenario("leak", ["mode=leak", "inflaters=380", "threads=4"])


def inflaters_freed() -> Scenario:
    """3,040 Inflaters over 8 threads end()ed by the Cleaner after a GC; glibc keeps the memory."""
    return scenario("freed", ["mode=freed", "inflaters=3040", "threads=8"])


def inflaters_freed_tuned() -> Scenario:
    """The same with MALLOC_ARENA_MAX=4 and the four thresholds fixed at 128 KiB."""
    return scenario("freed-tuned", ["mode=freed", "inflaters=3040", "threads=8"], env=TUNED_ENV)


#: seeds/004: 256 B of Unsafe memory per connection, 20,000 connections between the snapshots.
CONN_ARGS = ["inflaters=0", "threads=1", "conns=1000", "more=20000", "buffer=0", "session=256"]
