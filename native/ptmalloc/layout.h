// Versioned layout profiles of glibc's malloc structures (x86-64).
//
// A profile is named by the first glibc version it applies to and cites the source it encodes.
// New glibc versions are added as data here, never as forks of the walker.
//
// Field offsets are byte offsets inside the named structure. A field that a glibc version does
// not have is kAbsent (test with present()). docs/glibc-layouts.md tabulates every profile and
// lists the semantic differences the walker must handle ("semantic differences" section).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace heapwalk::ptmalloc {

/// Offset of a field the version does not have. Never read at this offset.
constexpr uint64_t kAbsent = ~uint64_t{0};
/// True when the field exists in this version (offset != kAbsent).
constexpr bool present(uint64_t offset) { return offset != kAbsent; }

/// What tcache_entry.key holds while the chunk is in a tcache.
enum class TcacheKey {
  None,          ///< 2.26-2.28: tcache_entry has no key field
  OwnerPointer,  ///< 2.29-2.33: key = the owning thread's tcache_perthread_struct address
  Random,        ///< 2.34+: key = the process-wide random `tcache_key`
};

/// How tcache_perthread_struct's per-bin uint array is to be read.
enum class TcacheCounts {
  Count,      ///< 2.26-2.41 `counts[i]`: number of chunks in bin i
  FreeSlots,  ///< 2.42+ `num_slots[i]`: free slots left; chunks = mp_.tcache_count - num_slots[i]
};

/// When a thread's tcache_perthread_struct is allocated (where it sits in the heap).
enum class TcacheInit {
  None,         ///< no tcache (< 2.26)
  FirstMalloc,  ///< 2.26-2.41: first malloc/free/realloc/calloc of the thread (any size), so
                ///< usually the first chunk the thread takes from its arena
  FirstSmall,   ///< 2.42: first malloc/calloc/memalign whose chunk size < mp_.tcache_max_bytes
  OnDemand,     ///< 2.43+: first free() of a cacheable chunk or first tcache stash in _int_malloc;
                ///< until then TLS `tcache` points at the all-zero `__tcache_dummy` in libc
};

/// How an mmapped chunk's header describes its mapping.
enum class MmapHeader {
  Classic,   ///< <= 2.42: prev_size = offset from mapping start; size = mapping - offset
  Glibc243,  ///< 2.43+: prev_size = offset | MMAP_HP (bit 0: huge page);
             ///< size = mapping - offset - CHUNK_HDR_SZ (16): never a page multiple
};

struct Layout {
  const char* name;    ///< first glibc version it applies to, e.g. "2.35"
  const char* last;    ///< last version it is known to apply to
  const char* source;  ///< the glibc source it encodes
  // Sizes (malloc/malloc-internal.h, sysdeps/generic/malloc-size.h).
  uint64_t size_sz = 8;
  uint64_t alignment = 16;          ///< MALLOC_ALIGNMENT
  uint64_t minsize = 32;            ///< MINSIZE
  uint64_t heap_max = 64ull << 20;  ///< HEAP_MAX_SIZE = 2 * DEFAULT_MMAP_THRESHOLD_MAX
  /// 2.35-2.41 only (4): when mp_.hp_pagesize != 0 (tunable glibc.malloc.hugetlb >= 2),
  /// heap_max_size() = hp_pagesize * 4 replaces heap_max for heap alignment and heap_for_ptr.
  /// 0: heap_max is a constant. Use effective_heap_max().
  unsigned heap_max_hp_multiplier = 0;
  /// NFASTBINS; 0 when the arena has no fastbins (2.43+).
  unsigned nfastbins = 10, nbins = 128, nsmallbins = 64;
  bool has_fastbins = true;  ///< false from 2.43: fastbins, global_max_fast, have_fastchunks removed
  // struct malloc_state
  uint64_t ms_size, ms_fastbins, ms_top, ms_last_remainder, ms_bins, ms_next, ms_next_free, ms_attached_threads,
      ms_system_mem, ms_max_system_mem;
  uint64_t ms_mutex = 0;                  ///< int (__libc_lock_t) in every version
  uint64_t ms_flags = 4;                  ///< int
  uint64_t ms_have_fastchunks = kAbsent;  ///< int, 2.27-2.42
  uint64_t ms_binmap = kAbsent;           ///< unsigned int binmap[BINMAPSIZE = 4]
  // heap_info (malloc/arena.c)
  uint64_t hi_size, hi_ar_ptr, hi_prev, hi_heap_size, hi_mprotect_size;
  uint64_t hi_pagesize = kAbsent;  ///< size_t pagesize, 2.35+ (page size the heap was mapped with)
  // struct malloc_par
  uint64_t mp_size, mp_trim_threshold, mp_top_pad, mp_mmap_threshold, mp_arena_test, mp_arena_max, mp_n_mmaps,
      mp_n_mmaps_max, mp_max_n_mmaps, mp_mmapped_mem, mp_max_mmapped_mem, mp_sbrk_base;
  /// size_t tcache_bins (2.26-2.41) / tcache_small_bins (2.42+, counts small bins only);
  /// kAbsent before 2.26 like the other mp_tcache_* fields.
  uint64_t mp_tcache_bins, mp_tcache_max_bytes, mp_tcache_count;
  uint64_t mp_tcache_unsorted_limit = kAbsent;  ///< size_t, 2.26+
  uint64_t mp_no_dyn_threshold = kAbsent;       ///< int
  uint64_t mp_max_total_mem = kAbsent;          ///< INTERNAL_SIZE_T, 2.17-2.23 only
  uint64_t mp_thp_mode = kAbsent;               ///< enum malloc_thp_mode_t (4 bytes), 2.43+
  uint64_t mp_thp_pagesize = kAbsent;           ///< INTERNAL_SIZE_T, 2.35+
  uint64_t mp_hp_pagesize = kAbsent;            ///< INTERNAL_SIZE_T, 2.35+
  uint64_t mp_hp_flags = kAbsent;               ///< int, 2.35+
  /// Width in bytes of the static variable `global_max_fast` (INTERNAL_SIZE_T 8 up to 2.36,
  /// uint8_t 2.37-2.42); 0 when it does not exist (2.43+).
  unsigned global_max_fast_width = 8;
  // tcache_perthread_struct / tcache_entry
  bool has_tcache;
  unsigned tcache_bins;                     ///< TCACHE_MAX_BINS: entries in counts[]/num_slots[] and entries[]
  unsigned tcache_small_bins = 0;           ///< bins indexed by csize2tidx (64); bins above are "large"
  unsigned tcache_count_width;              ///< bytes per counts[] element (1: char, 2: uint16_t)
  uint64_t tc_counts, tc_entries, tc_size;  ///< tc_counts is counts[] or num_slots[]
  uint64_t tc_chunk_size = 0;               ///< request2size(tc_size): size of the chunk holding the struct
  TcacheCounts tcache_counts = TcacheCounts::Count;
  unsigned tcache_fill_count = 0;  ///< TCACHE_FILL_COUNT, default mp_.tcache_count (7; 16 in 2.43)
  TcacheInit tcache_init = TcacheInit::None;
  uint64_t te_next, te_key;
  TcacheKey key_kind;
  bool safe_linking;  ///< PROTECT_PTR on tcache next and fastbin fd (2.32+)
  MmapHeader mmap_header = MmapHeader::Classic;
  // Symbol names (all local to libc: .symtab / debug info only, never .dynsym).
  const char* thread_arena_symbol = "thread_arena";  ///< __thread mstate; "__libc_tsd_MALLOC" < 2.23
  const char* tcache_symbol = nullptr;               ///< __thread tcache_perthread_struct*, 2.26+
  const char* tcache_key_symbol = nullptr;           ///< uintptr_t tcache_key, 2.34+
  const char* tcache_dummy_symbol = nullptr;         ///< 2.43+: `__tcache_dummy` (TLS tcache == &it or &it+1
                                                     ///< means "no tcache yet" / "tcache disabled")
};

/// All known profiles, oldest first.
const std::vector<Layout>& layouts();
/// The profile for a glibc version ("2.36"), or nullptr when none is known to fit.
const Layout* layout_for(const std::string& version);
/// Compares "2.9" < "2.36" numerically.
int compare_versions(const std::string& a, const std::string& b);

/// Alignment and maximum size of a non-main heap: heap_max, or hp_pagesize * 4 on 2.35-2.41 when
/// mp_.hp_pagesize (read at mp_hp_pagesize) is non-zero.
uint64_t effective_heap_max(const Layout& l, uint64_t mp_hp_pagesize);

/// Inclusive [min, max] chunk sizes that tcache bin i can hold. Small bins hold exactly one size
/// (i * 16 + 32); large bins (2.42+, i >= 64) hold every 16-aligned size with the same highest set
/// bit, sorted by ascending size along the list. {0, 0} for an invalid index.
std::pair<uint64_t, uint64_t> tcache_bin_sizes(const Layout& l, unsigned i);

/// Inclusive [min, max] sizes of a chunk glibc's own allocation can give a thread's
/// tcache_perthread_struct: from request2size of the request tcache_init makes up to that plus
/// MINSIZE - MALLOC_ALIGNMENT (_int_malloc hands over a whole free chunk when the remainder would
/// be below MINSIZE). 2.26-2.29 0x250..0x260, 2.30-2.41 0x290..0x2a0, 2.42 0x300..0x310, 2.43
/// 0x300..0x320 (its tcache_init may pass an already padded size). {0, 0} without a tcache.
std::pair<uint64_t, uint64_t> tcache_struct_chunk_sizes(const Layout& l);
/// True when `size` (flag bits cleared) is in tcache_struct_chunk_sizes(l).
bool tcache_struct_chunk_fits(const Layout& l, uint64_t size);

/// Number of chunks bin i holds according to the struct's counts/num_slots element `raw` (already
/// read with tcache_count_width) and mp_.tcache_count. 2.42+: tcache_count - raw (0 if raw >
/// tcache_count, which the caller should report as corruption).
uint64_t tcache_chunk_count(const Layout& l, uint64_t raw, uint64_t mp_tcache_count);

/// Start and length of the mapping holding the mmapped chunk at `chunk`, from its header words.
struct MmapExtent {
  uint64_t base, size;
  bool huge_page;  ///< 2.43+ MMAP_HP bit; always false before
};
MmapExtent mmap_extent(const Layout& l, uint64_t chunk, uint64_t prev_size, uint64_t size_word);

}  // namespace heapwalk::ptmalloc
