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

namespace {

/// An allocator linked statically into `m` (typically the executable): the module defines malloc
/// itself and carries the allocator's own message strings (jemalloc prefixes its messages with
/// "<jemalloc>: ", gperftools reads its TCMALLOC_* environment variables). Both survive `strip`.
std::optional<Kind> static_allocator(target::Target& t, const target::Module& m) {
  auto f = t.module_file(m, /*quiet=*/true);
  if (!f) return std::nullopt;
  auto sym = f->symbol("malloc");
  if (!sym || sym->value == 0) return std::nullopt;
  if (!f->find_text("<jemalloc>: ").empty()) return Kind::Jemalloc;
  if (!f->find_text("TCMALLOC_RELEASE_RATE").empty()) return Kind::Tcmalloc;
  return std::nullopt;
}

}  // namespace

std::vector<Detected> detect(target::Target& t) {
  // Target modules come from the address space (sorted by address), not from the link map, so
  // the load order is not known here. An allocator library is loaded (linked or LD_PRELOAD-ed)
  // to replace malloc: its interposed malloc precedes libc's in every lookup, so the first one
  // found answers malloc(). An allocator linked statically into the executable precedes them
  // all (the executable is first in every lookup). glibc's ptmalloc is always present (its main
  // arena exists even when unused) and owns malloc only when no other allocator is loaded.
  std::vector<Detected> out;
  for (const auto& m : t.modules()) {
    std::string b = base_name(m.path);
    if (starts_with(b, "lib") || starts_with(b, "ld-")) continue;
    if (auto k = static_allocator(t, m)) out.push_back({*k, m.path, out.empty()});
  }
  for (const auto& m : t.modules()) {
    std::string b = base_name(m.path);
    if (starts_with(b, "libjemalloc.so"))
      out.push_back({Kind::Jemalloc, m.path, out.empty()});
    else if (starts_with(b, "libtcmalloc") && b.find("debug") == std::string::npos &&
             b.find(".so") != std::string::npos)
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

const target::Module* allocator_module(target::Target& t, Kind k) {
  for (const auto& d : detect(t)) {
    if (d.kind != k || d.module.empty()) continue;
    for (const auto& m : t.modules())
      if (m.path == d.module) return &m;
  }
  return nullptr;
}

}  // namespace heapwalk::alloc
