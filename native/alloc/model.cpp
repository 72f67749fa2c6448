#include "alloc/model.h"

namespace heapwalk::alloc {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Ptmalloc: return "ptmalloc";
    case Kind::Jemalloc: return "jemalloc";
    case Kind::Tcmalloc: return "tcmalloc";
  }
  return "unknown";
}

const char* state_name(State s) {
  switch (s) {
    case State::InUse: return "in-use";
    case State::Cached: return "cached";
    case State::Free: return "free";
    case State::Released: return "released";
    case State::Metadata: return "metadata";
  }
  return "unknown";
}

namespace {

std::string base_name(const std::string& path) { return path.substr(path.rfind('/') + 1); }

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

}  // namespace

std::vector<Detected> detect(target::Target& t) {
  // Target modules come from the address space (sorted by address), not from the link map, so
  // the load order is not known here. An allocator library is loaded (linked or LD_PRELOAD-ed)
  // to replace malloc: its interposed malloc precedes libc's in every lookup, so the first one
  // found answers malloc(). glibc's ptmalloc is always present (its main arena exists even when
  // unused) and owns malloc only when no other allocator is loaded.
  std::vector<Detected> out;
  for (const auto& m : t.modules()) {
    std::string b = base_name(m.path);
    if (starts_with(b, "libjemalloc.so"))
      out.push_back({Kind::Jemalloc, m.path, out.empty()});
    else if (starts_with(b, "libtcmalloc"))
      out.push_back({Kind::Tcmalloc, m.path, out.empty()});
  }
  Detected glibc{Kind::Ptmalloc, "", out.empty()};
  for (const auto& m : t.modules())
    if (starts_with(base_name(m.path), "libc.so")) {
      glibc.module = m.path;
      break;
    }
  out.push_back(glibc);
  return out;
}

}  // namespace heapwalk::alloc
