// Reading glibc's malloc structure layout from DWARF (libdw), when a debug file is present.
#pragma once

#include <string>
#include <vector>

#include "ptmalloc/layout.h"

namespace heapwalk::ptmalloc {

/// Overwrites the offsets of `layout` with those DWARF gives for malloc.c's structures in
/// `debug_path` (malloc_state, malloc_par, _heap_info, tcache_perthread_struct, tcache_entry).
/// Returns the fields that DWARF set and that differed from `layout` in `changed`.
/// Returns false (layout untouched) when the file has no DWARF for malloc.c.
bool layout_from_dwarf(const std::string& debug_path, Layout& layout, std::vector<std::string>& changed);

}  // namespace heapwalk::ptmalloc
