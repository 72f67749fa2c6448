#include "analysis/alloc_retention.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <unordered_set>

#include "jemalloc/model.h"
#include "tcmalloc/model.h"
#include "util/errors.h"

namespace heapwalk::analysis {

namespace {

std::string hs(uint64_t n) {
  char buf[64];
  if (n < 1024) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", n);
    return buf;
  }
  double v = static_cast<double>(n);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  for (int i = 0; i < 4; ++i) {
    v /= 1024.0;
    if (v < 1024.0 || i == 3) {
      std::snprintf(buf, sizeof buf, "%.1f %s", v, units[i]);
      break;
    }
  }
  return buf;
}

uint64_t stat(const std::map<std::string, uint64_t>& s, const std::string& k) {
  auto it = s.find(k);
  return it == s.end() ? 0 : it->second;
}

void totals(AllocRetention& a) {
  for (const auto& p : a.pools) {
    a.in_use += p.in_use;
    a.cached += p.cached;
    a.free += p.free;
    a.released += p.released;
    a.metadata += p.metadata;
    a.reclaimable += p.reclaimable;
  }
}

/// Adjacent ranges of the same group become one (the mappings reconciliation's intervals).
void add_range(std::vector<OwnedRange>& v, uint64_t start, uint64_t end, const char* label, const char* kind,
               bool committed) {
  if (end <= start) return;
  if (!v.empty() && v.back().end == start && v.back().label == label) {
    v.back().end = end;
    return;
  }
  v.push_back({start, end, label, kind, committed});
}

void sort_ranges(std::vector<OwnedRange>& v) {
  std::sort(v.begin(), v.end(), [](const OwnedRange& a, const OwnedRange& b) { return a.start < b.start; });
  std::vector<OwnedRange> out;
  for (auto& r : v) {
    if (!out.empty() && r.start < out.back().end) {  // overlap: a smashed structure; keep the first
      if (r.end <= out.back().end) continue;
      r.start = out.back().end;
    }
    if (!out.empty() && out.back().end == r.start && out.back().label == r.label)
      out.back().end = r.end;
    else
      out.push_back(r);
  }
  v.swap(out);
}

bool has_jvm(const target::Target& t) {
  return t.find_module([](const std::string& b) { return b == "libjvm.so"; }) != nullptr;
}

NmtSplit nmt_split(target::Target& t, alloc::Model& m) {
  NmtSplit n;
  memory::Reader r(t.memory());
  m.walk([&](const alloc::Allocation& a) {
    if (a.state != alloc::State::InUse) return true;
    uint8_t h[16];
    bool ok = false;
    uint64_t user = 0;
    if (a.size >= 18 && r.try_copy(a.address, h, sizeof h)) {
      uint16_t mark;
      std::memcpy(&user, h, 8);
      std::memcpy(&mark, h + 14, 2);
      if (mark == 0xE99E && h[13] == 0 && user <= a.size && a.size - user >= 18) {
        uint8_t f[2];
        ok = r.try_copy(a.address + 16 + user, f, 2) && f[0] == 0xE8 && f[1] == 0x8E;
      }
    }
    if (ok) {
      ++n.tracked_count;
      n.tracked_bytes += user;
    } else {
      ++n.untracked_count;
      n.untracked_bytes += a.size;
    }
    return true;
  });
  uint64_t all = n.tracked_count + n.untracked_count;
  n.canary = n.tracked_count >= 100 && n.tracked_count * 10 >= all;
  return n;
}

// ---- jemalloc 5.3.0 ----
// These offsets are the ones native/jemalloc/model.cpp reads (docs/jemalloc-layouts.md), from
// a -g build of 5.3.0 with Debian 12's configure flags; they must change together.
constexpr uint64_t kJePage = 4096;
constexpr uint64_t kArenaBase = 78936;        // arena_t.base
constexpr uint64_t kArenaDecayDirty = 69440;  // arena_t.pa_shard.pac.decay_dirty.time_ms
constexpr uint64_t kArenaDecayMuzzy = 71224;  // arena_t.pa_shard.pac.decay_muzzy.time_ms
constexpr uint64_t kBaseBlocks = 160;         // base_t.blocks (include/jemalloc/internal/base.h)
constexpr uint64_t kRtreeRoot = 120, kRtreeFanout = uint64_t{1} << 18;
constexpr unsigned kMallctlArenasAll = 4096;  // MALLCTL_ARENAS_ALL
constexpr unsigned kMaxLeaves = 8192;         // 1 GiB each

uint64_t leaf_edata(uint64_t bits) {
  // rtree_leaf_elm_bits_decode (include/jemalloc/internal/rtree.h, 5.3.0)
  return static_cast<uint64_t>(static_cast<int64_t>(bits << 16) >> 16) & ~uint64_t{127};
}

/// Every extent the radix tree maps (edata_t: e_bits, e_addr, e_size_esn; state bits 17..19:
/// extent_state_active 0, dirty 1, muzzy 2, retained 3) as owned ranges.
void je_extents(target::Target& t, uint64_t rtree, std::vector<OwnedRange>& out, Diagnostics& d) {
  if (!rtree) {
    d.note("jemalloc: the radix tree was not found; its extents count as other anonymous memory");
    return;
  }
  memory::Reader r(t.memory(), 1 << 20);
  std::vector<uint64_t> root(kRtreeFanout), leaf(kRtreeFanout);
  if (t.memory().read(rtree + kRtreeRoot, root.data(), root.size() * 8) != root.size() * 8) {
    d.add("unreadable", rtree + kRtreeRoot, std::nullopt, "jemalloc: the radix tree root");
    return;
  }
  std::unordered_set<uint64_t> seen;
  unsigned leaves = 0;
  for (uint64_t ri = 0; ri < kRtreeFanout; ++ri) {
    if (!root[ri]) continue;
    if (++leaves > kMaxLeaves) {  // 8 TiB of address space: a smashed root
      d.add("layout", rtree + kRtreeRoot, std::nullopt,
            "jemalloc: more than " + std::to_string(kMaxLeaves) + " radix tree leaves; the rest not attributed");
      break;
    }
    if (t.memory().read(root[ri], leaf.data(), leaf.size() * 8) != leaf.size() * 8) {
      d.add("unreadable", root[ri], std::nullopt, "jemalloc: a radix tree leaf");
      continue;
    }
    uint64_t last = 0;
    for (uint64_t li = 0; li < kRtreeFanout; ++li) {
      if (!leaf[li]) continue;
      uint64_t e = leaf_edata(leaf[li]);
      if (!e || e == last) continue;
      last = e;
      if (!seen.insert(e).second) continue;
      uint64_t ed[3];
      if (!r.try_copy(e, ed, sizeof ed)) continue;  // the model reports unreadable edata
      uint64_t addr = ed[1] & ~(kJePage - 1), size = ed[2] & ~(kJePage - 1);
      unsigned state = (ed[0] >> 17) & 7;
      if (!size || addr + size < addr || state > 3) continue;
      // Large extents are randomized within their first page (cache-oblivious): e_addr is the
      // extent's base rounded down.
      if (state == 3)
        out.push_back({addr, addr + size, "jemalloc retained (address space only)", "jemalloc", false});
      else
        out.push_back({addr, addr + size, "jemalloc extents", "jemalloc", true});
    }
  }
}

/// Each arena's base blocks (base_block_t: size, next), the arenas' metadata mappings.
void je_bases(target::Target& t, const std::vector<alloc::Pool>& pools, std::vector<OwnedRange>& out, Diagnostics& d) {
  memory::Reader r(t.memory());
  for (const auto& p : pools) {
    uint64_t base = 0, block = 0;
    if (!r.try_u64(p.address + kArenaBase, base) || !r.try_u64(base + kBaseBlocks, block)) continue;
    std::unordered_set<uint64_t> seen;
    while (block && seen.size() < 1u << 20) {
      if (!seen.insert(block).second) {
        d.add("cycle", block, p.address, "jemalloc: arena " + std::to_string(p.index) + "'s base blocks loop");
        break;
      }
      uint64_t size = 0, next = 0;
      if (!r.try_u64(block, size) || !r.try_u64(block + 8, next)) {
        d.add("unreadable", block, p.address, "jemalloc: a base block");
        break;
      }
      if (size % kJePage || !size || block + size < block) {
        d.add("layout", block, p.address, "jemalloc: a base block's size is not a page multiple");
        break;
      }
      out.push_back({block, block + size, "jemalloc metadata (base)", "jemalloc", true});
      block = next;
    }
  }
}

struct JeOptions {
  std::optional<int64_t> dirty_decay_ms, muzzy_decay_ms;
  std::optional<bool> background_thread, tcache, retain;
  std::optional<uint64_t> tcache_max, narenas, n_background_threads;
};

/// jemalloc's options, when the library file has its .symtab (a -g build); Debian's stripped
/// library hides them.
JeOptions je_options(target::Target& t, const std::string& module) {
  JeOptions o;
  const target::Module* m = nullptr;
  for (const auto& x : t.modules())
    if (x.path == module) m = &x;
  if (!m) return o;
  auto f = t.module_file(*m, true);
  if (!f || !f->has_symtab()) return o;
  memory::Reader r(t.memory());
  auto addr = [&](const char* name, uint64_t size) -> std::optional<uint64_t> {
    auto s = f->symbol(name);
    if (!s || s->size != size) return std::nullopt;
    return m->base + s->value - f->first_load_vaddr();
  };
  auto i64 = [&](const char* name) -> std::optional<int64_t> {
    uint64_t v;
    if (auto a = addr(name, 8); a && r.try_u64(*a, v)) return static_cast<int64_t>(v);
    return std::nullopt;
  };
  auto b1 = [&](const char* name) -> std::optional<bool> {
    uint8_t v;
    if (auto a = addr(name, 1); a && r.try_copy(*a, &v, 1)) return v != 0;
    return std::nullopt;
  };
  o.dirty_decay_ms = i64("je_opt_dirty_decay_ms");
  o.muzzy_decay_ms = i64("je_opt_muzzy_decay_ms");
  o.background_thread = b1("je_background_thread_enabled_state");
  if (!o.background_thread) o.background_thread = b1("je_opt_background_thread");
  o.tcache = b1("je_opt_tcache");
  o.retain = b1("je_opt_retain");
  if (auto v = i64("je_opt_tcache_max")) o.tcache_max = static_cast<uint64_t>(*v);
  if (auto v = i64("je_n_background_threads")) o.n_background_threads = static_cast<uint64_t>(*v);
  uint32_t n;
  if (auto a = addr("je_opt_narenas", 4); a && r.try_u32(*a, n)) o.narenas = n;
  return o;
}

std::string decay_text(int64_t ms) { return ms < 0 ? "-1 (never)" : std::to_string(ms) + " ms"; }

void jemalloc_part(target::Target& t, AllocRetention& a) {
  jemalloc::Model m(t);
  a.version = m.version();
  a.module = m.module();
  a.layout_source = m.layout_source();
  a.stats = m.stats();
  a.pools = m.pools();
  a.caches = m.thread_caches();
  a.notes.append(m.diagnostics());
  totals(a);
  memory::Reader r(t.memory());
  uint64_t dirty = 0, muzzy = 0, tcache = 0;
  for (const auto& p : a.pools) {
    dirty += stat(p.stats, "dirty");
    muzzy += stat(p.stats, "muzzy");
    tcache += stat(p.stats, "tcache_bytes");
    uint64_t dd = 0, md = 0;
    if (r.try_u64(p.address + kArenaDecayDirty, dd) && r.try_u64(p.address + kArenaDecayMuzzy, md))
      a.decay_ms[p.index] = {static_cast<int64_t>(dd), static_cast<int64_t>(md)};
  }
  auto& f = a.figures;
  for (const char* k : {"allocated", "active", "metadata", "resident", "mapped", "retained"})
    f[k] = static_cast<int64_t>(stat(a.stats, std::string("stats.") + k));
  f["dirty"] = static_cast<int64_t>(dirty);
  f["muzzy"] = static_cast<int64_t>(muzzy);
  f["tcache"] = static_cast<int64_t>(tcache);
  f["purge"] = static_cast<int64_t>(a.reclaimable);
  f["narenas"] = static_cast<int64_t>(stat(a.stats, "narenas"));
  f["arenas"] = static_cast<int64_t>(a.pools.size());
  // The decay times in force: arena 0's (every auto arena takes opt.*_decay_ms at creation).
  std::optional<int64_t> dirty_ms, muzzy_ms;
  if (!a.decay_ms.empty()) {
    dirty_ms = a.decay_ms.begin()->second.first;
    muzzy_ms = a.decay_ms.begin()->second.second;
    f["dirty_decay_ms"] = *dirty_ms;
    f["muzzy_decay_ms"] = *muzzy_ms;
  }
  JeOptions o = je_options(t, a.module);
  if (o.dirty_decay_ms) f["opt.dirty_decay_ms"] = *o.dirty_decay_ms;
  if (o.muzzy_decay_ms) f["opt.muzzy_decay_ms"] = *o.muzzy_decay_ms;
  if (o.background_thread) f["background_thread"] = *o.background_thread ? 1 : 0;
  if (o.tcache) f["opt.tcache"] = *o.tcache ? 1 : 0;
  if (o.retain) f["opt.retain"] = *o.retain ? 1 : 0;
  if (o.tcache_max) f["opt.tcache_max"] = static_cast<int64_t>(*o.tcache_max);
  if (o.narenas) f["opt.narenas"] = static_cast<int64_t>(*o.narenas);

  // Ranges for the mappings.
  je_extents(t, m.rtree(), a.ranges, a.notes);
  je_bases(t, a.pools, a.ranges, a.notes);
  sort_ranges(a.ranges);
  if (has_jvm(t)) a.nmt = nmt_split(t, m);

  // Arenas by what they keep.
  std::vector<const alloc::Pool*> by_dirty;
  for (const auto& p : a.pools) by_dirty.push_back(&p);
  std::sort(by_dirty.begin(), by_dirty.end(), [](const alloc::Pool* x, const alloc::Pool* y) {
    uint64_t dx = stat(x->stats, "dirty") + stat(x->stats, "muzzy"),
             dy = stat(y->stats, "dirty") + stat(y->stats, "muzzy");
    return dx != dy ? dx > dy : x->index < y->index;
  });
  auto where = [&](const char* key) {
    std::vector<const alloc::Pool*> v = by_dirty;
    std::stable_sort(v.begin(), v.end(), [&](const alloc::Pool* x, const alloc::Pool* y) {
      return stat(x->stats, key) > stat(y->stats, key);
    });
    std::string s;
    for (size_t i = 0; i < v.size() && i < 3; ++i) {
      if (!stat(v[i]->stats, key)) break;
      s += (s.empty() ? "arena " : ", ") + std::to_string(v[i]->index) + " " + hs(stat(v[i]->stats, key));
    }
    return s;
  };
  const std::string purge_call = "mallctl(\"arena." + std::to_string(kMallctlArenasAll) +
                                 ".purge\", NULL, NULL, NULL, 0) (every arena; gdb: call (int) mallctl(\"arena." +
                                 std::to_string(kMallctlArenasAll) + ".purge\", 0, 0, 0, 0))";
  bool bg_on = o.background_thread.value_or(false);
  std::string bg_text = o.background_thread ? (bg_on ? "background threads on" : "background threads off")
                                            : "background threads unknown (the library has no symbols)";
  if (dirty) {
    AllocCause c;
    c.cause = "jemalloc-dirty";
    c.kind = "dirty pages";
    c.bytes = dirty;
    c.where = where("dirty");
    std::string action;
    const std::string idle =
        " (without it decay runs only when the arena allocates or frees: an idle process keeps its dirty pages)";
    if (dirty_ms && *dirty_ms < 0)
      action =
          "MALLOC_CONF=dirty_decay_ms:10000 (jemalloc's default; the process runs with dirty_decay_ms:-1, "
          "which never purges)" +
          std::string(bg_on ? "" : " and background_thread:true" + idle);
    else if (!bg_on)
      action = "MALLOC_CONF=background_thread:true" + idle + " and a shorter dirty_decay_ms (e.g. 1000; now " +
               (dirty_ms ? decay_text(*dirty_ms) : std::string("unknown")) + ")";
    else
      action = "MALLOC_CONF=dirty_decay_ms:1000 (a shorter decay; now " +
               (dirty_ms ? decay_text(*dirty_ms) : std::string("unknown")) + ")";
    action += "; now: " + purge_call + " returns " + hs(dirty + muzzy);
    c.action = action;
    c.evidence = hs(dirty) + " of dirty pages (freed, still resident) in " + std::to_string(a.pools.size()) +
                 " arenas (stats.arenas.<i>.pdirty), dirty_decay_ms " +
                 (dirty_ms ? decay_text(*dirty_ms) : std::string("unknown")) + ", " + bg_text;
    c.summary = "jemalloc keeps " + hs(dirty) + " of dirty pages not yet decayed: arena.<i>.purge would return " +
                hs(dirty + muzzy) + " now";
    a.causes.push_back(c);
  }
  if (muzzy) {
    AllocCause c;
    c.cause = "jemalloc-muzzy";
    c.kind = "muzzy pages";
    c.bytes = muzzy;
    c.where = where("muzzy");
    c.action = "MALLOC_CONF=muzzy_decay_ms:0 (jemalloc 5.3's default: purge muzzy pages at once; now " +
               (muzzy_ms ? decay_text(*muzzy_ms) : std::string("unknown")) + "); now: " + purge_call;
    c.evidence = hs(muzzy) +
                 " of muzzy pages (MADV_FREE'd: resident until the kernel needs the memory; "
                 "stats.arenas.<i>.pmuzzy)";
    c.summary = "jemalloc keeps " + hs(muzzy) + " of muzzy pages (lazily purged, still counted in RSS)";
    a.causes.push_back(c);
  }
  uint64_t retained = stat(a.stats, "stats.retained");
  if (retained) {
    AllocCause c;
    c.cause = "jemalloc-retained";
    c.kind = "retained address space";
    c.bytes = retained;
    c.where = where("retained");
    c.virtual_only = true;
    c.action =
        "nothing to give back: it is address space, not memory (VSZ, not RSS); MALLOC_CONF=retain:false "
        "unmaps it instead (more mmap/munmap calls)";
    c.evidence = hs(retained) + " retained (stats.retained; opt.retain" +
                 (o.retain ? std::string(*o.retain ? " true" : " false") : std::string("")) +
                 "): purged extents jemalloc keeps mapped for reuse";
    c.summary = "jemalloc retains " + hs(retained) + " of virtual address space it has already purged";
    a.causes.push_back(c);
  }
  if (tcache) {
    AllocCause c;
    c.cause = "jemalloc-tcache";
    c.kind = "thread caches";
    c.bytes = tcache;
    std::vector<const alloc::ThreadCache*> tc;
    for (const auto& x : a.caches) tc.push_back(&x);
    std::sort(tc.begin(), tc.end(),
              [](const alloc::ThreadCache* x, const alloc::ThreadCache* y) { return x->bytes > y->bytes; });
    for (size_t i = 0; i < tc.size() && i < 3; ++i)
      c.where += (i ? ", " : "lwp ") + std::to_string(tc[i]->lwp) + " " + hs(tc[i]->bytes);
    c.action =
        "MALLOC_CONF=tcache_max:4096 (smaller objects only; now " +
        (o.tcache_max ? hs(*o.tcache_max) : std::string("32 KiB by default")) +
        ") or tcache:false; a thread can return its own with mallctl(\"thread.tcache.flush\", NULL, NULL, NULL, 0)";
    c.evidence = std::to_string(a.caches.size()) + " thread caches hold " + hs(tcache) +
                 " of freed objects (stats.arenas.<i>.tcache_bytes)";
    c.summary = "jemalloc's thread caches hoard " + hs(tcache) + " of freed objects";
    a.causes.push_back(c);
  }
  // Many arenas: what every arena but the one keeping most keeps (one arena would share it).
  // From 8 arenas, as glibc's arena-count cause (jemalloc's default is 4 per CPU: a program's
  // threads spread over them).
  if (a.pools.size() >= 8) {
    uint64_t kept = 0;
    for (size_t i = 1; i < by_dirty.size(); ++i)
      kept += stat(by_dirty[i]->stats, "dirty") + stat(by_dirty[i]->stats, "muzzy");
    if (kept) {
      AllocCause c;
      c.cause = "jemalloc-arena-count";
      c.kind = "arena count";
      c.bytes = kept;
      c.where = std::to_string(a.pools.size()) + " arenas";
      c.action = "MALLOC_CONF=narenas:2 (or 4; now " + std::to_string(stat(a.stats, "narenas")) +
                 (o.narenas ? " of opt.narenas " + std::to_string(*o.narenas) : std::string("")) +
                 "; jemalloc's default is 4 per CPU): each arena keeps its own dirty pages";
      c.evidence = std::to_string(a.pools.size()) + " arenas; the " + std::to_string(a.pools.size() - 1) +
                   " arenas other than the one keeping most keep " + hs(kept) + " dirty and muzzy";
      c.summary = std::to_string(a.pools.size()) + " jemalloc arenas keep " + hs(kept) +
                  " of dirty pages apart from the largest: one per group of threads";
      a.causes.push_back(c);
    }
  }
  a.in_use_summary.cause = "in-use";
  a.in_use_summary.kind = "in use";
  a.in_use_summary.bytes = stat(a.stats, "stats.allocated");
  a.in_use_summary.action =
      "nothing large retained to give back; see `heapwalk classify` and `heapwalk leaks` for what the memory in use "
      "holds";
  a.in_use_summary.evidence = "jemalloc: " + hs(stat(a.stats, "stats.allocated")) + " allocated of " +
                              hs(stat(a.stats, "stats.active")) + " active; " + hs(dirty) + " dirty, " + hs(muzzy) +
                              " muzzy, " + hs(tcache) + " in thread caches; arena.<i>.purge would return " +
                              hs(a.reclaimable);
  a.in_use_summary.summary = "jemalloc: " + hs(stat(a.stats, "stats.allocated")) + " allocated, " + hs(dirty) +
                             " dirty; arena.<i>.purge would return " + hs(a.reclaimable);
}

// ---- tcmalloc 2.10 ----

void tcmalloc_part(target::Target& t, const target::Module& mod, AllocRetention& a) {
  tcmalloc::Model m(t, mod);
  a.version = m.version();
  a.module = m.module_path();
  a.layout_source = m.layout_source();
  a.stats = m.stats();
  a.pools = m.pools();
  a.caches = m.thread_caches();
  a.notes.append(m.diagnostics());
  totals(a);
  const auto& s = a.stats;
  uint64_t heap = stat(s, "generic.heap_size"), in_use = stat(s, "generic.current_allocated_bytes");
  uint64_t pfree = stat(s, "tcmalloc.pageheap_free_bytes"), unmapped = stat(s, "tcmalloc.pageheap_unmapped_bytes");
  uint64_t central = stat(s, "tcmalloc.central_cache_free_bytes"),
           transfer = stat(s, "tcmalloc.transfer_cache_free_bytes"),
           thread = stat(s, "tcmalloc.thread_cache_free_bytes");
  uint64_t release = stat(s, "release_free_memory_bytes");
  auto& f = a.figures;
  f["heap_size"] = static_cast<int64_t>(heap);
  f["in_use"] = static_cast<int64_t>(in_use);
  f["pageheap_free"] = static_cast<int64_t>(pfree);
  f["pageheap_unmapped"] = static_cast<int64_t>(unmapped);
  f["central"] = static_cast<int64_t>(central);
  f["transfer"] = static_cast<int64_t>(transfer);
  f["thread"] = static_cast<int64_t>(thread);
  f["release_free_memory"] = static_cast<int64_t>(release);
  bool have_max = s.count("tcmalloc.max_total_thread_cache_bytes") != 0;
  uint64_t max_tc = stat(s, "tcmalloc.max_total_thread_cache_bytes");
  if (have_max) f["max_total_thread_cache_bytes"] = static_cast<int64_t>(max_tc);
  bool aggressive = stat(s, "tcmalloc.aggressive_memory_decommit") != 0;
  if (s.count("tcmalloc.aggressive_memory_decommit")) f["aggressive_memory_decommit"] = aggressive ? 1 : 0;

  for (const auto& sp : m.spans()) {
    if (sp.location == 2)
      add_range(a.ranges, sp.address, sp.address + sp.bytes, "tcmalloc unmapped spans (address space only)", "tcmalloc",
                false);
    else
      add_range(a.ranges, sp.address, sp.address + sp.bytes, "tcmalloc page heap spans", "tcmalloc", true);
  }
  sort_ranges(a.ranges);
  if (has_jvm(t)) a.nmt = nmt_split(t, m);
  if (s.count("tcmalloc.metadata_bytes"))
    a.notes.note("tcmalloc: its metadata (" + hs(stat(s, "tcmalloc.metadata_bytes")) +
                 ", metadata_system_bytes_) lies in anonymous mappings heapwalk does not attribute");

  const std::string release_call =
      "MallocExtension::instance()->ReleaseFreeMemory() (C: MallocExtension_ReleaseFreeMemory(); gdb: call (void) "
      "MallocExtension_ReleaseFreeMemory())";
  if (pfree) {
    AllocCause c;
    c.cause = "tcmalloc-pageheap-free";
    c.kind = "page heap free";
    c.bytes = pfree;
    c.where = "page heap";
    c.action = "now: " + release_call + " returns " + hs(release) +
               "; TCMALLOC_RELEASE_RATE=10 releases free spans faster (default 1; 0 never)" +
               (aggressive ? std::string("") : std::string(" or TCMALLOC_AGGRESSIVE_DECOMMIT=true"));
    c.evidence = "page heap: " + hs(pfree) + " free and backed (tcmalloc.pageheap_free_bytes), " + hs(unmapped) +
                 " unmapped, of " + hs(heap) + " (generic.heap_size); aggressive decommit " +
                 (aggressive ? "on" : "off");
    c.summary =
        "tcmalloc's page heap keeps " + hs(pfree) + " free: ReleaseFreeMemory() would return " + hs(release) + " now";
    a.causes.push_back(c);
  }
  if (thread) {
    AllocCause c;
    c.cause = "tcmalloc-thread-caches";
    c.kind = "thread caches";
    c.bytes = thread;
    std::vector<const alloc::ThreadCache*> tc;
    for (const auto& x : a.caches) tc.push_back(&x);
    std::sort(tc.begin(), tc.end(),
              [](const alloc::ThreadCache* x, const alloc::ThreadCache* y) { return x->bytes > y->bytes; });
    for (size_t i = 0; i < tc.size() && i < 3 && tc[i]->bytes; ++i)
      c.where += (i ? ", " : "lwp ") + std::to_string(tc[i]->lwp) + " " + hs(tc[i]->bytes);
    uint64_t bound = uint64_t{1} << 20;  // a power of two near a quarter of what they hold, from 1 MiB
    while (bound * 8 <= thread) bound *= 2;
    c.action = "TCMALLOC_MAX_TOTAL_THREAD_CACHE_BYTES=" + std::to_string(bound) + " (now " +
               (have_max ? hs(max_tc) : std::string("unknown; 32 MiB by default")) +
               "): the bound shared by all thread caches";
    c.evidence = std::to_string(a.caches.size()) + " thread caches hold " + hs(thread) +
                 " of freed objects (tcmalloc.thread_cache_free_bytes)";
    c.summary = "tcmalloc's thread caches hoard " + hs(thread) + " of freed objects";
    a.causes.push_back(c);
  }
  if (central + transfer) {
    AllocCause c;
    c.cause = "tcmalloc-central-caches";
    c.kind = "central caches";
    c.bytes = central + transfer;
    c.where = "central free lists";
    c.action =
        "ReleaseFreeMemory() does not return these: a span goes back to the page heap only when all its objects are "
        "free (objects of one size with mixed lifetimes keep spans partly used)";
    c.evidence = hs(central) + " in the central free lists (tcmalloc.central_cache_free_bytes), " + hs(transfer) +
                 " in the transfer caches (tcmalloc.transfer_cache_free_bytes)";
    c.summary = "tcmalloc's central and transfer caches keep " + hs(central + transfer) +
                " of free objects in partly used spans";
    a.causes.push_back(c);
  }
  if (unmapped) {
    AllocCause c;
    c.cause = "tcmalloc-unmapped";
    c.kind = "unmapped address space";
    c.bytes = unmapped;
    c.where = "page heap";
    c.virtual_only = true;
    c.action =
        "nothing to give back: tcmalloc has already returned these pages (MADV_DONTNEED); they stay as "
        "address space for reuse";
    c.evidence = hs(unmapped) + " unmapped (tcmalloc.pageheap_unmapped_bytes)";
    c.summary = "tcmalloc keeps " + hs(unmapped) + " of released address space (not resident)";
    a.causes.push_back(c);
  }
  a.in_use_summary.cause = "in-use";
  a.in_use_summary.kind = "in use";
  a.in_use_summary.bytes = in_use;
  a.in_use_summary.action =
      "nothing large retained to give back; see `heapwalk classify` and `heapwalk leaks` for what the memory in use "
      "holds";
  a.in_use_summary.evidence = "tcmalloc: " + hs(in_use) + " in use of " + hs(heap) + "; page heap free " + hs(pfree) +
                              ", caches " + hs(central + transfer + thread) + "; ReleaseFreeMemory() would return " +
                              hs(release);
  a.in_use_summary.summary = "tcmalloc: " + hs(in_use) + " in use, ReleaseFreeMemory() would return " + hs(release);
}

}  // namespace

std::vector<AllocRetention> compute_alloc_retention(target::Target& t, Diagnostics& notes) {
  std::vector<AllocRetention> out;
  for (const auto& d : alloc::detect(t)) {
    if (d.kind == alloc::Kind::Ptmalloc) continue;
    AllocRetention a;
    a.kind = d.kind;
    a.module = d.module;
    a.owns_malloc = d.owns_malloc;
    try {
      if (d.kind == alloc::Kind::Jemalloc) {
        jemalloc_part(t, a);
      } else {
        const target::Module* m = tcmalloc::tcmalloc_module(t);
        if (!m) continue;
        tcmalloc_part(t, *m, a);
      }
    } catch (const std::exception& e) {
      notes.note(std::string(alloc::kind_name(d.kind)) + " in " + d.module + ": " + e.what() +
                 "; its memory counts as other anonymous");
      continue;
    }
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace heapwalk::analysis
