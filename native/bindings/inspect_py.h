// Dicts for the chunk inspection queries (ptmalloc/inspect.h): included by module.cpp only.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "bindings/pytext.h"
#include "ptmalloc/inspect.h"

namespace heapwalk::bindings {

namespace py = pybind11;

inline py::str inspect_str(const std::string& s) { return ustr(s); }

inline py::object inspect_opt(const std::optional<uint64_t>& v) {
  return v ? py::object(py::int_(*v)) : py::object(py::none());
}

inline std::string hex_bytes(const std::vector<uint8_t>& b) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(b.size() * 2);
  for (uint8_t c : b) {
    s += digits[c >> 4];
    s += digits[c & 15];
  }
  return s;
}

inline ptmalloc::ChunkState parse_state(const std::string& s) {
  using S = ptmalloc::ChunkState;
  for (S st : {S::Used, S::Tcache, S::Fastbin, S::Unsorted, S::Small, S::Large, S::Top, S::Mmapped, S::Fencepost})
    if (s == ptmalloc::state_name(st)) return st;
  return S::Used;
}

inline py::dict fields_dict(const ptmalloc::ChunkFields& f) {
  py::dict d;
  d["size_field"] = f.size_word;
  py::list flags;
  if (f.prev_inuse) flags.append("PREV_INUSE");
  if (f.is_mmapped) flags.append("IS_MMAPPED");
  if (f.non_main_arena) flags.append("NON_MAIN_ARENA");
  d["flags"] = flags;
  d["prev_size"] = inspect_opt(f.prev_size);
  d["fd"] = inspect_opt(f.fd);
  d["fd_stored"] = inspect_opt(f.fd_raw);
  d["fd_protected"] = f.fd_protected;
  d["bk"] = inspect_opt(f.bk);
  d["fd_nextsize"] = inspect_opt(f.fd_nextsize);
  d["bk_nextsize"] = inspect_opt(f.bk_nextsize);
  d["key"] = inspect_opt(f.key);
  d["key_matches"] = f.key_match.empty() ? py::object(py::none()) : py::object(inspect_str(f.key_match));
  d["key_owner_lwp"] = f.key_owner_lwp ? py::object(py::int_(*f.key_owner_lwp)) : py::object(py::none());
  d["bytes_at"] = f.mem;
  d["bytes"] = hex_bytes(f.bytes);
  return d;
}

inline py::dict address_dict(const ptmalloc::AddressInfo& a) {
  py::dict d;
  d["kind"] = a.kind;
  if (a.kind == "unmapped") return d;
  py::dict m;
  m["start"] = a.start;
  m["end"] = a.end;
  m["perms"] = std::string(a.read ? "r" : "-") + (a.write ? "w" : "-") + (a.exec ? "x" : "-");
  m["path"] = a.path.empty() ? py::object(py::none()) : py::object(inspect_str(a.path));
  d["mapping"] = m;
  if (a.kind == "stack") d["lwp"] = a.lwp;
  if (a.kind == "module") {
    d["module"] = inspect_str(a.module);
    d["module_base"] = a.module_base;
    d["symbol"] = a.symbol.empty() ? py::object(py::none()) : py::object(inspect_str(a.symbol));
    d["symbol_offset"] = a.symbol.empty() ? py::object(py::none()) : py::object(py::int_(a.symbol_offset));
  }
  return d;
}

inline py::list vis_list(const std::vector<ptmalloc::VisChunk>& v) {
  py::list l;
  for (const auto& c : v) {
    py::dict d;
    d["address"] = c.address;
    d["mem"] = c.address + 16;
    d["size"] = c.size;
    d["state"] = ptmalloc::state_name(c.state);
    d["bytes"] = hex_bytes(c.bytes);
    l.append(d);
  }
  return l;
}

inline py::dict free_dict(const ptmalloc::FreeVerdict& v) {
  py::dict d;
  d["address"] = v.mem;
  d["chunk"] = v.chunk;
  d["size"] = v.size;
  d["action"] = v.action;
  d["aborts"] = v.aborts;
  d["message"] = v.message.empty() ? py::object(py::none()) : py::object(inspect_str(v.message));
  d["arena"] = inspect_opt(v.arena);
  d["lwp"] = v.lwp ? py::object(py::int_(v.lwp)) : py::object(py::none());
  py::list checks;
  for (const auto& c : v.checks) {
    py::dict x;
    x["check"] = inspect_str(c.name);
    x["passed"] = c.passed;
    x["detail"] = inspect_str(c.detail);
    checks.append(x);
  }
  d["checks"] = checks;
  py::list notes;
  for (const auto& n : v.notes) notes.append(inspect_str(n));
  d["notes"] = notes;
  return d;
}

}  // namespace heapwalk::bindings
