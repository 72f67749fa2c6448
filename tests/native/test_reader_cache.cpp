// memory::Reader over a source without direct spans (as a live process or a gdb callback reads):
// how long a span from its cache lives, the bound on span lengths, and classify's NMT header
// check on such a source (issue 11: the header span was refilled by the footer read).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "analysis/classify.h"
#include "hotspot/nmt.h"
#include "memory/memory.h"
#include "ptmalloc/heap.h"
#include "synthetic_heap.h"
#include "target/symbols.h"
#include "target/target.h"

using namespace heapwalk;

namespace {

/// A BufferSource's bytes served only through read(): no direct() / direct_span(), so every
/// Reader span comes from its cache. Records the largest read asked for.
class CacheOnlySource : public memory::MemorySource {
 public:
  explicit CacheOnlySource(std::unique_ptr<memory::BufferSource> inner) : inner_(std::move(inner)) {}
  size_t read(uint64_t addr, void* out, size_t len) override {
    largest_read = std::max(largest_read, len);
    ++reads;
    return inner_->read(addr, out, len);
  }
  const std::vector<memory::Region>& regions() const override { return inner_->regions(); }
  size_t largest_read = 0, reads = 0;

 private:
  std::unique_ptr<memory::BufferSource> inner_;
};

constexpr uint64_t kBase = 0x10000000;
constexpr size_t kBlock = 64 * 1024;  // the Readers' block here: 4 MiB of memory is 64 blocks

/// 4 MiB whose every 8-byte word holds its own address: any span's content is checkable.
std::unique_ptr<memory::BufferSource> addressed_words(uint64_t base = kBase, size_t size = 4 << 20) {
  std::vector<uint8_t> b(size);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = base + i;
    std::memcpy(b.data() + i, &v, 8);
  }
  auto src = std::make_unique<memory::BufferSource>();
  src->add(base, std::move(b));
  return src;
}

uint64_t word(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

TEST(ReaderCache, SpanSurvivesOneFurtherMissAndTheNextMissSparesTheLatest) {
  CacheOnlySource src(addressed_words());
  memory::Reader r(src, kBlock);
  // Far apart, so each is a cache miss.
  const uint64_t a = kBase + 0x1000, b = kBase + 0x200000, c = kBase + 0x300000, d = kBase + 0x100000;
  const uint8_t* pa = r.span(a, 64);
  ASSERT_NE(pa, nullptr);
  const uint8_t* pb = r.span(b, 64);
  ASSERT_NE(pb, nullptr);
  EXPECT_EQ(word(pa), a) << "the span before the latest call was overwritten";
  EXPECT_EQ(word(pa + 56), a + 56);
  const uint8_t* pc = r.span(c, 64);
  ASSERT_NE(pc, nullptr);
  EXPECT_EQ(word(pb), b);
  EXPECT_EQ(word(pc), c);
  // A hit in the older block makes it the latest: the next miss must refill the other one.
  const uint8_t* pb2 = r.span(b + 8, 8);
  ASSERT_NE(pb2, nullptr);
  const uint8_t* pd = r.span(d, 64);
  ASSERT_NE(pd, nullptr);
  EXPECT_EQ(word(pb2), b + 8);
  EXPECT_EQ(word(pd), d);
  // try_u64 is a span too: the pointer from before it still holds its bytes.
  uint64_t v = 0;
  EXPECT_TRUE(r.try_u64(kBase + 0x3f0000, v));
  EXPECT_EQ(v, kBase + 0x3f0000);
  EXPECT_EQ(word(pd), d);
}

TEST(ReaderCache, SequentialWalkKeepsThePreviousSpan) {
  CacheOnlySource src(addressed_words());
  memory::Reader r(src, kBlock);
  const uint8_t* prev = nullptr;
  uint64_t prev_addr = 0;
  // Walk across many block boundaries, each span checked after the next one was taken.
  for (uint64_t a = kBase + 8; a + 64 < kBase + (4 << 20); a += 4096 + 24) {
    const uint8_t* p = r.span(a, 64);
    ASSERT_NE(p, nullptr) << std::hex << a;
    EXPECT_EQ(word(p), a);
    if (prev) {
      ASSERT_EQ(word(prev), prev_addr) << std::hex << prev_addr;
    }
    prev = p;
    prev_addr = a;
  }
  EXPECT_LT(src.reads, (4u << 20) / 4096) << "a forward walk reads whole blocks";
}

TEST(ReaderCache, LengthAboveTheBlockIsRefusedWithoutAllocating) {
  CacheOnlySource src(addressed_words());
  memory::Reader r(src, kBlock);
  EXPECT_EQ(r.max_span(), kBlock);
  EXPECT_EQ(r.span(kBase, kBlock + 1), nullptr);
  // An address-sized length read from the target (issue 11's 0x7fbf14be2fce).
  EXPECT_EQ(r.span(kBase, size_t{0x7fbf14be2fce}), nullptr);
  EXPECT_EQ(src.reads, 0u) << "a refused span must not read (nor size a buffer)";
  const uint8_t* p = r.span(kBase + 0x800, kBlock);  // the largest allowed, page-unaligned
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(word(p + kBlock - 8), kBase + 0x800 + kBlock - 8);
  EXPECT_LE(src.largest_read, kBlock + 4096);
  // The same answers with direct spans (a core): one rule for both kinds of target.
  auto direct = addressed_words();
  memory::Reader rd(*direct, kBlock);
  EXPECT_EQ(rd.span(kBase, kBlock + 1), nullptr);
  EXPECT_NE(rd.span(kBase + 0x800, kBlock), nullptr);
}

TEST(ReaderCache, SpanUpToTheEndOfReadableMemory) {
  CacheOnlySource src(addressed_words(kBase, 0x3000));
  memory::Reader r(src, kBlock);
  // The block read runs past the region; the exact bytes are still served.
  const uint8_t* p = r.span(kBase + 0x3000 - 16, 16);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(word(p), kBase + 0x3000 - 16);
  EXPECT_EQ(r.span(kBase + 0x3000 - 8, 16), nullptr);
  EXPECT_EQ(r.span(kBase + 0x5000, 8), nullptr);
  // A failed miss leaves the latest span alone.
  EXPECT_EQ(word(p), kBase + 0x3000 - 16);
}

TEST(CallbackSource, LongReadsArePiecedAndStopAtTheFirstShortPiece) {
  std::vector<size_t> asked;
  const uint64_t end = kBase + 3 * memory::CallbackSource::kMaxPiece + 100;
  memory::CallbackSource cb([&](uint64_t addr, void* out, size_t len) -> size_t {
    asked.push_back(len);
    size_t n = addr >= end ? 0 : static_cast<size_t>(std::min<uint64_t>(len, end - addr));
    std::memset(out, 0x5a, n);
    return n;
  });
  std::vector<uint8_t> buf(5 * memory::CallbackSource::kMaxPiece);
  EXPECT_EQ(cb.read(kBase, buf.data(), buf.size()), 3 * memory::CallbackSource::kMaxPiece + 100);
  ASSERT_EQ(asked.size(), 4u);
  for (size_t n : asked) EXPECT_LE(n, memory::CallbackSource::kMaxPiece);
  EXPECT_EQ(buf[3 * memory::CallbackSource::kMaxPiece + 99], 0x5a);
}

namespace {

using namespace heapwalk::testing;

/// A main arena whose heap is 4 MiB (more than the Reader's 1 MiB block), served through a
/// CacheOnlySource.
struct BigHeap : SyntheticHeap {
  static constexpr uint64_t kSize = 4 << 20;
  BigHeap() {
    heap.assign(kSize, 0);
    put(arena, kArena, kArena + l.ms_system_mem, kSize);
    put(arena, kArena, kArena + l.ms_max_system_mem, kSize);
  }
  void top() {
    put(arena, kArena, kArena + l.ms_top, cursor);
    h(cursor + 8, (kHeap + kSize - cursor) | 1);
  }
  /// An NMT-tracked block (JDK 17 canary header, footer after `user` bytes) of MEMFLAGS `type`
  /// whose user bytes are all `fill`.
  uint64_t nmt_block(uint64_t user, uint8_t type, uint8_t fill) {
    uint64_t size = (16 + 16 + user + 2 + 15) & ~uint64_t{15};
    uint64_t c = chunk(size);
    uint64_t mem = c + 16;
    h(mem, user);
    uint8_t hdr[8] = {0, 0, 0, 0, type, 0, 0x9E, 0xE9};  // bytes 8..15: flags at 12, canary at 14
    std::memcpy(heap.data() + (mem + 8 - kHeap), hdr, 8);
    std::memset(heap.data() + (mem + 16 - kHeap), fill, user);
    heap[mem + 16 + user - kHeap] = 0xE8;
    heap[mem + 16 + user + 1 - kHeap] = 0x8E;
    return c;
  }
  std::unique_ptr<target::Target> target() {
    auto t = target::Target::from_source(std::make_unique<CacheOnlySource>(source()), {}, {});
    t->overrides().main_arena = kArena;
    t->overrides().mp = kMp;
    t->overrides().no_files = true;
    return t;
  }
};

}  // namespace

TEST(ReaderCache, ClassifyNamesNmtBlocksWhoseFooterIsBlocksAway) {
  BigHeap w;
  // Footers 2 MiB and 16 KiB past their headers; the user bytes (0xff) are what a refilled
  // cache would show in place of the header: flags 0xff, far past the 27-name table.
  const uint8_t mt_class = 7, mt_internal = 6;
  w.nmt_block(2 << 20, mt_class, 0xff);
  w.nmt_block(16 << 10, mt_internal, 0xff);
  w.nmt_block(64, mt_class, 0xff);
  w.top();
  auto t = w.target();
  ptmalloc::Heap h(*t, "2.36");
  target::ModuleIndex mods(*t);
  auto res = analysis::classify(h, *t, mods, {});
  const auto& names = hotspot::default_names_17();
  uint64_t cls = 0, internal = 0, other = 0;
  for (const auto& row : res.used) {
    if (row.name == "NMT " + names[mt_class])
      cls += row.stats.count;
    else if (row.name == "NMT " + names[mt_internal])
      internal += row.stats.count;
    else
      other += row.stats.count;
  }
  EXPECT_EQ(cls, 2u);
  EXPECT_EQ(internal, 1u);
  EXPECT_EQ(other, 0u);
}
