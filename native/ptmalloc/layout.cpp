#include "ptmalloc/layout.h"

#include <cstdio>

namespace heapwalk::ptmalloc {

namespace {

// Every profile is derived from the previous one with only the fields that changed, so a layout
// change is one small function. Offsets are x86-64 (SIZE_SZ 8, MALLOC_ALIGNMENT 16, int 4 bytes,
// __libc_lock_t = int). tests/native/test_layouts.cpp recomputes every offset from field lists
// transcribed from the glibc source of each tag; docs/glibc-layouts.md tabulates them.
// Sources: github.com/bminor/glibc tags glibc-2.X; "2.43" is master at 04e750e75b (2026-01-20,
// version.h 2.42.9000, during the 2.43 freeze): re-check against the glibc-2.43 tag once cut.

uint64_t request2size(uint64_t n) { return (n + 8 + 15) & ~uint64_t{15}; }

// glibc 2.17 .. 2.22.
// malloc/malloc.c struct malloc_state: mutex_t mutex (int); int flags; [THREAD_STATS is 0]
//   mfastbinptr fastbinsY[NFASTBINS=10]; top; last_remainder; bins[NBINS*2-2 = 254];
//   unsigned int binmap[BINMAPSIZE=4]; next; next_free [PER_THREAD: malloc/Makefile defines it];
//   INTERNAL_SIZE_T system_mem, max_system_mem.                                  = 0x888 bytes
// malloc/malloc.c struct malloc_par: trim_threshold top_pad mmap_threshold arena_test arena_max
//   int n_mmaps n_mmaps_max max_n_mmaps no_dyn_threshold; mmapped_mem max_mmapped_mem
//   max_total_mem ("only kept for NO_THREADS", still in the struct); char *sbrk_base. = 0x58
// malloc/arena.c heap_info: ar_ptr prev size mprotect_size pad[-6*SIZE_SZ & 15 = 0]  = 0x20
// Thread arena: `static __thread void *__libc_tsd_MALLOC` (nptl malloc-machine.h tsd_setspecific
// through bits/libc-tsd.h __libc_tsd_define).
Layout glibc_2_17() {
  Layout l{};
  l.name = "2.17";
  l.last = "2.22";
  l.source =
      "glibc-2.17 malloc/malloc.c (struct malloc_state, struct malloc_par), malloc/arena.c "
      "(heap_info), nptl/sysdeps/pthread/malloc-machine.h (arena TSD)";
  l.size_sz = 8;
  l.alignment = 16;
  l.minsize = 32;
  l.heap_max = 64ull << 20;
  l.heap_max_hp_multiplier = 0;
  l.nfastbins = 10;
  l.nbins = 128;
  l.nsmallbins = 64;
  l.has_fastbins = true;
  l.ms_mutex = 0;
  l.ms_flags = 4;
  l.ms_have_fastchunks = kAbsent;
  l.ms_fastbins = 0x8;
  l.ms_top = 0x58;
  l.ms_last_remainder = 0x60;
  l.ms_bins = 0x68;
  l.ms_binmap = 0x858;
  l.ms_next = 0x868;
  l.ms_next_free = 0x870;
  l.ms_attached_threads = kAbsent;
  l.ms_system_mem = 0x878;
  l.ms_max_system_mem = 0x880;
  l.ms_size = 0x888;
  l.hi_ar_ptr = 0;
  l.hi_prev = 8;
  l.hi_heap_size = 0x10;
  l.hi_mprotect_size = 0x18;
  l.hi_pagesize = kAbsent;
  l.hi_size = 0x20;
  l.mp_trim_threshold = 0;
  l.mp_top_pad = 8;
  l.mp_mmap_threshold = 0x10;
  l.mp_arena_test = 0x18;
  l.mp_arena_max = 0x20;
  l.mp_thp_mode = kAbsent;
  l.mp_thp_pagesize = kAbsent;
  l.mp_hp_pagesize = kAbsent;
  l.mp_hp_flags = kAbsent;
  l.mp_n_mmaps = 0x28;
  l.mp_n_mmaps_max = 0x2c;
  l.mp_max_n_mmaps = 0x30;
  l.mp_no_dyn_threshold = 0x34;
  l.mp_mmapped_mem = 0x38;
  l.mp_max_mmapped_mem = 0x40;
  l.mp_max_total_mem = 0x48;
  l.mp_sbrk_base = 0x50;
  l.mp_tcache_bins = kAbsent;
  l.mp_tcache_max_bytes = kAbsent;
  l.mp_tcache_count = kAbsent;
  l.mp_tcache_unsorted_limit = kAbsent;
  l.mp_size = 0x58;
  l.global_max_fast_width = 8;
  l.has_tcache = false;
  l.tcache_bins = 0;
  l.tcache_small_bins = 0;
  l.tcache_count_width = 0;
  l.tc_counts = kAbsent;
  l.tc_entries = kAbsent;
  l.tc_size = 0;
  l.tc_chunk_size = 0;
  l.tcache_counts = TcacheCounts::Count;
  l.tcache_fill_count = 0;
  l.tcache_init = TcacheInit::None;
  l.te_next = kAbsent;
  l.te_key = kAbsent;
  l.key_kind = TcacheKey::None;
  l.safe_linking = false;
  l.mmap_header = MmapHeader::Classic;
  l.thread_arena_symbol = "__libc_tsd_MALLOC";
  l.tcache_symbol = nullptr;
  l.tcache_key_symbol = nullptr;
  l.tcache_dummy_symbol = nullptr;
  return l;
}

// glibc 2.23: malloc_state gains `INTERNAL_SIZE_T attached_threads` after next_free (0x890);
// the thread arena becomes `static __thread mstate thread_arena` (malloc/arena.c).
Layout glibc_2_23() {
  Layout l = glibc_2_17();
  l.name = "2.23";
  l.last = "2.23";
  l.source =
      "glibc-2.23 malloc/malloc.c (struct malloc_state: attached_threads), malloc/arena.c "
      "(thread_arena)";
  l.ms_attached_threads = 0x878;
  l.ms_system_mem = 0x880;
  l.ms_max_system_mem = 0x888;
  l.ms_size = 0x890;
  l.thread_arena_symbol = "thread_arena";
  return l;
}

// glibc 2.24: malloc_par loses max_total_mem (sbrk_base 0x48, size 0x50).
Layout glibc_2_24() {
  Layout l = glibc_2_23();
  l.name = "2.24";
  l.last = "2.25";
  l.source = "glibc-2.24 malloc/malloc.c (struct malloc_par without max_total_mem)";
  l.mp_max_total_mem = kAbsent;
  l.mp_sbrk_base = 0x48;
  l.mp_size = 0x50;
  return l;
}

// glibc 2.26: tcache (USE_TCACHE, on by default). malloc_par gains size_t tcache_bins,
// tcache_max_bytes, tcache_count, tcache_unsorted_limit after sbrk_base (0x70).
// tcache_perthread_struct { char counts[64]; tcache_entry *entries[64]; } = 0x240;
// tcache_entry { next } (no key); `static __thread tcache_perthread_struct *tcache`.
Layout glibc_2_26() {
  Layout l = glibc_2_24();
  l.name = "2.26";
  l.last = "2.26";
  l.source =
      "glibc-2.26 malloc/malloc.c (struct malloc_par tcache fields, tcache_perthread_struct "
      "with char counts[TCACHE_MAX_BINS=64], tcache_entry without key)";
  l.mp_tcache_bins = 0x50;
  l.mp_tcache_max_bytes = 0x58;
  l.mp_tcache_count = 0x60;
  l.mp_tcache_unsorted_limit = 0x68;
  l.mp_size = 0x70;
  l.has_tcache = true;
  l.tcache_bins = 64;
  l.tcache_small_bins = 64;
  l.tcache_count_width = 1;
  l.tc_counts = 0;
  l.tc_entries = 0x40;
  l.tc_size = 0x240;
  l.tc_chunk_size = request2size(l.tc_size);
  l.tcache_counts = TcacheCounts::Count;
  l.tcache_fill_count = 7;
  l.tcache_init = TcacheInit::FirstMalloc;
  l.te_next = 0;
  l.te_key = kAbsent;
  l.key_kind = TcacheKey::None;
  l.tcache_symbol = "tcache";
  return l;
}

// glibc 2.27: malloc_state gains `int have_fastchunks` after flags; fastbinsY moves to 0x10,
// everything after it by 8 (0x898).
Layout glibc_2_27() {
  Layout l = glibc_2_26();
  l.name = "2.27";
  l.last = "2.28";
  l.source = "glibc-2.27 malloc/malloc.c (struct malloc_state: have_fastchunks)";
  l.ms_have_fastchunks = 8;
  l.ms_fastbins = 0x10;
  l.ms_top = 0x60;
  l.ms_last_remainder = 0x68;
  l.ms_bins = 0x70;
  l.ms_binmap = 0x860;
  l.ms_next = 0x870;
  l.ms_next_free = 0x878;
  l.ms_attached_threads = 0x880;
  l.ms_system_mem = 0x888;
  l.ms_max_system_mem = 0x890;
  l.ms_size = 0x898;
  return l;
}

// glibc 2.29: tcache_entry gains `struct tcache_perthread_struct *key` (owner's tcache).
Layout glibc_2_29() {
  Layout l = glibc_2_27();
  l.name = "2.29";
  l.last = "2.29";
  l.source = "glibc-2.29 malloc/malloc.c (tcache_entry.key = owning tcache_perthread_struct)";
  l.te_key = 8;
  l.key_kind = TcacheKey::OwnerPointer;
  return l;
}

// glibc 2.30: tcache_perthread_struct.counts becomes uint16_t counts[64] (entries at 0x80, 0x280).
Layout glibc_2_30() {
  Layout l = glibc_2_29();
  l.name = "2.30";
  l.last = "2.31";
  l.source = "glibc-2.30 malloc/malloc.c (tcache_perthread_struct: uint16_t counts[TCACHE_MAX_BINS])";
  l.tcache_count_width = 2;
  l.tc_entries = 0x80;
  l.tc_size = 0x280;
  l.tc_chunk_size = request2size(l.tc_size);
  return l;
}

// glibc 2.32: safe-linking, PROTECT_PTR(pos, ptr) = (pos >> 12) ^ ptr on tcache_entry.next and
// fastbin malloc_chunk.fd (list heads in tcache->entries[] and fastbinsY[] stay raw).
Layout glibc_2_32() {
  Layout l = glibc_2_30();
  l.name = "2.32";
  l.last = "2.33";
  l.source = "glibc-2.32 malloc/malloc.c (PROTECT_PTR/REVEAL_PTR safe-linking)";
  l.safe_linking = true;
  return l;
}

// glibc 2.34: tcache_entry.key becomes `uintptr_t key` holding the random `tcache_key`.
Layout glibc_2_34() {
  Layout l = glibc_2_32();
  l.name = "2.34";
  l.last = "2.34";
  l.source = "glibc-2.34 malloc/malloc.c (tcache_entry.key = tcache_key)";
  l.key_kind = TcacheKey::Random;
  l.tcache_key_symbol = "tcache_key";
  return l;
}

// glibc 2.35 .. 2.36 (verified against DWARF of Debian's 2.36-9 libc6-dbg by
// tests/test_layout_dwarf.py). malloc_par gains INTERNAL_SIZE_T thp_pagesize, hp_pagesize and
// int hp_flags after arena_max (under HAVE_TUNABLES, on by default; unconditional from 2.38);
// heap_info gains size_t pagesize (pad[-3*SIZE_SZ & 15 = 8], 0x30); heap_max_size() =
// hp_pagesize * 4 when hp_pagesize != 0 (malloc/arena.c).
Layout glibc_2_35() {
  Layout l = glibc_2_34();
  l.name = "2.35";
  l.last = "2.36";
  l.source =
      "glibc-2.35 malloc/malloc.c (struct malloc_par hugepage fields), malloc/arena.c "
      "(heap_info.pagesize, heap_max_size())";
  l.heap_max_hp_multiplier = 4;
  l.hi_pagesize = 0x20;
  l.hi_size = 0x30;
  l.mp_thp_pagesize = 0x28;
  l.mp_hp_pagesize = 0x30;
  l.mp_hp_flags = 0x38;
  l.mp_n_mmaps = 0x3c;
  l.mp_n_mmaps_max = 0x40;
  l.mp_max_n_mmaps = 0x44;
  l.mp_no_dyn_threshold = 0x48;
  l.mp_mmapped_mem = 0x50;
  l.mp_max_mmapped_mem = 0x58;
  l.mp_sbrk_base = 0x60;
  l.mp_tcache_bins = 0x68;
  l.mp_tcache_max_bytes = 0x70;
  l.mp_tcache_count = 0x78;
  l.mp_tcache_unsorted_limit = 0x80;
  l.mp_size = 0x88;
  return l;
}

// glibc 2.37 .. 2.41: `static uint8_t global_max_fast` (was INTERNAL_SIZE_T). Structures unchanged.
Layout glibc_2_37() {
  Layout l = glibc_2_35();
  l.name = "2.37";
  l.last = "2.41";
  l.source = "glibc-2.37 malloc/malloc.c (uint8_t global_max_fast)";
  l.global_max_fast_width = 1;
  return l;
}

// glibc 2.42: tcache_perthread_struct { uint16_t num_slots[TCACHE_MAX_BINS = 64 + 12];
// entries[76] } (0x2f8): num_slots counts DOWN from mp_.tcache_count; bins 64..75 are "large"
// bins of mixed sizes, sorted ascending. malloc_par.tcache_bins renamed tcache_small_bins (same
// offset). heap_max_size() is HEAP_MAX_SIZE again (arena.c). tcache created by the first
// malloc/calloc/memalign with a chunk size below mp_.tcache_max_bytes.
Layout glibc_2_42() {
  Layout l = glibc_2_37();
  l.name = "2.42";
  l.last = "2.42";
  l.source =
      "glibc-2.42 malloc/malloc.c (tcache_perthread_struct num_slots[76], "
      "malloc_par.tcache_small_bins), malloc/arena.c (constant heap_max_size)";
  l.heap_max_hp_multiplier = 0;
  l.tcache_bins = 76;
  l.tcache_small_bins = 64;
  l.tc_counts = 0;
  l.tc_entries = 0x98;
  l.tc_size = 0x2f8;
  l.tc_chunk_size = request2size(l.tc_size);
  l.tcache_counts = TcacheCounts::FreeSlots;
  l.tcache_init = TcacheInit::FirstSmall;
  return l;
}

// glibc 2.43 (master 04e750e75b, see top): fastbins removed: malloc_state loses have_fastchunks
// and fastbinsY (top at 0x8, 0x840); global_max_fast removed; malloc_par gains
// `enum malloc_thp_mode_t thp_mode` (4 bytes + 4 padding) after arena_max, shifting the rest by 8
// (0x90); TCACHE_FILL_COUNT 16; TLS tcache never NULL (points at `__tcache_dummy`), real tcache
// allocated on demand; mmapped chunk header: prev_size = offset | MMAP_HP, size = mapping -
// offset - CHUNK_HDR_SZ (mmap_set_chunk).
Layout glibc_2_43() {
  Layout l = glibc_2_42();
  l.name = "2.43";
  l.last = "2.43";
  l.source =
      "glibc master 04e750e75b (2.43 freeze) malloc/malloc.c (struct malloc_state without "
      "fastbins, struct malloc_par thp_mode, mmap_set_chunk, __tcache_dummy)";
  l.nfastbins = 0;
  l.has_fastbins = false;
  l.ms_have_fastchunks = kAbsent;
  l.ms_fastbins = kAbsent;
  l.ms_top = 0x8;
  l.ms_last_remainder = 0x10;
  l.ms_bins = 0x18;
  l.ms_binmap = 0x808;
  l.ms_next = 0x818;
  l.ms_next_free = 0x820;
  l.ms_attached_threads = 0x828;
  l.ms_system_mem = 0x830;
  l.ms_max_system_mem = 0x838;
  l.ms_size = 0x840;
  l.mp_thp_mode = 0x28;
  l.mp_thp_pagesize = 0x30;
  l.mp_hp_pagesize = 0x38;
  l.mp_hp_flags = 0x40;
  l.mp_n_mmaps = 0x44;
  l.mp_n_mmaps_max = 0x48;
  l.mp_max_n_mmaps = 0x4c;
  l.mp_no_dyn_threshold = 0x50;
  l.mp_mmapped_mem = 0x58;
  l.mp_max_mmapped_mem = 0x60;
  l.mp_sbrk_base = 0x68;
  l.mp_tcache_bins = 0x70;
  l.mp_tcache_max_bytes = 0x78;
  l.mp_tcache_count = 0x80;
  l.mp_tcache_unsorted_limit = 0x88;
  l.mp_size = 0x90;
  l.global_max_fast_width = 0;
  l.tcache_fill_count = 16;
  l.tcache_init = TcacheInit::OnDemand;
  l.mmap_header = MmapHeader::Glibc243;
  l.tcache_dummy_symbol = "__tcache_dummy";
  return l;
}

}  // namespace

const std::vector<Layout>& layouts() {
  static const std::vector<Layout> all = {glibc_2_17(), glibc_2_23(), glibc_2_24(), glibc_2_26(), glibc_2_27(),
                                          glibc_2_29(), glibc_2_30(), glibc_2_32(), glibc_2_34(), glibc_2_35(),
                                          glibc_2_37(), glibc_2_42(), glibc_2_43()};
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

uint64_t effective_heap_max(const Layout& l, uint64_t mp_hp_pagesize) {
  if (l.heap_max_hp_multiplier && mp_hp_pagesize) return mp_hp_pagesize * l.heap_max_hp_multiplier;
  return l.heap_max;
}

std::pair<uint64_t, uint64_t> tcache_bin_sizes(const Layout& l, unsigned i) {
  if (!l.has_tcache || i >= l.tcache_bins) return {0, 0};
  if (i < l.tcache_small_bins) {
    uint64_t s = i * l.alignment + l.minsize;
    return {s, s};
  }
  // large_csize2tidx(nb) = TCACHE_SMALL_BINS + clz(MAX_TCACHE_SMALL_SIZE) - clz(nb) (32-bit clz):
  // MAX_TCACHE_SMALL_SIZE is 1032 (2.42) / 1040 (2.43), highest bit 2^10 in both, so bin
  // 64 + k holds sizes in [2^(10+k), 2^(11+k)), the first one starting above the largest small size.
  unsigned k = i - l.tcache_small_bins;
  uint64_t lo = uint64_t{1} << (10 + k), hi = (uint64_t{1} << (11 + k)) - l.alignment;
  uint64_t small_max = (l.tcache_small_bins - 1) * l.alignment + l.minsize;
  if (lo <= small_max) lo = small_max + l.alignment;
  return {lo, hi};
}

// Which chunk sizes glibc's own allocation gives the tcache_perthread_struct (issue 12: a JVM
// thread's struct sat in a 0x2a0 chunk on 2.36 and was reported as bad_tcache). Read in
// github.com/bminor/glibc malloc/malloc.c at tags glibc-2.26, glibc-2.30, glibc-2.36 and
// glibc-2.42, and master 04e750e75b (2.43):
//  - tcache_init asks for sizeof (tcache_perthread_struct): _int_malloc (2.26-2.41), through
//    __libc_malloc2 (2.42), and on 2.43 either __libc_malloc2 (bytes) or, when called from inside
//    _int_malloc, _int_malloc (av, request2size (bytes)) - a request already padded once, so
//    _int_malloc's checked_request2size pads it again (one alignment step more).
//  - _int_malloc takes nb = request2size (request); a chunk found in a bin by the binmap search or
//    in a large bin is used whole when "remainder_size < MINSIZE" ("Exhaust"); otherwise it is
//    split to exactly nb (as top is). So the struct's chunk is nb .. nb + MINSIZE - alignment.
std::pair<uint64_t, uint64_t> tcache_struct_chunk_sizes(const Layout& l) {
  if (!l.has_tcache || !l.tc_chunk_size) return {0, 0};
  auto r2s = [&](uint64_t req) {
    uint64_t n = (req + l.size_sz + l.alignment - 1) & ~(l.alignment - 1);
    return n < l.minsize ? l.minsize : n;
  };
  uint64_t largest_nb = l.tcache_init == TcacheInit::OnDemand ? r2s(l.tc_chunk_size) : l.tc_chunk_size;
  return {l.tc_chunk_size, largest_nb + l.minsize - l.alignment};
}

bool tcache_struct_chunk_fits(const Layout& l, uint64_t size) {
  auto [lo, hi] = tcache_struct_chunk_sizes(l);
  return lo && size >= lo && size <= hi && (size & (l.alignment - 1)) == 0;
}

uint64_t tcache_chunk_count(const Layout& l, uint64_t raw, uint64_t mp_tcache_count) {
  if (l.tcache_counts == TcacheCounts::FreeSlots) return raw > mp_tcache_count ? 0 : mp_tcache_count - raw;
  return raw;
}

MmapExtent mmap_extent(const Layout& l, uint64_t chunk, uint64_t prev_size, uint64_t size_word) {
  uint64_t size = size_word & ~uint64_t{7};
  if (l.mmap_header == MmapHeader::Glibc243) {
    uint64_t offset = prev_size & ~uint64_t{1};
    return {chunk - offset, offset + size + 2 * l.size_sz, (prev_size & 1) != 0};
  }
  return {chunk - prev_size, prev_size + size, false};
}

}  // namespace heapwalk::ptmalloc
