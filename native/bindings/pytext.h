// Python values from what the target supplied, shared by every binding file (module.cpp,
// inspect_py.h, jemalloc.cpp, tcmalloc_binding.cpp): one decoder for target text, one dict per
// allocator-neutral pool (alloc/model.h).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <map>
#include <string>

#include "alloc/model.h"

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
