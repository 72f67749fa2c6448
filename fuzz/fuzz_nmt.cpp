// libFuzzer target: the HotSpot NMT reader (no libjvm symbols: files are disabled, so it
// reconstructs NMT from the malloc headers the chunk walk finds) on a synthetic process image
// (fuzz_common.h). The first region is named libjvm.so so the reader treats the image as a JVM.
#include <cstdint>

#include "fuzz_common.h"
#include "hotspot/nmt.h"
#include "ptmalloc/heap.h"
#include "util/errors.h"

using namespace heapwalk;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Image im = fuzz::parse_image(data, size);
  std::vector<target::Module> mods;
  if (!(im.flags & 1) && !im.regions.empty()) {
    target::Module m;
    m.path = "/fuzz/lib/server/libjvm.so";
    m.base = im.regions.front().start;
    m.end = im.regions.front().end;
    mods.push_back(m);
  }
  auto t = target::Target::from_source(std::move(im.mem), mods, im.threads);
  t->overrides().main_arena = im.main_arena;
  t->overrides().mp = im.mp;
  t->overrides().no_files = true;
  uint64_t sum = 0;
  std::unique_ptr<ptmalloc::Heap> h;
  try {
    h = std::make_unique<ptmalloc::Heap>(*t, im.hint);
  } catch (const Error&) {
  }
  try {
    auto n = hotspot::read_nmt(*t, h.get(), (im.flags & 2) != 0);
    sum += n.rows.size() + n.header_chunks.count + n.untracked.bytes + n.sites.size();
  } catch (const Error&) {
  }
  return sum == 1 ? 1 : 0;
}
