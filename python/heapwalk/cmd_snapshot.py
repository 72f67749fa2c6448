"""``snapshot --pid PID -o FILE``: a compact core of a live process.

The process is captured the way every ``--pid`` command captures it (stopped only while its
memory is copied) and the copy is kept as FILE: an ELF core with the process's threads,
auxv and file mappings in its notes and only the memory heapwalk reads (glibc's heaps,
mmapped chunks, stacks, the modules' writable data, a JVM's own tables), the Java heap left
out unless ``--java-heap``. gdb opens it (``gdb PROGRAM FILE``) and every heapwalk command
analyses it like any core. Untouched pages are holes: the file is sparse.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Optional

from . import render
from .commands import Command, Invocation
from .errors import HeapwalkError, UsageError

Record = Dict[str, Any]


def _live_inferior() -> Optional[Dict[str, Any]]:
    """Inside gdb attached to a live process: its pid and threads; else None."""
    try:
        from . import gdbcmd  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return gdbcmd.live_inferior()


class Snapshot(Command):
    """``snapshot``: write a compact core of a live process."""

    name = "snapshot"
    summary = "write a compact core of a live process (what heapwalk reads; no Java heap)"
    description = ("Copy a live process the way --pid commands do (stopped only for the copy) "
                   "and keep the copy as FILE: an ELF core holding the threads, auxv, file "
                   "mappings and the memory heapwalk reads (glibc heaps, mmapped chunks, "
                   "stacks, writable module data, a JVM's own tables), untouched pages as "
                   "holes; a JVM's Java heap is left out unless --java-heap. gdb opens it and "
                   "every heapwalk command analyses it like a core. Prints its size next to "
                   "what gcore would have written.")
    #: The CLI opens no target: the capture is this command's own.
    needs_target = False

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-o", "--output", required=True, metavar="FILE",
                            help="the core file to write (written under a temporary name "
                                 "and renamed into place when complete)")
        parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
        parser.add_argument("--java-heap", action="store_true",
                            help="copy a JVM's Java heap too (no analysis reads it)")

    def collect(self, inv: Invocation) -> Record:
        import heapwalk  # pylint: disable=import-outside-toplevel
        args = inv.args
        if getattr(args, "core", None):
            raise UsageError("snapshot copies a live process: heapwalk snapshot --pid PID -o "
                             "FILE (a core file is already a snapshot)")
        out = args.output
        if os.path.isdir(out):
            raise HeapwalkError("is a directory", subject=out, hint="give the file to write")
        if os.path.lexists(out) and not args.force:
            raise HeapwalkError("exists", subject=out, hint="--force replaces it")
        pid = getattr(args, "pid", None)
        threads = None
        if pid is None:
            inferior = _live_inferior()
            if inferior is None:
                raise UsageError("snapshot needs --pid PID")
            pid, threads = inferior["pid"], inferior["threads"]
        if os.path.lexists(out):
            os.unlink(out)
        native = heapwalk.native()
        handle = native.attach(int(pid), threads, None, getattr(args, "sysroot", None), True,
                               bool(getattr(args, "java_heap", False)),
                               getattr(args, "max_copy", None), os.path.abspath(out), None)
        try:
            described = handle.describe()
        finally:
            handle.close()
        capture = described.get("capture") or {}
        return render.wrap(self.name, {
            "snapshot": {"path": out, "apparent_bytes": capture.get("file_bytes"),
                         "allocated_bytes": capture.get("file_allocated_bytes"),
                         "gcore_bytes": capture.get("gcore_bytes"),
                         "threads": len(described.get("threads", []))},
            "target": {"kind": "live", "pid": int(pid),
                       "frozen_seconds": capture.get("frozen_seconds"),
                       "copied_bytes": capture.get("copied_bytes"), "capture": capture},
            "diagnostics": described.get("diagnostics", []),
        })

    def render(self, document: Record, inv: Invocation) -> List[str]:
        snap = document["snapshot"]
        target = document["target"]
        capture = target.get("capture") or {}
        frozen = target.get("frozen_seconds") or 0.0
        lines = ["wrote %s: %s apparent, %s on disk (sparse)"
                 % (snap["path"], render.size(snap.get("apparent_bytes") or 0),
                    render.size(snap.get("allocated_bytes") or 0)),
                 "  pid %d, %d threads, %s copied; %s"
                 % (target["pid"], snap.get("threads", 0), render.size(capture.get("copied_bytes", 0)),
                    ("stopped %.3f s" % frozen) if frozen else "stopped by gdb"),
                 "  gcore would write %s for these mappings" % render.size(snap.get("gcore_bytes") or 0)]
        excluded = capture.get("excluded_bytes") or 0
        if excluded:
            lines.append("  left out: %s of the Java heap (resident); --java-heap copies it"
                         % render.size(excluded))
        return lines

    def status(self, document: Record) -> int:
        return 0
