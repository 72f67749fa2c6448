#include "hotspot/symbolizer.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "hotspot/nmt.h"

namespace heapwalk::hotspot {

std::vector<FuncSymbol> read_func_symbols(const target::ElfFile& file) {
  std::vector<FuncSymbol> out;
  if (elf_version(EV_CURRENT) == EV_NONE) return out;
  int fd = ::dup(file.fd());
  if (fd < 0) return out;
  Elf* e = elf_begin(fd, ELF_C_READ_MMAP, nullptr);
  if (!e) {
    ::close(fd);
    return out;
  }
  Elf_Scn* scn = nullptr;
  bool have_symtab = false;
  while ((scn = elf_nextscn(e, scn)) != nullptr) {
    GElf_Shdr sh;
    if (gelf_getshdr(scn, &sh) && sh.sh_type == SHT_SYMTAB) have_symtab = true;
  }
  scn = nullptr;
  while ((scn = elf_nextscn(e, scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) continue;
    if (sh.sh_type != (have_symtab ? SHT_SYMTAB : SHT_DYNSYM)) continue;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (!data || !sh.sh_entsize) continue;
    size_t n = sh.sh_size / sh.sh_entsize;
    for (size_t i = 0; i < n; ++i) {
      GElf_Sym s;
      if (!gelf_getsym(data, static_cast<int>(i), &s)) break;
      if (GELF_ST_TYPE(s.st_info) != STT_FUNC || s.st_shndx == SHN_UNDEF || !s.st_value) continue;
      const char* name = elf_strptr(e, sh.sh_link, s.st_name);
      if (!name || !*name) continue;
      out.push_back({s.st_value, s.st_size, name});
    }
  }
  elf_end(e);
  ::close(fd);
  std::sort(out.begin(), out.end(), [](const FuncSymbol& a, const FuncSymbol& b) { return a.value < b.value; });
  return out;
}

const Symbolizer::Table* Symbolizer::table_for(const target::Module& m) {
  auto it = tables_.find(m.path);
  if (it != tables_.end()) return it->second.get();
  auto tab = std::make_unique<Table>();
  auto f = t_.module_file(m);
  std::unique_ptr<target::ElfFile> from;
  uint64_t first = 0;
  if (f) {
    first = f->first_load_vaddr();
    if (!f->has_symtab()) {
      auto d = t_.debug_file(m.build_id.empty() ? f->build_id() : m.build_id);
      if (d && d->has_symtab()) from = std::move(d);
    }
    if (!from) from = std::move(f);
  }
  tab->bias = m.base - first;
  if (from) {
    for (auto& s : read_func_symbols(*from)) tab->funcs.push_back({s.value, s.size, std::move(s.name)});
  }
  const Table* r = tab.get();
  tables_.emplace(m.path, std::move(tab));
  return r;
}

std::string Symbolizer::describe(uint64_t pc) {
  auto it = memo_.find(pc);
  if (it != memo_.end()) return it->second;
  std::string s = lookup(pc);
  if (memo_.size() < kMemo) memo_.emplace(pc, s);
  return s;
}

std::string Symbolizer::lookup(uint64_t pc) {
  const target::Module* mod = nullptr;
  for (const auto& m : t_.modules())
    if (pc >= m.base && pc < m.end) mod = &m;
  if (!mod) return "";
  std::string base = mod->path.substr(mod->path.rfind('/') + 1);
  const Table* tab = table_for(*mod);
  uint64_t rel = pc - tab->bias;
  auto it = std::upper_bound(tab->funcs.begin(), tab->funcs.end(), rel,
                             [](uint64_t v, const Func& f) { return v < f.start; });
  char off[32];
  if (it != tab->funcs.begin()) {
    --it;
    if (rel < it->start + std::max<uint64_t>(it->size, 1)) {
      std::snprintf(off, sizeof off, "+0x%llx", static_cast<unsigned long long>(rel - it->start));
      return base + "!" + demangle(it->name) + off;
    }
  }
  std::snprintf(off, sizeof off, "+0x%llx", static_cast<unsigned long long>(pc - mod->base));
  return base + off;
}

}  // namespace heapwalk::hotspot
