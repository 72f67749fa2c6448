// Engine exceptions; the bindings map each to a Python exception class.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace heapwalk {

/// Base of all engine errors. The message is one line meant for the user.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A file that is not what it should be (not an ELF core, unreadable, truncated headers).
struct FormatError : Error {
  FormatError(std::string path_, const std::string& what) : Error(path_ + ": " + what), path(std::move(path_)) {}
  std::string path;
};

/// A structure that must exist could not be read from the target.
struct Fault : Error {
  Fault(uint64_t address_, uint64_t size_, const std::string& what);
  uint64_t address;
  uint64_t size;
};

/// glibc's malloc state (or another required symbol) could not be located.
struct SymbolError : Error {
  SymbolError(std::string symbol_, const std::string& what) : Error(what), symbol(std::move(symbol_)) {}
  std::string symbol;
};

}  // namespace heapwalk
