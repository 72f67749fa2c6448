// libFuzzer target: the ptmalloc model on a synthetic process image (fuzz_common.h describes
// the input format). Flags bit 0 selects the no-symbol finders (find_main_arena, find_mp,
// main_heap_start, find_tls_offset) instead of the model built from the given main_arena/mp_
// addresses; bit 1 adds the analyses that walk every chunk (classify, reachability); bit 7
// (fuzz::kNoDirect) reads the image through the Reader's cache, as for a live process.
#include <cstdint>
#include <set>

#include "analysis/classify.h"
#include "analysis/reach.h"
#include "fuzz_common.h"
#include "ptmalloc/finder.h"
#include "ptmalloc/heap.h"
#include "target/symbols.h"
#include "util/errors.h"

using namespace heapwalk;

static void finders(fuzz::Image& im) {
  const ptmalloc::Layout* l = ptmalloc::layout_for(im.hint.empty() ? "2.36" : im.hint);
  if (!l) return;
  auto& mem = *im.mem;
  auto cand = ptmalloc::find_main_arena(mem, *l, im.regions);
  uint64_t near = cand ? cand->address : im.main_arena;
  if (auto start = ptmalloc::main_heap_start(mem, im.mp)) (void)ptmalloc::find_mp(mem, *l, im.regions, *start, near);
  (void)ptmalloc::find_mp(mem, *l, im.regions, im.mp, near);
  std::set<uint64_t> values{im.main_arena, im.mp};
  (void)ptmalloc::find_tls_offset(mem, im.threads, values);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Image im = fuzz::parse_image(data, size);
  if (im.flags & 1) {
    finders(im);
    return 0;
  }
  auto t = target::Target::from_source(fuzz::take_source(im), {}, im.threads);
  t->overrides().main_arena = im.main_arena;
  t->overrides().mp = im.mp;
  t->overrides().no_files = true;
  uint64_t sum = 0;
  try {
    ptmalloc::Heap h(*t, im.hint);
    h.summarize();
    for (const auto& a : h.arenas()) {
      h.walk(&a, [&](uint64_t addr, uint64_t s, ptmalloc::ChunkState st, const ptmalloc::Arena* ar, size_t hi) {
        sum += addr ^ s ^ static_cast<uint64_t>(st) ^ hi;
        if (h.arena_of(addr) != ar) sum++;
        return true;
      });
      (void)h.find_arena(a.index);
      (void)h.find_arena(a.address);
      // The bins listing follows each list again: it must give back the counted chunks.
      for (const auto* lists : {&a.fastbins, &a.bins})
        for (const auto& fl : *lists)
          if (h.list_chunks(a, fl).size() != fl.count) __builtin_trap();
    }
    if (im.flags & 2) {
      target::ModuleIndex mods(*t);
      analysis::ClassifyOptions co;
      co.free_chunks = (im.flags & 4) != 0;
      auto c = analysis::classify(h, *t, mods, co);
      sum += c.chunks;
      analysis::ReachOptions ro;
      ro.anon_roots = (im.flags & 8) != 0;
      ro.limit = 10;
      auto r = analysis::find_leaks(h, *t, ro);
      sum += r.leaked.count;
    }
  } catch (const Error&) {
  }
  return sum == 1 ? 1 : 0;
}
