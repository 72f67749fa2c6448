"""Live rows of the heapwalk benchmark (issue 11): `bench.py --live`.

One run on one live target (corpora/many.c with NCHUNKS chunks and NTHREADS threads, started with
corpora/freezeprobe.c preloaded):

- the probe is validated: an idle interval must read about 1-2 ms, a SIGSTOP of 0.5 s about 0.5 s;
- the copy floor: process_vm_readv of the target's heaps into one reused 64 MiB buffer;
- each CLI command with --pid (arenas, report, report --no-classes, classify, leaks, snapshot)
  REPEAT times: the freeze (the probe's longest gap while it ran), the wall time, heapwalk's
  peak RssAnon and RssFile (sampled from /proc/PID/status every 20 ms) and max RSS (wait4), and
  the document's target.frozen_seconds and target.copied_bytes when the CLI reports them;
- gcore REPEAT times on the same process: freeze, wall time, apparent and sparse core size;
- the same commands on the last gcore core (wall time and memory),

then a table and one JSON line (BENCH_LIVE {...}). The target is killed at the end.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

PROBE_MAGIC = 0x45424F52505A5246  # "FRZPROBE"
W_RESET_REQ, W_RESET_SEEN, W_MAX_GAP, W_WAKEUPS, W_LAST = 4, 5, 6, 7, 8
COPY_BUFFER = 64 << 20

# name: CLI arguments after the command's target (CORE or --pid PID); {out} is a file path.
COMMANDS: dict[str, list[str]] = {
    "arenas": ["arenas", "--json"],
    "report": ["report", "--json"],
    "report --no-classes": ["report", "--no-classes", "--json"],
    "classify": ["classify", "--json"],
    "leaks": ["leaks", "--json"],
    "snapshot": ["snapshot", "-o", "{out}"],
}


class Probe:
    """The reader's side of freezeprobe's shared file (see corpora/freezeprobe.c)."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if path.stat().st_size >= 4096:
                    with open(path, "r+b") as f:
                        self.map = mmap.mmap(f.fileno(), 4096)
                    if self.word(0) == PROBE_MAGIC:
                        return
                    self.map.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"freezeprobe did not start ({path})")
            time.sleep(0.01)

    def word(self, index: int) -> int:
        return struct.unpack_from("<Q", self.map, index * 8)[0]

    def reset(self, timeout: float = 5.0) -> None:
        """Zeroes the max gap; returns once the probe thread has done it."""
        req = self.word(W_RESET_REQ) + 1
        struct.pack_into("<Q", self.map, W_RESET_REQ * 8, req)
        deadline = time.monotonic() + timeout
        while self.word(W_RESET_SEEN) != req:
            if time.monotonic() > deadline:
                raise RuntimeError("freezeprobe did not acknowledge a reset (target stopped?)")
            time.sleep(0.001)

    def max_gap(self, timeout: float = 5.0) -> float:
        """Seconds of the longest gap since the reset, once the probe has woken twice more (so a
        gap that ended just now is counted); a gap still in progress counts too."""
        start = self.word(W_WAKEUPS)
        deadline = time.monotonic() + timeout
        while self.word(W_WAKEUPS) < start + 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        ongoing = time.monotonic_ns() - self.word(W_LAST)
        return max(self.word(W_MAX_GAP), ongoing) / 1e9

    def close(self) -> None:
        self.map.close()


class Sampled:
    """A finished process: wall seconds, exit code, peaks of RssAnon/RssFile (sampled) and
    max RSS (wait4), in bytes."""

    def __init__(self, wall: float, rc: int, anon: int, file: int, maxrss: int) -> None:
        self.wall, self.rc, self.anon, self.file, self.maxrss = wall, rc, anon, file, maxrss


def run_sampled(argv: list[str], env: dict[str, str], stdout: Path, stderr: Path,
                interval: float = 0.02) -> Sampled:
    """Runs argv to completion (reaped by a blocking wait4, so the wall time is exact) while a
    thread samples its /proc/PID/status every `interval` seconds."""
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
    status = Path(f"/proc/{proc.pid}/status")
    peaks = {"RssAnon:": 0, "RssFile:": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                for line in status.read_text().splitlines():
                    key = line[:8]
                    if key in peaks:
                        peaks[key] = max(peaks[key], int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                pass
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, wstatus, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(wstatus)
    return Sampled(wall, proc.returncode, peaks["RssAnon:"], peaks["RssFile:"], usage.ru_maxrss * 1024)


def find_key(doc: Any, key: str, depth: int = 3) -> Any:
    """doc["target"][key] if present, else the first `key` found within `depth` levels."""
    if isinstance(doc, dict):
        tgt = doc.get("target")
        if isinstance(tgt, dict) and key in tgt:
            return tgt[key]
        if key in doc:
            return doc[key]
        if depth:
            for v in doc.values():
                found = find_key(v, key, depth - 1)
                if found is not None:
                    return found
    return None


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def copy_floor(pid: int, ranges: list[tuple[int, int]], repeat: int) -> tuple[float, int]:
    """Best seconds (of `repeat`) to process_vm_readv every range into one reused 64 MiB buffer,
    and the bytes copied."""
    libc = ctypes.CDLL(None, use_errno=True)
    readv = libc.process_vm_readv
    readv.restype = ctypes.c_ssize_t
    readv.argtypes = [ctypes.c_int, ctypes.POINTER(Iovec), ctypes.c_ulong,
                      ctypes.POINTER(Iovec), ctypes.c_ulong, ctypes.c_ulong]
    buf = mmap.mmap(-1, COPY_BUFFER)
    buf.write(b"\1" * COPY_BUFFER)  # faulted in before timing
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    best, copied = float("inf"), 0
    local, remote = Iovec(base, 0), Iovec(0, 0)
    for _ in range(repeat):
        copied = 0
        t0 = time.perf_counter()
        for start, end in ranges:
            addr = start
            while addr < end:
                n = min(COPY_BUFFER, end - addr)
                local.iov_len, remote.iov_base, remote.iov_len = n, addr, n
                got = readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
                if got <= 0:
                    raise OSError(ctypes.get_errno(), f"process_vm_readv at {addr:#x}")
                copied += got
                addr += got
        best = min(best, time.perf_counter() - t0)
    del local, remote
    buf.close()
    return best, copied


def start_target(many: Path, probe_so: Path, probe_file: Path, chunks: int,
                 threads: int) -> subprocess.Popen:
    env = dict(os.environ, LD_PRELOAD=str(probe_so), HEAPWALK_FREEZEPROBE=str(probe_file))
    r, w = os.pipe()
    proc = subprocess.Popen([str(many), str(chunks), str(w), str(threads)], pass_fds=(w,), env=env)
    os.close(w)
    ready, _, _ = select.select([r], [], [], 1800)
    ok = bool(ready) and os.read(r, 1) == b"R"
    os.close(r)
    if not ok:
        proc.kill()
        proc.wait()
        raise SystemExit("many did not become ready")
    return proc


def stats(values: list[float]) -> dict[str, float]:
    return {"best": round(min(values), 4), "worst": round(max(values), 4)}


def run_live(repo: Path, cache: Path, build: Callable[[str, Path, list[str]], Path], py: str,
             label: str, chunks: int, threads: int, repeat: int, log: Callable[[str], None]) -> dict:
    many = build("many", repo / "corpora" / "many.c", [])
    probe_so = build("freezeprobe.so", repo / "corpora" / "freezeprobe.c",
                     ["-shared", "-fPIC", "-Wall", "-Wextra"])
    work = cache / "live"
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-", dir=work))
    probe_file = tmp / "probe"
    env = dict(os.environ, PYTHONPATH=str(repo / "python"))
    env.pop("LD_PRELOAD", None)
    env.pop("HEAPWALK_FREEZEPROBE", None)
    cli = [py, "-m", "heapwalk"]
    row: dict[str, Any] = {"target": label, "chunks_requested": chunks, "threads": threads,
                           "repeat": repeat, "commands": {}}
    log(f"live {label}: starting many {chunks:,} chunks, {threads} threads (probe preloaded) ...")
    t0 = time.perf_counter()
    proc = start_target(many, probe_so, probe_file, chunks, threads)
    probe: Optional[Probe] = None
    try:
        row["target_start_seconds"] = round(time.perf_counter() - t0, 2)
        probe = Probe(probe_file)
        time.sleep(0.5)  # let the page cache and the scheduler settle after the build
        # Validation of the probe.
        idle = []
        for _ in range(3):
            probe.reset()
            time.sleep(1.0)
            idle.append(probe.max_gap())
        stops = []
        for _ in range(3):
            probe.reset()
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(0.5)
            os.kill(proc.pid, signal.SIGCONT)
            stops.append(probe.max_gap())
        row["probe_validation"] = {"idle_1s_max_gap": [round(x, 4) for x in idle],
                                   "sigstop_0.5s_max_gap": [round(x, 4) for x in stops]}
        log(f"probe: idle max gap {max(idle) * 1e3:.1f} ms, SIGSTOP 0.5 s reads "
            f"{min(stops):.3f}-{max(stops):.3f} s")
        # snapshot present?
        has_snapshot = subprocess.run(cli + ["snapshot", "--help"], env=env, capture_output=True
                                      ).returncode == 0
        # Live commands.
        heap_doc: Optional[dict] = None
        for name, args in COMMANDS.items():
            if name == "snapshot" and not has_snapshot:
                row["commands"][name] = {"skipped": "the CLI has no snapshot command"}
                log(f"live {name}: skipped (no such command)")
                continue
            runs = []
            for k in range(repeat):
                out_file = tmp / f"{name.replace(' ', '_')}.out"
                argv = cli + [args[0], "--pid", str(proc.pid)] + [a.format(out=tmp / "snap.out") for a in args[1:]]
                probe.reset()
                s = run_sampled(argv, env, out_file, tmp / "stderr")
                freeze = probe.max_gap()
                run: dict[str, Any] = {"freeze_seconds": round(freeze, 4), "wall_seconds": round(s.wall, 4),
                                       "rc": s.rc, "peak_rss_anon_bytes": s.anon,
                                       "peak_rss_file_bytes": s.file, "max_rss_bytes": s.maxrss}
                if s.rc not in (0, 1):
                    run["error"] = (tmp / "stderr").read_text(errors="replace").strip()[-300:]
                else:
                    try:
                        doc = json.loads(out_file.read_text())
                    except (ValueError, OSError):
                        doc = None
                    if name == "arenas" and doc:
                        heap_doc = doc
                    for key in ("frozen_seconds", "copied_bytes"):
                        v = find_key(doc, key) if doc is not None else None
                        if v is not None:
                            run[key] = v
                    if name == "snapshot":
                        snap = tmp / "snap.out"
                        if snap.exists():
                            run["snapshot_bytes"] = snap.stat().st_size
                            run["snapshot_sparse_bytes"] = snap.stat().st_blocks * 512
                            snap.unlink()
                runs.append(run)
                log(f"live {name} #{k + 1}: freeze {freeze:.3f} s, wall {s.wall:.3f} s, rc {s.rc}"
                    + (f", frozen_seconds {run['frozen_seconds']}" if "frozen_seconds" in run else ""))
                out_file.unlink(missing_ok=True)
            row["commands"][name] = summarize(runs)
        # Heap extent and the copy floor.
        if heap_doc:
            ranges = [(h["address"], h["address"] + h["size"]) for a in heap_doc["arenas"] for h in a["heaps"]]
            secs, copied = copy_floor(proc.pid, ranges, repeat)
            row["heap_bytes"] = sum(e - s for s, e in ranges)
            row["arenas"] = len(heap_doc["arenas"])
            row["copy_floor"] = {"seconds": round(secs, 4), "bytes": copied,
                                 "gib_per_second": round(copied / secs / 2**30, 2)}
            log(f"copy floor: {copied / 2**20:.0f} MiB in {secs:.3f} s")
        # gcore on the same process.
        gruns = []
        core = tmp / "core"
        for k in range(repeat):
            for old in tmp.glob("core.tmp*"):
                old.unlink()
            core.unlink(missing_ok=True)
            probe.reset()
            s = run_sampled(["gcore", "-o", str(tmp / "core.tmp"), str(proc.pid)], dict(os.environ),
                            tmp / "gcore.out", tmp / "gcore.err")
            freeze = probe.max_gap()
            made = tmp / f"core.tmp.{proc.pid}"
            if s.rc != 0 or not made.exists():
                gruns.append({"error": (tmp / "gcore.err").read_text(errors="replace")[-300:]})
                break
            made.rename(core)
            st = core.stat()
            gruns.append({"freeze_seconds": round(freeze, 4), "wall_seconds": round(s.wall, 4), "rc": 0,
                          "core_bytes": st.st_size, "core_sparse_bytes": st.st_blocks * 512})
            log(f"gcore #{k + 1}: freeze {freeze:.3f} s, wall {s.wall:.3f} s, "
                f"core {st.st_size / 2**30:.2f} GiB ({st.st_blocks * 512 / 2**30:.2f} GiB on disk)")
        row["gcore"] = summarize(gruns)
        # The same commands on the core.
        if core.exists():
            for name, args in COMMANDS.items():
                if name == "snapshot" and not has_snapshot:
                    continue
                runs = []
                for k in range(repeat):
                    out_file = tmp / "core.out"
                    argv = cli + [args[0], str(core)] + [a.format(out=tmp / "snap.out") for a in args[1:]]
                    s = run_sampled(argv, env, out_file, tmp / "stderr")
                    run = {"wall_seconds": round(s.wall, 4), "rc": s.rc, "peak_rss_anon_bytes": s.anon,
                           "peak_rss_file_bytes": s.file, "max_rss_bytes": s.maxrss}
                    if s.rc not in (0, 1):
                        run["error"] = (tmp / "stderr").read_text(errors="replace").strip()[-300:]
                    runs.append(run)
                    (tmp / "snap.out").unlink(missing_ok=True)
                    out_file.unlink(missing_ok=True)
                    log(f"core {name} #{k + 1}: wall {s.wall:.3f} s, rc {s.rc}")
                row["core_commands"] = row.get("core_commands", {})
                row["core_commands"][name] = summarize(runs)
    finally:
        if probe:
            probe.close()
        proc.kill()
        proc.wait()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return row


def summarize(runs: list[dict]) -> dict:
    """Best/worst of the numeric figures of successful runs, and the runs themselves."""
    ok = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"runs": runs}
    if not ok:
        out["error"] = runs[-1].get("error", "failed") if runs else "not run"
        return out
    for key in ("freeze_seconds", "wall_seconds", "frozen_seconds"):
        vals = [r[key] for r in ok if isinstance(r.get(key), (int, float))]
        if vals:
            out[key] = stats(vals)
    for key in ("peak_rss_anon_bytes", "peak_rss_file_bytes", "max_rss_bytes", "copied_bytes",
                "core_bytes", "core_sparse_bytes", "snapshot_bytes", "snapshot_sparse_bytes"):
        vals = [r[key] for r in ok if isinstance(r.get(key), int)]
        if vals:
            out[key] = max(vals)
    return out


def fmt(value: Optional[float], spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def print_table(row: dict) -> None:
    g = row.get("gcore", {})
    gf = g.get("freeze_seconds", {}).get("best")
    mib = 2**20
    heap = row.get("heap_bytes")
    print(f"live target: {row['target']} ({row['chunks_requested']:,} chunks, {row['threads']} threads"
          + (f", {row.get('arenas')} arenas, heap {heap / mib:,.0f} MiB" if heap else "") + ")")
    v = row.get("probe_validation", {})
    if v:
        stops = v["sigstop_0.5s_max_gap"]
        print(f"probe check: idle 1 s -> max gap {max(v['idle_1s_max_gap']) * 1e3:.1f} ms; "
              f"SIGSTOP 0.5 s -> {min(stops):.3f}-{max(stops):.3f} s")
    c = row.get("copy_floor")
    if c:
        print(f"copy floor: process_vm_readv of {c['bytes'] / mib:,.0f} MiB of heaps into a 64 MiB buffer: "
              f"{c['seconds']:.3f} s ({c['gib_per_second']:.2f} GiB/s)")
    if "error" in g:
        print(f"gcore: {g['error']}")
    elif g:
        print(f"gcore: freeze {g['freeze_seconds']['best']:.3f}-{g['freeze_seconds']['worst']:.3f} s, wall "
              f"{g['wall_seconds']['best']:.3f} s, core {g['core_bytes'] / mib:,.0f} MiB apparent, "
              f"{g['core_sparse_bytes'] / mib:,.0f} MiB on disk")
    print(f"{'command':<20} {'freeze s best/worst':>19} {'gcore frz s':>11} {'frz ratio':>9} {'live wall s':>11} "
          f"{'core wall s':>11} {'wall ratio':>10} {'live anon/file MiB':>18} {'core anon/file MiB':>18}"
          f" {'JSON frozen s':>13} {'JSON copied MiB':>15}")
    core_cmds = row.get("core_commands", {})
    for name, r in row["commands"].items():
        if "skipped" in r or "error" in r:
            print(f"{name:<20} {r.get('skipped') or r.get('error')}")
            continue
        fz, wall = r["freeze_seconds"], r["wall_seconds"]
        cr = core_cmds.get(name, {})
        cw = cr.get("wall_seconds", {}).get("best")
        live_mem = f"{r['peak_rss_anon_bytes'] / mib:.0f}/{r['peak_rss_file_bytes'] / mib:.0f}"
        core_mem = (f"{cr['peak_rss_anon_bytes'] / mib:.0f}/{cr['peak_rss_file_bytes'] / mib:.0f}"
                    if "peak_rss_anon_bytes" in cr else "-")
        frozen = r.get("frozen_seconds", {}).get("best")
        copied = r.get("copied_bytes")
        print(f"{name:<20} {fmt(fz['best']) + '/' + fmt(fz['worst']):>19} {fmt(gf):>11} "
              f"{fmt(ratio(fz['best'], gf), '.2f'):>9} {wall['best']:>11.3f} {fmt(cw):>11} "
              f"{fmt(ratio(wall['best'], cw), '.2f'):>10} {live_mem:>18} {core_mem:>18} "
              f"{fmt(frozen):>13} {fmt(copied / mib if copied else None, '.0f'):>15}")


def main_live(repo: Path, cache: Path, build: Callable[[str, Path, list[str]], Path], py: str,
              sizes: list[tuple[str, int]], threads: int, repeat: int, json_file: Optional[str],
              log: Callable[[str], None]) -> int:
    rows = [run_live(repo, cache, build, py, label, n, threads, repeat, log) for label, n in sizes]
    for row in rows:
        print_table(row)
    line = json.dumps({"live": rows}, sort_keys=True)
    print("BENCH_LIVE " + line)
    if json_file:
        Path(json_file).write_text(line + "\n")
    sys.stdout.flush()
    return 0
