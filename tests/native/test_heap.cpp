// Walker tests on synthetic heaps laid out in byte buffers with the 2.35 profile.
#include <gtest/gtest.h>

#include <cstring>

#include "memory/memory.h"
#include "ptmalloc/heap.h"
#include "synthetic_heap.h"
#include "target/target.h"

using namespace heapwalk;

namespace {

using namespace heapwalk::testing;
constexpr uint64_t kTcache = kHeap;  // the tcache_perthread_struct chunk comes first

struct Fake : SyntheticHeap {
  std::unique_ptr<target::Target> target() {
    target::Thread th;
    th.lwp = 42;
    th.tcache = kTcache + 16;
    return make_target(source(), {th});
  }
  uint64_t protect(uint64_t field, uint64_t ptr) { return (field >> 12) ^ ptr; }
};

bool has_diag(ptmalloc::Heap& h, const std::string& kind, uint64_t addr) {
  for (const auto& d : h.diagnostics().items())
    if (d.kind == kind && d.address && *d.address == addr) return true;
  return false;
}

}  // namespace

TEST(Heap, CountsEveryFreeListKind) {
  Fake f;
  uint64_t tc = f.chunk(0x290);
  uint64_t used1 = f.chunk(0x30);
  uint64_t tchunk = f.chunk(0x40);  // in tcache bin 2
  uint64_t fast = f.chunk(0x20);    // fastbin 0
  uint64_t used2 = f.chunk(0x20);
  uint64_t uns = f.chunk(0x200);      // unsorted
  uint64_t used3 = f.chunk(0x50, 0);  // prev (unsorted) free: PREV_INUSE clear
  f.h(used3, 0x200);                  // prev_size
  f.finish_top();
  (void)used1;
  (void)used2;
  // tcache: counts[2] = 1, entries[2] = tchunk mem, next = protect(NULL)
  uint16_t one = 1;
  std::memcpy(f.heap.data() + (tc + 16 - kHeap) + f.l.tc_counts + 2 * 2, &one, 2);
  f.h(tc + 16 + f.l.tc_entries + 2 * 8, tchunk + 16);
  f.h(tchunk + 16, f.protect(tchunk + 16, 0));
  // fastbin 0 -> fast -> NULL
  f.put(f.arena, kArena, kArena + f.l.ms_fastbins, fast);
  f.h(fast + 16, f.protect(fast + 16, 0));
  // unsorted bin (bin 1) <-> uns
  uint64_t slot = kArena + f.l.ms_bins, bin = slot - 16;
  f.put(f.arena, kArena, slot, uns);
  f.put(f.arena, kArena, slot + 8, uns);
  f.h(uns + 16, bin);
  f.h(uns + 24, bin);

  auto t = f.target();
  ptmalloc::Heap h(*t, "2.36");
  h.summarize();
  ASSERT_EQ(h.arenas().size(), 1u);
  const auto& a = h.arenas()[0];
  EXPECT_EQ(a.fast.count, 1u);
  EXPECT_EQ(a.fast.bytes, 0x20u);
  EXPECT_EQ(a.binned.count, 1u);
  EXPECT_EQ(a.binned.bytes, 0x200u);
  EXPECT_EQ(a.tcache.count, 1u);
  EXPECT_EQ(a.tcache.bytes, 0x40u);
  EXPECT_EQ(a.in_use.count, 4u);  // tcache struct, used1, used2, used3
  EXPECT_EQ(a.in_use.bytes, 0x290u + 0x30 + 0x20 + 0x50);
  EXPECT_EQ(a.top_size, kHeap + kHeapSize - f.cursor);
  EXPECT_TRUE(h.diagnostics().items().empty()) << h.diagnostics().items()[0].detail;
  // Lists keep counts; their chunks are read again on request.
  ASSERT_EQ(a.fastbins.size(), 1u);
  ASSERT_EQ(a.bins.size(), 1u);
  EXPECT_EQ(a.fastbins[0].count, 1u);
  EXPECT_TRUE(a.fastbins[0].chunks.empty());
  auto fc = h.list_chunks(a, a.fastbins[0]);
  ASSERT_EQ(fc.size(), 1u);
  EXPECT_EQ(fc[0].address, fast);
  auto bc = h.list_chunks(a, a.bins[0]);
  ASSERT_EQ(bc.size(), 1u);
  EXPECT_EQ(bc[0].address, uns);
  EXPECT_EQ(bc[0].size, 0x200u);
}

TEST(Heap, SmashedSizeIsReportedAndWalkResyncs) {
  Fake f;
  f.chunk(0x290);
  uint64_t bad = f.chunk(0x30);
  uint64_t after = f.chunk(0x40);
  f.chunk(0x40);
  f.finish_top();
  f.h(bad + 8, 0x4141414141414141ull);
  auto t = f.target();
  ptmalloc::Heap h(*t, "2.36");
  h.summarize();
  EXPECT_TRUE(has_diag(h, "bad_size", bad));
  // The walk resumes at the next plausible chunk and still counts it.
  bool seen_after = false;
  h.walk(nullptr, [&](uint64_t p, uint64_t, ptmalloc::ChunkState, const ptmalloc::Arena*, size_t) {
    seen_after |= p == after;
    return true;
  });
  EXPECT_TRUE(seen_after);
}

TEST(Heap, FastbinCycleIsReportedNotLooped) {
  Fake f;
  f.chunk(0x290);
  uint64_t a = f.chunk(0x20), b = f.chunk(0x20);
  f.finish_top();
  f.put(f.arena, kArena, kArena + f.l.ms_fastbins, a);
  f.h(a + 16, f.protect(a + 16, b));
  f.h(b + 16, f.protect(b + 16, a));
  auto t = f.target();
  ptmalloc::Heap h(*t, "2.36");
  h.summarize();
  bool cycle = false;
  for (const auto& d : h.diagnostics().items())
    cycle |= d.kind == "cycle" && d.address && (*d.address == a || *d.address == b);
  EXPECT_TRUE(cycle);
  EXPECT_EQ(h.arenas()[0].fast.count, 2u);
  // The list is followed again for its chunks: each once, in list order.
  ASSERT_EQ(h.arenas()[0].fastbins.size(), 1u);
  auto chunks = h.list_chunks(h.arenas()[0], h.arenas()[0].fastbins[0]);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].address, a);
  EXPECT_EQ(chunks[1].address, b);
  EXPECT_EQ(chunks[1].size, 0x20u);
  // In pieces (a ListCursor, as `bins --json` follows a list a batch at a time): the same chunks.
  ptmalloc::ListCursor at;
  auto first = h.list_chunks(h.arenas()[0], h.arenas()[0].fastbins[0], at, 1);
  auto second = h.list_chunks(h.arenas()[0], h.arenas()[0].fastbins[0], at, 1);
  auto rest = h.list_chunks(h.arenas()[0], h.arenas()[0].fastbins[0], at, 1);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(first[0].address, a);
  EXPECT_EQ(second[0].address, b);
  EXPECT_TRUE(rest.empty());
  EXPECT_TRUE(at.done);
}

TEST(Heap, BrokenBackLinkIsReported) {
  Fake f;
  f.chunk(0x290);
  uint64_t u = f.chunk(0x200);
  uint64_t nxt = f.chunk(0x30, 0);
  f.h(nxt, 0x200);
  f.finish_top();
  uint64_t slot = kArena + f.l.ms_bins, bin = slot - 16;
  f.put(f.arena, kArena, slot, u);
  f.put(f.arena, kArena, slot + 8, u);
  f.h(u + 16, bin);
  f.h(u + 24, 0xdeadbeef0);
  auto t = f.target();
  ptmalloc::Heap h(*t, "2.36");
  h.summarize();
  EXPECT_TRUE(has_diag(h, "bad_fd_bk", u));
}

TEST(Heap, MissingMainArenaIsOneClearError) {
  auto src = std::make_unique<memory::BufferSource>();
  src->add(0x1000, std::vector<uint8_t>(16));
  auto t = target::Target::from_source(std::move(src), {}, {});
  t->overrides().main_arena = 0x900000;
  t->overrides().mp = 0x1000;
  try {
    ptmalloc::Heap h(*t, "2.36");
    FAIL();
  } catch (const Fault& e) {
    EXPECT_NE(std::string(e.what()).find("0x"), std::string::npos);
  }
}

TEST(Layout, UnknownVersionHasNoProfile) {
  EXPECT_EQ(ptmalloc::layout_for("2.16"), nullptr);
  ASSERT_NE(ptmalloc::layout_for("2.36"), nullptr);
  EXPECT_EQ(ptmalloc::layout_for("2.36")->ms_size, 0x898u);
}

// Issue 12: a page that looks like an mmapped chunk's header but whose size runs on past its
// anonymous mapping (into a file mapping here) is not a chunk; a real one still is.
TEST(Heap, MmappedScanKeepsEachChunkInsideAnonymousMemory) {
  Fake f;
  f.chunk(0x290);
  f.finish_top();
  constexpr uint64_t kReal = 0x7e0000000000, kFake = 0x7e0000100000;
  std::vector<uint8_t> real(0x2000), fake(0x2000), file(0x3000);
  uint64_t hdr = 0x2000 | 2;  // prev_size 0, size 8 KiB | IS_MMAPPED
  std::memcpy(real.data() + 8, &hdr, 8);
  hdr = 0x4000 | 2;  // claims 16 KiB: 8 of them are the file mapping above it
  std::memcpy(fake.data() + 8, &hdr, 8);
  SyntheticHeap::put(f.mp, kMp, kMp + f.l.mp_n_mmaps, 1);
  SyntheticHeap::put(f.mp, kMp, kMp + f.l.mp_mmapped_mem, 0x2000);
  auto src = f.source();
  src->add(kReal, real);
  src->add(kFake, fake);
  src->add(kFake + 0x2000, file, "/usr/lib/libfake.so");
  target::Thread th;
  th.lwp = 42;
  th.tcache = kTcache + 16;
  auto t = SyntheticHeap::make_target(std::move(src), {th});
  ptmalloc::Heap h(*t, "2.36");
  ASSERT_EQ(h.mmapped().chunks.size(), 1u);
  EXPECT_EQ(h.mmapped().chunks[0].address, kReal);
  EXPECT_EQ(h.mmapped().found.bytes, 0x2000u);
  for (const auto& d : h.diagnostics().items()) EXPECT_NE(d.kind, "mmapped_mismatch") << d.detail;
}

// Issue 12: the scan finds three plausible chunks where mp_ counts two; only leaving out the
// 12 KiB one makes count and bytes agree: it is a suspect (no total counts it), the others are
// chunks, and the mismatch is a note, not a diagnostic that fails the command.
TEST(Heap, MmappedExtraFindIsASuspectWhenItAloneExplainsTheCounters) {
  Fake f;
  f.chunk(0x290);
  f.finish_top();
  constexpr uint64_t kA = 0x7e0000000000, kB = 0x7e0000100000, kC = 0x7e0000200000;
  std::vector<uint8_t> a(0x2000), b(0x3000), c(0x4000);
  uint64_t hdr = 0x2000 | 2;
  std::memcpy(a.data() + 8, &hdr, 8);
  hdr = 0x3000 | 2;  // the page that only looks like a chunk
  std::memcpy(b.data() + 8, &hdr, 8);
  hdr = 0x4000 | 2;
  std::memcpy(c.data() + 8, &hdr, 8);
  SyntheticHeap::put(f.mp, kMp, kMp + f.l.mp_n_mmaps, 2);
  SyntheticHeap::put(f.mp, kMp, kMp + f.l.mp_mmapped_mem, 0x6000);
  auto src = f.source();
  src->add(kA, a);
  src->add(kB, b);
  src->add(kC, c);
  target::Thread th;
  th.lwp = 42;
  th.tcache = kTcache + 16;
  auto t = SyntheticHeap::make_target(std::move(src), {th});
  ptmalloc::Heap h(*t, "2.36");
  ASSERT_EQ(h.mmapped().chunks.size(), 2u);
  EXPECT_EQ(h.mmapped().chunks[0].address, kA);
  EXPECT_EQ(h.mmapped().chunks[1].address, kC);
  ASSERT_EQ(h.mmapped().suspects.size(), 1u);
  EXPECT_EQ(h.mmapped().suspects[0].address, kB);
  EXPECT_EQ(h.mmapped().found.count, 2u);
  EXPECT_EQ(h.mmapped().found.bytes, 0x6000u);
  bool noted = false;
  for (const auto& d : h.diagnostics().items()) {
    EXPECT_NE(d.kind, "mmapped_mismatch") << d.detail;
    noted |= d.kind == "note" && d.detail.find("suspect") != std::string::npos;
  }
  EXPECT_TRUE(noted);
}

// Two ways to explain the counters: nothing is guessed, the mismatch stays reported.
TEST(Heap, MmappedExtraFindsStayWhenTheSuspectIsAmbiguous) {
  Fake f;
  f.chunk(0x290);
  f.finish_top();
  constexpr uint64_t kA = 0x7e0000000000, kB = 0x7e0000100000;
  std::vector<uint8_t> a(0x2000), b(0x2000);
  uint64_t hdr = 0x2000 | 2;
  std::memcpy(a.data() + 8, &hdr, 8);
  std::memcpy(b.data() + 8, &hdr, 8);
  SyntheticHeap::put(f.mp, kMp, kMp + f.l.mp_n_mmaps, 1);
  SyntheticHeap::put(f.mp, kMp, kMp + f.l.mp_mmapped_mem, 0x2000);
  auto src = f.source();
  src->add(kA, a);
  src->add(kB, b);
  target::Thread th;
  th.lwp = 42;
  th.tcache = kTcache + 16;
  auto t = SyntheticHeap::make_target(std::move(src), {th});
  ptmalloc::Heap h(*t, "2.36");
  EXPECT_EQ(h.mmapped().chunks.size(), 2u);
  EXPECT_TRUE(h.mmapped().suspects.empty());
  bool mismatch = false;
  for (const auto& d : h.diagnostics().items()) mismatch |= d.kind == "mmapped_mismatch";
  EXPECT_TRUE(mismatch);
}

// Issue 12 point 8: glibc hands _int_malloc's whole chunk over when the remainder would be below
// MINSIZE, so a thread's tcache_perthread_struct (request2size = 0x290 on 2.30+) can sit in a
// 0x2a0 chunk. That is glibc's own allocation, not corruption: the tcache must be read, with no
// bad_tcache; a 0x2b0 chunk (a 32-byte remainder would have been split off) still is one.
TEST(Heap, TcacheStructInAChunkOneAlignmentStepLarger) {
  for (uint64_t tc_size : {uint64_t{0x2a0}, uint64_t{0x2b0}}) {
    Fake f;
    uint64_t tc = f.chunk(tc_size);
    uint64_t tchunk = f.chunk(0x40);  // in tcache bin 2
    f.chunk(0x30);
    f.finish_top();
    uint16_t one = 1;
    std::memcpy(f.heap.data() + (tc + 16 - kHeap) + f.l.tc_counts + 2 * 2, &one, 2);
    f.h(tc + 16 + f.l.tc_entries + 2 * 8, tchunk + 16);
    f.h(tchunk + 16, f.protect(tchunk + 16, 0));
    auto t = f.target();
    ptmalloc::Heap h(*t, "2.36");
    h.summarize();
    ASSERT_EQ(h.arenas().size(), 1u);
    const auto& a = h.arenas()[0];
    bool bad = has_diag(h, "bad_tcache", kTcache + 16);
    if (tc_size == 0x2a0) {
      EXPECT_FALSE(bad) << h.diagnostics().items()[0].detail;
      EXPECT_TRUE(h.diagnostics().items().empty()) << h.diagnostics().items()[0].detail;
      EXPECT_EQ(a.tcache.count, 1u);
      EXPECT_EQ(a.tcache.bytes, 0x40u);
      EXPECT_EQ(a.in_use.count, 2u);  // the tcache struct and the 0x30 chunk
      EXPECT_EQ(a.in_use.bytes, 0x2a0u + 0x30);
    } else {
      EXPECT_TRUE(bad);
      EXPECT_EQ(a.tcache.count, 0u);  // that thread's tcache is ignored: its chunk counts as in use
    }
  }
}

// The accepted range per layout, from glibc's malloc.c (see tcache_struct_chunk_sizes): request2size
// of sizeof(tcache_perthread_struct) up to that + MINSIZE - 16; 2.43 pads the request once more.
TEST(Layout, TcacheStructChunkSizes) {
  struct Case {
    const char* version;
    uint64_t lo, hi;
  };
  for (const Case& c : {Case{"2.23", 0, 0}, Case{"2.26", 0x250, 0x260}, Case{"2.29", 0x250, 0x260},
                        Case{"2.30", 0x290, 0x2a0}, Case{"2.36", 0x290, 0x2a0}, Case{"2.41", 0x290, 0x2a0},
                        Case{"2.42", 0x300, 0x310}, Case{"2.43", 0x300, 0x320}}) {
    const auto* l = ptmalloc::layout_for(c.version);
    ASSERT_NE(l, nullptr) << c.version;
    auto [lo, hi] = ptmalloc::tcache_struct_chunk_sizes(*l);
    EXPECT_EQ(lo, c.lo) << c.version;
    EXPECT_EQ(hi, c.hi) << c.version;
    if (!c.lo) continue;
    EXPECT_TRUE(ptmalloc::tcache_struct_chunk_fits(*l, c.lo)) << c.version;
    EXPECT_TRUE(ptmalloc::tcache_struct_chunk_fits(*l, c.hi)) << c.version;
    EXPECT_FALSE(ptmalloc::tcache_struct_chunk_fits(*l, c.lo - 16)) << c.version;
    EXPECT_FALSE(ptmalloc::tcache_struct_chunk_fits(*l, c.hi + 16)) << c.version;
    EXPECT_FALSE(ptmalloc::tcache_struct_chunk_fits(*l, c.lo + 8)) << c.version;
  }
}
