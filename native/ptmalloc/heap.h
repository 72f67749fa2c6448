// The ptmalloc model: arenas, heaps, free lists, tcaches and mmapped chunks of one target,
// and the chunk walk shared by every analysis.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "ptmalloc/glibc.h"
#include "target/target.h"
#include "util/big_alloc.h"
#include "util/diagnostics.h"

namespace heapwalk::ptmalloc {

enum class ChunkState : uint8_t { Used, Tcache, Fastbin, Unsorted, Small, Large, Top, Mmapped, Fencepost };
const char* state_name(ChunkState s);
bool is_free(ChunkState s);

struct Count {
  uint64_t count = 0, bytes = 0;
  void add(uint64_t b) {
    ++count;
    bytes += b;
  }
};

struct HeapRange {
  uint64_t address = 0;        ///< heap_info address (main arena: sbrk_base)
  uint64_t size = 0;           ///< heap_info.size (main arena: system_mem)
  uint64_t mprotect_size = 0;  ///< heap_info.mprotect_size (main arena: system_mem)
  uint64_t first_chunk = 0;    ///< where the chunk walk starts
  uint64_t walk_end = 0;       ///< where it stops (exclusive)
};

struct FreeChunk {
  uint64_t address = 0, size = 0;
};

/// One non-empty fastbin, bin (unsorted/small/large) or tcache bin. An arena's lists do not keep
/// their chunks: the arena's free index (8 bytes a chunk) is all a summary holds, and
/// Heap::list_chunks() follows a list again when its chunks are asked for. Tcache bins, small
/// and bounded, keep theirs in `chunks`.
struct FreeList {
  unsigned index = 0;
  ChunkState kind = ChunkState::Fastbin;
  uint64_t head = 0;              ///< first chunk
  uint64_t count = 0;             ///< distinct chunks read
  bool cycle = false;             ///< the list looped back (what the loop repeated is not counted)
  std::vector<FreeChunk> chunks;  ///< tcache bins only
  uint64_t bytes = 0;
};

struct Arena {
  uint64_t address = 0;
  unsigned index = 0;
  bool main = false;
  uint64_t system_mem = 0, max_system_mem = 0, next = 0;
  std::optional<uint64_t> attached_threads;  ///< absent before glibc 2.23
  uint64_t top = 0, top_size = 0;
  std::vector<HeapRange> heaps;  ///< oldest first
  std::vector<FreeList> fastbins, bins;
  Count fast, binned, tcache, in_use, fenceposts;
  /// Σ raw size fields (flag bits included) of binned chunks: malloc_info sums chunksize_nomask().
  uint64_t binned_raw = 0;
  bool walked = false;  ///< in_use/tcache filled
  /// Findings of this arena's (possibly parallel) reading and walking; merged into the heap's
  /// diagnostics in ring order, so output is deterministic.
  Diagnostics diags;
  /// Every free-list chunk of this arena (fastbins, bins, tcache) by address: the chunk walk
  /// looks states up here.
  /// Packed: chunk address | state (addresses are 16-aligned), sorted — 8 bytes a free chunk.
  BigVector<uint64_t> free_index;
};

struct ThreadCache {
  int lwp = 0;
  std::optional<uint64_t> address;  ///< tcache_perthread_struct, if any
  std::optional<uint64_t> arena;    ///< thread_arena
  std::vector<FreeList> bins;
  Count total;
};

struct MmappedChunk {
  uint64_t address = 0, size = 0, prev_size = 0;
};

struct Mmapped {
  uint64_t n_mmaps = 0, mmapped_mem = 0, max_n_mmaps = 0, max_mmapped_mem = 0;
  std::vector<MmappedChunk> chunks;  ///< found by scanning anonymous mappings
  Count found;
  /// Finds left out because glibc's counters say there are fewer: the only set of finds whose
  /// removal makes the scan agree with mp_.n_mmaps and mp_.mmapped_mem exactly. Suspects feed
  /// no total (issue 12: a false find was once counted as untracked malloc).
  std::vector<MmappedChunk> suspects;
};

struct Params {
  uint64_t trim_threshold = 0, top_pad = 0, mmap_threshold = 0, arena_test = 0, arena_max = 0;
  uint64_t sbrk_base = 0, tcache_bins = 0, tcache_count = 0, tcache_max_bytes = 0;
  uint64_t hp_pagesize = 0;  ///< 2.35+: non-zero with the hugetlb tunable
  uint64_t heap_max = 0;     ///< effective HEAP_MAX_SIZE (alignment of non-main heaps)
  /// mp_.no_dyn_threshold: 1 once M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD or M_MMAP_MAX
  /// was set (mallopt, MALLOC_*_ environment variables or tunables; malloc.c do_set_*), which
  /// stops free() from raising the mmap threshold; nullopt when the layout lacks the field.
  std::optional<uint64_t> no_dyn_threshold;
  uint64_t n_mmaps_max = 0;  ///< mp_.n_mmaps_max (M_MMAP_MAX; 65536 by default)
};

/// A visitor over chunks in address order; return false to stop.
using ChunkVisitor =
    std::function<bool(uint64_t address, uint64_t size, ChunkState state, const Arena* arena, size_t heap)>;

/// Where Heap::list_chunks stopped following a list, so a list of millions of chunks can be
/// listed a batch at a time (`bins --json`) or only as far as it is shown (`bins`).
struct ListCursor {
  uint64_t p = 0, steps = 0, taken = 0;
  bool started = false, done = false;
  std::unordered_set<uint64_t> seen;  ///< cyclic lists only: the chunks already taken
};

class Heap {
 public:
  /// Builds the model: arena ring, heaps, bins, tcaches, mmapped chunks. Throws SymbolError or
  /// Fault only when main_arena itself cannot be used; everything else becomes diagnostics.
  explicit Heap(target::Target& t, const std::string& version_hint = "");

  const GlibcInfo& glibc() const { return glibc_; }
  const Params& params() const { return params_; }
  const std::vector<Arena>& arenas() const { return arenas_; }
  const std::vector<ThreadCache>& threads() const { return threads_; }
  const Mmapped& mmapped() const { return mmapped_; }
  Diagnostics& diagnostics() { return diags_; }

  /// Walks every chunk of one arena (or all when arena == nullptr) in address order.
  /// `record` adds corruption diagnostics found during the walk (only the first walk does).
  void walk(const Arena* arena, const ChunkVisitor& visit);
  /// Counts in-use and cached chunks per arena (runs the walk once).
  void summarize();
  /// Arena owning an address, by heap range; nullptr if none.
  const Arena* arena_of(uint64_t address) const;
  /// The chunks of one of `arena`'s fastbins or bins (tcache bins: their own `chunks`), in list
  /// order, read again from the target: the same `count` chunks the summary counted.
  std::vector<FreeChunk> list_chunks(const Arena& arena, const FreeList& list) const;
  /// The next (at most) `max` chunks of `list` after `at`, which it advances; `at.done` at the end.
  std::vector<FreeChunk> list_chunks(const Arena& arena, const FreeList& list, ListCursor& at, size_t max) const;
  /// Which arena does `selector` name: a ring index or an arena address.
  const Arena* find_arena(uint64_t selector) const;
  const Layout& layout() const { return *glibc_.layout; }

 private:
  void read_params();
  void read_arenas();
  void read_arena(Arena& a, std::vector<uint8_t>& ms);
  void merge_arena_diagnostics();
  /// Runs fn(i) for i in [0, n), on several threads when `parallel_` (util/parallel.h).
  void parallel_for(size_t n, const std::function<void(size_t)>& fn);
  void read_fastbins(Arena& a, const uint8_t* ms);
  void read_bins(Arena& a, const uint8_t* ms);
  void read_heaps(Arena& a);
  void read_tcaches();
  void resolve_mmapped_suspects();
  void scan_mmapped();
  void build_free_index();
  void walk_impl(const Arena* only, const ChunkVisitor& visit, bool record);
  template <typename Visit>  // defined and instantiated in heap.cpp only
  void walk_heap(const Arena& a, size_t hi, Visit&& visit, bool record);
  uint64_t resync(uint64_t p, uint64_t end, const Arena& a);
  uint64_t reveal(uint64_t field_address, uint64_t stored) const;

  target::Target& t_;
  GlibcInfo glibc_;
  Params params_;
  std::vector<Arena> arenas_;
  std::vector<ThreadCache> threads_;
  Mmapped mmapped_;
  Diagnostics diags_;
  struct Range {
    uint64_t start, end;
    size_t arena;
  };
  std::vector<Range> ranges_;  ///< heap address ranges, sorted
  bool walked_once_ = false;
  bool parallel_ = false;  ///< cores and live processes: arenas are read and walked in parallel
};

}  // namespace heapwalk::ptmalloc
