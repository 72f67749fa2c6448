#include "bindings/alloc_report.h"

#include "bindings/pytext.h"

namespace py = pybind11;

namespace heapwalk::bindings {

namespace {

py::dict cause_dict(const analysis::AllocCause& c) {
  py::dict d;
  d["cause"] = ustr(c.cause);
  d["kind"] = ustr(c.kind);
  d["bytes"] = c.bytes;
  d["where"] = ustr(c.where);
  d["action"] = ustr(c.action);
  d["evidence"] = ustr(c.evidence);
  d["summary"] = ustr(c.summary);
  d["virtual"] = c.virtual_only;
  return d;
}

}  // namespace

py::list alloc_report(const std::vector<analysis::AllocRetention>& v) {
  py::list out;
  for (const auto& a : v) {
    py::dict d;
    d["allocator"] = alloc::kind_name(a.kind);
    d["version"] = ustr(a.version);
    d["module"] = ustr(a.module);
    d["layout_source"] = ustr(a.layout_source);
    d["owns_malloc"] = a.owns_malloc;
    d["stats"] = stats_dict(a.stats);
    py::dict f;
    for (const auto& [k, x] : a.figures) f[ustr(k)] = x;
    d["figures"] = f;
    d["in_use_bytes"] = a.in_use;
    d["cached_bytes"] = a.cached;
    d["free_bytes"] = a.free;
    d["released_bytes"] = a.released;
    d["metadata_bytes"] = a.metadata;
    d["reclaimable_bytes"] = a.reclaimable;
    py::list pools;
    for (const auto& p : a.pools) pools.append(pool_dict(p));
    d["arenas"] = pools;
    py::list caches;
    for (const auto& c : a.caches) {
      py::dict e;
      e["lwp"] = c.lwp;
      e["address"] = c.address;
      e["bytes"] = c.bytes;
      caches.append(e);
    }
    d["thread_caches"] = caches;
    py::list decay;
    for (const auto& [i, ms] : a.decay_ms) {
      py::dict e;
      e["arena"] = i;
      e["dirty_decay_ms"] = ms.first;
      e["muzzy_decay_ms"] = ms.second;
      decay.append(e);
    }
    d["decay"] = decay;
    py::list causes;
    for (const auto& c : a.causes) causes.append(cause_dict(c));
    d["causes"] = causes;
    d["in_use_summary"] = cause_dict(a.in_use_summary);
    if (a.nmt) {
      py::dict n;
      n["tracked_count"] = a.nmt->tracked_count;
      n["tracked_bytes"] = a.nmt->tracked_bytes;
      n["untracked_count"] = a.nmt->untracked_count;
      n["untracked_bytes"] = a.nmt->untracked_bytes;
      n["headers"] = a.nmt->canary ? "canary" : "none";
      d["nmt"] = n;
    } else {
      d["nmt"] = py::none();
    }
    out.append(d);
  }
  return out;
}

}  // namespace heapwalk::bindings
