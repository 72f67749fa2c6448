// Bindings for the allocator-neutral model and jemalloc (issue 16), kept out of module.cpp.
#pragma once

#include <pybind11/pybind11.h>

#include <optional>
#include <string>

#include "target/target.h"

namespace heapwalk::bindings {

/// `Target.allocators()`: alloc::detect's list, malloc owner first: [{allocator, module,
/// owns_malloc}].
pybind11::list allocators(target::Target& t);

/// `Target.jemalloc()`: {"allocator": "jemalloc", "version", "module", "layout_source",
/// "stats": {stats.*}, "arenas": [{index, address, name, stats, in_use, cached, free, released,
/// metadata, reclaimable, allocations}], "tcaches": [{lwp, address, bytes, bins: [{size,
/// count}]}], "rtree", "diagnostics"}, and with `allocations`, "allocations": [(address, size,
/// state, pool)] in address order. Raises heapwalk Error when the target has no jemalloc.
pybind11::dict jemalloc(target::Target& t, bool allocations = false);

/// `Target.jemalloc_chunks(state, limit)`: {"allocator": "jemalloc", "chunks": [{address, size,
/// state, arena}] in address order, "total"}; state "all", "used" (in-use) or "free" (cached,
/// free, released); at most `limit` listed (None: all), `total` counts every match.
pybind11::dict jemalloc_chunks(target::Target& t, const std::string& state, std::optional<uint64_t> limit);

}  // namespace heapwalk::bindings
