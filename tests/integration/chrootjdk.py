"""Chroot JDK test kit: a Debian suite's OpenJDK inside that suite's chroot
(corpora/chroots.sh), the Java corpus (corpora/java/NmtLoad.java) compiled and run there,
jcmd's summary taken there, and gcore cores of it cached like nmtkit's.  One kit for every
JDK the host does not carry: `JdkSpec` names the suite, the feature release and the packages
(JDK21: trixie's openjdk-21; JDK11: bullseye's openjdk-11).

- The JDK is installed into the chroot once by corpora/chroot-packages.sh (opt-in; chroots.sh's
  default package list and the keys of the C corpora's cores are unchanged).
- The JVM and jcmd both run inside the chroot (same user, same /tmp: jcmd's attach handshake
  goes through /tmp/.java_pid<PID> and /proc/<PID>/cwd), so the chroot needs /proc mounted
  while they run: the kit mounts it when it is not, and unmounts what it mounted in close().
- Readiness: NmtLoad writes one byte to a FIFO made in its run directory inside the chroot.
- Cores: gdb's gcore from the host (glibc 2.31 and 2.41 put no guard regions in thread stacks,
  so gcore is exact there), made sparse; key: program source, the chroot JDK's `java -version`
  and libjvm build-id, flags, NMT level, load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import hwkit
from hwkit import CACHE, CORPORA, READY_TIMEOUT, ensure_chroot, gcore, stop
from nmtkit import JVM_FLAGS, LOAD, SOURCE, JvmCorpus

PACKAGES_SH = CORPORA / "chroot-packages.sh"
INSTALL_TIMEOUT = 1200  # apt-get of ~130 MB
JAVAC_TIMEOUT = 300
JCMD_TIMEOUT = 120


@dataclass(frozen=True)
class JdkSpec:
    """A Debian suite's OpenJDK, run in that suite's chroot."""

    suite: str
    feature: int
    packages: tuple[str, ...]

    @property
    def java_home(self) -> str:  # inside the chroot
        return f"/usr/lib/jvm/java-{self.feature}-openjdk-amd64"

    @property
    def java(self) -> str:
        return f"{self.java_home}/bin/java"

    @property
    def javac(self) -> str:
        return f"{self.java_home}/bin/javac"

    @property
    def jcmd(self) -> str:
        return f"{self.java_home}/bin/jcmd"

    @property
    def libjvm(self) -> str:
        return f"{self.java_home}/lib/server/libjvm.so"


JDK21 = JdkSpec("trixie", 21, ("openjdk-21-jdk-headless",))
JDK11 = JdkSpec("bullseye", 11, ("openjdk-11-jdk-headless",))


def _run(root: Path, *argv: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("JAVA_HOME", None)
    env.pop("GLIBC_TUNABLES", None)
    return subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def ensure_jdk(spec: JdkSpec) -> Path:
    """The suite's chroot with its JDK installed (both cached); raises with the reason when
    either cannot be made."""
    root = ensure_chroot(spec.suite)
    if not (root / spec.libjvm.lstrip("/")).exists() or not (root / spec.jcmd.lstrip("/")).exists():
        env = dict(os.environ, HEAPWALK_CHROOT_CACHE=str(root.parent))
        try:
            r = subprocess.run(["bash", str(PACKAGES_SH), spec.suite, *spec.packages], capture_output=True,
                               text=True, timeout=INSTALL_TIMEOUT, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"installing {spec.packages} into {root} timed out after {INSTALL_TIMEOUT}s") from e
        if r.returncode != 0 or not (root / spec.libjvm.lstrip("/")).exists():
            raise RuntimeError(f"corpora/chroot-packages.sh {spec.suite} {' '.join(spec.packages)} failed "
                               f"({r.returncode}){hwkit.disk_note(root)}:\n{r.stderr[-3000:]}")
    return root


class ProcMount:
    """/proc mounted in the chroot while JVMs and jcmd run there (unmounted by release() when
    this kit mounted it)."""

    def __init__(self, root: Path):
        self.path = root / "proc"
        self.mounted = False
        if not os.path.ismount(self.path):
            r = subprocess.run(["mount", "-t", "proc", "proc", str(self.path)], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"cannot mount /proc in {root} (jcmd and the JVM need it): {r.stderr}")
            self.mounted = True

    def release(self) -> None:
        if self.mounted:
            if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


def jdk_fingerprint(root: Path, spec: JdkSpec) -> str:
    r = _run(root, spec.java, "-version", timeout=120)
    bid = ""
    out = subprocess.run(["readelf", "-n", str(root / spec.libjvm.lstrip("/"))], capture_output=True, text=True).stdout
    m = re.search(r"Build ID: ([0-9a-f]+)", out)
    if m:
        bid = m.group(1)
    if r.returncode != 0:
        raise RuntimeError(f"java -version in {root} failed: {r.stderr}")
    return r.stderr.strip() + "|" + bid


class ChrootJdkCorpora:
    """NmtLoad run by the chroot's JDK: cached cores (`core(level)`) and live JVMs
    (`live(level)`, killed by close())."""

    def __init__(self, spec: JdkSpec, cache: Path = CACHE):
        self.spec = spec
        self.cache = cache
        self.root = ensure_jdk(spec)
        self.proc_mount = ProcMount(self.root)
        self.fingerprint = jdk_fingerprint(self.root, spec)
        self.jdk = re.search(r'version "([^"]+)"', self.fingerprint)
        self._cores: dict[str, JvmCorpus] = {}
        self._live: list[JvmCorpus] = []
        self._rundirs: list[Path] = []

    def key(self, *extra: str) -> str:
        h = hashlib.sha256()
        h.update(SOURCE.read_bytes())
        h.update(self.fingerprint.encode())
        for e in (*JVM_FLAGS, *extra):
            h.update(b"\0" + e.encode())
        return h.hexdigest()[:16]

    def nmt(self, core: Path, detail: bool = False) -> dict:
        """heapwalk's nmt document of a core of this JDK (libjvm from the chroot)."""
        with hwkit.import_heapwalk().open_core(str(core), sysroot=str(self.root)) as t:
            return t.nmt(detail)

    def host(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def build_java(self) -> str:
        """NmtLoad.class compiled by the chroot's javac; returns the in-chroot class path."""
        inside = f"/hw/java/{self.key('classes')}"
        if (self.host(inside) / "NmtLoad.class").exists():
            return inside
        tmp = inside + ".tmp"
        shutil.rmtree(self.host(tmp), ignore_errors=True)
        self.host(tmp).mkdir(parents=True)
        shutil.copyfile(SOURCE, self.host(tmp) / "NmtLoad.java")
        r = _run(self.root, self.spec.javac, "-nowarn", "-d", tmp, f"{tmp}/NmtLoad.java", timeout=JAVAC_TIMEOUT)
        if r.returncode != 0:
            raise RuntimeError(f"javac {self.spec.feature} in {self.root} failed:\n{r.stdout}{r.stderr}")
        (self.host(tmp) / "NmtLoad.java").unlink()
        shutil.rmtree(self.host(inside), ignore_errors=True)
        os.rename(self.host(tmp), self.host(inside))
        return inside

    def spawn(self, level: str, rundir_in: str, load: list[str]) -> subprocess.Popen:
        """Start NmtLoad in the chroot with NMT at `level`, working directory and OUTDIR
        `rundir_in` (in-chroot); return once it signalled readiness on its FIFO."""
        cp = self.build_java()
        rundir = self.host(rundir_in)
        fifo = rundir / "ready.fifo"
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        env = dict(os.environ)
        for k in ("LD_PRELOAD", "JAVA_HOME", "GLIBC_TUNABLES", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS"):
            env.pop(k, None)
        try:
            proc = subprocess.Popen(
                ["chroot", str(self.root), "/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", rundir_in,
                 self.spec.java, f"-XX:NativeMemoryTracking={level}", *JVM_FLAGS, "-cp", cp, "NmtLoad",
                 rundir_in, f"{rundir_in}/ready.fifo", *load],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        except BaseException:
            os.close(rfd)
            raise
        return hwkit.await_ready(proc, rfd, READY_TIMEOUT,
                                 f"NmtLoad on JDK {self.spec.feature} (NMT {level}) in {self.root}")

    def jcmd(self, pid: int, what: str) -> str:
        r = _run(self.root, self.spec.jcmd, str(pid), "VM.native_memory", what, "scale=1", timeout=JCMD_TIMEOUT)
        if r.returncode != 0 or "Native Memory Tracking" not in r.stdout:
            raise RuntimeError(f"jcmd {self.spec.feature} in {self.root} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r.stdout

    def oracle(self, pid: int, level: str, outdir: Path) -> str:
        """As nmtkit.oracle: the first report records the thread stacks' committed regions
        (and, in detail mode, is kept as jcmd-detail.txt); the second is the oracle."""
        first = self.jcmd(pid, "detail" if level == "detail" else "summary")
        if level == "detail":
            (outdir / "jcmd-detail.txt").write_text(first)
        return self.jcmd(pid, "summary")

    def _rundir(self, name: str) -> tuple[str, Path]:
        inside = f"/hw/run/{name}"
        d = self.host(inside)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        self._rundirs.append(d)
        return inside, d

    def core(self, level: str, load: list[str] = LOAD) -> JvmCorpus:
        key = f"{level}-" + self.key(level, *load)
        if key in self._cores:
            return self._cores[key]
        d = self.cache / f"jvm{self.spec.feature}-cores" / key
        if not (d / "complete").exists():
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            inside, run = self._rundir(f"jvm{self.spec.feature}-{key}")
            proc = self.spawn(level, inside, load)
            try:
                if level != "off":
                    (d / "jcmd.txt").write_text(self.oracle(proc.pid, level, d))
                gcore(proc.pid, d / "core")
            finally:
                stop(proc)
            shutil.copyfile(run / "truth.json", d / "truth.json")
            shutil.rmtree(run, ignore_errors=True)
            (d / "complete").write_text(self.fingerprint + "\n")
        c = JvmCorpus.cached(level, d)
        self._cores[key] = c
        return c

    def live(self, level: str, load: list[str] = LOAD) -> JvmCorpus:
        inside, run = self._rundir(f"jvm{self.spec.feature}-live-{level}-{len(self._live)}-{os.getpid()}")
        proc = self.spawn(level, inside, load)
        try:
            text = self.oracle(proc.pid, level, run) if level != "off" else ""
        except BaseException:
            stop(proc)
            raise
        c = JvmCorpus(level, run, json.loads((run / "truth.json").read_text()), text, proc=proc)
        self._live.append(c)
        return c

    def close(self) -> None:
        for c in self._live:
            if c.proc is not None:
                stop(c.proc)
        self._live.clear()
        for d in self._rundirs:
            shutil.rmtree(d, ignore_errors=True)
        self._rundirs.clear()
        self.proc_mount.release()


# ---------------------------------------------------------------------------------------------
# jcmd 21's additions to the summary format (MemReporterBase::print_malloc / print_arena_line /
# print_virtual_memory in services/memReporter.cpp of jdk21u): peaks after each malloc, arena and
# mmap figure, "(threads #N)", "readonly=" on Shared class space.
# ---------------------------------------------------------------------------------------------

_CAT = re.compile(r"^-\s*(.+?) \(reserved=(\d+), committed=(\d+)")


def parse_peaks(text: str) -> dict[str, dict[str, tuple[int, int] | int]]:
    """Per category: {"malloc": (peak bytes, peak count), "arena": (...), "mmap": peak bytes}.
    "(at peak)" gives the current figure itself."""
    out: dict[str, dict] = {}
    cur: dict | None = None
    for line in text.split("Details:", 1)[0].splitlines():
        m = _CAT.match(line)
        if m:
            cur = out.setdefault(m.group(1).strip(), {})
            continue
        if cur is None:
            continue
        s = line.strip()
        if (m := re.match(r"\((malloc|arena)=(\d+)(?: #(\d+))?\)(?: \((at peak|peak=(\d+) #(\d+))\))?", s)):
            now = (int(m.group(2)), int(m.group(3) or 0))
            if m.group(4) == "at peak":
                cur[m.group(1)] = now
            elif m.group(4):
                cur[m.group(1)] = (int(m.group(5)), int(m.group(6)))
        elif (m := re.match(r"\(mmap: reserved=(\d+), committed=(\d+), (?:at peak|peak=(\d+))\)", s)):
            cur["mmap"] = int(m.group(3)) if m.group(3) else int(m.group(2))
        elif (m := re.match(r"\(stack: reserved=(\d+), committed=(\d+)(?:, peak=(\d+))?\)", s)):
            cur["stack"] = int(m.group(3) or 0)
    return out
