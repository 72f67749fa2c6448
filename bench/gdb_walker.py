"""The way gef/pwndbg walk a heap: gdb memory reads per chunk, in Python, inside gdb.

Sourced by bench/bench.py into `gdb -batch CORE`: walks every heap of every arena from
main_arena (glibc debug symbols loaded by gdb) and prints the chunk count and the time.
HEAPWALK_GDB_STYLE=raw reads each size field with one `read_memory` (the leanest possible
Python walker); the default, "value", reads each chunk as a `struct malloc_chunk` gdb.Value and
its fields, as pwndbg's Chunk class does. A reference point for users coming from those tools.
"""
import os
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


t0 = time.perf_counter()
main = int(gdb.parse_and_eval("(unsigned long)&main_arena"))
sbrk = int(gdb.parse_and_eval("(unsigned long)mp_.sbrk_base"))
arena, total = main, 0
while True:
    top = int(gdb.parse_and_eval("(unsigned long)((struct malloc_state *)%d)->top" % arena))
    topsize = u64(top + 8) & ~7
    if arena == main:
        total += walk((sbrk + 15) & ~15, top + topsize, top)
    else:
        heap = top & ~(HEAP_MAX - 1)
        heaps = []
        while heap:
            heaps.append(heap)
            heap = u64(heap + 8)
        for i, h in enumerate(reversed(heaps)):
            size = u64(h + 16)
            first = (arena + 0x898 + 15) & ~15 if i == 0 else h + 0x30
            total += walk(first, h + size, top)
    arena = int(gdb.parse_and_eval("(unsigned long)((struct malloc_state *)%d)->next" % arena))
    if arena == main:
        break
print("GDBWALK %d %.3f %s" % (total, time.perf_counter() - t0, STYLE))
