// classify and leaks over the allocator that answers malloc when it is not glibc's (issue 16):
// jemalloc::Model or tcmalloc::Model through the allocator-neutral analyses, registered on
// Target by module.cpp as Target.alloc_classify() and Target.alloc_leaks().
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "alloc/model.h"
#include "analysis/classify.h"
#include "analysis/reach.h"
#include "target/symbols.h"
#include "target/target.h"

namespace heapwalk::bindings {

/// The `classify` document of `res` (free_classes when `free_chunks`, rows up to `top`, the
/// `list` class's chunks); `header` is what precedes the user pointer: 16 for ptmalloc's chunks
/// (addresses are headers), 0 for slots without headers. No "diagnostics": the caller's.
pybind11::dict classify_doc(const analysis::ClassifyResult& res, bool free_chunks, std::optional<uint64_t> top,
                            const std::string& list, uint64_t header);

/// The `leaks` document of `res` and the classes of its leaked chunks; `header` as above. No
/// "diagnostics".
pybind11::dict leaks_doc(const analysis::ReachResult& res, const std::vector<analysis::ClassRow>& leaked_classes,
                         bool anon_roots, uint64_t header);

/// The model of allocator `kind` in `t` (jemalloc or tcmalloc; none: the one that owns malloc).
/// Throws heapwalk Error when the target has no such allocator, glibc owns malloc, or the
/// allocator's structures are not found. Needs no GIL.
std::unique_ptr<alloc::Model> open_model(target::Target& t, std::optional<alloc::Kind> kind);

/// The model of `allocator` ("jemalloc", "tcmalloc") in `t`. Throws heapwalk Error when the
/// target has no such allocator or its structures are not found.
std::unique_ptr<alloc::Model> open_model(target::Target& t, const std::string& allocator);

/// `Target.alloc_classify(allocator, free, top, list, list_limit)`: the `classify` document
/// (same fields) over that allocator's slots, plus "allocator"; examples, `example_mem` and
/// listed addresses are user pointers (no chunk headers), sizes slot sizes.
pybind11::dict alloc_classify(target::Target& t, std::unique_ptr<target::ModuleIndex>& modules,
                              const std::string& allocator, bool free_chunks, std::optional<uint64_t> top,
                              const std::string& list, uint64_t list_limit);

/// `Target.alloc_leaks(allocator, limit, largest, anon_roots)`: the `leaks` document (same
/// fields) over that allocator's in-use slots, plus "allocator"; addresses are user pointers,
/// "arena" the pool's structure (jemalloc's arena_t).
pybind11::dict alloc_leaks(target::Target& t, std::unique_ptr<target::ModuleIndex>& modules,
                           const std::string& allocator, std::optional<uint64_t> limit, bool largest, bool anon_roots);

}  // namespace heapwalk::bindings
