// Symbols of every module of a target, for naming addresses (vtables, modules).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "target/target.h"

namespace heapwalk::target {

class ModuleIndex {
 public:
  /// Loads each module's file (build-id checked, under the sysroot) and its debug file, unless
  /// the target forbids files (no_files). Missing files only reduce what can be named.
  explicit ModuleIndex(Target& t);

  /// The demangled class whose vtable (`_ZTV…` symbol) contains `addr`, or nullptr.
  const std::string* vtable_class(uint64_t addr) const;
  /// The file name of the module mapped at `addr`, or nullptr.
  const std::string* module_at(uint64_t addr) const;
  /// True when `addr` lies in a module's writable data or read-only data/code.
  bool in_module(uint64_t addr) const { return module_at(addr) != nullptr; }
  /// Reads target memory, falling back to the module's file for pages a core did not save
  /// (read-only file-backed mappings). Returns how many bytes were read.
  size_t read(uint64_t addr, void* out, size_t len) const;
  size_t vtable_count() const { return vtables_.size(); }

 private:
  struct Vtable {
    uint64_t start, end;
    std::string cls;
  };
  struct Range {
    uint64_t start, end, file_offset;
    size_t module;
  };
  Target& t_;
  std::vector<Vtable> vtables_;
  std::vector<Range> ranges_;
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<ElfFile>> files_;  // parallel to names_; may be null
};

}  // namespace heapwalk::target
