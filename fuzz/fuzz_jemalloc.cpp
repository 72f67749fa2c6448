// libFuzzer target: the jemalloc 5.3.0 model (native/jemalloc/model.h) on a sparse process image
// (fuzz_alloc.h) whose module regions are named libjemalloc.so.2; no files, so je_arenas and the
// radix tree are found by the symbol-free search as on Debian's stripped library. The model, its
// arenas' statistics and tcaches, a whole walk of the radix tree, and find() on a few addresses.
// Flag 0x80 (fuzz::kNoDirect): read through the Reader's cache, as for a live process.
// HEAPWALK_FUZZ_SEED=CORE:OUT makes a seed from a core (fuzz_alloc.h).
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "fuzz_alloc.h"
#include "jemalloc/model.h"
#include "util/errors.h"

using namespace heapwalk;

namespace {

uint64_t exercise(target::Target& t) {
  uint64_t sum = 0;
  try {
    jemalloc::Model m(t);
    sum += fuzz::exercise_model(m, /*check_pool=*/true, /*ordered=*/false);
    sum += m.rtree() + m.diagnostics().items().size();
  } catch (const Error& e) {
    if (std::getenv("HEAPWALK_FUZZ_VERBOSE")) std::fprintf(stderr, "error: %s\n", e.what());
  }
  return sum;
}

bool is_jemalloc(const target::Module& m) { return m.path.find("libjemalloc.so") != std::string::npos; }

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::make_alloc_seed(is_jemalloc, [](target::Target& t) { (void)exercise(t); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto im = fuzz::parse_alloc_image(data, size, "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2");
  auto t = fuzz::alloc_target(im);
  return exercise(*t) == 1 ? 1 : 0;
}
