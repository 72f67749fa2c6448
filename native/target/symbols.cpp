#include "target/symbols.h"

#include <algorithm>
#include <unordered_map>

#include "util/demangle.h"

namespace heapwalk::target {

ModuleIndex::ModuleIndex(Target& t) : t_(t) {
  const auto& mods = t.modules();
  std::unordered_map<std::string, std::vector<size_t>> by_path;
  for (size_t i = 0; i < mods.size(); ++i) {
    const Module& m = mods[i];
    std::string base = m.path.substr(m.path.rfind('/') + 1);
    names_.push_back(base);
    auto file = t.module_file(m, /*quiet=*/true);
    if (file) {
      uint64_t bias = m.base - file->first_load_vaddr();
      auto add = [&](const ElfFile& f) {
        for (const auto& [name, sym] : f.symbols()) {
          if (name.rfind("_ZTV", 0) != 0 || sym.size == 0 || sym.size > (1u << 20)) continue;
          std::string cls = class_of_vtable(name);
          if (!cls.empty()) vtables_.push_back({bias + sym.value, bias + sym.value + sym.size, cls});
        }
      };
      add(*file);
      std::string id = m.build_id.empty() ? file->build_id() : m.build_id;
      if (auto dbg = t.debug_file(id)) add(*dbg);
    }
    files_.push_back(std::move(file));
    by_path[m.path].push_back(i);
  }
  // One pass over the regions (a core may name 160 k files: issue 14, item 9).
  for (const auto& r : t.memory().regions()) {
    auto it = by_path.find(r.path);
    if (it == by_path.end()) continue;
    for (size_t i : it->second) ranges_.push_back({r.start, r.end, r.file_offset, i});
  }
  std::sort(vtables_.begin(), vtables_.end(), [](const Vtable& a, const Vtable& b) { return a.start < b.start; });
  vtables_.erase(std::unique(vtables_.begin(), vtables_.end(),
                             [](const Vtable& a, const Vtable& b) { return a.start == b.start; }),
                 vtables_.end());
  std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) { return a.start < b.start; });
}

const std::string* ModuleIndex::vtable_class(uint64_t addr) const {
  auto it =
      std::upper_bound(vtables_.begin(), vtables_.end(), addr, [](uint64_t a, const Vtable& v) { return a < v.start; });
  if (it == vtables_.begin()) return nullptr;
  --it;
  return addr < it->end ? &it->cls : nullptr;
}

const std::string* ModuleIndex::module_at(uint64_t addr) const {
  auto it =
      std::upper_bound(ranges_.begin(), ranges_.end(), addr, [](uint64_t a, const Range& r) { return a < r.start; });
  if (it == ranges_.begin()) return nullptr;
  --it;
  return addr < it->end ? &names_[it->module] : nullptr;
}

size_t ModuleIndex::read(uint64_t addr, void* out, size_t len) const {
  size_t got = t_.memory().read(addr, out, len);
  if (got == len) return got;
  uint64_t a = addr + got;
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), a, [](uint64_t x, const Range& r) { return x < r.start; });
  if (it == ranges_.begin()) return got;
  --it;
  if (a >= it->end || !files_[it->module]) return got;
  size_t want = static_cast<size_t>(std::min<uint64_t>(len - got, it->end - a));
  return got + files_[it->module]->read_at(it->file_offset + (a - it->start), static_cast<uint8_t*>(out) + got, want);
}

}  // namespace heapwalk::target
