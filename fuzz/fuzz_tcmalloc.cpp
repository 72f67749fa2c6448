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
    for (const auto& p : m.pools()) sum += p.in_use + p.free + p.stats.size();
    for (const auto& c : m.thread_caches()) sum += c.bytes + c.bins.size();
    for (const auto& c : m.size_classes()) sum += c.size + c.in_use;
    uint64_t prev = 0, n = 0, probe[3] = {};
    m.walk([&](const alloc::Allocation& a) {
      sum += a.address ^ a.size ^ static_cast<uint64_t>(a.state);
      if (a.address < prev) __builtin_trap();  // the walk is in address order
      if (n < 3) probe[n] = a.address + a.size / 2;
      ++n;
      prev = a.address;
      return n < (1u << 22);
    });
    // find() on one of the first allocations and on the last (jemalloc's walks the tree again).
    if (auto f = m.find(probe[n % 3])) sum += f->size;
    (void)m.find(prev);
    if (std::getenv("HEAPWALK_FUZZ_CHECK_FIND")) {  // find() agrees with the walk (intact seeds)
      uint64_t bad = 0;
      m.walk([&](const alloc::Allocation& a) {
        auto f = m.find(a.address + a.size / 2);
        if (!f || f->address != a.address || f->size != a.size || f->state != a.state) {
          if (bad++ < 4)
            std::fprintf(stderr, "walk %llx %llu %d find %llx %llu %d\n", (unsigned long long)a.address,
                         (unsigned long long)a.size, (int)a.state, f ? (unsigned long long)f->address : 0ull,
                         f ? (unsigned long long)f->size : 0ull, f ? (int)f->state : -1);
        }
        return true;
      });
      std::fprintf(stderr, "find disagrees with the walk on %llu allocations\n", static_cast<unsigned long long>(bad));
    }
    if (std::getenv("HEAPWALK_FUZZ_VERBOSE"))  // what a seed reaches: fuzz/README.md
      std::fprintf(stderr, "%zu pools, %zu thread caches, %llu allocations, %zu diagnostics\n", m.pools().size(),
                   m.thread_caches().size(), static_cast<unsigned long long>(n), m.diagnostics().items().size());
    if (std::getenv("HEAPWALK_FUZZ_VERBOSE"))
      for (size_t i = 0; i < m.diagnostics().items().size() && i < 5; ++i)
        std::fprintf(stderr, "  %s: %s\n", m.diagnostics().items()[i].kind.c_str(),
                     m.diagnostics().items()[i].detail.c_str());
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
