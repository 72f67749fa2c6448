#include "bindings/jemalloc.h"

#include "alloc/model.h"
#include "bindings/pytext.h"
#include "jemalloc/model.h"

namespace py = pybind11;

namespace heapwalk::bindings {

namespace {

py::str text(const std::string& s) { return ustr(s); }

}  // namespace

py::list allocators(target::Target& t) {
  py::list out;
  for (const auto& d : alloc::detect(t)) {
    py::dict e;
    e["allocator"] = alloc::kind_name(d.kind);
    e["module"] = text(d.module);
    e["owns_malloc"] = d.owns_malloc;
    out.append(e);
  }
  return out;
}

py::dict jemalloc(target::Target& t, bool allocations) {
  std::unique_ptr<jemalloc::Model> m;
  {
    py::gil_scoped_release nogil;
    m = std::make_unique<jemalloc::Model>(t);
  }
  py::dict d;
  d["allocator"] = alloc::kind_name(m->kind());
  d["version"] = m->version();
  d["module"] = text(m->module());
  d["layout_source"] = m->layout_source();
  d["stats"] = stats_dict(m->stats());
  py::list arenas;
  for (const auto& p : m->pools()) arenas.append(pool_dict(p));
  d["arenas"] = arenas;
  py::list caches;
  for (const auto& c : m->thread_caches()) {
    py::dict e;
    e["lwp"] = c.lwp;
    e["address"] = c.address;
    e["bytes"] = c.bytes;
    py::list bins;
    for (const auto& b : c.bins) {
      py::dict x;
      x["size"] = b.size;
      x["count"] = b.count;
      bins.append(x);
    }
    e["bins"] = bins;
    caches.append(e);
  }
  d["tcaches"] = caches;
  d["rtree"] = m->rtree();
  if (allocations) {
    std::vector<alloc::Allocation> all;
    {
      py::gil_scoped_release nogil;
      m->walk([&](const alloc::Allocation& a) {
        all.push_back(a);
        return true;
      });
    }
    py::list l;
    for (const auto& a : all) l.append(py::make_tuple(a.address, a.size, alloc::state_name(a.state), a.pool));
    d["allocations"] = l;
  }
  d["diagnostics"] = diagnostics_list({&t.diagnostics(), &m->diagnostics()});
  return d;
}

py::dict jemalloc_chunks(target::Target& t, const std::string& state, std::optional<uint64_t> limit) {
  if (state != "all" && state != "used" && state != "free")
    throw py::value_error("state must be 'all', 'used' or 'free', not '" + state + "'");
  std::unique_ptr<jemalloc::Model> m;
  std::vector<alloc::Allocation> shown;
  uint64_t total = 0;
  {
    py::gil_scoped_release nogil;
    m = std::make_unique<jemalloc::Model>(t);
    m->walk([&](const alloc::Allocation& a) {
      bool used = a.state == alloc::State::InUse;
      if (state == "all" || (state == "used") == used) {
        ++total;
        if (!limit || shown.size() < *limit) shown.push_back(a);
      }
      return true;
    });
  }
  py::list l;
  for (const auto& a : shown) {
    py::dict c;
    c["address"] = a.address;
    c["size"] = a.size;
    c["state"] = alloc::state_name(a.state);
    c["arena"] = a.pool >= 0 ? py::object(py::int_(m->pools()[a.pool].address)) : py::object(py::none());
    l.append(c);
  }
  py::dict d;
  d["allocator"] = "jemalloc";
  d["chunks"] = l;
  d["total"] = total;
  d["diagnostics"] = diagnostics_list({&t.diagnostics(), &m->diagnostics()});
  return d;
}

}  // namespace heapwalk::bindings
