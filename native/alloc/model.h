// The allocator-neutral model (issue 16): what every allocator model (ptmalloc, jemalloc,
// tcmalloc) exposes to the analyses and front ends above it.
//
// Each allocator keeps its own precise model beside this one (ptmalloc::Heap, jemalloc::Model,
// tcmalloc::Model): those carry the allocator's structures and its own statistics under its own
// names; this interface carries what is common — pools (arenas, page heaps), spans of address
// space with a state, allocations with a size and state, and per-thread caches — so that
// `arenas`, `chunks`, `chunk ADDR`, `classify`, `leaks`, `report` and `diff` can work on any of
// them. Allocator statistics keep the allocator's names (jemalloc `stats.arenas.<i>.dirty`,
// tcmalloc `generic.heap_size`), exact, in `Pool::stats`.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "target/target.h"
#include "util/diagnostics.h"

namespace heapwalk::alloc {

/// Which allocator a model reads.
enum class Kind { Ptmalloc, Jemalloc, Tcmalloc };
const char* kind_name(Kind k);  ///< "ptmalloc", "jemalloc", "tcmalloc" (the JSON `allocator` field)

/// The state of an allocation or of a span of address space, in allocator-neutral terms.
enum class State : uint8_t {
  InUse,     ///< handed to the program and not freed
  Cached,    ///< freed into a per-thread (or per-CPU) cache: tcache, jemalloc tcache, tcmalloc ThreadCache
  Free,      ///< freed and kept by the allocator, backed (dirty): bins, dirty extents, free spans
  Released,  ///< kept as address space but returned to the OS: muzzy/retained extents, unmapped spans
  Metadata,  ///< the allocator's own bookkeeping
};
const char* state_name(State s);  ///< "in-use", "cached", "free", "released", "metadata"

/// One pool: a ptmalloc arena, a jemalloc arena, tcmalloc's page heap.
struct Pool {
  unsigned index = 0;
  uint64_t address = 0;  ///< the pool's structure in the target (arena_t, PageHeap), 0 if none
  std::string name;      ///< "arena 0", "page heap"
  /// The allocator's own statistics for this pool, under the allocator's names (jemalloc:
  /// "allocated", "active", "dirty", "muzzy", "retained", "mapped", "resident", "metadata"...;
  /// tcmalloc: "system", "free", "unmapped", "committed"...), exact.
  std::map<std::string, uint64_t> stats;
  /// Neutral totals, bytes: what the program holds, what the pool keeps backed, what it keeps as
  /// address space only, and what a purge/trim/release would return to the OS now.
  uint64_t in_use = 0, cached = 0, free = 0, released = 0, metadata = 0, reclaimable = 0;
  uint64_t allocations = 0;  ///< in-use allocations counted
};

/// One allocation (or free slot) as the walk sees it.
struct Allocation {
  uint64_t address = 0;  ///< the pointer malloc returned (user pointer), not a header
  uint64_t size = 0;     ///< usable size of the slot (size class for slab/small objects)
  State state = State::InUse;
  int pool = -1;  ///< index into pools(), -1 when none
  /// Allocators with a header per allocation (ptmalloc): where the block starts (the chunk),
  /// its length from there (the chunk size) and the allocator's own state (ptmalloc::ChunkState).
  /// 0 for the others: the block is [address, address + size).
  uint64_t chunk = 0, chunk_size = 0;
  uint8_t detail = 0;
};
/// Return false to stop the walk.
using AllocationVisitor = std::function<bool(const Allocation&)>;
/// A batch of allocations, in walk order (walk_part_batched); return false to stop the walk.
using AllocationBatchVisitor = std::function<bool(const Allocation* first, size_t n)>;

/// One thread's cache.
struct ThreadCache {
  int lwp = 0;           ///< 0 when the owning thread is not known
  uint64_t address = 0;  ///< tcache_perthread_struct, tcache_t, ThreadCache
  struct Bin {
    uint64_t size = 0;   ///< the bin's object size
    uint64_t count = 0;  ///< objects cached
  };
  std::vector<Bin> bins;  ///< non-empty bins only
  uint64_t bytes = 0;
};

/// What every allocator model provides. Constructing a model reads the allocator's global
/// structures; walk() visits allocations in address order. Models record corruption and
/// surprises as diagnostics and never throw past construction except when the allocator's root
/// structure itself cannot be found (then detection says why).
class Model {
 public:
  virtual ~Model() = default;
  virtual Kind kind() const = 0;
  /// "jemalloc 5.3.0", "gperftools 2.10", "glibc 2.36".
  virtual std::string version() const = 0;
  /// Where the layout came from: "dwarf" (debug info), "symbols", "search" (symbol-free).
  virtual std::string layout_source() const = 0;
  /// Allocator-wide statistics under the allocator's own names (jemalloc "stats.allocated"...).
  virtual const std::map<std::string, uint64_t>& stats() const = 0;
  virtual const std::vector<Pool>& pools() const = 0;
  virtual const std::vector<ThreadCache>& thread_caches() const = 0;
  /// Every allocation and free slot the model knows, in address order (a pool's at a time is
  /// fine as long as each pool's are ordered).
  virtual void walk(const AllocationVisitor& visit) = 0;
  /// The allocation containing `address`, if any.
  virtual std::optional<Allocation> find(uint64_t address) = 0;
  virtual Diagnostics& diagnostics() = 0;

  // Parts of walk(), for analyses that walk in parallel (classify, leaks): walking parts
  // 0..parts()-1 in turn visits what walk() visits, in the same order. Parts may be walked
  // concurrently where the target can be read from several threads (Target::parallel_reads).
  virtual size_t parts() { return 1; }
  virtual void walk_part(size_t k, const AllocationVisitor& visit) {
    if (k == 0) walk(visit);
  }
  /// walk_part() a batch at a time: one call per batch instead of one per allocation, for the
  /// analyses' tight loops (a model with a callback walk of its own overrides it to fill the
  /// batches directly).
  virtual void walk_part_batched(size_t k, const AllocationBatchVisitor& visit) {
    std::vector<Allocation> batch;
    batch.reserve(kBatch);
    bool more = true;
    walk_part(k, [&](const Allocation& a) {
      batch.push_back(a);
      if (batch.size() == kBatch) {
        more = visit(batch.data(), batch.size());
        batch.clear();
      }
      return more;
    });
    if (more && !batch.empty()) visit(batch.data(), batch.size());
  }
  static constexpr size_t kBatch = 1024;
  /// The pool whose allocations part k holds, -1 when several or none (ptmalloc's mmapped chunks).
  virtual int part_pool(size_t /*k*/) const { return -1; }
  /// How many allocations and free slots part k probably holds (a reserve hint; 0: unknown).
  virtual uint64_t part_hint(size_t /*k*/) const { return 0; }
  /// The pool of the allocation at `address` (an address walk() gave), -1 when none.
  virtual int pool_of(uint64_t address) {
    auto a = find(address);
    return a ? a->pool : -1;
  }
  /// Address ranges the allocator owns beyond its allocations (heap headers, metadata such as
  /// jemalloc's base blocks): never roots for the leak pass. Sorted or not.
  virtual std::vector<std::pair<uint64_t, uint64_t>> owned_ranges() { return {}; }
  /// Addresses inside in-use allocations the allocator made for itself (jemalloc: each tcache's
  /// bin stacks, whose stale slots still name objects handed out since): those allocations are
  /// its metadata, neither nodes nor scanned by the leak pass.
  virtual std::vector<uint64_t> internal_addresses() const { return {}; }
};

/// Which allocators the target uses, by its loaded modules (linked or LD_PRELOAD-ed) and, when
/// a module is ambiguous, by the allocator's own structures. A JVM with jemalloc preloaded uses
/// both jemalloc and glibc's main arena: both are listed, the malloc owner first.
struct Detected {
  Kind kind;
  std::string module;        ///< the module path that carries it ("" for a static link)
  bool owns_malloc = false;  ///< whether this allocator answers the process's malloc()
};
std::vector<Detected> detect(target::Target& t);

/// The module that carries allocator `k` (its library, or the executable it is linked into
/// statically), or nullptr. ptmalloc: libc.
const target::Module* allocator_module(target::Target& t, Kind k);

}  // namespace heapwalk::alloc
