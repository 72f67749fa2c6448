#include "ptmalloc/glibc.h"

#include <cstdio>
#include <memory>

namespace heapwalk::ptmalloc {

namespace {

bool is_libc_name(const std::string& base) {
  return base.rfind("libc.so", 0) == 0 || (base.rfind("libc-2.", 0) == 0 && base.find(".so") != std::string::npos);
}

std::string version_from_banner(const std::string& banner) {
  // "GNU C Library (Debian GLIBC 2.36-9+deb12u14) stable release version 2.36."
  size_t p = banner.find("version ");
  if (p == std::string::npos) return "";
  int major = 0, minor = 0;
  if (std::sscanf(banner.c_str() + p + 8, "%d.%d", &major, &minor) != 2) return "";
  return std::to_string(major) + "." + std::to_string(minor);
}

}  // namespace

GlibcInfo locate_glibc(target::Target& t, const std::string& version_hint) {
  GlibcInfo g;
  auto& diags = t.diagnostics();
  const target::Module* libc = t.find_module(is_libc_name);
  std::unique_ptr<target::ElfFile> file, debug;
  if (libc) {
    g.libc_path = libc->path;
    g.libc_base = libc->base;
    g.build_id = libc->build_id;
    file = t.module_file(*libc);
    if (file && g.build_id.empty()) {
      g.build_id = file->build_id();
      diags.note("libc's build-id is not in the image; trusting " + file->path());
    }
    debug = t.debug_file(g.build_id);
    if (debug) g.debug_file = debug->path();
  }
  // Version: user hint > banner in libc > highest GLIBC_ version definition.
  if (!version_hint.empty()) {
    g.version = version_hint;
    g.version_source = "override";
  } else if (file) {
    g.version = version_from_banner(file->find_text("GNU C Library"));
    g.version_source = "banner";
    if (g.version.empty() && !file->glibc_verdef().empty()) {
      g.version = file->glibc_verdef();
      g.version_source = "verdef";
    }
  }
  if (g.version.empty() && !t.truncation().empty())
    throw FormatError(t.path(), "core file is truncated (" + t.truncation() +
                                    "): libc and its malloc state are not in what remains");
  if (g.version.empty())
    throw SymbolError("glibc", libc ? "cannot tell the glibc version of " + libc->path +
                                          " (file missing? try --sysroot)"
                                    : "no libc found in the target (statically linked, or not a glibc process)");
  g.layout = layout_for(g.version);
  if (!g.layout)
    throw SymbolError("glibc", "glibc " + g.version + " is not supported yet (known layouts: 2.35-2.41)");

  uint64_t bias = 0;
  if (libc && file) bias = libc->base - file->first_load_vaddr();
  auto lookup = [&](const std::string& name) -> std::optional<target::Symbol> {
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
  if (ov.tcache_key) {
    g.tcache_key = *ov.tcache_key;
    g.how["tcache_key"] = "override";
  } else if (auto s = lookup("tcache_key")) {
    uint64_t v;
    memory::Reader r(t.memory());
    if (r.try_u64(bias + s->value, v)) g.tcache_key = v;
  }
  // TLS variables: the TPOFF64 GOT slot that the dynamic linker filled holds the offset from the
  // thread pointer, so it works for any TLS placement without reading ld.so's internals.
  auto tls = [&](const std::string& name) -> std::optional<int64_t> {
    auto s = lookup(name);
    if (!s || !s->tls || !file) return std::nullopt;
    memory::Reader r(t.memory());
    for (const auto& rel : file->tls_relocs()) {
      if (rel.tls_value != s->value) continue;
      uint64_t v;
      if (r.try_u64(bias + rel.offset, v)) {
        g.how[name] += "+tpoff-got";
        return static_cast<int64_t>(v);
      }
    }
    diags.add("symbols", std::nullopt, std::nullopt,
              "cannot read the TLS offset of libc's `" + name + "` (GOT slot not in the image)");
    return std::nullopt;
  };
  g.tcache_tpoff = tls("tcache");
  g.thread_arena_tpoff = tls("thread_arena");

  if (g.main_arena == 0 || g.mp == 0) {
    std::string hint = debug ? "" : " (install libc6-dbg for libc build-id " + g.build_id + ", or pass --main-arena)";
    throw SymbolError(g.main_arena == 0 ? "main_arena" : "mp_",
                      std::string("cannot locate glibc's ") + (g.main_arena == 0 ? "main_arena" : "mp_") +
                          ": no symbol in " + (g.libc_path.empty() ? "libc" : g.libc_path) + hint);
  }
  g.layout_source = std::string("profile ") + g.layout->name + " (" + g.layout->source + ") + " +
                    (g.how.count("main_arena") ? g.how["main_arena"] : "unknown") + " symbols";
  return g;
}

}  // namespace heapwalk::ptmalloc
