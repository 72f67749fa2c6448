// Finding glibc and its malloc state in a target.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "ptmalloc/layout.h"
#include "target/target.h"

namespace heapwalk::ptmalloc {

/// Where glibc's malloc state lives and how each piece was found.
struct GlibcInfo {
  std::string version;         ///< "2.36"
  std::string version_source;  ///< "banner", "verdef", "override"
  std::string layout_source;   ///< e.g. "profile 2.35 + debug-file symbols"
  const Layout* layout = nullptr;
  std::shared_ptr<Layout> dwarf_layout;  ///< owns `layout` when DWARF supplied it
  std::string libc_path, build_id, debug_file;
  uint64_t libc_base = 0;
  uint64_t main_arena = 0, mp = 0;
  std::optional<int64_t> tcache_tpoff, thread_arena_tpoff;  ///< TLS offsets from the thread pointer
  std::optional<uint64_t> tcache_key;
  std::optional<uint64_t> global_max_fast;  ///< value of the static `global_max_fast` (symbols needed)
  std::optional<uint64_t> tcache_dummy;     ///< 2.43+: address of __tcache_dummy
  std::map<std::string, std::string> how;   ///< symbol -> "override" | "debug-symtab" | "symtab" | ...
};

/// Locates glibc in `t`. Throws SymbolError (one line with a hint) when main_arena or mp_ cannot
/// be found; records everything else as diagnostics on the target.
GlibcInfo locate_glibc(target::Target& t, const std::string& version_hint = "");

}  // namespace heapwalk::ptmalloc
