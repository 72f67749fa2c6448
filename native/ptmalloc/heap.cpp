#include "ptmalloc/heap.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "memory/memory.h"
#include "util/parallel.h"
#include "util/progress.h"
#include "util/radix_sort.h"

namespace heapwalk::ptmalloc {

namespace {

constexpr uint64_t kPage = 4096;
constexpr unsigned kMaxArenas = 4096;  // bound on the ring walk; glibc's own limit is 8 * cores
constexpr uint64_t kMaxHeapsPerArena = 1u << 16;

uint64_t rd64(const uint8_t* p, uint64_t off) {
  uint64_t v;
  std::memcpy(&v, p + off, 8);
  return v;
}

// Brent's cycle detection: O(1) memory over lists of any length. feed() returns true when the
// node was seen before (the list loops).
class CycleCheck {
 public:
  explicit CycleCheck(uint64_t start) : saved_(start) {}
  bool feed(uint64_t node) {
    if (node == saved_) return true;
    if (++steps_ == power_) {
      saved_ = node;
      power_ <<= 1;
      steps_ = 0;
    }
    return false;
  }

 private:
  uint64_t saved_;
  uint64_t power_ = 1, steps_ = 0;
};

// After a cycle, the Brent check may have recorded some nodes twice: keep first occurrences.
Count dedupe(FreeList& fl) {
  std::vector<uint64_t> seen;
  std::vector<FreeChunk> out;
  Count removed;
  for (const auto& c : fl.chunks) {
    if (std::find(seen.begin(), seen.end(), c.address) != seen.end()) {
      removed.add(c.size);
      continue;
    }
    seen.push_back(c.address);
    out.push_back(c);
  }
  fl.chunks = std::move(out);
  fl.bytes -= removed.bytes;
  return removed;
}

// The same for an arena list whose chunks went straight into the free index: entries
// (address | state) from `from` on; the sizes of the dropped repeats are read back.
Count dedupe_entries(BigVector<uint64_t>& v, size_t from, FreeList& fl, memory::Reader& r) {
  std::unordered_set<uint64_t> seen;
  Count removed;
  size_t w = from;
  for (size_t i = from; i < v.size(); ++i) {
    if (!seen.insert(v[i] & ~uint64_t{15}).second) {
      uint64_t word = 0;
      r.try_u64((v[i] & ~uint64_t{15}) + 8, word);
      removed.add(word & ~uint64_t{7});
      continue;
    }
    v[w++] = v[i];
  }
  v.resize(w);
  fl.bytes -= removed.bytes;
  fl.cycle = true;
  return removed;
}

uint64_t fi_addr(uint64_t v) { return v & ~uint64_t{15}; }
ChunkState fi_state(uint64_t v) { return static_cast<ChunkState>(v & 15); }

void subtract(Count& c, const Count& r) {
  c.count -= r.count;
  c.bytes -= r.bytes;
}

}  // namespace

const char* state_name(ChunkState s) {
  switch (s) {
    case ChunkState::Used: return "used";
    case ChunkState::Tcache: return "tcache";
    case ChunkState::Fastbin: return "fastbin";
    case ChunkState::Unsorted: return "unsorted";
    case ChunkState::Small: return "small";
    case ChunkState::Large: return "large";
    case ChunkState::Top: return "top";
    case ChunkState::Mmapped: return "mmapped";
    case ChunkState::Fencepost: return "fencepost";
  }
  return "?";
}

bool is_free(ChunkState s) {
  switch (s) {
    case ChunkState::Tcache:
    case ChunkState::Fastbin:
    case ChunkState::Unsorted:
    case ChunkState::Small:
    case ChunkState::Large:
    case ChunkState::Top: return true;
    default: return false;
  }
}

Heap::Heap(target::Target& t, const std::string& version_hint) : t_(t) {
  // Arenas are read and walked in parallel on cores and live processes (a gdb callback target
  // serialises on the interpreter, so it stays single-threaded).
  parallel_ = t.parallel_reads();
  glibc_ = locate_glibc(t, version_hint);
  try {
    read_params();
    read_arenas();
  } catch (const Fault& f) {
    // Say why a required structure is missing when the core itself is cut short.
    if (!t.truncation().empty())
      throw FormatError(t.path(), "core file is truncated (" + t.truncation() + "): " + f.what());
    throw;
  }
  read_tcaches();
  build_free_index();
  scan_mmapped();
}

uint64_t Heap::reveal(uint64_t field_address, uint64_t stored) const {
  return layout().safe_linking ? ((field_address >> 12) ^ stored) : stored;
}

void Heap::read_params() {
  const Layout& l = layout();
  memory::Reader r(t_.memory());
  std::vector<uint8_t> mp(l.mp_size);
  r.bytes(glibc_.mp, mp.data(), mp.size(), "glibc's mp_ (malloc parameters)");
  auto i32 = [&](uint64_t off) {
    int32_t v;
    std::memcpy(&v, mp.data() + off, 4);
    return static_cast<uint64_t>(static_cast<uint32_t>(v));
  };
  params_.trim_threshold = rd64(mp.data(), l.mp_trim_threshold);
  params_.top_pad = rd64(mp.data(), l.mp_top_pad);
  params_.mmap_threshold = rd64(mp.data(), l.mp_mmap_threshold);
  params_.arena_test = rd64(mp.data(), l.mp_arena_test);
  params_.arena_max = rd64(mp.data(), l.mp_arena_max);
  params_.sbrk_base = rd64(mp.data(), l.mp_sbrk_base);
  mmapped_.n_mmaps = i32(l.mp_n_mmaps);
  params_.n_mmaps_max = i32(l.mp_n_mmaps_max);
  if (present(l.mp_no_dyn_threshold)) params_.no_dyn_threshold = i32(l.mp_no_dyn_threshold);
  mmapped_.max_n_mmaps = i32(l.mp_max_n_mmaps);
  mmapped_.mmapped_mem = rd64(mp.data(), l.mp_mmapped_mem);
  mmapped_.max_mmapped_mem = rd64(mp.data(), l.mp_max_mmapped_mem);
  if (l.has_tcache) {
    params_.tcache_bins = rd64(mp.data(), l.mp_tcache_bins);
    params_.tcache_count = rd64(mp.data(), l.mp_tcache_count);
    params_.tcache_max_bytes = rd64(mp.data(), l.mp_tcache_max_bytes);
  }
  if (present(l.mp_hp_pagesize)) params_.hp_pagesize = rd64(mp.data(), l.mp_hp_pagesize);
  params_.heap_max = effective_heap_max(l, params_.hp_pagesize);
}

void Heap::read_arenas() {
  uint64_t a = glibc_.main_arena;
  std::vector<uint64_t> seen;
  std::vector<std::vector<uint8_t>> states;  // each arena's malloc_state bytes
  for (unsigned i = 0; i < kMaxArenas; ++i) {
    if (std::find(seen.begin(), seen.end(), a) != seen.end()) {
      diags_.add("cycle", a, std::nullopt, "arena ring returns to " + hex(a) + " without passing main_arena");
      break;
    }
    seen.push_back(a);
    Arena ar;
    ar.address = a;
    ar.index = i;
    ar.main = a == glibc_.main_arena;
    std::vector<uint8_t> ms;
    try {
      read_arena(ar, ms);
    } catch (const Fault& f) {
      if (ar.main) throw;
      diags_.add("unreadable", a, a, std::string("arena: ") + f.what());
      break;
    }
    uint64_t next = ar.next;
    arenas_.push_back(std::move(ar));
    states.push_back(std::move(ms));
    if (next == glibc_.main_arena) break;
    if (next == 0 || (next & 7) != 0) {
      diags_.add("bad_fd_bk", a, a, "arena ring broken: next = " + hex(next));
      break;
    }
    a = next;
  }
  // The free lists are pointer chases through the heap: one arena per thread. Each thread first
  // populates the page tables of its arena's heaps (one madvise per heap instead of a fault per
  // page), so that work is spread over the threads too.
  parallel_for(arenas_.size(), [&](size_t i) {
    for (const auto& h : arenas_[i].heaps) t_.memory().prefetch(h.address, h.walk_end - h.address);
    read_fastbins(arenas_[i], states[i].data());
    read_bins(arenas_[i], states[i].data());
  });
  merge_arena_diagnostics();
}

void Heap::merge_arena_diagnostics() {
  for (auto& a : arenas_) {
    diags_.append(a.diags);
    a.diags = Diagnostics{};
  }
}

void Heap::parallel_for(size_t n, const std::function<void(size_t)>& fn) {
  heapwalk::parallel_for(worker_count(n, parallel_), n, fn);
}

void Heap::read_arena(Arena& a, std::vector<uint8_t>& ms) {
  const Layout& l = layout();
  memory::Reader r(t_.memory());
  ms.resize(l.ms_size);
  r.bytes(a.address, ms.data(), ms.size(), a.main ? "main_arena" : "malloc_state");
  a.top = rd64(ms.data(), l.ms_top);
  a.next = rd64(ms.data(), l.ms_next);
  if (present(l.ms_attached_threads)) a.attached_threads = rd64(ms.data(), l.ms_attached_threads);
  a.system_mem = rd64(ms.data(), l.ms_system_mem);
  a.max_system_mem = rd64(ms.data(), l.ms_max_system_mem);
  uint64_t top_word;
  if (a.main && a.top == 0 && a.system_mem == 0 && a.max_system_mem == 0 && params_.sbrk_base == 0) {
    // ptmalloc_init never ran (main_arena's top is set by the first malloc_consolidate): no
    // malloc reached glibc's allocator, e.g. jemalloc or tcmalloc answers malloc. An idle arena,
    // not an unreadable one.
    a.diags.note(
        "main_arena was never used: no malloc() reached glibc's allocator (another "
        "allocator answers malloc)");
    return;
  }
  if (r.try_u64(a.top + 8, top_word)) {
    a.top_size = top_word & ~uint64_t{7};
  } else {
    a.diags.add("unreadable", a.top, a.address, "top chunk header unreadable");
  }
  read_heaps(a);
}

void Heap::read_fastbins(Arena& a, const uint8_t* ms) {
  const Layout& l = layout();
  memory::Reader r(t_.memory());
  uint64_t bound = a.system_mem / l.minsize + 2;
  // The lists are pointer chases through the heap, each step waiting on a cache miss. Walking
  // all of an arena's fastbins in lock-step keeps several of those misses in flight at once.
  struct Cursor {
    unsigned i;
    uint64_t p, expect, n = 0;
    CycleCheck cyc;
    bool first = true, done = false;
    FreeList fl;
    BigVector<uint64_t> entries;  // address | Fastbin, in list order
  };
  std::vector<Cursor> cur;
  for (unsigned i = 0; i < l.nfastbins; ++i) {
    uint64_t p = rd64(ms, l.ms_fastbins + i * 8);
    if (p == 0) continue;
    Cursor c{i, p, (i + 2) * l.alignment, 0, CycleCheck(p), true, false, FreeList{}};
    c.fl.index = i;
    c.fl.kind = ChunkState::Fastbin;
    cur.push_back(std::move(c));
  }
  size_t active = cur.size();
  uint64_t steps = 0;
  while (active) {
    if ((++steps & 0xffff) == 0) Progress::check();
    for (auto& c : cur) {
      if (c.done) continue;
      uint64_t p = c.p;
      auto where = [&c] { return "fastbin[" + std::to_string(c.i) + "]"; };
      auto stop = [&] {
        c.done = true;
        --active;
      };
      if (p == 0) {
        stop();
        continue;
      }
      if (!c.first && c.cyc.feed(p)) {
        a.diags.add("cycle", p, a.address, where() + " loops back to chunk " + hex(p));
        Count rm = dedupe_entries(c.entries, 0, c.fl, r);
        subtract(a.fast, rm);
        stop();
        continue;
      }
      c.first = false;
      if (c.n++ > bound) {
        a.diags.add("cycle", p, a.address, where() + " longer than the arena allows");
        stop();
        continue;
      }
      if (p & (l.alignment - 1)) {
        a.diags.add("misaligned", p, a.address, where() + " chunk is misaligned");
        stop();
        continue;
      }
      const uint8_t* h = r.span(p + 8, 16);
      if (!h) {
        a.diags.add("unreadable", p, a.address, where() + " chunk unreadable");
        stop();
        continue;
      }
      uint64_t sz = rd64(h, 0) & ~uint64_t{7};
      if (sz != c.expect)
        a.diags.add("bad_size", p, a.address, where() + " chunk has size " + hex(sz) + ", expected " + hex(c.expect));
      c.entries.push_back(p | static_cast<uint64_t>(ChunkState::Fastbin));
      c.fl.bytes += sz;
      a.fast.add(sz);
      c.p = reveal(p + 16, rd64(h, 8));
      r.prefetch(c.p + 8);
    }
  }
  // The index is the largest thing a summary keeps (8 bytes per free chunk): grown once to its
  // exact size, each list's entries released as soon as they are in it.
  size_t total = a.free_index.size();
  for (const auto& c : cur) total += c.entries.size();
  a.free_index.reserve(total);
  for (auto& c : cur) {
    if (c.entries.empty()) continue;
    c.fl.head = c.entries.front() & ~uint64_t{15};
    c.fl.count = c.entries.size();
    a.free_index.insert(a.free_index.end(), c.entries.begin(), c.entries.end());
    BigVector<uint64_t>().swap(c.entries);
    a.fastbins.push_back(std::move(c.fl));
  }
}

void Heap::read_bins(Arena& a, const uint8_t* ms) {
  const Layout& l = layout();
  memory::Reader r(t_.memory());
  uint64_t bound = a.system_mem / l.minsize + 2;
  BigVector<uint64_t> binned;  // appended to the index once, at its exact size (read_fastbins)
  for (unsigned i = 1; i < l.nbins; ++i) {
    uint64_t slot = l.ms_bins + (i - 1) * 16;
    uint64_t bin = a.address + slot - 16;  // bin_at(): a fake chunk whose fd/bk are the slot
    uint64_t fd = rd64(ms, slot);
    if (fd == bin || fd == 0) continue;
    FreeList fl;
    fl.index = i;
    fl.kind = i == 1 ? ChunkState::Unsorted : (i < l.nsmallbins ? ChunkState::Small : ChunkState::Large);
    const char* kind = state_name(fl.kind);
    uint64_t prev = bin, p = fd;
    CycleCheck cyc(bin);
    auto& idx = binned;
    const size_t from = idx.size();
    const uint64_t state = static_cast<uint64_t>(fl.kind);
    for (uint64_t n = 0; p != bin; ++n) {
      if ((n & 0xffff) == 0xffff) Progress::check();
      if (cyc.feed(p) || n > bound) {
        a.diags.add("cycle", p, a.address,
                    std::string(kind) + " bin " + std::to_string(i) + " loops at chunk " + hex(p) +
                        " without returning to the bin");
        Count rm = dedupe_entries(idx, from, fl, r);
        subtract(a.binned, rm);
        break;
      }
      if (p & (l.alignment - 1)) {
        a.diags.add("misaligned", p, a.address,
                    std::string(kind) + " bin " + std::to_string(i) + " chunk is misaligned");
        break;
      }
      const uint8_t* c = r.span(p, 32);
      if (!c) {
        a.diags.add("unreadable", p, a.address, std::string(kind) + " bin " + std::to_string(i) + " chunk unreadable");
        break;
      }
      uint64_t raw = rd64(c, 8);
      uint64_t sz = raw & ~uint64_t{7};
      a.binned_raw += raw;
      uint64_t nfd = rd64(c, 16), bk = rd64(c, 24);
      if (bk != prev)
        a.diags.add("bad_fd_bk", p, a.address,
                    std::string(kind) + " bin " + std::to_string(i) + ": chunk's bk is " + hex(bk) +
                        " but the previous chunk is " + hex(prev));
      bool size_ok = sz >= l.minsize && (sz & (l.alignment - 1)) == 0;
      if (fl.kind == ChunkState::Small) size_ok = size_ok && sz == i * l.alignment;
      if (fl.kind == ChunkState::Large) size_ok = size_ok && sz >= l.nsmallbins * l.alignment;
      if (!size_ok)
        a.diags.add("bad_size", p, a.address,
                    std::string(kind) + " bin " + std::to_string(i) + " chunk has size " + hex(sz));
      idx.push_back(p | state);
      fl.bytes += sz;
      a.binned.add(sz);
      prev = p;
      p = nfd;
    }
    if (idx.size() == from) continue;
    fl.head = idx[from] & ~uint64_t{15};
    fl.count = idx.size() - from;
    a.bins.push_back(std::move(fl));
  }
  a.free_index.reserve(a.free_index.size() + binned.size());
  a.free_index.insert(a.free_index.end(), binned.begin(), binned.end());
}

void Heap::read_heaps(Arena& a) {
  const Layout& l = layout();
  memory::Reader r(t_.memory());
  if (a.main) {
    uint64_t base = params_.sbrk_base;
    if (base == 0 || a.top_size == 0) return;  // malloc never initialised the main heap
    HeapRange h;
    h.address = base;
    h.size = h.mprotect_size = a.system_mem;
    h.first_chunk = (base + l.alignment - 1) & ~(l.alignment - 1);
    h.walk_end = a.top + a.top_size;
    if (a.top < h.first_chunk || h.walk_end > base + a.system_mem + kPage) {
      a.diags.add("incomplete", a.top, a.address,
                  "main arena is not contiguous (top outside the sbrk heap); walked up to top only");
      if (a.top < h.first_chunk) h.walk_end = base + a.system_mem;
    }
    a.heaps.push_back(h);
    return;
  }
  std::vector<HeapRange> chain;
  const uint64_t heap_max = params_.heap_max;
  uint64_t hp = a.top & ~(heap_max - 1);
  for (uint64_t n = 0; hp != 0 && n < kMaxHeapsPerArena; ++n) {
    const uint8_t* hi = r.span(hp, l.hi_size);
    if (!hi) {
      a.diags.add("heap_info", hp, a.address, "heap_info unreadable");
      break;
    }
    uint64_t ar = rd64(hi, l.hi_ar_ptr), prev = rd64(hi, l.hi_prev);
    HeapRange h;
    h.address = hp;
    h.size = rd64(hi, l.hi_heap_size);
    h.mprotect_size = rd64(hi, l.hi_mprotect_size);
    if (ar != a.address || h.size > heap_max || h.size < l.hi_size) {
      a.diags.add("heap_info", hp, a.address,
                  "heap_info does not belong to this arena (ar_ptr " + hex(ar) + ", size " + hex(h.size) + ")");
      break;
    }
    h.walk_end = hp + h.size;
    h.first_chunk = hp + l.hi_size;
    chain.push_back(h);
    if (std::any_of(chain.begin(), chain.end() - 1, [&](const HeapRange& x) { return x.address == prev; })) {
      a.diags.add("cycle", prev, a.address, "heap_info prev chain loops");
      break;
    }
    hp = prev;
  }
  std::reverse(chain.begin(), chain.end());
  if (!chain.empty()) {
    // The oldest heap holds the malloc_state right after heap_info.
    HeapRange& first = chain.front();
    if (first.address + l.hi_size == a.address)
      first.first_chunk = (a.address + l.ms_size + l.alignment - 1) & ~(l.alignment - 1);
    HeapRange& last = chain.back();
    if (a.top >= last.address && a.top < last.address + last.size) last.walk_end = a.top + a.top_size;
  }
  a.heaps = std::move(chain);
}

void Heap::read_tcaches() {
  const Layout& l = layout();
  memory::Reader r(t_.memory());
  std::optional<uint64_t> learned_key = glibc_.tcache_key;
  for (const auto& th : t_.threads()) {
    ThreadCache tc;
    tc.lwp = th.lwp;
    uint64_t v;
    if (th.arena) {
      tc.arena = *th.arena;
    } else if (glibc_.thread_arena_tpoff && th.fs_base &&
               r.try_u64(th.fs_base + static_cast<uint64_t>(*glibc_.thread_arena_tpoff), v)) {
      // (void *) -1 is ATFORK_ARENA_PTR, set transiently around fork().
      if (v && v != ~uint64_t{0}) tc.arena = v;
    }
    std::optional<uint64_t> ptr;
    if (th.tcache) {
      ptr = *th.tcache;
    } else if (glibc_.tcache_tpoff && th.fs_base) {
      if (r.try_u64(th.fs_base + static_cast<uint64_t>(*glibc_.tcache_tpoff), v)) {
        ptr = v;
      } else {
        diags_.add("unreadable", th.fs_base, std::nullopt,
                   "thread " + std::to_string(th.lwp) + ": TLS block unreadable");
      }
    }
    // No tcache: NULL, or (2.43) the static __tcache_dummy / __tcache_dummy + 1 (misaligned).
    bool none = !l.has_tcache || !ptr || *ptr == 0 || (*ptr & (l.alignment - 1)) != 0 ||
                (glibc_.tcache_dummy && (*ptr == *glibc_.tcache_dummy || *ptr == *glibc_.tcache_dummy + 1));
    uint64_t hdr = 0;
    // The struct's chunk may be larger than request2size(sizeof struct): see
    // tcache_struct_chunk_sizes (a remainder below MINSIZE is not split off; 2.43 pads twice).
    if (!none && (!r.try_u64(*ptr - 8, hdr) || !tcache_struct_chunk_fits(l, hdr & ~uint64_t{7}))) {
      // The 2.43 dummy (no symbol to recognise it) is not in a chunk: that is "no tcache yet".
      if (l.tcache_init != TcacheInit::OnDemand) {
        auto [lo, hi] = tcache_struct_chunk_sizes(l);
        diags_.add("bad_tcache", *ptr, std::nullopt,
                   "thread " + std::to_string(th.lwp) +
                       ": tcache pointer does not lead to a tcache_perthread_struct chunk (" + hex(lo) + ".." +
                       hex(hi) + " bytes; header " + hex(hdr) + ")");
      }
      none = true;
    }
    if (none) {
      threads_.push_back(std::move(tc));
      continue;
    }
    tc.address = *ptr;
    std::vector<uint8_t> ts(l.tc_size);
    if (t_.memory().read(*ptr, ts.data(), ts.size()) != ts.size()) {
      diags_.add("bad_tcache", *ptr, std::nullopt,
                 "thread " + std::to_string(th.lwp) + ": tcache_perthread_struct unreadable");
      threads_.push_back(std::move(tc));
      continue;
    }
    for (unsigned i = 0; i < l.tcache_bins; ++i) {
      // A DWARF-sized struct can be smaller than the profile's bin count implies (a 2.36 debug
      // file under a 2.42 profile guess): stop at its end (ASan: heap-buffer-overflow here).
      if (l.tc_entries + (i + 1) * 8 > ts.size() || l.tc_counts + (i + 1) * l.tcache_count_width > ts.size()) break;
      uint64_t raw = 0;
      if (l.tcache_count_width == 2) {
        uint16_t c;
        std::memcpy(&c, ts.data() + l.tc_counts + i * 2, 2);
        raw = c;
      } else {
        raw = ts[l.tc_counts + i];  // unsigned: exact up to 128 (2.26-2.29 char counts)
      }
      uint64_t count = tcache_chunk_count(l, raw, params_.tcache_count);
      if (l.tcache_counts == TcacheCounts::FreeSlots && raw > params_.tcache_count)
        diags_.add("bad_tcache", *ptr, std::nullopt,
                   "thread " + std::to_string(th.lwp) + " tcache bin " + std::to_string(i) + ": num_slots " +
                       std::to_string(raw) + " exceeds tcache_count");
      uint64_t e = rd64(ts.data(), l.tc_entries + i * 8);
      if (e == 0 && count == 0) continue;
      FreeList fl;
      fl.index = i;
      fl.kind = ChunkState::Tcache;
      auto [lo, hi] = tcache_bin_sizes(l, i);
      CycleCheck cyc(e);
      bool first = true;
      uint64_t n = 0, prev_size = 0;
      std::string where = "thread " + std::to_string(th.lwp) + " tcache bin " + std::to_string(i);
      for (; e != 0 && n < 65536; ++n) {
        if (!first && cyc.feed(e)) {
          diags_.add("cycle", e - 16, std::nullopt, where + " loops at chunk " + hex(e - 16));
          Count rm = dedupe(fl);
          subtract(tc.total, rm);
          n -= rm.count;
          break;
        }
        first = false;
        if (e & (l.alignment - 1)) {
          diags_.add("misaligned", e, std::nullopt, where + " entry is misaligned");
          break;
        }
        uint64_t p = e - 16;
        const uint8_t* c = r.span(p, 32);
        if (!c) {
          diags_.add("unreadable", p, std::nullopt, where + " chunk unreadable");
          break;
        }
        uint64_t sz = rd64(c, 8) & ~uint64_t{7};
        uint64_t next = rd64(c, 16 + l.te_next);
        if (sz < lo || sz > hi)
          diags_.add(
              "bad_tcache", p, std::nullopt,
              where + " chunk has size " + hex(sz) + ", expected " + (lo == hi ? hex(lo) : hex(lo) + ".." + hex(hi)));
        if (i >= l.tcache_small_bins && l.tcache_small_bins && sz < prev_size)
          diags_.add("bad_tcache", p, std::nullopt, where + " is not sorted by size");
        prev_size = sz;
        if (present(l.te_key)) {
          uint64_t key = rd64(c, 16 + l.te_key);
          if (l.key_kind == TcacheKey::OwnerPointer && key != *ptr) {
            diags_.add("bad_tcache", p, std::nullopt, where + " chunk's key is not its tcache's address");
          } else if (l.key_kind == TcacheKey::Random) {
            if (!learned_key) learned_key = key;  // all threads share tcache_key
            if (key != *learned_key)
              diags_.add("bad_tcache", p, std::nullopt, where + " chunk's key is not tcache_key");
          }
        }
        fl.chunks.push_back({p, sz});
        fl.bytes += sz;
        tc.total.add(sz);
        e = reveal(e + l.te_next, next);
      }
      if (n != count)
        diags_.add("bad_tcache", *ptr, std::nullopt,
                   where + " holds " + std::to_string(n) + " chunks but its count says " + std::to_string(count));
      if (fl.chunks.empty()) continue;
      fl.head = fl.chunks.front().address;
      fl.count = fl.chunks.size();
      tc.bins.push_back(std::move(fl));
    }
    threads_.push_back(std::move(tc));
  }
  if (learned_key && !glibc_.tcache_key) {
    glibc_.tcache_key = learned_key;
    glibc_.how["tcache_key"] = "heuristic:tcache-entry";
  }
}

const Arena* Heap::arena_of(uint64_t address) const {
  auto it =
      std::upper_bound(ranges_.begin(), ranges_.end(), address, [](uint64_t a, const Range& r) { return a < r.start; });
  if (it == ranges_.begin()) return nullptr;
  --it;
  return address < it->end ? &arenas_[it->arena] : nullptr;
}

std::vector<FreeChunk> Heap::list_chunks(const Arena& a, const FreeList& fl) const {
  ListCursor at;
  return list_chunks(a, fl, at, SIZE_MAX);
}

std::vector<FreeChunk> Heap::list_chunks(const Arena&, const FreeList& fl, ListCursor& at, size_t max) const {
  std::vector<FreeChunk> out;
  if (at.done) return out;
  if (fl.kind == ChunkState::Tcache) {
    size_t from = static_cast<size_t>(std::min<uint64_t>(at.taken, fl.chunks.size()));
    size_t n = std::min(max, fl.chunks.size() - from);
    out.assign(fl.chunks.begin() + static_cast<std::ptrdiff_t>(from),
               fl.chunks.begin() + static_cast<std::ptrdiff_t>(from + n));
    at.taken += n;
    at.done = at.taken >= fl.chunks.size();
    return out;
  }
  // Follow the list as read_fastbins/read_bins did: they stopped at the first chunk they could
  // not take, so the first `count` distinct chunks along it are the ones counted.
  if (!at.started) {
    at.started = true;
    at.p = fl.head;
  }
  memory::Reader r(t_.memory());
  out.reserve(static_cast<size_t>(std::min<uint64_t>({fl.count - std::min(at.taken, fl.count), max, 1u << 20})));
  while (out.size() < max) {
    uint64_t size_word = 0, fd = 0;
    if (at.taken >= fl.count || at.steps > 2 * fl.count + 2 || !r.try_u64(at.p + 8, size_word) ||
        !r.try_u64(at.p + 16, fd)) {
      at.done = true;
      at.seen.clear();
      break;
    }
    if (!fl.cycle || at.seen.insert(at.p).second) {
      out.push_back({at.p, size_word & ~uint64_t{7}});
      ++at.taken;
    }
    at.p = fl.kind == ChunkState::Fastbin ? reveal(at.p + 16, fd) : fd;
    ++at.steps;
  }
  return out;
}

const Arena* Heap::find_arena(uint64_t selector) const {
  for (const auto& a : arenas_)
    if (a.address == selector) return &a;
  if (selector < arenas_.size()) return &arenas_[selector];
  return nullptr;
}

void Heap::build_free_index() {
  ranges_.clear();
  for (size_t i = 0; i < arenas_.size(); ++i)
    for (const auto& h : arenas_[i].heaps)
      ranges_.push_back({h.address, arenas_[i].main ? h.walk_end : h.address + h.size, i});
  std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) { return a.start < b.start; });
  // Tcache chunks go to the arena whose heap holds them (counted first: each index grows once).
  std::vector<size_t> more(arenas_.size());
  for (const auto& tc : threads_)
    for (const auto& fl : tc.bins)
      for (const auto& c : fl.chunks)
        if (const Arena* a = arena_of(c.address)) ++more[static_cast<size_t>(a - arenas_.data())];
  for (size_t i = 0; i < arenas_.size(); ++i) arenas_[i].free_index.reserve(arenas_[i].free_index.size() + more[i]);
  for (const auto& tc : threads_) {
    for (const auto& fl : tc.bins) {
      for (const auto& c : fl.chunks) {
        if (const Arena* a = arena_of(c.address)) {
          auto* ar = const_cast<Arena*>(a);
          ar->tcache.add(c.size);
          ar->free_index.push_back(c.address | static_cast<uint64_t>(ChunkState::Tcache));
        } else {
          diags_.add("outside_heap", c.address, std::nullopt,
                     "thread " + std::to_string(tc.lwp) + " tcache chunk lies in no arena's heap");
        }
      }
    }
  }
  // Each arena's own index, built and sorted in parallel.
  parallel_for(arenas_.size(), [&](size_t i) {
    Arena& a = arenas_[i];
    auto& idx = a.free_index;
    // The lists' chunks went in as they were read (fastbins, then bins, then tcache chunks,
    // which are already known to lie in this arena): drop what lies outside its heaps.
    size_t w = 0;
    for (size_t k = 0; k < idx.size(); ++k) {
      uint64_t addr = fi_addr(idx[k]);
      if (fi_state(idx[k]) != ChunkState::Tcache && arena_of(addr) != &a) {
        a.diags.add("outside_heap", addr, a.address,
                    std::string(state_name(fi_state(idx[k]))) + " chunk lies outside this arena's heaps");
        continue;
      }
      idx[w++] = idx[k];
    }
    idx.resize(w);
    radix_sort(idx);  // by address, then state: two states of one chunk sort the same every run
    for (size_t k = 1; k < idx.size(); ++k) {
      if (fi_addr(idx[k]) == fi_addr(idx[k - 1]))
        a.diags.add("double_free", fi_addr(idx[k]), a.address,
                    std::string("chunk is on two free lists (") + state_name(fi_state(idx[k - 1])) + " and " +
                        state_name(fi_state(idx[k])) + ")");
    }
  });
  merge_arena_diagnostics();
}

namespace {

// memalign, posix_memalign and aligned_alloc of an mmapped size: _int_memalign moves the chunk up
// to an aligned spot inside the mapping and records that offset in the chunk's prev_size; the
// header written at the mapping's start stays there, stale (malloc/malloc.c, _int_memalign:
// glibc-2.36 "For mmapped chunks, just adjust offset", at least MINSIZE past the start; 2.43
// mmap_set_chunk at PTR_ALIGN_UP, as little as 16 bytes past it). The alignment is not
// recorded, so every power of two is tried; a spot counts only if both its words describe
// exactly the same mapping.
void aligned_mmapped_chunk(const Layout& l, memory::Reader& r, const MmapExtent& ext, MmappedChunk& c) {
  const uint64_t hdr = 2 * l.size_sz;
  for (uint64_t a = 2 * l.alignment; a < ext.size; a <<= 1) {
    uint64_t first = ((ext.base + hdr + a - 1) & ~(a - 1)) - hdr;
    for (uint64_t p : {first, first + a}) {
      if (p - ext.base < hdr || p - ext.base > ext.size - hdr) continue;  // 2.43 may use base + 16
      const uint8_t* h = r.span(p, 16);
      if (!h) continue;
      uint64_t ps = rd64(h, 0), sw = rd64(h, 8);
      if ((sw & 7) != 2 || (ps & ~uint64_t{1}) != p - ext.base) continue;
      MmapExtent e = mmap_extent(l, p, ps, sw);
      if (e.base != ext.base || e.size != ext.size || (sw & ~uint64_t{7}) < l.minsize) continue;
      c = {p, sw & ~uint64_t{7}, ps};
      return;
    }
  }
}

}  // namespace

void Heap::resolve_mmapped_suspects() {
  // glibc's counters are the truth for the totals (they count every mmapped chunk, the scan
  // only guesses from page-start headers). When the scan found more, the extra finds are the
  // ones whose removal gives exactly mp_'s count and bytes; only a unique such set of at most
  // three finds is removed (else the mismatch is reported as it is).
  auto& m = mmapped_;
  if (m.found.count <= m.n_mmaps || m.found.bytes <= m.mmapped_mem) return;
  const uint64_t k = m.found.count - m.n_mmaps, extra = m.found.bytes - m.mmapped_mem;
  const size_t n = m.chunks.size();
  if (k > 3 || n > 256 || n != m.found.count) return;
  std::vector<uint64_t> ext(n);
  for (size_t i = 0; i < n; ++i)
    ext[i] = mmap_extent(layout(), m.chunks[i].address, m.chunks[i].prev_size, m.chunks[i].size | 2).size;
  std::vector<size_t> pick, found;
  unsigned solutions = 0;
  std::function<void(size_t, uint64_t)> rec = [&](size_t from, uint64_t sum) {
    if (solutions > 1) return;
    if (pick.size() == k) {
      if (sum == extra && ++solutions == 1) found = pick;
      return;
    }
    for (size_t i = from; i < n; ++i) {
      if (sum + ext[i] > extra) continue;
      pick.push_back(i);
      rec(i + 1, sum + ext[i]);
      pick.pop_back();
    }
  };
  rec(0, 0);
  if (solutions != 1) return;
  std::string what;
  for (auto it = found.rbegin(); it != found.rend(); ++it) {
    const auto& c = m.chunks[*it];
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s0x%016llx (%llu bytes)", what.empty() ? "" : ", ",
                  static_cast<unsigned long long>(c.address), static_cast<unsigned long long>(ext[*it]));
    what += buf;
    m.suspects.push_back(c);
    m.chunks.erase(m.chunks.begin() + static_cast<std::ptrdiff_t>(*it));
  }
  std::reverse(m.suspects.begin(), m.suspects.end());
  m.found.count -= k;
  m.found.bytes -= extra;
  diags_.note("mmapped-chunk scan: " + std::to_string(k) + " page-start header" + (k == 1 ? "" : "s") +
              " left out as suspect" + (k == 1 ? "" : "s") + " (" + what + "): without " + (k == 1 ? "it" : "them") +
              " the scan agrees with mp_'s count and bytes exactly; suspects feed no total");
}

void Heap::scan_mmapped() {
  const Layout& l = layout();
  // Heaps are excluded by range: a heap's mapping may be merged with neighbouring anonymous memory.
  std::vector<std::pair<uint64_t, uint64_t>> excluded;
  for (const auto& a : arenas_)
    for (const auto& h : a.heaps) excluded.emplace_back(h.address, a.main ? h.walk_end : h.address + params_.heap_max);
  std::sort(excluded.begin(), excluded.end());
  memory::Reader r(t_.memory());
  auto& mem = t_.memory();
  const auto& regs = mem.regions();
  // An mmapped chunk is one anonymous read-write mapping of its own (merged, perhaps, with its
  // anonymous neighbours): its whole extent lies in consecutive anonymous, read-write, saved
  // regions. A "header" whose size runs on into a file mapping, a read-only or unsaved region
  // or a hole is a page that happens to look like one (issue 12: `0 / 0x350002` at a page
  // start of a JVM's anonymous mapping, running 3.3 MiB into a read-only one).
  auto anon_rw = [](const memory::Region& r) {
    return r.read && r.write && r.saved && (r.path.empty() || r.path.rfind("[anon:", 0) == 0);
  };
  auto extent_fits = [&](size_t ri, uint64_t start, uint64_t size) {
    uint64_t end = start + size;
    if (end < start) return false;
    uint64_t cur = start;
    for (size_t k = ri; k < regs.size() && cur < end; ++k) {
      const auto& r = regs[k];
      if (r.start > cur || !anon_rw(r)) return false;
      uint64_t have = r.saved_end ? std::min(r.saved_end, r.end) : r.end;
      if (have < std::min(end, r.end)) return false;
      cur = r.end;
    }
    return cur >= end;
  };
  for (size_t ri = 0; ri < regs.size(); ++ri) {
    const auto& reg = regs[ri];
    if (!anon_rw(reg)) continue;
    uint64_t o = (reg.start + kPage - 1) & ~(kPage - 1);
    if (o < reg.start) continue;  // a region in the last page of the address space: rounding wrapped
    uint64_t run_end = 0;         // [o, run_end) may hold data (MemorySource::data_run)
    // o >= reg.start: a step past the last page of the address space wraps o to a small value.
    while (o >= reg.start && o < reg.end && reg.end - o >= 16) {
      auto ex = std::upper_bound(excluded.begin(), excluded.end(), std::make_pair(o, ~uint64_t{0}));
      if (ex != excluded.begin() && o < std::prev(ex)->second) {
        uint64_t next = (std::prev(ex)->second + kPage - 1) & ~(kPage - 1);
        if (next <= o) break;  // a heap "ending" near 2^64 (smashed size): rounding wrapped to 0
        o = next;
        continue;
      }
      if (o >= run_end) {
        // Skip what the source knows reads as zeros (a core's holes) unread: a zero header is
        // no chunk, and a 16 GiB sparse segment must not cost 16 GiB of page cache.
        auto run = mem.data_run(o, reg.end);
        run_end = run.second;
        if (run.first > o) {
          o = (run.first + kPage - 1) & ~(kPage - 1);
          if (o < run.first) break;
          continue;
        }
        if (run_end <= o) run_end = o + kPage;  // the source cannot tell: one page at a time
      }
      const uint8_t* hdr = r.span(o, 16);
      if (!hdr) {
        o += kPage;
        continue;
      }
      uint64_t prev_size = rd64(hdr, 0), size_word = rd64(hdr, 8);
      uint64_t sz = size_word & ~uint64_t{7};
      // sysmalloc_mmap sets the head to size | IS_MMAPPED (no other flag) with the chunk at the
      // mapping's start for plain requests (prev_size 0; 2.43: 0 or MMAP_HP).
      bool plain = l.mmap_header == MmapHeader::Glibc243 ? (prev_size & ~uint64_t{1}) == 0 : prev_size == 0;
      if (plain && (size_word & 7) == 2 && sz >= l.minsize) {
        MmapExtent ext = mmap_extent(l, o, prev_size, size_word);
        if (ext.base == o && ext.size >= kPage && (ext.size & (kPage - 1)) == 0 && extent_fits(ri, o, ext.size)) {
          MmappedChunk c{o, sz, prev_size};
          aligned_mmapped_chunk(l, r, ext, c);
          mmapped_.chunks.push_back(c);
          mmapped_.found.count += 1;
          mmapped_.found.bytes += ext.size;  // glibc's mmapped_mem counts whole mappings
          o += ext.size;
          continue;
        }
      }
      o += kPage;
    }
  }
  resolve_mmapped_suspects();
  if (mem.regions().empty()) {
    diags_.note(
        "the target's mappings are unknown (memory read through a callback): mmapped "
        "chunks were not scanned; glibc's own counters are reported");
  } else if (mmapped_.found.count != mmapped_.n_mmaps || mmapped_.found.bytes != mmapped_.mmapped_mem) {
    diags_.add("mmapped_mismatch", std::nullopt, std::nullopt,
               "found " + std::to_string(mmapped_.found.count) + " mmapped chunks (" +
                   std::to_string(mmapped_.found.bytes) + " bytes) but mp_ counts " + std::to_string(mmapped_.n_mmaps) +
                   " (" + std::to_string(mmapped_.mmapped_mem) +
                   " bytes); aligned (memalign) or unsaved mmapped chunks are not found by the scan");
  }
}

uint64_t Heap::resync(uint64_t p, uint64_t end, const Arena& a) {
  const Layout& l = layout();
  memory::Reader r(t_.memory());
  auto plausible = [&](uint64_t q, uint64_t& sz) {
    uint64_t w;
    if (!r.try_u64(q + 8, w)) return false;
    sz = w & ~uint64_t{7};
    return sz >= l.minsize && (sz & (l.alignment - 1)) == 0 && sz <= end - q;
  };
  // The next known free-list chunk is a trustworthy landing point; otherwise look for two
  // consecutive plausible headers.
  auto fi = std::upper_bound(a.free_index.begin(), a.free_index.end(), p | 15);
  uint64_t known = (fi != a.free_index.end() && fi_addr(*fi) < end) ? fi_addr(*fi) : end;
  for (uint64_t q = p + l.alignment; q + 16 <= end && q < known; q += l.alignment) {
    if (q == a.top) return q;
    uint64_t s1, s2, w;
    // Unreadable: stop here (the walk reports it) rather than probing every 16 bytes up to an
    // `end` taken from a smashed size (found by fuzz_heap: system_mem 2^60 over a small heap).
    if (!r.try_u64(q + 8, w)) return q;
    if (!plausible(q, s1)) continue;
    uint64_t n = q + s1;
    if (n == end || n == a.top || (n < end && plausible(n, s2))) return q;
  }
  return std::min(known, a.top >= p && a.top < end ? a.top : end);
}

template <typename Visit>
void Heap::walk_heap(const Arena& a, size_t hi, Visit&& visit, bool record) {
  const Layout& l = layout();
  const HeapRange& h = a.heaps[hi];
  uint64_t p = h.first_chunk, end = h.walk_end;
  bool top_heap = a.top >= h.first_chunk && a.top <= end;
  memory::Reader r(t_.memory());
  // Fast path for mmapped cores: one pointer to the whole heap, no per-chunk lookups.
  const uint8_t* base = end > p ? t_.memory().direct(p, end - p) : nullptr;
  auto fi = std::lower_bound(a.free_index.begin(), a.free_index.end(), p);
  auto fend = a.free_index.end();
  uint64_t steps = 0, reported = p;
  while (p < end) {
    if ((++steps & 0xffff) == 0) {
      Progress::check();
      Progress::advance(p - reported);
      reported = p;
    }
    if (p == a.top) {
      visit(p, a.top_size, ChunkState::Top, &a, hi);
      return;
    }
    uint64_t size_word;
    if (base) {
      if (p + 16 > end) break;
      std::memcpy(&size_word, base + (p - h.first_chunk) + 8, 8);
      // Each header's address depends on the previous size: help the loads run ahead.
      if (p + 1024 < end) __builtin_prefetch(base + (p - h.first_chunk) + 1024);
    } else if (!r.try_u64(p + 8, size_word)) {
      if (record)
        const_cast<Arena&>(a).diags.add("unreadable", p, a.address, "chunk header unreadable; rest of heap skipped");
      return;
    }
    uint64_t sz = size_word & ~uint64_t{7};
    if (sz == 0 && !top_heap) {
      visit(p, end - p, ChunkState::Fencepost, &a, hi);  // the final fencepost of an old heap
      return;
    }
    if (sz == 16 && !top_heap) {
      visit(p, 16, ChunkState::Fencepost, &a, hi);
      p += 16;
      continue;
    }
    bool bad =
        sz < l.minsize || (sz & (l.alignment - 1)) != 0 || sz > end - p || (top_heap && p < a.top && sz > a.top - p);
    if (bad) {
      uint64_t q = resync(p, end, a);
      if (record)
        const_cast<Arena&>(a).diags.add("bad_size", p, a.address,
                                        "chunk size field " + hex(size_word) + " is impossible here; skipped " +
                                            std::to_string(q - p) + " bytes to " + hex(q));
      p = q;
      continue;
    }
    while (fi != fend && fi_addr(*fi) < p) {
      if (record)
        const_cast<Arena&>(a).diags.add(
            "outside_heap", fi_addr(*fi), a.address,
            std::string(state_name(fi_state(*fi))) + " chunk is not on a chunk boundary of the heap walk");
      ++fi;
    }
    ChunkState st = ChunkState::Used;
    if (fi != fend && fi_addr(*fi) == p) {
      st = fi_state(*fi);
      while (fi != fend && fi_addr(*fi) == p) ++fi;
    }
    // sysmalloc turns an old top too small to free into an in-use chunk without the
    // NON_MAIN_ARENA bit, just before the final fencepost of a heap that is not the last.
    if (st == ChunkState::Used && !a.main && !top_heap && (size_word & 4) == 0 && end - (p + sz) <= 16) {
      visit(p, sz, ChunkState::Fencepost, &a, hi);
      p += sz;
      continue;
    }
    if (record && (st == ChunkState::Used || st == ChunkState::Fastbin || st == ChunkState::Tcache) &&
        ((size_word & 4) != 0) == a.main)
      const_cast<Arena&>(a).diags.add(
          "bad_size", p, a.address,
          std::string("chunk's NON_MAIN_ARENA bit does not match its arena (size field ") + hex(size_word) + ")");
    if (!visit(p, sz, st, &a, hi)) return;
    p += sz;
  }
}

void Heap::walk(const Arena* only, const ChunkVisitor& visit) {
  summarize();
  uint64_t total = 0;
  for (const auto& a : arenas_)
    if (!only || only == &a)
      for (const auto& h : a.heaps) total += h.walk_end - h.first_chunk;
  Progress::start("walking heaps", total);
  walk_impl(only, visit, false);
}

void Heap::walk_impl(const Arena* only, const ChunkVisitor& visit, bool record) {
  bool stop = false;
  ChunkVisitor v = [&](uint64_t addr, uint64_t size, ChunkState st, const Arena* a, size_t h) {
    if (!visit(addr, size, st, a, h)) {
      stop = true;
      return false;
    }
    return true;
  };
  for (const auto& a : arenas_) {
    if (only && only != &a) continue;
    for (size_t h = 0; h < a.heaps.size() && !stop; ++h) walk_heap(a, h, v, record);
    if (stop) return;
  }
  if (!only) {
    for (const auto& c : mmapped_.chunks)
      if (!visit(c.address, c.size, ChunkState::Mmapped, nullptr, 0)) return;
  }
}

void Heap::summarize() {
  if (walked_once_) return;
  uint64_t total = 0;
  for (const auto& a : arenas_)
    for (const auto& h : a.heaps) total += h.walk_end - h.first_chunk;
  Progress::start("walking heaps", total);
  // Each arena is walked by one thread into its own counters and diagnostics.
  parallel_for(arenas_.size(), [&](size_t i) {
    Arena& a = arenas_[i];
    a.in_use = Count{};
    a.fenceposts = Count{};
    auto count = [&a](uint64_t, uint64_t size, ChunkState st, const Arena*, size_t) {
      if (st == ChunkState::Used) a.in_use.add(size);
      if (st == ChunkState::Fencepost) a.fenceposts.add(size);
      return true;
    };
    for (size_t h = 0; h < a.heaps.size(); ++h) walk_heap(a, h, count, true);
    a.walked = true;
  });
  merge_arena_diagnostics();
  walked_once_ = true;
}

}  // namespace heapwalk::ptmalloc
