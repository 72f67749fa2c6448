// libFuzzer target: the gperftools 2.10 tcmalloc model (native/tcmalloc/model.h) on a sparse
// process image (fuzz_alloc.h) whose module regions are named libtcmalloc.so.4; no files, so the
// SizeMap, central cache, page heap and thread_heaps_ are found by the symbol-free search. The
// model (size map, central and transfer caches, thread caches, page map), a whole walk, and
// find() on a few addresses. Flag 0x80 (fuzz::kNoDirect): read through the Reader's cache.
// HEAPWALK_FUZZ_SEED=CORE:OUT makes a seed from a core (fuzz_alloc.h).
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "fuzz_alloc.h"
#include "tcmalloc/model.h"
#include "util/errors.h"

using namespace heapwalk;

namespace {

uint64_t exercise(target::Target& t) {
  uint64_t sum = 0;
  const target::Module* mod = tcmalloc::tcmalloc_module(t);
  if (!mod) return 0;
  try {
    tcmalloc::Model m(t, *mod);
    for (const auto& c : m.size_classes()) sum += c.size + c.in_use;
    sum += fuzz::exercise_model(m, /*check_pool=*/false, /*ordered=*/true);
    sum += m.spans().size() + m.diagnostics().items().size();
  } catch (const Error& e) {
    if (std::getenv("HEAPWALK_FUZZ_VERBOSE")) std::fprintf(stderr, "error: %s\n", e.what());
  }
  return sum;
}

bool is_tcmalloc(const target::Module& m) {
  std::string base = m.path.substr(m.path.rfind('/') + 1);
  return base.rfind("libtcmalloc", 0) == 0 && base.find(".so") != std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::make_alloc_seed(is_tcmalloc, [](target::Target& t) { (void)exercise(t); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto im = fuzz::parse_alloc_image(data, size, "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4");
  auto t = fuzz::alloc_target(im);
  return exercise(*t) == 1 ? 1 : 0;
}
