// Versioned layout profiles of glibc's malloc structures (x86-64).
//
// A profile is named by the first glibc version it applies to and cites the source it encodes.
// New glibc versions are added as data here, never as forks of the walker.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace heapwalk::ptmalloc {

enum class TcacheKey { None, OwnerPointer, Random };

struct Layout {
  const char* name;    ///< first glibc version it applies to, e.g. "2.35"
  const char* last;    ///< last version it is known to apply to
  const char* source;  ///< the glibc source it encodes
  // Sizes (malloc/malloc-internal.h, sysdeps/generic/malloc-size.h).
  uint64_t size_sz = 8;
  uint64_t alignment = 16;  ///< MALLOC_ALIGNMENT
  uint64_t minsize = 32;    ///< MINSIZE
  uint64_t heap_max = 64ull << 20;  ///< HEAP_MAX_SIZE = 2 * DEFAULT_MMAP_THRESHOLD_MAX
  unsigned nfastbins = 10, nbins = 128, nsmallbins = 64;
  // struct malloc_state
  uint64_t ms_size, ms_fastbins, ms_top, ms_last_remainder, ms_bins, ms_next, ms_next_free,
      ms_attached_threads, ms_system_mem, ms_max_system_mem;
  // heap_info (malloc/arena.c)
  uint64_t hi_size, hi_ar_ptr, hi_prev, hi_heap_size, hi_mprotect_size;
  // struct malloc_par
  uint64_t mp_size, mp_trim_threshold, mp_top_pad, mp_mmap_threshold, mp_arena_test, mp_arena_max,
      mp_n_mmaps, mp_n_mmaps_max, mp_max_n_mmaps, mp_mmapped_mem, mp_max_mmapped_mem,
      mp_sbrk_base, mp_tcache_bins, mp_tcache_max_bytes, mp_tcache_count;
  // tcache_perthread_struct / tcache_entry
  bool has_tcache;
  unsigned tcache_bins;
  unsigned tcache_count_width;  ///< bytes per counts[] element
  uint64_t tc_counts, tc_entries, tc_size;
  uint64_t te_next, te_key;
  TcacheKey key_kind;
  bool safe_linking;  ///< PROTECT_PTR on tcache next and fastbin fd (2.32+)
};

/// All known profiles, oldest first.
const std::vector<Layout>& layouts();
/// The profile for a glibc version ("2.36"), or nullptr when none is known to fit.
const Layout* layout_for(const std::string& version);
/// Compares "2.9" < "2.36" numerically.
int compare_versions(const std::string& a, const std::string& b);

}  // namespace heapwalk::ptmalloc
