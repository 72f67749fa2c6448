"""What is in the heap (issue 5): the classifier's counts against the programs' own truth.

- corpora/classes.cpp creates known numbers of objects of eight polymorphic classes
  (namespaces, templates, multiple and virtual inheritance, objects in STL containers, some
  freed): the per-class counts must be exact with debug info, without it, and with the binary
  stripped (then class names come from RTTI through the vtable, read from the file on disk).
- corpora/zstreams.c leaves zlib streams open (inflate without window, inflate with its 32 KiB
  window, deflate) and ZIP bytes in freed buffers of a worker thread's arena.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hwkit import CACHE, CORPORA, describe, gcore, no_traceback, run_cli, spawn_ready, stop


def _build(source: str, variant: str, compiler: str, flags: list[str], strip: bool = False) -> Path:
    src = CORPORA / source
    key = hashlib.sha256(src.read_bytes() + repr((variant, compiler, flags, strip)).encode()).hexdigest()[:16]
    out = CACHE / "bin" / f"{src.stem}-{variant}-{key}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    libs = [f for f in flags if f.startswith("-l")]
    opts = [f for f in flags if not f.startswith("-l")]
    r = subprocess.run([compiler, *opts, "-o", str(tmp), str(src), *libs], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    if strip:
        subprocess.run(["strip", "-s", str(tmp)], check=True, timeout=60)
    tmp.rename(out)
    return out


def _core(binary: Path) -> tuple[Path, dict]:
    d = CACHE / "cores" / f"classify-{binary.name}"
    if not (d / "complete").exists():
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        proc = spawn_ready([str(binary), str(d)])
        try:
            gcore(proc.pid, d / "core")
        finally:
            stop(proc)
        (d / "complete").write_text("ok\n")
    return d / "core", json.loads((d / "truth.json").read_text())


def _classify(core: Path, *extra: str) -> dict:
    r = run_cli("classify", str(core), "--json", *extra)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    return json.loads(r.stdout)


CXX_VARIANTS = {
    "debug": (["-O1", "-g"], False),
    "nodebug": (["-O1"], False),
    "stripped": (["-O1"], True),
}


@pytest.mark.parametrize("variant", sorted(CXX_VARIANTS))
def test_cxx_classes_counted_exactly(variant):
    flags, strip = CXX_VARIANTS[variant]
    core, truth = _core(_build("classes.cpp", variant, "g++", flags, strip))
    doc = _classify(core)
    got = {c["name"]: c["count"] for c in doc["classes"] if c["kind"] == "c++"}
    for name, expected in truth["classes"].items():
        assert got.get(name) == expected, f"{name}: expected {expected}, got {got.get(name)} ({variant})"
    # Nothing else of the program's namespace is invented.
    extra = {n for n in got if n.startswith("app::") and n not in truth["classes"]}
    assert not extra, extra


@pytest.fixture(scope="module")
def zcore():
    return _core(_build("zstreams.c", "default", "gcc", ["-O1", "-g", "-pthread", "-lz"]))


def test_zlib_streams_counted_exactly(zcore):
    core, truth = zcore
    doc = _classify(core)
    got = {c["name"]: c for c in doc["classes"] if c["kind"] == "zlib"}
    assert got["zlib inflate stream"]["count"] == truth["inflate"]
    assert got["zlib inflate stream + window"]["count"] == truth["inflate_window"]
    assert got["zlib deflate stream"]["count"] == truth["deflate"]
    # Bytes: zlib documents the inflate window as 1 << windowBits (32 KiB), and deflate's memory
    # as (1 << (windowBits + 2)) + (1 << (memLevel + 9)) = 256 KiB + the state; each group also
    # holds the z_stream (112 bytes) and the state (inflate ~7 KiB, deflate ~6 KiB).
    per_window = got["zlib inflate stream + window"]["bytes"] / truth["inflate_window"]
    per_inflate = got["zlib inflate stream"]["bytes"] / truth["inflate"]
    per_deflate = got["zlib deflate stream"]["bytes"] / truth["deflate"]
    assert 32768 < per_window - per_inflate < 32768 + 64, (per_window, per_inflate)
    assert 5000 < per_inflate < 9000, per_inflate
    assert 262144 < per_deflate < 262144 + 8192, per_deflate


def test_zip_bytes_found_in_free_chunks_of_the_right_arena(zcore):
    core, truth = zcore
    doc = _classify(core, "--free")
    arenas = json.loads(run_cli("arenas", str(core), "--json").stdout)
    worker_arena = next(t["arena"] for t in arenas["threads"] if t["lwp"] == truth["worker_lwp"])
    per_arena = {a["arena"]: a for a in doc["arenas"]}
    zip_rows = [c for c in per_arena[worker_arena]["free_classes"] if c["name"] == "ZIP/JAR data"]
    assert zip_rows and zip_rows[0]["count"] == truth["zip_buffers"], per_arena[worker_arena]
    for addr, a in per_arena.items():
        if addr != worker_arena:
            assert not [c for c in a.get("free_classes", []) if c["name"] == "ZIP/JAR data"], addr


# -- the seeds' JVM case: Inflaters/Deflaters never end()ed, with NMT off, summary and detail ----

from nmtkit import JvmCorpora, have_jdk  # noqa: E402


@pytest.fixture(scope="module")
def jvm_cores(tmp_path_factory):
    c = JvmCorpora(CACHE, tmp_path_factory.mktemp("jvm-classify"))
    yield c
    c.close()


@pytest.mark.skipif(not have_jdk(), reason="scripts/setup installs openjdk-17-jdk-headless")
@pytest.mark.parametrize("level", ["off", "summary", "detail"])
def test_java_zlib_streams_counted_exactly(jvm_cores, level):
    c = jvm_cores.core(level)
    doc = _classify(c.core)
    got = {r["name"]: r["count"] for r in doc["classes"] if r["kind"] == "zlib"}
    truth = c.truth
    # java.util.zip: each Inflater/Deflater callocs its own z_stream (not NMT-tracked); used
    # Inflaters have allocated their 32 KiB window, idle ones have not.
    assert got.get("zlib inflate stream + window", 0) == truth["inflaters"], got
    assert got.get("zlib inflate stream", 0) == truth["idle_inflaters"], got
    assert got.get("zlib deflate stream", 0) == truth["deflaters"], got
    if level != "off":
        nmt_rows = [r for r in doc["classes"] if r["kind"] == "nmt"]
        assert nmt_rows, "NMT-tracked blocks were not recognised by their headers"
