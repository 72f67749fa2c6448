// glibc's ptmalloc as an allocator-neutral model (alloc/model.h): the adapter the analyses
// (classify, leaks) walk when malloc is glibc's, beside jemalloc::Model and tcmalloc::Model.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "alloc/model.h"
#include "ptmalloc/heap.h"

namespace heapwalk::ptmalloc {

/// A view of a Heap (which it does not own) as an alloc::Model. Pools are the arenas in ring
/// order (pool i is heap.arenas()[i]); the parts are each arena's walk, then the mmapped chunks
/// (Heap::walk's order). Every Allocation carries its chunk (`chunk`, `chunk_size`) and its
/// ptmalloc::ChunkState (`detail`); `address` is the user pointer (chunk + 16), `size` the
/// usable size (chunk size - 8, mmapped: - 16, free chunks: - 16).
class HeapModel : public alloc::Model {
 public:
  explicit HeapModel(Heap& heap);

  alloc::Kind kind() const override { return alloc::Kind::Ptmalloc; }
  std::string version() const override { return "glibc " + heap_.glibc().version; }
  std::string layout_source() const override { return heap_.glibc().layout_source; }
  const std::map<std::string, uint64_t>& stats() const override { return stats_; }
  const std::vector<alloc::Pool>& pools() const override { return pools_; }
  const std::vector<alloc::ThreadCache>& thread_caches() const override { return caches_; }
  void walk(const alloc::AllocationVisitor& visit) override;
  std::optional<alloc::Allocation> find(uint64_t address) override;
  Diagnostics& diagnostics() override { return heap_.diagnostics(); }

  size_t parts() override { return heap_.arenas().size() + 1; }
  void walk_part(size_t k, const alloc::AllocationVisitor& visit) override;
  void walk_part_batched(size_t k, const alloc::AllocationBatchVisitor& visit) override;
  int part_pool(size_t k) const override;
  uint64_t part_hint(size_t k) const override;
  int pool_of(uint64_t address) override;
  /// The heaps (heap_info headers included, up to the end of the walk).
  std::vector<std::pair<uint64_t, uint64_t>> owned_ranges() override;

  /// Part k's chunks as Heap::walk gives them, f(chunk, chunk size, state, pool index): the
  /// analyses' fast path when the model is ptmalloc's (no Allocation per chunk; a 1 M-chunk
  /// classify spends a quarter more time building them).
  template <class F>
  void walk_chunks(size_t k, F&& f) {
    const auto& arenas = heap_.arenas();
    if (k < arenas.size()) {
      const int pool = static_cast<int>(k);
      heap_.walk(&arenas[k], [&](uint64_t c, uint64_t size, ChunkState st, const Arena*, size_t) {
        f(c, size, st, pool);
        return true;
      });
    } else if (k == arenas.size()) {
      for (const auto& m : heap_.mmapped().chunks) f(m.address, m.size, ChunkState::Mmapped, -1);
    }
  }
  Heap& heap() { return heap_; }
  /// The pool index of an arena of this heap (its ring position), -1 for nullptr.
  int pool_index(const Arena* a) const { return a ? static_cast<int>(a - heap_.arenas().data()) : -1; }

  /// The neutral state of a chunk state.
  static alloc::State neutral(ChunkState s);
  /// The Allocation of one chunk.
  static alloc::Allocation allocation(uint64_t chunk, uint64_t size, ChunkState st, int pool) {
    uint64_t usable = st == ChunkState::Used ? size - 8 : size - 16;
    if (size < 16) usable = 0;
    return alloc::Allocation{chunk + 16, usable, neutral(st), pool, chunk, size, static_cast<uint8_t>(st)};
  }

 private:
  Heap& heap_;
  std::map<std::string, uint64_t> stats_;
  std::vector<alloc::Pool> pools_;
  std::vector<alloc::ThreadCache> caches_;
};

}  // namespace heapwalk::ptmalloc
