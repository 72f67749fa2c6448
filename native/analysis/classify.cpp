#include "analysis/classify.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <thread>
#include <unordered_map>

#include "hotspot/nmt.h"
#include "memory/memory.h"
#include "ptmalloc/heap_model.h"
#include "util/demangle.h"
#include "util/parallel.h"

namespace heapwalk::analysis {

namespace {

using ptmalloc::ChunkState;

uint64_t rd64(const uint8_t* p, size_t off) {
  uint64_t v;
  std::memcpy(&v, p + off, 8);
  return v;
}
uint32_t rd32(const uint8_t* p, size_t off) {
  uint32_t v;
  std::memcpy(&v, p + off, 4);
  return v;
}

// zlib 1.2.x layouts (zlib.h z_stream_s, inflate.h inflate_state, deflate.h internal_state).
constexpr size_t kZStreamState = 56;                      // z_stream.state
constexpr size_t kInflMode = 8, kInflWindow = 72;         // inflate_state.wbits (56) is not needed
constexpr uint32_t kInflHead = 16180, kInflSync = 16211;  // inflate_mode HEAD..SYNC (zlib >= 1.2.9)
constexpr size_t kDefStatus = 8, kDefPendingBuf = 16, kDefWSize = 80, kDefWBits = 84, kDefWindow = 96, kDefPrev = 112,
                 kDefHead = 120;
// A freed inflate_state keeps everything past the free-list links glibc writes over its first
// 16 (tcache, small bins) or 32 bytes (large bins): wbits 56, wsize 60, whave 64, wnext 68,
// window 72, lencode 104, distcode 112, next 144 (inflate.h). inflateResetKeep() points
// lencode, distcode and next at the state's own codes[] (offset 1368), and inflate_table()
// only advances next within it: a pointer into the candidate itself, which random data and
// other structures do not have.
constexpr size_t kInflWbits = 56, kInflWsize = 60, kInflWhave = 64, kInflWnext = 68, kInflLencode = 104,
                 kInflDistcode = 112, kInflNext = 144;
constexpr uint64_t kInflStateSpan = 8192;   // sizeof(inflate_state) is 7160 in zlib 1.2.x/1.3
constexpr uint64_t kInflStateChunk = 7168;  // its chunk (x86-64), when no stale header says
constexpr size_t kStaleProbe = 160;         // bytes a stale-state check reads
constexpr size_t kDefMask = 88, kDefWindowSize = 104;
bool deflate_status(uint32_t s) {
  // INIT_STATE, GZIP_STATE, EXTRA_STATE, NAME_STATE, COMMENT_STATE, HCRC_STATE, BUSY_STATE, FINISH_STATE
  return s == 42 || s == 57 || s == 69 || s == 73 || s == 91 || s == 103 || s == 113 || s == 666;
}

/// Parts in parallel where the target can be read from several threads (cores and live
/// processes, as for Heap's own walks).
template <class F>
void run_parallel(const target::Target& t, size_t n, F&& fn) {
  parallel_for(worker_count(n, t.parallel_reads()), n, fn);
}

struct Member {
  uint64_t chunk;
  uint32_t cls;
  bool primary;  // the state chunk: counts the group once
  bool zs;       // a z_stream found without a chunk header to check its size (checked in pass 2)
};

class Classes {
 public:
  uint32_t intern(const std::string& name, const char* kind) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    uint32_t id = static_cast<uint32_t>(names_.size());
    names_.push_back(name);
    kinds_.push_back(kind);
    samples_.emplace_back();
    ids_.emplace(name, id);
    return id;
  }
  uint32_t size_class(uint64_t size) {
    // Most chunks are small: their ids by size / 16, kNoId when not known yet.
    const bool small = (size & 15) == 0 && size < 16 * kSmall;
    if (small && small_[size >> 4] != kNoId) return small_[size >> 4];
    uint32_t id = size_class_slow(size);
    if (small) small_[size >> 4] = id;
    return id;
  }
  uint32_t size_class_slow(uint64_t size) {
    auto it = by_size_.find(size);
    if (it != by_size_.end()) return it->second;
    uint32_t id = intern("size " + std::to_string(size), "size");
    by_size_.emplace(size, id);
    return id;
  }
  void sample(uint32_t id, const std::string& s) {
    if (samples_[id].empty()) samples_[id] = s;
  }
  const std::string& name(uint32_t id) const { return names_[id]; }
  const char* kind(uint32_t id) const { return kinds_[id]; }
  const std::string& sample_of(uint32_t id) const { return samples_[id]; }
  size_t size() const { return names_.size(); }

 private:
  std::vector<std::string> names_, samples_;
  std::vector<const char*> kinds_;
  std::unordered_map<std::string, uint32_t> ids_;
  std::unordered_map<uint64_t, uint32_t> by_size_;
  static constexpr size_t kSmall = 1024;  // sizes below 16 KiB
  static constexpr uint32_t kNoId = ~0u;
  std::vector<uint32_t> small_ = std::vector<uint32_t>(kSmall, kNoId);
};

struct Acc {
  std::vector<ClassStats> used, free;
  void add(std::vector<ClassStats>& v, uint32_t id, uint64_t bytes, uint64_t addr, uint64_t count,
           const std::string* sample = nullptr) {
    if (v.size() <= id) v.resize(id + 1);
    ClassStats& s = v[id];
    s.count += count;
    s.bytes += bytes;
    if (!s.example) {
      s.example = addr;
      if (sample) s.sample = *sample;  // the example's own text, not another chunk's
    }
  }
};

class Classifier {
 public:
  /// `parts`: how many classifiers share the work (they share the bound on cached vptrs).
  /// `headers`: allocations are ptmalloc chunks (a 16-byte header before the user pointer,
  /// classified by chunk address and chunk size); else slots without headers (jemalloc,
  /// tcmalloc), classified by user pointer and slot size.
  Classifier(bool headers, target::Target& t, const target::ModuleIndex& m, size_t parts)
      : headers_(headers),
        hdr_(headers ? 16 : 0),
        t_(t),
        m_(m),
        r_(t.memory()),
        vptr_cache_max_((1u << 20) / std::max<size_t>(parts, 1)) {
    c_inflate_ = cls_.intern("zlib inflate stream", "zlib");
    c_inflate_w_ = cls_.intern("zlib inflate stream + window", "zlib");
    c_deflate_ = cls_.intern("zlib deflate stream", "zlib");
    c_zip_ = cls_.intern("ZIP/JAR data", "content");
    c_class_ = cls_.intern("Java class file", "content");
    c_inflate_freed_ = cls_.intern("zlib inflate stream (freed: state + window)", "zlib");
    c_deflate_freed_ = cls_.intern("zlib deflate stream (freed: state + buffers)", "zlib");
    c_nmt_freed_ = cls_.intern("NMT malloc block (freed)", "nmt");
    // NMT category names by MEMFLAGS index: 21u's table (mtGCCardSet shifts every later index)
    // when libjvm's path names JDK 18 or later, 11u's when it names 11 or earlier, else 17u's
    // (docs/hotspot-nmt.md). Only canary headers (17.0.x, 21) are recognised here.
    if (const auto* jvm = t.find_module([](const std::string& base) { return base == "libjvm.so"; })) {
      unsigned f = hotspot::jdk_feature_from_path(jvm->path);
      if (f >= 18) nmt_names_ = &hotspot::default_names_21();
      if (f && f <= 11) nmt_names_ = &hotspot::default_names_11();
    }
    c_gzip_ = cls_.intern("gzip data", "content");
    c_elf_ = cls_.intern("ELF image", "content");
    c_zero_ = cls_.intern("all zero", "content");
    c_text_ = cls_.intern("text", "content");
    c_ptrs_ = cls_.intern("pointer array", "content");
  }

  const std::vector<Member>& members() const { return members_; }
  /// Frees the Reader's cache (up to two 1 MiB blocks on a live target) between passes, so only
  /// the parts being walked hold one.
  void release_cache() { r_.release(); }

  // Pass 1: zlib groups, found from their state (back-pointer to the z_stream that points back).
  // Appends this chunk's group, if it is a zlib state, to members_ (unsorted).
  void find_zlib(uint64_t c, uint64_t size, ChunkState st) {
    if (st != ChunkState::Used || size < 160) return;
    // A copy: the try_u64 calls below read through the same Reader (live targets: its cache).
    uint8_t p[128];
    if (!r_.try_copy(c + hdr_, p, sizeof p)) return;
    uint64_t mem = c + hdr_, strm = rd64(p, 0);
    if (!strm || (strm & 7)) return;
    uint32_t mode = rd32(p, kInflMode);
    bool infl = mode >= kInflHead && mode <= kInflSync;
    bool defl = !infl && deflate_status(rd32(p, kDefStatus)) && rd32(p, kDefWBits) >= 8 && rd32(p, kDefWBits) <= 15 &&
                rd32(p, kDefWSize) == (1u << rd32(p, kDefWBits));
    if (!infl && !defl) return;
    uint64_t back;
    if (!r_.try_u64(strm + kZStreamState, back) || back != mem) return;
    std::vector<uint64_t> extra;
    uint32_t cls;
    if (infl) {
      uint64_t window = rd64(p, kInflWindow);
      cls = window ? c_inflate_w_ : c_inflate_;
      if (window) extra.push_back(window);
    } else {
      cls = c_deflate_;
      for (size_t off : {kDefWindow, kDefPrev, kDefHead, kDefPendingBuf}) extra.push_back(rd64(p, off));
    }
    members_.push_back({c, cls, true, false});
    // The z_stream itself, when it is a chunk of its own (Java's Inflater callocs it).
    uint64_t sw;
    if (!headers_)
      members_.push_back({strm, cls, false, true});  // its slot's size is checked when it is met
    else if ((strm & 15) == 0 && r_.try_u64(strm - 8, sw) && (sw & ~uint64_t{7}) >= 128 && (sw & ~uint64_t{7}) <= 256)
      members_.push_back({strm - 16, cls, false, false});
    for (uint64_t e : extra)
      if (e && (e & 15) == 0) members_.push_back({e - hdr_, cls, false, false});
  }

  bool pointer_like(uint64_t v) const {
    if (v < 4096 || (v & 7)) return false;
    const auto& rs = t_.memory().regions();
    auto it =
        std::upper_bound(rs.begin(), rs.end(), v, [](uint64_t a, const memory::Region& r) { return a < r.start; });
    if (it == rs.begin()) return false;
    --it;
    return v < it->end && it->read;
  }

  // The class of a C++ object whose first word is `vptr`: vtable symbol, else RTTI.
  std::optional<uint32_t> cxx_class(uint64_t vptr) {
    if (vptr < 4096 || (vptr & 7)) return std::nullopt;
    return cxx_class_slow(vptr);
  }
  std::optional<uint32_t> cxx_class_slow(uint64_t vptr) {
    auto cached = vptr_cache_.find(vptr);
    if (cached != vptr_cache_.end()) {
      if (cached->second == kNone) return std::nullopt;
      return cached->second;
    }
    uint32_t id = kNone;
    if (const std::string* cls = m_.vtable_class(vptr)) {
      id = cls_.intern(*cls, "c++");
    } else if (m_.in_module(vptr)) {
      // RTTI: vptr[-1] is the typeinfo; typeinfo + 8 points at the mangled type name.
      uint64_t ti = 0, name = 0;
      char buf[257] = {0};
      if (m_.read(vptr - 8, &ti, 8) == 8 && m_.in_module(ti) && m_.read(ti + 8, &name, 8) == 8 && m_.in_module(name)) {
        size_t n = m_.read(name, buf, 256);
        buf[std::min<size_t>(n, 256)] = 0;
        size_t len = strnlen(buf, 256);
        bool ok = len >= 1 && len < 256;
        for (size_t i = 0; ok && i < len; ++i)
          ok = (buf[i] >= 'A' && buf[i] <= 'Z') || (buf[i] >= 'a' && buf[i] <= 'z') ||
               (buf[i] >= '0' && buf[i] <= '9') || buf[i] == '_';
        if (ok) {
          std::string cls = class_of_typeinfo_name(buf);
          if (!cls.empty()) id = cls_.intern(cls, "c++");
        }
      }
    }
    if (vptr_cache_.size() < vptr_cache_max_) vptr_cache_[vptr] = id;
    if (id == kNone) return std::nullopt;
    return id;
  }

  uint32_t content(const uint8_t* p, size_t n, uint64_t total) {
    if (n >= 4 && p[0] == 'P' && p[1] == 'K' &&
        ((p[2] == 3 && p[3] == 4) || (p[2] == 1 && p[3] == 2) || (p[2] == 5 && p[3] == 6)))
      return c_zip_;
    if (n >= 4 && p[0] == 0xca && p[1] == 0xfe && p[2] == 0xba && p[3] == 0xbe) return c_class_;
    if (n >= 3 && p[0] == 0x1f && p[1] == 0x8b && p[2] == 8) return c_gzip_;
    if (n >= 4 && p[0] == 0x7f && p[1] == 'E' && p[2] == 'L' && p[3] == 'F') return c_elf_;
    (void)total;
    // Text: a run of printable ASCII/UTF-8 from the start, at least 8 characters.
    size_t i = 0;
    while (i < n && (p[i] >= 0x20 || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') && p[i] != 0x7f) ++i;
    if (i >= 8 && (i == n || p[i] == 0)) {
      last_sample_.assign(reinterpret_cast<const char*>(p), std::min<size_t>(i, 40));
      cls_.sample(c_text_, last_sample_);
      return c_text_;
    }
    return kNone;
  }

  // ZIP/JAR bytes in a free chunk: its start is overwritten by free-list links, so look for a
  // local-file or central-directory signature anywhere in the first 4 KiB.
  bool stale_zip(uint64_t addr, uint64_t len) {
    len = std::min<uint64_t>(len, 4096);
    const uint8_t* p = r_.span(addr, len);
    if (!p || len < 4) return false;
    for (uint64_t i = 0; i + 4 <= len; ++i) {
      const uint8_t* q = static_cast<const uint8_t*>(std::memchr(p + i, 'P', len - 3 - i));
      if (!q) return false;
      i = static_cast<uint64_t>(q - p);
      if (q[1] == 'K' && ((q[2] == 3 && q[3] == 4) || (q[2] == 1 && q[3] == 2))) return true;
    }
    return false;
  }

  // Stale zlib streams in a free extent [lo, hi) (a free chunk, or the top): every 16-aligned
  // payload start is probed for a freed inflate_state or deflate_state (their fields past the
  // free-list links survive free()). Returns the bytes they account for (their state chunk and,
  // when it lies in the same extent, the window chunk glibc coalesced with it), adds the
  // streams to `streams_infl` / `streams_defl`.
  uint64_t stale_zlib(uint64_t lo, uint64_t hi, uint64_t& streams_infl, uint64_t& streams_defl) {
    constexpr uint64_t kBlock = 1 << 16;
    uint64_t covered = 0, next_free = lo;  // bytes before next_free are already accounted for
    std::vector<uint8_t> buf(kBlock + kStaleProbe);
    for (uint64_t base = (lo + 15) & ~uint64_t{15}; base + kStaleProbe <= hi; base += kBlock) {
      uint64_t n = std::min<uint64_t>(kBlock + kStaleProbe, hi - base);
      if (!r_.try_copy(base, buf.data(), n)) continue;  // unsaved or unreadable: nothing to name
      const uint8_t* p = buf.data();
      for (uint64_t off = 0; off + kStaleProbe <= n && off < kBlock; off += 16) {
        const uint8_t* q = p + off;
        const uint64_t sa = base + off;
        if (sa < next_free) continue;
        uint32_t wbits = rd32(q, kInflWbits);
        if (wbits >= 8 && wbits <= 15) {
          uint64_t nx = rd64(q, kInflNext), lc = rd64(q, kInflLencode), dc = rd64(q, kInflDistcode);
          uint32_t wsize = rd32(q, kInflWsize), whave = rd32(q, kInflWhave), wnext = rd32(q, kInflWnext);
          uint64_t win = rd64(q, kInflWindow);
          if (nx > sa + kInflNext && nx < sa + kInflStateSpan && lc && dc && (wsize == 0 || wsize == (1u << wbits)) &&
              whave <= wsize && wnext <= wsize && (win & 15) == 0) {
            uint64_t state = kInflStateChunk, sz = 0;
            // An inner state still has its own chunk header (glibc leaves the headers of
            // coalesced chunks alone); the extent's first one was overwritten with the new size.
            if (sa - 16 > lo && r_.try_u64(sa - 8, sz) && (sz & ~uint64_t{7}) >= 7160 + 8 &&
                (sz & ~uint64_t{7}) <= kInflStateSpan)
              state = sz & ~uint64_t{7};
            uint64_t end = std::min(sa - 16 + state, hi);
            // Only when nothing but the window lies between: the window right after its state
            // (the usual order: inflateInit allocates the state, the first inflate() the window).
            if (win && win - 16 == end && win < hi) {
              uint64_t wchunk = (uint64_t{1} << wbits) + 16;
              if (r_.try_u64(win - 8, sz) && (sz & ~uint64_t{7}) >= (uint64_t{1} << wbits) + 8 &&
                  (sz & ~uint64_t{7}) <= (uint64_t{1} << wbits) + 64)
                wchunk = sz & ~uint64_t{7};
              end = std::min(win - 16 + wchunk, hi);
            }
            covered += end - std::max(sa - 16, lo);
            next_free = end;
            ++streams_infl;
            continue;
          }
        }
        uint32_t wb = rd32(q, kDefWBits), ws = rd32(q, kDefWSize);
        if (wb >= 8 && wb <= 15 && ws == (1u << wb) && rd32(q, kDefMask) == ws - 1 &&
            rd64(q, kDefWindowSize) == 2 * uint64_t{ws}) {
          uint64_t end = std::min(sa - 16 + 5952, hi), sz = 0;  // sizeof(deflate_state): 5936
          if (sa - 16 > lo && r_.try_u64(sa - 8, sz) && (sz & ~uint64_t{7}) >= 5936 && (sz & ~uint64_t{7}) <= 8192)
            end = std::min(sa - 16 + (sz & ~uint64_t{7}), hi);
          // Its window, prev, head and pending buffers, when they follow in the same extent.
          for (size_t f : {kDefWindow, kDefPrev, kDefHead, kDefPendingBuf}) {
            uint64_t b = rd64(q, f);
            if (b - 16 == end && b < hi && r_.try_u64(b - 8, sz) && (sz & ~uint64_t{7}) >= 32 &&
                (sz & ~uint64_t{7}) <= (uint64_t{4} << wb) + 64)
              end = std::min(b - 16 + (sz & ~uint64_t{7}), hi);
          }
          covered += end - std::max(sa - 16, lo);
          next_free = end;
          ++streams_defl;
        }
      }
    }
    return covered;
  }

  // A freed NMT-tracked block of its own chunk (not coalesced): the 16-byte header is gone under
  // the free-list links, but the 0xE88E footer after the user bytes survives. malloc(user + 18)
  // of a chunk of `size` puts it between payload offsets size - 25 and size - 10.
  bool stale_nmt(uint64_t mem, uint64_t size) {
    if (size < 48 || size > 4096) return false;
    uint8_t f[17];
    if (!r_.try_copy(mem + size - 25, f, sizeof f)) return false;
    for (size_t i = 0; i + 1 < sizeof f; ++i)
      if (f[i] == 0xE8 && f[i + 1] == 0x8E) return true;
    return false;
  }

  // Class-file bytes in a free chunk (a JAR entry inflated, a class being defined): the magic
  // anywhere in the first 4 KiB, 4-aligned (buffers are), followed by a plausible version.
  bool stale_class(uint64_t addr, uint64_t len) {
    len = std::min<uint64_t>(len, 4096);
    const uint8_t* p = r_.span(addr, len);
    if (!p || len < 8) return false;
    for (uint64_t i = 0; i + 8 <= len; i += 4)
      if (p[i] == 0xca && p[i + 1] == 0xfe && p[i + 2] == 0xba && p[i + 3] == 0xbe && p[i + 6] == 0 && p[i + 7] >= 45 &&
          p[i + 7] <= 70)
        return true;
    return false;
  }

  bool all_zero(uint64_t addr, uint64_t len) {
    len = std::min<uint64_t>(len, 4096);
    const uint8_t* p = r_.span(addr, len);
    if (!p) return false;
    for (uint64_t i = 0; i < len; ++i)
      if (p[i]) return false;
    return true;
  }

  // Pass 2: names one chunk, counted in per_arena_. `members`: every part's zlib groups, sorted.
  // `pool`: the pool's address (0: none, ptmalloc's mmapped chunks).
  void classify(const ClassifyOptions& opt, const std::vector<Member>& members, uint64_t c, uint64_t size,
                ChunkState st, uint64_t pool) {
    size_t& mi = mi_;
    if (opt.only_chunks && !std::binary_search(opt.only_chunks->begin(), opt.only_chunks->end(), c)) return;
    ++chunks_;
    const uint64_t key = pool;
    if (!acc_ || key != acc_key_) {
      acc_ = &per_arena_[key];
      acc_key_ = key;
    }
    Acc& acc = *acc_;
    bool used = st == ChunkState::Used || st == ChunkState::Mmapped;
    if (!used && (!opt.free_chunks || st == ChunkState::Fencepost)) return;
    // Arenas are walked in ring order, not address order: restart the cursor when going back.
    if (mi > 0 && (mi >= members.size() || members[mi - 1].chunk >= c))
      mi = static_cast<size_t>(
          std::lower_bound(members.begin(), members.end(), c, [](const Member& m, uint64_t a) { return m.chunk < a; }) -
          members.begin());
    while (mi < members.size() && members[mi].chunk < c) ++mi;
    // A z_stream found without a header to size it: a slot of z_stream's size (112 bytes).
    if (used && mi < members.size() && members[mi].chunk == c && (!members[mi].zs || (size >= 112 && size <= 256))) {
      acc.add(acc.used, members[mi].cls, size, c, members[mi].primary ? 1 : 0);
      note(opt, members[mi].cls, c, size, true);
      return;
    }
    uint64_t mem = c + hdr_;
    uint64_t usable = !headers_ ? size : st == ChunkState::Mmapped ? size - 16 : size - 8;
    uint64_t rest = size;  // the bytes this chunk adds to the class found below
    if (!used) {
      // Stale zlib streams first: a free chunk (or the top) holding what zlib freed, state and
      // window coalesced, is named by them (issue 12: what the retained memory had held).
      uint64_t infl = 0, defl = 0;
      // (Allocators without headers: the probe's header checks do not apply.)
      uint64_t z = headers_ ? stale_zlib(c + 16, c + size, infl, defl) : 0;
      if (infl || defl) {
        bool whole = st != ChunkState::Top && 2 * z >= size;  // mostly streams: all of it
        uint64_t zb = whole ? size : z;
        if (infl) acc.add(acc.free, c_inflate_freed_, defl ? zb / 2 : zb, c, infl);
        if (defl) acc.add(acc.free, c_deflate_freed_, infl ? zb - zb / 2 : zb, c, defl);
        if (whole) return;
        rest = size - zb;
      }
      // Stale contents: skip the free-list links glibc wrote over the start of the payload.
      uint64_t skip = (st == ChunkState::Large) ? 32 : 16;
      if (st == ChunkState::Top) usable = std::min<uint64_t>(usable, 4096);
      if (usable <= skip + 8) {
        acc.add(acc.free, cls_.size_class(size), rest, c, 1);
        note(opt, cls_.size_class(size), c, size, false);
        return;
      }
      mem += skip;
      usable -= skip;
    }
    // The first bytes, copied: stale_zip(), all_zero() and the footer check below read through
    // the same Reader, whose cache a live target refills (a span would not outlive them).
    uint8_t head[64];
    size_t n = static_cast<size_t>(std::min<uint64_t>(usable, sizeof head));
    const uint8_t* p = r_.try_copy(mem, head, n) ? head : nullptr;
    uint32_t id = kNone;
    if (p && !used && stale_zip(mem, usable)) id = c_zip_;
    if (p && !used && id == kNone && stale_class(mem, usable)) id = c_class_;
    if (p && !used && id == kNone && headers_ && st != ChunkState::Top && stale_nmt(c + 16, size)) id = c_nmt_freed_;
    // HotSpot NMT-tracked malloc block: a 16-byte header (user size, category byte at 12,
    // canary 0xE99E at 14) and a 0xE88E footer after the user bytes (JDK 17.0.x and 21 layout).
    if (p && used && n >= 32 && id == kNone) {
      uint64_t user = rd64(p, 0);
      uint16_t canary;
      std::memcpy(&canary, p + 14, 2);
      const uint8_t type = p[12];  // the MEMFLAGS index, bounded here and used below
      // user + 18 <= usable, without wrapping for a user size near 2^64.
      if (canary == 0xE99E && p[13] == 0 && type < nmt_names_->size() && usable >= 18 && user <= usable - 18) {
        uint8_t f[2];
        if (r_.try_copy(mem + 16 + user, f, 2) && f[0] == 0xE8 && f[1] == 0x8E) {
          // A C++ object inside the block has its vptr right after the header.
          if (auto cx = cxx_class(rd64(p, 16))) {
            id = *cx;
          } else {
            id = cls_.intern("NMT " + (*nmt_names_)[type], "nmt");
          }
        }
      }
    }
    if (p && id == kNone) {
      uint64_t w0 = n >= 8 ? rd64(p, 0) : 0;
      if (used) {
        if (auto cx = cxx_class(w0)) id = *cx;
      }
      if (id == kNone) id = content(p, n, usable);
      if (id == kNone && all_zero(mem, usable)) id = c_zero_;
      if (id == kNone && used && n >= 32) {
        unsigned ptrs = 0, words = static_cast<unsigned>(n / 8);
        for (unsigned w = 0; w < words; ++w) ptrs += pointer_like(rd64(p, w * 8));
        if (ptrs * 4 >= words * 3) id = c_ptrs_;
      }
      if (id == kNone && used) {
        if (const std::string* mod = m_.module_at(w0)) id = cls_.intern("references " + *mod, "module");
      }
    }
    if (id == kNone) id = cls_.size_class(size);
    acc.add(used ? acc.used : acc.free, id, rest, c, 1, id == c_text_ ? &last_sample_ : nullptr);
    note(opt, id, c, size, used);
  }

  /// Records chunk `c` when its class is the one ClassifyOptions::list names.
  void note(const ClassifyOptions& opt, uint32_t id, uint64_t c, uint64_t size, bool used) {
    if (opt.list.empty()) return;
    if (list_match_.size() <= id) list_match_.resize(cls_.size() > id ? cls_.size() : id + 1, -1);
    if (list_match_[id] < 0) list_match_[id] = cls_.name(id) == opt.list ? 1 : 0;
    if (!list_match_[id]) return;
    ++listed_total_;
    if (!opt.list_limit || listed_.size() < opt.list_limit) listed_.push_back({c, size, used});
  }

  /// Merges the parts (in walk order) into `out`: their classes by name, the first sample of
  /// each, their arenas' counts.
  void merge(const std::vector<std::unique_ptr<Classifier>>& parts, ClassifyResult& out) {
    std::map<uint64_t, Acc> per_arena;  // arena address (0 = mmapped) -> counts
    for (const auto& part : parts) {
      out.chunks += part->chunks_;
      out.listed_total += part->listed_total_;
      for (const auto& l : part->listed_)
        if (!list_limit_ || out.listed.size() < list_limit_) out.listed.push_back(l);
      std::vector<uint32_t> ids(part->cls_.size());
      for (uint32_t id = 0; id < ids.size(); ++id) {
        ids[id] = cls_.intern(part->cls_.name(id), part->cls_.kind(id));
        if (!part->cls_.sample_of(id).empty()) cls_.sample(ids[id], part->cls_.sample_of(id));
      }
      for (const auto& [addr, acc] : part->per_arena_) {
        Acc& to = per_arena[addr];
        auto add = [&](std::vector<ClassStats>& v, const std::vector<ClassStats>& from) {
          for (uint32_t id = 0; id < from.size(); ++id) {
            const ClassStats& f = from[id];
            if (v.size() <= ids[id]) v.resize(ids[id] + 1);
            ClassStats& x = v[ids[id]];
            x.count += f.count;
            x.bytes += f.bytes;
            if (!x.example) {
              x.example = f.example;
              x.sample = f.sample;
            }
          }
        };
        add(to.used, acc.used);
        add(to.free, acc.free);
      }
    }
    auto rows = [&](const std::vector<ClassStats>& v) {
      std::vector<ClassRow> out_rows;
      for (uint32_t id = 0; id < v.size(); ++id) {
        if (!v[id].count && !v[id].bytes) continue;
        // A text class shows its example's own text (issue 15: the first text seen anywhere
        // was shown next to an example chunk holding other text).
        const std::string& sample = v[id].sample.empty() ? cls_.sample_of(id) : v[id].sample;
        out_rows.push_back({cls_.name(id), cls_.kind(id), sample, v[id]});
      }
      std::sort(out_rows.begin(), out_rows.end(), [](const ClassRow& a, const ClassRow& b) {
        return a.stats.bytes != b.stats.bytes ? a.stats.bytes > b.stats.bytes : a.name < b.name;
      });
      return out_rows;
    };
    Acc total;
    for (auto& [addr, acc] : per_arena) {
      ArenaClasses ac;
      ac.arena = addr;
      ac.used = rows(acc.used);
      ac.free = rows(acc.free);
      for (uint32_t id = 0; id < acc.used.size(); ++id) {
        const auto& s = acc.used[id];
        if (total.used.size() <= id) total.used.resize(id + 1);
        total.used[id].count += s.count;
        total.used[id].bytes += s.bytes;
        if (!total.used[id].example) {
          total.used[id].example = s.example;
          total.used[id].sample = s.sample;
        }
      }
      for (uint32_t id = 0; id < acc.free.size(); ++id) {
        const auto& s = acc.free[id];
        if (total.free.size() <= id) total.free.resize(id + 1);
        total.free[id].count += s.count;
        total.free[id].bytes += s.bytes;
        if (!total.free[id].example) {
          total.free[id].example = s.example;
          total.free[id].sample = s.sample;
        }
      }
      out.arenas.push_back(std::move(ac));
    }
    out.used = rows(total.used);
    out.free = rows(total.free);
    out.vtables_known = m_.vtable_count();
  }

 private:
  static constexpr uint32_t kNone = ~0u;
  const bool headers_;
  const uint64_t hdr_;  // user pointer - block start: 16 (ptmalloc chunks) or 0
  target::Target& t_;
  const std::vector<std::string>* nmt_names_ = &hotspot::default_names_17();
  const target::ModuleIndex& m_;
  memory::Reader r_;
  Classes cls_;
  std::vector<Member> members_;  // zlib groups found by find_zlib()
  std::unordered_map<uint64_t, uint32_t> vptr_cache_;
  size_t vptr_cache_max_;
  std::map<uint64_t, Acc> per_arena_;  // arena address (0 = mmapped) -> counts
  size_t mi_ = 0;                      // classify()'s cursor in the sorted members
  Acc* acc_ = nullptr;                 // per_arena_[acc_key_]
  std::string last_sample_;            // the text content() saw last
  std::vector<int8_t> list_match_;     // class id -> is ClassifyOptions::list (-1: not known yet)
  std::vector<ListedChunk> listed_;
  uint64_t listed_total_ = 0;

 public:
  uint64_t list_limit_ = 0;  // merge(): ClassifyOptions::list_limit

 private:
  uint64_t acc_key_ = 0;
  uint64_t chunks_ = 0;
  uint32_t c_inflate_, c_inflate_w_, c_deflate_, c_zip_, c_class_, c_gzip_, c_elf_, c_zero_, c_text_, c_ptrs_;
  uint32_t c_inflate_freed_, c_deflate_freed_, c_nmt_freed_;
};

}  // namespace

ClassifyResult classify(alloc::Model& model, target::Target& t, const target::ModuleIndex& modules,
                        const ClassifyOptions& opt) {
  // The model's walk is its parts' walks in order (ptmalloc: every arena's walk in ring order,
  // then the mmapped chunks): each part is classified on its own (in parallel where the heap's
  // own walks are) and merged in that order, which gives what one classifier walking them all
  // would.
  const bool headers = model.kind() == alloc::Kind::Ptmalloc;
  std::vector<uint64_t> pool_address;
  for (const auto& p : model.pools()) pool_address.push_back(p.address);
  std::vector<size_t> sources;
  for (size_t k = 0; k < model.parts(); ++k) {
    int pp = model.part_pool(k);
    if (opt.pool < 0 || pp == opt.pool || (pp < 0 && !headers)) sources.push_back(k);
  }
  const size_t n = sources.size();
  auto* heap_model = dynamic_cast<ptmalloc::HeapModel*>(&model);
  auto walk = [&](size_t k, auto&& visit) {
    if (heap_model) {
      heap_model->walk_chunks(sources[k], [&](uint64_t c, uint64_t size, ChunkState st, int pool) {
        if (opt.pool < 0 || pool == opt.pool) visit(c, size, st, pool >= 0 ? pool_address[pool] : 0);
      });
      return;
    }
    model.walk_part_batched(sources[k], [&](const alloc::Allocation* b, size_t count) {
      for (const alloc::Allocation* a = b; a != b + count; ++a) {
        if (opt.pool >= 0 && a->pool != opt.pool) continue;
        const uint64_t pool =
            a->pool >= 0 && static_cast<size_t>(a->pool) < pool_address.size() ? pool_address[a->pool] : 0;
        if (headers) {
          visit(a->chunk, a->chunk_size, static_cast<ChunkState>(a->detail), pool);
        } else {
          // Slots without headers as chunk states: in use; cached and free (stale contents
          // with --free); address space returned to the OS and metadata are never classified.
          ChunkState st = a->state == alloc::State::InUse    ? ChunkState::Used
                          : a->state == alloc::State::Cached ? ChunkState::Tcache
                          : a->state == alloc::State::Free   ? ChunkState::Small
                                                             : ChunkState::Fencepost;
          visit(a->address, a->size, st, pool);
        }
      }
      return true;
    });
  };
  std::vector<std::unique_ptr<Classifier>> parts;
  for (size_t k = 0; k < n; ++k) parts.push_back(std::make_unique<Classifier>(headers, t, modules, n));
  run_parallel(t, n, [&](size_t k) {
    walk(k, [&](uint64_t c, uint64_t size, ChunkState st, uint64_t) { parts[k]->find_zlib(c, size, st); });
    parts[k]->release_cache();
  });
  std::vector<Member> members;
  for (const auto& p : parts) members.insert(members.end(), p->members().begin(), p->members().end());
  std::sort(members.begin(), members.end(), [](const Member& a, const Member& b) { return a.chunk < b.chunk; });
  run_parallel(t, n, [&](size_t k) {
    walk(k, [&](uint64_t c, uint64_t size, ChunkState st, uint64_t pool) {
      parts[k]->classify(opt, members, c, size, st, pool);
    });
    parts[k]->release_cache();
  });
  ClassifyResult out;
  Classifier merger(headers, t, modules, 1);
  merger.list_limit_ = opt.list_limit;
  merger.merge(parts, out);
  return out;
}

ClassifyResult classify(ptmalloc::Heap& heap, target::Target& t, const target::ModuleIndex& modules,
                        const ClassifyOptions& opt) {
  ptmalloc::HeapModel model(heap);
  ClassifyOptions o = opt;
  if (opt.arena) o.pool = model.pool_index(opt.arena);
  return classify(model, t, modules, o);
}

}  // namespace heapwalk::analysis
