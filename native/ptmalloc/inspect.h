// Chunk inspection for `chunk`, `vis` and `try_free` (issue 15): a chunk's header fields and
// links decoded for the target's glibc version, the bytes of a run of chunks, what an address
// outside every chunk is, and what free(ADDR) would do on this glibc, check by check.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ptmalloc/heap.h"
#include "target/target.h"

namespace heapwalk::ptmalloc {

/// Largest content dump `chunk` and `vis` return for one chunk.
constexpr uint64_t kMaxDumpBytes = 4096;

/// A chunk's header words and list links, decoded for the glibc version.
struct ChunkFields {
  uint64_t chunk = 0, mem = 0;
  std::optional<uint64_t> prev_size;  ///< read only when the previous chunk is free (PREV_INUSE clear)
  uint64_t size_word = 0;             ///< raw size field, flag bits included
  bool prev_inuse = false, is_mmapped = false, non_main_arena = false;
  /// fd as stored and as decoded (safe-linking reveal for tcache next / fastbin fd on 2.32+).
  std::optional<uint64_t> fd_raw, fd, bk, fd_nextsize, bk_nextsize;
  bool fd_protected = false;
  std::optional<uint64_t> key;  ///< tcache_entry.key (2.29+), the word at mem + 8
  /// What `key` equals: "tcache_key" (2.34+ random key), "tcache" (2.29-2.33: the owning
  /// thread's tcache_perthread_struct), "" when it matches nothing.
  std::string key_match;
  std::optional<int> key_owner_lwp;  ///< 2.29-2.33: the thread whose tcache struct `key` names
  std::vector<uint8_t> bytes;        ///< the first bytes of the user data (bounded)
};

/// Decodes the chunk at `chunk` (state as the walk found it) and up to `dump` bytes of its user
/// data (at most kMaxDumpBytes and the chunk's size). Unreadable words are left empty.
ChunkFields chunk_fields(Heap& h, target::Target& t, uint64_t chunk, uint64_t size, ChunkState st, uint64_t dump);

/// What an address in no heap chunk is.
struct AddressInfo {
  std::string kind;  ///< "stack", "module", "mapping", "unmapped"
  int lwp = 0;       ///< stack: the thread whose stack pointer is in the same mapping
  uint64_t start = 0, end = 0;
  bool read = false, write = false, exec = false;
  std::string path;    ///< the mapping's file ("" for anonymous memory)
  std::string module;  ///< module: its path
  uint64_t module_base = 0;
  std::string symbol;  ///< nearest preceding symbol of the module's file ("" when none is known)
  uint64_t symbol_offset = 0;
};
AddressInfo describe_address(target::Target& t, uint64_t addr);

/// One chunk of a `vis` run: the walk's view plus its leading bytes (header included).
struct VisChunk {
  uint64_t address = 0, size = 0;
  ChunkState state = ChunkState::Used;
  std::vector<uint8_t> bytes;  ///< from the header, at most `per_chunk` bytes
};
/// Up to `count` chunks in address order from the chunk holding `from` (nullopt: the first chunk
/// of `arena`, main when null), each with at most `per_chunk` bytes (bounded by kMaxDumpBytes).
std::vector<VisChunk> vis_chunks(Heap& h, target::Target& t, std::optional<uint64_t> from, const Arena* arena,
                                 uint64_t count, uint64_t per_chunk);

/// One check glibc's free() makes, in order.
struct FreeCheck {
  std::string name;    ///< what is checked, e.g. "chunk alignment (misaligned_chunk)"
  bool passed = true;  ///< false: this check aborts
  std::string detail;  ///< the values compared
};

/// What free(mem) would do.
struct FreeVerdict {
  uint64_t mem = 0, chunk = 0, size = 0;
  std::string action;   ///< "nothing", "tcache", "fastbin", "unsorted", "top", "munmap", "abort", "crash"
  bool aborts = false;  ///< glibc would abort (or fault)
  std::string message;  ///< glibc's own message on abort ("" otherwise, or the fault)
  std::vector<FreeCheck> checks;
  std::vector<std::string> notes;  ///< assumptions and what follows (consolidation, trim)
  std::optional<uint64_t> arena;
  int lwp = 0;  ///< the thread whose tcache free would use
};
/// Follows glibc's __libc_free/_int_free (malloc/malloc.c, exact for glibc-2.36; version
/// differences: see the implementation) on the target's memory, for the thread `lwp` (nullopt:
/// the first thread). Never writes to the target.
FreeVerdict try_free(Heap& h, target::Target& t, uint64_t mem, std::optional<int> lwp);

}  // namespace heapwalk::ptmalloc
