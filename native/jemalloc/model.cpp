#include "jemalloc/model.h"

#include <algorithm>
#include <cstring>
#include <map>

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
  const target::Module* m = alloc::allocator_module(t, alloc::Kind::Jemalloc);
  if (!m) throw Error("jemalloc: no libjemalloc module in the target (nor one linked statically)");
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
  find_rtree(*m);
}

namespace {

constexpr uint64_t kRtreeRoot = 120, kRtreeFanout = uint64_t{1} << 18, kEdataSize = 128;

uint64_t root_index(uint64_t addr) { return (addr >> 30) & (kRtreeFanout - 1); }
uint64_t leaf_index(uint64_t addr) { return (addr >> 12) & (kRtreeFanout - 1); }
// rtree_leaf_elm_bits_decode (include/jemalloc/internal/rtree.h, 5.3.0): sign-extend from bit
// 47, clear the metadata bits below EDATA_ALIGNMENT.
uint64_t leaf_edata(uint64_t bits) {
  return static_cast<uint64_t>(static_cast<int64_t>(bits << 16) >> 16) & ~uint64_t{127};
}

}  // namespace

void Model::find_rtree(const target::Module& m) {
  memory::Reader r(t_.memory());
  if (auto f = t_.module_file(m, true); f && f->has_symtab())
    if (auto s = f->symbol("je_arena_emap_global"); s && s->size == kRtreeRoot + 8 * kRtreeFanout) {
      rtree_ = m.base + s->value - f->first_load_vaddr();
      return;
    }
  // Symbol-free: a slab some bin of some arena is using (slabcur) is mapped by the tree; the
  // root is the array in the module's data whose slot for the slab's address leads to a leaf
  // whose element for it names that slab's edata_t.
  uint64_t edata = 0, eaddr = 0;
  for (const auto& p : pools_) {
    for (unsigned i = 0; i < kNBins && !edata; ++i) {
      uint64_t e, a;
      if (r.try_u64(p.address + kArenaBins + kBinSize * i + 192, e) && e && r.try_u64(e + 8, a) && a) {
        edata = e;
        eaddr = a;
      }
    }
    if (edata) break;
  }
  if (!edata) {
    diags_.add("incomplete", std::nullopt, std::nullopt, "jemalloc: no slab to find the radix tree by");
    return;
  }
  std::vector<uint64_t> found;
  for (const auto& reg : t_.memory().regions()) {
    if (reg.path != m.path || !reg.write) continue;
    uint64_t end = reg.end;
    for (const auto& n : t_.memory().regions())
      if (n.start == end && n.path.empty() && n.write) end = n.end;
    for (uint64_t a = reg.start; a + 8 <= end; a += 8) {
      uint64_t leaf, bits;
      if (!r.try_u64(a, leaf) || !leaf || (leaf & 7)) continue;
      if (a < 8 * root_index(eaddr) + kRtreeRoot + reg.start) continue;
      if (!r.try_u64(leaf + 8 * leaf_index(eaddr), bits) || leaf_edata(bits) != edata) continue;
      found.push_back(a - 8 * root_index(eaddr) - kRtreeRoot);
    }
  }
  if (found.size() != 1) {
    diags_.add("incomplete", std::nullopt, std::nullopt,
               "jemalloc: " + std::to_string(found.size()) + " candidates for the radix tree root");
    return;
  }
  rtree_ = found[0];
}

void Model::walk(const alloc::AllocationVisitor& visit) {
  if (!rtree_) return;
  memory::Reader r(t_.memory(), 4 << 20);
  std::vector<uint64_t> root(kRtreeFanout), leaf(kRtreeFanout);
  if (t_.memory().read(rtree_ + kRtreeRoot, root.data(), root.size() * 8) != root.size() * 8) {
    diags_.add("unreadable", rtree_ + kRtreeRoot, std::nullopt, "jemalloc: the radix tree root");
    return;
  }
  // Leaves are separate 2 MiB allocations: one named twice, or overlapping another, is corrupt
  // (and would make the walk read the same memory over and over).
  std::vector<uint64_t> sorted;
  for (uint64_t x : root)
    if (x) sorted.push_back(x);
  std::sort(sorted.begin(), sorted.end());
  std::unordered_set<uint64_t> overlapping;
  for (size_t k = 1; k < sorted.size(); ++k)
    if (sorted[k] - sorted[k - 1] < kRtreeFanout * 8) overlapping.insert(sorted[k]);
  // The tcache contents, sorted: the walk is in address order, so one cursor marks them.
  std::vector<uint64_t> cached(cached_.begin(), cached_.end());
  std::sort(cached.begin(), cached.end());
  size_t ck = 0;
  auto is_cached = [&](uint64_t a) {
    while (ck < cached.size() && cached[ck] < a) ++ck;
    return ck < cached.size() && cached[ck] == a;
  };
  const auto& regions = t_.memory().regions();
  std::unordered_set<uint64_t> seen;
  std::vector<int> pool_of(kArenaLimit + 1, -1);
  for (size_t i = 0; i < pools_.size(); ++i)
    if (pools_[i].index <= kArenaLimit) pool_of[pools_[i].index] = static_cast<int>(i);
  uint64_t next = 0, last_e = 0;  // extents do not overlap: the first byte after the last one
  for (uint64_t ri = 0; ri < kRtreeFanout; ++ri) {
    if (!root[ri]) continue;
    if (overlapping.count(root[ri])) {
      diags_.add("layout", root[ri], std::nullopt,
                 "jemalloc: radix tree leaf " + hex(root[ri]) + " overlaps another leaf; not read");
      continue;
    }
    if (t_.memory().read(root[ri], leaf.data(), leaf.size() * 8) != leaf.size() * 8) {
      diags_.add("unreadable", root[ri], std::nullopt, "jemalloc: a radix tree leaf");
      continue;
    }
    for (uint64_t li = 0; li < kRtreeFanout; ++li) {
      if (!leaf[li]) continue;
      uint64_t e = leaf_edata(leaf[li]);
      if (!e || e == last_e) continue;  // the pages of one extent name the same edata_t
      last_e = e;
      if (!seen.insert(e).second) continue;
      uint8_t ed[kEdataSize];
      if (!r.try_copy(e, ed, sizeof ed)) {
        diags_.add("unreadable", e, std::nullopt, "jemalloc: an edata_t the radix tree names");
        continue;
      }
      uint64_t bits, addr, size;
      std::memcpy(&bits, ed, 8);
      std::memcpy(&addr, ed + 8, 8);
      std::memcpy(&size, ed + 16, 8);
      size &= ~(kPage - 1);
      unsigned state = (bits >> 17) & 7, szind = (bits >> 20) & 0xff, arena = bits & 0xfff;
      bool slab = (bits >> 12) & 1;
      uint64_t page = (ri << 30) | (li << 12);
      if ((addr & ~(kPage - 1)) != page) {
        diags_.add("layout", e, std::nullopt, "jemalloc: an edata_t's address is not the page that maps it first");
        continue;
      }
      if (page < next) {
        diags_.add("layout", e, std::nullopt,
                   "jemalloc: the extent at " + hex(addr) + " overlaps the one before it; skipped");
        continue;
      }
      // A large extent's address is randomised within its first page (cache-oblivious large
      // allocations, edata_addr_randomize; its size has the page of padding): its pages start
      // at `page`.
      if (size == 0 || page + size < page || (page + size) >> 48) {
        diags_.add("layout", e, std::nullopt,
                   "jemalloc: the extent at " + hex(addr) + " has an impossible size " + hex(size) + "; skipped");
        continue;
      }
      // emap registers an extent's last page too (emap_register_boundary): it must name the
      // same edata_t, or the size is smashed.
      uint64_t lastp = page + size - kPage, tail = 0;
      if (root_index(lastp) == ri)
        tail = leaf[leaf_index(lastp)];
      else if (root_index(lastp) < kRtreeFanout && root[root_index(lastp)])
        (void)r.try_u64(root[root_index(lastp)] + 8 * leaf_index(lastp), tail);
      if (leaf_edata(tail) != e) {
        diags_.add("layout", e, std::nullopt,
                   "jemalloc: the extent at " + hex(addr) + " of " + std::to_string(size) +
                       " bytes: the radix tree does not map its last page to it; skipped");
        continue;
      }
      if (state == 0 && !memory::mapped(regions, page, size)) {
        diags_.add("outside_heap", e, std::nullopt,
                   "jemalloc: the active extent at " + hex(addr) + " (" + std::to_string(size) +
                       " bytes) lies outside the target's memory; skipped");
        continue;
      }
      next = page + size;
      int pool = arena <= kArenaLimit ? pool_of[arena] : -1;
      if (state == 0 && slab) {
        uint64_t reg = index2size(szind);
        if (szind >= kNBins || !reg || size / reg > 512) {
          diags_.add("layout", e, std::nullopt, "jemalloc: a slab's size class is not a small class");
          continue;
        }
        uint64_t nregs = size / reg;
        for (uint64_t k = 0; k < nregs; ++k) {
          uint64_t word;
          std::memcpy(&word, ed + 64 + 8 * (k / 64), 8);
          alloc::Allocation x{addr + k * reg, reg, alloc::State::InUse, pool};
          if ((word >> (k % 64)) & 1)
            x.state = alloc::State::Free;  // bitmap_get: a set bit is a free region
          else if (is_cached(x.address))
            x.state = alloc::State::Cached;
          if (!visit(x)) return;
        }
      } else if (state == 0) {
        alloc::Allocation x{addr, index2size(szind), alloc::State::InUse, pool};
        if (is_cached(addr)) x.state = alloc::State::Cached;
        if (!visit(x)) return;
      } else if (state <= 3) {
        alloc::Allocation x{addr, size, state == 1 ? alloc::State::Free : alloc::State::Released, pool};
        if (!visit(x)) return;
      }
    }
  }
}

std::optional<alloc::Allocation> Model::find(uint64_t address) {
  // One lookup, as jemalloc's emap does: the radix tree's element for the address's page names
  // the extent; the same checks as the walk.
  if (!rtree_ || address >> 48) return std::nullopt;
  memory::Reader r(t_.memory());
  uint64_t page = address & ~(kPage - 1), leaf = 0, elm = 0;
  if (!r.try_u64(rtree_ + kRtreeRoot + 8 * root_index(page), leaf) || !leaf) return std::nullopt;
  // A large extent's interior pages are not in the tree (emap_register_boundary: its first and
  // last only): the nearest mapped page at or before the address's, within its leaf, names it
  // (an element naming an extent that does not hold the address is stale: look further back).
  uint8_t ed[kEdataSize];
  uint64_t bits = 0, addr = 0, size = 0, first = 0;
  bool found = false;
  for (uint64_t j = leaf_index(page) + 1; j-- > 0 && !found;) {
    if (!r.try_u64(leaf + 8 * j, elm)) return std::nullopt;
    uint64_t e = leaf_edata(elm);
    if (!e) continue;
    if (!r.try_copy(e, ed, sizeof ed)) return std::nullopt;
    std::memcpy(&bits, ed, 8);
    std::memcpy(&addr, ed + 8, 8);
    std::memcpy(&size, ed + 16, 8);
    size &= ~(kPage - 1);
    first = addr & ~(kPage - 1);
    if (!size || first + size < first) return std::nullopt;
    if (page >= first && page - first < size)
      found = true;
    else if (first + size <= page)
      return std::nullopt;  // the extent before the address ends before it
  }
  if (!found) return std::nullopt;
  unsigned state = (bits >> 17) & 7, szind = (bits >> 20) & 0xff, arena = bits & 0xfff;
  bool slab = (bits >> 12) & 1;
  int pool = -1;
  for (size_t i = 0; i < pools_.size(); ++i)
    if (pools_[i].index == arena) pool = static_cast<int>(i);
  if (state == 0 && slab) {
    uint64_t reg = index2size(szind);
    if (szind >= kNBins || !reg || size / reg > 512 || address < addr) return std::nullopt;
    uint64_t k = (address - addr) / reg;
    if (k >= size / reg) return std::nullopt;  // the slab's tail
    uint64_t word;
    std::memcpy(&word, ed + 64 + 8 * (k / 64), 8);
    alloc::Allocation x{addr + k * reg, reg, alloc::State::InUse, pool};
    if ((word >> (k % 64)) & 1)
      x.state = alloc::State::Free;
    else if (cached_.count(x.address))
      x.state = alloc::State::Cached;
    return x;
  }
  if (state == 0) {
    uint64_t usize = index2size(szind);
    if (address < addr || address - addr >= usize) return std::nullopt;  // the random offset or padding
    alloc::Allocation x{addr, usize, alloc::State::InUse, pool};
    if (cached_.count(addr)) x.state = alloc::State::Cached;
    return x;
  }
  if (state <= 3) return alloc::Allocation{addr, size, state == 1 ? alloc::State::Free : alloc::State::Released, pool};
  return std::nullopt;
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
    diags_.add("layout", a, a, "jemalloc: je_arenas[" + std::to_string(ind) + "] is not arena " + std::to_string(ind));
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
      diags_.add("layout", a + kArenaLstats + 48 * i, a, "jemalloc: large class ndalloc > nmalloc");
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
  std::unordered_set<uint64_t> visited;
  for (unsigned hop = 0; slow && hop < 65536; ++hop) {
    if (!visited.insert(slow).second) {
      diags_.add("cycle", slow, a, "jemalloc: arena " + std::to_string(ind) + "'s tcache list loops");
      break;
    }
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
      stack_heads_.push_back(head);
      uint16_t n = static_cast<uint16_t>(empty - static_cast<uint16_t>(head)) / 8;
      if (n) {
        std::vector<uint64_t> objs(n);
        if (r.try_copy(head, objs.data(), objs.size() * 8)) {
          cached_.insert(objs.begin(), objs.end());
        } else {
          diags_.add("unreadable", head, a,
                     "jemalloc: tcache " + hex(tc) + " bin " + std::to_string(i) + ": its stack of " +
                         std::to_string(n) + " cached pointers");
          continue;
        }
      }
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
