// Address -> "function+0xoff" for the call stacks of NMT detail mode, from each module's
// .symtab/.dynsym (or its debug file by build-id). Demangled; never throws.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "target/target.h"

namespace heapwalk::hotspot {

class Symbolizer {
 public:
  explicit Symbolizer(target::Target& t) : t_(t) {}
  /// "module!function+0xoff", "module+0xoff" without a symbol, "" outside every module.
  /// Remembers the answers for the first kMemo distinct pcs (stacks repeat their frames).
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
  static constexpr size_t kMemo = 1 << 16;
  const Table* table_for(const target::Module& m);
  std::string lookup(uint64_t pc);
  target::Target& t_;
  std::map<std::string, std::unique_ptr<Table>> tables_;
  std::unordered_map<uint64_t, std::string> memo_;
};

/// Function symbols (STT_FUNC, defined) of an open ELF file, sorted by address; empty on failure.
/// Reads the descriptor `file` holds, never the name again.
struct FuncSymbol {
  uint64_t value, size;
  std::string name;
};
std::vector<FuncSymbol> read_func_symbols(const target::ElfFile& file);

}  // namespace heapwalk::hotspot
