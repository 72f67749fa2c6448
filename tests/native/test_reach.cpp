// The leak pass on a synthetic heap (2.36 layout) with synthetic roots.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "analysis/reach.h"
#include "memory/memory.h"
#include "ptmalloc/heap.h"
#include "synthetic_heap.h"
#include "target/target.h"

using namespace heapwalk;

namespace {

using namespace heapwalk::testing;
constexpr uint64_t kData = 0x555555554000;   // module data (file-backed, rw)
constexpr uint64_t kBss = kData + 0x1000;    // anonymous, right after the module: .bss
constexpr uint64_t kAnon = 0x7f1000000000;   // other anonymous memory: a root only on request
constexpr uint64_t kStack = 0x7ffd00000000;  // the thread's stack mapping
constexpr uint64_t kRsp = kStack + 0x1000;

struct World : SyntheticHeap {
  std::vector<uint8_t> data = std::vector<uint8_t>(0x1000), bss = std::vector<uint8_t>(0x1000);
  std::vector<uint8_t> anon = std::vector<uint8_t>(0x1000), stack = std::vector<uint8_t>(0x2000);
  target::Thread th;

  World() {
    th.lwp = 7;
    th.rsp = kRsp;
    th.has_regs = true;
  }
  std::unique_ptr<target::Target> target() {
    auto src = source();
    src->add(kData, data, "/fake/prog");
    src->add(kBss, bss);
    src->add(kAnon, anon);
    src->add(kStack, stack);
    return make_target(std::move(src), {th});
  }
};

std::set<uint64_t> leaked(const analysis::ReachResult& r) {
  std::set<uint64_t> s;
  for (const auto& c : r.chunks) s.insert(c.address);
  return s;
}
std::set<uint64_t> unreferenced(const analysis::ReachResult& r) {
  std::set<uint64_t> s;
  for (const auto& c : r.chunks)
    if (c.unreferenced) s.insert(c.address);
  return s;
}

}  // namespace

TEST(Reach, RootsEdgesAndTheTwoSets) {
  World w;
  uint64_t tc = w.chunk(0x290);     // tcache_perthread_struct: from module data
  uint64_t global = w.chunk(0x30);  // from module data
  uint64_t child = w.chunk(0x40);   // from inside `global`
  uint64_t grand = w.chunk(0x20);   // from the last word of `child` (the next chunk's prev_size)
  uint64_t inner = w.chunk(0x50);   // an interior pointer in .bss
  uint64_t reg = w.chunk(0x30);     // a register
  uint64_t on_stack = w.chunk(0x30);
  uint64_t red = w.chunk(0x30);                         // in the red zone below rsp
  uint64_t dead = w.chunk(0x30);                        // below the red zone: leaked
  uint64_t header = w.chunk(0x30);                      // only its header is pointed at: leaked, unreferenced
  uint64_t freed = w.chunk(0x30);                       // free (fastbin): pointed at from data, still not a node
  uint64_t cyc1 = w.chunk(0x30), cyc2 = w.chunk(0x30);  // a leaked cycle: both referenced
  uint64_t head = w.chunk(0x40);                        // leaked, points into cyc1; nobody points at it
  uint64_t anon = w.chunk(0x60);                        // only from anonymous memory
  uint64_t self = w.chunk(0x30);                        // points at itself only: unreferenced
  uint64_t fenced = w.chunk(0x30);                      // after `self`: its prev_size word is `self`'s last word
  uint64_t lastbyte = w.chunk(0x30);  // only its last usable byte (in the next prev_size) is pointed at
  w.chunk(0x20);                      // (reachable from a register below)
  w.finish_top();

  w.put(w.data, kData, kData + 0x10, tc + 16);
  w.put(w.data, kData, kData + 0x18, global + 16);
  // A chunk's own address (what malloc's bins and top hold) points into no chunk, although
  // its prev_size word is the last usable word of `dead` before it; nor does its size field.
  w.put(w.data, kData, kData + 0x20, header);
  w.put(w.data, kData, kData + 0x38, header + 8);
  w.put(w.data, kData, kData + 0x28, freed + 16);  // free chunks are no nodes
  w.put(w.data, kData, kData + 0x30, 0x4141414141414141ull);
  w.h(global + 16 + 8, child + 16 + 0x10);              // interior pointer from a chunk
  w.h(child + 0x40, grand + 16);                        // child's last usable word (next prev_size)
  w.put(w.bss, kBss, kBss + 0x100, inner + 16 + 0x33);  // unaligned interior pointer
  w.th.regs[3] = reg + 16 + 8;                          // rbx
  w.th.regs[4] = lastbyte + 0x30 + 7;                   // rdx: byte 39 of lastbyte's 40 usable bytes
  w.th.regs[5] = lastbyte + 0x30 + 16;                  // rsi: the next chunk's mem
  w.put(w.stack, kStack, kRsp + 0x40, on_stack + 16);
  w.put(w.stack, kStack, kRsp - 64, red + 16);
  w.put(w.stack, kStack, kRsp - 512, dead + 16);
  w.h(cyc1 + 16, cyc2 + 16);
  w.h(cyc2 + 16, cyc1 + 16);
  w.h(head + 16, cyc1 + 24);
  w.put(w.anon, kAnon, kAnon + 8, anon + 16);
  w.h(self + 16, self + 16);
  w.h(fenced + 16, 0x12345);
  // freed is a fastbin chunk, and a pointer to `dead` inside it must not count.
  w.put(w.arena, kArena, kArena + w.l.ms_fastbins + 8, freed);  // fastbin index 1 (0x30)
  w.h(freed + 16, (freed + 16) >> 12);                          // safe-linked NULL
  w.h(freed + 24, dead + 16);

  auto t = w.target();
  ptmalloc::Heap h(*t, "2.36");
  h.summarize();
  ASSERT_EQ(h.arenas()[0].fast.count, 1u);

  analysis::ReachOptions opt;
  auto r = analysis::find_leaks(h, *t, opt);
  EXPECT_EQ(leaked(r), (std::set<uint64_t>{dead, header, cyc1, cyc2, head, anon, self, fenced}));
  EXPECT_EQ(unreferenced(r), (std::set<uint64_t>{dead, header, head, anon, self, fenced}));
  EXPECT_EQ(r.leaked.count, 8u);
  EXPECT_EQ(r.leaked.bytes, 0x30u * 6 + 0x40 + 0x60);
  EXPECT_EQ(r.unreferenced.count, 6u);
  EXPECT_EQ(r.nodes.count, 18u);  // every chunk but the fastbin one
  EXPECT_EQ(r.reachable.count, 10u);
  EXPECT_FALSE(r.truncated);
  ASSERT_FALSE(r.leaked_sizes.empty());
  EXPECT_EQ(r.leaked_sizes[0].size, 0x30u);  // the most bytes
  EXPECT_EQ(r.leaked_sizes[0].count.count, 6u);
  ASSERT_EQ(r.leaked_by_arena.size(), 1u);
  EXPECT_EQ(r.leaked_by_arena.begin()->first, kArena);

  // Anonymous memory as a root.
  opt.anon_roots = true;
  auto r2 = analysis::find_leaks(h, *t, opt);
  EXPECT_EQ(leaked(r2).count(anon), 0u);
  EXPECT_EQ(r2.leaked.count, 7u);

  // Largest first, limited.
  analysis::ReachOptions big;
  big.largest = true;
  big.limit = 2;
  auto r3 = analysis::find_leaks(h, *t, big);
  ASSERT_EQ(r3.chunks.size(), 2u);
  EXPECT_EQ(r3.chunks[0].address, anon);
  EXPECT_EQ(r3.chunks[1].address, head);
  EXPECT_TRUE(r3.truncated);
  EXPECT_EQ(r3.leaked.count, 8u);
}

TEST(Reach, NoRegistersIsANoteAndChunksStayLeaked) {
  World w;
  w.th.has_regs = false;
  w.th.rsp = 0;
  uint64_t tc = w.chunk(0x290);
  uint64_t a = w.chunk(0x30);
  w.finish_top();
  w.th.regs[0] = a + 16;  // ignored: has_regs false
  auto t = w.target();
  ptmalloc::Heap h(*t, "2.36");
  auto r = analysis::find_leaks(h, *t, {});
  EXPECT_EQ(leaked(r), (std::set<uint64_t>{tc, a}));
  bool note = false;
  for (const auto& d : r.diagnostics.items())
    note |= d.kind == "note" && d.detail.find("registers") != std::string::npos;
  EXPECT_TRUE(note);
}

TEST(Reach, ManyChunksTwoLevelLookupAndChains) {
  World w;
  w.put(w.data, kData, kData, w.chunk(0x290) + 16);  // the tcache struct: from module data
  std::vector<uint64_t> c;
  for (int i = 0; i < 600; ++i) c.push_back(w.chunk(0x20 + 0x10 * (i % 5)));
  w.finish_top();
  // Every 7th chunk from module data (interior pointers at varying offsets); each of those
  // points at its successor, so chunks 7k and 7k+1 are reachable, the rest leaked.
  std::set<uint64_t> expect;
  for (size_t i = 0; i < c.size(); ++i) {
    if (i % 7 == 0) {
      w.put(w.data, kData, kData + 8 + 8 * (i / 7), c[i] + 16 + (i % 2) * 8);
      if (i + 1 < c.size()) w.h(c[i] + 16, c[i + 1] + 16);
    } else if (i % 7 != 1) {
      expect.insert(c[i]);
    }
  }
  auto t = w.target();
  ptmalloc::Heap h(*t, "2.36");
  auto r = analysis::find_leaks(h, *t, {});
  auto got = leaked(r);
  for (size_t i = 0; i < c.size(); ++i)
    EXPECT_EQ(got.count(c[i]), expect.count(c[i])) << "chunk " << i << " size " << 0x20 + 0x10 * (i % 5);
  EXPECT_EQ(r.unreferenced.count, expect.size());
  EXPECT_EQ(r.nodes.count, c.size() + 1);
}
