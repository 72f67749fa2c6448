// Python values from what the target supplied, shared by every binding file (module.cpp,
// inspect_py.h, jemalloc.cpp, tcmalloc_binding.cpp, alloc_*.cpp): one decoder for target text,
// one diagnostics list, one dict per allocator-neutral pool (alloc/model.h).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>

#include "alloc/model.h"
#include "ptmalloc/heap.h"
#include "util/diagnostics.h"
#include "util/sigbus_guard.h"

namespace heapwalk::bindings {

/// A Python str from bytes the target supplied (file names, libc's directory, the JDK version,
/// NMT category names, symbols, text samples, messages naming any of them): never assumed to be
/// UTF-8. pybind11's implicit std::string -> str decodes strictly and throws UnicodeDecodeError on
/// one stray byte (a Latin-1 sample, a UTF-8 string cut mid-character, `\xff` in an NT_FILE
/// name); here invalid bytes become `\xNN` escapes (backslashreplace), so every conversion
/// succeeds and the text stays printable. Control characters are escaped later, by the renderers
/// (python/heapwalk/render.py `safe`).
inline pybind11::str ustr(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
  if (!o) throw pybind11::error_already_set();
  return pybind11::reinterpret_steal<pybind11::str>(o);
}
inline pybind11::str ustr(const char* s) { return ustr(std::string(s ? s : "")); }

/// Every document's "schema".
constexpr const char* kSchema = "heapwalk/1";

/// An int, or None.
inline pybind11::object opt(const std::optional<uint64_t>& v) {
  return v ? pybind11::object(pybind11::int_(*v)) : pybind11::object(pybind11::none());
}

/// A document's "diagnostics": files that shrank while mapped, then each list's items and how
/// many it dropped.
inline pybind11::list diagnostics_list(std::initializer_list<const Diagnostics*> lists) {
  pybind11::list out;
  // Files that shrank while mapped (util/sigbus_guard.h): their vanished pages read as zeros.
  for (const auto& f : util::shrunk_files()) {
    pybind11::dict e;
    e["kind"] = "truncated";
    e["address"] = pybind11::none();
    e["arena"] = pybind11::none();
    e["detail"] = ustr(f.name + " shrank while heapwalk read it: " + std::to_string(f.pages) +
                       " pages beyond its new end read as zeros (results from them may be incomplete)");
    e["severity"] = "error";
    out.append(e);
  }
  for (const Diagnostics* d : lists) {
    for (const auto& x : d->items()) {
      pybind11::dict e;
      e["kind"] = ustr(x.kind);
      e["address"] = opt(x.address);
      e["arena"] = opt(x.arena);
      e["detail"] = ustr(x.detail);
      e["severity"] = severity_name(x.severity);
      out.append(e);
    }
    if (d->dropped()) {
      pybind11::dict e;
      e["kind"] = "note";
      e["address"] = pybind11::none();
      e["arena"] = pybind11::none();
      e["detail"] = std::to_string(d->dropped()) + " more diagnostics not shown";
      e["severity"] = severity_name(Severity::Note);
      out.append(e);
    }
  }
  return out;
}

/// {"count", "bytes"}.
inline pybind11::dict count_dict(const ptmalloc::Count& c) {
  pybind11::dict d;
  d["count"] = c.count;
  d["bytes"] = c.bytes;
  return d;
}

/// An allocator's statistics under its own names.
inline pybind11::dict stats_dict(const std::map<std::string, uint64_t>& m) {
  pybind11::dict d;
  for (const auto& [k, v] : m) d[ustr(k)] = v;
  return d;
}

/// One pool of the allocator-neutral model.
inline pybind11::dict pool_dict(const alloc::Pool& p) {
  pybind11::dict a;
  a["index"] = p.index;
  a["address"] = p.address;
  a["name"] = ustr(p.name);
  a["stats"] = stats_dict(p.stats);
  a["in_use"] = p.in_use;
  a["cached"] = p.cached;
  a["free"] = p.free;
  a["released"] = p.released;
  a["metadata"] = p.metadata;
  a["reclaimable"] = p.reclaimable;
  a["allocations"] = p.allocations;
  return a;
}

}  // namespace heapwalk::bindings
