"""The way gef/pwndbg walk a heap: gdb memory reads per chunk, in Python, inside gdb.

Sourced by bench/bench.py into `gdb -batch CORE`: walks every heap of every arena from
main_arena (glibc debug symbols loaded by gdb) and prints the chunk count and the time.
HEAPWALK_GDB_STYLE selects how a chunk is read:

- "raw": one `read_memory` of the size field per chunk: the leanest possible Python walker.
- "value" (default): each chunk as a `struct malloc_chunk` gdb.Value and its header fields, as
  pwndbg's Chunk class reads them.
- "gef": the per-chunk work of gef's `heap chunks --all --summary` (gef 2026-05, commit 90cced8,
  GlibcChunk / GlibcHeapChunksCommand / GlibcHeapArenaSummary), modelled here, not copied: every
  chunk object builds its ctypes `malloc_chunk` structure class (twice, as GlibcChunk.reset does),
  reads the 48-byte header with one `read_memory`, checks that the next chunk's address lies in a
  mapping by scanning the mapping list, and feeds a size/flag distribution. It walks each arena up
  to that arena's own top (gef compares against main_arena's top) and prints nothing per chunk,
  so it does less than gef does.

A reference point for users coming from those tools.
"""
import ctypes
import os
import re
import time

import gdb  # type: ignore[import-not-found]

HEAP_MAX = 64 << 20
inferior = gdb.selected_inferior()
STYLE = os.environ.get("HEAPWALK_GDB_STYLE", "value")
CHUNK_PTR = gdb.lookup_type("struct malloc_chunk").pointer()


def u64(addr):
    return int.from_bytes(inferior.read_memory(addr, 8).tobytes(), "little")


def chunk_size(addr):
    if STYLE == "raw":
        return u64(addr + 8) & ~7
    chunk = gdb.Value(addr).cast(CHUNK_PTR).dereference()
    # pwndbg reads the header fields of every chunk it lists
    _prev = int(chunk["mchunk_prev_size"])
    return int(chunk["mchunk_size"]) & ~7


def walk(start, end, top):
    n, p = 0, start
    while start <= p < end:
        if p == top:
            return n + 1
        size = chunk_size(p)
        if size < 16:
            break
        n += 1
        p += size
    return n


# --- gef style -------------------------------------------------------------------------------

def core_mappings():
    """(start, end) of every loadable section of the core, as `info files` lists them."""
    text = gdb.execute("info files", to_string=True)
    return [(int(a, 16), int(b, 16)) for a, b in re.findall(r"(0x[0-9a-f]+) - (0x[0-9a-f]+) is load", text)]


MAPS = core_mappings() if STYLE == "gef" else []


def chunk_struct():
    """A fresh ctypes class per call, the way gef's malloc_chunk_t() builds one."""
    class MallocChunk(ctypes.Structure):
        pass

    MallocChunk._fields_ = [("prev_size", ctypes.c_uint64), ("size", ctypes.c_uint64),
                            ("fd", ctypes.c_uint64), ("bk", ctypes.c_uint64),
                            ("fd_nextsize", ctypes.POINTER(MallocChunk)),
                            ("bk_nextsize", ctypes.POINTER(MallocChunk))]
    return MallocChunk


class GefStyleChunk:
    def __init__(self, base):
        self.base_address = base
        self.data_address = base + 16
        self._sizeof = ctypes.sizeof(chunk_struct())
        data = inferior.read_memory(base, ctypes.sizeof(chunk_struct())).tobytes()
        self._chunk = chunk_struct().from_buffer_copy(data)

    @property
    def size(self):
        return self._chunk.size & ~7

    @property
    def flags(self):
        return self._chunk.size & 7


class Summary:
    def __init__(self):
        self.by_size = {}
        self.by_flag = {"PREV_INUSE": [0, 0], "IS_MMAPPED": [0, 0], "NON_MAIN_ARENA": [0, 0]}

    def process(self, chunk):
        entry = self.by_size.setdefault((chunk.size, ""), [0, 0])
        entry[0] += 1
        entry[1] += chunk.size
        for bit, name in ((1, "PREV_INUSE"), (2, "IS_MMAPPED"), (4, "NON_MAIN_ARENA")):
            if chunk.flags & bit:
                self.by_flag[name][0] += 1
                self.by_flag[name][1] += chunk.size


def valid(addr):
    return any(map(lambda m: m[0] <= addr < m[1], MAPS))


def gef_walk(start, end, top):
    n, summary = 0, Summary()
    chunk = GefStyleChunk(start)
    while True:
        if chunk.base_address == top:
            return n + 1
        if chunk.base_address > end:
            break
        if chunk.size < 0:  # gef's --min-size test
            continue
        summary.process(chunk)
        n += 1
        if chunk.size == 0:
            break
        nxt = chunk.data_address + chunk.size
        if not valid(nxt):
            break
        chunk = GefStyleChunk(nxt - 16)
    return n


t0 = time.perf_counter()
main = int(gdb.parse_and_eval("(unsigned long)&main_arena"))
sbrk = int(gdb.parse_and_eval("(unsigned long)mp_.sbrk_base"))
walker = gef_walk if STYLE == "gef" else walk
arena, total = main, 0
while True:
    top = int(gdb.parse_and_eval("(unsigned long)((struct malloc_state *)%d)->top" % arena))
    topsize = u64(top + 8) & ~7
    if arena == main:
        total += walker((sbrk + 15) & ~15, top + topsize, top)
    else:
        heap = top & ~(HEAP_MAX - 1)
        heaps = []
        while heap:
            heaps.append(heap)
            heap = u64(heap + 8)
        for i, h in enumerate(reversed(heaps)):
            size = u64(h + 16)
            first = (arena + 0x898 + 15) & ~15 if i == 0 else h + 0x30
            total += walker(first, h + size, top)
    arena = int(gdb.parse_and_eval("(unsigned long)((struct malloc_state *)%d)->next" % arena))
    if arena == main:
        break
print("GDBWALK %d %.3f %s" % (total, time.perf_counter() - t0, STYLE))
