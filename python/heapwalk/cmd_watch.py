"""``watch (--pid PID | --cgroup PATH) -o DIR``: snapshots before the OOM killer fires.

An OOM kill is a SIGKILL: no core, no jcmd afterwards. ``watch`` samples the target's memory
(its RSS; its memory cgroup's usage, limit, OOM-kill count and pressure: :mod:`.cgroup`) every
``--sample`` seconds and takes a snapshot — the ``report --json`` document of a live capture
(the short freeze of ``--pid``), optionally with the compact core (``--core``) — at the start,
every ``--every`` seconds, whenever usage crosses one of the ``--at`` percentages of the limit
upwards, and whenever the growth of the last samples predicts the limit before the next
periodic snapshot. DIR keeps the first snapshot and the last ``--keep`` − 1 (a ring); every file
is written under a temporary name and renamed into place, so a kill of the watcher or of the
target never leaves a half-written snapshot. When the target ends, ``watch`` records how (exit
status or signal, the cgroup's ``oom_kill`` count, the kernel's OOM-kill line, the last usage
against the limit), prints a summary and the diff between the first and the last snapshot, and
exits 0.

Files in DIR: ``snap-NNNNNN.json`` (a report document plus ``"watch": {seq, time, reason,
sample, frozen_seconds, core}``), ``snap-NNNNNN.core`` (``--core``), ``samples.jsonl`` (every
sample, one JSON object a line) and ``watch.json`` (the watcher: target, options, and at the end
``death``).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import signal
import sys
import time
from typing import Any, Dict, List, Optional, TextIO, Tuple

from . import cgroup as cg
from . import render
from .commands import Command, Invocation, Record, parse_size
from .errors import HeapwalkError, UsageError

#: Snapshot file names: snap-000001.json, snap-000001.core.
SNAP_RE = re.compile(r"^snap-(\d{6,})\.(json|core)$")
#: How many samples the growth rate is computed over (and at least how many seconds).
RATE_SAMPLES = 8
#: A threshold fires again only after usage fell this many points below it.
REARM_POINTS = 5.0


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name, fsync, rename into place."""
    tmp = "%s.tmp%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    _sync_dir(os.path.dirname(path) or ".")


def _sync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def snapshots_in(directory: str) -> List[Tuple[int, str]]:
    """(seq, path) of the complete ``snap-N.json`` files in ``directory``, by seq."""
    out = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        m = SNAP_RE.match(name)
        if m and m.group(2) == "json":
            out.append((int(m.group(1)), os.path.join(directory, name)))
    return sorted(out)


def clean_leftovers(directory: str) -> List[str]:
    """Removes what a killed watcher may have left: temporary files, and cores whose JSON was
    never written. Returns the names removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    have_json = {SNAP_RE.match(n).group(1) for n in names  # type: ignore[union-attr]
                 if SNAP_RE.match(n) and n.endswith(".json")}
    for name in names:
        m = SNAP_RE.match(name)
        stale = ".tmp" in name or ".heapwalk-tmp" in name
        if m and m.group(2) == "core" and m.group(1) not in have_json:
            stale = True
        if stale and (name.startswith("snap-") or name.startswith("watch.json")
                      or name.startswith(".snap-")):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


class KernelLog:
    """The kernel's OOM-kill lines for one pid, read from /dev/kmsg from now on (root only;
    silently nothing elsewhere)."""

    def __init__(self) -> None:
        self.fd: Optional[int] = None
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = None

    def oom_kill_of(self, pid: int) -> Optional[str]:
        """The kernel's ``Killed process PID (...)`` line for ``pid`` since the watch began."""
        if self.fd is None:
            return None
        found = None
        while True:
            try:
                record = os.read(self.fd, 8192).decode("utf-8", "replace")
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten records: go on with the next
                    continue
                break
            if not record:
                break
            text = record.split(";", 1)[-1].strip()
            if re.search(r"Killed process %d \(" % pid, text) or re.search(r"\bpid=%d\b" % pid, text):
                if "Killed process" in text or found is None:
                    found = text
        return found

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def describe_status(status: int) -> Record:
    """A wait status as {exit_code} or {signal, signal_name}."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "signal %d" % sig
        return {"signal": sig, "signal_name": name, "core_dumped": os.WCOREDUMP(status)}
    if os.WIFEXITED(status):
        return {"exit_code": os.WEXITSTATUS(status)}
    return {"status": status}


def usage_of(sample: Record) -> Tuple[Optional[int], Optional[int]]:
    """(usage, limit) the thresholds apply to: the cgroup's, else none."""
    group = sample.get("cgroup")
    if group and group.get("limit_bytes"):
        return group.get("usage_bytes"), group.get("limit_bytes")
    return None, None


class Watcher:
    """The sampling loop and the snapshot ring (``Watch.collect`` drives it)."""

    def __init__(self, args: argparse.Namespace, err: TextIO) -> None:
        self.args = args
        self.err = err
        self.dir = args.output
        self.group: Optional[cg.Cgroup] = None
        self.pid: Optional[int] = args.pid
        self.samples: List[Record] = []
        self.seq = 0
        self.kept: List[Tuple[int, str]] = []
        self.taken: List[Record] = []
        self.armed = {float(p): True for p in args.at}
        self.last_snapshot = 0.0
        self.last_periodic = 0.0
        self.last_duration = 0.0
        self.stop_reason: Optional[str] = None
        self.kmsg = KernelLog()
        self.oom_before: Optional[int] = None

    # ---- setup ------------------------------------------------------------------------------
    def resolve(self) -> None:
        args = self.args
        if args.cgroup:
            self.group = cg.open_cgroup(args.cgroup)
            if self.group is None:
                raise HeapwalkError("not a memory cgroup (no memory.current or "
                                    "memory.usage_in_bytes there)", subject=args.cgroup)
            if self.pid is None:
                self.pid = self._biggest_process()
        else:
            if not os.path.exists("/proc/%d" % self.pid):
                raise HeapwalkError("no such process", subject="pid %d" % self.pid)
            self.group = cg.memory_cgroup_of(self.pid)
        mine = cg.memory_cgroup_of(None)
        # Inside a limited target cgroup the watcher shares the target's OOM domain (and its
        # copies are charged to the target's limit); an unlimited group is no such domain.
        if self.group is not None and mine is not None and mine.version == self.group.version \
                and self.group.contains(mine.path) and self.group.path not in ("/", "") \
                and self.group.sample().get("limit_bytes"):
            raise UsageError("heapwalk watch runs inside the target's memory cgroup %s: run it "
                             "outside (an OOM kill there can take the watcher too, and the "
                             "copies it makes are charged to the target's limit)" % self.group.path)
        os.makedirs(self.dir, exist_ok=True)
        for name in clean_leftovers(self.dir):
            self.log("removed %s (left by an earlier watcher)" % name)
        self.kept = snapshots_in(self.dir)
        self.seq = self.kept[-1][0] if self.kept else 0

    def _biggest_process(self) -> int:
        assert self.group is not None
        best, best_rss = None, -1
        for pid in self.group.procs():
            s = cg.process_sample(pid)
            if s and s["rss_bytes"] > best_rss:
                best, best_rss = pid, s["rss_bytes"]
        if best is None:
            raise HeapwalkError("no process in the cgroup", subject=self.group.directory)
        return best

    def log(self, text: str) -> None:
        if not self.args.quiet:
            self.err.write("heapwalk watch: %s\n" % render.safe(text))
            self.err.flush()

    # ---- the loop ---------------------------------------------------------------------------
    def run(self) -> Record:
        self.resolve()
        start = time.time()
        meta: Record = {"schema": render.SCHEMA, "pid": self.pid,
                        "cgroup": self.group.path if self.group else None,
                        "cgroup_directory": self.group.directory if self.group else None,
                        "cgroup_version": self.group.version if self.group else None,
                        "started": start, "options": {
                            "every": self.args.every, "sample": self.args.sample,
                            "at": list(self.args.at), "keep": self.args.keep,
                            "core": bool(self.args.core), "max_disk": self.args.max_disk}}
        atomic_write(os.path.join(self.dir, "watch.json"), (json.dumps(meta, indent=1) + "\n").encode())
        first = cg.sample(self.pid, self.group)
        if first.get("cgroup"):
            self.oom_before = first["cgroup"].get("oom_kill")
        usage, limit = usage_of(first)
        self.log("watching pid %d%s; snapshots in %s" % (
            self.pid, (" in cgroup %s (%s of %s)" % (self.group.path, render.size(usage or 0),
                                                      render.size(limit)) if limit else
                       " in cgroup %s (no limit)" % self.group.path) if self.group else "",
            self.dir))
        handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            handlers[sig] = signal.signal(sig, self._on_signal)
        death: Optional[Record] = None
        try:
            self._record(first)
            if first["alive"]:
                self.snapshot(first, "first")
            while self.stop_reason is None:
                deadline = time.monotonic() + self.args.sample
                s = cg.sample(self.pid, self.group)
                self._record(s)
                if not s["alive"]:
                    death = self._death(s)
                    break
                reason = self._due(s)
                if reason:
                    self.snapshot(s, reason)
                    continue
                if self.args.duration and time.time() - start >= self.args.duration:
                    self.stop_reason = "--duration elapsed"
                    break
                pause = deadline - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            self.kmsg.close()
        meta["ended"] = time.time()
        meta["death"] = death
        meta["stopped"] = self.stop_reason
        meta["snapshots"] = [os.path.basename(p) for _, p in snapshots_in(self.dir)]
        atomic_write(os.path.join(self.dir, "watch.json"), (json.dumps(meta, indent=1) + "\n").encode())
        return self._summary(meta)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_reason = "stopped by %s" % signal.Signals(signum).name

    def _record(self, s: Record) -> None:
        self.samples.append(s)
        del self.samples[:-RATE_SAMPLES * 4]
        line = (json.dumps(s, separators=(",", ":")) + "\n").encode()
        # One write of a short line with O_APPEND: a kill leaves at most a torn last line.
        fd = os.open(os.path.join(self.dir, "samples.jsonl"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def _due(self, s: Record) -> Optional[str]:
        now = time.monotonic()
        if self.args.every and now - self.last_periodic >= self.args.every:
            return "periodic"
        usage, limit = usage_of(s)
        if not usage or not limit:
            return None
        pct = 100.0 * usage / limit
        fired = None
        for at in sorted(self.armed):
            if self.armed[at] and pct >= at:
                self.armed[at] = False
                fired = "threshold %g%%" % at
            elif not self.armed[at] and pct < at - REARM_POINTS:
                self.armed[at] = True
        if fired:
            return fired
        # Growth over the last samples: would the limit be reached before the next periodic
        # snapshot (or, without one, within the time a snapshot takes plus a few samples)?
        window = [x for x in self.samples[-RATE_SAMPLES:] if usage_of(x)[0] is not None]
        if len(window) >= 3:
            dt = window[-1]["time"] - window[0]["time"]
            du = usage_of(window[-1])[0] - usage_of(window[0])[0]  # type: ignore[operator]
            if dt > 0 and du > 0:
                eta = (limit - usage) / (du / dt)
                horizon = (self.args.every - (now - self.last_periodic)) if self.args.every \
                    else 4 * self.args.sample + self.last_duration
                gap = max(2 * self.last_duration, self.args.sample, 1.0)
                if eta <= max(horizon, self.last_duration) and now - self.last_snapshot >= gap:
                    return "predicted (limit in %.1f s)" % eta
        return None

    def snapshot(self, s: Record, reason: str) -> Optional[Record]:
        """Capture the target, write snap-N.json (and .core), trim the ring."""
        import heapwalk  # pylint: disable=import-outside-toplevel
        from .cmd_report import build_report  # pylint: disable=import-outside-toplevel
        t0 = time.monotonic()
        self.last_snapshot = t0
        if reason in ("periodic", "first"):
            self.last_periodic = t0
        seq = self.seq + 1
        base = os.path.join(self.dir, "snap-%06d" % seq)
        core = base + ".core" if self.args.core and self._disk_allows() else None
        target = None
        try:
            target = heapwalk.attach(self.pid, sysroot=self.args.sysroot or root_of(self.pid),
                                     max_copy=self.args.max_copy, snapshot=core,
                                     store=self.args.copy_to)
            doc = build_report(target, classes=not self.args.no_classes)
            capture = target.describe().get("capture") or {}
        except Exception as exc:  # pylint: disable=broad-except  # the target may have died
            if core and os.path.exists(core):
                os.unlink(core)
            if cg.process_sample(self.pid) is None:
                return None  # it ended meanwhile: the loop records how
            self.log("snapshot %d (%s) failed: %s" % (seq, reason, exc))
            self.last_duration = time.monotonic() - t0
            return None
        finally:
            if target is not None:
                try:
                    target.close()
                except Exception:  # pylint: disable=broad-except
                    pass
        self.seq = seq
        tgt = doc.setdefault("target", {})
        if isinstance(tgt, dict):
            tgt.setdefault("kind", "live")
            tgt.setdefault("pid", self.pid)
            tgt["frozen_seconds"] = capture.get("frozen_seconds")
            tgt["copied_bytes"] = capture.get("copied_bytes")
            tgt["capture"] = capture
        after = cg.sample(self.pid, self.group)
        doc["watch"] = {"seq": seq, "time": time.time(), "reason": reason, "sample": s,
                        "after": after, "frozen_seconds": capture.get("frozen_seconds"),
                        "snapshot_seconds": time.monotonic() - t0,
                        "core": os.path.basename(core) if core else None}
        path = base + ".json"
        atomic_write(path, (json.dumps(doc, separators=(",", ":")) + "\n").encode())
        self.last_duration = time.monotonic() - t0
        usage, limit = usage_of(s)
        self.log("snapshot %d (%s): %s%s; stopped %.3f s" % (
            seq, reason, render.size(s.get("rss_bytes") or 0) + " RSS",
            (", cgroup %.1f %% of %s" % (100.0 * usage / limit, render.size(limit))) if limit else "",
            capture.get("frozen_seconds") or 0.0))
        self.kept.append((seq, path))
        self.taken.append(doc["watch"])
        self._trim()
        return doc["watch"]

    def _disk_allows(self) -> bool:
        if not self.args.max_disk:
            return True
        used = 0
        for name in os.listdir(self.dir):
            if name.endswith(".core"):
                try:
                    used += os.stat(os.path.join(self.dir, name)).st_blocks * 512
                except OSError:
                    pass
        return used < self.args.max_disk

    def _trim(self) -> None:
        """Keep the first snapshot and the last keep-1; cores beyond --max-disk go first."""
        keep = max(self.args.keep, 2)
        while len(self.kept) > keep:
            seq, path = self.kept.pop(1)
            for p in (path, path[:-5] + ".core"):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
        if self.args.max_disk:
            cores = [p[:-5] + ".core" for _, p in self.kept[:-1] if os.path.exists(p[:-5] + ".core")]
            while cores and not self._disk_allows():
                os.unlink(cores.pop(0))

    # ---- the end ----------------------------------------------------------------------------
    def _death(self, s: Record) -> Record:
        death: Record = {"pid": self.pid, "time": s["time"]}
        status = cg.exit_code(self.pid) if self.pid is not None else None
        if status is not None:
            death.update(describe_status(status))
        group = s.get("cgroup")
        if group is not None:
            death["oom_kill_before"] = self.oom_before
            death["oom_kill_after"] = group.get("oom_kill")
            death["oom_killed_cgroup"] = (self.oom_before is not None and group.get("oom_kill") is not None
                                          and group["oom_kill"] > self.oom_before)
        line = self.kmsg.oom_kill_of(self.pid) if self.pid is not None else None
        death["kernel_log"] = line
        if line and "signal" not in death:
            death.update({"signal": 9, "signal_name": "SIGKILL", "core_dumped": False})
        death["oom_killed"] = bool(line) or bool(death.get("oom_killed_cgroup")
                                                and death.get("signal") in (None, 9))
        if death["oom_killed"] and "signal" not in death:
            death.update({"signal": 9, "signal_name": "SIGKILL", "core_dumped": False})
        last = [x for x in self.samples if x.get("alive")]
        if last:
            usage, limit = usage_of(last[-1])
            death["last_sample"] = last[-1]
            death["last_usage_bytes"] = usage
            death["limit_bytes"] = limit
        return death

    def _summary(self, meta: Record) -> Record:
        snaps = snapshots_in(self.dir)
        doc: Record = {"watch": meta, "snapshots": [], "diff": None}
        for seq, path in snaps:
            try:
                with open(path, encoding="utf-8") as f:
                    w = json.load(f).get("watch", {})
            except (OSError, ValueError):
                continue
            doc["snapshots"].append({"seq": seq, "file": os.path.basename(path),
                                     "reason": w.get("reason"), "time": w.get("time"),
                                     "sample": w.get("sample"),
                                     "frozen_seconds": w.get("frozen_seconds"),
                                     "core": w.get("core")})
        if len(snaps) >= 2:
            from .cmd_diff import compare, load  # pylint: disable=import-outside-toplevel
            try:
                a, kind_a = load(snaps[0][1], None, False)
                b, kind_b = load(snaps[-1][1], None, False)
                doc["diff"] = compare(a, b, snaps[0][1], snaps[-1][1], kind_a, kind_b)
            except Exception as exc:  # pylint: disable=broad-except
                doc["diff_error"] = str(exc)
        return render.wrap("watch", doc)


def root_of(pid: Optional[int]) -> Optional[str]:
    """``/proc/PID/root`` when the process sees another root than heapwalk (a container, a
    chroot): its files are found there. None when it is ours."""
    if pid is None:
        return None
    mine = "/proc/self/root"
    theirs = "/proc/%d/root" % pid
    try:
        a, b = os.stat(mine), os.stat(theirs)
    except OSError:
        return None
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        try:
            if os.readlink("/proc/self/ns/mnt") == os.readlink("/proc/%d/ns/mnt" % pid):
                return None
        except OSError:
            return None
        # Another mount namespace over the same root directory: its mounts may differ.
    return theirs


def render_watch(doc: Record, style: render.Style) -> List[str]:
    meta = doc.get("watch", {})
    lines = []
    death = meta.get("death")
    pid = meta.get("pid")
    if death:
        if death.get("signal"):
            how = "killed by %s" % death.get("signal_name", "signal %s" % death["signal"])
            if death.get("oom_killed"):
                how += " (the OOM killer"
                if death.get("oom_kill_after") is not None and death.get("oom_kill_before") is not None:
                    how += ": oom_kill %s -> %s in %s" % (death["oom_kill_before"], death["oom_kill_after"],
                                                          meta.get("cgroup"))
                how += ")"
        elif death.get("exit_code") is not None:
            how = "exited with status %d" % death["exit_code"]
        elif death.get("oom_kill_after") is not None and death.get("oom_kill_before") is not None:
            how = "ended (how is unknown: not heapwalk's child; oom_kill %s -> %s)" % (
                death["oom_kill_before"], death["oom_kill_after"])
        else:
            how = "ended (how is unknown: not heapwalk's child)"
        lines.append("pid %s %s" % (pid, how))
        if death.get("last_usage_bytes") and death.get("limit_bytes"):
            lines.append("  last usage %s of the %s limit (%.1f %%)" % (
                render.size(death["last_usage_bytes"]), render.size(death["limit_bytes"]),
                100.0 * death["last_usage_bytes"] / death["limit_bytes"]))
        if death.get("kernel_log"):
            lines.append("  kernel: %s" % death["kernel_log"][:200])
    else:
        lines.append("pid %s still running: %s" % (pid, meta.get("stopped") or "watch ended"))
    snaps = doc.get("snapshots", [])
    if snaps:
        last = snaps[-1]
        s = last.get("sample") or {}
        group = s.get("cgroup") or {}
        pct = ""
        if group.get("limit_bytes"):
            pct = ", cgroup %.1f %%" % (100.0 * (group.get("usage_bytes") or 0) / group["limit_bytes"])
        lines.append("%d snapshots kept; last: %s (%s, RSS %s%s)" % (
            len(snaps), last["file"], last.get("reason"), render.size(s.get("rss_bytes") or 0), pct))
    else:
        lines.append("no snapshot was taken")
    if doc.get("diff"):
        from .cmd_diff import render_diff  # pylint: disable=import-outside-toplevel
        lines.append("")
        lines.append("what changed from %s to %s:" % (snaps[0]["file"], snaps[-1]["file"]))
        lines += render_diff(doc["diff"], style)
    return lines


class Watch(Command):
    """``watch (--pid PID | --cgroup PATH) -o DIR``."""

    name = "watch"
    summary = "snapshot a live process as it grows, so an OOM kill leaves the evidence"
    description = ("Sample a live process (--pid) or the biggest process of a memory cgroup "
                   "(--cgroup) and write report snapshots to DIR: at the start, every --every "
                   "seconds, when the cgroup's usage crosses each --at percentage of its limit, "
                   "and when its growth predicts the limit before the next one. Keeps the "
                   "first and the last --keep - 1; every file is written atomically. When the "
                   "process ends (an OOM kill: SIGKILL, the cgroup's oom_kill count), prints "
                   "how, and what grew between the first and the last snapshot. Run it outside "
                   "the target's cgroup.")
    needs_target = False
    own_target = True

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--cgroup", metavar="PATH",
                            help="watch the memory cgroup PATH (its directory, or its path in "
                                 "the hierarchy) and its biggest process")
        parser.add_argument("-o", "--output", metavar="DIR", required=True,
                            help="where the snapshots go (created if missing)")
        parser.add_argument("--every", type=float, default=300.0, metavar="SECONDS",
                            help="a periodic snapshot every SECONDS (default 300; 0: none)")
        parser.add_argument("--sample", type=float, default=1.0, metavar="SECONDS",
                            help="read the memory figures every SECONDS (default 1)")
        parser.add_argument("--at", type=float, nargs="+", default=[70.0, 85.0, 95.0],
                            metavar="PERCENT",
                            help="snapshot when usage crosses these percentages of the "
                                 "cgroup's limit (default 70 85 95)")
        parser.add_argument("--keep", type=int, default=10, metavar="N",
                            help="keep the first snapshot and the last N-1 (default 10)")
        parser.add_argument("--core", action="store_true",
                            help="keep the compact core of each snapshot too")
        parser.add_argument("--max-disk", type=parse_size, metavar="SIZE",
                            help="with --core: the cores together stay under SIZE (older "
                                 "cores are deleted first; the JSON stays)")
        parser.add_argument("--duration", type=float, metavar="SECONDS",
                            help="stop after SECONDS even if the process lives on")
        parser.add_argument("--no-classes", action="store_true",
                            help="snapshots without content classes (faster)")
        parser.add_argument("--quiet", action="store_true",
                            help="no progress lines on stderr")

    def collect(self, inv: Invocation) -> Record:
        args = inv.args
        if (args.pid is None) == (args.cgroup is None):
            raise UsageError("watch needs --pid PID or --cgroup PATH (one of them)")
        if args.sample <= 0 or args.every < 0 or args.keep < 2:
            raise UsageError("--sample must be > 0, --every >= 0, --keep >= 2")
        if getattr(args, "copy_to", None) in (None, "auto"):
            args.copy_to = "file"  # a watcher's own memory stays small (README)
        return Watcher(args, sys.stderr).run()

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render_watch(document, inv.style)

    def status(self, document: Record) -> int:
        return 0
