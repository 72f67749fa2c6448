// Finding glibc's malloc state with no symbols at all, from the memory image alone.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "memory/memory.h"
#include "ptmalloc/layout.h"
#include "target/target.h"

namespace heapwalk::ptmalloc {

/// Address ranges worth scanning for libc's static data: its writable mappings and the
/// anonymous mapping right after them (where .bss spills over).
std::vector<memory::Region> libc_data_regions(const target::Target& t, const std::string& libc_path);

struct ArenaCandidate {
  uint64_t address = 0;
  unsigned empty_bins = 0;  ///< bins pointing at themselves: the strongest signal
  unsigned ring = 0;        ///< arenas in its ring
};

/// Scans `regions` for a malloc_state that is main_arena under layout `l`: well-formed bins
/// (each either empty, pointing at itself, or pointing outside the struct), a `next` ring that
/// closes on itself within bounds and whose other members sit right after a heap_info that names
/// them, sane system_mem. Returns the best candidate, or nullopt (none, or ambiguous).
std::optional<ArenaCandidate> find_main_arena(memory::MemorySource& mem, const Layout& l,
                                              const std::vector<memory::Region>& regions);

/// Finds mp_ through its sbrk_base (within the first page of the main heap's mapping, whose start
/// is `sbrk_base`) and sane neighbouring fields.
/// `near` (main_arena) breaks ties: malloc.o puts mp_ close to main_arena.
std::optional<uint64_t> find_mp(memory::MemorySource& mem, const Layout& l, const std::vector<memory::Region>& regions,
                                uint64_t sbrk_base, uint64_t near);

/// The start of the main heap for an arena whose top is `top`: the start of the mapping that
/// holds top (brk heaps are one mapping).
std::optional<uint64_t> main_heap_start(const memory::MemorySource& mem, uint64_t top);

/// Finds the offset D from the thread pointer such that, for most threads, the word at
/// fs_base + D is one of `values` (a TLS variable's possible values). Searches the static TLS
/// area below the thread pointer, bounded. Returns nullopt when no offset wins a majority.
std::optional<int64_t> find_tls_offset(memory::MemorySource& mem, const std::vector<target::Thread>& threads,
                                       const std::set<uint64_t>& values, int64_t exclude = 0);

}  // namespace heapwalk::ptmalloc
