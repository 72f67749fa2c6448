#include "ptmalloc/heap_model.h"

namespace heapwalk::ptmalloc {

alloc::State HeapModel::neutral(ChunkState s) {
  switch (s) {
    case ChunkState::Used:
    case ChunkState::Mmapped: return alloc::State::InUse;
    case ChunkState::Tcache: return alloc::State::Cached;
    case ChunkState::Fencepost: return alloc::State::Metadata;
    default: return alloc::State::Free;
  }
}

HeapModel::HeapModel(Heap& heap) : heap_(heap) {
  heap_.summarize();
  const Params& p = heap_.params();
  stats_["mp_.trim_threshold"] = p.trim_threshold;
  stats_["mp_.mmap_threshold"] = p.mmap_threshold;
  stats_["mp_.n_mmaps"] = heap_.mmapped().n_mmaps;
  stats_["mp_.mmapped_mem"] = heap_.mmapped().mmapped_mem;
  for (const auto& a : heap_.arenas()) {
    alloc::Pool pool;
    pool.index = a.index;
    pool.address = a.address;
    pool.name = "arena " + std::to_string(a.index);
    pool.stats["system_mem"] = a.system_mem;
    pool.stats["max_system_mem"] = a.max_system_mem;
    pool.in_use = a.in_use.bytes;
    pool.cached = a.tcache.bytes;
    pool.free = a.fast.bytes + a.binned.bytes + a.top_size;
    pool.allocations = a.in_use.count;
    pools_.push_back(std::move(pool));
  }
  for (const auto& th : heap_.threads()) {
    alloc::ThreadCache c;
    c.lwp = th.lwp;
    c.address = th.address.value_or(0);
    for (const auto& b : th.bins)
      if (b.count) c.bins.push_back({b.chunks.empty() ? 0 : b.chunks.front().size, b.count});
    c.bytes = th.total.bytes;
    caches_.push_back(std::move(c));
  }
}

void HeapModel::walk_part(size_t k, const alloc::AllocationVisitor& visit) {
  const auto& arenas = heap_.arenas();
  if (k < arenas.size()) {
    const int pool = static_cast<int>(k);
    heap_.walk(&arenas[k], [&](uint64_t c, uint64_t size, ChunkState st, const Arena*, size_t) {
      return visit(allocation(c, size, st, pool));
    });
  } else if (k == arenas.size()) {
    for (const auto& m : heap_.mmapped().chunks)
      if (!visit(allocation(m.address, m.size, ChunkState::Mmapped, -1))) return;
  }
}

void HeapModel::walk_part_batched(size_t k, const alloc::AllocationBatchVisitor& visit) {
  const auto& arenas = heap_.arenas();
  alloc::Allocation batch[kBatch];
  size_t n = 0;
  bool more = true;
  auto add = [&](uint64_t c, uint64_t size, ChunkState st, int pool) {
    batch[n++] = allocation(c, size, st, pool);
    if (n == kBatch) {
      more = visit(batch, n);
      n = 0;
    }
    return more;
  };
  if (k < arenas.size()) {
    const int pool = static_cast<int>(k);
    heap_.walk(&arenas[k],
               [&](uint64_t c, uint64_t size, ChunkState st, const Arena*, size_t) { return add(c, size, st, pool); });
  } else if (k == arenas.size()) {
    for (const auto& m : heap_.mmapped().chunks)
      if (!add(m.address, m.size, ChunkState::Mmapped, -1)) break;
  }
  if (more && n) visit(batch, n);
}

void HeapModel::walk(const alloc::AllocationVisitor& visit) {
  bool more = true;
  for (size_t k = 0; more && k < parts(); ++k)
    walk_part(k, [&](const alloc::Allocation& a) {
      more = visit(a);
      return more;
    });
}

int HeapModel::part_pool(size_t k) const { return k < heap_.arenas().size() ? static_cast<int>(k) : -1; }

uint64_t HeapModel::part_hint(size_t k) const {
  const auto& arenas = heap_.arenas();
  if (k == arenas.size()) return 2 * heap_.mmapped().chunks.size();  // a gap after each, at most
  if (k > arenas.size()) return 0;
  // Used chunks and fenceposts as counted by the first walk, at most every free chunk, a gap
  // a heap: enough unless the walk resynchronised.
  const auto& a = arenas[k];
  return a.in_use.count + a.fenceposts.count + a.free_index.size() + 2 * a.heaps.size() + 2;
}

int HeapModel::pool_of(uint64_t address) { return pool_index(heap_.arena_of(address)); }

std::vector<std::pair<uint64_t, uint64_t>> HeapModel::owned_ranges() {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& a : heap_.arenas())
    for (const auto& hr : a.heaps) out.emplace_back(hr.address, std::max(hr.walk_end, hr.address + hr.size));
  return out;
}

std::optional<alloc::Allocation> HeapModel::find(uint64_t address) {
  for (const auto& m : heap_.mmapped().chunks)
    if (address >= m.address && address - m.address < m.size)
      return allocation(m.address, m.size, ChunkState::Mmapped, -1);
  const Arena* a = heap_.arena_of(address);
  if (!a) return std::nullopt;
  std::optional<alloc::Allocation> out;
  const int pool = pool_index(a);
  heap_.walk(a, [&](uint64_t c, uint64_t size, ChunkState st, const Arena*, size_t) {
    if (address >= c && address - c < size) {
      out = allocation(c, size, st, pool);
      return false;
    }
    return true;
  });
  return out;
}

}  // namespace heapwalk::ptmalloc
