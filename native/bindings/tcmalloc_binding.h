// Python views of the tcmalloc model (native/tcmalloc/model.h), registered on Target by
// module.cpp: Target.tcmalloc() and Target.tcmalloc_allocations().
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "target/target.h"

namespace heapwalk::bindings {

/// {"allocator": "tcmalloc", version, layout_source, module, globals, how, stats, pools,
/// size_classes, thread_caches, spans, diagnostics}, or None when the target has no tcmalloc.
pybind11::object tcmalloc_summary(target::Target& t);
/// [(address, size, state)] in address order; state "all" or one of in-use, cached, free,
/// released.
pybind11::list tcmalloc_allocations(target::Target& t, const std::string& state);

}  // namespace heapwalk::bindings
