// `report`'s part for jemalloc and tcmalloc (issue 16), kept out of module.cpp: the engine's
// analysis (analysis/alloc_retention.h) as Python dicts.
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

#include "analysis/alloc_retention.h"

namespace heapwalk::bindings {

/// [{allocator, version, module, layout_source, owns_malloc, stats, figures, in_use_bytes,
/// cached_bytes, free_bytes, released_bytes, metadata_bytes, reclaimable_bytes, arenas (pool
/// dicts), thread_caches: [{lwp, address, bytes}], decay_ms: [{arena, dirty, muzzy}], causes:
/// [{cause, kind, bytes, where, action, evidence, summary, virtual}], in_use_summary}]
/// (API.md, "report").
pybind11::list alloc_report(const std::vector<analysis::AllocRetention>& v);

}  // namespace heapwalk::bindings
