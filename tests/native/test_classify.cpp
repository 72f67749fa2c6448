// Classifier tests on a synthetic heap: the stale contents of free chunks (issue 12 point 5).
#include <gtest/gtest.h>

#include <cstring>

#include "analysis/classify.h"
#include "ptmalloc/heap.h"
#include "synthetic_heap.h"
#include "target/symbols.h"
#include "target/target.h"

using namespace heapwalk;
using namespace heapwalk::testing;

namespace {

constexpr uint64_t kTcache = kHeap;

const analysis::ClassRow* row(const std::vector<analysis::ClassRow>& rows, const std::string& name) {
  for (const auto& r : rows)
    if (r.name == name) return &r;
  return nullptr;
}

void put32(SyntheticHeap& f, uint64_t addr, uint32_t v) { std::memcpy(f.heap.data() + (addr - kHeap), &v, 4); }

}  // namespace

// zlib freed an Inflater's state (7160 B) and window (32 KiB); glibc coalesced the two chunks
// into one unsorted chunk whose first 16 bytes are now list links. A tcache chunk keeps an NMT
// block's footer. Both are named by what they held.
TEST(Classify, NamesStaleZlibStreamsAndNmtBlocksInFreeChunks) {
  SyntheticHeap f;
  uint64_t tc = f.chunk(0x290);
  f.chunk(0x30);
  const uint64_t state_chunk = 7168, window_chunk = 32784;
  uint64_t uns = f.chunk(state_chunk + window_chunk);
  uint64_t after = f.chunk(0x30, 0);  // its previous chunk is free
  f.h(after, state_chunk + window_chunk);
  uint64_t nmt = f.chunk(0x40);  // tcache bin 2
  f.finish_top();
  // The stale inflate_state at uns + 16 (fields past the list links survive free()).
  const uint64_t s = uns + 16, win = uns + state_chunk + 16;
  put32(f, s + 56, 15);                          // wbits
  put32(f, s + 60, 32768);                       // wsize
  put32(f, s + 64, 32768);                       // whave
  put32(f, s + 68, 0);                           // wnext
  f.h(s + 72, win);                              // window
  f.h(s + 104, s + 1368);                        // lencode -> codes
  f.h(s + 112, s + 1368);                        // distcode
  f.h(s + 144, s + 1500);                        // next
  f.h(uns + state_chunk + 8, window_chunk | 1);  // the window chunk's stale header
  // unsorted bin <-> uns
  uint64_t slot = kArena + f.l.ms_bins, bin = slot - 16;
  f.put(f.arena, kArena, slot, uns);
  f.put(f.arena, kArena, slot + 8, uns);
  f.h(uns + 16, bin);
  f.h(uns + 24, bin);
  // tcache: counts[2] = 1 -> nmt; an NMT block of 30 user bytes: footer 0xE8 0x8E at mem + 46
  uint16_t one = 1;
  std::memcpy(f.heap.data() + (tc + 16 - kHeap) + f.l.tc_counts + 2 * 2, &one, 2);
  f.h(tc + 16 + f.l.tc_entries + 2 * 8, nmt + 16);
  f.h(nmt + 16, ((nmt + 16) >> 12) ^ 0);
  f.heap[nmt + 16 + 46 - kHeap] = 0xE8;
  f.heap[nmt + 16 + 47 - kHeap] = 0x8E;

  target::Thread th;
  th.lwp = 42;
  th.tcache = kTcache + 16;
  auto t = SyntheticHeap::make_target(f.source(), {th});
  ptmalloc::Heap h(*t, "2.36");
  target::ModuleIndex modules(*t);
  analysis::ClassifyOptions opt;
  opt.free_chunks = true;
  auto res = analysis::classify(h, *t, modules, opt);
  const auto* z = row(res.free, "zlib inflate stream (freed: state + window)");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->kind, "zlib");
  EXPECT_EQ(z->stats.count, 1u);  // streams
  EXPECT_EQ(z->stats.bytes, state_chunk + window_chunk);
  const auto* n = row(res.free, "NMT malloc block (freed)");
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->stats.count, 1u);
  EXPECT_EQ(n->stats.bytes, 0x40u);
  // Nothing in use is taken for a stale stream.
  EXPECT_EQ(row(res.used, "zlib inflate stream (freed: state + window)"), nullptr);
}

// Random-looking free bytes are not streams: wbits alone is not enough without the state's
// pointer into itself.
TEST(Classify, NoStaleStreamWithoutTheSelfPointer) {
  SyntheticHeap f;
  f.chunk(0x290);
  uint64_t uns = f.chunk(0x2000);
  uint64_t after = f.chunk(0x30, 0);
  f.h(after, 0x2000);
  f.finish_top();
  const uint64_t s = uns + 16;
  put32(f, s + 56, 15);
  put32(f, s + 60, 32768);
  f.h(s + 104, 0x1234560);
  f.h(s + 112, 0x1234560);
  f.h(s + 144, 0x7f0000009000);  // points elsewhere
  uint64_t slot = kArena + f.l.ms_bins, bin = slot - 16;
  f.put(f.arena, kArena, slot, uns);
  f.put(f.arena, kArena, slot + 8, uns);
  f.h(uns + 16, bin);
  f.h(uns + 24, bin);
  target::Thread th;
  th.lwp = 42;
  th.tcache = kTcache + 16;
  auto t = SyntheticHeap::make_target(f.source(), {th});
  ptmalloc::Heap h(*t, "2.36");
  target::ModuleIndex modules(*t);
  analysis::ClassifyOptions opt;
  opt.free_chunks = true;
  auto res = analysis::classify(h, *t, modules, opt);
  EXPECT_EQ(row(res.free, "zlib inflate stream (freed: state + window)"), nullptr);
}
