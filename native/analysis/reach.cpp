#include "analysis/reach.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <queue>
#include <thread>

#include "ptmalloc/heap_model.h"
#include "util/errors.h"
#include "util/parallel.h"
#include "util/progress.h"

namespace heapwalk::analysis {

namespace {

using ptmalloc::ChunkState;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPiece = 1 << 20;      // largest span requested from a Window at once
constexpr uint64_t kRedZone = 128;        // x86-64 SysV: leaf functions use 128 bytes below rsp
constexpr uint64_t kTlsBelow = 64 << 10;  // static TLS blocks below fs_base (main thread: ld.so's)
constexpr uint64_t kTcbAbove = 4 << 10;   // struct pthread above fs_base (2.3 KiB on 2.36)

// Entry flags, in the low bits of a 16-aligned chunk start.
constexpr uint64_t kNode = 1;     // in use or mmapped: a node of the graph
constexpr uint64_t kMmapped = 2;  // with kNode: mmapped chunk; without: a gap (end of a covered run)
constexpr uint64_t kReached = 4;
constexpr uint64_t kRef = 8;
constexpr uint64_t kFlags = 15;
constexpr uint64_t kGap = kMmapped;
constexpr uint32_t kNone = ~uint32_t{0};
// lookup()'s table: a run of at least kDense entries gets a segment of its own; smaller runs
// share one. Each segment has about one bucket (4 bytes) per kPerBucket entries.
constexpr size_t kDense = 256;
constexpr size_t kPerBucket = 8;
constexpr size_t kAhead = 8;  // drain(): prefetch the chunk this many pops ahead

inline bool is_gap(uint64_t e) { return (e & (kNode | kMmapped)) == kGap; }

inline uint64_t rd64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

/// std::allocator whose value-initialisation leaves the memory as it is: resize() of a large
/// vector then costs no zeroing pass (the copy that fills it touches each page once).
template <class T>
struct Uninitialized : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = Uninitialized<U>;
  };
  Uninitialized() = default;
  template <class U>
  Uninitialized(const Uninitialized<U>&) {}
  T* allocate(size_t n) {
    T* p = std::allocator<T>::allocate(n);
    // Buffers glibc always maps on their own (above its largest mmap threshold, 32 MiB): transparent
    // huge pages where the system offers them on request, as a 4 KiB page fault each costs more
    // than filling the page.
    constexpr uintptr_t kHuge = uintptr_t{2} << 20;
    if (n * sizeof(T) >= (size_t{32} << 20)) {
      uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
      uintptr_t e = (reinterpret_cast<uintptr_t>(p + n)) & ~(kHuge - 1);
      if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
    }
    return p;
  }
  template <class U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};

/// Reads target memory for scans: direct spans when the source has them (cores), else bounded
/// buffered reads of at least `block` bytes (live processes).
class Window {
 public:
  Window(memory::MemorySource& m, size_t block) : m_(m), block_(block) {}

  /// Starts loading the cache line at `a` when it lies in the current direct span.
  void prefetch(uint64_t a) const {
    if (a >= ds_ && a < de_) __builtin_prefetch(dptr_ + (a - ds_));
  }

  /// [a, b) when it lies in the current direct span, else nullptr.
  const uint8_t* cached(uint64_t a, uint64_t b) const { return a >= ds_ && b <= de_ ? dptr_ + (a - ds_) : nullptr; }

  /// [a, a + len) or nullptr when a byte of it is unreadable. len <= kPiece.
  const uint8_t* get(uint64_t a, uint64_t len) {
    if (dptr_ && a >= ds_ && a + len <= de_) return dptr_ + (a - ds_);
    if (blen_ && a >= bs_ && a + len <= bs_ + blen_) return buf_.data() + (a - bs_);
    uint64_t s = 0, e = 0;
    if (const uint8_t* p = m_.direct_span(a, s, e)) {
      dptr_ = p;
      ds_ = s;
      de_ = e;
      if (a + len <= e) return p + (a - s);
    }
    uint64_t want = std::max<uint64_t>(len, block_);
    if (buf_.size() < want) buf_.resize(want);
    size_t got = m_.read(a, buf_.data(), want);
    bs_ = a;
    blen_ = got;
    return got >= len ? buf_.data() : nullptr;
  }

 private:
  memory::MemorySource& m_;
  size_t block_;
  const uint8_t* dptr_ = nullptr;
  uint64_t ds_ = 0, de_ = 0;
  std::vector<uint8_t> buf_;
  uint64_t bs_ = 0, blen_ = 0;
};

struct RootRange {
  uint64_t start, end;
  size_t kind;  // index into ReachResult::roots
};

class Pass {
 public:
  Pass(alloc::Model& m, target::Target& t, const ReachOptions& o, ReachResult& r)
      : m_(m),
        headers_(m.kind() == alloc::Kind::Ptmalloc),
        hdr_(headers_ ? 16 : 0),
        t_(t),
        opt_(o),
        res_(r),
        seq_(t.memory(), 4 << 20),
        rnd_(t.memory(), 0) {}

  void run() {
    if (!headers_) find_allocator_module();
    build_index();
    if (e_.size() < 2) {
      collect();
      return;
    }
    build_lookup();
    lo_ = (e_.front() & ~kFlags) + hdr_;
    span_ = (e_.back() & ~kFlags) - lo_;
    work_.reserve(e_.size());  // each node is pushed at most once
    scan_roots();
    drain();
    scan_unreached();
    collect();
  }

 private:
  /// The allocator's library ("libjemalloc.so.2", "libtcmalloc.so.4"; not an executable it is
  /// linked into): its data is metadata, and objects whose first word points into it (C++
  /// objects it made for itself, such as tcmalloc's MallocExtension) are not the program's.
  void find_allocator_module() {
    for (const auto& d : alloc::detect(t_)) {
      if (d.kind != m_.kind() || d.module.empty()) continue;
      const std::string b = d.module.substr(d.module.rfind('/') + 1);
      if (b.rfind("libjemalloc", 0) != 0 && b.rfind("libtcmalloc", 0) != 0) continue;
      for (const auto& mod : t_.modules())
        if (mod.path == d.module) {
          amod_lo_ = mod.base;
          amod_hi_ = mod.end;
        }
      return;
    }
  }

  // ---- the index ---------------------------------------------------------------------------
  /// A segment of lookup()'s table (see build_lookup()).
  struct Segment {
    uint64_t lo;       // start of its first entry
    size_t table;      // its first bucket in tbl_ (buckets + 1 of them)
    uint64_t buckets;  // of 2^shift bytes from lo
    uint32_t last;     // its last entry
    unsigned shift;
  };

  /// One part of the walk, in walk order: an arena's heaps, or the mmapped chunks.
  struct Part {
    std::vector<uint64_t, Uninitialized<uint64_t>> e;  // entries, gaps only between its own chunks
    std::vector<size_t> breaks;                        // indices in e where a run begins (0 excepted)
    uint64_t first = 0;                                // address of its first (aligned) chunk
    uint64_t last_end = 0;                             // end of its last chunk
    bool any = false;                                  // has a chunk
    uint64_t misaligned = 0;
    bool equal_starts = false;  // two entries in a row with the same start

    void push(uint64_t x) {
      if (!e.empty()) {
        uint64_t b = e.back();
        if (x < b || is_gap(b)) breaks.push_back(e.size());
        if (((x ^ b) & ~kFlags) == 0) equal_starts = true;
      }
      e.push_back(x);
    }
  };

  void build_index() {
    // The walk of every arena (ring order) then the mmapped chunks is the same sequence as the
    // arenas' walks one after the other, then the mmapped chunks: the parts are walked in
    // parallel where the heap's own walks are (cores, live processes), then joined as if walked
    // in one go, ordered by address and deduplicated.
    std::vector<Part> parts(m_.parts());
    for (size_t k = 0; k < parts.size(); ++k) parts[k].e.reserve(m_.part_hint(k));
    auto walk_part = [&](size_t k) {
      Part p = std::move(parts[k]);  // a local: parts[k] shares cache lines with its neighbours
      auto visit = [&p](uint64_t addr, uint64_t size, uint64_t f) {
        if ((addr & kFlags) || size == 0) {
          ++p.misaligned;
          return;
        }
        if (!p.any) {
          p.any = true;
          p.first = addr;
        } else if (p.last_end && p.last_end != addr) {
          p.push(p.last_end | kGap);
        }
        p.push(addr | f);
        p.last_end = (addr + size) & ~kFlags;
      };
      if (auto* heap_model = dynamic_cast<ptmalloc::HeapModel*>(&m_)) {
        // ptmalloc's fast path (no Allocation per chunk): nodes are the in-use and mmapped
        // chunks, header included.
        heap_model->walk_chunks(k, [&](uint64_t c, uint64_t size, ChunkState st, int) {
          uint64_t f = 0;
          if (st == ChunkState::Used) f = kNode;
          if (st == ChunkState::Mmapped) {
            f = kNode | kMmapped;
            // Their contents are scanned later (reached or not): map them now, alongside the
            // arenas' walks, as Heap did for the heaps.
            t_.memory().prefetch(c, size);
          }
          visit(c, size, f);
        });
        parts[k] = std::move(p);
        return;
      }
      m_.walk_part_batched(k, [&](const alloc::Allocation* b, size_t count) {
        for (size_t x = 0; x < count; ++x) {
          const alloc::Allocation& a = b[x];
          if (headers_) {
            // ptmalloc: chunks (header included); nodes are the in-use and mmapped chunks.
            const auto st = static_cast<ChunkState>(a.detail);
            uint64_t f = 0;
            if (st == ChunkState::Used) f = kNode;
            if (st == ChunkState::Mmapped) {
              f = kNode | kMmapped;
              // Their contents are scanned later (reached or not): map them now, alongside the
              // arenas' walks, as Heap did for the heaps.
              t_.memory().prefetch(a.chunk, a.chunk_size);
            }
            visit(a.chunk, a.chunk_size, f);
          } else {
            // Slots without headers: nodes are the in-use ones; cached, free and released slots
            // only bound them.
            visit(a.address, a.size, a.state == alloc::State::InUse ? kNode : 0);
          }
        }
        return true;
      });
      parts[k] = std::move(p);
    };
    run_parallel(parts.size(), walk_part);
    if (join(parts)) dedupe();
    if (!e_.empty() && !is_gap(e_.back())) e_.push_back(((e_.back() & ~kFlags) + 16) | kGap);
    if (e_.size() >= kNone) throw Error("too many chunks for the leak pass (" + std::to_string(e_.size()) + ")");
    // The allocator's own allocations (jemalloc's tcache stacks): not the program's, not nodes.
    for (uint64_t x : m_.internal_addresses()) {
      auto it = std::upper_bound(e_.begin(), e_.end(), x | kFlags);
      if (it == e_.begin() || it == e_.end()) continue;
      --it;
      if ((*it & kNode) && x < (*std::next(it) & ~kFlags)) *it &= ~(kNode | kMmapped);
    }
  }

  /// Equal starts (a run's end sentinel meeting the next run's first chunk): keep the chunk.
  void dedupe() {
    size_t w = 0;
    for (size_t i = 0; i < e_.size();) {
      size_t j = i;
      uint64_t keep = e_[i];
      while (j < e_.size() && (e_[j] & ~kFlags) == (e_[i] & ~kFlags)) {
        if (is_gap(keep) && !is_gap(e_[j])) keep = e_[j];
        ++j;
      }
      e_[w++] = keep;
      i = j;
    }
    e_.resize(w);
  }

  /// Parts in parallel where the target can be read from several threads (as Heap's own walks).
  template <class F>
  void run_parallel(size_t n, F&& fn) {
    parallel_for(worker_count(n, t_.parallel_reads()), n, fn);
  }

  /// Joins the parts into e_ as one walk would have produced them, with its runs (sorted
  /// stretches, each ending at a gap) in address order; a full sort if runs overlap. Returns
  /// whether two entries in a row may have the same start (dedupe() needed).
  bool join(std::vector<Part>& parts) {
    // The joined sequence as pieces; between parts, the gap the single walk would have added.
    struct Piece {
      const uint64_t* p;
      size_t n;
    };
    std::vector<Piece> pieces;
    std::vector<uint64_t> gaps;
    gaps.reserve(parts.size() + 1);
    std::vector<std::pair<size_t, size_t>> runs;  // [begin, end) in the joined sequence
    uint64_t last_end = 0, misaligned = 0, prev = 0;
    size_t total = 0, run_begin = 0;
    bool equal = false;
    auto append = [&](const uint64_t* p, size_t n, const size_t* br, size_t nbr) {
      if (!n) return;
      if (total && ((p[0] ^ prev) & ~kFlags) == 0) equal = true;
      if (total && (p[0] < prev || is_gap(prev))) {
        runs.emplace_back(run_begin, total);
        run_begin = total;
      }
      for (size_t k = 0; k < nbr; ++k) {
        runs.emplace_back(run_begin, total + br[k]);
        run_begin = total + br[k];
      }
      pieces.push_back({p, n});
      total += n;
      prev = p[n - 1];
    };
    for (auto& part : parts) {
      misaligned += part.misaligned;
      equal |= part.equal_starts;
      if (!part.any) continue;
      if (last_end && last_end != part.first) {
        gaps.push_back(last_end | kGap);
        append(&gaps.back(), 1, nullptr, 0);
      }
      append(part.e.data(), part.e.size(), part.breaks.data(), part.breaks.size());
      last_end = part.last_end;
    }
    if (last_end) {
      gaps.push_back(last_end | kGap);
      append(&gaps.back(), 1, nullptr, 0);
    }
    if (total) runs.emplace_back(run_begin, total);
    if (misaligned && headers_)
      res_.diagnostics.add("misaligned", std::nullopt, std::nullopt,
                           std::to_string(misaligned) + " chunks not 16-aligned were left out of the leak pass");
    else if (misaligned)  // 8-byte slots at odd 8-byte addresses (jemalloc, tcmalloc)
      res_.diagnostics.note(std::to_string(misaligned) +
                            " 8-byte slots not 16-aligned are not nodes of the leak pass (nor leak candidates)");

    // Element i of the joined sequence, and copies of its ranges.
    std::vector<size_t> offsets;  // of each piece
    for (size_t k = 0, o = 0; k < pieces.size(); o += pieces[k++].n) offsets.push_back(o);
    auto at = [&](size_t i) {
      size_t k = static_cast<size_t>(std::upper_bound(offsets.begin(), offsets.end(), i) - offsets.begin()) - 1;
      return pieces[k].p[i - offsets[k]];
    };
    auto copy = [&](size_t b, size_t e, uint64_t* out) {
      size_t k = static_cast<size_t>(std::upper_bound(offsets.begin(), offsets.end(), b) - offsets.begin()) - 1;
      while (b < e) {
        size_t off = b - offsets[k], n = std::min(e - b, pieces[k].n - off);
        std::memcpy(out, pieces[k].p + off, n * sizeof(uint64_t));
        out += n;
        b += n;
        ++k;
      }
    };
    // Runs in ring order: order them by address (std::sort degrades on such input); full sort
    // if runs overlap.
    std::sort(runs.begin(), runs.end(), [&](const auto& x, const auto& y) { return at(x.first) < at(y.first); });
    bool overlap = false;
    for (size_t k = 1; k < runs.size() && !overlap; ++k) overlap = at(runs[k].first) < at(runs[k - 1].second - 1);
    e_.reserve(total + 1);  // + the end sentinel build_index() may add
    e_.resize(total);
    if (overlap) {
      copy(0, total, e_.data());
      for (auto& part : parts) decltype(part.e)().swap(part.e);
      std::sort(e_.begin(), e_.end());
      return true;
    }
    // Copy the runs in address order, in pieces of at most kCopy entries over the threads.
    constexpr size_t kCopy = 1 << 18;
    std::vector<std::pair<size_t, size_t>> jobs;  // (source begin, destination), length up to kCopy
    std::vector<size_t> ends;
    size_t o = 0;
    for (size_t k = 0; k < runs.size(); ++k) {
      const auto& r = runs[k];
      if (k && ((at(r.first) ^ at(runs[k - 1].second - 1)) & ~kFlags) == 0) equal = true;
      for (size_t b = r.first; b < r.second; b += kCopy) {
        jobs.emplace_back(b, o + (b - r.first));
        ends.push_back(std::min(r.second, b + kCopy));
      }
      o += r.second - r.first;
    }
    run_parallel(jobs.size(), [&](size_t j) { copy(jobs[j].first, ends[j], e_.data() + jobs[j].second); });
    return equal;
  }

  uint64_t start(size_t i) const { return e_[i] & ~kFlags; }

  /// lookup()'s first levels. The index is cut into segments (a long run of chunk starts, i.e.
  /// a heap or adjacent heaps, or a group of short runs such as mmapped chunks); a segment
  /// splits its address range into 2^shift-byte buckets, and its table gives for each bucket
  /// base the last entry starting at or below it. A value then needs a search over the few
  /// segments, one table read and a search over the entries of its bucket.
  void build_lookup() {
    std::vector<std::pair<size_t, size_t>> segs;  // [begin, end) entries
    size_t group = 0;                             // first entry of the pending group of short runs
    for (size_t b = 0, i = 0; i < e_.size(); ++i) {
      if (!is_gap(e_[i]) && i + 1 < e_.size()) continue;
      // [b, i] is a run.
      if (i + 1 - b >= kDense) {
        if (group < b) segs.emplace_back(group, b);
        segs.emplace_back(b, i + 1);
        group = i + 1;
      } else if (i + 1 - group >= kDense) {
        segs.emplace_back(group, i + 1);
        group = i + 1;
      }
      b = i + 1;
    }
    if (group < e_.size()) segs.emplace_back(group, e_.size());
    size_t buckets = 0;
    for (const auto& [b, e] : segs) {
      const uint64_t lo = start(b), span = start(e - 1) - lo;
      const uint64_t want = std::max<uint64_t>(1, (e - b) / kPerBucket);
      unsigned shift = 4;
      while (shift < 63 && (span >> shift) + 1 > want) ++shift;
      const uint64_t nb = (span >> shift) + 1;
      seg_lo_.push_back(lo);
      segs_.push_back(Segment{lo, buckets, nb, static_cast<uint32_t>(e - 1), shift});
      buckets += nb + 1;
    }
    tbl_.resize(buckets);
    run_parallel(segs.size(), [&](size_t k) { fill_segment(segs_[k], segs[k].first, segs[k].second); });
  }

  /// The table of a segment of entries [b, e): for bucket k, the last entry whose start is at or
  /// below the bucket's base (k << shift above lo).
  void fill_segment(const Segment& sg, size_t b, size_t e) {
    uint32_t* t = tbl_.data() + sg.table;
    const uint64_t mask = (uint64_t{1} << sg.shift) - 1;
    uint64_t k = 0;
    for (size_t i = b + 1; i < e; ++i) {
      // The first bucket whose base is at or above this start: the buckets before it end at i - 1.
      uint64_t x = start(i) - sg.lo;
      uint64_t first = (x >> sg.shift) + ((x & mask) != 0);
      for (; k < first; ++k) t[k] = static_cast<uint32_t>(i - 1);
    }
    for (; k <= sg.buckets; ++k) t[k] = static_cast<uint32_t>(e - 1);
  }

  /// The node whose [mem, end) holds v, or kNone. Most scanned words are not heap addresses:
  /// only the range check is inline.
  [[gnu::always_inline]] uint32_t lookup(uint64_t v) const { return v - lo_ >= span_ ? kNone : find(v); }

  /// lookup() of a value within [lo_, lo_ + span_).
  uint32_t find(uint64_t v) const {
    const uint64_t key = v | kFlags;
    const uint64_t* base;
    // Pointers often come in address order (an array of pointers to objects allocated one
    // after the other): try the last answer and the two entries after it first.
    size_t q = finger_;
    if (q + 3 < e_.size() && e_[q] <= key && key < e_[q + 3]) {
      base = e_.data() + q + (e_[q + 1] <= key) + (e_[q + 2] <= key);
    } else {
      base = search(v, key);
    }
    finger_ = static_cast<size_t>(base - e_.data());
    return resolve(v, base);
  }

  /// The last entry whose start is at or below v (key: v | kFlags), v within [lo_, lo_ + span_).
  const uint64_t* search(uint64_t v, uint64_t key) const {
    const uint64_t* sl = seg_lo_.data();
    size_t n = seg_lo_.size();
    while (n > 1) {
      size_t half = n >> 1;
      sl = sl[half] <= v ? sl + half : sl;
      n -= half;
    }
    const Segment& sg = segs_[static_cast<size_t>(sl - seg_lo_.data())];
    const uint64_t k = (v - sg.lo) >> sg.shift;
    size_t first = sg.last, last = sg.last;
    if (k < sg.buckets) {
      first = tbl_[sg.table + k];
      last = tbl_[sg.table + k + 1];
    }
    // The last entry at or below v lies in [first, last].
    const uint64_t* base = e_.data() + first;
    n = last - first + 1;
    while (n > 1) {
      size_t half = n >> 1;
      base = base[half] <= key ? base + half : base;
      n -= half;
    }
    return base;
  }

  /// lookup()'s answer for v given the entry at or below it.
  uint32_t resolve(uint64_t v, const uint64_t* base) const {
    uint64_t e = *base;
    uint64_t s = e & ~kFlags;
    if (!headers_) return (e & kNode) ? static_cast<uint32_t>(base - e_.data()) : kNone;  // [s, next)
    if (v < s + 8) {
      // The first word of a chunk (prev_size) is the last usable word of the in-use chunk
      // before it, e.g. a pointer to the last byte of a 40-byte block in a 0x30 chunk. Not
      // the chunk's address itself: malloc's own bins, fastbins, top and last_remainder hold
      // chunk addresses (main_arena is in libc's data, a root), which would make the chunk
      // before every free chunk reachable.
      if (v == s || base == e_.data() || is_gap(e)) return kNone;
      uint64_t p = base[-1];
      return (p & (kNode | kMmapped)) == kNode ? static_cast<uint32_t>(base - e_.data() - 1) : kNone;
    }
    if (!(e & kNode) || v < s + 16) return kNone;
    return static_cast<uint32_t>(base - e_.data());
  }

  // ---- scanning ----------------------------------------------------------------------------
  // The start of the next readable region at or after `a` (capped at `b`); 0 when the target's
  // mappings are unknown (callback targets).
  uint64_t next_readable(uint64_t a, uint64_t b) const {
    const auto& rs = t_.memory().regions();
    if (rs.empty()) return 0;
    auto it =
        std::upper_bound(rs.begin(), rs.end(), a, [](uint64_t x, const memory::Region& r) { return x < r.start; });
    if (it != rs.begin()) {
      auto prev = std::prev(it);
      if (a < prev->end && prev->read && prev->saved) return std::min(a, b);
    }
    for (; it != rs.end() && it->start < b; ++it)
      if (it->read && it->saved) return std::min(std::max(it->start, a), b);
    return b;
  }

  template <class F>
  uint64_t scan(Window& w, uint64_t a, uint64_t b, F&& f) {
    a = (a + 7) & ~uint64_t{7};
    b &= ~uint64_t{7};
    uint64_t unreadable = 0;
    while (a < b) {
      uint64_t n = std::min(b - a, kPiece);
      const uint8_t* p = w.get(a, n);
      if (!p) {
        n = std::min(b - a, kPage - (a & (kPage - 1)));
        p = w.get(a, n);
        if (!p) {
          // Skip the whole hole at once when the mappings are known (a smashed size can make a
          // "chunk" span terabytes); through a callback, give up after 1024 unreadable pages.
          uint64_t next = next_readable(a + n, b);
          if (next == 0) next = ++holes_ > 1024 ? b : a + n;
          if (next < a + n) next = a + n;  // always move on by at least this page
          unreadable += next - a;
          a = next;
          if ((++steps_ & 0x3ff) == 0) Progress::check();
          continue;
        }
        holes_ = 0;
      }
      for (uint64_t i = 0; i < n; i += 8) {
        uint64_t v;
        std::memcpy(&v, p + i, 8);
        f(v, a + i);
      }
      res_.words_scanned += n / 8;
      a += n;
    }
    return unreadable;
  }

  /// Allocators without headers: a buffer's one-past-the-end pointer is the start of the slot
  /// after it. glibc's FILE keeps one to its buffer (a slot of its own): _IO_buf_end, right
  /// after _IO_buf_base, 0x40 bytes into a FILE whose _flags carry _IO_MAGIC (libio.h). Such a
  /// word (at `at`, after the word `prev`) is not an edge to the next slot. Only values at a
  /// slot's start, right after a pointer to the start of the in-use slot before, are checked.
  bool end_pointer(uint64_t v, uint32_t j, uint64_t at, uint64_t prev) const {
    if (j == 0 || start(j) != v || prev != start(j - 1) || (e_[j - 1] & (kNode | kMmapped)) != kNode || at < 0x40)
      return false;
    uint64_t f[9];
    if (t_.memory().read(at - 0x40, f, sizeof f) != sizeof f) return false;
    return (f[0] & 0xffff0000u) == 0xfbad0000u && f[7] == start(j - 1) && f[8] == v;
  }

  void reach(uint32_t j) {
    uint64_t& e = e_[j];
    e |= kRef;
    if (!(e & kReached)) {
      e |= kReached;
      work_.push_back(j);
    }
  }

  /// [mem, end) of node i, plus the next chunk's prev_size word, which belongs to an in-use
  /// chunk's user data when the next chunk follows directly.
  std::pair<uint64_t, uint64_t> body(uint32_t i) const {
    uint64_t s = start(i), end = start(i + 1);
    if (!headers_) return {s, end};
    if (!(e_[i] & kMmapped) && !is_gap(e_[i + 1])) end += 8;
    return {s + 16, end};
  }

  void drain() {
    uint64_t steps = 0;
    while (!work_.empty()) {
      if ((++steps & 0xffff) == 0) Progress::check();
      // The chunks below the top of the stack are scanned next unless this one pushes more:
      // start loading their entries and bodies now.
      size_t n = work_.size();
      if (n > 2 * kAhead) {
        __builtin_prefetch(&e_[work_[n - 1 - 2 * kAhead]]);
        uint64_t c = start(work_[n - 1 - kAhead]);
        rnd_.prefetch(c + hdr_);
        rnd_.prefetch(c + hdr_ + 64);
      }
      uint32_t i = work_.back();
      work_.pop_back();
      auto [a, b] = body(i);
      if (const uint8_t* p = a <= b ? rnd_.cached(a, b) : nullptr) {
        // The common case, without scan()'s pieces: the whole body in the current direct span.
        const uint64_t lo = lo_, span = span_;
        for (uint64_t k = 0; k < b - a; k += 8) {
          uint64_t v;
          std::memcpy(&v, p + k, 8);
          if (v - lo >= span) continue;
          uint32_t j = find(v);
          if (j != kNone && j != i && (headers_ || !end_pointer(v, j, a + k, k ? rd64(p + k - 8) : 0))) reach(j);
        }
        res_.words_scanned += (b - a) / 8;
        continue;
      }
      uint64_t last = 0;
      uint64_t bad = scan(rnd_, a, b, [&](uint64_t v, uint64_t at) {
        uint32_t j = lookup(v);
        if (j != kNone && j != i && (headers_ || !end_pointer(v, j, at, last))) reach(j);
        last = v;
      });
      if (bad) unreadable_chunk(start(i), bad);
    }
  }

  void scan_unreached() {
    for (uint32_t i = 0; i + 1 < e_.size(); ++i) {
      if ((i & 0xffff) == 0) Progress::check();
      if ((e_[i] & (kNode | kReached)) != kNode) continue;
      auto [a, b] = body(i);
      uint64_t last = 0;
      uint64_t bad = scan(seq_, a, b, [&](uint64_t v, uint64_t at) {
        uint32_t j = lookup(v);
        if (j != kNone && j != i && (headers_ || !end_pointer(v, j, at, last))) e_[j] |= kRef;
        last = v;
      });
      if (bad) unreadable_chunk(start(i), bad);
    }
  }

  void unreadable_chunk(uint64_t c, uint64_t bytes) {
    res_.diagnostics.add("unreadable", c, std::nullopt,
                         std::to_string(bytes) + " bytes of this in-use chunk unreadable; not scanned for pointers");
  }

  // ---- roots -------------------------------------------------------------------------------
  size_t kind(const char* k) {
    for (size_t i = 0; i < res_.roots.size(); ++i)
      if (res_.roots[i].kind == k) return i;
    res_.roots.push_back(RootStat{k});
    return res_.roots.size() - 1;
  }

  void scan_roots() {
    const auto& regs = t_.memory().regions();
    size_t k_regs = kind("registers"), k_stack = kind("stack"), k_tls = kind("tls"), k_data = kind("module_data");
    size_t k_anon = opt_.anon_roots ? kind("anonymous") : 0;
    auto region_of = [&](uint64_t a) -> const memory::Region* {
      auto it = std::upper_bound(regs.begin(), regs.end(), a,
                                 [](uint64_t x, const memory::Region& r) { return x < r.start; });
      if (it == regs.begin()) return nullptr;
      --it;
      return it->contains(a) ? &*it : nullptr;
    };
    std::vector<RootRange> ranges;
    std::vector<const memory::Region*> stacks;  // below rsp is dead: never an anonymous root
    // Threads: registers, stack, TLS.
    for (const auto& th : t_.threads()) {
      if (th.has_regs) {
        auto& rs = res_.roots[k_regs];
        ++rs.ranges;
        rs.bytes += th.regs.size() * 8;
        for (uint64_t v : th.regs) {
          uint32_t j = lookup(v);
          if (j != kNone) reach(j);
        }
      } else {
        res_.diagnostics.note("thread " + std::to_string(th.lwp) + ": registers unknown; they are not roots");
      }
      const memory::Region* my_stack = nullptr;
      if (th.rsp) {
        const auto* r = region_of(th.rsp);
        if (r) {
          ranges.push_back({std::max(r->start, th.rsp >= kRedZone ? th.rsp - kRedZone : 0), r->end, k_stack});
          stacks.push_back(r);
          my_stack = r;
        } else {
          res_.diagnostics.add(
              "unreadable", th.rsp, std::nullopt,
              "thread " + std::to_string(th.lwp) + ": stack pointer outside every mapping; stack not scanned");
        }
      } else {
        res_.diagnostics.note("thread " + std::to_string(th.lwp) + ": stack pointer unknown; stack not scanned");
      }
      if (th.fs_base) {
        // A pthread's static TLS and TCB sit at the top of its stack mapping, which the stack
        // range already covers; below rsp is dead stack, never a root.
        const auto* r = region_of(th.fs_base);
        uint64_t lo = th.fs_base >= kTlsBelow ? th.fs_base - kTlsBelow : 0;
        if (r && r == my_stack) lo = std::max(lo, th.rsp - std::min(th.rsp, kRedZone));
        if (r) ranges.push_back({std::max(r->start, lo), std::min(r->end, th.fs_base + kTcbAbove), k_tls});
      }
    }
    // Writable module data, the anonymous region right after a module, other anonymous memory.
    bool jvm = false;
    for (size_t i = 0; i < regs.size(); ++i) {
      const auto& r = regs[i];
      if (r.path.find("/libjvm.so") != std::string::npos) jvm = true;
      if (!r.read || !r.write) continue;
      bool file = !r.path.empty() && r.path[0] == '/';
      bool after_module = r.path.empty() && i > 0 && regs[i - 1].end == r.start && !regs[i - 1].path.empty() &&
                          regs[i - 1].path[0] == '/';
      if (file || after_module)
        ranges.push_back({r.start, r.end, k_data});
      else if (opt_.anon_roots && r.path != "[vvar]" && r.path != "[vsyscall]" &&
               std::find(stacks.begin(), stacks.end(), &r) == stacks.end())
        ranges.push_back({r.start, r.end, k_anon});
    }
    if (jvm && !opt_.anon_roots)
      res_.diagnostics.note(
          "a JVM: the Java heap is not a root unless anonymous memory is (anon_roots); native addresses "
          "Java keeps in long fields (DirectByteBuffer.address, Inflater's zsRef) are found only as plain words");
    else if (jvm)
      res_.diagnostics.note(
          "a JVM: anonymous memory (the Java heap included) is a root; native addresses kept in Java long "
          "fields (DirectByteBuffer.address, Inflater's zsRef) count only because they are stored as plain words");

    // Minus the heaps and mmapped chunks (runs of the index, heap_info headers included).
    std::vector<std::pair<uint64_t, uint64_t>> ex;
    uint64_t run = start(0);
    for (size_t i = 0; i < e_.size(); ++i) {
      if (!is_gap(e_[i])) continue;
      ex.emplace_back(run, start(i));
      if (i + 1 < e_.size()) run = start(i + 1);
    }
    for (const auto& r : m_.owned_ranges()) ex.push_back(r);
    if (!headers_ && amod_hi_) {
      // The allocator library's own writable data (its globals: tcmalloc's central and
      // transfer caches, whose stale slots name objects handed out since) is its metadata.
      ex.emplace_back(amod_lo_, amod_hi_);
      const memory::Region* r = region_of(amod_hi_);
      if (r && r->start == amod_hi_ && r->path.empty()) ex.emplace_back(r->start, r->end);
    }
    if (!headers_) {
      // The allocator's metadata (jemalloc's base blocks: arena_t, edata_t with each extent's
      // address, the radix tree's leaves) is anonymous memory, and a mapping right after a
      // module's counts as that module's data: the anonymous mappings holding a pool's own
      // structure are never roots, or every extent an edata_t names would be reachable.
      for (const auto& pool : m_.pools()) {
        const memory::Region* r = pool.address ? region_of(pool.address) : nullptr;
        if (r && (r->path.empty() || r->path[0] != '/')) ex.emplace_back(r->start, r->end);
      }
    }
    std::sort(ex.begin(), ex.end());
    std::vector<RootRange> pieces;
    for (const auto& rr : ranges) {
      uint64_t s = rr.start;
      auto it = std::upper_bound(ex.begin(), ex.end(), std::make_pair(s, ~uint64_t{0}));
      if (it != ex.begin()) --it;
      for (; it != ex.end() && it->first < rr.end && s < rr.end; ++it) {
        if (it->second <= s) continue;
        if (it->first > s) pieces.push_back({s, it->first, rr.kind});
        s = std::max(s, it->second);
      }
      if (s < rr.end) pieces.push_back({s, rr.end, rr.kind});
    }
    // Each byte once: sort, clip overlaps (the first kind claiming a byte keeps it).
    std::sort(pieces.begin(), pieces.end(), [](const RootRange& a, const RootRange& b) {
      return a.start != b.start ? a.start < b.start : a.kind < b.kind;
    });
    uint64_t covered = 0;
    for (auto p : pieces) {
      p.start = std::max(p.start, covered);
      if (p.start >= p.end) continue;
      covered = p.end;
      auto& rs = res_.roots[p.kind];
      ++rs.ranges;
      rs.bytes += p.end - p.start;
      uint64_t last = 0;
      rs.unreadable += scan(seq_, p.start, p.end, [&](uint64_t v, uint64_t at) {
        uint32_t j = lookup(v);
        if (j != kNone && (headers_ || !end_pointer(v, j, at, last))) reach(j);
        last = v;
      });
      drain();
    }
    for (const auto& rs : res_.roots)
      if (rs.unreadable)
        res_.diagnostics.add("unreadable", std::nullopt, std::nullopt,
                             std::to_string(rs.unreadable) + " bytes of " + rs.kind +
                                 " roots unreadable (not saved in the core?); leaks may be overstated");
  }

  // ---- results -----------------------------------------------------------------------------
  void collect() {
    std::map<uint64_t, ptmalloc::Count> leaked_sizes, unref_sizes;
    std::vector<LeakedChunk> listed;
    auto bigger = [](const LeakedChunk& a, const LeakedChunk& b) {
      return a.size != b.size ? a.size > b.size : a.address < b.address;
    };
    std::priority_queue<LeakedChunk, std::vector<LeakedChunk>, decltype(bigger)> top(bigger);
    for (size_t i = 0; i + 1 < e_.size(); ++i) {
      uint64_t e = e_[i];
      if (!(e & kNode)) continue;
      uint64_t c = start(i), size = start(i + 1) - c;
      uint64_t w0 = 0;
      if (!(e & kReached) && amod_hi_ && t_.memory().read(c, &w0, 8) == 8 && w0 >= amod_lo_ && w0 < amod_hi_)
        continue;  // the allocator's own object (find_allocator_module)
      int pool = -1;
      bool need_arena = opt_.pool >= 0 || !(e & kReached);
      if (need_arena && !(e & kMmapped)) pool = m_.pool_of(c);
      if (opt_.pool >= 0 && pool != opt_.pool) continue;
      const uint64_t arena = pool >= 0 && static_cast<size_t>(pool) < m_.pools().size() ? m_.pools()[pool].address : 0;
      res_.nodes.add(size);
      if (e & kReached) {
        res_.reachable.add(size);
        continue;
      }
      res_.leaked.add(size);
      if (opt_.all_leaked) opt_.all_leaked->push_back(c);
      leaked_sizes[size].add(size);
      res_.leaked_by_arena[arena].add(size);
      bool unref = !(e & kRef);
      if (unref) {
        res_.unreferenced.add(size);
        unref_sizes[size].add(size);
      }
      LeakedChunk lc{c, size, arena, unref, (e & kMmapped) != 0};
      if (opt_.largest) {
        top.push(lc);
        if (opt_.limit && top.size() > opt_.limit) top.pop();
      } else if (!opt_.limit || listed.size() < opt_.limit) {
        listed.push_back(lc);
      }
    }
    if (opt_.largest) {
      while (!top.empty()) {
        listed.push_back(top.top());
        top.pop();
      }
      std::reverse(listed.begin(), listed.end());
    }
    res_.chunks = std::move(listed);
    res_.truncated = res_.chunks.size() < res_.leaked.count;
    auto hist = [](const std::map<uint64_t, ptmalloc::Count>& m) {
      std::vector<SizeCount> v;
      for (const auto& [s, c] : m) v.push_back({s, c});
      std::stable_sort(v.begin(), v.end(), [](const SizeCount& a, const SizeCount& b) {
        return a.count.bytes != b.count.bytes ? a.count.bytes > b.count.bytes : a.size < b.size;
      });
      return v;
    };
    res_.leaked_sizes = hist(leaked_sizes);
    res_.unreferenced_sizes = hist(unref_sizes);
  }

  alloc::Model& m_;
  const bool headers_;                  // ptmalloc: chunks with a 16-byte header (else slots [address, + size))
  const uint64_t hdr_;                  // 16 or 0: user pointer - block start
  uint64_t amod_lo_ = 0, amod_hi_ = 0;  // the allocator library's mappings (find_allocator_module)
  target::Target& t_;
  uint64_t holes_ = 0, steps_ = 0;
  const ReachOptions& opt_;
  ReachResult& res_;
  Window seq_, rnd_;
  std::vector<uint64_t, Uninitialized<uint64_t>> e_;  // chunk starts | flags, sorted; gap entries end runs
  std::vector<uint64_t> seg_lo_;                      // Segment::lo of each segment, for the search
  std::vector<Segment> segs_;
  std::vector<uint32_t, Uninitialized<uint32_t>> tbl_;
  std::vector<uint32_t, Uninitialized<uint32_t>> work_;
  uint64_t lo_ = 0, span_ = 0;
  mutable size_t finger_ = 0;  // find()'s last answer
};

}  // namespace

ReachResult find_leaks(alloc::Model& model, target::Target& t, const ReachOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  ReachResult r;
  Pass(model, t, opt, r).run();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

ReachResult find_leaks(ptmalloc::Heap& heap, target::Target& t, const ReachOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  ptmalloc::HeapModel model(heap);
  ReachOptions o = opt;
  if (opt.arena) o.pool = model.pool_index(opt.arena);
  ReachResult r;
  Pass(model, t, o, r).run();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace heapwalk::analysis
