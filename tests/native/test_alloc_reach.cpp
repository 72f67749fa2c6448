// The leak pass over an allocator without chunk headers (alloc::Model with plain slots, as
// jemalloc and tcmalloc give them): nodes, edges at slot starts, the allocator's metadata and
// own allocations, a FILE's end pointer.
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "alloc/model.h"
#include "analysis/reach.h"
#include "memory/memory.h"
#include "target/target.h"

using namespace heapwalk;

namespace {

constexpr uint64_t kData = 0x555555554000;   // module data (file-backed, rw): a root
constexpr uint64_t kSlab = 0x7f2000000000;   // the allocator's slots
constexpr uint64_t kMeta = kData + 0x1000;   // metadata holding the pool, right after the module
constexpr uint64_t kStack = 0x7ffd00000000;  // the thread's stack

/// A model of plain slots: the allocations given, one pool whose structure is at kMeta.
class FakeModel : public alloc::Model {
 public:
  std::vector<alloc::Allocation> all;
  std::vector<uint64_t> internal;
  FakeModel() {
    alloc::Pool p;
    p.address = kMeta + 0x100;
    p.name = "arena 0";
    pools_.push_back(p);
  }
  alloc::Kind kind() const override { return alloc::Kind::Jemalloc; }
  std::string version() const override { return "fake"; }
  std::string layout_source() const override { return "test"; }
  const std::map<std::string, uint64_t>& stats() const override { return stats_; }
  const std::vector<alloc::Pool>& pools() const override { return pools_; }
  const std::vector<alloc::ThreadCache>& thread_caches() const override { return caches_; }
  void walk(const alloc::AllocationVisitor& visit) override {
    for (const auto& a : all)
      if (!visit(a)) return;
  }
  std::optional<alloc::Allocation> find(uint64_t address) override {
    for (const auto& a : all)
      if (address >= a.address && address - a.address < a.size) return a;
    return std::nullopt;
  }
  Diagnostics& diagnostics() override { return diags_; }
  std::vector<uint64_t> internal_addresses() const override { return internal; }

 private:
  std::map<std::string, uint64_t> stats_;
  std::vector<alloc::Pool> pools_;
  std::vector<alloc::ThreadCache> caches_;
  Diagnostics diags_;
};

void put(std::vector<uint8_t>& buf, uint64_t base, uint64_t at, uint64_t v) { std::memcpy(&buf[at - base], &v, 8); }

}  // namespace

TEST(AllocReach, SlotsWithoutHeaders) {
  FakeModel m;
  std::vector<uint8_t> data(0x1000), slab(0x1000), meta(0x1000), stack(0x1000);
  uint64_t next = kSlab;
  auto slot = [&](uint64_t size, alloc::State st = alloc::State::InUse) {
    m.all.push_back({next, size, st, 0});
    next += size;
    return next - size;
  };
  uint64_t a = slot(32);                        // from module data
  uint64_t b = slot(32);                        // from a's first word, at its start
  uint64_t c = slot(32);                        // only from the allocator's metadata: leaked
  uint64_t d = slot(32);                        // an interior pointer from a
  uint64_t e = slot(32);                        // the allocator's own (internal): not a node
  uint64_t f = slot(32);                        // only from e: leaked
  uint64_t g = slot(0x60);                      // a FILE, from module data
  uint64_t h = slot(64);                        // its buffer (_IO_buf_base)
  uint64_t i = slot(32);                        // right after the buffer: only _IO_buf_end: leaked
  uint64_t j = slot(32, alloc::State::Cached);  // free (cached), from data: not a node
  uint64_t k = slot(32);                        // only from j's stale contents: leaked
  m.internal.push_back(e + 8);
  put(data, kData, kData + 0x10, a);
  put(slab, kSlab, a, b);
  put(slab, kSlab, a + 8, d + 20);
  put(meta, kMeta, kMeta + 0x100, c);  // e.g. an edata_t's address
  put(slab, kSlab, e, f);
  put(data, kData, kData + 0x18, g);
  put(slab, kSlab, g, 0xfbad2488);
  put(slab, kSlab, g + 0x38, h);
  put(slab, kSlab, g + 0x40, h + 64);  // == i
  put(data, kData, kData + 0x20, j);
  put(slab, kSlab, j + 8, k);
  ASSERT_EQ(h + 64, i);

  auto src = std::make_unique<memory::BufferSource>();
  src->add(kData, data, "/fake/prog");
  src->add(kSlab, slab);
  src->add(kMeta, meta);
  src->add(kStack, stack);
  target::Thread th;
  th.lwp = 7;
  th.rsp = kStack + 0x800;
  th.has_regs = true;
  auto t = target::Target::from_source(std::move(src), {}, {th});

  analysis::ReachOptions opt;
  std::vector<uint64_t> all_leaked;
  opt.all_leaked = &all_leaked;
  auto r = analysis::find_leaks(m, *t, opt);
  std::set<uint64_t> got;
  for (const auto& x : r.chunks) got.insert(x.address);
  EXPECT_EQ(got, (std::set<uint64_t>{c, f, i, k}));
  EXPECT_EQ(std::set<uint64_t>(all_leaked.begin(), all_leaked.end()), got);
  // Nodes: the in-use slots but the internal one; c, f, i, k are unreferenced by nodes/roots.
  EXPECT_EQ(r.nodes.count, 9u);
  EXPECT_EQ(r.reachable.count, 5u);
  for (const auto& x : r.chunks) {
    EXPECT_TRUE(x.unreferenced) << std::hex << x.address;
    EXPECT_EQ(x.size, 32u);
    EXPECT_EQ(x.arena, kMeta + 0x100);
  }
}
