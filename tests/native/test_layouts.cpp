// Layout profiles against the glibc struct definitions, on byte images.
//
// The glibc structures are transcribed below as field lists (name, size, alignment, count), each
// field annotated with the glibc tag that added or removed it. Offsets are computed from those
// lists with the C (x86-64 SysV) layout rules, independently of the profile's numbers; byte images
// are then filled field by field at the computed offsets and read back through the profile's
// offsets. Needs only ptmalloc/layout.h and layout.cpp.
//
// Sources: https://github.com/bminor/glibc, tags glibc-2.17 .. glibc-2.42; "2.43" is master at
// 04e750e75b (2026-01-20, 2.43 freeze). Files: malloc/malloc.c (struct malloc_state, struct
// malloc_par, tcache_entry, tcache_perthread_struct), malloc/arena.c (heap_info).
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "ptmalloc/layout.h"

using namespace heapwalk::ptmalloc;

namespace {

// ---------------------------------------------------------------------------------------------
// C layout of a field list.

struct Field {
  std::string name;
  uint64_t size, align, count;
};

struct CLayout {
  std::map<std::string, uint64_t> offset;
  std::map<std::string, const Field*> field;
  std::vector<Field> fields;
  uint64_t size = 0;
  bool has(const std::string& n) const { return offset.count(n) != 0; }
  uint64_t at(const std::string& n) const { return has(n) ? offset.at(n) : kAbsent; }
};

CLayout c_layout(std::vector<Field> fields) {
  CLayout c;
  c.fields = std::move(fields);
  uint64_t off = 0, max_align = 1;
  for (const auto& f : c.fields) {
    off = (off + f.align - 1) / f.align * f.align;
    c.offset[f.name] = off;
    off += f.size * f.count;
    max_align = std::max(max_align, f.align);
  }
  c.size = (off + max_align - 1) / max_align * max_align;
  for (const auto& f : c.fields) c.field[f.name] = &f;
  return c;
}

// x86-64 C types.
Field ptr(const std::string& n, uint64_t count = 1) { return {n, 8, 8, count}; }  // T *, mchunkptr
Field size_t_(const std::string& n) { return {n, 8, 8, 1}; }  // size_t, INTERNAL_SIZE_T, unsigned long
Field int_(const std::string& n, uint64_t count = 1) { return {n, 4, 4, count}; }  // int, unsigned int, enum
Field u16(const std::string& n, uint64_t count) { return {n, 2, 2, count}; }
Field char_(const std::string& n, uint64_t count) { return {n, 1, 1, count}; }

constexpr uint64_t SIZE_SZ = 8, MALLOC_ALIGN_MASK = 15;
constexpr uint64_t NFASTBINS = 10;  // fastbin_index(request2size(MAX_FAST_SIZE = 160)) + 1
constexpr uint64_t NBINS = 128, BINMAPSIZE = NBINS / 32;

// ---------------------------------------------------------------------------------------------
// glibc structures as declared at glibc-2.<minor>, x86-64, default configuration
// (THREAD_STATS 0, PER_THREAD defined by malloc/Makefile up to 2.18 and unconditional after,
// HAVE_TUNABLES and USE_TCACHE enabled).

std::vector<Field> malloc_state_fields(int minor) {
  std::vector<Field> f;
  f.push_back(int_("mutex"));  // mutex_t (2.17: typedef int via __libc_lock_define) / __libc_lock_define (2.25+)
  f.push_back(int_("flags"));
  if (minor >= 27 && minor < 43) f.push_back(int_("have_fastchunks"));  // added glibc-2.27, removed 2.43
  if (minor < 43) f.push_back(ptr("fastbinsY", NFASTBINS));             // removed 2.43 (no fastbins)
  f.push_back(ptr("top"));
  f.push_back(ptr("last_remainder"));
  f.push_back(ptr("bins", NBINS * 2 - 2));
  f.push_back(int_("binmap", BINMAPSIZE));
  f.push_back(ptr("next"));
  f.push_back(ptr("next_free"));                              // PER_THREAD in 2.17/2.18
  if (minor >= 23) f.push_back(size_t_("attached_threads"));  // added glibc-2.23
  f.push_back(size_t_("system_mem"));
  f.push_back(size_t_("max_system_mem"));
  return f;
}

std::vector<Field> malloc_par_fields(int minor) {
  std::vector<Field> f;
  f.push_back(size_t_("trim_threshold"));  // unsigned long
  f.push_back(size_t_("top_pad"));
  f.push_back(size_t_("mmap_threshold"));
  f.push_back(size_t_("arena_test"));
  f.push_back(size_t_("arena_max"));
  if (minor >= 43) f.push_back(int_("thp_mode"));  // enum malloc_thp_mode_t, added 2.43
  if (minor >= 35) {                               // added glibc-2.35 (HAVE_TUNABLES until 2.37)
    f.push_back(size_t_("thp_pagesize"));
    f.push_back(size_t_("hp_pagesize"));
    f.push_back(int_("hp_flags"));
  }
  f.push_back(int_("n_mmaps"));
  f.push_back(int_("n_mmaps_max"));
  f.push_back(int_("max_n_mmaps"));
  f.push_back(int_("no_dyn_threshold"));
  f.push_back(size_t_("mmapped_mem"));
  f.push_back(size_t_("max_mmapped_mem"));
  if (minor < 24) f.push_back(size_t_("max_total_mem"));  // "only kept for NO_THREADS", removed 2.24
  f.push_back(ptr("sbrk_base"));
  if (minor >= 26) {                      // USE_TCACHE, added glibc-2.26
    f.push_back(size_t_("tcache_bins"));  // renamed tcache_small_bins in glibc-2.42
    f.push_back(size_t_("tcache_max_bytes"));
    f.push_back(size_t_("tcache_count"));
    f.push_back(size_t_("tcache_unsorted_limit"));
  }
  return f;
}

std::vector<Field> heap_info_fields(int minor) {
  std::vector<Field> f = {ptr("ar_ptr"), ptr("prev"), size_t_("size"), size_t_("mprotect_size")};
  if (minor >= 35) f.push_back(size_t_("pagesize"));  // added glibc-2.35
  // char pad[-6 * SIZE_SZ & MALLOC_ALIGN_MASK] (<= 2.34) / [-3 * SIZE_SZ & MALLOC_ALIGN_MASK] (2.35+)
  uint64_t pad = (minor >= 35 ? -3 * SIZE_SZ : -6 * SIZE_SZ) & MALLOC_ALIGN_MASK;
  f.push_back(char_("pad", pad));
  return f;
}

uint64_t tcache_max_bins(int minor) {
  return minor >= 42 ? 64 + 12 : 64;
}  // TCACHE_SMALL_BINS + TCACHE_LARGE_BINS (2.42)

std::vector<Field> tcache_perthread_fields(int minor) {
  std::vector<Field> f;
  if (minor < 30)
    f.push_back(char_("counts", tcache_max_bins(minor)));  // char counts[] 2.26-2.29
  else if (minor < 42)
    f.push_back(u16("counts", tcache_max_bins(minor)));  // uint16_t counts[] 2.30
  else
    f.push_back(u16("num_slots", tcache_max_bins(minor)));  // uint16_t num_slots[] 2.42
  f.push_back(ptr("entries", tcache_max_bins(minor)));
  return f;
}

std::vector<Field> tcache_entry_fields(int minor) {
  std::vector<Field> f = {ptr("next")};
  if (minor >= 29) f.push_back(ptr("key"));  // tcache_perthread_struct * (2.29), uintptr_t (2.34)
  return f;
}

std::string ver(int minor) { return "2." + std::to_string(minor); }

// ---------------------------------------------------------------------------------------------
// Byte images: every element of every field gets a distinct marker, written at the C offset.

uint64_t marker(size_t field_index, uint64_t element, uint64_t size) {
  uint64_t v = 0xa5a5000000000000ull | (uint64_t{field_index + 1} << 24) | (element + 1);
  if (size < 8) v &= (uint64_t{1} << (8 * size)) - 1;
  if (size == 2) v = (field_index + 1) * 0x101 + element;  // keep u16 markers distinct per element
  if (size == 1) v = static_cast<uint8_t>(field_index * 16 + element + 1);
  return v;
}

std::vector<uint8_t> image(const CLayout& c) {
  std::vector<uint8_t> img(c.size, 0);
  for (size_t i = 0; i < c.fields.size(); ++i) {
    const Field& f = c.fields[i];
    for (uint64_t e = 0; e < f.count; ++e) {
      uint64_t v = marker(i, e, f.size);
      std::memcpy(img.data() + c.offset.at(f.name) + e * f.size, &v, f.size);
    }
  }
  return img;
}

uint64_t expected(const CLayout& c, const std::string& name, uint64_t element = 0) {
  for (size_t i = 0; i < c.fields.size(); ++i)
    if (c.fields[i].name == name) return marker(i, element, c.fields[i].size);
  ADD_FAILURE() << "no field " << name;
  return 0;
}

uint64_t read(const std::vector<uint8_t>& img, uint64_t off, uint64_t width) {
  EXPECT_NE(off, kAbsent);
  EXPECT_LE(off + width, img.size());
  if (off == kAbsent || off + width > img.size()) return ~uint64_t{0};
  uint64_t v = 0;
  std::memcpy(&v, img.data() + off, width);
  return v;
}

// Reads field `name` of the image through the profile's offset and checks it is that field.
void expect_field(const CLayout& c, const std::vector<uint8_t>& img, const std::string& name, uint64_t profile_offset,
                  const std::string& what) {
  ASSERT_TRUE(c.has(name)) << what << ": the source has no " << name;
  uint64_t width = c.field.at(name)->size;
  EXPECT_EQ(read(img, profile_offset, width), expected(c, name)) << what << "." << name;
  EXPECT_EQ(profile_offset, c.at(name)) << what << "." << name;
}

void expect_absent(const CLayout& c, const std::string& name, uint64_t profile_offset, const std::string& what) {
  EXPECT_FALSE(c.has(name)) << what << "." << name;
  EXPECT_EQ(profile_offset, kAbsent) << what << "." << name << " should be kAbsent";
}

void check_field(const CLayout& c, const std::vector<uint8_t>& img, const std::string& name, uint64_t profile_offset,
                 const std::string& what) {
  if (c.has(name))
    expect_field(c, img, name, profile_offset, what);
  else
    expect_absent(c, name, profile_offset, what);
}

// Checks every offset and size of the profile that layout_for() returns for 2.<minor>.
void check_version(int minor) {
  SCOPED_TRACE("glibc " + ver(minor));
  const Layout* l = layout_for(ver(minor));
  ASSERT_NE(l, nullptr);
  EXPECT_LE(compare_versions(l->name, ver(minor)), 0);
  EXPECT_LE(compare_versions(ver(minor), l->last), 0);

  // struct malloc_state
  CLayout ms = c_layout(malloc_state_fields(minor));
  auto msi = image(ms);
  EXPECT_EQ(l->ms_size, ms.size);
  check_field(ms, msi, "mutex", l->ms_mutex, "malloc_state");
  check_field(ms, msi, "flags", l->ms_flags, "malloc_state");
  check_field(ms, msi, "have_fastchunks", l->ms_have_fastchunks, "malloc_state");
  check_field(ms, msi, "fastbinsY", l->ms_fastbins, "malloc_state");
  check_field(ms, msi, "top", l->ms_top, "malloc_state");
  check_field(ms, msi, "last_remainder", l->ms_last_remainder, "malloc_state");
  check_field(ms, msi, "bins", l->ms_bins, "malloc_state");
  check_field(ms, msi, "binmap", l->ms_binmap, "malloc_state");
  check_field(ms, msi, "next", l->ms_next, "malloc_state");
  check_field(ms, msi, "next_free", l->ms_next_free, "malloc_state");
  check_field(ms, msi, "attached_threads", l->ms_attached_threads, "malloc_state");
  check_field(ms, msi, "system_mem", l->ms_system_mem, "malloc_state");
  check_field(ms, msi, "max_system_mem", l->ms_max_system_mem, "malloc_state");
  // Array strides as the walker uses them: bins[2*(i-1)] for bin i, fastbinsY[i].
  for (unsigned i = 1; i < l->nbins; ++i)
    EXPECT_EQ(read(msi, l->ms_bins + (i - 1) * 16, 8), expected(ms, "bins", 2 * (i - 1))) << "bin " << i;
  EXPECT_EQ(l->nbins, NBINS);
  EXPECT_EQ(l->has_fastbins, ms.has("fastbinsY"));
  EXPECT_EQ(l->nfastbins, ms.has("fastbinsY") ? ms.field.at("fastbinsY")->count : 0u);
  for (unsigned i = 0; i < l->nfastbins; ++i)
    EXPECT_EQ(read(msi, l->ms_fastbins + i * 8, 8), expected(ms, "fastbinsY", i)) << "fastbin " << i;

  // struct malloc_par
  CLayout mp = c_layout(malloc_par_fields(minor));
  auto mpi = image(mp);
  EXPECT_EQ(l->mp_size, mp.size);
  check_field(mp, mpi, "trim_threshold", l->mp_trim_threshold, "malloc_par");
  check_field(mp, mpi, "top_pad", l->mp_top_pad, "malloc_par");
  check_field(mp, mpi, "mmap_threshold", l->mp_mmap_threshold, "malloc_par");
  check_field(mp, mpi, "arena_test", l->mp_arena_test, "malloc_par");
  check_field(mp, mpi, "arena_max", l->mp_arena_max, "malloc_par");
  check_field(mp, mpi, "thp_mode", l->mp_thp_mode, "malloc_par");
  check_field(mp, mpi, "thp_pagesize", l->mp_thp_pagesize, "malloc_par");
  check_field(mp, mpi, "hp_pagesize", l->mp_hp_pagesize, "malloc_par");
  check_field(mp, mpi, "hp_flags", l->mp_hp_flags, "malloc_par");
  check_field(mp, mpi, "n_mmaps", l->mp_n_mmaps, "malloc_par");
  check_field(mp, mpi, "n_mmaps_max", l->mp_n_mmaps_max, "malloc_par");
  check_field(mp, mpi, "max_n_mmaps", l->mp_max_n_mmaps, "malloc_par");
  check_field(mp, mpi, "no_dyn_threshold", l->mp_no_dyn_threshold, "malloc_par");
  check_field(mp, mpi, "mmapped_mem", l->mp_mmapped_mem, "malloc_par");
  check_field(mp, mpi, "max_mmapped_mem", l->mp_max_mmapped_mem, "malloc_par");
  check_field(mp, mpi, "max_total_mem", l->mp_max_total_mem, "malloc_par");
  check_field(mp, mpi, "sbrk_base", l->mp_sbrk_base, "malloc_par");
  check_field(mp, mpi, "tcache_bins", l->mp_tcache_bins, "malloc_par");
  check_field(mp, mpi, "tcache_max_bytes", l->mp_tcache_max_bytes, "malloc_par");
  check_field(mp, mpi, "tcache_count", l->mp_tcache_count, "malloc_par");
  check_field(mp, mpi, "tcache_unsorted_limit", l->mp_tcache_unsorted_limit, "malloc_par");

  // heap_info
  CLayout hi = c_layout(heap_info_fields(minor));
  auto hii = image(hi);
  EXPECT_EQ(l->hi_size, hi.size);
  EXPECT_EQ((hi.size + 2 * SIZE_SZ) % 16, 0u) << "sizeof (heap_info) + 2 * SIZE_SZ is aligned";
  check_field(hi, hii, "ar_ptr", l->hi_ar_ptr, "heap_info");
  check_field(hi, hii, "prev", l->hi_prev, "heap_info");
  check_field(hi, hii, "size", l->hi_heap_size, "heap_info");
  check_field(hi, hii, "mprotect_size", l->hi_mprotect_size, "heap_info");
  check_field(hi, hii, "pagesize", l->hi_pagesize, "heap_info");

  // tcache
  EXPECT_EQ(l->has_tcache, minor >= 26);
  if (minor < 26) {
    EXPECT_EQ(l->tcache_bins, 0u);
    EXPECT_EQ(l->tcache_symbol, nullptr);
    EXPECT_EQ(l->tcache_init, TcacheInit::None);
    return;
  }
  CLayout tp = c_layout(tcache_perthread_fields(minor));
  auto tpi = image(tp);
  std::string counts = minor >= 42 ? "num_slots" : "counts";
  EXPECT_EQ(l->tc_size, tp.size);
  EXPECT_EQ(l->tc_chunk_size, (tp.size + SIZE_SZ + MALLOC_ALIGN_MASK) & ~MALLOC_ALIGN_MASK);  // request2size
  EXPECT_EQ(l->tcache_bins, tcache_max_bins(minor));
  EXPECT_EQ(l->tcache_small_bins, 64u);
  EXPECT_EQ(l->tcache_count_width, tp.field.at(counts)->size);
  check_field(tp, tpi, counts, l->tc_counts, "tcache_perthread_struct");
  check_field(tp, tpi, "entries", l->tc_entries, "tcache_perthread_struct");
  for (unsigned i = 0; i < l->tcache_bins; ++i) {
    EXPECT_EQ(read(tpi, l->tc_counts + i * l->tcache_count_width, l->tcache_count_width), expected(tp, counts, i));
    EXPECT_EQ(read(tpi, l->tc_entries + i * 8, 8), expected(tp, "entries", i));
  }
  EXPECT_EQ(l->tcache_counts, minor >= 42 ? TcacheCounts::FreeSlots : TcacheCounts::Count);

  CLayout te = c_layout(tcache_entry_fields(minor));
  auto tei = image(te);
  check_field(te, tei, "next", l->te_next, "tcache_entry");
  check_field(te, tei, "key", l->te_key, "tcache_entry");
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST(Layouts, EveryVersionMatchesItsSourceStructs) {
  for (int minor = 17; minor <= 43; ++minor) check_version(minor);
}

// The versions the issue names explicitly, one test each so a failure names the version.
TEST(Layouts, Glibc2_17) { check_version(17); }
TEST(Layouts, Glibc2_23) { check_version(23); }
TEST(Layouts, Glibc2_26) { check_version(26); }
TEST(Layouts, Glibc2_27) { check_version(27); }
TEST(Layouts, Glibc2_29) { check_version(29); }
TEST(Layouts, Glibc2_30) { check_version(30); }
TEST(Layouts, Glibc2_32) { check_version(32); }
TEST(Layouts, Glibc2_34) { check_version(34); }
TEST(Layouts, Glibc2_42) { check_version(42); }
TEST(Layouts, Glibc2_43) { check_version(43); }

TEST(Layouts, KnownSizes) {
  // The sizes the issue lists, as plain numbers.
  EXPECT_EQ(layout_for("2.17")->ms_size, 0x888u);
  EXPECT_EQ(layout_for("2.22")->ms_size, 0x888u);
  EXPECT_EQ(layout_for("2.23")->ms_size, 0x890u);
  EXPECT_EQ(layout_for("2.26")->ms_size, 0x890u);
  EXPECT_EQ(layout_for("2.27")->ms_size, 0x898u);
  EXPECT_EQ(layout_for("2.42")->ms_size, 0x898u);
  EXPECT_EQ(layout_for("2.43")->ms_size, 0x840u);
  EXPECT_EQ(layout_for("2.34")->hi_size, 0x20u);
  EXPECT_EQ(layout_for("2.35")->hi_size, 0x30u);
  EXPECT_EQ(layout_for("2.29")->tc_size, 0x240u);
  EXPECT_EQ(layout_for("2.30")->tc_size, 0x280u);
  EXPECT_EQ(layout_for("2.42")->tc_size, 0x2f8u);
  EXPECT_EQ(layout_for("2.42")->tc_chunk_size, 0x300u);
  EXPECT_EQ(layout_for("2.36")->tc_chunk_size, 0x290u);
  EXPECT_EQ(layout_for("2.26")->tc_chunk_size, 0x250u);
}

TEST(Layouts, HostProfileNumbersUnchanged) {
  // 2.35-2.41 numbers verified against DWARF (tests/test_layout_dwarf.py) must not move.
  for (const char* v : {"2.35", "2.36", "2.37", "2.38", "2.39", "2.40", "2.41"}) {
    SCOPED_TRACE(v);
    const Layout& l = *layout_for(v);
    EXPECT_EQ(l.ms_fastbins, 0x10u);
    EXPECT_EQ(l.ms_top, 0x60u);
    EXPECT_EQ(l.ms_last_remainder, 0x68u);
    EXPECT_EQ(l.ms_bins, 0x70u);
    EXPECT_EQ(l.ms_next, 0x870u);
    EXPECT_EQ(l.ms_next_free, 0x878u);
    EXPECT_EQ(l.ms_attached_threads, 0x880u);
    EXPECT_EQ(l.ms_system_mem, 0x888u);
    EXPECT_EQ(l.ms_max_system_mem, 0x890u);
    EXPECT_EQ(l.ms_size, 0x898u);
    EXPECT_EQ(l.hi_size, 0x30u);
    EXPECT_EQ(l.hi_mprotect_size, 0x18u);
    EXPECT_EQ(l.mp_arena_max, 0x20u);
    EXPECT_EQ(l.mp_n_mmaps, 0x3cu);
    EXPECT_EQ(l.mp_n_mmaps_max, 0x40u);
    EXPECT_EQ(l.mp_max_n_mmaps, 0x44u);
    EXPECT_EQ(l.mp_mmapped_mem, 0x50u);
    EXPECT_EQ(l.mp_max_mmapped_mem, 0x58u);
    EXPECT_EQ(l.mp_sbrk_base, 0x60u);
    EXPECT_EQ(l.mp_tcache_bins, 0x68u);
    EXPECT_EQ(l.mp_tcache_max_bytes, 0x70u);
    EXPECT_EQ(l.mp_tcache_count, 0x78u);
    EXPECT_EQ(l.mp_size, 0x88u);
    EXPECT_EQ(l.tcache_bins, 64u);
    EXPECT_EQ(l.tcache_count_width, 2u);
    EXPECT_EQ(l.tc_counts, 0u);
    EXPECT_EQ(l.tc_entries, 0x80u);
    EXPECT_EQ(l.tc_size, 0x280u);
    EXPECT_EQ(l.te_next, 0u);
    EXPECT_EQ(l.te_key, 8u);
    EXPECT_EQ(l.key_kind, TcacheKey::Random);
    EXPECT_TRUE(l.safe_linking);
    EXPECT_EQ(l.heap_max, 64ull << 20);
  }
}

TEST(Layouts, ProfilesCoverExactly2_17To2_43) {
  const auto& all = layouts();
  ASSERT_FALSE(all.empty());
  EXPECT_STREQ(all.front().name, "2.17");
  EXPECT_STREQ(all.back().last, "2.43");
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_LE(compare_versions(all[i].name, all[i].last), 0) << all[i].name;
    EXPECT_NE(std::string(all[i].source).find("glibc"), std::string::npos) << all[i].name;
    if (i) {  // contiguous: each profile starts right after the previous one's last version
      int maj = 0, min = 0;
      std::sscanf(all[i - 1].last, "%d.%d", &maj, &min);
      EXPECT_EQ(compare_versions(all[i].name, std::to_string(maj) + "." + std::to_string(min + 1)), 0)
          << all[i - 1].last << " -> " << all[i].name;
    }
  }
  for (int minor = 17; minor <= 43; ++minor) {
    const Layout* l = layout_for(ver(minor));
    ASSERT_NE(l, nullptr) << ver(minor);
  }
  EXPECT_STREQ(layout_for("2.36")->name, "2.35");
  EXPECT_STREQ(layout_for("2.41")->name, "2.37");
  EXPECT_STREQ(layout_for("2.31")->name, "2.30");
  for (const char* v : {"2.16", "2.44", "2.9", "1.17", "3.0", ""}) EXPECT_EQ(layout_for(v), nullptr) << v;
  EXPECT_LT(compare_versions("2.9", "2.36"), 0);
}

TEST(Layouts, SemanticFlagsPerVersion) {
  for (int minor = 17; minor <= 43; ++minor) {
    SCOPED_TRACE(ver(minor));
    const Layout& l = *layout_for(ver(minor));
    EXPECT_EQ(l.safe_linking, minor >= 32);
    TcacheKey key = minor < 29 ? TcacheKey::None : minor < 34 ? TcacheKey::OwnerPointer : TcacheKey::Random;
    EXPECT_EQ(l.key_kind, key);
    EXPECT_EQ(l.heap_max, 64ull << 20);
    EXPECT_EQ(l.heap_max_hp_multiplier, minor >= 35 && minor <= 41 ? 4u : 0u);
    EXPECT_EQ(l.global_max_fast_width, minor <= 36 ? 8u : minor <= 42 ? 1u : 0u);
    EXPECT_EQ(l.mmap_header, minor >= 43 ? MmapHeader::Glibc243 : MmapHeader::Classic);
    EXPECT_STREQ(l.thread_arena_symbol, minor < 23 ? "__libc_tsd_MALLOC" : "thread_arena");
    if (minor >= 26) {
      EXPECT_STREQ(l.tcache_symbol, "tcache");
    } else {
      EXPECT_EQ(l.tcache_symbol, nullptr);
    }
    if (minor >= 34)
      EXPECT_STREQ(l.tcache_key_symbol, "tcache_key");
    else
      EXPECT_EQ(l.tcache_key_symbol, nullptr);
    if (minor >= 43)
      EXPECT_STREQ(l.tcache_dummy_symbol, "__tcache_dummy");
    else
      EXPECT_EQ(l.tcache_dummy_symbol, nullptr);
    EXPECT_EQ(l.tcache_fill_count, minor < 26 ? 0u : minor >= 43 ? 16u : 7u);
    TcacheInit init = minor < 26    ? TcacheInit::None
                      : minor < 42  ? TcacheInit::FirstMalloc
                      : minor == 42 ? TcacheInit::FirstSmall
                                    : TcacheInit::OnDemand;
    EXPECT_EQ(l.tcache_init, init);
    EXPECT_EQ(l.alignment, 16u);
    EXPECT_EQ(l.minsize, 32u);
    EXPECT_EQ(l.nsmallbins, 64u);
  }
}

TEST(Layouts, EffectiveHeapMax) {
  // glibc-2.35..2.41 malloc/arena.c heap_max_size(): hp_pagesize == 0 ? HEAP_MAX_SIZE : hp_pagesize * 4.
  EXPECT_EQ(effective_heap_max(*layout_for("2.36"), 0), 64ull << 20);
  EXPECT_EQ(effective_heap_max(*layout_for("2.36"), 2ull << 20), 8ull << 20);
  EXPECT_EQ(effective_heap_max(*layout_for("2.41"), 1ull << 30), 4ull << 30);
  // glibc-2.42+: always HEAP_MAX_SIZE; before 2.35 there is no hugetlb tunable.
  EXPECT_EQ(effective_heap_max(*layout_for("2.42"), 2ull << 20), 64ull << 20);
  EXPECT_EQ(effective_heap_max(*layout_for("2.43"), 2ull << 20), 64ull << 20);
  EXPECT_EQ(effective_heap_max(*layout_for("2.34"), 2ull << 20), 64ull << 20);
}

namespace {
// glibc-2.42 malloc/malloc.c: csize2tidx and large_csize2tidx, transcribed.
unsigned glibc_tidx(uint64_t nb) {
  uint64_t idx = (nb - 32) / 16;
  if (idx >= 64) {
    const unsigned max_small = 63 * 16 + 32;  // 2.43 tidx2csize(63); 2.42's tidx2usize(63) = 1032 has the same clz
    idx = 64 + __builtin_clz(max_small) - __builtin_clz(static_cast<unsigned>(nb));
  }
  return static_cast<unsigned>(idx);
}
}  // namespace

TEST(Layouts, TcacheBinSizes) {
  const Layout& old = *layout_for("2.36");
  EXPECT_EQ(tcache_bin_sizes(old, 0), std::make_pair(uint64_t{32}, uint64_t{32}));
  EXPECT_EQ(tcache_bin_sizes(old, 63), std::make_pair(uint64_t{1040}, uint64_t{1040}));
  EXPECT_EQ(tcache_bin_sizes(old, 64), std::make_pair(uint64_t{0}, uint64_t{0}));
  EXPECT_EQ(tcache_bin_sizes(*layout_for("2.17"), 0), std::make_pair(uint64_t{0}, uint64_t{0}));
  for (const char* v : {"2.42", "2.43"}) {
    const Layout& l = *layout_for(v);
    EXPECT_EQ(tcache_bin_sizes(l, 64), std::make_pair(uint64_t{1056}, uint64_t{2032}));
    EXPECT_EQ(tcache_bin_sizes(l, 75), std::make_pair(uint64_t{2} << 20, (uint64_t{4} << 20) - 16));
    EXPECT_EQ(tcache_bin_sizes(l, 76), std::make_pair(uint64_t{0}, uint64_t{0}));
    // Every chunk size up to 4 MiB lands in the bin whose range holds it.
    for (uint64_t nb = 32; nb < (4u << 20); nb += nb < 4096 ? 16 : 4096 - 16) {
      unsigned i = glibc_tidx(nb);
      ASSERT_LT(i, l.tcache_bins) << nb;
      auto [lo, hi] = tcache_bin_sizes(l, i);
      EXPECT_LE(lo, nb) << nb;
      EXPECT_GE(hi, nb) << nb;
    }
  }
}

TEST(Layouts, TcacheCountsOnImages) {
  // A bin holding 3 chunks, with mp_.tcache_count = 7, as each version stores it.
  struct Case {
    const char* v;
    uint64_t raw;
  } cases[] = {{"2.26", 3}, {"2.29", 3}, {"2.30", 3}, {"2.41", 3}, {"2.42", 4}, {"2.43", 4}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.v);
    const Layout& l = *layout_for(c.v);
    std::vector<uint8_t> img(l.tc_size, 0);
    unsigned bin = 5;
    if (l.tcache_counts == TcacheCounts::FreeSlots)  // tcache_init(): num_slots[i] = mp_.tcache_count
      for (unsigned i = 0; i < l.tcache_bins; ++i) img[l.tc_counts + i * 2] = 7;
    std::memcpy(img.data() + l.tc_counts + bin * l.tcache_count_width, &c.raw, l.tcache_count_width);
    uint64_t head = 0x5555555592a0;
    std::memcpy(img.data() + l.tc_entries + bin * 8, &head, 8);
    uint64_t raw = 0;
    std::memcpy(&raw, img.data() + l.tc_counts + bin * l.tcache_count_width, l.tcache_count_width);
    EXPECT_EQ(tcache_chunk_count(l, raw, 7), 3u);
    // Empty bins read as 0 chunks in every version.
    uint64_t other = 0;
    std::memcpy(&other, img.data() + l.tc_counts + (bin + 1) * l.tcache_count_width, l.tcache_count_width);
    EXPECT_EQ(tcache_chunk_count(l, other, 7), 0u);
    uint64_t e = 0;
    std::memcpy(&e, img.data() + l.tc_entries + bin * 8, 8);
    EXPECT_EQ(e, head);
  }
  // 2.42+: a num_slots above tcache_count is corruption; never underflow.
  EXPECT_EQ(tcache_chunk_count(*layout_for("2.42"), 9, 7), 0u);
}

TEST(Layouts, MmappedChunkHeaders) {
  // <= 2.42 sysmalloc: prev_size 0, size = ALIGN_UP(nb + SIZE_SZ, pagesize) | IS_MMAPPED.
  const Layout& old = *layout_for("2.36");
  MmapExtent a = mmap_extent(old, 0x7f0000000000, 0, 0x21000 | 2);
  EXPECT_EQ(a.base, 0x7f0000000000u);
  EXPECT_EQ(a.size, 0x21000u);
  EXPECT_FALSE(a.huge_page);
  // _int_memalign of an mmapped chunk: prev_size = lead size.
  MmapExtent b = mmap_extent(old, 0x7f0000000040, 0x40, (0x21000 - 0x40) | 2);
  EXPECT_EQ(b.base, 0x7f0000000000u);
  EXPECT_EQ(b.size, 0x21000u);
  // 2.43 mmap_set_chunk: prev_size = offset | MMAP_HP, size = mapping - offset - CHUNK_HDR_SZ.
  const Layout& n = *layout_for("2.43");
  MmapExtent c = mmap_extent(n, 0x7f0000000000, 0, (0x21000 - 16) | 2);
  EXPECT_EQ(c.base, 0x7f0000000000u);
  EXPECT_EQ(c.size, 0x21000u);
  EXPECT_FALSE(c.huge_page);
  MmapExtent d = mmap_extent(n, 0x7f0000000000, 1, ((2u << 20) - 16) | 2);
  EXPECT_EQ(d.size, 2u << 20);
  EXPECT_TRUE(d.huge_page);
  MmapExtent e = mmap_extent(n, 0x7f0000000040, 0x40, (0x21000 - 0x40 - 16) | 2);
  EXPECT_EQ(e.base, 0x7f0000000000u);
  EXPECT_EQ(e.size, 0x21000u);
}

TEST(Layouts, ArenaImage2_43HasNoFastbins) {
  // An empty 2.43 arena as glibc's malloc_init_state leaves it: every bin points at itself.
  const Layout& l = *layout_for("2.43");
  const uint64_t base = 0x7ffff7e19c80;
  std::vector<uint8_t> img(l.ms_size, 0);
  for (unsigned i = 1; i < l.nbins; ++i) {
    uint64_t self = base + l.ms_bins + (i - 1) * 16 - 16;
    std::memcpy(img.data() + l.ms_bins + (i - 1) * 16, &self, 8);
    std::memcpy(img.data() + l.ms_bins + (i - 1) * 16 + 8, &self, 8);
  }
  uint64_t top = base + l.ms_bins - 16;  // initial_top(av) = unsorted_chunks(av)
  std::memcpy(img.data() + l.ms_top, &top, 8);
  std::memcpy(img.data() + l.ms_next, &base, 8);
  // bin_at(av, 1) is a fake chunk 16 bytes before bins[0]: at offset 0x8 in 2.43 (flags/top
  // overlay its header), still inside the struct.
  EXPECT_EQ(l.ms_bins - 16, 0x8u);
  EXPECT_EQ(l.nfastbins, 0u);
  EXPECT_FALSE(present(l.ms_fastbins));
  uint64_t v;
  std::memcpy(&v, img.data() + l.ms_top, 8);
  EXPECT_EQ(v, top);
  std::memcpy(&v, img.data() + l.ms_next, 8);
  EXPECT_EQ(v, base);
  std::memcpy(&v, img.data() + l.ms_bins, 8);
  EXPECT_EQ(v, base + l.ms_bins - 16);
}
