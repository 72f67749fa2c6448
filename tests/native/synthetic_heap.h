// A synthetic main arena for engine tests: main_arena, mp_ and one sbrk heap in byte buffers
// (glibc 2.36 layout), with empty bins; tests lay chunks out with chunk() and close the heap
// with finish_top().
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "memory/memory.h"
#include "ptmalloc/layout.h"
#include "target/target.h"

namespace heapwalk::testing {

constexpr uint64_t kArena = 0x7f0000001000;  // main_arena
constexpr uint64_t kMp = 0x7f0000000000;     // mp_
constexpr uint64_t kHeap = 0x555555559000;   // sbrk_base
constexpr uint64_t kHeapSize = 0x21000;

struct SyntheticHeap {
  const ptmalloc::Layout& l = *ptmalloc::layout_for("2.36");
  std::vector<uint8_t> arena = std::vector<uint8_t>(0x1000);
  std::vector<uint8_t> mp = std::vector<uint8_t>(0x1000);
  std::vector<uint8_t> heap = std::vector<uint8_t>(kHeapSize);
  uint64_t cursor = kHeap;  ///< where the next chunk() goes

  static void put(std::vector<uint8_t>& buf, uint64_t base, uint64_t addr, uint64_t v) {
    std::memcpy(buf.data() + (addr - base), &v, 8);
  }
  /// Writes the word `v` at heap address `addr`.
  void h(uint64_t addr, uint64_t v) { put(heap, kHeap, addr, v); }
  /// Lays out a chunk of `size` bytes (size field `size | flags`) at the cursor; its address.
  uint64_t chunk(uint64_t size, uint64_t flags = 1) {
    uint64_t p = cursor;
    h(p + 8, size | flags);
    cursor += size;
    return p;
  }
  SyntheticHeap() {
    put(mp, kMp, kMp + l.mp_sbrk_base, kHeap);
    put(mp, kMp, kMp + l.mp_tcache_count, 7);
    put(arena, kArena, kArena + l.ms_next, kArena);
    put(arena, kArena, kArena + l.ms_system_mem, kHeapSize);
    put(arena, kArena, kArena + l.ms_max_system_mem, kHeapSize);
    for (unsigned i = 1; i < l.nbins; ++i) {  // empty bins point at themselves
      uint64_t slot = kArena + l.ms_bins + (i - 1) * 16;
      put(arena, kArena, slot, slot - 16);
      put(arena, kArena, slot + 8, slot - 16);
    }
  }
  /// The rest of the heap becomes top.
  void finish_top() {
    put(arena, kArena, kArena + l.ms_top, cursor);
    h(cursor + 8, (kHeap + kHeapSize - cursor) | 1);
  }
  /// A source holding mp_, main_arena and the heap; tests may add more regions.
  std::unique_ptr<memory::BufferSource> source() const {
    auto src = std::make_unique<memory::BufferSource>();
    src->add(kMp, mp);
    src->add(kArena, arena);
    src->add(kHeap, heap);
    return src;
  }
  /// A target over `src` with main_arena and mp_ given as overrides.
  static std::unique_ptr<target::Target> make_target(std::unique_ptr<memory::BufferSource> src,
                                                     std::vector<target::Thread> threads) {
    auto t = target::Target::from_source(std::move(src), {}, std::move(threads));
    t->overrides().main_arena = kArena;
    t->overrides().mp = kMp;
    return t;
  }
};

}  // namespace heapwalk::testing
