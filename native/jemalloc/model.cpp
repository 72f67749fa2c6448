#include "jemalloc/model.h"

#include <algorithm>
#include <cstring>

#include "util/errors.h"

namespace heapwalk::jemalloc {

namespace {

// Offsets for jemalloc 5.3.0 built with Debian 12's flags (docs/jemalloc-layouts.md).
constexpr unsigned kArenaLimit = 4095;   // MALLOCX_ARENA_LIMIT
constexpr unsigned kNBins = 36;          // SC_NBINS (LG_PAGE 12)
constexpr unsigned kNLarge = 196;        // SC_NSIZES - SC_NBINS
constexpr unsigned kTcacheBinsMax = 73;  // tcache_t.bins[]
constexpr uint64_t kPage = 4096;
constexpr uint64_t kArenaInternal = 24 + 32, kArenaPacMapped = 24 + 88 + 8 + 56, kArenaLstats = 24 + 952;
constexpr uint64_t kArenaTcacheQl = 10392, kArenaNactive = 10648 + 8;
constexpr uint64_t kArenaDirty[2] = {20480, 30136}, kArenaMuzzy[2] = {39920, 49576}, kArenaRetained[2] = {59360, 69016};
constexpr uint64_t kArenaInd = 78928, kArenaBase = 78936, kArenaBins = 78952, kBinSize = 224;
constexpr uint64_t kBinCurregs = 112 + 24, kBinNmalloc = 112, kBinNdalloc = 120, kBinCurslabs = 112 + 64;
constexpr uint64_t kBaseAllocated = 3880, kBaseResident = 3888, kBaseMapped = 3896;
constexpr uint64_t kSlowTcache = 168, kTcacheBins = 8, kCacheBinSize = 24, kTsdTcache = 856;

bool is_jemalloc_module(const std::string& path) {
  std::string base = path.substr(path.rfind('/') + 1);
  return base.rfind("libjemalloc.so", 0) == 0;
}

// An arena_t at `a` with index `ind`: its `ind` field and a base_t whose figures are ordered as
// base_stats_get asserts (allocated <= resident <= mapped, mapped a page multiple).
bool plausible_arena(memory::Reader& r, uint64_t a, unsigned ind) {
  uint32_t got;
  uint64_t base, al, res, map;
  if ((a & 63) || !r.try_u32(a + kArenaInd, got) || got != ind) return false;
  if (!r.try_u64(a + kArenaBase, base) || !base || (base & 7)) return false;
  if (!r.try_u64(base + kBaseAllocated, al) || !r.try_u64(base + kBaseResident, res) ||
      !r.try_u64(base + kBaseMapped, map))
    return false;
  return al <= res && res <= map && map && (map % kPage) == 0;
}

}  // namespace

uint64_t index2size(unsigned ind) {
  static const std::vector<uint64_t> tab = [] {
    std::vector<uint64_t> v = {8, 16, 32, 48, 64};
    for (unsigned lg = 6; v.size() < 232; ++lg)
      for (unsigned k = 1; k <= 4 && v.size() < 232; ++k)
        v.push_back((uint64_t{1} << lg) + k * (uint64_t{1} << (lg - 2)));
    return v;
  }();
  return ind < tab.size() ? tab[ind] : 0;
}

std::optional<Globals> find_globals(target::Target& t, const target::Module& m, Diagnostics& d) {
  memory::Reader r(t.memory());
  if (auto f = t.module_file(m, true); f && f->has_symtab()) {
    auto s = f->symbol("je_arenas");
    if (s && s->size == kArenaLimit * 8) {
      Globals g;
      g.arenas = m.base + s->value - f->first_load_vaddr();
      g.layout_source = "symbols";
      uint32_t n = 0;
      if (auto nt = f->symbol("narenas_total");
          nt && r.try_u32(m.base + nt->value - f->first_load_vaddr(), n) && n <= kArenaLimit)
        g.narenas = n;
      else
        d.add("symbols", std::nullopt, std::nullopt,
              "jemalloc: narenas_total not in " + f->path() + "; arenas counted");
      if (g.narenas == 0) {
        for (unsigned i = 0; i < kArenaLimit; ++i) {
          uint64_t a;
          if (r.try_u64(g.arenas + 8 * i, a) && a) g.narenas = i + 1;
        }
      }
      return g;
    }
  }
  // Symbol-free: the module's writable mappings and the anonymous one right after (.bss).
  std::vector<memory::Region> regs;
  const auto& rs = t.memory().regions();
  for (size_t i = 0; i < rs.size(); ++i) {
    if (rs[i].path != m.path || !rs[i].write) continue;
    // Adjacent writable mappings (.data, .bss, and the anonymous spill of .bss) form one span:
    // je_arenas may straddle the end of the file-backed part.
    if (!regs.empty() && regs.back().end == rs[i].start)
      regs.back().end = rs[i].end;
    else
      regs.push_back(rs[i]);
    if (i + 1 < rs.size() && rs[i + 1].start == rs[i].end && rs[i + 1].path.empty() && rs[i + 1].write)
      regs.back().end = rs[i + 1].end;
  }
  std::vector<Globals> found;
  for (const auto& reg : regs) {
    for (uint64_t a = reg.start; a + kArenaLimit * 8 <= reg.end; a += 8) {
      uint64_t a0;
      if (!r.try_u64(a, a0) || !a0 || (a0 & 63)) continue;
      if (!plausible_arena(r, a0, 0)) continue;
      // The slot before the array is not part of it; every later non-null slot must hold arena i.
      Globals g;
      g.arenas = a;
      g.layout_source = "search";
      bool ok = true;
      for (unsigned i = 1; i < kArenaLimit && ok; ++i) {
        uint64_t ai;
        if (!r.try_u64(a + 8 * i, ai))
          ok = false;
        else if (ai) {
          ok = plausible_arena(r, ai, i);
          g.narenas = i + 1;
        }
      }
      if (g.narenas == 0) g.narenas = 1;
      if (ok) found.push_back(g);
    }
  }
  if (found.size() != 1) {
    d.add("symbols", std::nullopt, std::nullopt,
          "jemalloc: " + std::to_string(found.size()) + " candidates for je_arenas in " + m.path);
    return std::nullopt;
  }
  return found[0];
}

Model::Model(target::Target& t) : t_(t) {
  const target::Module* m = t.find_module(is_jemalloc_module);
  if (!m) throw Error("jemalloc: no libjemalloc module in the target");
  module_ = m->path;
  auto g = find_globals(t, *m, diags_);
  if (!g) throw Error("jemalloc: the arenas array (je_arenas) was not found in " + m->path);
  g_ = *g;
  memory::Reader r(t.memory());
  for (unsigned i = 0; i < g_.narenas; ++i) {
    uint64_t a;
    if (!r.try_u64(g_.arenas + 8 * i, a)) {
      diags_.add("unreadable", g_.arenas + 8 * i, std::nullopt, "jemalloc: je_arenas slot " + std::to_string(i));
      continue;
    }
    if (a) read_arena(i, a);
  }
  for (const char* k : {"allocated", "active", "metadata", "resident", "mapped", "retained"}) {
    uint64_t sum = 0;
    for (const auto& p : pools_) sum += p.stats.at(k);
    stats_[std::string("stats.") + k] = sum;
  }
  stats_["narenas"] = g_.narenas;
}

void Model::read_arena(unsigned ind, uint64_t a) {
  memory::Reader r(t_.memory());
  auto u64 = [&](uint64_t addr, uint64_t& v) {
    if (r.try_u64(addr, v)) return true;
    diags_.add("unreadable", addr, a, "jemalloc: arena " + std::to_string(ind));
    v = 0;
    return false;
  };
  if (!plausible_arena(r, a, ind)) {
    diags_.add("corrupt", a, a, "jemalloc: je_arenas[" + std::to_string(ind) + "] is not arena " + std::to_string(ind));
    return;
  }
  alloc::Pool p;
  p.index = ind;
  p.address = a;
  p.name = "arena " + std::to_string(ind);
  auto& s = p.stats;
  uint64_t v, w, base;
  u64(a + kArenaNactive, v);
  s["pactive"] = v;
  u64(a + kArenaDirty[0], v), u64(a + kArenaDirty[1], w);
  s["pdirty"] = v + w;
  u64(a + kArenaMuzzy[0], v), u64(a + kArenaMuzzy[1], w);
  s["pmuzzy"] = v + w;
  u64(a + kArenaRetained[0], v), u64(a + kArenaRetained[1], w);
  s["retained"] = (v + w) * kPage;
  u64(a + kArenaBase, base);
  uint64_t b_alloc, b_res, b_map, pac_mapped, internal;
  u64(base + kBaseAllocated, b_alloc), u64(base + kBaseResident, b_res), u64(base + kBaseMapped, b_map);
  u64(a + kArenaPacMapped, pac_mapped), u64(a + kArenaInternal, internal);
  s["base"] = b_alloc;
  s["internal"] = internal;
  s["mapped"] = b_map + pac_mapped;
  s["resident"] = b_res + (s["pactive"] + s["pdirty"]) * kPage;
  s["metadata"] = b_alloc + internal;
  uint64_t small = 0, small_nmalloc = 0, small_ndalloc = 0, curslabs = 0, objects = 0;
  for (unsigned i = 0; i < kNBins; ++i) {
    uint64_t bin = a + kArenaBins + kBinSize * i, cur, nm, nd, sl;
    u64(bin + kBinCurregs, cur), u64(bin + kBinNmalloc, nm), u64(bin + kBinNdalloc, nd), u64(bin + kBinCurslabs, sl);
    small += cur * index2size(i);
    objects += cur;
    small_nmalloc += nm, small_ndalloc += nd, curslabs += sl;
    if (cur) s["bins." + std::to_string(index2size(i)) + ".curregs"] = cur;
  }
  uint64_t large = 0, large_nmalloc = 0, large_ndalloc = 0;
  for (unsigned i = 0; i < kNLarge; ++i) {
    uint64_t nm, nd;
    u64(a + kArenaLstats + 48 * i, nm), u64(a + kArenaLstats + 48 * i + 8, nd);
    if (nd > nm) {
      diags_.add("corrupt", a + kArenaLstats + 48 * i, a, "jemalloc: large class ndalloc > nmalloc");
      continue;
    }
    large += (nm - nd) * index2size(kNBins + i);
    large_nmalloc += nm, large_ndalloc += nd;
    objects += nm - nd;
    if (nm != nd) s["lextents." + std::to_string(index2size(kNBins + i)) + ".curlextents"] = nm - nd;
  }
  s["small.allocated"] = small, s["small.nmalloc"] = small_nmalloc, s["small.ndalloc"] = small_ndalloc;
  s["small.curslabs"] = curslabs;
  s["large.allocated"] = large, s["large.nmalloc"] = large_nmalloc, s["large.ndalloc"] = large_ndalloc;
  s["allocated"] = small + large;
  s["active"] = s["pactive"] * kPage;
  s["dirty"] = s["pdirty"] * kPage;
  s["muzzy"] = s["pmuzzy"] * kPage;

  // Thread caches bound to this arena: the tcache_ql ring of tcache_slow_t.
  uint64_t tcache_bytes = 0, first = 0;
  u64(a + kArenaTcacheQl, first);
  uint64_t slow = first;
  for (unsigned hop = 0; slow && hop < 65536; ++hop) {
    uint64_t tc;
    if (!u64(slow + kSlowTcache, tc)) break;
    alloc::ThreadCache c;
    c.address = tc;
    uint64_t tsd = tc - kTsdTcache, best = ~uint64_t{0};
    for (const auto& th : t_.threads())
      if (th.fs_base > tsd && th.fs_base - tsd < best && th.fs_base - tsd < (1u << 16)) {
        best = th.fs_base - tsd;
        c.lwp = th.lwp;
      }
    for (unsigned i = 0; i < kTcacheBinsMax; ++i) {
      uint8_t cb[kCacheBinSize];
      if (!r.try_copy(tc + kTcacheBins + kCacheBinSize * i, cb, sizeof cb)) break;
      uint64_t head;
      uint16_t empty;
      std::memcpy(&head, cb, 8);
      std::memcpy(&empty, cb + 20, 2);
      if (!head) break;  // bins past nhbins were never initialised
      uint16_t n = static_cast<uint16_t>(empty - static_cast<uint16_t>(head)) / 8;
      if (n) {
        c.bins.push_back({index2size(i), n});
        c.bytes += n * index2size(i);
      }
    }
    tcache_bytes += c.bytes;
    caches_.push_back(std::move(c));
    if (!u64(slow, slow) || slow == first) break;
  }
  s["tcache_bytes"] = tcache_bytes;

  p.in_use = s["allocated"] >= tcache_bytes ? s["allocated"] - tcache_bytes : 0;
  p.cached = tcache_bytes;
  p.free = (s["active"] >= s["allocated"] ? s["active"] - s["allocated"] : 0) + s["dirty"];
  p.released = s["muzzy"] + s["retained"];
  p.metadata = s["metadata"];
  p.reclaimable = s["dirty"] + s["muzzy"];  // arena.<i>.purge returns dirty and muzzy pages
  p.allocations = objects;                  // regions and large extents handed out (tcache contents included)
  pools_.push_back(std::move(p));
}

}  // namespace heapwalk::jemalloc
