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
  void add(std::vector<ClassStats>& v, uint32_t id, uint64_t bytes, uint64_t addr, bool count) {
    if (v.size() <= id) v.resize(id + 1);
    ClassStats& s = v[id];
    if (count) ++s.count;
    s.bytes += bytes;
    if (!s.example) s.example = addr;
  }
};

class Classifier {
 public:
  /// `parts`: how many classifiers share the work (they share the bound on cached vptrs).
  Classifier(ptmalloc::Heap& /*heap*/, target::Target& t, const target::ModuleIndex& m, size_t parts)
      : t_(t), m_(m), r_(t.memory()), vptr_cache_max_((1u << 20) / std::max<size_t>(parts, 1)) {
    c_inflate_ = cls_.intern("zlib inflate stream", "zlib");
    c_inflate_w_ = cls_.intern("zlib inflate stream + window", "zlib");
    c_deflate_ = cls_.intern("zlib deflate stream", "zlib");
    c_zip_ = cls_.intern("ZIP/JAR data", "content");
    c_class_ = cls_.intern("Java class file", "content");
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
    if (!r_.try_copy(c + 16, p, sizeof p)) return;
    uint64_t mem = c + 16, strm = rd64(p, 0);
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
    members_.push_back({c, cls, true});
    // The z_stream itself, when it is a chunk of its own (Java's Inflater callocs it).
    uint64_t sw;
    if ((strm & 15) == 0 && r_.try_u64(strm - 8, sw) && (sw & ~uint64_t{7}) >= 128 && (sw & ~uint64_t{7}) <= 256)
      members_.push_back({strm - 16, cls, false});
    for (uint64_t e : extra)
      if (e && (e & 15) == 0) members_.push_back({e - 16, cls, false});
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
      cls_.sample(c_text_, std::string(reinterpret_cast<const char*>(p), std::min<size_t>(i, 40)));
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

  bool all_zero(uint64_t addr, uint64_t len) {
    len = std::min<uint64_t>(len, 4096);
    const uint8_t* p = r_.span(addr, len);
    if (!p) return false;
    for (uint64_t i = 0; i < len; ++i)
      if (p[i]) return false;
    return true;
  }

  // Pass 2: names one chunk, counted in per_arena_. `members`: every part's zlib groups, sorted.
  void classify(const ClassifyOptions& opt, const std::vector<Member>& members, uint64_t c, uint64_t size,
                ChunkState st, const ptmalloc::Arena* a) {
    size_t& mi = mi_;
    if (opt.only_chunks && !std::binary_search(opt.only_chunks->begin(), opt.only_chunks->end(), c)) return;
    ++chunks_;
    const uint64_t key = a ? a->address : 0;
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
    if (used && mi < members.size() && members[mi].chunk == c) {
      acc.add(acc.used, members[mi].cls, size, c, members[mi].primary);
      return;
    }
    uint64_t mem = c + 16;
    uint64_t usable = st == ChunkState::Mmapped ? size - 16 : size - 8;
    if (!used) {
      // Stale contents: skip the free-list links glibc wrote over the start of the payload.
      uint64_t skip = (st == ChunkState::Large) ? 32 : 16;
      if (st == ChunkState::Top) usable = std::min<uint64_t>(usable, 4096);
      if (usable <= skip + 8) {
        acc.add(acc.free, cls_.size_class(size), size, c, true);
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
    acc.add(used ? acc.used : acc.free, id, size, c, true);
  }

  /// Merges the parts (in walk order) into `out`: their classes by name, the first sample of
  /// each, their arenas' counts.
  void merge(const std::vector<std::unique_ptr<Classifier>>& parts, ClassifyResult& out) {
    std::map<uint64_t, Acc> per_arena;  // arena address (0 = mmapped) -> counts
    for (const auto& part : parts) {
      out.chunks += part->chunks_;
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
            if (!x.example) x.example = f.example;
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
        out_rows.push_back({cls_.name(id), cls_.kind(id), cls_.sample_of(id), v[id]});
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
        if (!total.used[id].example) total.used[id].example = s.example;
      }
      for (uint32_t id = 0; id < acc.free.size(); ++id) {
        const auto& s = acc.free[id];
        if (total.free.size() <= id) total.free.resize(id + 1);
        total.free[id].count += s.count;
        total.free[id].bytes += s.bytes;
        if (!total.free[id].example) total.free[id].example = s.example;
      }
      out.arenas.push_back(std::move(ac));
    }
    out.used = rows(total.used);
    out.free = rows(total.free);
    out.vtables_known = m_.vtable_count();
  }

 private:
  static constexpr uint32_t kNone = ~0u;
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
  uint64_t acc_key_ = 0;
  uint64_t chunks_ = 0;
  uint32_t c_inflate_, c_inflate_w_, c_deflate_, c_zip_, c_class_, c_gzip_, c_elf_, c_zero_, c_text_, c_ptrs_;
};

}  // namespace

ClassifyResult classify(ptmalloc::Heap& heap, target::Target& t, const target::ModuleIndex& modules,
                        const ClassifyOptions& opt) {
  // Heap::walk's order is every arena's walk in ring order, then the mmapped chunks: each is a
  // part, classified on its own (in parallel where the heap's own walks are) and merged in that
  // order, which gives what one classifier walking them all would.
  heap.summarize();
  std::vector<const ptmalloc::Arena*> sources;
  if (opt.arena) {
    sources.push_back(opt.arena);
  } else {
    for (const auto& a : heap.arenas()) sources.push_back(&a);
  }
  const size_t n = sources.size() + (opt.arena ? 0 : 1);
  auto walk = [&](size_t k, auto&& visit) {
    if (k < sources.size()) {
      heap.walk(sources[k], [&](uint64_t c, uint64_t size, ChunkState st, const ptmalloc::Arena* a, size_t) {
        visit(c, size, st, a);
        return true;
      });
    } else {
      for (const auto& m : heap.mmapped().chunks) visit(m.address, m.size, ChunkState::Mmapped, nullptr);
    }
  };
  std::vector<std::unique_ptr<Classifier>> parts;
  for (size_t k = 0; k < n; ++k) parts.push_back(std::make_unique<Classifier>(heap, t, modules, n));
  run_parallel(t, n, [&](size_t k) {
    walk(k,
         [&](uint64_t c, uint64_t size, ChunkState st, const ptmalloc::Arena*) { parts[k]->find_zlib(c, size, st); });
    parts[k]->release_cache();
  });
  std::vector<Member> members;
  for (const auto& p : parts) members.insert(members.end(), p->members().begin(), p->members().end());
  std::sort(members.begin(), members.end(), [](const Member& a, const Member& b) { return a.chunk < b.chunk; });
  run_parallel(t, n, [&](size_t k) {
    walk(k, [&](uint64_t c, uint64_t size, ChunkState st, const ptmalloc::Arena* a) {
      parts[k]->classify(opt, members, c, size, st, a);
    });
    parts[k]->release_cache();
  });
  ClassifyResult out;
  Classifier(heap, t, modules, 1).merge(parts, out);
  return out;
}

}  // namespace heapwalk::analysis
