"""The built-in glibc layout profile against DWARF: gdb's `ptype/o` on the host libc.

The oracle is the debug information of the libc these tests run on (Debian's libc6-dbg), read by
gdb, not the engine. A profile offset that disagrees with DWARF fails here.
"""
from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

from heapwalk import _native  # noqa: E402

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def ptype_offsets(struct: str) -> tuple[dict[str, int], int]:
    out = subprocess.run(
        ["gdb", "-nx", "-batch", "-ex", f"ptype/o {struct}", LIBC],
        capture_output=True, text=True, timeout=120, check=True).stdout
    fields: dict[str, int] = {}
    for m in re.finditer(r"/\*\s+(\d+)\s+\|\s+\d+\s+\*/\s+(.+?)\s*;", out):
        decl = m.group(2)
        name = re.findall(r"[A-Za-z_]\w*", decl.split("[")[0])[-1]
        fields[name] = int(m.group(1))
    total = int(re.search(r"total size \(bytes\):\s+(\d+)", out).group(1))
    return fields, total


def glibc_version() -> str:
    return platform.libc_ver()[1]


def test_malloc_state_matches_dwarf() -> None:
    lay = _native.layout(glibc_version())
    f, size = ptype_offsets("struct malloc_state")
    assert size == lay["ms_size"]
    assert f["fastbinsY"] == lay["ms_fastbins"]
    assert f["top"] == lay["ms_top"]
    assert f["last_remainder"] == lay["ms_last_remainder"]
    assert f["bins"] == lay["ms_bins"]
    assert f["next"] == lay["ms_next"]
    assert f["next_free"] == lay["ms_next_free"]
    assert f["attached_threads"] == lay["ms_attached_threads"]
    assert f["system_mem"] == lay["ms_system_mem"]
    assert f["max_system_mem"] == lay["ms_max_system_mem"]


def test_malloc_par_matches_dwarf() -> None:
    lay = _native.layout(glibc_version())
    f, size = ptype_offsets("struct malloc_par")
    assert size == lay["mp_size"]
    for field in ("trim_threshold", "top_pad", "mmap_threshold", "arena_test", "arena_max",
                  "n_mmaps", "n_mmaps_max", "max_n_mmaps", "mmapped_mem", "max_mmapped_mem",
                  "sbrk_base", "tcache_bins", "tcache_max_bytes", "tcache_count"):
        assert f[field] == lay["mp_" + field], field


def test_heap_info_and_tcache_match_dwarf() -> None:
    lay = _native.layout(glibc_version())
    f, size = ptype_offsets("heap_info")
    assert size == lay["hi_size"]
    assert (f["ar_ptr"], f["prev"], f["size"], f["mprotect_size"]) == (
        lay["hi_ar_ptr"], lay["hi_prev"], lay["hi_heap_size"], lay["hi_mprotect_size"])
    f, size = ptype_offsets("struct tcache_perthread_struct")
    assert size == lay["tc_size"]
    assert (f["counts"], f["entries"]) == (lay["tc_counts"], lay["tc_entries"])
    f, _ = ptype_offsets("struct tcache_entry")
    assert (f["next"], f["key"]) == (lay["te_next"], lay["te_key"])
