// libFuzzer target: ELF core parsing (CoreFile), the process model built on it (Target), and
// the whole ptmalloc pipeline over the core's memory with files disabled (nothing on disk is
// opened, whatever paths the core names).
#include <cstdint>

#include "fuzz_common.h"
#include "memory/core_file.h"
#include "ptmalloc/heap.h"
#include "target/target.h"
#include "util/errors.h"

using namespace heapwalk;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string path = fuzz::as_file(data, size);
  std::unique_ptr<target::Target> t;
  try {
    t = target::Target::open_core(path, "");
  } catch (const Error&) {
    return 0;
  }
  auto& mem = t->memory();
  uint8_t buf[64];
  uint64_t sum = 0;
  for (const auto& r : mem.regions()) {
    sum += mem.read(r.start, buf, sizeof buf);
    sum += mem.read(r.end - 8, buf, sizeof buf);  // straddles the end
    sum += mem.readable_span(r.start, 1 << 20);
    uint64_t s = 0, e = 0;
    if (mem.direct_span(r.start, s, e)) sum += e - s;
    mem.prefetch(r.start, 4096);
  }
  (void)t->truncation();
  t->overrides().no_files = true;
  try {
    ptmalloc::Heap h(*t, size && (data[size - 1] & 1) ? "2.36" : "");
    h.summarize();
    h.walk(nullptr, [&](uint64_t a, uint64_t s, ptmalloc::ChunkState, const ptmalloc::Arena*, size_t) {
      sum += a ^ s;
      return true;
    });
  } catch (const Error&) {
  }
  return sum == 1 ? 1 : 0;
}
