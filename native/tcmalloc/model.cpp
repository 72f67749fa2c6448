#include "tcmalloc/model.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "ptmalloc/finder.h"
#include "util/errors.h"

namespace heapwalk::tcmalloc {

namespace {

// gperftools 2.10, x86-64, default TCMALLOC_PAGE_SIZE_SHIFT (docs/tcmalloc-layouts.md).
constexpr unsigned kPageShift = 13;
constexpr uint64_t kPageSize = 1ull << kPageShift;
constexpr unsigned kClassSizesMax = 128;
constexpr unsigned kMaxPages = 1u << (20 - kPageShift);  // 128 exact-size free lists
constexpr uint64_t kMaxSize = 256 * 1024;
// PageHeap (src/page_heap.h)
constexpr uint64_t kPhPagemap = 524288;      // pagemap_ (TCMalloc_PageMap2<35>), after pagemap_cache_
constexpr uint64_t kPhFree = 1572968;        // free_[kMaxPages] (SpanList: normal, returned Span)
constexpr uint64_t kPhStats = 1585256;       // stats_ (11 uint64_t)
constexpr uint64_t kPhAggressive = 1585356;  // aggressive_decommit_
constexpr uint64_t kSpanListSize = 96;
// TCMalloc_PageMap2<35> (src/pagemap.h): root_[1 << 17] of Leaf*, Leaf = values[1 << 18]
constexpr unsigned kLeafBits = 18;
constexpr uint64_t kRootLength = 1ull << 17, kLeafLength = 1ull << kLeafBits;
// Span (src/span.h)
constexpr uint64_t kSpanStart = 0, kSpanLength = 8, kSpanNext = 16, kSpanPrev = 24, kSpanObjects = 32, kSpanBits = 40,
                   kSpanSize = 48;
// CentralFreeListPadded (src/central_freelist.h): 1168 bytes padded to 1216
constexpr uint64_t kCfSize = 1216, kCfSizeClass = 8, kCfNumSpans = 112, kCfCounter = 120, kCfSlots = 128,
                   kCfUsedSlots = 1152;
constexpr unsigned kMaxTransferEntries = 64;
// SizeMap (src/common.h)
constexpr uint64_t kSmToMove = 2172, kSmToSize = 2684, kSmToPages = 3200, kSmNum = 4224, kSmSize = 4232;
// ThreadCache (src/thread_cache.h); FreeList is 32 bytes: list_, length_ (u32), ..., size_ at 24
constexpr uint64_t kTcSize = 4096, kTcTid = 4128, kTcNext = 4144, kTcBytes = 4160;
constexpr uint64_t kFlSize = 32, kFlLength = 8, kFlObjSize = 24;

constexpr unsigned kMaxThreadCaches = 100000;
// Bounds against smashed counts: a FreeList never exceeds kMaxDynamicFreeListLength (8192,
// src/thread_cache.h); a batch is at most kMaxObjectsToMove-ish (SizeMap::NumMoveSize caps at
// FLAGS_tcmalloc_transfer_num_objects, 32768 max); a heap of 8 TiB has 4096 page map leaves.
constexpr uint32_t kMaxListLength = 8192;
constexpr uint64_t kMaxBatch = 32768;
constexpr uint64_t kMaxLeaves = 4096;

uint64_t rd64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t rd32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

struct Data {
  uint64_t start = 0;
  std::vector<uint8_t> bytes;
};

/// The module's writable data (its .data and the anonymous .bss after it), read whole.
std::vector<Data> writable_data(target::Target& t, const std::string& path) {
  std::vector<Data> out;
  for (const auto& r : ptmalloc::libc_data_regions(t, path)) {
    uint64_t len = std::min<uint64_t>(r.end - r.start, 64ull << 20);
    Data d;
    d.start = r.start;
    d.bytes.resize(len);
    size_t got = t.memory().read(r.start, d.bytes.data(), len);
    d.bytes.resize(got);
    if (!out.empty() && out.back().start + out.back().bytes.size() == d.start) {
      out.back().bytes.insert(out.back().bytes.end(), d.bytes.begin(), d.bytes.end());
    } else {
      out.push_back(std::move(d));
    }
  }
  return out;
}

bool sizemap_at(const uint8_t* sm) {
  uint64_t n = rd64(sm + kSmNum);
  if (n < 8 || n > kClassSizesMax) return false;
  if (rd32(sm + kSmToSize) != 0 || rd32(sm + kSmToSize + 4) != 8) return false;
  uint32_t prev = 0;
  for (uint64_t i = 1; i < n; ++i) {
    uint32_t s = rd32(sm + kSmToSize + 4 * i);
    uint64_t pages = rd64(sm + kSmToPages + 8 * i);
    uint32_t move = rd32(sm + kSmToMove + 4 * i);
    if (s <= prev || (s & 7) || pages == 0 || pages > kMaxPages || move == 0 || move > 32 * 1024) return false;
    prev = s;
  }
  return prev == kMaxSize;
}

}  // namespace

const target::Module* tcmalloc_module(target::Target& t) { return alloc::allocator_module(t, alloc::Kind::Tcmalloc); }

Model::Model(target::Target& t, const target::Module& module) : t_(t), module_(module.path) {
  locate(module);
  read_sizemap();
  read_central();
  read_threads();
  read_pagemap();
  summarize();
}

void Model::locate(const target::Module& m) {
  // Symbols first: Debian's stripped library exports thread_heaps_ and pageheap_lock_ (dynsym);
  // a -g build's .symtab also names the hidden statics.
  std::unique_ptr<target::ElfFile> file, debug;
  if (!t_.overrides().no_files) {
    file = t_.module_file(m, /*quiet=*/true);
    if (!m.build_id.empty()) debug = t_.debug_file(m.build_id);
  }
  uint64_t bias = 0;
  if (file) bias = m.base - file->first_load_vaddr();
  auto lookup = [&](const char* key, const char* sym) {
    for (auto* f : {debug.get(), file.get()}) {
      if (!f) continue;
      if (auto s = f->symbol(sym)) {
        globals_[key] = bias + s->value;
        how_[key] = f == debug.get() ? "debug-symtab" : f->has_symtab() ? "symtab" : "dynsym";
        return true;
      }
    }
    return false;
  };
  lookup("thread_heaps_", "_ZN8tcmalloc11ThreadCache13thread_heaps_E");
  lookup("pageheap_lock_", "_ZN8tcmalloc6Static14pageheap_lock_E");
  lookup("overall_thread_cache_size_", "_ZN8tcmalloc11ThreadCache26overall_thread_cache_size_E");
  bool ph = lookup("pageheap_", "_ZN8tcmalloc6Static9pageheap_E");
  bool cc = lookup("central_cache_", "_ZN8tcmalloc6Static14central_cache_E");
  bool sm = lookup("sizemap_", "_ZN8tcmalloc6Static8sizemap_E");
  lookup("metadata_system_bytes_", "_ZN8tcmallocL22metadata_system_bytes_E");
  if (ph && cc && sm) source_ = "symbols";

  std::vector<Data> data;
  if (!ph || !cc || !sm) data = writable_data(t_, m.path);
  if (!sm) {
    std::vector<uint64_t> found;
    for (const auto& d : data)
      for (uint64_t off = 0; off + kSmSize <= d.bytes.size(); off += 8)
        if (sizemap_at(d.bytes.data() + off)) found.push_back(d.start + off);
    if (found.size() == 1) {
      globals_["sizemap_"] = found[0];
      how_["sizemap_"] = "search";
    } else {
      throw SymbolError("tcmalloc::Static::sizemap_",
                        module_ + ": " + (found.empty() ? "no" : "more than one") +
                            " SizeMap (monotonic class_to_size_ ending at 256 KiB) in its data");
    }
  }
  memory::Reader r(t_.memory());
  uint64_t nclasses = 0;
  if (!r.try_u64(globals_["sizemap_"] + kSmNum, nclasses) || nclasses < 2 || nclasses > kClassSizesMax)
    throw SymbolError("tcmalloc::Static::sizemap_", module_ + ": SizeMap at " + hex(globals_["sizemap_"]) +
                                                        " unreadable or implausible (num_size_classes)");
  if (!cc) {
    // The central free lists: an array of CentralFreeListPadded whose i-th size_class_ is i.
    std::vector<uint64_t> found;
    for (const auto& d : data)
      for (uint64_t off = 0; off + kCfSize * nclasses <= d.bytes.size(); off += 8) {
        bool ok = true;
        for (uint64_t i = 0; i < nclasses && ok; ++i) ok = rd64(d.bytes.data() + off + kCfSize * i + kCfSizeClass) == i;
        if (ok) found.push_back(d.start + off);
      }
    if (found.size() != 1)
      throw SymbolError("tcmalloc::Static::central_cache_",
                        module_ + ": " + (found.empty() ? "no" : "more than one") +
                            " array of central free lists (size_class_ 0, 1, 2...) in its data");
    globals_["central_cache_"] = found[0];
    how_["central_cache_"] = "search";
  }
  if (!ph) {
    // PageHeap::free_[]: 128 pairs of dummy Spans; every head is a self loop or two pointers,
    // a dummy's start and length are 0 (zero-initialised static storage), and stats_ follows. free_[0] holds the 1-page
    // spans (src/page_heap.cc PrependToFreeList: free_[span->length - 1], gperftools-2.10); it is often empty (both
    // heads self loops: the anchor), but a program that freed many 1-page spans has them there, so without an anchored
    // candidate the search runs again without the anchor.
    std::vector<uint64_t> found;
    auto scan = [&](bool anchored) {
      for (const auto& d : data)
        for (uint64_t off = 0; off + kMaxPages * kSpanListSize + 96 <= d.bytes.size(); off += 8) {
          const uint8_t* p = d.bytes.data() + off;
          uint64_t a = d.start + off;
          if (anchored && (rd64(p + kSpanNext) != a || rd64(p + kSpanPrev) != a || rd64(p + 48 + kSpanNext) != a + 48 ||
                           rd64(p + 48 + kSpanPrev) != a + 48))
            continue;
          bool ok = true;
          for (uint64_t k = 0; k < 2 * kMaxPages && ok; ++k) {
            uint64_t n = rd64(p + 48 * k + kSpanNext), pv = rd64(p + 48 * k + kSpanPrev);
            ok = (n == a + 48 * k) == (pv == a + 48 * k) && n && pv && !(n & 7) && !(pv & 7) &&
                 rd64(p + 48 * k + kSpanStart) == 0 && rd64(p + 48 * k + kSpanLength) == 0;
          }
          if (!ok || off < kPhFree) continue;
          // stats_ follows: system_bytes a page multiple, free + unmapped and committed within it.
          const uint8_t* st = p + (kPhStats - kPhFree);
          uint64_t sys = rd64(st), fr = rd64(st + 8), un = rd64(st + 16), com = rd64(st + 24);
          if ((sys & (kPageSize - 1)) || fr + un > sys || com > sys) continue;
          found.push_back(a - kPhFree);
        }
      // A window starting a few lists later also passes (its last heads read stats_ as two
      // pointers): the real free_[] is the first of a run of candidates 48 bytes apart.
      if (found.size() > 1) {
        bool run = true;
        for (size_t i = 1; i < found.size() && run; ++i)
          run = found[i] - found[0] <= 2 * kMaxPages * kSpanListSize && (found[i] - found[0]) % kSpanSize == 0;
        if (run) found.resize(1);
      }
    };
    scan(true);
    if (found.empty()) scan(false);
    if (found.size() != 1)
      throw SymbolError("tcmalloc::Static::pageheap_",
                        module_ + ": " + (found.empty() ? "no" : "more than one") +
                            " PageHeap (free_[] list heads followed by stats_) in its data" +
                            (found.empty() ? "" : " (" + hex(found[0]) + ", " + hex(found[1]) + "...)"));
    globals_["pageheap_"] = found[0];
    how_["pageheap_"] = "search";
  }
}

void Model::read_sizemap() {
  memory::Reader r(t_.memory());
  std::vector<uint8_t> sm(kSmSize);
  if (!r.try_copy(globals_["sizemap_"], sm.data(), sm.size()))
    throw SymbolError("tcmalloc::Static::sizemap_", module_ + ": SizeMap unreadable at " + hex(globals_["sizemap_"]));
  uint64_t n = rd64(sm.data() + kSmNum);
  if (!sizemap_at(sm.data()))
    diags_.add("layout", globals_["sizemap_"], std::nullopt, "tcmalloc SizeMap is not monotonic up to 256 KiB");
  n = std::min<uint64_t>(n, kClassSizesMax);
  classes_.resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    classes_[i].cl = static_cast<unsigned>(i);
    classes_[i].size = rd32(sm.data() + kSmToSize + 4 * i);
    classes_[i].pages = rd64(sm.data() + kSmToPages + 8 * i);
    classes_[i].batch = rd32(sm.data() + kSmToMove + 4 * i);
  }
}

void Model::read_central() {
  memory::Reader r(t_.memory());
  uint64_t base = globals_["central_cache_"];
  for (auto& c : classes_) {
    uint64_t a = base + kCfSize * c.cl;
    uint64_t sc = 0, spans = 0, counter = 0;
    uint32_t used = 0;
    if (!r.try_u64(a + kCfSizeClass, sc) || !r.try_u64(a + kCfNumSpans, spans) || !r.try_u64(a + kCfCounter, counter) ||
        !r.try_u32(a + kCfUsedSlots, used)) {
      diags_.add("unreadable", a, std::nullopt, "tcmalloc central free list of class " + std::to_string(c.cl));
      continue;
    }
    if (sc != c.cl || used > kMaxTransferEntries) {
      diags_.add("layout", a, std::nullopt,
                 "tcmalloc central free list " + std::to_string(c.cl) + " names class " + std::to_string(sc) +
                     " with " + std::to_string(used) + " used slots");
      continue;
    }
    c.num_spans = spans;
    c.central_free = counter;
    c.transfer_free = static_cast<uint64_t>(used) * c.batch;
    // Transfer cache slots: each a list of `batch` objects.
    for (uint32_t s = 0; s < used && c.batch <= kMaxBatch; ++s) {
      uint64_t head = 0;
      if (!r.try_u64(a + kCfSlots + 16 * s, head)) break;
      if (head) pending_.push_back({head, c.batch, 0, ~uint64_t{0}, alloc::State::Free, 1, 0, c.cl});
    }
  }
}

void Model::find_thread_heaps() {
  // Without thread_heaps_'s symbol: the word in the library's data that points at a ThreadCache
  // heading the list (prev_ null) whose FreeLists carry the SizeMap's object sizes. Other words
  // (next_memory_steal_) may point at the same head; every such word must agree.
  memory::Reader r(t_.memory());
  std::vector<uint8_t> tc(kTcBytes);
  std::optional<uint64_t> head, var;
  bool ambiguous = false;
  std::unordered_set<uint64_t> tried, accepted;
  for (const auto& d : writable_data(t_, module_)) {
    for (uint64_t off = 0; off + 8 <= d.bytes.size(); off += 8) {
      uint64_t p = rd64(d.bytes.data() + off);
      if (!p || (p & 7) || (p >= d.start && p < d.start + d.bytes.size())) continue;
      // Cheap rejections first (each pointer value once; class 1's object size), then the copy.
      if (!tried.insert(p).second) {
        if (head && *head != p && accepted.count(p)) ambiguous = true;
        continue;
      }
      uint32_t size1 = 0;
      if (classes_.size() <= 2 || !r.try_u32(p + kFlSize + kFlObjSize, size1) || size1 != classes_[1].size) continue;
      if (!r.try_copy(p, tc.data(), tc.size())) continue;
      bool ok = rd64(tc.data() + kTcNext + 8) == 0 && classes_.size() > 2;
      for (size_t cl = 1; cl < classes_.size() && ok; ++cl)
        ok = rd32(tc.data() + kFlSize * cl + kFlObjSize) == classes_[cl].size;
      if (!ok) continue;
      accepted.insert(p);
      if (head && *head != p) ambiguous = true;
      if (!head) {
        head = p;
        var = d.start + off;
      }
    }
  }
  if (head && !ambiguous) {
    globals_["thread_heaps_"] = *var;
    how_["thread_heaps_"] = "search";
  }
}

void Model::read_threads() {
  memory::Reader r(t_.memory());
  if (!globals_.count("thread_heaps_")) find_thread_heaps();
  auto it = globals_.find("thread_heaps_");
  if (it == globals_.end()) {
    diags_.note(module_ + ": tcmalloc::ThreadCache::thread_heaps_ not found (no symbols); thread caches unknown");
    return;
  }
  uint64_t tc = 0;
  if (!r.try_u64(it->second, tc)) {
    diags_.add("unreadable", it->second, std::nullopt, "tcmalloc::ThreadCache::thread_heaps_");
    return;
  }
  std::map<uint64_t, int> lwp_of;
  for (const auto& th : t_.threads())
    if (th.fs_base) lwp_of[th.fs_base] = th.lwp;
  std::vector<uint8_t> buf(kTcBytes);
  unsigned count = 0;
  std::unordered_set<uint64_t> seen;
  while (tc) {
    if (++count > kMaxThreadCaches) {
      diags_.add("cycle", tc, std::nullopt, "tcmalloc thread cache list does not end");
      break;
    }
    if (!seen.insert(tc).second) {
      diags_.add("cycle", tc, std::nullopt, "tcmalloc thread cache list loops back to " + hex(tc));
      break;
    }
    if ((tc & 7) || !r.try_copy(tc, buf.data(), buf.size())) {
      diags_.add("unreadable", tc, std::nullopt, "tcmalloc ThreadCache");
      break;
    }
    alloc::ThreadCache c;
    c.address = tc;
    uint64_t tid = rd64(buf.data() + kTcTid);
    if (auto l = lwp_of.find(tid); l != lwp_of.end()) c.lwp = l->second;
    uint64_t bytes = static_cast<uint32_t>(rd32(buf.data() + kTcSize));
    c.bytes = bytes;
    for (unsigned cl = 0; cl < classes_.size(); ++cl) {
      const uint8_t* fl = buf.data() + kFlSize * cl;
      uint32_t len = rd32(fl + kFlLength);
      if (!len) continue;
      if (len > kMaxListLength) {
        diags_.add("bad_tcache", tc, std::nullopt,
                   "tcmalloc thread cache class " + std::to_string(cl) + " claims " + std::to_string(len) +
                       " objects (more than 8192); read 8192");
        len = kMaxListLength;
      }
      c.bins.push_back({static_cast<uint64_t>(rd32(fl + kFlObjSize)), len});
      classes_[cl].thread_cached += len;
      if (uint64_t head = rd64(fl)) pending_.push_back({head, len, 0, ~uint64_t{0}, alloc::State::Cached, 2, tc, cl});
    }
    caches_.push_back(std::move(c));
    tc = rd64(buf.data() + kTcNext);
  }
}

void Model::read_pagemap() {
  memory::MemorySource& mem = t_.memory();
  memory::Reader r(mem);
  uint64_t root = globals_["pageheap_"] + kPhPagemap;
  std::vector<uint64_t> roots(kRootLength);
  if (mem.read(root, roots.data(), kRootLength * 8) != kRootLength * 8) {
    diags_.add("unreadable", root, std::nullopt, "tcmalloc page map root");
    return;
  }
  std::vector<uint64_t> leaf(kLeafLength);
  uint64_t leaves = 0;
  // Leaves are separate 2 MiB allocations: a root naming one twice, or overlapping ones, is
  // corrupt (and would make the walk read the same memory over and over).
  std::vector<uint64_t> sorted;
  for (uint64_t i = 0; i < kRootLength; ++i)
    if (roots[i]) sorted.push_back(roots[i]);
  std::sort(sorted.begin(), sorted.end());
  std::unordered_set<uint64_t> overlapping;
  for (size_t k = 1; k < sorted.size(); ++k)
    if (sorted[k] - sorted[k - 1] < kLeafLength * 8) overlapping.insert(sorted[k]);
  const auto& regions = mem.regions();
  uint64_t next_page = 0;                // spans do not overlap: the first page after the last span
  std::vector<PendingList> spans_lists;  // the in-use small-object spans' free lists, in address order
  for (uint64_t i = 0; i < kRootLength; ++i) {
    if (!roots[i]) continue;
    if (++leaves > kMaxLeaves) {
      diags_.add("truncated", root, std::nullopt,
                 "tcmalloc page map has more than 4096 leaves (8 TiB of heap); the rest not read");
      break;
    }
    if (overlapping.count(roots[i])) {
      diags_.add("layout", roots[i], std::nullopt,
                 "tcmalloc page map leaf " + std::to_string(i) + " overlaps another leaf; not read");
      continue;
    }
    if ((roots[i] & 7) || mem.read(roots[i], leaf.data(), kLeafLength * 8) != kLeafLength * 8) {
      diags_.add("unreadable", roots[i], std::nullopt, "tcmalloc page map leaf " + std::to_string(i));
      continue;
    }
    for (uint64_t j = 0; j < kLeafLength;) {
      uint64_t s = leaf[j];
      uint64_t page = (i << kLeafBits) | j;
      uint8_t sp[kSpanSize];
      if (!s) {
        ++j;
        continue;
      }
      if (!r.try_copy(s, sp, kSpanSize)) {
        diags_.add("unreadable", s, std::nullopt, "tcmalloc Span for page " + hex(page << kPageShift));
        ++j;
        continue;
      }
      uint64_t start = rd64(sp + kSpanStart), length = rd64(sp + kSpanLength);
      if (start != page || length == 0 || length >= (1ull << 35)) {
        ++j;  // an interior or last page of a span (or a stale entry): the head was seen
        continue;
      }
      uint32_t bits = rd32(sp + kSpanBits);
      SpanInfo info;
      info.address = page << kPageShift;
      info.bytes = length << kPageShift;
      info.refcount = bits & 0xffff;
      info.sizeclass = (bits >> 16) & 0xff;
      info.location = (bits >> 24) & 3;
      if (page < next_page) {
        diags_.add("layout", s, std::nullopt,
                   "tcmalloc Span " + hex(s) + " at " + hex(info.address) + " overlaps the span before it; skipped");
        ++j;
        continue;
      }
      if (info.location == 0 && info.sizeclass && info.sizeclass < classes_.size() &&
          length != classes_[info.sizeclass].pages) {
        diags_.add("layout", s, std::nullopt,
                   "tcmalloc Span " + hex(s) + " of class " + std::to_string(info.sizeclass) + " claims " +
                       std::to_string(length) + " pages (the class has " +
                       std::to_string(classes_[info.sizeclass].pages) + "); skipped");
        ++j;
        continue;
      }
      if (info.location == 0 && !memory::mapped(regions, info.address, info.bytes)) {
        diags_.add("outside_heap", s, std::nullopt,
                   "tcmalloc Span " + hex(s) + " in use at " + hex(info.address) + " (" + std::to_string(length) +
                       " pages) lies outside the target's memory; skipped");
        ++j;
        continue;
      }
      next_page = page + length;
      if (info.sizeclass && info.sizeclass < classes_.size() && info.location == 0) {
        ++classes_[info.sizeclass].spans_seen;
        // The span's own free list (objects the central free list holds).
        uint64_t size = classes_[info.sizeclass].size;
        if (uint64_t objects = rd64(sp + kSpanObjects); objects && size)
          spans_lists.push_back(
              {objects, info.bytes / size, info.address, info.address + info.bytes, alloc::State::Free, 0, 0, 0});
      }
      spans_.push_back(info);
      j += std::min<uint64_t>(length, kLeafLength - j);
    }
  }
  // The spans' free lists: their objects are spread over the whole heap, so the pages are
  // populated in bulk first (one madvise per run of spans, not one fault per page), then chased.
  for (size_t k = 0; k < spans_lists.size();) {
    uint64_t start = spans_lists[k].lo, end = spans_lists[k].hi;
    size_t n = k + 1;
    while (n < spans_lists.size() && spans_lists[n].lo == end) end = spans_lists[n++].hi;
    mem.prefetch(start, end - start);
    k = n;
  }
  // Every free list at once: the thread caches', the transfer caches' and the spans'.
  pending_.insert(pending_.end(), spans_lists.begin(), spans_lists.end());
  uint64_t expect = 0;
  for (const auto& c : classes_) expect += c.central_free + c.transfer_free + c.thread_cached;
  set_budget();
  kept_.reserve(std::min<uint64_t>(expect, budget_) + 1024);
  follow_lists(r, pending_);
  pending_.clear();
  pending_.shrink_to_fit();
  std::sort(kept_.begin(), kept_.end());
  // An object on two lists (or twice on one) is corrupt: the first state wins (sort order).
  size_t before = kept_.size();
  kept_.erase(std::unique(kept_.begin(), kept_.end(), [](const auto& a, const auto& b) { return a.first == b.first; }),
              kept_.end());
  if (kept_.size() != before)
    diags_.add("double_free", std::nullopt, std::nullopt,
               "tcmalloc: " + std::to_string(before - kept_.size()) + " objects on more than one free list");
}

void Model::set_budget() {
  if (budget_) return;
  uint64_t bytes = 0;
  for (const auto& reg : t_.memory().regions()) bytes += reg.end - reg.start;
  budget_ = bytes ? bytes / 8 : uint64_t{1} << 28;
}

std::string Model::PendingList::what() const {
  if (kind == 0) return "span " + hex(lo) + " free list";
  if (kind == 1) return "transfer cache list of class " + std::to_string(b);
  return "thread cache " + hex(a) + " list of class " + std::to_string(b);
}

void Model::follow_lists(memory::Reader& r, const std::vector<PendingList>& lists) {
  // The lists are chased 16 at a time, one hop of each per round: their loads are independent,
  // so the CPU overlaps the cache misses a single chase would wait for one by one.
  set_budget();
  constexpr size_t kLanes = 16;
  struct Lane {
    size_t list = 0;
    uint64_t p = 0, k = 0;
    std::vector<uint64_t> objs;
    bool live = false;
  };
  std::vector<Lane> lanes(kLanes);
  size_t next = 0, live = 0;
  auto start = [&](Lane& l) {
    l.live = next < lists.size();
    if (!l.live) return;
    l.list = next++;
    l.p = lists[l.list].head;
    l.k = 0;
    l.objs.clear();
    ++live;
  };
  auto finish = [&](Lane& l) {
    keep(l.objs, lists[l.list].st, lists[l.list].what());
    --live;
    start(l);
  };
  for (auto& l : lanes) start(l);
  uint64_t kept = kept_.size();
  while (live) {
    for (auto& l : lanes) {
      if (!l.live) continue;
      const PendingList& s = lists[l.list];
      if (!l.p) {
        finish(l);
        continue;
      }
      if (l.k >= s.max) {
        if (s.kind == 0)  // a span's list holds at most its objects; the caches' stop at their counts
          diags_.add("cycle", s.lo, std::nullopt,
                     "tcmalloc " + s.what() + " does not end after " + std::to_string(s.max) + " objects");
        finish(l);
        continue;
      }
      if (l.p < s.lo || l.p >= s.hi) {
        diags_.add("outside_heap", l.p, std::nullopt, "tcmalloc " + s.what() + " leaves its span at " + hex(l.p));
        finish(l);
        continue;
      }
      if (++kept > budget_) {
        diags_.add("truncated", l.p, std::nullopt,
                   "tcmalloc free lists: more free objects than the target has words; the rest not read");
        l.p = 0;
        finish(l);
        continue;
      }
      l.objs.push_back(l.p);
      uint64_t n;
      if (!r.try_u64(l.p, n)) {
        diags_.add("unreadable", l.p, std::nullopt, "tcmalloc " + s.what());
        finish(l);
        continue;
      }
      r.prefetch(n);
      l.p = n;
      ++l.k;
    }
  }
}

void Model::keep(const std::vector<uint64_t>& objs, alloc::State st, const std::string& what) {
  // A list that loops visits an object twice: keep each once and say where.
  bool dup = false;
  if (objs.size() > 1) {
    std::vector<uint64_t> a(objs);
    std::sort(a.begin(), a.end());
    dup = std::adjacent_find(a.begin(), a.end()) != a.end();
  }
  if (!dup) {
    for (uint64_t p : objs) kept_.emplace_back(p, st);
    return;
  }
  // The first object seen twice, in list order, is where the list loops back to.
  std::unordered_set<uint64_t> seen;
  uint64_t entry = 0;
  for (uint64_t p : objs)
    if (seen.insert(p).second)
      kept_.emplace_back(p, st);
    else if (!entry)
      entry = p;
  diags_.add("cycle", entry, std::nullopt, "tcmalloc " + what + " loops back to " + hex(entry));
}

void Model::walk(const alloc::AllocationVisitor& visit) {
  size_t k = 0;
  for (const auto& s : spans_) {
    if (s.location != 0) {
      if (!visit({s.address, s.bytes, s.location == 1 ? alloc::State::Free : alloc::State::Released, 0})) return;
      continue;
    }
    if (s.sizeclass == 0) {
      if (!visit({s.address, s.bytes, alloc::State::InUse, 0})) return;
      continue;
    }
    if (s.sizeclass >= classes_.size() || !classes_[s.sizeclass].size) continue;
    uint64_t size = classes_[s.sizeclass].size;
    while (k < kept_.size() && kept_[k].first < s.address) ++k;
    for (uint64_t a = s.address; a + size <= s.address + s.bytes; a += size) {
      alloc::State st = alloc::State::InUse;
      while (k < kept_.size() && kept_[k].first < a) ++k;
      if (k < kept_.size() && kept_[k].first == a) st = kept_[k].second;
      if (!visit({a, size, st, 0})) return;
    }
  }
}

std::optional<alloc::Allocation> Model::find(uint64_t address) {
  auto it = std::upper_bound(spans_.begin(), spans_.end(), address,
                             [](uint64_t a, const SpanInfo& s) { return a < s.address; });
  if (it == spans_.begin()) return std::nullopt;
  const SpanInfo& s = *--it;
  if (address >= s.address + s.bytes) return std::nullopt;
  if (s.location != 0)
    return alloc::Allocation{s.address, s.bytes, s.location == 1 ? alloc::State::Free : alloc::State::Released, 0};
  if (s.sizeclass == 0) return alloc::Allocation{s.address, s.bytes, alloc::State::InUse, 0};
  if (s.sizeclass >= classes_.size() || !classes_[s.sizeclass].size) return std::nullopt;
  uint64_t size = classes_[s.sizeclass].size;
  uint64_t a = s.address + (address - s.address) / size * size;
  if (a + size > s.address + s.bytes) return std::nullopt;  // the span's tail waste
  alloc::State st = alloc::State::InUse;
  auto k = std::lower_bound(kept_.begin(), kept_.end(), std::make_pair(a, alloc::State::InUse));
  if (k != kept_.end() && k->first == a) st = k->second;
  return alloc::Allocation{a, size, st, 0};
}

void Model::summarize() {
  memory::Reader r(t_.memory());
  uint64_t ph = globals_["pageheap_"];
  uint64_t st[11] = {};
  if (!r.try_copy(ph + kPhStats, st, sizeof st))
    throw SymbolError("tcmalloc::Static::pageheap_",
                      module_ + ": PageHeap::stats_ unreadable at " + hex(ph + kPhStats));
  static const char* const names[11] = {"system_bytes",       "free_bytes",         "unmapped_bytes",
                                        "committed_bytes",    "scavenge_count",     "commit_count",
                                        "total_commit_bytes", "decommit_count",     "total_decommit_bytes",
                                        "reserve_count",      "total_reserve_bytes"};
  alloc::Pool pool;
  pool.address = ph;
  pool.name = "page heap";
  for (int i = 0; i < 11; ++i) pool.stats[std::string("pageheap.") + names[i]] = st[i];
  uint64_t central = 0, transfer = 0, thread = 0;
  for (const auto& c : classes_) {
    if (c.cl == 0) continue;
    uint64_t overhead = c.size ? (c.pages * kPageSize) % c.size : 0;
    central += c.size * c.central_free + c.num_spans * overhead;
    transfer += c.size * c.transfer_free;
  }
  for (const auto& c : caches_) thread += c.bytes;
  uint64_t sys = st[0], fr = st[1], un = st[2];
  auto& s = stats_;
  s["generic.heap_size"] = sys;
  uint64_t kept = thread + central + transfer + fr + un;
  if (kept > sys)
    diags_.add("layout", ph + kPhStats, std::nullopt,
               "tcmalloc: free, cached and unmapped bytes (" + std::to_string(kept) + ") exceed the heap size (" +
                   std::to_string(sys) + ")");
  s["generic.current_allocated_bytes"] = kept > sys ? 0 : sys - kept;
  s["tcmalloc.slack_bytes"] = fr + un;
  s["tcmalloc.central_cache_free_bytes"] = central;
  s["tcmalloc.transfer_cache_free_bytes"] = transfer;
  s["tcmalloc.thread_cache_free_bytes"] = thread;
  s["tcmalloc.current_total_thread_cache_bytes"] = thread;
  s["tcmalloc.pageheap_free_bytes"] = fr;
  s["tcmalloc.pageheap_unmapped_bytes"] = un;
  s["tcmalloc.pageheap_committed_bytes"] = st[3];
  s["tcmalloc.pageheap_scavenge_count"] = st[4];
  s["tcmalloc.pageheap_commit_count"] = st[5];
  s["tcmalloc.pageheap_total_commit_bytes"] = st[6];
  s["tcmalloc.pageheap_decommit_count"] = st[7];
  s["tcmalloc.pageheap_total_decommit_bytes"] = st[8];
  s["tcmalloc.pageheap_reserve_count"] = st[9];
  s["tcmalloc.pageheap_total_reserve_bytes"] = st[10];
  uint8_t aggressive = 0;
  if (r.try_copy(ph + kPhAggressive, &aggressive, 1)) s["tcmalloc.aggressive_memory_decommit"] = aggressive ? 1 : 0;
  uint64_t v = 0;
  if (auto it = globals_.find("overall_thread_cache_size_"); it != globals_.end() && r.try_u64(it->second, v))
    s["tcmalloc.max_total_thread_cache_bytes"] = v;
  if (auto it = globals_.find("metadata_system_bytes_"); it != globals_.end() && r.try_u64(it->second, v)) {
    s["tcmalloc.metadata_bytes"] = v;
    s["generic.total_physical_bytes"] = sys + v - un;
  }
  // ReleaseFreeMemory() = ReleaseToSystem(SIZE_MAX): PageHeap::ReleaseAtLeastNPages decommits
  // every span on the normal free lists (small and large); caches are not flushed.
  s["release_free_memory_bytes"] = fr;
  for (const auto& [k, val] : s) pool.stats[k] = val;
  uint64_t in_use = 0, allocations = 0;
  walk([&](const alloc::Allocation& a) {
    if (a.state == alloc::State::InUse) {
      in_use += a.size;
      ++allocations;
    }
    return true;
  });
  pool.in_use = in_use;
  pool.allocations = allocations;
  pool.cached = thread;
  pool.free = central + transfer + fr;
  pool.released = un;
  pool.metadata = s.count("tcmalloc.metadata_bytes") ? s["tcmalloc.metadata_bytes"] : 0;
  pool.reclaimable = fr;
  pools_.push_back(std::move(pool));
}

}  // namespace heapwalk::tcmalloc
