"""Corruption corpus for the NMT reader: the JDK 17 NMT-detail core with its tables smashed.

The reader follows pointers the image holds: VirtualMemoryTracker's reserved-region list and each
region's committed list, the malloc-site hash table's bucket chains, the category name table,
the release string.  Each case edits one of them in a sparse copy of the core (the addresses come
from libjvm's own .symtab and the pointers the intact image holds, never from heapwalk) and runs
`nmt --detail` (text and JSON) and `report`: every case must end with diagnostics or one clear
error, exit 0/1, no traceback, within a bounded time, and with bounded output (a loop in a list
must not be reported as a million regions or sites).
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

import corruptkit as ck
from hwkit import CACHE, describe, run_cli
from nmtkit import LIBJVM, JvmCorpora, have_jdk
from test_corruption import assert_clean

TIMEOUT = 60
MAX_OUTPUT = 8 << 20  # bytes of JSON: the intact detail document is about 1 MB

SYMBOLS = {
    "regions": "_ZN20VirtualMemoryTracker17_reserved_regionsE",
    "sites": "_ZN15MallocSiteTable6_tableE",
    "names": "_ZN7NMTUtil18_memory_type_namesE",
    "release": "_ZN19Abstract_VM_Version13_s_vm_releaseE",
    "level": "_ZN10MemTracker15_tracking_levelE",
}
# Node layouts (docs/hotspot-nmt.md, JDK 17.0.21): reserved region node {base, size, committed
# list {vptr, head, ...}, stack, flag} with _next at 80; committed node _next at 48; a site entry
# {stack (32), flag (8), counter (32 in 17.0.21: with peaks), hash (8)} with _next at 80.
RSV_COMMITTED_HEAD, RSV_NEXT, COM_NEXT, SITE_NEXT = 24, 80, 48, 80


class SparseCore:
    """Reads a core's memory by file offset (its PT_LOAD headers), and writes patched sparse
    copies of it, without loading the 1.3 GB image."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(1 << 20)
        self.img = ck.CoreImage(head)
        self.phdrs = self.img.phdrs()

    def offset_of(self, addr: int) -> int:
        for p in self.phdrs:
            if p.type == ck.PT_LOAD and p.vaddr <= addr < p.vaddr + p.filesz - 7:
                return p.offset + addr - p.vaddr
        raise KeyError(f"{addr:#x} is not saved in {self.path}")

    def u64(self, addr: int) -> int:
        with open(self.path, "rb") as f:
            f.seek(self.offset_of(addr))
            return struct.unpack("<Q", f.read(8))[0]

    def libjvm_base(self) -> int:
        seg = self.img.note_segment()
        with open(self.path, "rb") as f:
            f.seek(seg.offset)
            notes = f.read(seg.filesz)
        files = ck.parse_file_entries(notes, ck.parse_notes(notes, 0, len(notes)))
        return min(e.start for e in files if e.path.endswith("/libjvm.so"))

    def patched(self, dest: Path, edits: dict[int, int]) -> Path:
        subprocess.run(["cp", "--sparse=always", str(self.path), str(dest)], check=True)
        with open(dest, "r+b") as f:
            for addr, value in edits.items():
                f.seek(self.offset_of(addr))
                f.write(struct.pack("<Q", value & (2**64 - 1)))
        return dest


def symtab(path: Path) -> dict[str, int]:
    out = subprocess.run(["nm", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = int(parts[0], 16)
    return syms


@pytest.fixture(scope="module")
def detail(tmp_path_factory):
    if not have_jdk():
        pytest.fail("no JDK: scripts/setup installs openjdk-17-jdk-headless")
    corpora = JvmCorpora(CACHE, tmp_path_factory.mktemp("jvm"))
    c = corpora.core("detail")
    core = SparseCore(c.core)
    syms = symtab(LIBJVM)
    missing = [v for v in SYMBOLS.values() if v not in syms]
    assert not missing, f"{LIBJVM} lacks {missing}"
    bias = core.libjvm_base()  # libjvm's first PT_LOAD is at vaddr 0
    addrs = {k: bias + syms[v] for k, v in SYMBOLS.items()}
    yield core, addrs
    corpora.close()


def first_chain(core: SparseCore, table: int, buckets: int = 511) -> tuple[int, int]:
    """(bucket address, first entry) of the first non-empty bucket of the 17u site table."""
    for i in range(buckets):
        e = core.u64(table + 8 * i)
        if e:
            return table + 8 * i, e
    raise AssertionError("no malloc site in the detail core")


def edits_for(case: str, core: SparseCore, a: dict[str, int]) -> dict[int, int]:
    lst = core.u64(a["regions"])
    head = core.u64(lst + 8)
    second = core.u64(head + RSV_NEXT)
    if case == "region-list-self-loop":
        return {head + RSV_NEXT: head}
    if case == "region-list-back-to-head":
        return {second + RSV_NEXT: head}
    if case == "region-list-wild":
        return {lst + 8: 0x00DEAD0000000000}
    if case == "region-size-huge":
        return {head + 8: 2**63 + 5}
    if case == "committed-self-loop":
        com = core.u64(head + RSV_COMMITTED_HEAD)
        return {com + COM_NEXT: com}
    if case == "committed-outside-region":
        com = core.u64(head + RSV_COMMITTED_HEAD)
        return {com: 0x10}
    if case == "site-chain-self-loop":
        _, e = first_chain(core, a["sites"])
        return {e + SITE_NEXT: e}
    if case == "site-buckets-wild":
        b, _ = first_chain(core, a["sites"])
        return {b: 0x00BAD00000000000}
    if case == "site-buckets-all-same":
        # Every bucket points at one entry whose chain loops: the loop must be walked once.
        b, e = first_chain(core, a["sites"])
        out = {a["sites"] + 8 * i: e for i in range(511)}
        out[e + SITE_NEXT] = e
        return out
    if case == "names-wild":
        return {a["names"] + 8 * i: 0x00F00D0000000000 + i for i in range(27)}
    if case == "release-wild":
        return {a["release"]: 0x7}
    if case == "tracking-level-garbage":
        return {a["level"]: 0x4141414141414141}
    raise KeyError(case)


CASES = ["region-list-self-loop", "region-list-back-to-head", "region-list-wild", "region-size-huge",
         "committed-self-loop", "committed-outside-region", "site-chain-self-loop", "site-buckets-wild",
         "site-buckets-all-same", "names-wild", "release-wild", "tracking-level-garbage"]


@pytest.mark.parametrize("case", CASES)
def test_smashed_nmt_tables(detail, tmp_path, case):
    core, addrs = detail
    broken = core.patched(tmp_path / f"{case}.core", edits_for(case, core, addrs))
    r = run_cli("nmt", broken, "--detail", "--json", timeout=TIMEOUT)
    assert len(r.stdout) < MAX_OUTPUT, f"{case}: {len(r.stdout)} bytes of JSON"
    doc = assert_clean(r, f"nmt --detail --json {case}")
    if doc is not None:
        n = doc["nmt"]
        regions, sites = n.get("regions") or [], n.get("sites") or []
        assert len(regions) < 10000 and len(sites) < 100000, (case, len(regions), len(sites))
        bases = [x["base"] for x in regions]
        assert len(bases) == len(set(bases)), f"{case}: a region listed twice"
        if case.startswith(("region", "committed", "site")):
            assert [d for d in doc.get("diagnostics", []) if d.get("severity") == "error"], (
                f"{case}: a smashed list and no error diagnostic\n{describe(r)}")
    r = run_cli("nmt", broken, "--detail", timeout=TIMEOUT)
    assert len(r.stdout) < MAX_OUTPUT
    assert_clean(r, f"nmt --detail {case}")
    r = run_cli("report", broken, "--no-classes", "--json", timeout=TIMEOUT)
    assert_clean(r, f"report {case}")
    broken.unlink()


def test_intact_detail_core_has_no_diagnostics(detail, tmp_path):
    """The control: the same copy with no edit reads cleanly (so each case's findings are its own)."""
    core, _ = detail
    copy = core.patched(tmp_path / "intact.core", {})
    r = run_cli("nmt", copy, "--detail", "--json", timeout=TIMEOUT)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    assert not [d for d in doc.get("diagnostics", []) if d.get("kind") != "note"], doc.get("diagnostics")
    assert doc["nmt"]["regions"] and doc["nmt"]["sites"]
    copy.unlink()
