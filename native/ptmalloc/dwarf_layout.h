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
///
/// Parsing costs about 90 ms (libdw decompresses every debug section), so the structures read are
/// cached per `build_id` in $HEAPWALK_CACHE_DIR, else $XDG_CACHE_HOME/heapwalk, else
/// ~/.cache/heapwalk (HEAPWALK_NO_CACHE=1 turns it off); an entry is used only while the debug
/// file keeps its size and mtime. `cache_state` receives "off", "miss", "hit FILE" or "stored FILE".
bool layout_from_dwarf(const std::string& debug_path, const std::string& build_id, Layout& layout,
                       std::vector<std::string>& changed, std::string* cache_state = nullptr);

}  // namespace heapwalk::ptmalloc
