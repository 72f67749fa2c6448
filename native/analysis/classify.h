// What is in the heap: one pass over the chunks that names what each one holds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "alloc/model.h"
#include "ptmalloc/heap.h"
#include "target/symbols.h"
#include "target/target.h"

namespace heapwalk::analysis {

struct ClassStats {
  uint64_t count = 0, bytes = 0;
  uint64_t example = 0;  ///< address of one such chunk
  std::string sample;    ///< text classes: the text of `example` itself (issue 15)
};

/// One class row: its name, kind ("c++", "zlib", "content", "module", "size") and counts.
struct ClassRow {
  std::string name, kind, sample;
  ClassStats stats;
};

struct ArenaClasses {
  uint64_t arena = 0;                ///< 0: mmapped chunks (no arena); else the pool's address
  std::vector<ClassRow> used, free;  ///< sorted by bytes, descending
};

struct ClassifyOptions {
  const ptmalloc::Arena* arena = nullptr;  ///< only this arena (nullptr: all, plus mmapped)
  int pool = -1;                           ///< the model's form of `arena`: only this pool (-1: all)
  bool free_chunks = false;                ///< also classify the stale contents of free chunks
  /// Only these chunks (header addresses, sorted; allocators without headers: user pointers),
  /// e.g. the leaked set; nullptr: all.
  const std::vector<uint64_t>* only_chunks = nullptr;
  /// List the chunks of the class named `list` (walk order), at most `list_limit` (0: all).
  std::string list;
  uint64_t list_limit = 0;
};

/// A chunk of the listed class.
struct ListedChunk {
  uint64_t chunk = 0, size = 0;
  bool used = true;
};

struct ClassifyResult {
  std::vector<ArenaClasses> arenas;
  std::vector<ClassRow> used, free;  ///< totals over the selected arenas
  uint64_t chunks = 0;
  uint64_t vtables_known = 0;       ///< `_ZTV` symbols available for naming
  std::vector<ListedChunk> listed;  ///< ClassifyOptions::list's chunks
  uint64_t listed_total = 0;        ///< how many there are (listed may stop at list_limit)
};

/// Classifies every in-use allocation of `model` (and free ones on request). Groups zlib streams
/// (z_stream + inflate/deflate state + window and buffers) into one owned group; names C++
/// objects by their vtable (symbols, or RTTI when symbols are missing); recognises content
/// patterns; everything else goes by size. ptmalloc (allocations with a `chunk`): chunks, their
/// header addresses and chunk sizes, as ever; other allocators: slots, their user pointers and
/// slot sizes (examples and listed "chunks" are then user pointers). Each part of the model's
/// walk is classified on its own, in parallel where the target allows, and merged in order.
ClassifyResult classify(alloc::Model& model, target::Target& t, const target::ModuleIndex& modules,
                        const ClassifyOptions& opt);
/// The same over a ptmalloc heap (ptmalloc::HeapModel; `opt.arena` selects an arena).
ClassifyResult classify(ptmalloc::Heap& heap, target::Target& t, const target::ModuleIndex& modules,
                        const ClassifyOptions& opt);

}  // namespace heapwalk::analysis
