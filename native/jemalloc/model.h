// jemalloc 5.3.0 (Debian 12 libjemalloc2, x86-64): arenas and their statistics read from the
// target, as mallctl("stats.arenas.<i>.*") derives them. Layout: docs/jemalloc-layouts.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "alloc/model.h"
#include "target/target.h"

namespace heapwalk::jemalloc {

/// Where jemalloc's globals are in the target.
struct Globals {
  uint64_t arenas = 0;        ///< je_arenas: atomic_p_t[MALLOCX_ARENA_LIMIT]
  unsigned narenas = 0;       ///< arenas slots in use (narenas_total when known, else counted)
  std::string layout_source;  ///< "symbols" (the module's .symtab) or "search"
};

/// Finds je_arenas: from the module file's symbols when it has them, else by searching the
/// module's writable data for an array of pointers whose i-th arena_t has `ind` == i and a
/// plausible base_t (self-consistency; no symbol needed).
std::optional<Globals> find_globals(target::Target& t, const target::Module& m, Diagnostics& d);

/// jemalloc's size class table (sz_index2size_tab) for LG_PAGE 12, LG_QUANTUM 4, 4 classes per
/// doubling (include/jemalloc/internal/sc.h at 5.3.0).
uint64_t index2size(unsigned ind);

class Model : public alloc::Model {
 public:
  /// Throws heapwalk::Error when the library is not loaded or its arenas cannot be found.
  explicit Model(target::Target& t);
  alloc::Kind kind() const override { return alloc::Kind::Jemalloc; }
  std::string version() const override { return "jemalloc 5.3.0"; }
  std::string layout_source() const override { return g_.layout_source; }
  const std::map<std::string, uint64_t>& stats() const override { return stats_; }
  const std::vector<alloc::Pool>& pools() const override { return pools_; }
  const std::vector<alloc::ThreadCache>& thread_caches() const override { return caches_; }
  /// Every extent the global radix tree (je_arena_emap_global) maps, in address order: slab
  /// regions (in use, cached in a tcache, or free by the slab bitmap), large extents, and
  /// dirty (Free) / muzzy and retained (Released) extents as one free slot each.
  void walk(const alloc::AllocationVisitor& visit) override;
  std::optional<alloc::Allocation> find(uint64_t address) override;
  /// The rtree_t (je_arena_emap_global), 0 when it was not found.
  uint64_t rtree() const { return rtree_; }
  Diagnostics& diagnostics() override { return diags_; }
  /// Each tcache bin's stack_head: inside the allocation jemalloc made for the thread's bin
  /// stacks (tsd_tcache_data_init), whose stale slots name objects handed out since.
  std::vector<uint64_t> internal_addresses() const override { return stack_heads_; }
  const std::string& module() const { return module_; }

 private:
  void read_arena(unsigned ind, uint64_t addr);
  void find_rtree(const target::Module& m);
  target::Target& t_;
  Globals g_;
  std::string module_;
  std::map<std::string, uint64_t> stats_;
  std::vector<alloc::Pool> pools_;
  std::vector<alloc::ThreadCache> caches_;
  Diagnostics diags_;
  uint64_t rtree_ = 0;
  std::unordered_set<uint64_t> cached_;  // pointers in every tcache stack
  std::vector<uint64_t> stack_heads_;    // internal_addresses()
};

}  // namespace heapwalk::jemalloc
