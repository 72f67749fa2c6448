// Leak candidates: a conservative reachability pass over the in-use chunks.
//
// Nodes are the in-use chunks (state Used) and the mmapped chunks; free chunks (tcache,
// fastbins, bins, top) are neither nodes nor roots, so their stale contents and the
// safe-linked / tcache links inside them never create edges. Roots are
//   - every thread's general registers (NT_PRSTATUS / PTRACE_GETREGS),
//   - every thread's stack from rsp - 128 (the red zone) to the end of its mapping (for a
//     pthread this also covers its static TLS and struct pthread, which sit at the top of the
//     stack mapping),
//   - the region around each thread's fs_base (static TLS below it, the TCB above it),
//   - writable module data: file-backed writable regions and the anonymous region right after
//     a module's mapping (.bss beyond the file, ld.so's early allocations),
//   - optionally every other anonymous writable region (`anon_roots`), which is how a Java
//     heap (or any arena the program manages itself) is made a root;
// minus the malloc heaps and mmapped chunks themselves. An edge is any 8-aligned word of a
// root or of a scanned node whose value lies in [mem, end) of a node (interior pointers
// included; pointers to a chunk's header do not count).
//
// Results: `leaked` = nodes not reachable from the roots; `unreferenced` = nodes no scanned
// word points into at all (words of the chunk itself excepted), a subset of leaked.
//
// Memory: one 8-byte word per chunk (chunk start with four flag bits in the low bits, which a
// 16-aligned chunk start leaves free) plus a uint32 worklist bounded by the node count and the
// lookup table (about half a byte a chunk); while the index is built, the arenas' walks (run in
// parallel on cores and live processes) hold another 8 bytes a chunk until they are joined. The
// scan reads through direct spans (cores) or bounded buffered reads (live processes).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "alloc/model.h"
#include "ptmalloc/heap.h"
#include "target/target.h"
#include "util/diagnostics.h"

namespace heapwalk::analysis {

struct ReachOptions {
  /// Report only chunks of this arena (the graph is always the whole process). nullptr: all
  /// arenas and the mmapped chunks.
  const ptmalloc::Arena* arena = nullptr;
  /// The model's form of `arena`: report only this pool's allocations (-1: all).
  int pool = -1;
  /// How many leaked chunks to list (0 = all).
  uint64_t limit = 0;
  /// List the largest leaked chunks first instead of in address order.
  bool largest = false;
  /// Treat every anonymous writable region (other than heaps, mmapped chunks and stacks) as a
  /// root too: for programs (JVMs) that keep native pointers in memory they manage themselves.
  bool anon_roots = false;
  /// When set, receives the header address of every leaked chunk (allocators without headers:
  /// its user pointer), in address order (8 bytes a leaked chunk), e.g. to classify them.
  std::vector<uint64_t>* all_leaked = nullptr;
};

struct RootStat {
  std::string kind;  ///< "registers", "stack", "tls", "module_data", "anonymous"
  uint64_t ranges = 0, bytes = 0;
  uint64_t unreadable = 0;  ///< bytes of these ranges that could not be read
};

struct LeakedChunk {
  uint64_t address = 0, size = 0;  ///< chunk header address and chunk size
  uint64_t arena = 0;              ///< arena address, 0 for mmapped chunks
  bool unreferenced = false;
  bool mmapped = false;
};

struct SizeCount {
  uint64_t size = 0;  ///< chunk size
  ptmalloc::Count count;
};

struct ReachResult {
  ptmalloc::Count nodes, reachable, leaked, unreferenced;   ///< of the selected arena(s)
  std::vector<SizeCount> leaked_sizes, unreferenced_sizes;  ///< by chunk size, bytes descending
  std::vector<LeakedChunk> chunks;                          ///< listed leaked chunks (limit, order per options)
  bool truncated = false;
  std::map<uint64_t, ptmalloc::Count> leaked_by_arena;  ///< arena address (0 = mmapped)
  std::vector<RootStat> roots;
  uint64_t words_scanned = 0;
  double seconds = 0;  ///< time of the pass, index included, walk excluded
  Diagnostics diagnostics;
};

/// Runs the pass over a model's allocations. ptmalloc (allocations with a `chunk`): as described
/// above. Allocators without headers (jemalloc, tcmalloc): nodes are the in-use slots, an edge
/// is a word in [address, next slot) of one (pointers to the slot's start included), listed
/// addresses are user pointers and sizes slot sizes; the anonymous mappings holding the pools'
/// own structures (the allocator's metadata) are not roots. Throws only what the model's walk
/// throws; unreadable memory becomes diagnostics.
ReachResult find_leaks(alloc::Model& model, target::Target& t, const ReachOptions& opt);
/// The same over a ptmalloc heap (ptmalloc::HeapModel; `opt.arena` selects an arena).
ReachResult find_leaks(ptmalloc::Heap& heap, target::Target& t, const ReachOptions& opt);

}  // namespace heapwalk::analysis
