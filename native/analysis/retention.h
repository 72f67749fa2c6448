// Retention: where glibc's free memory sits, what would release it, and what malloc_trim(0)
// would return now; arena pressure; the process's mappings reconciled by group.
//
// The trim prediction follows glibc 2.36 malloc/malloc.c exactly (bminor/glibc, tag
// glibc-2.36):
//   __malloc_trim (malloc.c:5093) calls mtrim(av, pad) for every arena of the ring;
//   mtrim (malloc.c:5035) first runs malloc_consolidate(av) (malloc.c:4710: every fastbin
//     chunk merges with a free predecessor and a free successor, or into top when its successor
//     is top), then for the unsorted bin and every bin >= bin_index(pagesize) madvises
//     (MADV_DONTNEED) the whole pages of each free chunk that lie at or after
//     chunk + sizeof(struct malloc_chunk) (48 bytes: the header, fd/bk and fd/bk_nextsize stay);
//     tcache chunks look in use to it and are never touched;
//   only for main_arena it then calls systrim(pad, av) (malloc.c:2971), which gives
//     ALIGN_DOWN(chunksize(top) - MINSIZE - 1 - pad, pagesize) bytes back with sbrk when the
//     break is still the end of top. Non-main arenas' tops are only shrunk by heap_trim
//     (arena.c:642), which _int_free calls, never malloc_trim.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ptmalloc/heap.h"
#include "target/target.h"
#include "util/diagnostics.h"

namespace heapwalk::hotspot {
struct Nmt;
}

namespace heapwalk::analysis {
struct OwnedRange;
}

namespace heapwalk::analysis {

constexpr uint64_t kMallocChunkStruct = 48;  ///< sizeof (struct malloc_chunk), x86-64

/// The range mtrim madvises inside one free chunk: {start, length} (length 0: none).
struct PageRange {
  uint64_t start = 0, length = 0;
};
PageRange mtrim_range(uint64_t chunk, uint64_t size, uint64_t page = 4096);
/// Bytes systrim(pad) releases from the end of a top chunk of `top_size` bytes.
uint64_t systrim_extra(uint64_t top_size, uint64_t pad, uint64_t page = 4096, uint64_t minsize = 32);

/// One chunk of a heap, in address order, as the consolidation simulation sees it.
struct SimChunk {
  uint64_t address = 0, size = 0;
  ptmalloc::ChunkState state = ptmalloc::ChunkState::Used;
};
/// The free chunks mtrim finds in the bins after malloc_consolidate, and how many bytes of
/// fastbin/binned chunks merged into top (`top` is the arena's top when it is in this heap).
struct Consolidated {
  std::vector<ptmalloc::FreeChunk> chunks;
  uint64_t into_top = 0;
};
Consolidated consolidate(const std::vector<SimChunk>& heap_chunks, std::optional<uint64_t> top);

/// The same, streaming: feed chunks in address order; `emit` gets each free chunk mtrim would
/// see (call flush() at the end of a heap); `into_top` accumulates.
class Consolidator {
 public:
  using Emit = std::function<void(uint64_t address, uint64_t size)>;
  Consolidator(Emit emit, std::optional<uint64_t> top) : emit_(std::move(emit)), top_(top) {}
  void feed(uint64_t address, uint64_t size, ptmalloc::ChunkState st);
  void flush();
  uint64_t into_top = 0;

 private:
  Emit emit_;
  std::optional<uint64_t> top_;
  bool open_ = false, last_fast_ = false;
  uint64_t start_ = 0, size_ = 0;
};

/// Page residency of a set of ranges. Live: /proc/PID/pagemap; core: what the image shows.
struct Residency {
  uint64_t resident = 0, swapped = 0, absent = 0;  ///< live
  uint64_t zero = 0, unsaved = 0;                  ///< core: all-zero pages, pages not in the core
  void add(const Residency& o) {
    resident += o.resident;
    swapped += o.swapped;
    absent += o.absent;
    zero += o.zero;
    unsaved += o.unsaved;
  }
};

struct Figures {
  uint64_t in_use = 0, tcache = 0, fast = 0, binned = 0, top = 0;
  uint64_t trim_chunks = 0;  ///< whole pages inside free chunks that mtrim madvises
  uint64_t trim_top = 0;     ///< main arena: what systrim gives back with sbrk
  uint64_t fragments = 0;    ///< bytes of binned/fastbin chunks malloc_trim keeps (headers, partial pages)
  uint64_t top_kept = 0;     ///< top bytes malloc_trim keeps (all of a non-main arena's top)
  uint64_t into_top = 0;     ///< fastbin/binned bytes malloc_consolidate merges into top
  uint64_t free() const { return tcache + fast + binned + top; }
  uint64_t trimmable() const { return trim_chunks + trim_top; }
  Residency trim;  ///< residency of the trim ranges
  Residency kept;  ///< residency of the whole pages inside free memory malloc_trim keeps (tops)
  void add(const Figures& o);
};

struct HeapRetention {
  uint64_t address = 0, size = 0, reserved = 0;  ///< reserved: HEAP_MAX (non-main), size (main)
  Figures f;
};

struct ArenaRetention {
  uint64_t address = 0;
  unsigned index = 0;
  bool main = false;
  uint64_t system = 0;
  unsigned threads = 0;  ///< threads of the target whose thread_arena is this arena
  std::optional<uint64_t> attached_threads;
  bool contiguous = true;  ///< main: the break is the end of top (systrim can shrink it)
  std::vector<HeapRetention> heaps;
  Figures f;
};

struct Pressure {
  unsigned arenas = 0;
  std::optional<uint64_t> limit;  ///< glibc's narenas_limit (in force or as it would be computed)
  std::string limit_source;       ///< "arena_max" | "narenas_limit" | "8 x cores (affinity)" | ...
  std::optional<unsigned> cores;
  std::string cores_source;
  std::optional<uint64_t> narenas;  ///< glibc's narenas counter, when its symbol is known
  unsigned threads = 0;
  unsigned max_threads_per_arena = 0;
  unsigned heaps = 0;          ///< non-main heaps
  uint64_t heap_bytes = 0;     ///< Σ heap_info.size of non-main heaps
  uint64_t heap_reserved = 0;  ///< Σ HEAP_MAX of non-main heaps (what pmap shows as 64 MiB blocks)
};

struct Retention {
  std::vector<ArenaRetention> arenas;
  Figures total;
  Pressure pressure;
  std::string residency = "none";  ///< "pagemap" | "core" | "none"
  std::string residency_detail;
  uint64_t page = 4096;
  Diagnostics notes;
};

struct RetentionOptions {
  bool residency = true;
};

Retention compute_retention(ptmalloc::Heap& h, target::Target& t, const RetentionOptions& o = {});

/// One labelled group of the address space.
struct MapGroup {
  std::string label, kind;  ///< kind: glibc-main-heap, glibc-arena-heaps, glibc-mmapped, nmt, stack, program, library,
                            ///< file, anon, special
  uint64_t mapped = 0;
  uint64_t writable = 0;  ///< bytes of writable mappings (private or shared)
  std::optional<uint64_t> resident;
  unsigned regions = 0;
  std::optional<uint64_t> arena;
};

struct Mappings {
  std::vector<MapGroup> groups;
  uint64_t mapped = 0;
  /// Writable mappings: the memory the process may have committed (a core's best measure of
  /// its size: it has no residency; read-only files and PROT_NONE reservations are left out).
  uint64_t writable = 0;
  /// `writable` less each thread stack's pages below its stack pointer: the estimate of the
  /// process's committed memory a core gives (live, `resident` is the measure).
  uint64_t footprint = 0;
  std::optional<uint64_t> resident;  ///< live: smaps Rss of all mappings
  std::string resident_source;
  Diagnostics notes;
};

/// Partitions the target's mappings into groups (glibc heaps by arena, mmapped chunks, NMT
/// regions when `nmt` has them, thread stacks, program, libraries, files, other anonymous).
/// Σ groups' mapped == mapped exactly. `owned`: other allocators' ranges (jemalloc extents and
/// base blocks, tcmalloc spans; alloc_retention.h), each its own group; the ones not committed
/// (returned to the OS, kept as address space) count in no footprint.
Mappings reconcile_mappings(ptmalloc::Heap* h, target::Target& t, const hotspot::Nmt* nmt,
                            const std::vector<OwnedRange>* owned = nullptr);

}  // namespace heapwalk::analysis
