#include "ptmalloc/finder.h"

#include <algorithm>
#include <cstring>
#include <map>

namespace heapwalk::ptmalloc {

namespace {

uint64_t rd(const uint8_t* p, uint64_t off) {
  uint64_t v;
  std::memcpy(&v, p + off, 8);
  return v;
}

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMaxScan = 64ull << 20;  // bound per region
constexpr int64_t kTlsWindow = 64 * 1024;   // static TLS lies below the thread pointer

}  // namespace

std::vector<memory::Region> libc_data_regions(const target::Target& t, const std::string& libc_path) {
  std::vector<memory::Region> out;
  const auto& rs = t.kind() == target::Target::Kind::Callback ? std::vector<memory::Region>{}
                                                              : const_cast<target::Target&>(t).memory().regions();
  for (size_t i = 0; i < rs.size(); ++i) {
    if (rs[i].path != libc_path || !rs[i].write) continue;
    out.push_back(rs[i]);
    if (i + 1 < rs.size() && rs[i + 1].start == rs[i].end && rs[i + 1].path.empty() && rs[i + 1].write)
      out.push_back(rs[i + 1]);
  }
  return out;
}

std::optional<ArenaCandidate> find_main_arena(memory::MemorySource& mem, const Layout& l,
                                              const std::vector<memory::Region>& regions) {
  std::vector<ArenaCandidate> found;
  memory::Reader r(mem);
  for (const auto& reg : regions) {
    if (!reg.saved) continue;  // nothing to read (and no reason to allocate for it)
    uint64_t len = std::min(reg.end - reg.start, kMaxScan);
    // Only the saved part: a core's unsaved (or cut-short) region would otherwise cost a 64 MiB
    // zero-filled buffer per region (found by fuzz_core: 2 s per input). 0: not known, read all.
    if (uint64_t span = mem.readable_span(reg.start, len)) len = span;
    std::vector<uint8_t> buf(len);
    size_t got = mem.read(reg.start, buf.data(), len);
    if (got < l.ms_size) continue;
    for (uint64_t off = 0; off + l.ms_size <= got; off += 8) {
      const uint8_t* ms = buf.data() + off;
      uint64_t a = reg.start + off;
      // Cheap first filter: the unsorted bin is empty (points at itself) or holds two aligned
      // pointers; and `next` is a plausible pointer.
      uint64_t next = rd(ms, l.ms_next);
      if (next == 0 || (next & 7)) continue;
      unsigned empty = 0;
      bool ok = true;
      for (unsigned i = 1; i < l.nbins && ok; ++i) {
        uint64_t slot = l.ms_bins + (i - 1) * 16;
        uint64_t bin = a + slot - 16;
        uint64_t fd = rd(ms, slot), bk = rd(ms, slot + 8);
        if (fd == bin && bk == bin) {
          ++empty;
        } else if (fd == bin || bk == bin || fd == 0 || bk == 0 || (fd & 15) || (bk & 15) ||
                   (fd >= a && fd < a + l.ms_size) || (bk >= a && bk < a + l.ms_size)) {
          ok = false;
        }
      }
      if (!ok || empty < l.nbins / 2) continue;
      uint64_t sys = rd(ms, l.ms_system_mem), maxsys = rd(ms, l.ms_max_system_mem);
      // (system_mem need not be a page multiple: 2.31's main arena shows 0x21fd5.)
      if (maxsys < sys) continue;
      uint64_t top = rd(ms, l.ms_top);
      if (top == 0 || (top & 15)) continue;
      // Walk the ring: every other member is a non-main arena right after its heap_info.
      unsigned ring = 1;
      uint64_t b = next;
      bool closed = next == a;
      for (unsigned hop = 0; !closed && hop < 1024; ++hop) {
        uint64_t heap = b - l.hi_size, ar, nb;
        // With the hugetlb tunable (2.35-2.41) heaps are aligned to 4 huge pages (>= 8 MiB).
        uint64_t align = l.heap_max_hp_multiplier ? (8ull << 20) : l.heap_max;
        if ((heap & (align - 1)) != 0 || !r.try_u64(heap + l.hi_ar_ptr, ar) || ar != b || !r.try_u64(b + l.ms_next, nb))
          break;
        ++ring;
        if (nb == a) {
          closed = true;
          break;
        }
        b = nb;
      }
      if (!closed) continue;
      found.push_back({a, empty, ring});
    }
  }
  if (found.empty()) return std::nullopt;
  std::sort(found.begin(), found.end(), [](const ArenaCandidate& x, const ArenaCandidate& y) {
    return std::tie(x.ring, x.empty_bins) > std::tie(y.ring, y.empty_bins);
  });
  if (found.size() > 1 && found[0].ring == found[1].ring && found[0].empty_bins == found[1].empty_bins)
    return std::nullopt;  // ambiguous: refuse to guess
  return found[0];
}

std::optional<uint64_t> main_heap_start(const memory::MemorySource& mem, uint64_t top) {
  for (const auto& r : mem.regions())
    if (top >= r.start && top < r.end) return r.start;
  return std::nullopt;
}

std::optional<uint64_t> find_mp(memory::MemorySource& mem, const Layout& l, const std::vector<memory::Region>& regions,
                                uint64_t sbrk_base, uint64_t near) {
  std::optional<uint64_t> best;
  uint64_t best_dist = ~uint64_t{0};
  for (const auto& reg : regions) {
    uint64_t len = std::min(reg.end - reg.start, kMaxScan);
    std::vector<uint8_t> buf(len);
    size_t got = mem.read(reg.start, buf.data(), len);
    for (uint64_t off = 0; off + 8 <= got; off += 8) {
      // The first sbrk may return an unaligned break (2.31 cores show system_mem 0x21fd5), so
      // sbrk_base lies within the first page of the heap mapping.
      uint64_t v = rd(buf.data(), off);
      if (v < sbrk_base || v >= sbrk_base + kPage) continue;
      uint64_t field = reg.start + off;
      if (field < reg.start + l.mp_sbrk_base) continue;
      uint64_t mp = field - l.mp_sbrk_base;
      std::vector<uint8_t> m(l.mp_size);
      if (mem.read(mp, m.data(), m.size()) != m.size()) continue;
      uint64_t mmap_threshold = rd(m.data(), l.mp_mmap_threshold);
      uint64_t mmapped_mem = rd(m.data(), l.mp_mmapped_mem);
      uint32_t n_mmaps, n_mmaps_max;
      std::memcpy(&n_mmaps, m.data() + l.mp_n_mmaps, 4);
      std::memcpy(&n_mmaps_max, m.data() + l.mp_n_mmaps_max, 4);
      // glibc bounds: the mmap threshold is at most HEAP_MAX_SIZE / 2; mmapped_mem is a page multiple.
      bool sane = mmap_threshold <= l.heap_max / 2 && (mmapped_mem & (kPage - 1)) == 0 && n_mmaps <= n_mmaps_max &&
                  n_mmaps_max <= (1u << 24);
      if (l.has_tcache) {
        uint64_t bins = rd(m.data(), l.mp_tcache_bins), count = rd(m.data(), l.mp_tcache_count);
        sane = sane && bins <= l.tcache_bins && count <= 65535;
      }
      if (!sane) continue;
      uint64_t dist = mp > near ? mp - near : near - mp;
      if (dist < best_dist) {
        best = mp;
        best_dist = dist;
      }
    }
  }
  return best;
}

std::optional<int64_t> find_tls_offset(memory::MemorySource& mem, const std::vector<target::Thread>& threads,
                                       const std::set<uint64_t>& values, int64_t exclude) {
  if (values.empty()) return std::nullopt;
  std::map<int64_t, unsigned> votes;
  unsigned voters = 0;
  for (const auto& th : threads) {
    if (th.fs_base < static_cast<uint64_t>(kTlsWindow)) continue;
    std::vector<uint8_t> buf(kTlsWindow);
    uint64_t start = th.fs_base - kTlsWindow;
    size_t got = mem.read(start, buf.data(), buf.size());
    if (got != buf.size()) continue;
    ++voters;
    for (uint64_t off = 0; off + 8 <= got; off += 8) {
      uint64_t v = rd(buf.data(), off);
      if (values.count(v)) {
        int64_t d = static_cast<int64_t>(start + off) - static_cast<int64_t>(th.fs_base);
        if (d != exclude) ++votes[d];
      }
    }
  }
  std::optional<int64_t> best;
  unsigned best_votes = 0;
  bool tie = false;
  for (const auto& [d, n] : votes) {
    if (n > best_votes) {
      best = d;
      best_votes = n;
      tie = false;
    } else if (n == best_votes) {
      tie = true;
    }
  }
  if (!best || tie || best_votes * 2 <= voters / 2) return std::nullopt;
  return best;
}

}  // namespace heapwalk::ptmalloc
