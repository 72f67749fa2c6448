"""``Target``: a thin Python wrapper over an engine target from ``heapwalk._native``.

All walking happens in C++; this class only forwards calls, remembers a label for messages
and memoizes ``arenas()`` (a target is a snapshot: a core, a frozen process, or a stopped
gdb inferior whose cached target is dropped when it runs again).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

Record = Dict[str, Any]

#: Chunk state filters accepted by :meth:`Target.chunks`.
STATES = ("all", "free", "used")


class Target:
    """A process image being analysed (core file, live process or gdb inferior)."""

    #: Where progress lines go (set by the CLI on a terminal, and by gdb); None: no progress.
    progress_sink: Optional[Callable[[str], None]] = None

    def __init__(self, handle: Any, label: str, kind: str) -> None:
        """Wrap the engine object ``handle``; ``label`` names it in messages."""
        self._handle = handle
        self.label = label
        self.kind = kind
        self._arenas: Optional[Record] = None
        self._arena_index: Optional[Dict[int, int]] = None

    # -- queries (each returns the engine's plain dict; see native/bindings/API.md) --------

    def describe(self) -> Record:
        """Kind, path/pid, threads and modules of the target."""
        return self._call(self._handle.describe)

    def arenas(self) -> Record:
        """The ``arenas`` report: every arena, the threads, mmapped chunks, diagnostics."""
        if self._arenas is None:
            self._arenas = self._call(self._handle.arenas)
        return self._arenas

    def allocators(self) -> List[Record]:
        """The allocators the target uses (loaded modules), malloc's owner first; [] from an
        engine without allocator detection (test doubles)."""
        method = getattr(self._handle, "allocators", None)
        return self._call(method) if method is not None else []

    def jemalloc(self, allocations: bool = False) -> Record:
        """jemalloc's arenas with its own statistics, thread caches and (``allocations``)
        every extent's allocations in address order; raises when the target has no jemalloc."""
        return self._call(self._handle.jemalloc, allocations)

    def jemalloc_chunks(self, state: str = "all", limit: Optional[int] = None) -> Record:
        """jemalloc's allocations and free slots in address order ("all", "used", "free")."""
        return self._call(self._handle.jemalloc_chunks, state, limit)

    def bins(self, arena: Optional[int] = None, chunks: Optional[int] = None) -> Record:
        """Non-empty fastbins and bins and the top chunk, per arena (or of one arena);
        ``chunks``: list at most that many chunks of each list (None: all)."""
        if chunks is None or not self.streams:
            return self._call(self._handle.bins, arena)
        return self._call(self._handle.bins, arena, chunks)

    @property
    def streams(self) -> bool:
        """Does the engine list in batches (:meth:`chunk_stream`, :meth:`free_list_stream`)?"""
        return hasattr(self._handle, "chunk_stream")

    def free_list_stream(self, arena: int, fast: bool, position: int,
                         batch: int = 16384) -> Any:
        """The chunks of arena ``arena``'s ``position``-th listed fastbin (``fast``) or bin,
        in batches: lists of addresses (fastbin) or ``(address, size)`` tuples (bin)."""
        return self._handle.free_list_stream(arena, fast, position, batch)

    def chunk_stream(self, arena: Optional[int] = None, state: str = "all",
                     limit: Optional[int] = None, batch: int = 16384) -> Any:
        """:meth:`chunks` in batches of ``(address, size, state, arena, heap)`` tuples; after
        the last one the stream's ``total``, ``listed`` and ``diagnostics()`` are final."""
        if state not in STATES:
            raise ValueError("state must be one of %s" % ", ".join(STATES))
        return self._handle.chunk_stream(arena, state, limit, batch)

    def tcache(self, lwp: Optional[int] = None) -> Record:
        """Each thread's tcache (or one thread's, by LWP)."""
        return self._call(self._handle.tcache, lwp)

    def chunks(self, arena: Optional[int] = None, state: str = "all",
               limit: Optional[int] = None) -> Record:
        """Chunks of one or every arena, filtered by ``state`` ("all", "free", "used")."""
        if state not in STATES:
            raise ValueError("state must be one of %s" % ", ".join(STATES))
        return self._call(self._handle.chunks, arena, state, limit)

    def classify(self, arena: Optional[int] = None, free: bool = False,
                 top: Optional[int] = None) -> Record:
        """In-use (and with ``free``, free) chunks grouped by what they hold."""
        return self._call(self._handle.classify, arena, free, top)

    def leaks(self, arena: Optional[int] = None, limit: Optional[int] = None,
              largest: bool = False, anon_roots: bool = False) -> Record:
        """Leak candidates: in-use chunks no root reaches (conservative reachability)."""
        return self._call(self._handle.leaks, arena=arena, limit=limit, largest=largest,
                                  anon_roots=anon_roots)

    def size_classes(self) -> List[Record]:
        """In-use chunks (heap and mmapped) by chunk size: ``[{"size", "count", "bytes"}]``."""
        method = getattr(self._handle, "size_classes", None)
        if method is None:  # an engine (or test double) without it: count the chunk list
            counts: Dict[int, int] = {}
            for c in self.chunks(None, "used", None).get("chunks", []):
                counts[c["size"]] = counts.get(c["size"], 0) + 1
            return [{"size": s, "count": n, "bytes": s * n} for s, n in sorted(counts.items())]
        return self._call(method)

    def chunk(self, address: int) -> Record:
        """The chunk holding ``address``, with its neighbours."""
        return self._call(self._handle.chunk, address)

    def chunk_fields(self, chunk: int, size: int, state: str, dump: int = 64) -> Record:
        """A chunk's flag bits, prev_size, decoded fd/bk, tcache key and first bytes ({} from
        an engine without it)."""
        method = getattr(self._handle, "chunk_fields", None)
        return {} if method is None else self._call(method, chunk, size, state, dump)

    def describe_address(self, address: int) -> Record:
        """What an address in no chunk is: a thread's stack, a module, a mapping, unmapped
        (None from an engine without it)."""
        method = getattr(self._handle, "describe_address", None)
        return None if method is None else self._call(method, address)

    def vis(self, start: Optional[int], arena: Optional[int], count: int,
            per_chunk: int) -> Record:
        """``count`` chunks from the one holding ``start`` (None: the arena's first), with bytes."""
        return self._call(self._handle.vis, start, arena, count, per_chunk)

    def try_free(self, address: int, lwp: Optional[int] = None) -> Record:
        """What free(address) would do on the target's glibc, check by check."""
        return self._call(self._handle.try_free, address, lwp)

    def alloc_classify(self, allocator: str, free: bool = False, top: Optional[int] = None,
                       name: str = "", limit: int = 0) -> Record:
        """``classify`` over ``allocator``'s slots ("jemalloc", "tcmalloc": the one that answers
        malloc); ``name``: also list that class (``limit`` 0: all)."""
        return self._call(self._handle.alloc_classify, allocator, free, top, name, limit)

    def alloc_leaks(self, allocator: str, limit: Optional[int] = None, largest: bool = False,
                    anon_roots: bool = False) -> Record:
        """``leaks`` over ``allocator``'s in-use slots ("jemalloc", "tcmalloc")."""
        return self._call(self._handle.alloc_leaks, allocator, limit=limit, largest=largest,
                          anon_roots=anon_roots)

    def classify_list(self, arena: Optional[int], free: bool, name: str,
                      limit: int) -> Record:
        """``classify`` plus every chunk of the class ``name`` (``limit`` 0: all)."""
        return self._call(self._handle.classify, arena, free, None, name, limit)

    def nmt(self, detail: bool = False) -> Record:
        """HotSpot Native Memory Tracking: jcmd's summary, header reconstruction, untracked malloc."""
        return self._call(self._handle.nmt, detail)

    def retention(self, residency: bool = True) -> Record:
        """Free memory by where it sits and what malloc_trim(0) would return; arena pressure."""
        return self._call(self._handle.retention, residency)

    def report(self, residency: bool = True) -> Record:
        """The engine part of ``report``: retention, pressure, mappings by group, glibc, NMT."""
        return self._call(self._handle.report, residency)

    def arena_index(self) -> Dict[int, int]:
        """Map arena address -> ring index (0 = main), memoized.

        Uses a memoized ``arenas()`` report when there is one, otherwise ``bins()``, which
        walks the free lists only, not every chunk.
        """
        if self._arena_index is None:
            source = self._arenas if self._arenas is not None else self.bins(None)
            self._arena_index = {a["address"]: a.get("index", i)
                                 for i, a in enumerate(source.get("arenas", []))}
        return self._arena_index

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an engine method; with a progress sink, off the main thread (Ctrl-C cancels)."""
        sink = self.progress_sink
        native = _native_module()
        if sink is None or native is None or not hasattr(native, "progress"):
            return method(*args, **kwargs)
        from .progress import run  # pylint: disable=import-outside-toplevel
        return run(lambda: method(*args, **kwargs), native, sink)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release the engine's resources (mmap, ptrace); idempotent."""
        handle, self._handle = self._handle, None
        self._arenas = None
        self._arena_index = None
        if handle is not None:
            handle.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._handle is None

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<heapwalk.Target %s%s>" % (self.label, " (closed)" if self.closed else "")


def _native_module() -> Any:
    """The loaded engine module (for progress/cancel), or None."""
    import heapwalk  # pylint: disable=import-outside-toplevel
    try:
        return heapwalk.native()
    except Exception:  # pylint: disable=broad-except
        return None
