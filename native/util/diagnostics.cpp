#include "util/diagnostics.h"

#include <cstdio>

namespace heapwalk {

std::string hex(uint64_t value) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
  return buf;
}

const char* severity_name(Severity s) {
  switch (s) {
    case Severity::Note: return "note";
    case Severity::Warning: return "warning";
    case Severity::Error: break;
  }
  return "error";
}

// The rule (README "Exit status"): a Warning leaves the result complete and exact, an Error means
// the result is incomplete or may be wrong. A kind belongs to one severity: when a fallback loses
// information, it reports a different kind ("incomplete") from the one that only says a file or
// symbol was not used ("symbols").
const std::vector<DiagnosticKind>& diagnostic_kinds() {
  static const std::vector<DiagnosticKind> kinds = {
      {"note", Severity::Note,
       "information: how a figure was obtained, a fallback that loses nothing, the live capture"},
      {"symbols", Severity::Warning,
       "a file or symbol was not found or not used (not under --sysroot, another build-id, libjvm "
       "without NMT tables): heapwalk used the method that needs none and found every structure"},
      {"incomplete", Severity::Error,
       "a part of the target could not be analysed by any method (the threads' tcache without TLS "
       "symbols, a non-contiguous main arena): figures that depend on it are approximate"},
      {"bad_size", Severity::Error, "a chunk's size field is impossible there (smashed header); the walk resynced"},
      {"bad_fd_bk", Severity::Error, "a free list's fd/bk links, or the arena ring, are broken"},
      {"cycle", Severity::Error,
       "a list loops (free list, arena ring, heap_info chain, NMT table); read up to the loop"},
      {"double_free", Severity::Error, "a chunk is on two free lists"},
      {"outside_heap", Severity::Error,
       "a free-listed chunk lies outside its arena's heaps or off the walk's chunk boundaries"},
      {"misaligned", Severity::Error, "a chunk or list entry is not 16-byte aligned; the list was cut there"},
      {"unreadable", Severity::Error, "memory a structure needs is not in the image (not saved in the core, unmapped)"},
      {"truncated", Severity::Error, "the core file is cut short, or a table holds more entries than heapwalk reads"},
      {"bad_tcache", Severity::Error,
       "a thread's tcache_perthread_struct or one of its bins is inconsistent; it was ignored"},
      {"heap_info", Severity::Error, "a heap_info is unreadable or names another arena; that heap chain ends there"},
      {"mmapped_mismatch", Severity::Error,
       "the mmapped-chunk scan disagrees with glibc's counters (mp_.n_mmaps, mp_.mmapped_mem): totals "
       "are glibc's, the chunk list may miss some"},
      {"layout", Severity::Error,
       "a structure does not have the shape its profile expects (NMT malloc site table): part of it was "
       "not read, or checked less"},
  };
  return kinds;
}

Severity severity_of(std::string_view kind) {
  for (const auto& k : diagnostic_kinds())
    if (kind == k.kind) return k.severity;
  return Severity::Error;
}

}  // namespace heapwalk
