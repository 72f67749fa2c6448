// libFuzzer target: the HotSpot NMT reader on a synthetic process image (fuzz_common.h). The
// first region is named libjvm.so so the reader treats the image as a JVM. Files are disabled:
// without flag 4 the reader reconstructs NMT from the malloc headers the chunk walk finds; with
// flag 4 libjvm's NMT statics are given at fixed places in the first region, so the reader also
// follows what the fuzzer wrote there (the snapshots, the reserved-region list, the malloc site
// table, the name table, the release string) as it would libjvm's .bss. Flag 0x80
// (fuzz::kNoDirect): the image is read through the Reader's cache, as for a live JVM.
#include <cstdint>

#include "fuzz_common.h"
#include "hotspot/nmt.h"
#include "ptmalloc/heap.h"
#include "util/errors.h"

using namespace heapwalk;

namespace {

// The statics the NMT reader looks up, with their sizes in Debian's libjvm 11.0.24, 17.0.21 and
// 21.0.12 (`nm -S`); 0: the symbol is absent in that JDK. fuzz/make_seeds.py lists the same
// order (17.0.21's sizes) for its seeds.
struct GivenSymbol {
  const char* name;
  uint64_t size[3];  // 11, 17, 21
};
constexpr GivenSymbol kNmtSymbols[] = {
    {"_ZN10MemTracker15_tracking_levelE", {4, 4, 4}},
    {"_ZN19MallocMemorySummary9_snapshotE", {0x2b0, 0x6e0, 0x720}},
    {"_ZN20VirtualMemorySummary9_snapshotE", {0x150, 0x1b0, 0x2a0}},
    {"_ZN20VirtualMemoryTracker17_reserved_regionsE", {8, 8, 8}},
    {"_ZN15MallocSiteTable6_tableE", {0xff8, 0xff8, 8}},
    {"_ZN18ThreadStackTracker13_thread_countE", {0, 8, 8}},
    {"_ZN19Abstract_VM_Version13_s_vm_releaseE", {8, 8, 8}},
    {"_ZN7NMTUtil18_memory_type_namesE", {0xa8, 0xd8, 0}},
    {"_ZN7NMTUtil8_stringsE", {0, 0, 0x1c0}},
    {"_ZN10NMTPreInit6_tableE", {0, 8, 8}},
    {"_ZNK12MallocHeader21check_block_integrityEv", {0, 0x1d9, 0}},
    {"_ZN12MallocHeader20resolve_checked_implIPvPS_EET0_T_", {0, 0, 0x1aa}},
    {"_ZN15MallocSiteTable27_hash_entry_allocation_siteE", {0x48, 8, 8}},
    {"_ZN15MallocSiteTable28_hash_entry_allocation_stackE", {0x28, 8, 8}},
    {"_ZNK12MallocHeader20print_block_on_errorEP12outputStreamPh", {0, 0xa5, 0xe6}},
    {"_ZNK12MallocHeader18record_malloc_siteERK15NativeCallStackmPmS3_10MemoryType", {0xa0, 0, 0}},
    {"_ZNK12MallocHeader7releaseEv", {0x13f, 0, 0}},
};

/// Places the statics one after the other (8-aligned) from the first region's start; `jdk` is
/// 0 (11), 1 (17) or 2 (21).
void give_symbols(target::Overrides& ov, uint64_t base, unsigned jdk) {
  uint64_t at = base;
  for (const auto& g : kNmtSymbols) {
    uint64_t size = g.size[jdk];
    if (!size) continue;
    ov.symbols[g.name] = {at, size};
    at += (size + 7) & ~uint64_t{7};
  }
}

}  // namespace

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
  auto t = target::Target::from_source(fuzz::take_source(im), mods, im.threads);
  t->overrides().main_arena = im.main_arena;
  t->overrides().mp = im.mp;
  t->overrides().no_files = true;
  // Flag 4: symbols given; bits 3-4 choose the JDK: 0 -> 17, 1 -> 21, 2 -> 11 (3 -> 17).
  static constexpr unsigned kJdk[4] = {1, 2, 0, 1};
  if ((im.flags & 4) && !mods.empty()) give_symbols(t->overrides(), mods.front().base, kJdk[(im.flags >> 3) & 3]);
  uint64_t sum = 0;
  std::unique_ptr<ptmalloc::Heap> h;
  try {
    h = std::make_unique<ptmalloc::Heap>(*t, im.hint);
  } catch (const Error&) {
  }
  try {
    auto n = hotspot::read_nmt(*t, h.get(), (im.flags & 2) != 0);
    sum += n.rows.size() + n.header_chunks.count + n.untracked.bytes + n.sites.size() + n.regions.size();
    for (const auto& r : n.regions) sum += r.committed_regions.size();
  } catch (const Error&) {
  }
  return sum == 1 ? 1 : 0;
}
