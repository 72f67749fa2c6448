"""Seeds-scenario kit: corpora/java/ConnGrowth.java snapshotted at its two phases.

Phase 1: Inflaters leaked over many threads (untracked by NMT) plus `conns` connections (a
direct ByteBuffer and an Unsafe block each: NMT "Other"); phase 2: `more` connections. The JVM
runs with nmtkit's quiescent flags (-Xint, SerialGC...) and NMT summary; readiness is one byte
per phase on a FIFO the kit keeps open; between the phases the kit writes a line to the
program's stdin. Two cores (~1.3 GB each) are cached under a key hashing the program source, the
JDK build, the flags and the arguments, like nmtkit's.
"""

from __future__ import annotations

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
from hwkit import CACHE, CORPORA, READY_TIMEOUT, gcore

SOURCE = CORPORA / "java" / "ConnGrowth.java"
FLAGS = ["-XX:NativeMemoryTracking=summary", *nmtkit.JVM_FLAGS, "-XX:MaxDirectMemorySize=256m"]
# 32 threads leak 2000 Inflaters (~80 MB of zlib windows NMT does not see: above the verdict's
# 64 MiB threshold); 500 connections, then 2000 more, of 8 KiB + 3000 bytes each.
ARGS = ["inflaters=2000", "threads=32", "conns=500", "more=2000", "buffer=8192", "session=3000"]


def _key(*extra: str) -> str:
    import hashlib  # noqa: PLC0415
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update(nmtkit._jdk_fingerprint().encode())  # pylint: disable=protected-access
    for e in (*FLAGS, *extra):
        h.update(b"\0" + e.encode())
    return h.hexdigest()[:16]


def build(cache: Path = CACHE) -> Path:
    out = cache / "java" / ("conngrowth-" + _key("classes"))
    if (out / "ConnGrowth.class").exists():
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


@dataclass
class Snapshots:
    dir: Path
    core_a: Path
    core_b: Path
    truth_a: dict[str, Any]
    truth_b: dict[str, Any]


def _wait(rfd: int, proc: subprocess.Popen, phase: int) -> None:
    ready, _, _ = select.select([rfd], [], [], READY_TIMEOUT)
    byte = os.read(rfd, 1) if ready else b""
    if byte != str(phase).encode():
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise RuntimeError(f"ConnGrowth phase {phase} not ready ({byte!r}, exit {proc.returncode})"
                           f"{hwkit.disk_note(CACHE)}: "
                           f"{err.decode(errors='replace')[-2000:]}")


def snapshots(args: list[str] = ARGS, cache: Path = CACHE) -> Snapshots:
    """The two cores (cached): after phase 1 and after phase 2 of the same process."""
    d = cache / "jvm-cores" / ("conngrowth-" + _key(*args))
    if not (d / "complete").exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        cp = build(cache)
        fifo = d / "ready.fifo"
        os.mkfifo(fifo)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        # A writer of our own: between the program's two writes the FIFO must not read as EOF.
        keep = os.open(fifo, os.O_WRONLY)
        proc = subprocess.Popen([str(nmtkit.JAVA), *FLAGS, "-cp", str(cp), "ConnGrowth", str(d),
                                 str(fifo), *args],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            _wait(rfd, proc, 1)
            gcore(proc.pid, d / "core-a")
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            _wait(rfd, proc, 2)
            gcore(proc.pid, d / "core-b")
        finally:
            os.close(rfd)
            os.close(keep)
            proc.kill()
            proc.wait(timeout=30)
            for f in (proc.stdin, proc.stderr):
                if f:
                    f.close()
            fifo.unlink()
        (d / "complete").write_text("ok\n")
    return Snapshots(d, d / "core-a", d / "core-b",
                     json.loads((d / "truth-1.json").read_text()),
                     json.loads((d / "truth-2.json").read_text()))
