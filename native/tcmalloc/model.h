// gperftools tcmalloc 2.10 (x86-64, 8 KiB pages: Debian 12's libgoogle-perftools4 and
// libtcmalloc-minimal4): the page heap, central and transfer caches, thread caches, and every
// object slot, read from a core or a live process with or without the library's symbols.
// Layouts: docs/tcmalloc-layouts.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "alloc/model.h"
#include "target/target.h"

namespace heapwalk::tcmalloc {

/// The module that carries tcmalloc (libtcmalloc*.so, or the executable it is linked into
/// statically), or nullptr.
const target::Module* tcmalloc_module(target::Target& t);

/// One size class: SizeMap's figures and the central free list's.
struct SizeClass {
  unsigned cl = 0;
  uint64_t size = 0, pages = 0, batch = 0;  ///< class_to_size_, class_to_pages_, num_objects_to_move_
  uint64_t central_free = 0;                ///< CentralFreeList::counter_ (objects on spans' lists)
  uint64_t transfer_free = 0;               ///< objects in the transfer cache (used_slots_ * batch)
  uint64_t num_spans = 0;                   ///< CentralFreeList::num_spans_
  uint64_t thread_cached = 0;               ///< objects in all thread caches
  uint64_t spans_seen = 0, in_use = 0;      ///< from the page map walk
};

/// One span as the page map holds it.
struct SpanInfo {
  uint64_t address = 0, bytes = 0;
  unsigned sizeclass = 0;
  unsigned location = 0;  ///< 0 in use, 1 on a normal free list, 2 on a returned free list
  unsigned refcount = 0;
};

class Model : public alloc::Model {
 public:
  /// Reads tcmalloc's globals from `module`. Throws SymbolError when its structures are not
  /// found (no symbols and no consistent structure in its data).
  Model(target::Target& t, const target::Module& module);

  alloc::Kind kind() const override { return alloc::Kind::Tcmalloc; }
  std::string version() const override { return "gperftools 2.10"; }
  std::string layout_source() const override { return source_; }
  const std::map<std::string, uint64_t>& stats() const override { return stats_; }
  const std::vector<alloc::Pool>& pools() const override { return pools_; }
  const std::vector<alloc::ThreadCache>& thread_caches() const override { return caches_; }
  void walk(const alloc::AllocationVisitor& visit) override;
  std::optional<alloc::Allocation> find(uint64_t address) override;
  Diagnostics& diagnostics() override { return diags_; }

  const std::vector<SizeClass>& size_classes() const { return classes_; }
  const std::vector<SpanInfo>& spans() const { return spans_; }
  /// Where each global was found: name -> address, and how ("symtab", "dynsym", "search").
  const std::map<std::string, uint64_t>& globals() const { return globals_; }
  const std::map<std::string, std::string>& how() const { return how_; }
  const std::string& module_path() const { return module_; }

 private:
  void locate(const target::Module& m);
  void read_sizemap();
  void read_central();
  void find_thread_heaps();
  void read_threads();
  void read_pagemap();
  void summarize();
  /// A free list still to follow: at most `max` objects from `head`, each inside [lo, hi), kept
  /// as `st`; kind 0 a span's, 1 a transfer cache slot's (b: class), 2 a thread cache's (a: the
  /// ThreadCache, b: class), for the diagnostics' wording.
  struct PendingList {
    uint64_t head, max, lo, hi;
    alloc::State st;
    unsigned kind;
    uint64_t a, b;
    std::string what() const;
  };
  /// Follows every list at once (interleaved chases) into kept_, stopping each at a loop, an
  /// unreadable link, its bounds or the target's size.
  void follow_lists(memory::Reader& r, const std::vector<PendingList>& lists);
  /// Appends one list's objects to kept_ as `st`, each once (a loop is diagnosed).
  void keep(const std::vector<uint64_t>& objs, alloc::State st, const std::string& what);
  void set_budget();

  target::Target& t_;
  std::string module_, source_ = "search";
  std::map<std::string, uint64_t> globals_;
  std::map<std::string, std::string> how_;
  std::map<std::string, uint64_t> stats_;
  std::vector<alloc::Pool> pools_;
  std::vector<alloc::ThreadCache> caches_;
  std::vector<SizeClass> classes_;
  std::vector<SpanInfo> spans_;
  /// Objects not in use inside small-object spans, sorted by address: (address, state).
  std::vector<std::pair<uint64_t, alloc::State>> kept_;
  Diagnostics diags_;
  uint64_t budget_ = 0;
  std::vector<PendingList> pending_;  ///< the caches' lists, followed with the spans' (read_pagemap)  ///< most objects
                                      ///< kept_ may hold: the target's memory in words
};

}  // namespace heapwalk::tcmalloc
