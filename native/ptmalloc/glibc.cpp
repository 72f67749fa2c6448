#include "ptmalloc/glibc.h"

#include <elf.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "ptmalloc/dwarf_layout.h"
#include "ptmalloc/finder.h"

namespace heapwalk::ptmalloc {

namespace {

bool is_libc_name(const std::string& base) {
  return base.rfind("libc.so", 0) == 0 || (base.rfind("libc-2.", 0) == 0 && base.find(".so") != std::string::npos);
}

std::string basename_of(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

std::string version_from_banner(const std::string& banner) {
  // "GNU C Library (Debian GLIBC 2.36-9+deb12u14) stable release version 2.36."
  size_t p = banner.find("version ");
  if (p == std::string::npos) return "";
  int major = 0, minor = 0;
  if (std::sscanf(banner.c_str() + p + 8, "%d.%d", &major, &minor) != 2) return "";
  return std::to_string(major) + "." + std::to_string(minor);
}

// Before 2.34 the library file was named after its version: libc-2.31.so.
std::string version_from_name(const std::string& path) {
  int major = 0, minor = 0;
  if (std::sscanf(basename_of(path).c_str(), "libc-%d.%d.so", &major, &minor) == 2)
    return std::to_string(major) + "." + std::to_string(minor);
  return "";
}

// The highest GLIBC_2.x version that libc defines, read from its image in the target (gcore saves
// libc's first segment with .dynamic's targets; a kernel core usually does not). "" if unreadable.
std::string image_verdef(memory::MemorySource& mem, uint64_t base) {
  std::vector<Elf64_Phdr> ph = target::image_program_headers(mem, base);
  uint64_t verdef = 0, verdefnum = 0, strtab = 0;
  for (const auto& p : ph) {
    if (p.p_type != PT_DYNAMIC || p.p_memsz > (1u << 16)) continue;
    std::vector<Elf64_Dyn> dyn(p.p_memsz / sizeof(Elf64_Dyn));
    size_t n = mem.read(base + p.p_vaddr, dyn.data(), dyn.size() * sizeof(Elf64_Dyn)) / sizeof(Elf64_Dyn);
    for (size_t i = 0; i < n && dyn[i].d_tag != DT_NULL; ++i) {
      if (dyn[i].d_tag == DT_VERDEF) verdef = dyn[i].d_un.d_ptr;
      if (dyn[i].d_tag == DT_VERDEFNUM) verdefnum = dyn[i].d_un.d_val;
      if (dyn[i].d_tag == DT_STRTAB) strtab = dyn[i].d_un.d_ptr;
    }
  }
  if (!verdef || !strtab || verdefnum > 4096) return "";
  // ld.so relocates these d_ptr entries in place; an unrelocated one is an offset from base.
  if (verdef < base) verdef += base;
  if (strtab < base) strtab += base;
  int best = -1;
  uint64_t at = verdef;
  for (uint64_t k = 0; k < verdefnum; ++k) {
    Elf64_Verdef vd;
    Elf64_Verdaux va;
    if (mem.read(at, &vd, sizeof vd) != sizeof vd || mem.read(at + vd.vd_aux, &va, sizeof va) != sizeof va) break;
    char name[32] = {0};
    mem.read(strtab + va.vda_name, name, sizeof name - 1);
    int major = 0, minor = 0;
    if (std::sscanf(name, "GLIBC_%d.%d", &major, &minor) == 2 && major == 2 && minor > best) best = minor;
    if (!vd.vd_next) break;
    at += vd.vd_next;
  }
  return best < 0 ? "" : "2." + std::to_string(best);
}

uint64_t rd(const uint8_t* p, uint64_t off) {
  uint64_t v;
  std::memcpy(&v, p + off, 8);
  return v;
}

}  // namespace

GlibcInfo locate_glibc(target::Target& t, const std::string& version_hint) {
  GlibcInfo g;
  auto& diags = t.diagnostics();
  auto& mem = t.memory();
  const target::Module* libc = t.find_module(is_libc_name);
  std::unique_ptr<target::ElfFile> file, debug;
  if (libc) {
    g.libc_path = libc->path;
    g.libc_base = libc->base;
    g.build_id = libc->build_id;
    file = t.module_file(*libc);  // only when its build-id is the image's
    debug = t.debug_file(g.build_id);
    if (debug) g.debug_file = debug->path();
  } else if (t.kind() != target::Target::Kind::Callback && t.kind() != target::Target::Kind::Buffer) {
    if (!t.truncation().empty())
      throw FormatError(t.path(), "core file is truncated (" + t.truncation() +
                                      "): libc and its malloc state are not in what remains");
    throw SymbolError("glibc", "no libc found in the target (statically linked, or not a glibc process)");
  }

  // Version: user hint > banner in the (build-id checked) file > file name > version definitions
  // > the layout that fits the image.
  if (!version_hint.empty()) {
    g.version = version_hint;
    g.version_source = "override";
  } else if (file && !(g.version = version_from_banner(file->find_text("GNU C Library"))).empty()) {
    g.version_source = "banner";
  } else if (libc && !(g.version = version_from_name(libc->path)).empty()) {
    g.version_source = "file-name";
  } else if (file && !file->glibc_verdef().empty()) {
    g.version = file->glibc_verdef();
    g.version_source = "verdef";
  }
  // Nothing from disk: the version definitions in libc's image give a lower bound.
  std::string at_least;
  if (g.version.empty() && libc) at_least = image_verdef(mem, libc->base);
  std::vector<const Layout*> candidates;
  if (!g.version.empty()) {
    if (const Layout* l = layout_for(g.version)) candidates.push_back(l);
    if (candidates.empty()) throw SymbolError("glibc", "glibc " + g.version + " has no known malloc layout");
  } else {
    for (auto it = layouts().rbegin(); it != layouts().rend(); ++it)
      if (at_least.empty() || compare_versions(it->last, at_least) >= 0) candidates.push_back(&*it);
  }

  uint64_t bias = 0;
  if (libc && file) bias = libc->base - file->first_load_vaddr();
  // libc's file missing (another mount namespace, a core from elsewhere) but its debug file
  // present: the debug file keeps the program headers, so the bias is the same.
  if (libc && !file && debug) bias = libc->base - debug->first_load_vaddr();
  bool symbols_ok = true;  // false once the symbols proved not to fit the image
  auto lookup = [&](const std::string& name) -> std::optional<target::Symbol> {
    if (!symbols_ok) return std::nullopt;
    if (debug) {
      if (auto s = debug->symbol(name)) {
        g.how[name] = "debug-symtab";
        return s;
      }
    }
    if (file) {
      if (auto s = file->symbol(name)) {
        g.how[name] = file->has_symtab() ? "symtab" : "dynsym";
        return s;
      }
    }
    return std::nullopt;
  };
  const auto& ov = t.overrides();
  if (ov.main_arena) {
    g.main_arena = *ov.main_arena;
    g.how["main_arena"] = "override";
  } else if (auto s = lookup("main_arena")) {
    g.main_arena = bias + s->value;
  }
  if (ov.mp) {
    g.mp = *ov.mp;
    g.how["mp_"] = "override";
  } else if (auto s = lookup("mp_")) {
    g.mp = bias + s->value;
  }

  // No symbol: scan libc's data for the arena ring, trying each candidate layout. Several layouts
  // can share a malloc_state shape (e.g. 2.35-2.36, 2.37-2.41 and 2.42); among those that find an
  // arena ring, prefer the one whose tcache struct size matches the first chunk of the main heap
  // (where the main thread's tcache usually sits). With the symbol known, the same preference
  // applies among the layouts whose ring fits at that address.
  std::vector<memory::Region> data = libc ? libc_data_regions(t, libc->path) : std::vector<memory::Region>{};
  auto tcache_fits = [&](const Layout& l, uint64_t arena) {
    memory::Reader rr(mem);
    uint64_t top = 0, sz = 0;
    if (!l.has_tcache || !rr.try_u64(arena + l.ms_top, top)) return false;
    auto start = main_heap_start(mem, top);
    if (!start) return false;
    uint64_t first = (*start + l.alignment - 1) & ~(l.alignment - 1);
    return rr.try_u64(first + 8, sz) && tcache_struct_chunk_fits(l, sz & ~uint64_t{7});
  };
  // With libc's own file the symbol is that build's; from a debug file alone (or a version from
  // the file name) it is checked against the image like any candidate.
  if (candidates.size() > 1 || g.main_arena == 0 || !file) {
    bool known = g.main_arena != 0;
    auto from_symbols = [&] { return known && g.how["main_arena"] != "override"; };
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<memory::Region> at;
      if (known) at.push_back({g.main_arena, g.main_arena + 0x1000});
      int best_score = -1;
      std::string lowest, highest;  // the version range of every layout that fits equally well
      for (const Layout* l : candidates) {
        auto c = find_main_arena(mem, *l, known ? at : data);
        if (!c) continue;
        int score = tcache_fits(*l, c->address) ? 2 : 1;
        if (score > best_score) {
          best_score = score;
          g.main_arena = c->address;
          g.layout = l;
          if (!known) g.how["main_arena"] = "heuristic:arena-ring";
          lowest = l->name;
          highest = l->last;
        } else if (score == best_score && c->address == g.main_arena) {
          if (compare_versions(l->name, lowest) < 0) lowest = l->name;
          if (compare_versions(l->last, highest) > 0) highest = l->last;
        }
      }
      if (!g.layout && from_symbols() && pass == 0) {
        // The symbol does not hold an arena ring under any layout (an unrelocated or foreign
        // symbol): forget the symbols and search libc's data as --no-symbols does.
        diags.note("main_arena from the symbols (" + hex(g.main_arena) +
                   ") holds no arena ring; finding glibc's state without symbols");
        symbols_ok = false;
        known = false;
        g.main_arena = 0;
        g.how.erase("main_arena");
        if (!ov.mp) {
          g.mp = 0;
          g.how.erase("mp_");
        }
        continue;
      }
      if (!at_least.empty() && !lowest.empty() && compare_versions(lowest, at_least) < 0) lowest = at_least;
      if (g.version.empty() && g.layout) g.version = lowest == highest ? lowest : lowest + "-" + highest;
      break;
    }
  }
  if (!g.layout && candidates.size() == 1) g.layout = candidates.front();
  if (g.main_arena == 0 || !g.layout) {
    std::string where = g.libc_path.empty() ? "libc" : g.libc_path;
    throw SymbolError("main_arena", "cannot locate glibc's main_arena in " + where +
                                        ": no symbol, and no arena ring found in its data" +
                                        (debug ? "" : " (libc6-dbg for build-id " + g.build_id + " would help)"));
  }
  // DWARF from the debug file (matched by build-id) beats the built-in profile.
  // A layout that contradicts the image (main_arena's ring does not hold under it) is not used:
  // from the cache, the entry is dropped and DWARF read again; from DWARF itself, the profile stays.
  if (debug) {
    auto fits = [&](const Layout& l) {
      std::vector<memory::Region> at{{g.main_arena, g.main_arena + 0x1000}};
      auto c = find_main_arena(mem, l, at);
      return c && c->address == g.main_arena;
    };
    const bool profile_fits = fits(*g.layout);
    auto dl = std::make_shared<Layout>(*g.layout);
    std::vector<std::string> changed, notes;
    std::string cache;
    bool ok = layout_from_dwarf(*debug, g.build_id, *dl, changed, &cache, &notes);
    // Judged against the built-in profile: when the image holds main_arena's ring under the
    // profile but not under the cached layout, the entry is wrong (when neither fits, the image
    // itself is damaged there, and the corruption checks say so).
    if (ok && profile_fits && !fits(*dl) && cache.rfind("hit", 0) == 0) {
      diags.note("cached layout " + cache.substr(4) + " contradicts the image; discarded");
      drop_cached_layout(*debug, g.build_id);
      dl = std::make_shared<Layout>(*g.layout);
      changed.clear();
      ok = layout_from_dwarf(*debug, g.build_id, *dl, changed, &cache, nullptr, /*read_cache=*/false);
    }
    for (const auto& n : notes) diags.note(n);
    if (ok && profile_fits && !fits(*dl)) {
      diags.note("DWARF of " + debug->path() + " contradicts the image (no arena ring at main_arena); using profile " +
                 g.layout->name);
      if (cache.rfind("stored", 0) == 0) drop_cached_layout(*debug, g.build_id);
      ok = false;
    }
    if (ok) {
      g.dwarf_layout = dl;
      g.layout = dl.get();
      g.how["layout"] = "dwarf";
      g.how["layout_cache"] = cache;
      if (!changed.empty()) {
        std::string list;
        for (const auto& c : changed) list += (list.empty() ? "" : ", ") + c;
        diags.note("DWARF of " + debug->path() + " differs from profile " + dl->name + " in: " + list +
                   "; using DWARF");
      }
    }
  }
  if (!g.how.count("layout")) g.how["layout"] = std::string("profile ") + g.layout->name;
  const Layout& L = *g.layout;
  if (g.version_source.empty() && !at_least.empty()) g.version_source = "layout-fit+image-verdef";
  if (g.version_source.empty()) {
    if (g.version.empty()) g.version = std::string(L.name) + "-" + L.last;
    g.version_source = "layout-fit";
  }
  memory::Reader r(mem);
  uint64_t top = 0;
  r.try_u64(g.main_arena + L.ms_top, top);
  if (g.mp == 0) {
    auto sbrk = main_heap_start(mem, top);
    if (sbrk) {
      if (auto mp = find_mp(mem, L, data, *sbrk, g.main_arena)) {
        g.mp = *mp;
        g.how["mp_"] = "heuristic:sbrk_base";
      }
    }
  }
  if (g.mp == 0)
    throw SymbolError("mp_", "cannot locate glibc's mp_ (malloc parameters) in " +
                                 (g.libc_path.empty() ? std::string("libc") : g.libc_path));

  if (ov.tcache_key) {
    g.tcache_key = *ov.tcache_key;
    g.how["tcache_key"] = "override";
  } else if (auto s = L.tcache_key_symbol ? lookup(L.tcache_key_symbol) : std::nullopt) {
    uint64_t v;
    if (r.try_u64(bias + s->value, v)) g.tcache_key = v;
  }
  // free()'s fastbin test reads it (try_free); a static, so only .symtab or the debug file has it.
  if (L.global_max_fast_width == 8 || L.global_max_fast_width == 1) {
    if (auto s = lookup("global_max_fast")) {
      uint64_t v;
      uint32_t w;
      if (L.global_max_fast_width == 8 && r.try_u64(bias + s->value, v)) g.global_max_fast = v;
      if (L.global_max_fast_width == 1 && r.try_u32(bias + s->value, w)) g.global_max_fast = w & 0xff;
    }
  }

  // TLS variables: the TPOFF64 GOT slot that the dynamic linker filled holds the offset from the
  // thread pointer, so it works for any TLS placement without reading ld.so's internals.
  auto tls = [&](const char* symbol, const std::string& key) -> std::optional<int64_t> {
    if (!symbol) return std::nullopt;
    auto s = lookup(symbol);
    if (s) g.how[key] = g.how[symbol];
    if (std::string(symbol) != key) g.how.erase(symbol);
    if (!s || !s->tls || !file) {
      g.how.erase(key);
      return std::nullopt;
    }
    for (const auto& rel : file->tls_relocs()) {
      if (rel.tls_value != s->value) continue;
      uint64_t v;
      if (r.try_u64(bias + rel.offset, v)) {
        g.how[key] += "+tpoff-got";
        return static_cast<int64_t>(v);
      }
    }
    g.how.erase(key);
    return std::nullopt;
  };
  g.tcache_tpoff = tls(L.tcache_symbol, "tcache");
  g.thread_arena_tpoff = tls(L.thread_arena_symbol, "thread_arena");
  if (L.tcache_dummy_symbol) {
    if (auto s = lookup(L.tcache_dummy_symbol)) g.tcache_dummy = bias + s->value;
  }

  // Without symbols: every thread's `thread_arena` holds an arena address at the same offset from
  // its thread pointer; vote for that offset. `tcache` sits near it and points at a chunk of
  // the size glibc gives a tcache_perthread_struct (tcache_struct_chunk_sizes).
  bool any_explicit = false;
  for (const auto& th : t.threads()) any_explicit |= th.tcache.has_value() || th.arena.has_value();
  if (!g.thread_arena_tpoff && !any_explicit) {
    std::set<uint64_t> ring{g.main_arena};
    uint64_t a = g.main_arena;
    for (int i = 0; i < 4096; ++i) {
      uint64_t n;
      if (!r.try_u64(a + L.ms_next, n) || n == g.main_arena || n == 0 || ring.count(n)) break;
      ring.insert(n);
      a = n;
    }
    g.thread_arena_tpoff = find_tls_offset(mem, t.threads(), ring);
    if (g.thread_arena_tpoff) g.how["thread_arena"] = "heuristic:tls-search";
  }
  if (!g.tcache_tpoff && L.has_tcache && g.thread_arena_tpoff && !any_explicit) {
    std::map<int64_t, unsigned> votes;
    for (const auto& th : t.threads()) {
      uint64_t ar;
      if (!th.fs_base || !r.try_u64(th.fs_base + static_cast<uint64_t>(*g.thread_arena_tpoff), ar) || !ar) continue;
      std::vector<uint8_t> win(1024);
      uint64_t start = th.fs_base + static_cast<uint64_t>(*g.thread_arena_tpoff) - 512;
      if (mem.read(start, win.data(), win.size()) != win.size()) continue;
      for (uint64_t off = 0; off < win.size(); off += 8) {
        uint64_t p = rd(win.data(), off), size_word;
        if (!p || (p & 15) || !r.try_u64(p - 8, size_word)) continue;
        uint64_t csz = size_word & ~uint64_t{7};
        if (tcache_struct_chunk_fits(L, csz) && (size_word & 2) == 0)
          ++votes[static_cast<int64_t>(start + off - th.fs_base)];
      }
    }
    unsigned best = 0;
    for (const auto& [d, n] : votes)
      if (n > best) {
        best = n;
        g.tcache_tpoff = d;
      }
    if (g.tcache_tpoff) g.how["tcache"] = "heuristic:tls-search";
  }
  if (L.has_tcache && !g.tcache_tpoff && !any_explicit)
    diags.add("incomplete", std::nullopt, std::nullopt,
              "cannot find the threads' tcache (no TLS symbol or TPOFF relocation, and the TLS search "
              "found nothing); tcache chunks will count as in use");

  // One word for the strongest method used: dwarf > symtab > heuristics.
  const std::string& arena_how = g.how["main_arena"];
  g.layout_source = g.dwarf_layout                         ? "dwarf"
                    : arena_how == "override"              ? "override"
                    : arena_how.rfind("heuristic", 0) == 0 ? "heuristic"
                                                           : "symtab";
  g.layout_source += std::string(" (profile ") + L.name + ": " + L.source + ")";
  return g;
}

}  // namespace heapwalk::ptmalloc
