"""Memory figures of a process and of its memory cgroup, as `watch` samples them.

A process: ``/proc/PID/status`` (VmRSS, RssAnon, RssFile, RssShmem) and its state and exit code
from ``/proc/PID/stat`` (a zombie still has them). A memory cgroup, either version:

======== ============================ ===============================================
version  usage / limit / high         kills, pressure, detail
======== ============================ ===============================================
v1       memory.usage_in_bytes,       memory.oom_control (``oom_kill N``, ``under_oom``),
         memory.limit_in_bytes        memory.stat (``total_rss``, ``total_cache``, ...)
v2       memory.current, memory.max,  memory.events (``oom_kill``, ``oom``, ``max``,
         memory.high                  ``high``), memory.pressure (PSI), memory.stat
======== ============================ ===============================================

A limit of ``max`` (v2) or the page-rounded LONG_MAX (v1) means none. Everything here reads
small text files: no analysis, no engine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

Record = Dict[str, Any]

#: Where the hierarchies are mounted (v2 at /sys/fs/cgroup on unified systems, or beside v1).
V2_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
V1_MEMORY_ROOT = "/sys/fs/cgroup/memory"
#: v1 reports "no limit" as LONG_MAX rounded down to a page; anything above this is no limit.
NO_LIMIT = 1 << 60


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _int(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _keyed(text: Optional[str]) -> Dict[str, int]:
    """``key value`` lines (memory.stat, memory.events, memory.oom_control)."""
    out: Dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def parse_pressure(text: Optional[str]) -> Optional[Record]:
    """PSI lines ``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` (and ``full``)."""
    if not text:
        return None
    out: Record = {}
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] not in ("some", "full"):
            continue
        for word in words[1:]:
            key, _, value = word.partition("=")
            try:
                out["%s_%s" % (words[0], key)] = float(value) if key != "total" else int(value)
            except ValueError:
                pass
    return out or None


@dataclass
class Cgroup:
    """A memory cgroup: its path in the hierarchy, version and directory."""

    path: str
    version: int
    directory: str

    def sample(self) -> Record:
        """usage, limit, high, the OOM-kill count, pressure and the stat lines that matter."""
        d = self.directory
        if self.version == 1:
            usage = _int(_read(os.path.join(d, "memory.usage_in_bytes")))
            limit = _int(_read(os.path.join(d, "memory.limit_in_bytes")))
            oom = _keyed(_read(os.path.join(d, "memory.oom_control")))
            stat = _keyed(_read(os.path.join(d, "memory.stat")))
            return {"path": self.path, "version": 1, "usage_bytes": usage,
                    "limit_bytes": limit if limit is not None and limit < NO_LIMIT else None,
                    "high_bytes": None, "oom_kill": oom.get("oom_kill", 0),
                    "under_oom": bool(oom.get("under_oom", 0)),
                    "rss_bytes": stat.get("total_rss", stat.get("rss")),
                    "cache_bytes": stat.get("total_cache", stat.get("cache")),
                    "pressure": None}
        usage = _int(_read(os.path.join(d, "memory.current")))
        limit = _int(_read(os.path.join(d, "memory.max")))
        high = _int(_read(os.path.join(d, "memory.high")))
        events = _keyed(_read(os.path.join(d, "memory.events")))
        stat = _keyed(_read(os.path.join(d, "memory.stat")))
        return {"path": self.path, "version": 2, "usage_bytes": usage,
                "limit_bytes": limit if limit is not None and limit < NO_LIMIT else None,
                "high_bytes": high if high is not None and high < NO_LIMIT else None,
                "oom_kill": events.get("oom_kill", 0), "oom": events.get("oom", 0),
                "max_events": events.get("max", 0), "high_events": events.get("high", 0),
                "rss_bytes": stat.get("anon"), "cache_bytes": stat.get("file"),
                "pressure": parse_pressure(_read(os.path.join(d, "memory.pressure")))}

    def procs(self) -> List[int]:
        """The processes in the cgroup (not its children)."""
        out = []
        for word in (_read(os.path.join(self.directory, "cgroup.procs")) or "").split():
            try:
                out.append(int(word))
            except ValueError:
                pass
        return out

    def contains(self, other_path: str) -> bool:
        """True when cgroup path ``other_path`` is this cgroup or below it."""
        mine = self.path.rstrip("/") or "/"
        return other_path == mine or mine == "/" or other_path.startswith(mine + "/")


def cgroup_lines(pid: Optional[int] = None) -> List[Tuple[str, str]]:
    """(controllers, path) of /proc/PID/cgroup (``self`` when pid is None)."""
    text = _read("/proc/%s/cgroup" % ("self" if pid is None else pid)) or ""
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((parts[1], parts[2]))
    return out


def memory_cgroup_of(pid: Optional[int] = None, v2_roots: Tuple[str, ...] = V2_ROOTS,
                     v1_root: str = V1_MEMORY_ROOT) -> Optional[Cgroup]:
    """The memory cgroup that limits ``pid``: v1's memory controller if it is mounted, else
    the v2 group (where its memory.max exists)."""
    lines = cgroup_lines(pid)
    for controllers, path in lines:
        if "memory" in controllers.split(","):
            directory = v1_root + path.rstrip("/")
            if os.path.exists(os.path.join(directory, "memory.usage_in_bytes")):
                return Cgroup(path, 1, directory)
    for controllers, path in lines:
        if controllers == "":
            for root in v2_roots:
                directory = root + path.rstrip("/")
                if os.path.exists(os.path.join(directory, "memory.current")):
                    return Cgroup(path, 2, directory)
    return None


def open_cgroup(spec: str, v2_roots: Tuple[str, ...] = V2_ROOTS,
                v1_root: str = V1_MEMORY_ROOT) -> Optional[Cgroup]:
    """A cgroup from what a user types: its directory (``/sys/fs/cgroup/memory/app``,
    ``/sys/fs/cgroup/unified/app``) or its path in the hierarchy (``/app``)."""
    candidates = []
    if os.path.isdir(spec):
        candidates.append(os.path.realpath(spec))
    candidates += [v1_root + "/" + spec.strip("/"), *(r + "/" + spec.strip("/") for r in v2_roots)]
    for directory in candidates:
        directory = directory.rstrip("/")
        if os.path.exists(os.path.join(directory, "memory.usage_in_bytes")):
            inside = directory == v1_root or directory.startswith(v1_root + "/")
            path = "/" + directory[len(v1_root):].strip("/") if inside else directory
            return Cgroup(path, 1, directory)
        if os.path.exists(os.path.join(directory, "memory.current")):
            root = next((r for r in sorted(v2_roots, key=len, reverse=True)
                         if directory == r or directory.startswith(r + "/")), None)
            path = "/" + directory[len(root):].strip("/") if root else directory
            return Cgroup(path, 2, directory)
    return None


def process_sample(pid: int) -> Optional[Record]:
    """RSS figures of ``pid`` (None once it is gone or a zombie)."""
    text = _read("/proc/%d/status" % pid)
    if text is None:
        return None
    fields: Dict[str, int] = {}
    state = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "State":
            state = value.strip()[:1]
        elif key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmSwap"):
            try:
                fields[key] = int(value.split()[0]) * 1024
            except (ValueError, IndexError):
                pass
    if state in ("Z", "X") or "VmRSS" not in fields:
        return None
    return {"pid": pid, "rss_bytes": fields.get("VmRSS", 0),
            "rss_anon_bytes": fields.get("RssAnon", 0), "rss_file_bytes": fields.get("RssFile", 0),
            "rss_shmem_bytes": fields.get("RssShmem", 0), "swap_bytes": fields.get("VmSwap", 0)}


def exit_code(pid: int) -> Optional[int]:
    """The wait status of a zombie (``/proc/PID/stat`` field 52), None if not a zombie."""
    text = _read("/proc/%d/stat" % pid)
    if not text:
        return None
    rest = text[text.rfind(")") + 2:].split()
    if not rest or rest[0] not in ("Z", "X") or len(rest) < 50:
        return None
    try:
        return int(rest[49])
    except ValueError:
        return None


def sample(pid: Optional[int], group: Optional[Cgroup]) -> Record:
    """One sample: the time, the process's RSS (None once it is gone) and the cgroup's."""
    out: Record = {"time": time.time(), "pid": pid}
    proc = process_sample(pid) if pid is not None else None
    out["alive"] = proc is not None
    for key in ("rss_bytes", "rss_anon_bytes", "rss_file_bytes", "rss_shmem_bytes", "swap_bytes"):
        out[key] = proc.get(key) if proc else None
    out["cgroup"] = group.sample() if group is not None else None
    return out
