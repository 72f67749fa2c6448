// Address -> "function+0xoff" for the call stacks of NMT detail mode, from each module's
// .symtab/.dynsym (or its debug file by build-id). Demangled; never throws.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "target/target.h"

namespace heapwalk::hotspot {

class Symbolizer {
 public:
  explicit Symbolizer(target::Target& t) : t_(t) {}
  /// "module!function+0xoff", "module+0xoff" without a symbol, "" outside every module.
  std::string describe(uint64_t pc);

 private:
  struct Func {
    uint64_t start, size;
    std::string name;
  };
  struct Table {
    uint64_t bias = 0;
    std::vector<Func> funcs;  ///< sorted by start
  };
  const Table* table_for(const target::Module& m);
  target::Target& t_;
  std::map<std::string, std::unique_ptr<Table>> tables_;
};

/// Function symbols (STT_FUNC, defined) of an ELF file, sorted by address; empty on failure.
struct FuncSymbol {
  uint64_t value, size;
  std::string name;
};
std::vector<FuncSymbol> read_func_symbols(const std::string& path);

}  // namespace heapwalk::hotspot
