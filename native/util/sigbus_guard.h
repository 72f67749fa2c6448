// A guard against files that shrink while heapwalk has them mapped (issue 14 item 10).
//
// Reading a page of a mapped file beyond its current end raises SIGBUS: a core copied or
// truncated while it is analysed, a library replaced by a package upgrade. Registered mappings
// are protected by a process-wide SIGBUS handler that maps a page of zeros over the faulting
// page and counts it, so the access completes (reading zeros, as for memory a core did not
// save) and the analysis goes on to report a "truncated" diagnostic instead of the process (or
// gdb hosting it) dying. A fault outside every registered mapping goes to the previous handler
// (or the default action), as if the guard were not there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace heapwalk::util {

/// Protects [base, base + len) (page-aligned base) as the mapping of `name`. Returns false
/// when every slot is taken (the mapping is then unprotected).
bool guard_mapping(const void* base, size_t len, const std::string& name);
/// Stops protecting the mapping that starts at `base` (before it is unmapped).
void unguard_mapping(const void* base);

struct ShrunkFile {
  std::string name;
  uint64_t pages = 0;  ///< pages read as zeros because the file had shrunk
};
/// The guarded mappings that faulted so far, with their page counts.
std::vector<ShrunkFile> shrunk_files();

}  // namespace heapwalk::util
