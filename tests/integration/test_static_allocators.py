"""Allocators linked statically into a stripped executable (issue 16: "LD_PRELOAD-ed or linked"):
no libjemalloc.so or libtcmalloc.so is mapped, the executable itself defines malloc. Detection
reads the executable's file (its malloc and the allocator's own message strings); the models then
find the allocator's globals in the executable's data by search, as for a stripped library.

Oracles: the statistics corpora/jemalloc_stats.c and corpora/tcmalloc_stats.c print before they
park (the same checks as test_jemalloc.py and test_tcmalloc.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hwkit import CACHE, CFLAGS, CORPORA, gcore, import_heapwalk, run_cli, spawn_ready, stop
from test_jemalloc import ARENA_KEYS
from test_tcmalloc import _check, _probe

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
LINK = {
    "jemalloc": [str(LIBDIR / "libjemalloc.a"), "-lm", "-ldl"],
    "tcmalloc": [str(LIBDIR / "libtcmalloc_minimal.a"), "-lstdc++", "-lm"],
}


def _binary(kind: str) -> Path:
    src = CORPORA / f"{kind}_stats.c"
    h = hashlib.sha256(src.read_bytes() + " ".join(CFLAGS + LINK[kind]).encode())
    out = CACHE / "bin" / f"{kind}_stats-static-{h.hexdigest()[:16]}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        r = subprocess.run(["gcc", *CFLAGS, "-o", str(tmp), str(src), *LINK[kind]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        subprocess.run(["strip", str(tmp)], check=True)
        tmp.rename(out)
    return out


def _start(kind: str, outdir: Path) -> subprocess.Popen:
    binary = str(_binary(kind))
    if kind == "jemalloc":  # jemalloc_stats READY_FD OUTDIR
        r, w = os.pipe()
        proc = subprocess.Popen([binary, str(w), str(outdir)], pass_fds=(w,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(w)
        from hwkit import await_ready  # noqa: PLC0415
        await_ready(proc, r, 120, "jemalloc_stats")
        return proc
    return spawn_ready([binary, "4", str(outdir)])  # tcmalloc_stats NTHREADS OUTDIR READY_FD


@pytest.fixture(scope="module", params=["jemalloc", "tcmalloc"])
def snapshot(request):
    kind = request.param
    if not (LIBDIR / Path(LINK[kind][0]).name).exists():
        pytest.fail(f"{LINK[kind][0]} is missing: scripts/setup installs it")
    binary = _binary(kind)
    d = CACHE / "cores" / binary.name
    if not (d / "complete").exists():
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        proc = _start(kind, d)
        try:
            gcore(proc.pid, d / "core")
        finally:
            stop(proc)
        (d / "complete").write_text("")
    return kind, binary, d / "core", json.loads((d / "truth.json").read_text())


def test_detected_in_the_executable(snapshot):
    kind, binary, core, _ = snapshot
    hw = import_heapwalk()
    t = hw.open_core(str(core))
    try:
        found = t.allocators()
    finally:
        t.close()
    assert found[0]["allocator"] == kind and found[0]["owns_malloc"], found
    assert Path(found[0]["module"]).name == binary.name, found
    assert found[-1]["allocator"] == "ptmalloc" and not found[-1]["owns_malloc"], found


def test_figures_equal_the_allocators_own(snapshot):
    kind, _, core, truth = snapshot
    if kind == "tcmalloc":
        _check(_probe(str(core), "dynsym"), truth, with_metadata=False)
        return
    hw = import_heapwalk()
    t = hw.open_core(str(core))
    try:
        doc = t.jemalloc(allocations=True)
    finally:
        t.close()
    assert doc["layout_source"] == "search"
    got = {a["index"]: a["stats"] for a in doc["arenas"]}
    wrong = [(a["index"], k, got.get(a["index"], {}).get(k), a[k])
             for a in truth["arenas"] for k in ARENA_KEYS if got.get(a["index"], {}).get(k) != a[k]]
    assert not wrong, wrong
    for k, v in truth["stats"].items():
        assert doc["stats"]["stats." + k] == v, k
    by_addr = {a[0]: a for a in doc["allocations"]}
    missing = [(hex(p), size) for p, size in truth["held"] if p not in by_addr or by_addr[p][1] != size]
    assert not missing, missing[:10]


def test_cli_arenas_names_the_executable(snapshot):
    kind, binary, core, _ = snapshot
    r = run_cli("arenas", str(core))
    assert r.returncode == 0, r.stderr
    assert ("jemalloc 5.3.0" if kind == "jemalloc" else "gperftools 2.10") in r.stdout
    assert binary.name in r.stdout
