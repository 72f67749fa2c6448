#include "bindings/alloc_analysis.h"

#include <algorithm>
#include <vector>

#include "analysis/classify.h"
#include "analysis/reach.h"
#include "bindings/pytext.h"
#include "jemalloc/model.h"
#include "tcmalloc/model.h"
#include "util/errors.h"

namespace py = pybind11;

namespace heapwalk::bindings {

namespace {

// Class rows; `header` is what lies before the user pointer (ptmalloc's 16-byte chunk header,
// 0 for slots without headers).
py::list class_rows(const std::vector<analysis::ClassRow>& rows, std::optional<uint64_t> top, uint64_t header) {
  py::list l;
  for (const auto& r : rows) {
    if (top && l.size() >= *top) break;
    py::dict x;
    x["name"] = ustr(r.name);
    x["kind"] = ustr(r.kind);
    x["count"] = r.stats.count;
    x["bytes"] = r.stats.bytes;
    x["example"] = r.stats.example;
    x["example_mem"] = r.stats.example ? py::object(py::int_(r.stats.example + header)) : py::object(py::none());
    if (!r.sample.empty()) x["sample"] = ustr(r.sample);
    l.append(x);
  }
  return l;
}

py::list size_rows(const std::vector<analysis::SizeCount>& v) {
  py::list l;
  for (const auto& s : v) {
    py::dict x;
    x["size"] = s.size;
    x["count"] = s.count.count;
    x["bytes"] = s.count.bytes;
    l.append(x);
  }
  return l;
}

py::object arena_or_none(uint64_t a) { return a ? py::object(py::int_(a)) : py::object(py::none()); }

/// `doc` with "allocator" right after "schema".
py::dict with_allocator(const alloc::Model& m, const py::dict& doc) {
  py::dict out;
  out["schema"] = kSchema;
  out["allocator"] = alloc::kind_name(m.kind());
  for (const auto& kv : doc) out[kv.first] = kv.second;
  return out;
}

}  // namespace

py::dict classify_doc(const analysis::ClassifyResult& res, bool free_chunks, std::optional<uint64_t> top,
                      const std::string& list, uint64_t header) {
  py::dict out;
  out["schema"] = kSchema;
  out["chunks"] = res.chunks;
  out["vtable_symbols"] = res.vtables_known;
  out["classes"] = class_rows(res.used, top, header);
  if (free_chunks) out["free_classes"] = class_rows(res.free, top, header);
  py::list arenas;
  for (const auto& a : res.arenas) {
    py::dict d;
    d["arena"] = arena_or_none(a.arena);
    d["classes"] = class_rows(a.used, top, header);
    if (free_chunks) d["free_classes"] = class_rows(a.free, top, header);
    arenas.append(d);
  }
  out["arenas"] = arenas;
  if (!list.empty()) {
    py::list l;
    for (const auto& c : res.listed) {
      py::dict x;
      x["address"] = c.chunk;
      x["mem"] = c.chunk + header;
      x["size"] = c.size;
      x["used"] = c.used;
      l.append(x);
    }
    py::dict d;
    d["class"] = ustr(list);
    d["chunks"] = l;
    d["total"] = res.listed_total;
    d["truncated"] = res.listed_total > res.listed.size();
    out["list"] = d;
  }
  return out;
}

py::dict leaks_doc(const analysis::ReachResult& res, const std::vector<analysis::ClassRow>& leaked_classes,
                   bool anon_roots, uint64_t header) {
  auto set = [&](const ptmalloc::Count& c, const std::vector<analysis::SizeCount>& sizes) {
    py::dict d = count_dict(c);
    d["sizes"] = size_rows(sizes);
    return d;
  };
  py::dict leaked = set(res.leaked, res.leaked_sizes);
  py::list addrs, listed;
  for (const auto& c : res.chunks) {
    addrs.append(py::int_(c.address));
    py::dict x;
    x["address"] = c.address;
    x["size"] = c.size;
    x["state"] = c.mmapped ? "mmapped" : "used";
    x["arena"] = arena_or_none(c.arena);
    x["unreferenced"] = c.unreferenced;
    listed.append(x);
  }
  leaked["chunks"] = addrs;
  leaked["classes"] = class_rows(leaked_classes, std::nullopt, header);
  leaked["listed"] = listed;
  leaked["truncated"] = res.truncated;
  py::list by_arena;
  for (const auto& [a, c] : res.leaked_by_arena) {
    py::dict x = count_dict(c);
    x["arena"] = arena_or_none(a);
    by_arena.append(x);
  }
  leaked["arenas"] = by_arena;
  py::list roots;
  for (const auto& r : res.roots) {
    py::dict x;
    x["kind"] = ustr(r.kind);
    x["ranges"] = r.ranges;
    x["bytes"] = r.bytes;
    x["unreadable"] = r.unreadable;
    roots.append(x);
  }
  py::dict out;
  out["schema"] = kSchema;
  out["nodes"] = count_dict(res.nodes);
  out["reachable"] = count_dict(res.reachable);
  out["leaked"] = leaked;
  out["unreferenced"] = set(res.unreferenced, res.unreferenced_sizes);
  out["roots"] = roots;
  out["anon_roots"] = anon_roots;
  out["words_scanned"] = res.words_scanned;
  out["seconds"] = res.seconds;
  return out;
}

std::unique_ptr<alloc::Model> open_model(target::Target& t, std::optional<alloc::Kind> kind) {
  if (!kind)
    for (const auto& d : alloc::detect(t))
      if (d.owns_malloc && d.kind != alloc::Kind::Ptmalloc) {
        kind = d.kind;
        break;
      }
  if (!kind || *kind == alloc::Kind::Ptmalloc)
    throw Error("the target's malloc is glibc's (no jemalloc or tcmalloc owns it)");
  if (*kind == alloc::Kind::Jemalloc) return std::make_unique<jemalloc::Model>(t);
  const target::Module* m = tcmalloc::tcmalloc_module(t);
  if (!m) throw Error("the target does not use tcmalloc (no libtcmalloc module)");
  return std::make_unique<tcmalloc::Model>(t, *m);
}

std::unique_ptr<alloc::Model> open_model(target::Target& t, const std::string& allocator) {
  if (allocator == "jemalloc") return open_model(t, alloc::Kind::Jemalloc);
  if (allocator == "tcmalloc") return open_model(t, alloc::Kind::Tcmalloc);
  throw Error("no allocator model named '" + allocator + "' (jemalloc, tcmalloc)");
}

py::dict alloc_classify(target::Target& t, std::unique_ptr<target::ModuleIndex>& modules, const std::string& allocator,
                        bool free_chunks, std::optional<uint64_t> top, const std::string& list, uint64_t list_limit) {
  std::unique_ptr<alloc::Model> m;
  analysis::ClassifyResult res;
  {
    py::gil_scoped_release nogil;
    m = open_model(t, allocator);
    if (!modules) modules = std::make_unique<target::ModuleIndex>(t);
    analysis::ClassifyOptions o;
    o.free_chunks = free_chunks;
    o.list = list;
    o.list_limit = list_limit;
    res = analysis::classify(*m, t, *modules, o);
  }
  py::dict out = with_allocator(*m, classify_doc(res, free_chunks, top, list, 0));
  out["diagnostics"] = diagnostics_list({&t.diagnostics(), &m->diagnostics()});
  return out;
}

py::dict alloc_leaks(target::Target& t, std::unique_ptr<target::ModuleIndex>& modules, const std::string& allocator,
                     std::optional<uint64_t> limit, bool largest, bool anon_roots) {
  std::unique_ptr<alloc::Model> m;
  analysis::ReachResult res;
  std::vector<uint64_t> leaked_addrs;
  std::vector<analysis::ClassRow> leaked_classes;
  {
    py::gil_scoped_release nogil;
    m = open_model(t, allocator);
    analysis::ReachOptions o;
    o.limit = limit.value_or(0);
    o.largest = largest;
    o.anon_roots = anon_roots;
    o.all_leaked = &leaked_addrs;
    res = analysis::find_leaks(*m, t, o);
    if (!leaked_addrs.empty()) {
      if (!modules) modules = std::make_unique<target::ModuleIndex>(t);
      std::sort(leaked_addrs.begin(), leaked_addrs.end());
      analysis::ClassifyOptions co;
      co.only_chunks = &leaked_addrs;
      leaked_classes = analysis::classify(*m, t, *modules, co).used;
    }
  }
  py::dict out = with_allocator(*m, leaks_doc(res, leaked_classes, anon_roots, 0));
  out["diagnostics"] = diagnostics_list({&t.diagnostics(), &m->diagnostics(), &res.diagnostics});
  return out;
}

}  // namespace heapwalk::bindings
