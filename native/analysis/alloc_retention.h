// Retention for the allocators other than glibc's (issue 16): what jemalloc 5.3.0 and gperftools
// tcmalloc 2.10 keep, in their own terms and figures, what their own release paths would
// return now, the causes `report` names from them (with evidence and the allocator's own
// actions), and the address ranges that are theirs (so the mappings reconciliation attributes
// them to the allocator, not to "other anonymous").
//
// jemalloc (jemalloc/jemalloc, tag 5.3.0):
//   dirty pages: pac_t.ecache_dirty, decayed by decay_dirty (src/pac.c pac_decay_try_purge;
//     opt.dirty_decay_ms, default 10 s; -1 never) — arena.<i>.purge (src/arena.c
//     arena_decay(..., all=true)) purges them and the muzzy ones now (src/ctl.c arena_i_purge);
//   muzzy pages: MADV_FREE'd (pages_purge_lazy), resident until the kernel reclaims them;
//   retained: address space opt.retain keeps after purging (extent_dalloc_wrapper,
//     src/extent.c), not resident: VSZ, not RSS;
//   thread caches: tcache_t bins (include/jemalloc/internal/cache_bin.h), opt.tcache_max;
//   base: each arena's base_t blocks (src/base.c base_block_alloc), arena 0's is b0.
// tcmalloc (gperftools/gperftools, tag gperftools-2.10):
//   page heap free (normal lists) is what ReleaseFreeMemory() returns (src/malloc_extension.cc
//     MallocExtension::ReleaseFreeMemory -> ReleaseToSystem(SIZE_MAX), src/page_heap.cc
//     PageHeap::ReleaseAtLeastNPages); the background rate is TCMALLOC_RELEASE_RATE
//     (src/tcmalloc.cc FLAGS_tcmalloc_release_rate, default 1.0);
//   thread caches are bounded by TCMALLOC_MAX_TOTAL_THREAD_CACHE_BYTES (src/thread_cache.cc,
//     default 32 MiB); central and transfer caches keep free objects of partly used spans.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "alloc/model.h"
#include "target/target.h"
#include "util/diagnostics.h"

namespace heapwalk::analysis {

/// A range of address space that belongs to an allocator (a jemalloc extent or base block, a
/// tcmalloc span). `committed` is false for address space the allocator has returned to the OS
/// (jemalloc retained extents, tcmalloc unmapped spans): not part of the process's footprint.
struct OwnedRange {
  uint64_t start = 0, end = 0;
  std::string label, kind;  ///< the mapping group ("jemalloc extents"), its kind ("jemalloc")
  bool committed = true;
};

/// One cause `report` may name, before the footprint threshold (the front end ranks them
/// with glibc's by bytes against the process's size). `virtual_only`: address space, not
/// resident memory (ranked after the resident causes).
struct AllocCause {
  std::string cause, kind;
  uint64_t bytes = 0;
  std::string where, action, evidence, summary;
  bool virtual_only = false;
};

/// A JVM on this allocator: its in-use allocations split by HotSpot's NMT malloc header (the
/// canary layout of JDK 17.0.9+ and 21: `_size`, `_flags` at 12, canary 0xE99E at 14, footer
/// 0xE8 0x8E after the user bytes; src/hotspot/share/services/mallocTracker.hpp), as
/// hotspot/nmt.cpp does for glibc's chunks. Untracked: allocation (slot) bytes.
struct NmtSplit {
  uint64_t tracked_count = 0, tracked_bytes = 0;  ///< tracked_bytes: the headers' user sizes
  uint64_t untracked_count = 0, untracked_bytes = 0;
  bool canary = false;  ///< enough headers seen for NMT to be on (100 and 10 % of the allocations)
};

/// One allocator's part of `report`.
struct AllocRetention {
  alloc::Kind kind = alloc::Kind::Jemalloc;
  std::string version, module, layout_source;
  bool owns_malloc = false;
  /// The allocator's own statistics (allocator names, exact) and its pools.
  std::map<std::string, uint64_t> stats;
  std::vector<alloc::Pool> pools;
  std::vector<alloc::ThreadCache> caches;
  /// Neutral totals over the pools (bytes), and what the allocator's release call returns now
  /// (jemalloc: arena.<i>.purge of every arena; tcmalloc: ReleaseFreeMemory()).
  uint64_t in_use = 0, cached = 0, free = 0, released = 0, metadata = 0, reclaimable = 0;
  /// Figures in the allocator's terms (bytes unless named otherwise): jemalloc "allocated",
  /// "active", "dirty", "muzzy", "retained", "mapped", "resident", "metadata", "tcache",
  /// "purge", "narenas", "dirty_decay_ms"/"muzzy_decay_ms" (as the arenas have them; -1:
  /// never), options read from the library's symbols when it has them ("opt.*");
  /// tcmalloc "heap_size", "in_use", "pageheap_free", "pageheap_unmapped", "central",
  /// "transfer", "thread", "release_free_memory", "max_total_thread_cache_bytes".
  std::map<std::string, int64_t> figures;
  /// The jemalloc arenas' decay times, per arena index (ms; -1: decay off).
  std::map<unsigned, std::pair<int64_t, int64_t>> decay_ms;
  std::vector<AllocCause> causes;
  /// The verdict when no cause reaches the threshold (cause "in-use"), in the allocator's terms.
  AllocCause in_use_summary;
  std::vector<OwnedRange> ranges;
  std::optional<NmtSplit> nmt;  ///< a JVM (libjvm.so loaded) on this allocator
  Diagnostics notes;
};

/// Every allocator the target uses besides glibc's ptmalloc (alloc::detect), with its figures,
/// causes and ranges. An allocator whose structures are not found is left out with a note in
/// `notes` (the caller's diagnostics).
std::vector<AllocRetention> compute_alloc_retention(target::Target& t, Diagnostics& notes);

}  // namespace heapwalk::analysis
