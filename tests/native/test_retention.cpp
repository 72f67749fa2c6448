// Retention: mtrim/systrim arithmetic, malloc_consolidate simulation, and the whole analysis on
// a synthetic main arena (2.36 profile).
#include <gtest/gtest.h>

#include <cstring>

#include "analysis/retention.h"
#include "memory/memory.h"
#include "ptmalloc/heap.h"
#include "synthetic_heap.h"
#include "target/target.h"

using namespace heapwalk;
using analysis::SimChunk;
using ptmalloc::ChunkState;

TEST(Retention, MtrimKeepsTheMallocChunkHeaderAndWholePagesOnly) {
  // A chunk whose first page boundary is exactly 48 bytes in: one page.
  auto r = analysis::mtrim_range(0x10fd0, 0x1030);
  EXPECT_EQ(r.start, 0x11000u);
  EXPECT_EQ(r.length, 0x1000u);
  // One byte (16) less: size <= psm1 + sizeof (struct malloc_chunk) -> nothing.
  EXPECT_EQ(analysis::mtrim_range(0x10fd0, 0x1020).length, 0u);
  // Page-aligned chunk: the first page keeps the header, so only the later pages go.
  r = analysis::mtrim_range(0x20000, 0x3000);
  EXPECT_EQ(r.start, 0x21000u);
  EXPECT_EQ(r.length, 0x2000u);
  // 48 bytes before a boundary: that boundary is usable.
  r = analysis::mtrim_range(0x20fd0, 0x3030);
  EXPECT_EQ(r.start, 0x21000u);
  EXPECT_EQ(r.length, 0x3000u);
  // 47..32 bytes before a boundary: it is not (fd_nextsize/bk_nextsize would be cut).
  r = analysis::mtrim_range(0x20fe0, 0x3020);
  EXPECT_EQ(r.start, 0x22000u);
  EXPECT_EQ(r.length, 0x2000u);
}

TEST(Retention, SystrimReleasesWholePagesAboveMinsize) {
  EXPECT_EQ(analysis::systrim_extra(0x21000, 0), 0x20000u);  // top_area = 0x21000 - 33
  EXPECT_EQ(analysis::systrim_extra(0x1020, 0), 0u);         // < one page above MINSIZE + 1
  EXPECT_EQ(analysis::systrim_extra(0x1021, 0), 0x1000u);
  EXPECT_EQ(analysis::systrim_extra(0x21000, 0x10000), 0x10000u);  // pad kept
  EXPECT_EQ(analysis::systrim_extra(0x10, 0), 0u);
}

TEST(Retention, ConsolidationMergesAlongFastbinChunksAndIntoTop) {
  std::vector<SimChunk> c = {
      {0x1000, 0x30, ChunkState::Used},    {0x1030, 0x20, ChunkState::Fastbin}, {0x1050, 0x2000, ChunkState::Unsorted},
      {0x3050, 0x20, ChunkState::Fastbin}, {0x3070, 0x20, ChunkState::Fastbin}, {0x3090, 0x30, ChunkState::Used},
      {0x30c0, 0x1000, ChunkState::Large}, {0x40c0, 0x20, ChunkState::Tcache},  {0x40e0, 0x20, ChunkState::Fastbin},
      {0x4100, 0x1000, ChunkState::Top},
  };
  auto r = analysis::consolidate(c, 0x4100);
  ASSERT_EQ(r.chunks.size(), 2u);
  EXPECT_EQ(r.chunks[0].address, 0x1030u);  // fast + unsorted + fast + fast
  EXPECT_EQ(r.chunks[0].size, 0x2060u);
  EXPECT_EQ(r.chunks[1].address, 0x30c0u);  // the large chunk alone (tcache chunk after it)
  EXPECT_EQ(r.chunks[1].size, 0x1000u);
  EXPECT_EQ(r.into_top, 0x20u);  // the last fastbin chunk joins top
  // Two binned chunks side by side (no fastbin chunk between) stay apart.
  std::vector<SimChunk> d = {
      {0x1000, 0x100, ChunkState::Small}, {0x1100, 0x2000, ChunkState::Large}, {0x3100, 0x30, ChunkState::Used}};
  EXPECT_EQ(analysis::consolidate(d, std::nullopt).chunks.size(), 2u);
}

namespace {

using namespace heapwalk::testing;

struct Fake : SyntheticHeap {
  std::unique_ptr<target::Target> target() {
    target::Thread th;
    th.lwp = 42;
    th.tcache = 0;
    th.arena = kArena;
    return make_target(source(), {th});
  }
};

}  // namespace

TEST(Retention, MainArenaTrimPrediction) {
  Fake f;
  f.chunk(0x290);
  f.chunk(0x30);
  uint64_t big = f.chunk(0x3000);
  uint64_t used = f.chunk(0x30, 0);  // prev (big) free
  f.h(used, 0x3000);
  uint64_t fast = f.chunk(0x20);
  f.finish_top();
  // big in the unsorted bin
  uint64_t slot = kArena + f.l.ms_bins;
  f.put(f.arena, kArena, slot, big);
  f.put(f.arena, kArena, slot + 8, big);
  f.h(big + 16, slot - 16);
  f.h(big + 24, slot - 16);
  // fast in fastbin 0 (safe-linked NULL)
  f.put(f.arena, kArena, kArena + f.l.ms_fastbins, fast);
  f.h(fast + 16, (fast + 16) >> 12);
  auto t = f.target();
  ptmalloc::Heap h(*t);
  auto r = analysis::compute_retention(h, *t);
  ASSERT_EQ(r.arenas.size(), 1u);
  const auto& a = r.arenas[0];
  EXPECT_TRUE(a.contiguous);
  EXPECT_EQ(a.f.binned, 0x3000u);
  EXPECT_EQ(a.f.fast, 0x20u);
  // big: the first page boundary at or after big + 48 is kHeap + 0x1000.
  uint64_t pal = (big + 48 + 0xfff) & ~uint64_t{0xfff};
  EXPECT_EQ(a.f.trim_chunks, ((big + 0x3000 - pal) & ~uint64_t{0xfff}));
  EXPECT_EQ(a.f.into_top, 0x20u);
  uint64_t top = kHeap + kHeapSize - (fast + 0x20) + 0x20;
  EXPECT_EQ(a.f.trim_top, ((top - 33) & ~uint64_t{0xfff}));
  EXPECT_EQ(a.f.free(), a.f.tcache + a.f.trimmable() + a.f.fragments + a.f.top_kept);
  EXPECT_EQ(r.total.trimmable(), a.f.trimmable());
  EXPECT_EQ(r.pressure.arenas, 1u);
  EXPECT_EQ(r.pressure.threads, 1u);
}
