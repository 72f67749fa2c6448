#include "analysis/reach.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <queue>

#include "util/errors.h"
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
constexpr size_t kStride = 32;  // entries per block of the lookup's second level

inline bool is_gap(uint64_t e) { return (e & (kNode | kMmapped)) == kGap; }

/// Reads target memory for scans: direct spans when the source has them (cores), else bounded
/// buffered reads of at least `block` bytes (live processes).
class Window {
 public:
  Window(memory::MemorySource& m, size_t block) : m_(m), block_(block) {}

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
  Pass(ptmalloc::Heap& h, target::Target& t, const ReachOptions& o, ReachResult& r)
      : h_(h), t_(t), opt_(o), res_(r), seq_(t.memory(), 4 << 20), rnd_(t.memory(), 0) {}

  void run() {
    build_index();
    if (e_.size() < 2) {
      collect();
      return;
    }
    // Samples carry every flag bit, so comparing one with `v | kFlags` depends on the start only.
    for (size_t i = 0; i < e_.size(); i += kStride) sample_.push_back(e_[i] | kFlags);
    lo_ = (e_.front() & ~kFlags) + 16;
    span_ = (e_.back() & ~kFlags) - lo_;
    scan_roots();
    drain();
    scan_unreached();
    collect();
  }

 private:
  // ---- the index ---------------------------------------------------------------------------
  void build_index() {
    uint64_t last_end = 0;
    uint64_t misaligned = 0;
    h_.walk(nullptr, [&](uint64_t addr, uint64_t size, ChunkState st, const ptmalloc::Arena*, size_t) {
      if ((addr & kFlags) || size == 0) {
        ++misaligned;
        return true;
      }
      if (last_end && last_end != addr) e_.push_back(last_end | kGap);
      uint64_t f = 0;
      if (st == ChunkState::Used) f = kNode;
      if (st == ChunkState::Mmapped) f = kNode | kMmapped;
      e_.push_back(addr | f);
      last_end = (addr + size) & ~kFlags;
      return true;
    });
    if (last_end) e_.push_back(last_end | kGap);
    if (misaligned)
      res_.diagnostics.add("misaligned", std::nullopt, std::nullopt,
                           std::to_string(misaligned) + " chunks not 16-aligned were left out of the leak pass");
    sort_runs();
    // Equal starts (a run's end sentinel meeting the next run's first chunk): keep the chunk.
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
    if (!e_.empty() && !is_gap(e_.back())) e_.push_back(((e_.back() & ~kFlags) + 16) | kGap);
    if (e_.size() >= kNone) throw Error("too many chunks for the leak pass (" + std::to_string(e_.size()) + ")");
  }

  /// The walk yields sorted runs (one per heap, then the mmapped chunks; each ends with a gap)
  /// in ring order: order the runs by address (std::sort degrades on such input); full sort if runs overlap.
  void sort_runs() {
    std::vector<std::pair<size_t, size_t>> runs;  // [begin, end) indices
    size_t b = 0;
    for (size_t i = 1; i <= e_.size(); ++i)
      if (i == e_.size() || e_[i] < e_[i - 1] || is_gap(e_[i - 1])) {
        runs.emplace_back(b, i);
        b = i;
      }
    if (runs.size() <= 1) return;
    std::sort(runs.begin(), runs.end(), [&](const auto& x, const auto& y) { return e_[x.first] < e_[y.first]; });
    for (size_t k = 1; k < runs.size(); ++k)
      if (e_[runs[k].first] < e_[runs[k - 1].second - 1]) {
        std::sort(e_.begin(), e_.end());
        return;
      }
    std::vector<uint64_t> out;
    out.reserve(e_.size());
    for (const auto& r : runs) out.insert(out.end(), e_.begin() + r.first, e_.begin() + r.second);
    e_.swap(out);
  }

  uint64_t start(size_t i) const { return e_[i] & ~kFlags; }

  /// The node whose [mem, end) holds v, or kNone.
  inline uint32_t lookup(uint64_t v) const {
    if (v - lo_ >= span_) return kNone;
    const uint64_t key = v | kFlags;
    // Two levels: every kStride-th start (a small, cache-resident array), then the block.
    const uint64_t* sb = sample_.data();
    size_t sn = sample_.size();
    while (sn > 1) {
      size_t half = sn >> 1;
      sb = sb[half] <= key ? sb + half : sb;
      sn -= half;
    }
    size_t first = static_cast<size_t>(sb - sample_.data()) * kStride;
    const uint64_t* base = e_.data() + first;
    size_t n = std::min(kStride, e_.size() - first);
    while (n > 1) {
      size_t half = n >> 1;
      base = base[half] <= key ? base + half : base;
      n -= half;
    }
    uint64_t e = *base;
    uint64_t s = e & ~kFlags;
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
        f(v);
      }
      res_.words_scanned += n / 8;
      a += n;
    }
    return unreadable;
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
    if (!(e_[i] & kMmapped) && !is_gap(e_[i + 1])) end += 8;
    return {s + 16, end};
  }

  void drain() {
    uint64_t steps = 0;
    while (!work_.empty()) {
      if ((++steps & 0xffff) == 0) Progress::check();
      uint32_t i = work_.back();
      work_.pop_back();
      auto [a, b] = body(i);
      uint64_t bad = scan(rnd_, a, b, [&](uint64_t v) {
        uint32_t j = lookup(v);
        if (j != kNone && j != i) reach(j);
      });
      if (bad) unreadable_chunk(start(i), bad);
    }
  }

  void scan_unreached() {
    for (uint32_t i = 0; i + 1 < e_.size(); ++i) {
      if ((i & 0xffff) == 0) Progress::check();
      if ((e_[i] & (kNode | kReached)) != kNode) continue;
      auto [a, b] = body(i);
      uint64_t bad = scan(seq_, a, b, [&](uint64_t v) {
        uint32_t j = lookup(v);
        if (j != kNone && j != i) e_[j] |= kRef;
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
    for (const auto& a : h_.arenas())
      for (const auto& hr : a.heaps) ex.emplace_back(hr.address, std::max(hr.walk_end, hr.address + hr.size));
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
      rs.unreadable += scan(seq_, p.start, p.end, [&](uint64_t v) {
        uint32_t j = lookup(v);
        if (j != kNone) reach(j);
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
      const ptmalloc::Arena* a = nullptr;
      bool need_arena = opt_.arena || !(e & kReached);
      if (need_arena && !(e & kMmapped)) a = h_.arena_of(c);
      if (opt_.arena && a != opt_.arena) continue;
      res_.nodes.add(size);
      if (e & kReached) {
        res_.reachable.add(size);
        continue;
      }
      res_.leaked.add(size);
      if (opt_.all_leaked) opt_.all_leaked->push_back(c);
      leaked_sizes[size].add(size);
      res_.leaked_by_arena[a ? a->address : 0].add(size);
      bool unref = !(e & kRef);
      if (unref) {
        res_.unreferenced.add(size);
        unref_sizes[size].add(size);
      }
      LeakedChunk lc{c, size, a ? a->address : 0, unref, (e & kMmapped) != 0};
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

  ptmalloc::Heap& h_;
  target::Target& t_;
  uint64_t holes_ = 0, steps_ = 0;
  const ReachOptions& opt_;
  ReachResult& res_;
  Window seq_, rnd_;
  std::vector<uint64_t> e_;       // chunk starts | flags, sorted; gap entries end covered runs
  std::vector<uint64_t> sample_;  // e_[k * kStride] | kFlags: the first level of lookup()
  std::vector<uint32_t> work_;
  uint64_t lo_ = 0, span_ = 0;
};

}  // namespace

ReachResult find_leaks(ptmalloc::Heap& heap, target::Target& t, const ReachOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  ReachResult r;
  Pass(heap, t, opt, r).run();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace heapwalk::analysis
