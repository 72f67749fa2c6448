#include "bindings/tcmalloc_binding.h"

#include <memory>

#include "bindings/pytext.h"
#include "tcmalloc/model.h"
#include "util/errors.h"

namespace py = pybind11;

namespace heapwalk::bindings {

namespace {

py::str text(const std::string& s) { return ustr(s); }

std::unique_ptr<tcmalloc::Model> open_model(target::Target& t) {
  const target::Module* m = tcmalloc::tcmalloc_module(t);
  if (!m) return nullptr;
  py::gil_scoped_release nogil;
  return std::make_unique<tcmalloc::Model>(t, *m);
}

template <class Map>
py::dict dict_of(const Map& m) {
  py::dict d;
  for (const auto& [k, v] : m) d[text(k)] = v;
  return d;
}

}  // namespace

py::object tcmalloc_summary(target::Target& t) {
  auto model = open_model(t);
  if (!model) return py::none();
  py::dict d;
  d["allocator"] = "tcmalloc";
  d["version"] = text(model->version());
  d["layout_source"] = text(model->layout_source());
  d["module"] = text(model->module_path());
  d["globals"] = dict_of(model->globals());
  py::dict how;
  for (const auto& [k, v] : model->how()) how[text(k)] = text(v);
  d["how"] = how;
  d["stats"] = dict_of(model->stats());
  py::list pools;
  for (const auto& p : model->pools()) pools.append(pool_dict(p));
  d["pools"] = pools;
  py::list classes;
  for (const auto& c : model->size_classes()) {
    if (c.cl == 0) continue;
    py::dict x;
    x["class"] = c.cl;
    x["size"] = c.size;
    x["pages"] = c.pages;
    x["batch"] = c.batch;
    x["central_free"] = c.central_free;
    x["transfer_free"] = c.transfer_free;
    x["thread_cached"] = c.thread_cached;
    x["num_spans"] = c.num_spans;
    x["spans_seen"] = c.spans_seen;
    classes.append(x);
  }
  d["size_classes"] = classes;
  py::list caches;
  for (const auto& c : model->thread_caches()) {
    py::dict x;
    x["lwp"] = c.lwp ? py::object(py::int_(c.lwp)) : py::object(py::none());
    x["address"] = c.address;
    x["bytes"] = c.bytes;
    py::list bins;
    for (const auto& b : c.bins) bins.append(py::make_tuple(b.size, b.count));
    x["bins"] = bins;
    caches.append(x);
  }
  d["thread_caches"] = caches;
  uint64_t span_count[3] = {}, span_bytes[3] = {};
  for (const auto& s : model->spans()) {
    ++span_count[s.location % 3];
    span_bytes[s.location % 3] += s.bytes;
  }
  py::dict spans;
  const char* loc[3] = {"in_use", "normal_free", "returned"};
  for (int i = 0; i < 3; ++i) {
    py::dict x;
    x["count"] = span_count[i];
    x["bytes"] = span_bytes[i];
    spans[loc[i]] = x;
  }
  d["spans"] = spans;
  py::list diags;
  for (const auto& x : model->diagnostics().items()) {
    py::dict e;
    e["kind"] = text(x.kind);
    e["address"] = x.address ? py::object(py::int_(*x.address)) : py::object(py::none());
    e["detail"] = text(x.detail);
    e["severity"] = severity_name(x.severity);
    diags.append(e);
  }
  d["diagnostics"] = diags;
  return d;
}

py::list tcmalloc_allocations(target::Target& t, const std::string& state) {
  if (state != "all" && state != "in-use" && state != "cached" && state != "free" && state != "released")
    throw py::value_error("state must be all, in-use, cached, free or released, not '" + state + "'");
  auto model = open_model(t);
  if (!model) throw Error("the target does not use tcmalloc (no libtcmalloc module)");
  std::vector<alloc::Allocation> out;
  {
    py::gil_scoped_release nogil;
    model->walk([&](const alloc::Allocation& a) {
      if (state == "all" || state == alloc::state_name(a.state)) out.push_back(a);
      return true;
    });
  }
  py::list l;
  for (const auto& a : out) l.append(py::make_tuple(a.address, a.size, alloc::state_name(a.state)));
  return l;
}

}  // namespace heapwalk::bindings
