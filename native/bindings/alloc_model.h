// Python views of the allocator-neutral model (native/alloc/model.h) for the per-allocation and
// per-thread commands on jemalloc and tcmalloc (issue 16): one set of functions for both, so the
// Python side dispatches once on Target.allocators(). Registered on Target by module.cpp:
// alloc_summary(), alloc_chunk_stream(), alloc_chunk(), alloc_tcache().
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>

#include "target/target.h"

namespace heapwalk::bindings {

/// `Target.alloc_summary(allocator=None)`: {"allocator", "version", "module", "layout_source",
/// "stats", "pools": [pool_dict], "thread_caches": [{lwp, address, bytes, objects, bins: [{size,
/// count, bytes}]}], "diagnostics"}. `allocator` ("jemalloc", "tcmalloc") picks a model; None:
/// the one that owns malloc. Raises heapwalk Error when the target uses neither.
pybind11::dict alloc_summary(target::Target& t, const std::optional<std::string>& allocator);

/// `Target.alloc_tcache(lwp=None, allocator=None)`: alloc_summary's thread caches (only LWP's
/// when given) with "allocator", "version", "diagnostics".
pybind11::dict alloc_tcache(target::Target& t, std::optional<int> lwp, const std::optional<std::string>& allocator);

/// `Target.alloc_chunk(addr, dump=64, allocator=None)`: {"allocator", "query", "allocation":
/// {address, size, state, pool, arena, pool_name, offset, size_class, span: {address, bytes,
/// kind, state, ...}, bytes (hex of the first `dump` bytes), bytes_at} or None, "diagnostics"}.
pybind11::dict alloc_chunk(target::Target& t, uint64_t address, uint64_t dump,
                           const std::optional<std::string>& allocator);

/// Registers AllocStream (batches of (address, size, state, pool index, pool address) tuples)
/// and returns a factory used by module.cpp's `Target.alloc_chunk_stream(state, limit, batch,
/// allocator)`. state: "all", "used" (in-use), "free" (every other state), or one neutral state
/// name ("in-use", "cached", "free-kept"... see alloc::state_name).
void register_alloc_types(pybind11::module_& m);
pybind11::object alloc_chunk_stream(pybind11::object target_ref, target::Target& t, const std::string& state,
                                    std::optional<uint64_t> limit, size_t batch,
                                    const std::optional<std::string>& allocator);

}  // namespace heapwalk::bindings
