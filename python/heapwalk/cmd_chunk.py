"""Chunk inspection (issue 15): ``chunk ADDR`` with decoded header fields, links and a hexdump,
``vis`` (a run of neighbouring chunks, word by word) and ``try_free ADDR`` (what free() would do
on this glibc and which of its checks would abort).

The engine decodes, walks and simulates (native/ptmalloc/inspect.cpp); this module renders.
"""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any, Dict, List, Optional

from . import cmd_alloc, render
from .commands import ARENA_HELP, Chunk, Command, Invocation, non_negative, resolve_arena
from .errors import UsageError
from .render import Style

Record = Dict[str, Any]

#: Bytes of the user data ``chunk`` dumps unless --bytes is given, and the most it dumps.
DEFAULT_DUMP = 64
MAX_DUMP = 4096
#: Chunks ``vis`` shows unless COUNT is given, the most it shows, and bytes shown per chunk.
DEFAULT_VIS = 10
MAX_VIS = 1000
VIS_BYTES = 256
#: The palette ``vis`` cycles through, one colour per chunk (render.Style codes).
PALETTE = ("c1", "c2", "c3", "c4", "c5")


def _hex(value: Optional[int]) -> str:
    return "-" if value is None else "0x%x" % value


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7f else "." for b in data)


def hexdump(data: bytes, base: int, indent: str = "  ") -> List[str]:
    """16 bytes a line: offset from ``base``'s start, hex bytes, ASCII (75 columns)."""
    out = []
    for off in range(0, len(data), 16):
        row = data[off:off + 16]
        cells = " ".join("%02x" % b for b in row)
        out.append("%s+0x%03x  %-47s  |%s|" % (indent, off, cells, _printable(row)))
    return out


def _flags(fields: Record) -> str:
    flags = fields.get("flags") or []
    return " | ".join(flags) if flags else "no flag bits"


def _width() -> int:
    try:
        return int(os.environ.get("COLUMNS", "")) or shutil.get_terminal_size((80, 24)).columns
    except ValueError:
        return shutil.get_terminal_size((80, 24)).columns


def _describe(info: Record, query: int) -> List[str]:
    """What an address in no chunk is (lines of at most ~80 columns)."""
    kind = info.get("kind")
    head = "%s: not inside any heap chunk" % render.addr(query)
    if kind not in ("stack", "module", "mapping"):
        return [head + "; not mapped in the target"]
    out = [head]
    if kind == "stack":
        what = "on the stack of thread LWP %d" % info.get("lwp", 0)
        if info.get("gdb_thread"):
            what += " (gdb thread %d)" % info["gdb_thread"]
        out.append("  " + what)
    elif kind == "module":
        what = "in %s" % info.get("module", "?")
        if info.get("symbol"):
            what += " at %s+0x%x" % (info["symbol"], info.get("symbol_offset") or 0)
        out.append("  " + what)
    m = info.get("mapping") or {}
    if m:
        out.append("  mapping %s-%s %s %s" % (render.addr(m.get("start")),
                                              render.addr(m.get("end")), m.get("perms", "?"),
                                              m.get("path") or "[anonymous]"))
    return out


class ChunkDetail(Chunk):
    """``chunk ADDR [--bytes N]``: the chunk holding ADDR, decoded (replaces ``Chunk``)."""

    description = ("Find the chunk holding ADDR (any address inside it, header included) and "
                   "show its address and user pointer, size and flag bits (PREV_INUSE, "
                   "IS_MMAPPED, NON_MAIN_ARENA), prev_size when the previous chunk is free, "
                   "state, arena, fd/bk (safe-linking decoded for tcache and fastbins on glibc "
                   ">= 2.32; fd_nextsize/bk_nextsize for large bins), the tcache key and what "
                   "it matches, a hex/ASCII dump of the first bytes of the user data and the "
                   "previous and next chunks. For an address in no chunk, says what it is: a "
                   "thread's stack, a module (nearest symbol), a mapping, or unmapped. Exit "
                   "status 1 when no chunk holds ADDR.")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        super().configure(parser)
        parser.add_argument("--bytes", metavar="N", type=non_negative, default=DEFAULT_DUMP,
                            help="dump the first N bytes of the user data (default %d, at most "
                                 "%d)" % (DEFAULT_DUMP, MAX_DUMP))

    def collect(self, inv: Invocation) -> Record:
        if cmd_alloc.owner(inv.target):  # jemalloc's or tcmalloc's allocation at ADDR
            document = cmd_alloc.chunk(inv.target, inv.evaluate(inv.args.address),
                                       min(inv.args.bytes, MAX_DUMP))
            if document.get("chunk"):
                return document
            query = document.get("query", 0)
            glibc = super().collect(inv)  # glibc's main arena is still there
            if glibc.get("chunk"):
                document = dict(glibc, allocator="ptmalloc")  # a chunk of glibc's own heap
            else:
                document.update({k: v for k, v in glibc.items() if k not in document})
                document["diagnostics"] = (list(document.get("diagnostics", []))
                                           + list(glibc.get("diagnostics", [])))
                document["query"] = query
        else:
            document = super().collect(inv)
        c = document.get("chunk")
        if c:
            dump = min(inv.args.bytes, MAX_DUMP)
            c.update(inv.target.chunk_fields(c["address"], c["size"], c.get("state", "used"),
                                             dump))
        else:
            info = inv.target.describe_address(document.get("query", 0))
            if not info:
                return document
            thread_of = getattr(inv, "gdb_thread_of", None)
            if info.get("kind") == "stack" and callable(thread_of):
                number = thread_of(info.get("lwp"))
                if number:
                    info["gdb_thread"] = number
            document["address_info"] = info
        return document

    def render(self, document: Record, inv: Invocation) -> List[str]:
        c = document.get("chunk")
        if c and document.get("allocator") in cmd_alloc.ALLOCATORS:
            return cmd_alloc.render_chunk(document, hexdump, inv.style)
        if not c:
            info = document.get("address_info")
            if info:
                return _describe(info, document.get("query", 0))
            return super().render(document, inv)
        lines = super().render(document, inv)
        if "size_field" not in c:
            return lines
        extra = ["  %-6s %s: %s" % ("flags", _hex(c.get("size_field")), _flags(c))]
        if c.get("prev_size") is not None:
            extra.append("  %-6s %s" % ("prev_size", _hex(c["prev_size"])))
        if c.get("fd_stored") is not None:
            fd = "  %-6s %s" % ("fd", _hex(c.get("fd")))
            if c.get("fd_protected"):
                fd += " (stored %s, safe-linking)" % _hex(c.get("fd_stored"))
            extra.append(fd)
        if c.get("bk") is not None:
            extra.append("  %-6s %s" % ("bk", _hex(c["bk"])))
        if c.get("fd_nextsize") is not None:
            extra.append("  fd_nextsize %s  bk_nextsize %s" % (_hex(c.get("fd_nextsize")),
                                                               _hex(c.get("bk_nextsize"))))
        if c.get("key") is not None and (c.get("state") == "tcache" or c.get("key_matches")):
            match = c.get("key_matches")
            if match == "tcache_key":
                what = "= tcache_key (marks a chunk in a tcache)"
            elif match == "tcache":
                what = "= the tcache of LWP %s (marks a chunk in a tcache)" % c.get("key_owner_lwp")
            else:
                what = "matches no tcache key"
            extra.append("  %-6s %s %s" % ("key", _hex(c.get("key")), what))
        if c.get("class"):
            extra.append("  %-6s %s" % ("class", c["class"]))
        data = bytes.fromhex(c.get("bytes") or "")
        if data:
            extra.append("  user data at %s, first %d bytes:" % (render.addr(c.get("bytes_at")),
                                                                 len(data)))
            extra.extend(hexdump(data, c.get("bytes_at", 0), "    "))
        # After "arena"/"heap"/"mapped", before the neighbours.
        return lines[:-2] + extra + lines[-2:]


class Vis(Command):
    """``vis [ADDR] [COUNT]``: neighbouring chunks word by word (pwndbg's vis_heap_chunks)."""

    name = "vis"
    summary = "a run of neighbouring chunks, their words in hex and ASCII, colour per chunk"
    description = ("Show COUNT chunks (default %d, at most %d) in address order from the chunk "
                   "holding ADDR (default: the first chunks of --arena, or of main_arena): a "
                   "header line per chunk (address, size, state) and its words in hex with "
                   "ASCII, two words a line on an 80-column terminal, at most %d bytes a chunk "
                   "(then '...'). On a terminal each chunk has its own colour."
                   % (DEFAULT_VIS, MAX_VIS, VIS_BYTES))
    completes_expressions = True

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("address", metavar="ADDR", nargs="?",
                            help="start at the chunk holding this address (in gdb any "
                                 "expression)")
        parser.add_argument("count", metavar="COUNT", nargs="?", type=non_negative,
                            help="how many chunks (default %d)" % DEFAULT_VIS)
        parser.add_argument("--arena", metavar="ARENA", help=ARENA_HELP)
        parser.add_argument("--bytes", metavar="N", type=non_negative, default=VIS_BYTES,
                            help="bytes shown per chunk, header included (default %d, at most "
                                 "%d)" % (VIS_BYTES, MAX_DUMP))

    def collect(self, inv: Invocation) -> Record:
        start = inv.evaluate(inv.args.address) if inv.args.address is not None else None
        arena = resolve_arena(inv, inv.args.arena)
        count = DEFAULT_VIS if inv.args.count is None else inv.args.count
        if count > MAX_VIS:
            raise UsageError("COUNT must be at most %d: %d" % (MAX_VIS, count))
        document = inv.target.vis(start, arena, count, min(inv.args.bytes, MAX_DUMP))
        document = render.wrap(self.name, document)
        document["query"] = start
        return document

    def render(self, document: Record, inv: Invocation) -> List[str]:
        per_line = 4 if _width() >= 112 else 2
        style = inv.style
        chunks = document.get("chunks", [])
        if not chunks:
            where = render.addr(document.get("query")) if document.get("query") is not None else "the arena"
            return ["no chunk at %s" % where]
        out = []
        for i, c in enumerate(chunks):
            colour = PALETTE[i % len(PALETTE)]
            state = c.get("state", "?")
            head = "%s  size 0x%x  %s" % (render.addr(c.get("address")), c.get("size", 0), state)
            out.append(style.paint(colour, head))
            data = bytes.fromhex(c.get("bytes") or "")
            step = 8 * per_line
            for off in range(0, len(data) - len(data) % 8, step):
                row = data[off:off + step]
                words = ["0x%016x" % int.from_bytes(row[w:w + 8], "little")
                         for w in range(0, len(row) - len(row) % 8, 8)]
                line = "%s  %s  %s" % (render.addr(c.get("address", 0) + off), " ".join(words),
                                       _printable(row))
                out.append(style.paint(colour, line))
            if len(data) < c.get("size", 0):
                out.append(style.paint(colour, "%s  ... %d more bytes" % (
                    " " * len(render.addr(0)), c.get("size", 0) - len(data))))
        return out


class TryFree(Command):
    """``try_free ADDR [--thread LWP]``: what free(ADDR) would do on the target's glibc."""

    name = "try_free"
    summary = "what free(ADDR) would do on this glibc, and which check would abort"
    description = ("Follow glibc's free() on the target's memory without changing it: "
                   "__libc_free, munmap_chunk and _int_free's checks in glibc's order (exact "
                   "for glibc 2.36; version differences: tcache 2.26, tcache key 2.29, "
                   "safe-linking 2.32, tcache length bound 2.33, random key 2.34, no fastbins "
                   "2.43), then what would happen: tcache, fastbin, unsorted (after "
                   "consolidation), merged into top, or munmap; or the check that aborts with "
                   "glibc's own message, e.g. 'free(): double free detected in tcache 2'. The "
                   "tcache is the first thread's unless --thread is given. Exit status 0 when "
                   "free() would succeed, 1 when it would abort.")
    completes_expressions = True

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("address", metavar="ADDR",
                            help="the pointer given to free() (in gdb any expression)")
        parser.add_argument("--thread", metavar="LWP", type=non_negative,
                            help="the thread calling free() (its LWP; default: the first "
                                 "thread)")

    def collect(self, inv: Invocation) -> Record:
        lwp = inv.args.thread
        if lwp is None:
            lwp = getattr(inv, "default_lwp", None)
        return render.wrap(self.name, inv.target.try_free(inv.evaluate(inv.args.address), lwp))

    def render(self, document: Record, inv: Invocation) -> List[str]:
        style = inv.style
        verdict = document.get("action", "?")
        head = "free(%s) on glibc %s" % (render.addr(document.get("address")),
                                         document.get("glibc") or "?")
        if document.get("lwp"):
            head += ", thread LWP %d" % document["lwp"]
        if document.get("aborts"):
            out = [head + ": " + style.paint("error", "aborts: %s" % document.get("message"))]
        else:
            what = {"tcache": "puts the chunk in the tcache",
                    "fastbin": "puts the chunk in its fastbin",
                    "unsorted": "puts the chunk in the unsorted bin",
                    "top": "merges the chunk into the top chunk",
                    "munmap": "unmaps the chunk",
                    "nothing": "does nothing"}.get(verdict, verdict)
            out = [head + ": " + style.paint("free", "succeeds, %s" % what)]
        out.append("  chunk %s  size 0x%x" % (render.addr(document.get("chunk")),
                                             document.get("size") or 0))
        for c in document.get("checks", []):
            mark = "ok  " if c.get("passed") else style.paint("error", "FAIL")
            line = "  %s %s" % ("ok  " if c.get("passed") else "FAIL", c.get("check", ""))
            detail = c.get("detail")
            if detail and len(line) + 2 + len(detail) <= 80:
                out.append("  %s %s: %s" % (mark, c.get("check", ""), detail))
            else:
                out.append("  %s %s" % (mark, c.get("check", "")))
                if detail:
                    out.append("         " + detail)
        for n in document.get("notes", []):
            out.append("  note: %s" % n)
        return out

    def status(self, document: Record) -> int:
        # The verdict alone: a heap with corruption elsewhere (diagnostics) can still free.
        return 1 if document.get("aborts") else 0


def commands() -> List[Command]:
    """The commands this module defines (``chunk`` replaces the plain one)."""
    return [ChunkDetail(), Vis(), TryFree()]
