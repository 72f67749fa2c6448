"""`heapwalk watch` against real OOM kills (issue 13).

A program grows native memory inside a memory cgroup this test creates (v1 here: a child of
the test's own memory cgroup with `memory.limit_in_bytes`; removed afterwards); the watcher runs
outside that cgroup; the kernel's OOM killer ends the program. Oracles: the test is the
program's parent (its wait status: SIGKILL), the cgroup's own `memory.oom_control` count, the
program's own progress lines (how many blocks of which size it had allocated at each moment),
and the cgroup's limit. Also: a watcher killed with SIGKILL mid-snapshot leaves only complete
files; `report --pid` on a process in another root finds its files through /proc/PID/root; the
v2 interface from fixture files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from hwkit import CACHE, CORPORA, REPO, build, describe, heapwalk_env, no_traceback, run_cli

sys.path.insert(0, str(REPO / "python"))
from heapwalk import cgroup as cg  # noqa: E402  # pylint: disable=wrong-import-position

V1_ROOT = Path("/sys/fs/cgroup/memory")


def _own_v1_memory_cgroup() -> Optional[Path]:
    for controllers, path in cg.cgroup_lines(None):
        if "memory" in controllers.split(","):
            d = V1_ROOT / path.strip("/")
            if (d / "memory.limit_in_bytes").exists() and os.access(d, os.W_OK):
                return d
    return None


class LimitedGroup:
    """A v1 memory cgroup with a limit, below the test's own; gone after close()."""

    def __init__(self, name: str, limit: int) -> None:
        parent = _own_v1_memory_cgroup()
        if parent is None:
            pytest.fail("no writable cgroup v1 memory controller (this machine has one: see README)")
        self.dir = parent / f"heapwalk-test-{name}-{os.getpid()}"
        self.dir.mkdir()
        (self.dir / "memory.limit_in_bytes").write_text(str(limit))
        self.limit = int((self.dir / "memory.limit_in_bytes").read_text())

    def oom_kills(self) -> int:
        for line in (self.dir / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        """Start argv inside the group (the shell joins it, then execs the program)."""
        return subprocess.Popen(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.dir), *argv],
                                **kw)

    def close(self) -> None:
        for _ in range(50):
            procs = (self.dir / "cgroup.procs").read_text().split()
            for p in procs:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not procs:
                break
            time.sleep(0.1)
        self.dir.rmdir()


def _progress(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _count_at(progress: list[dict], when: float, key: str) -> int:
    """The program's own count at its last report before ``when``."""
    before = [p for p in progress if p["time"] <= when]
    return before[-1][key] if before else 0


def _start_watch(group: LimitedGroup, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "heapwalk", "watch", "--cgroup", str(group.dir), "-o",
                             str(out), "--sample", "0.2", "--every", "0", *extra],
                            cwd=str(REPO), env=heapwalk_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _snapshots(out: Path) -> list[dict]:
    docs = []
    for p in sorted(out.glob("snap-*.json")):
        docs.append(json.loads(p.read_text()))
    return docs


def _check_oom_story(group: LimitedGroup, proc: subprocess.Popen, watcher: subprocess.Popen,
                     out: Path, oom_before: int) -> tuple[list[dict], dict]:
    """The program was OOM-killed and the watcher says so; returns (snapshots, diff first->last)."""
    rc = proc.wait(timeout=180)
    stdout, stderr = watcher.communicate(timeout=120)
    assert rc == -signal.SIGKILL, f"the program was not killed: {rc}"
    assert group.oom_kills() > oom_before, "the kernel's OOM killer did not fire"
    assert watcher.returncode == 0, f"watch: {watcher.returncode}\n{stdout}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    first = stdout.splitlines()[0]
    assert first.startswith(f"pid {proc.pid} killed by SIGKILL (the OOM killer"), stdout
    meta = json.loads((out / "watch.json").read_text())
    death = meta["death"]
    assert death["signal"] == 9 and death["oom_killed"], death
    assert death["oom_kill_after"] > death["oom_kill_before"] == oom_before, death
    snaps = _snapshots(out)
    assert len(snaps) >= 2, stdout
    limit = group.limit
    high = [s for s in snaps if s["watch"]["sample"]["cgroup"]["usage_bytes"] >= 0.85 * limit]
    assert high, [s["watch"]["sample"]["cgroup"]["usage_bytes"] / limit for s in snaps]
    for s in snaps:
        assert s["schema"] == "heapwalk/1" and s["command"] == "report"
        assert s["watch"]["frozen_seconds"] > 0
        assert s["target"]["frozen_seconds"] == s["watch"]["frozen_seconds"]
    # The summary ends with the diff of the first and the last snapshot: the same as `diff`.
    files = sorted(out.glob("snap-*.json"))
    r = run_cli("diff", str(files[0]), str(files[-1]), "--json")
    # 1 when a snapshot carries an error diagnostic: a freeze can stop a thread in the middle
    # of malloc (av->top moved, the new top's size not yet written: bad_size), which diff
    # passes on; the growth figures are still there.
    assert r.returncode in (0, 1), describe(r)
    assert "what changed from %s to %s" % (files[0].name, files[-1].name) in stdout
    return snaps, json.loads(r.stdout)


def _growth_of(diff: dict, size: int) -> int:
    rows = [r for r in diff["size_classes"] if r["size"] == size]
    assert rows, [r["size"] for r in diff["size_classes"]]
    return rows[0]["delta"]["count"]


def test_c_program_oom_killed_in_a_v1_cgroup(tmp_path):
    grow = build("oomgrow")
    group = LimitedGroup("c", 160 << 20)
    try:
        data = tmp_path / "data"
        data.mkdir()
        r, w = os.pipe()
        oom_before = group.oom_kills()
        # 2 threads x 25 blocks of 1000 bytes every 10 ms: about 5 MB/s, killed in ~30 s (slow
        # enough that a snapshot at 85 % completes before the kill, even under ASan).
        proc = group.spawn([str(grow), str(data), str(w), "1000", "25", "10", "2"], pass_fds=(w,),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(w)
        assert os.read(r, 1) == b"r"
        os.close(r)
        out = tmp_path / "watch"
        watcher = _start_watch(group, out, "--no-classes")
        snaps, diff = _check_oom_story(group, proc, watcher, out, oom_before)
        progress = _progress(data / "progress.jsonl")
        # The growing size, counted as the program counted it between the two freezes.
        chunk = progress[-1]["chunk_size"]
        t0 = snaps[0]["watch"]["time"] - snaps[0]["watch"]["snapshot_seconds"]
        t1 = snaps[-1]["watch"]["time"] - snaps[-1]["watch"]["snapshot_seconds"]
        want = _count_at(progress, t1, "blocks") - _count_at(progress, t0, "blocks")
        got = _growth_of(diff, chunk)
        assert abs(got - want) <= 0.05 * want, (got, want)
        # ... and what it had allocated up to its last report: the last snapshot is close to it.
        assert got >= 0.80 * (progress[-1]["blocks"] - _count_at(progress, t0, "blocks")), (got, progress[-1])
        top = max(diff["size_classes"], key=lambda x: x["delta"]["bytes"])
        assert top["size"] == chunk
    finally:
        group.close()


JAVA_HOME = Path(os.environ.get("HEAPWALK_JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"))


def _oomgrow_classes() -> Path:
    src = CORPORA / "java" / "OomGrow.java"
    key = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = CACHE / "java" / f"oomgrow-{key}"
    if (out / "OomGrow.class").exists():
        return out
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    r = subprocess.run([str(JAVA_HOME / "bin" / "javac"), "-nowarn", "-d", str(tmp), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


@pytest.mark.skipif(not (JAVA_HOME / "bin" / "javac").exists(), reason="needs openjdk-17-jdk-headless")
def test_jvm_oom_killed_in_a_v1_cgroup(tmp_path):
    cp = _oomgrow_classes()
    group = LimitedGroup("jvm", 256 << 20)
    try:
        data = tmp_path / "data"
        data.mkdir()
        fifo = data / "ready.fifo"
        os.mkfifo(fifo)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        oom_before = group.oom_kills()
        # 4 request threads x 50 blocks of 256 bytes every 10 ms: about 5 MB/s of NMT Other.
        proc = group.spawn([str(JAVA_HOME / "bin" / "java"), "-XX:NativeMemoryTracking=summary", "-Xint",
                            "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xms16m", "-Xmx16m", "-cp", str(cp),
                            "OomGrow", str(data), str(fifo), "threads=4", "size=256", "per_step=50",
                            "step_ms=10"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        import select  # noqa: PLC0415
        ready, _, _ = select.select([rfd], [], [], 120)
        assert ready and os.read(rfd, 1) == b"r", "the JVM did not start"
        os.close(rfd)
        out = tmp_path / "watch"
        watcher = _start_watch(group, out)
        snaps, diff = _check_oom_story(group, proc, watcher, out, oom_before)
        progress = _progress(data / "progress.jsonl")
        t0 = snaps[0]["watch"]["time"] - snaps[0]["watch"]["snapshot_seconds"]
        t1 = snaps[-1]["watch"]["time"] - snaps[-1]["watch"]["snapshot_seconds"]
        want = _count_at(progress, t1, "requests") - _count_at(progress, t0, "requests")
        # 256 bytes + NMT's 16-byte malloc header: 288-byte chunks; NMT Other grows by the bytes.
        got = _growth_of(diff, 288)
        assert abs(got - want) <= 0.05 * want, (got, want)
        other = {r["name"]: r for r in diff["nmt"] or []}.get("Other")
        assert other, diff["nmt"]
        grown = other["delta"]["malloc"]
        assert abs(grown - want * 256) <= 0.05 * want * 256, (grown, want * 256)
    finally:
        group.close()


def test_watcher_killed_mid_snapshot_leaves_only_complete_files(tmp_path, corpora):
    c = corpora.live("arenas", "4", "0")
    out = tmp_path / "watch"
    done = 0
    for delay in (0.3, 0.9, 1.6, 2.4, 3.3, 4.5):
        w = subprocess.Popen([sys.executable, "-m", "heapwalk", "watch", "--pid", str(c.pid), "-o", str(out),
                              "--sample", "0.05", "--every", "0.1", "--core"],
                             cwd=str(REPO), env=heapwalk_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(delay)
        w.send_signal(signal.SIGKILL)
        w.wait(timeout=30)
        # Every snapshot present is whole: it parses, diff loads it, its core (if named) is there.
        for p in sorted(out.glob("snap-*.json")):
            doc = json.loads(p.read_text())
            assert doc["command"] == "report" and "watch" in doc
            if doc["watch"]["core"]:
                assert (out / doc["watch"]["core"]).exists()
            done += 1
        lines = (out / "samples.jsonl").read_text().splitlines() if (out / "samples.jsonl").exists() else []
        for line in lines[:-1]:
            json.loads(line)  # a kill may tear the last line only
    assert done, "no snapshot was ever completed"
    # The next watcher (and diff, trend) work on what is there; leftovers are swept.
    r = subprocess.run([sys.executable, "-m", "heapwalk", "watch", "--pid", str(c.pid), "-o", str(out),
                        "--sample", "0.05", "--every", "0", "--duration", "0.5", "--quiet"],
                       cwd=str(REPO), env=heapwalk_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "still running" in r.stdout
    assert not [p for p in out.iterdir() if ".tmp" in p.name], list(out.iterdir())
    files = sorted(out.glob("snap-*.json"))
    d = run_cli("diff", str(files[0]), str(files[-1]))
    assert d.returncode == 0, describe(d)


def test_watch_refuses_from_inside_the_target_cgroup(tmp_path):
    """A watcher inside the limited cgroup it watches would share its OOM kills: refused."""
    group = LimitedGroup("inside", 512 << 20)
    try:
        cmd = [sys.executable, "-m", "heapwalk", "watch", "--cgroup", str(group.dir), "-o",
               str(tmp_path / "w"), "--duration", "0.1"]
        r = subprocess.run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group.dir), *cmd],
                           cwd=str(REPO), env=heapwalk_env(), capture_output=True, text=True, timeout=60)
        no_traceback(r)
        assert r.returncode == 2, describe(r)
        assert "inside the target's memory cgroup" in r.stderr and r.stderr.endswith("\n")
    finally:
        group.close()


def test_usage_errors(tmp_path):
    for args in (["watch", "-o", str(tmp_path)], ["watch", "--pid", "1", "--cgroup", "/x", "-o", str(tmp_path)],
                 ["watch", "--pid", "1", "-o", str(tmp_path), "--keep", "1"]):
        r = run_cli(*args)
        no_traceback(r)
        assert r.returncode == 2, describe(r)
    r = run_cli("watch", "--pid", "999999999", "-o", str(tmp_path / "w"))
    assert r.returncode == 1 and "no such process" in r.stderr


# ---- the v2 interface, from fixture files ---------------------------------------------------

def _fake_v2(root: Path, path: str, files: dict[str, str]) -> Path:
    d = root / path.strip("/")
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def test_cgroup_v2_files(tmp_path):
    root = tmp_path / "unified"
    d = _fake_v2(root, "/kubepods/pod1/ctr", {
        "memory.current": "734003200\n", "memory.max": "1073741824\n", "memory.high": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
        "memory.stat": "anon 600000000\nfile 100000000\nkernel 1000\n",
        "memory.pressure": "some avg10=1.50 avg60=0.25 avg300=0.05 total=123456\n"
                           "full avg10=0.75 avg60=0.10 avg300=0.01 total=65432\n",
        "cgroup.procs": "41\n42\n"})
    group = cg.open_cgroup(str(d), v2_roots=(str(root),), v1_root=str(tmp_path / "none"))
    assert group is not None and group.version == 2 and group.path == "/kubepods/pod1/ctr"
    s = group.sample()
    assert s["usage_bytes"] == 734003200 and s["limit_bytes"] == 1073741824 and s["high_bytes"] is None
    assert s["oom_kill"] == 1 and s["oom"] == 2 and s["max_events"] == 12
    assert s["rss_bytes"] == 600000000 and s["cache_bytes"] == 100000000
    assert s["pressure"]["some_avg10"] == 1.5 and s["pressure"]["full_avg60"] == 0.1
    assert s["pressure"]["full_total"] == 65432
    assert group.procs() == [41, 42]
    assert group.contains("/kubepods/pod1/ctr") and group.contains("/kubepods/pod1/ctr/sub")
    assert not group.contains("/kubepods/pod1/ctr2") and not group.contains("/kubepods/pod1")
    unlimited = _fake_v2(root, "/free", {"memory.current": "1\n", "memory.max": "max\n"})
    assert cg.open_cgroup(str(unlimited), v2_roots=(str(root),)).sample()["limit_bytes"] is None


def test_cgroup_v1_files(tmp_path):
    root = tmp_path / "memory"
    d = root / "app"
    d.mkdir(parents=True)
    (d / "memory.usage_in_bytes").write_text("104857600\n")
    (d / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (d / "memory.stat").write_text("cache 10\nrss 20\ntotal_cache 30\ntotal_rss 40\n")
    group = cg.open_cgroup(str(d), v2_roots=(), v1_root=str(root))
    assert group is not None and group.version == 1 and group.path == "/app"
    s = group.sample()
    assert s["limit_bytes"] is None and s["usage_bytes"] == 104857600 and s["oom_kill"] == 3
    assert s["rss_bytes"] == 40 and s["cache_bytes"] == 30


@pytest.mark.skipif(not os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers")
                    or "memory" not in Path("/sys/fs/cgroup/unified/cgroup.controllers").read_text(),
                    reason="the v2 memory controller is not available (it is bound to v1 here)")
def test_cgroup_v2_for_real():
    group = cg.memory_cgroup_of(None)
    assert group is not None and group.sample()["usage_bytes"] > 0


# ---- a process in another root -----------------------------------------------------------------

def test_report_pid_in_another_root_finds_its_files_through_proc_root(tmp_path):
    """A program run in a private root (unshare -m, chroot) whose libc lives at a path the host
    does not have: report --pid finds it through /proc/PID/root, as with --sysroot."""
    prog = build("arenas")
    root = tmp_path / "root"
    libdir = root / "opt" / "ctr-lib"
    libdir.mkdir(parents=True)
    (root / "out").mkdir()
    (root / "bin").mkdir()
    # The program and its libc at in-container paths only (/opt/ctr-lib: not on the host).
    libc = Path(subprocess.run(["gcc", "-print-file-name=libc.so.6"], capture_output=True,
                               text=True).stdout.strip()).resolve()
    ld = Path("/lib64/ld-linux-x86-64.so.2").resolve()
    shutil.copy2(libc, libdir / "libc.so.6")
    shutil.copy2(ld, libdir / "ld-linux-x86-64.so.2")
    shutil.copy2(prog, root / "bin" / "arenas")
    r, w = os.pipe()
    proc = subprocess.Popen(["unshare", "-m", "chroot", str(root), "/opt/ctr-lib/ld-linux-x86-64.so.2",
                             "--library-path", "/opt/ctr-lib", "/bin/arenas", "2", "/out", str(w)],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(w)
    try:
        assert os.read(r, 1), proc.stderr.read() if proc.poll() is not None else "no readiness byte"
        os.close(r)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "/opt/ctr-lib/libc.so.6" in maps and not Path("/opt/ctr-lib").exists()
        auto = run_cli("report", "--pid", str(proc.pid), "--json")
        assert auto.returncode == 0, describe(auto)
        explicit = run_cli("report", "--pid", str(proc.pid), "--json", "--sysroot", str(root))
        assert explicit.returncode == 0, describe(explicit)
        a, b = json.loads(auto.stdout), json.loads(explicit.stdout)
        assert a["target"]["sysroot"] == f"/proc/{proc.pid}/root"
        assert "/proc/PID/root" in a["target"]["sysroot_source"]
        assert b["target"]["sysroot_source"] == "--sysroot"
        assert a["glibc"] == b["glibc"], (a["glibc"], b["glibc"])
        assert a["retention"] == b["retention"]
        truth = json.loads((root / "out" / "truth.json").read_text())
        assert a["retention"]["in_use_bytes"] if "in_use_bytes" in a["retention"] else True
        assert truth  # the program's own figures exist; arenas exactness is test_oracle_live's
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.skipif(not (JAVA_HOME / "bin" / "javac").exists(), reason="needs openjdk-17-jdk-headless")
def test_report_pid_on_a_jvm_in_its_own_mount_namespace(tmp_path):
    """A JVM whose JDK exists only in its own mount namespace (a bind mount the host does not
    see, at /opt/jdk): --pid finds libjvm (and libc) through /proc/PID/root, with the same NMT
    figures as an explicit --sysroot /proc/PID/root."""
    from nmtkit import JVM_FLAGS, LOAD, build_java  # noqa: PLC0415
    cls = build_java()
    root = tmp_path / "root"
    for d in ("proc", "opt/jdk", "cls", "out", "tmp", "usr", "etc", ".old"):
        (root / d).mkdir(parents=True)
    for link in ("bin", "lib", "lib64", "sbin"):  # merged /usr, as on the host
        if os.path.islink(f"/{link}"):
            os.symlink(os.readlink(f"/{link}"), root / link)
    fifo = root / "out" / "ready.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    # A container's mount namespace: the root pivoted away from the host's (so its maps name
    # in-container paths, as Docker's do), the JDK bind-mounted at /opt/jdk inside only.
    script = ('set -e; mount --make-rprivate /; mount --bind "$R" "$R"; for d in usr etc; do '
              'mount --bind /$d "$R/$d"; done; mount --bind "$J" "$R/opt/jdk"; mount --bind "$C" "$R/cls"; '
              'cd "$R"; pivot_root . .old; mount -t proc proc /proc; umount -l /.old; exec "$@"')
    env = {**os.environ, "R": str(root), "J": str(JAVA_HOME.resolve()), "C": str(cls)}
    proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script, "sh", "/opt/jdk/bin/java",
                             "-XX:NativeMemoryTracking=summary", *JVM_FLAGS, "-cp", "/cls", "NmtLoad", "/out",
                             "/out/ready.fifo", *LOAD], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import select  # noqa: PLC0415
        ready, _, _ = select.select([rfd], [], [], 120)
        assert ready and os.read(rfd, 1), proc.stderr.read().decode() if proc.poll() is not None else "not ready"
        os.close(rfd)
        java = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0]) \
            if not Path(f"/proc/{proc.pid}/exe").resolve().name.startswith("java") else proc.pid
        maps = Path(f"/proc/{java}/maps").read_text()
        assert " /opt/jdk/lib/server/libjvm.so" in maps and not Path("/opt/jdk/lib/server/libjvm.so").exists()
        auto = run_cli("nmt", "--pid", str(java), "--json")
        explicit = run_cli("nmt", "--pid", str(java), "--json", "--sysroot", f"/proc/{java}/root")
        assert auto.returncode == 0, describe(auto)
        assert explicit.returncode == 0, describe(explicit)
        a, b = json.loads(auto.stdout), json.loads(explicit.stdout)
        assert a["target"]["sysroot"] == f"/proc/{java}/root"
        na, nb = a["nmt"], b["nmt"]
        assert na["libjvm"]["path"] == "/opt/jdk/lib/server/libjvm.so"
        assert na["libjvm"]["symbols"], na["libjvm"]
        assert not [d for d in a["diagnostics"] if "not found under sysroot" in d["detail"]], a["diagnostics"]
        cats_a = {c["name"]: c["committed"] for c in na["categories"]}
        cats_b = {c["name"]: c["committed"] for c in nb["categories"]}
        assert cats_a and set(cats_a) == set(cats_b)
    finally:
        proc.kill()
        proc.wait(timeout=30)
