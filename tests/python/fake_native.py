"""A stand-in for ``heapwalk._native`` that returns canned records (see API.md).

It records every call in ``calls`` so tests can check what the Python layer asked for.
Usable both from pytest (via the ``fake`` fixture) and inside gdb (tests import it there).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

MAIN = 0x7FFFF7E19C80
SECOND = 0x7FFFF0000030
HEAP = 0x7FFFF0000000


class Error(RuntimeError):
    """Base engine error."""


class FormatError(Error):
    """Not an ELF core."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class FaultError(Error):
    """Unreadable required structure."""

    def __init__(self, message: str, address: int, size: int) -> None:
        super().__init__(message)
        self.address = address
        self.size = size


class SymbolError(Error):
    """malloc state not found."""

    def __init__(self, message: str, symbol: str) -> None:
        super().__init__(message)
        self.symbol = symbol


def _arena(index: int, address: int, main: bool, heaps: List[Dict[str, int]]) -> Dict[str, Any]:
    return {"index": index, "address": address, "main": main,
            "system_bytes": 135168 * (index + 1), "max_system_bytes": 135168 * (index + 1),
            "heaps": heaps, "fastbins": {"count": 3, "bytes": 96},
            "bins": {"count": 2, "bytes": 3072}, "top_bytes": 120000,
            "tcache": {"count": 7, "bytes": 448},
            "in_use": {"count": 100 + index, "bytes": 10000 + index}}


ARENAS: Dict[str, Any] = {
    "schema": "heapwalk/1",
    "glibc": {"version": "2.36", "layout_source": "symbols+profile"},
    "arenas": [
        _arena(0, MAIN, True, [{"address": 0x555555559000, "size": 135168,
                                "mprotect_size": 135168}]),
        _arena(1, SECOND, False, [{"address": HEAP, "size": 270336,
                                   "mprotect_size": 270336}]),
    ],
    "threads": [
        {"lwp": 1000, "arena": MAIN, "tcache": {"address": 0x555555559010, "count": 4,
                                                 "bytes": 256}},
        {"lwp": 1001, "arena": SECOND, "tcache": {"address": HEAP + 0x8a0, "count": 3,
                                                   "bytes": 192}},
        {"lwp": 1002, "arena": None, "tcache": {"address": None, "count": 0, "bytes": 0}},
    ],
    "mmapped": {"count": 1, "bytes": 1576960},
    "diagnostics": [{"kind": "note", "address": None, "arena": None,
                     "detail": "libc debug symbols found by build-id", "severity": "note"}],
}

#: A few of the engine's diagnostic kinds (``_native.diagnostic_kinds()``).
KINDS = [{"kind": "note", "severity": "note", "meaning": "information"},
         {"kind": "symbols", "severity": "warning", "meaning": "a file or symbol not used"},
         {"kind": "bad_size", "severity": "error", "meaning": "impossible chunk size"}]


def _bins_arena(arena: Dict[str, Any]) -> Dict[str, Any]:
    base = arena["heaps"][0]["address"]
    return {"address": arena["address"], "index": arena["index"], "main": arena["main"],
            "fastbins": [{"index": 0, "size": 32, "count": 3, "bytes": 96,
                          "chunks": [base + 0x300, base + 0x320, base + 0x340]}],
            "bins": [{"index": 1, "kind": "unsorted", "count": 1, "bytes": 1024,
                      "chunks": [{"address": base + 0x400, "size": 1024}]},
                     {"index": 70, "kind": "large", "count": 6, "bytes": 2048 * 6,
                      "chunks": [{"address": base + 0x1000 * i, "size": 2048}
                                 for i in range(1, 7)]}],
            "top": {"address": base + 0x8000, "size": 120000}}


CHUNKS = [{"address": HEAP + 0x10 * i * 2, "size": 32 * (i + 1),
           "state": ["used", "tcache", "fastbin", "top"][i % 4], "arena": SECOND,
           "heap": HEAP} for i in range(250)]


class FakeTarget:
    """A fake engine target."""

    def __init__(self, owner: "FakeNative", kind: str) -> None:
        self.owner = owner
        self.kind = kind
        self.closed = False

    def _log(self, *call: Any) -> None:
        self.owner.calls.append(call)

    def describe(self) -> Dict[str, Any]:
        self._log("describe")
        return {"kind": self.kind, "path": None, "pid": None, "threads": [], "modules": [],
                "diagnostics": []}

    def arenas(self) -> Dict[str, Any]:
        self._log("arenas")
        report = copy.deepcopy(ARENAS)
        report["diagnostics"] += copy.deepcopy(self.owner.extra_diagnostics)
        return report

    def bins(self, arena: Optional[int] = None) -> Dict[str, Any]:
        self._log("bins", arena)
        arenas = [_bins_arena(a) for a in ARENAS["arenas"]
                  if arena is None or arena in (a["index"], a["address"])]
        return {"arenas": arenas, "diagnostics": copy.deepcopy(self.owner.extra_diagnostics)}

    def tcache(self, lwp: Optional[int] = None) -> Dict[str, Any]:
        self._log("tcache", lwp)
        threads = [{"lwp": t["lwp"], "address": t["tcache"]["address"], "arena": t["arena"],
                    "count": t["tcache"]["count"], "bytes": t["tcache"]["bytes"],
                    "bins": ([{"index": 0, "size": 32, "count": t["tcache"]["count"],
                               "chunks": [HEAP + 0x100]}] if t["tcache"]["count"] else [])}
                   for t in ARENAS["threads"] if lwp is None or lwp == t["lwp"]]
        return {"threads": threads, "diagnostics": []}

    def chunks(self, arena: Optional[int] = None, state: str = "all",
               limit: Optional[int] = None) -> Dict[str, Any]:
        self._log("chunks", arena, state, limit)
        selected = [c for c in CHUNKS if state == "all"
                    or (state == "used") == (c["state"] in ("used", "mmapped"))]
        shown = selected if limit is None else selected[:limit]
        return {"chunks": copy.deepcopy(shown), "total": len(selected),
                "truncated": len(shown) < len(selected), "diagnostics": []}

    def chunk(self, addr: int) -> Dict[str, Any]:
        self._log("chunk", addr)
        for i, c in enumerate(CHUNKS):
            if c["address"] <= addr < c["address"] + c["size"]:
                record = dict(c, mem=c["address"] + 16, usable=c["size"] - 8,
                              offset=addr - c["address"] - 16)
                return {"query": addr, "chunk": record,
                        "prev": CHUNKS[i - 1] if i else None,
                        "next": CHUNKS[i + 1] if i + 1 < len(CHUNKS) else None,
                        "arena": c["arena"], "diagnostics": []}
        return {"query": addr, "chunk": None, "prev": None, "next": None, "arena": None,
                "diagnostics": []}

    def close(self) -> None:
        self._log("close")
        self.closed = True


class FakeNative:
    """The fake module: ``open_core``, ``attach``, ``open_callback`` and the exceptions."""

    Error = Error
    FormatError = FormatError
    FaultError = FaultError
    SymbolError = SymbolError

    def __init__(self) -> None:
        self.calls: List[Any] = []
        self.extra_diagnostics: List[Dict[str, Any]] = []
        self.fail: Optional[BaseException] = None

    def _open(self, kind: str, *call: Any) -> FakeTarget:
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail
        return FakeTarget(self, kind)

    @staticmethod
    def diagnostic_kinds() -> List[Dict[str, str]]:
        return copy.deepcopy(KINDS)

    def open_core(self, path: str, sysroot: Optional[str] = None,
                  overrides: Optional[dict] = None) -> FakeTarget:
        return self._open("core", "open_core", path, sysroot)

    def attach(self, pid: int, threads: Optional[list] = None,
               overrides: Optional[dict] = None, sysroot: Optional[str] = None,
               capture: bool = True, java_heap: bool = False, max_copy: Optional[int] = None,
               snapshot: Optional[str] = None, tmpdir: Optional[str] = None,
               store: str = "auto") -> FakeTarget:
        return self._open("live", "attach", pid, threads)

    def open_callback(self, read: Any, threads: list, overrides: Optional[dict] = None,
                      glibc_version: Optional[str] = None) -> FakeTarget:
        return self._open("callback", "open_callback", read, threads)
