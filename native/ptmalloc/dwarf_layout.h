// Reading glibc's malloc structure layout from DWARF (libdw), when a debug file is present.
#pragma once

#include <string>
#include <vector>

#include "ptmalloc/layout.h"
#include "target/elf_file.h"

namespace heapwalk::ptmalloc {

/// Overwrites the offsets of `layout` with those DWARF gives for malloc.c's structures in the
/// debug file `debug` (read through its descriptor; malloc_state, malloc_par, _heap_info,
/// tcache_perthread_struct, tcache_entry). The caller has checked its build-id.
/// Returns the fields that DWARF set and that differed from `layout` in `changed`.
/// Returns false (layout untouched) when the file has no DWARF for malloc.c.
///
/// Parsing costs about 90 ms (libdw decompresses every debug section), so the structures read are
/// cached in $HEAPWALK_CACHE_DIR, else $XDG_CACHE_HOME/heapwalk, else ~/.cache/heapwalk
/// (HEAPWALK_NO_CACHE=1 turns it off), keyed by `build_id` and the SHA-256 of the debug file's
/// bytes. A cache directory not owned by the effective user, or writable by group or others, is
/// not used (a line in `notes`). `read_cache` false: parse DWARF even when an entry exists, and
/// replace it. `cache_state` receives "off", "miss", "hit FILE" or "stored FILE".
bool layout_from_dwarf(const target::ElfFile& debug, const std::string& build_id, Layout& layout,
                       std::vector<std::string>& changed, std::string* cache_state = nullptr,
                       std::vector<std::string>* notes = nullptr, bool read_cache = true);

/// Removes the cache entry for `debug` (a cached layout that the image contradicts).
void drop_cached_layout(const target::ElfFile& debug, const std::string& build_id);

}  // namespace heapwalk::ptmalloc
