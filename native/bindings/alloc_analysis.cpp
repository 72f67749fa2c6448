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

constexpr const char* kSchema = "heapwalk/1";

py::object opt(const std::optional<uint64_t>& v) { return v ? py::object(py::int_(*v)) : py::object(py::none()); }

py::list diagnostics(std::initializer_list<const Diagnostics*> lists) {
  py::list out;
  for (const Diagnostics* ds : lists)
    for (const auto& x : ds->items()) {
      py::dict e;
      e["kind"] = ustr(x.kind);
      e["address"] = opt(x.address);
      e["arena"] = opt(x.arena);
      e["detail"] = ustr(x.detail);
      e["severity"] = severity_name(x.severity);
      out.append(e);
    }
  return out;
}

// The rows of module.cpp's classify document; examples are user pointers here.
py::list class_rows(const std::vector<analysis::ClassRow>& rows, std::optional<uint64_t> top) {
  py::list l;
  for (const auto& r : rows) {
    if (top && l.size() >= *top) break;
    py::dict x;
    x["name"] = ustr(r.name);
    x["kind"] = ustr(r.kind);
    x["count"] = r.stats.count;
    x["bytes"] = r.stats.bytes;
    x["example"] = r.stats.example;
    x["example_mem"] = r.stats.example ? py::object(py::int_(r.stats.example)) : py::object(py::none());
    if (!r.sample.empty()) x["sample"] = ustr(r.sample);
    l.append(x);
  }
  return l;
}

py::dict count(const ptmalloc::Count& c) {
  py::dict d;
  d["count"] = c.count;
  d["bytes"] = c.bytes;
  return d;
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

}  // namespace

std::unique_ptr<alloc::Model> open_model(target::Target& t, const std::string& allocator) {
  if (allocator == "jemalloc") return std::make_unique<jemalloc::Model>(t);
  if (allocator == "tcmalloc") {
    const target::Module* m = tcmalloc::tcmalloc_module(t);
    if (!m) throw Error("no tcmalloc library in this target");
    return std::make_unique<tcmalloc::Model>(t, *m);
  }
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
  py::dict out;
  out["schema"] = kSchema;
  out["allocator"] = alloc::kind_name(m->kind());
  out["chunks"] = res.chunks;
  out["vtable_symbols"] = res.vtables_known;
  out["classes"] = class_rows(res.used, top);
  if (free_chunks) out["free_classes"] = class_rows(res.free, top);
  py::list arenas;
  for (const auto& a : res.arenas) {
    py::dict d;
    d["arena"] = arena_or_none(a.arena);
    d["classes"] = class_rows(a.used, top);
    if (free_chunks) d["free_classes"] = class_rows(a.free, top);
    arenas.append(d);
  }
  out["arenas"] = arenas;
  if (!list.empty()) {
    py::list l;
    for (const auto& c : res.listed) {
      py::dict x;
      x["address"] = c.chunk;
      x["mem"] = c.chunk;
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
  out["diagnostics"] = diagnostics({&t.diagnostics(), &m->diagnostics()});
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
  auto set = [&](const ptmalloc::Count& c, const std::vector<analysis::SizeCount>& sizes) {
    py::dict d = count(c);
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
    x["state"] = "used";
    x["arena"] = arena_or_none(c.arena);
    x["unreferenced"] = c.unreferenced;
    listed.append(x);
  }
  leaked["chunks"] = addrs;
  leaked["classes"] = class_rows(leaked_classes, std::nullopt);
  leaked["listed"] = listed;
  leaked["truncated"] = res.truncated;
  py::list by_arena;
  for (const auto& [a, c] : res.leaked_by_arena) {
    py::dict x = count(c);
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
  out["allocator"] = alloc::kind_name(m->kind());
  out["nodes"] = count(res.nodes);
  out["reachable"] = count(res.reachable);
  out["leaked"] = leaked;
  out["unreferenced"] = set(res.unreferenced, res.unreferenced_sizes);
  out["roots"] = roots;
  out["anon_roots"] = anon_roots;
  out["words_scanned"] = res.words_scanned;
  out["seconds"] = res.seconds;
  out["diagnostics"] = diagnostics({&t.diagnostics(), &m->diagnostics(), &res.diagnostics});
  return out;
}

}  // namespace heapwalk::bindings
