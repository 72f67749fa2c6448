#include "ptmalloc/layout.h"

#include <cstdio>

namespace heapwalk::ptmalloc {

namespace {

// glibc 2.35 .. 2.41 (verified against DWARF of Debian's 2.36-9 libc6-dbg by tests/integration).
// Sources at tag glibc-2.35: malloc/malloc.c (struct malloc_state, struct malloc_par with the
// hugepage fields thp_pagesize/hp_pagesize/hp_flags added in 2.35, tcache_perthread_struct with
// uint16_t counts since 2.30, tcache_entry.key = random tcache_key since 2.34, PROTECT_PTR since
// 2.32), malloc/arena.c (heap_info gained `pagesize` in 2.35: 0x30 bytes with padding).
Layout glibc_2_35() {
  Layout l{};
  l.name = "2.35";
  l.last = "2.41";
  l.source = "glibc-2.35 malloc/malloc.c, malloc/arena.c";
  l.size_sz = 8;
  l.alignment = 16;
  l.minsize = 32;
  l.heap_max = 64ull << 20;
  l.nfastbins = 10;
  l.nbins = 128;
  l.nsmallbins = 64;
  // struct malloc_state: mutex(4) flags(4) have_fastchunks(4) pad(4) fastbinsY[10] top
  // last_remainder bins[254] binmap[4] next next_free attached_threads system_mem max_system_mem
  l.ms_fastbins = 0x10;
  l.ms_top = 0x60;
  l.ms_last_remainder = 0x68;
  l.ms_bins = 0x70;
  l.ms_next = 0x870;
  l.ms_next_free = 0x878;
  l.ms_attached_threads = 0x880;
  l.ms_system_mem = 0x888;
  l.ms_max_system_mem = 0x890;
  l.ms_size = 0x898;
  // heap_info: ar_ptr prev size mprotect_size pagesize pad[8]
  l.hi_ar_ptr = 0;
  l.hi_prev = 8;
  l.hi_heap_size = 0x10;
  l.hi_mprotect_size = 0x18;
  l.hi_size = 0x30;
  // malloc_par: trim_threshold top_pad mmap_threshold arena_test arena_max thp_pagesize
  // hp_pagesize hp_flags n_mmaps n_mmaps_max max_n_mmaps no_dyn_threshold mmapped_mem
  // max_mmapped_mem sbrk_base tcache_bins tcache_max_bytes tcache_count tcache_unsorted_limit
  l.mp_trim_threshold = 0;
  l.mp_top_pad = 8;
  l.mp_mmap_threshold = 0x10;
  l.mp_arena_test = 0x18;
  l.mp_arena_max = 0x20;
  l.mp_n_mmaps = 0x3c;
  l.mp_n_mmaps_max = 0x40;
  l.mp_max_n_mmaps = 0x44;
  l.mp_mmapped_mem = 0x50;
  l.mp_max_mmapped_mem = 0x58;
  l.mp_sbrk_base = 0x60;
  l.mp_tcache_bins = 0x68;
  l.mp_tcache_max_bytes = 0x70;
  l.mp_tcache_count = 0x78;
  l.mp_size = 0x88;
  l.has_tcache = true;
  l.tcache_bins = 64;
  l.tcache_count_width = 2;
  l.tc_counts = 0;
  l.tc_entries = 0x80;
  l.tc_size = 0x280;
  l.te_next = 0;
  l.te_key = 8;
  l.key_kind = TcacheKey::Random;
  l.safe_linking = true;
  return l;
}

}  // namespace

const std::vector<Layout>& layouts() {
  static const std::vector<Layout> all = {glibc_2_35()};
  return all;
}

int compare_versions(const std::string& a, const std::string& b) {
  int a1 = 0, a2 = 0, b1 = 0, b2 = 0;
  std::sscanf(a.c_str(), "%d.%d", &a1, &a2);
  std::sscanf(b.c_str(), "%d.%d", &b1, &b2);
  if (a1 != b1) return a1 < b1 ? -1 : 1;
  if (a2 != b2) return a2 < b2 ? -1 : 1;
  return 0;
}

const Layout* layout_for(const std::string& version) {
  const Layout* best = nullptr;
  for (const auto& l : layouts()) {
    if (compare_versions(l.name, version) <= 0 && compare_versions(version, l.last) <= 0) best = &l;
  }
  return best;
}

}  // namespace heapwalk::ptmalloc
