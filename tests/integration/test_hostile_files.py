"""Hostile cores, sysroots and cache directories (issue 14, items 1, 3-6, 14): heapwalk runs as root
on cores from elsewhere, so no file a core or a sysroot names may leak into a report, change its
figures, be opened when it is a device or FIFO, or be written through the layout cache.

Every case is built here from the suite's own cores (NT_FILE names rewritten in a copy, as
test_corruption.py does), sysroots and cache directories made in tmp_path, and a decoy file with a
secret string (never the real /etc/shadow).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import corruptkit as ck
from hwkit import CACHE, REPO, assert_matches_oracle, describe, heapwalk_env, no_traceback, run_cli

SECRET = "HWSECRET-root:*:20228:0:99999:7:::"
HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
TIMEOUT = 120


def decoy(path: Path, size: int = 1 << 16) -> Path:
    """A file full of the secret line, so that any offset into it hits the secret."""
    line = (SECRET + "\n").encode()
    path.write_bytes(line * (size // len(line) + 1))
    return path


def no_secret(*runs: subprocess.CompletedProcess) -> None:
    for r in runs:
        for text in (r.stdout, r.stderr):
            assert "HWSECRET" not in text, describe(r)


def short_dir(tag: str) -> Path:
    """A directory with a short absolute name (NT_FILE names are rewritten in place, same length)."""
    d = Path("/tmp") / f"hw{tag}{os.getpid() % 100000}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    return d


def renamed(src: Path, dest: Path, old: str, new: str) -> Path:
    def edit(img: ck.CoreImage) -> None:
        assert img.rename_file(old, ck.same_length(new, old)) > 0, f"{old} not in the core"
    return ck.derive(src, dest, edit)


def arenas_json(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    r = run_cli("arenas", *args, "--json", extra_env=env, timeout=TIMEOUT)
    no_traceback(r)
    assert r.stdout.strip(), describe(r)
    return r, json.loads(r.stdout)


def notes(doc: dict) -> list[str]:
    return [d.get("detail", "") for d in doc.get("diagnostics", [])]


@pytest.fixture(scope="module")
def c_core(tmp_path_factory):
    from hwkit import Corpora
    corpora = Corpora(CACHE, tmp_path_factory.mktemp("corpora"))
    yield corpora.core("arenas", "4", "0")
    corpora.close()


def libc_in(core: Path) -> str:
    """The path the core's NT_FILE note gives libc (the kernel's name for it: /usr/lib/... on a
    merged-/usr system)."""
    with open(core, "rb") as f:
        seg = ck.CoreImage(f.read(1 << 16)).note_segment()
        f.seek(seg.offset)
        raw = f.read(seg.filesz)
    entries = ck.parse_file_entries(raw, ck.parse_notes(raw, 0, len(raw)))
    return next(e.path for e in entries if e.path.endswith("/libc.so.6"))


def in_root(root: Path, path: str) -> Path:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def libc_build_id() -> str:
    out = subprocess.run(["readelf", "-n", HOST_LIBC], capture_output=True, text=True, check=True).stdout
    return next(line.split()[-1] for line in out.splitlines() if "Build ID" in line)


def host_debug_file() -> Path:
    bid = libc_build_id()
    p = Path("/usr/lib/debug/.build-id") / bid[:2] / (bid[2:] + ".debug")
    if not p.exists():
        pytest.fail(f"{p} missing: scripts/setup installs libc6-dbg")
    return p


# -- item 1: host file contents -------------------------------------------------------------------


def test_jdk_version_pointing_into_a_decoy_file_prints_no_byte_of_it(tmp_path):
    """A JVM core whose NT_FILE entry for an unsaved read-only mapping now names a decoy file, with
    the JDK release pointer aimed into that mapping: nmt, nmt --json, report, report --json and
    report --html print no byte of it, and say the bytes are unavailable."""
    from nmtkit import JvmCorpora, have_jdk
    from test_nmt_corruption import SYMBOLS, SparseCore, symtab
    from nmtkit import LIBJVM
    if not have_jdk():
        pytest.fail("no JDK: scripts/setup installs openjdk-17-jdk-headless")
    corpora = JvmCorpora(CACHE, tmp_path / "jvm")
    try:
        c = corpora.core("summary")
        core = SparseCore(c.core)
        loads = [p for p in core.phdrs if p.type == ck.PT_LOAD]
        seg = core.img.note_segment()
        with open(c.core, "rb") as f:
            f.seek(seg.offset)
            raw = f.read(seg.filesz)
        entries = ck.parse_file_entries(raw, ck.parse_notes(raw, 0, len(raw)))

        d = short_dir("dc")
        target = decoy(d / "shadow")

        def own_load(e: ck.FileEntry):
            return next((p for p in loads if p.vaddr == e.start and p.memsz == e.end - e.start), None)
        # A one-segment mapping (a locale file, a JDK archive): in the copy its bytes are "not
        # saved" (p_filesz 0), and its NT_FILE name is the decoy's.
        victim = next(e for e in entries if own_load(e) and "libjvm" not in e.path and "libc" not in e.path
                      and len(e.path) >= len(str(target)))
        load = own_load(victim)
        new = ck.same_length(str(target), victim.path)
        dest = tmp_path / "core"
        subprocess.run(["cp", "--sparse=always", str(c.core), str(dest)], check=True)
        bias = core.libjvm_base()
        release = bias + symtab(LIBJVM)[SYMBOLS["release"]]
        with open(dest, "r+b") as f:
            f.seek(seg.offset + victim.path_offset)
            f.write(new.encode())
            f.seek(core.offset_of(release))
            f.write(struct.pack("<Q", victim.start + 16))
            f.seek(core.img.phoff + load.index * ck.PHDR.size + 32)  # p_filesz
            f.write(struct.pack("<Q", 0))
        html = tmp_path / "r.html"
        runs = [run_cli("nmt", dest, timeout=TIMEOUT), run_cli("nmt", dest, "--json", timeout=TIMEOUT),
                run_cli("report", dest, timeout=TIMEOUT), run_cli("report", dest, "--json", timeout=TIMEOUT),
                run_cli("report", dest, "--html", "-o", html, timeout=TIMEOUT)]
        for r in runs:
            no_traceback(r)
        no_secret(*runs)
        if html.exists():
            assert "HWSECRET" not in html.read_text(errors="replace")
        assert "are unavailable" in runs[1].stdout, describe(runs[1])
        shutil.rmtree(d, ignore_errors=True)
    finally:
        corpora.close()


# -- items 3 and 4: the layout cache ----------------------------------------------------------------


def cache_env(d: Path) -> dict[str, str]:
    return {"HEAPWALK_CACHE_DIR": str(d), "HEAPWALK_NO_CACHE": "0"}


@pytest.mark.parametrize("how", ["others-writable", "other-owner"])
def test_cache_directory_not_private_is_refused_and_nothing_is_written(c_core, tmp_path, how):
    top = short_dir("cd")  # /tmp/...: traversable by nobody (pytest's tmp_path is not)
    os.chmod(top, 0o755)
    d = top / "cache"
    d.mkdir()
    victim = top / "victim"
    victim.write_text("root's file\n")
    if how == "others-writable":
        os.chmod(d, 0o777)
    else:
        shutil.chown(d, "nobody")
        os.chmod(d, 0o755)
        # nobody plants symlinks at every temp name the old code would have used
        bid = libc_build_id()
        last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
        names = [f"{bid}.dwarf-structs.tmp{p}" for p in range(last, last + 300)]
        subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c",
                        'cd "$1" && shift && for n; do ln -s "$V" "$n"; done', "sh", str(d), *names],
                       env={**os.environ, "V": str(victim)}, check=True)
    before = sorted(os.listdir(d))
    r, doc = arenas_json(str(c_core.core), env=cache_env(d))
    assert_matches_oracle(doc, c_core)
    assert doc["glibc"]["symbols"]["layout_cache"] == "off", doc["glibc"]["symbols"]
    assert any("layout cache directory" in n and "not using the cache" in n for n in notes(doc)), notes(doc)
    assert sorted(os.listdir(d)) == before
    assert victim.read_text() == "root's file\n"
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_cache_entry_that_is_a_fifo_or_dev_zero_does_not_hang(c_core, tmp_path, kind):
    d = tmp_path / "cache"
    r, doc = arenas_json(str(c_core.core), env=cache_env(d))
    entry = next(d.iterdir())
    entry.unlink()
    if kind == "fifo":
        os.mkfifo(entry)
    else:
        entry.symlink_to("/dev/zero")
    t0 = time.monotonic()
    r, doc = arenas_json(str(c_core.core), env=cache_env(d))
    assert time.monotonic() - t0 < 60
    assert_matches_oracle(doc, c_core)
    assert doc["glibc"]["symbols"]["layout_cache"].startswith("stored"), doc["glibc"]["symbols"]
    assert entry.is_file() and not entry.is_symlink()


def patch_build_id(src: Path, dest: Path, bid: str, mode: str) -> Path:
    b = bytearray(src.read_bytes())
    raw = bytes.fromhex(bid)
    note = struct.pack("<III", 4, len(raw), 3) + b"GNU\0" + raw
    at = b.find(note)
    assert at >= 0, "build-id note not found"
    if mode == "none":
        struct.pack_into("<I", b, at + 8, 0x4242)  # no NT_GNU_BUILD_ID any more
    else:
        b[at + 16] ^= 0xFF  # another build-id
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(b))
    st = src.stat()
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    return dest


@pytest.mark.parametrize("mode", ["none", "other"])
def test_poisoned_debug_file_in_sysroot_is_refused_and_not_cached(c_core, tmp_path, mode):
    bid = libc_build_id()
    real = host_debug_file()
    root = tmp_path / "root"
    shutil.copy(HOST_LIBC, in_root(root, libc_in(c_core.core)))
    planted = root / "usr/lib/debug/.build-id" / bid[:2] / (bid[2:] + ".debug")
    patch_build_id(real, planted, bid, mode)
    cache = tmp_path / "cache"
    r, doc = arenas_json(str(c_core.core), "--sysroot", str(root), env=cache_env(cache))
    assert any(str(planted) in n and "not using it" in n for n in notes(doc)), notes(doc)
    assert_matches_oracle(doc, c_core)
    # Whatever was cached is the host's real debug file's, named after its content.
    import hashlib
    digest = hashlib.sha256(real.read_bytes()).hexdigest()[:32]
    assert [p.name for p in cache.iterdir()] == [f"{bid}-{digest}.dwarf-structs"]
    r, doc = arenas_json(str(c_core.core), env=cache_env(cache))
    assert doc["glibc"]["symbols"]["layout_cache"].startswith("hit"), doc["glibc"]["symbols"]
    assert_matches_oracle(doc, c_core)


def test_cached_layout_contradicting_the_image_is_discarded(c_core, tmp_path):
    cache = tmp_path / "cache"
    arenas_json(str(c_core.core), env=cache_env(cache))
    entry = next(cache.iterdir())
    lines = entry.read_text().splitlines()
    poisoned, struct_name = [], ""
    for line in lines:
        f = line.split()
        if f[0] == "struct":
            struct_name = f[1]
        if struct_name == "malloc_state" and f[:2] == ["member", "next"]:
            line = " ".join([f[0], f[1], str(int(f[2]) + 8), f[3]])  # the ring no longer closes
        poisoned.append(line)
    assert poisoned != lines
    entry.write_text("\n".join(poisoned) + "\n")
    r, doc = arenas_json(str(c_core.core), env=cache_env(cache))
    assert any("contradicts the image; discarded" in n for n in notes(doc)), notes(doc)
    assert_matches_oracle(doc, c_core)
    assert entry.read_text().splitlines() == lines  # replaced by what DWARF says


# -- item 5: the sysroot is a root ----------------------------------------------------------------


class Inotify:
    """IN_OPEN events on one file (ctypes: no inotify-tools needed)."""

    def __init__(self, path: Path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        assert self.libc.inotify_add_watch(self.fd, str(path).encode(), 0x20) >= 0  # IN_OPEN

    def opened(self) -> int:
        n = 0
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return n
            off = 0
            while off + 16 <= len(buf):
                _wd, mask, _cookie, ln = struct.unpack_from("<iIII", buf, off)
                if mask & 0x20:
                    n += 1
                off += 16 + ln

    def close(self) -> None:
        os.close(self.fd)


def test_sysroot_race_never_opens_outside_the_root(c_core, tmp_path):
    """While a loop swaps the sysroot's lib directory with a symlink to a host decoy directory,
    200 analyses never open the decoy (inotify on it)."""
    libc = libc_in(c_core.core)
    first, rest = libc.lstrip("/").split("/", 1)
    root = tmp_path / "root"
    real = root / (first + ".real") / rest
    real.parent.mkdir(parents=True)
    shutil.copy(HOST_LIBC, real)
    bait = tmp_path / "outside" / rest
    bait.parent.mkdir(parents=True)
    shutil.copy(HOST_LIBC, bait)  # a real ELF with the right build-id: only its place is wrong
    watch = Inotify(bait)
    stop = threading.Event()

    def swap() -> None:
        lib, tmp = root / first, root / (first + ".tmp")
        while not stop.is_set():
            for target in (str(tmp_path / "outside"), first + ".real"):
                try:
                    os.symlink(target, tmp)
                    os.replace(tmp, lib)
                except OSError:
                    pass
    t = threading.Thread(target=swap, daemon=True)
    t.start()
    script = ("import sys, heapwalk\n"
              "ok = 0\n"
              "for i in range(200):\n"
              "    try:\n"
              "        heapwalk.open_core(sys.argv[1], sysroot=sys.argv[2]).arenas(); ok += 1\n"
              "    except Exception:\n"
              "        pass\n"
              "print(ok)\n")
    try:
        r = subprocess.run([sys.executable, "-c", script, str(c_core.core), str(root)], cwd=str(REPO),
                           env={**heapwalk_env(), "HEAPWALK_NO_CACHE": "1"}, capture_output=True, text=True,
                           timeout=900)
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, describe(r)
    assert int(r.stdout.split()[-1]) > 0, describe(r)
    assert watch.opened() == 0, "the decoy outside the sysroot was opened"
    watch.close()


def test_absolute_symlink_inside_the_root_resolves_inside(c_core, tmp_path):
    """libc.so.6 -> /opt/libc-real.so in the root means the root's /opt (the host has none)."""
    root = tmp_path / "root"
    shutil.copy(HOST_LIBC, in_root(root, "/opt/libc-real.so"))
    in_root(root, libc_in(c_core.core)).symlink_to("/opt/libc-real.so")
    r, doc = arenas_json(str(c_core.core), "--sysroot", str(root))
    assert not any("file not found" in n or "does not match" in n for n in notes(doc)), notes(doc)
    assert doc["glibc"]["symbols"].get("main_arena", "").startswith(("debug-symtab", "symtab")), doc["glibc"]
    assert_matches_oracle(doc, c_core)


def test_sysroot_proc_pid_root_is_that_process_root(c_core, tmp_path):
    """--sysroot /proc/PID/root for a process in its own mount namespace, where a bind mount puts
    the real libc at a path the host holds another file at: the process's file is used."""
    d = short_dir("ns")
    (d / "libc.so.6").write_bytes(Path("/bin/true").read_bytes())  # the host's view: another ELF
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    shutil.copy(HOST_LIBC, theirs / "libc.so.6")
    core = renamed(c_core.core, tmp_path / "core", libc_in(c_core.core), str(d / "libc.so.6"))
    p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f'mount --bind "{theirs}" "{d}" && echo ready && exec sleep 120'],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        host_r, host_doc = arenas_json(str(core))
        assert any("does not match" in n for n in notes(host_doc)), notes(host_doc)
        r, doc = arenas_json(str(core), "--sysroot", f"/proc/{p.pid}/root")
        assert not any("does not match" in n or "not found" in n for n in notes(doc)), notes(doc)
        assert doc["glibc"]["symbols"].get("main_arena", "").startswith(("debug-symtab", "symtab")), doc["glibc"]
        assert_matches_oracle(doc, c_core)
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


# -- item 6: devices and FIFOs ----------------------------------------------------------------------


NO_LIBC_FILE = {"version_range_ok": True, "allowed_diagnostics": ("note", "symbols")}


@pytest.mark.parametrize("kind", ["fifo", "ptmx", "zero", "directory"])
def test_nt_file_naming_a_device_or_fifo_is_refused_without_opening(c_core, tmp_path, kind):
    """NT_FILE's libc names a FIFO, /dev/ptmx (through a symlink: opening it would allocate a
    pty), /dev/zero or a directory: refused with a note, never opened, no hang; the heap is found
    from memory and libc's debug file."""
    d = short_dir("dv")
    try:
        name = d / "libc.so.6"
        if kind == "fifo":
            os.mkfifo(name)
        elif kind == "directory":
            name.mkdir()
        else:
            name.symlink_to(Path("/dev") / kind)
        core = renamed(c_core.core, tmp_path / "core", libc_in(c_core.core), str(name))
        t0 = time.monotonic()
        r, doc = arenas_json(str(core))
        assert time.monotonic() - t0 < 60
        assert any("not a regular file; not opened" in n for n in notes(doc)), notes(doc)
        assert_matches_oracle(doc, c_core, **NO_LIBC_FILE)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sysroot_libc_that_is_a_fifo_is_refused(c_core, tmp_path):
    root = tmp_path / "root"
    os.mkfifo(in_root(root, libc_in(c_core.core)))
    r, doc = arenas_json(str(c_core.core), "--sysroot", str(root))
    assert any("a FIFO, not a regular file" in n for n in notes(doc)), notes(doc)
    assert_matches_oracle(doc, c_core, **NO_LIBC_FILE)


# -- item 14: libc missing, its debug file present --------------------------------------------------


def test_libc_missing_but_debug_file_present_still_finds_the_heap(c_core, tmp_path):
    host_debug_file()
    core = renamed(c_core.core, tmp_path / "core", libc_in(c_core.core), "/nonexistent/libc.so.6")
    r, doc = arenas_json(str(core), env=cache_env(tmp_path / "cache"))
    assert r.returncode in (0, 1), describe(r)
    assert_matches_oracle(doc, c_core, **NO_LIBC_FILE)
    # From the debug file, relocated at libc's base (not the unrelocated symbol value).
    assert doc["glibc"]["symbols"].get("main_arena") == "debug-symtab", doc["glibc"]
