// An ELF module on disk (shared library, executable, or separate debug file), read with libelf.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "target/safe_open.h"

namespace heapwalk::target {

struct Symbol {
  uint64_t value = 0;
  uint64_t size = 0;
  bool tls = false;
};

/// A dynamic relocation of interest (TPOFF64: the slot receives a TLS offset from the thread
/// pointer once the dynamic linker has placed the module's TLS block).
struct TlsReloc {
  uint64_t offset = 0;     ///< slot address relative to the load bias
  uint64_t tls_value = 0;  ///< the TLS symbol's offset inside the module's TLS block
};

class ElfFile {
 public:
  /// Returns nullptr (never throws) when `path` is missing or not a readable ELF file. Only
  /// regular files are opened (see Root::open_regular); `why` receives the reason for a refusal.
  static std::unique_ptr<ElfFile> open(const std::string& path, std::string* why = nullptr);
  /// `path` resolved inside `root`; `path()` is then the name as shown in messages.
  static std::unique_ptr<ElfFile> open(const Root& root, const std::string& path, std::string* why = nullptr);
  /// A descriptor already opened for reading (this object owns it), named `name` in messages.
  static std::unique_ptr<ElfFile> from_fd(Fd fd, const std::string& name, std::string* why = nullptr);
  ~ElfFile();
  ElfFile(const ElfFile&) = delete;
  ElfFile& operator=(const ElfFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& build_id() const { return build_id_; }  ///< lower-case hex, "" if none
  /// vaddr of the first PT_LOAD (0 for shared libraries): bias = load base - this.
  uint64_t first_load_vaddr() const { return first_load_; }
  std::optional<Symbol> symbol(const std::string& name) const;
  bool has_symtab() const { return has_symtab_; }
  const std::vector<TlsReloc>& tls_relocs() const { return tls_relocs_; }
  const std::unordered_map<std::string, Symbol>& symbols() const { return symbols_; }
  /// Copies file bytes at `offset` (bounded by the file size); returns how many were copied.
  size_t read_at(uint64_t offset, void* out, size_t len) const;
  /// Highest GLIBC_2.x version defined by this object (from .gnu.version_d), "" if none.
  const std::string& glibc_verdef() const { return glibc_verdef_; }
  /// The open descriptor (valid for this object's lifetime): readers that need the file itself
  /// (libdw) use it instead of reopening the name, which may meanwhile name another file.
  int fd() const { return fd_; }
  size_t size() const { return size_; }
  /// The mapped file bytes (size() of them).
  const uint8_t* bytes() const { return map_; }
  /// Searches the file's read-only data for `needle` and returns the text up to the next NUL/newline.
  std::string find_text(const std::string& needle) const;

 private:
  ElfFile() = default;
  void load();
  std::string path_;
  int fd_ = -1;
  void* elf_ = nullptr;  // Elf*
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  std::string build_id_;
  uint64_t first_load_ = 0;
  bool has_symtab_ = false;
  std::unordered_map<std::string, Symbol> symbols_;
  std::vector<TlsReloc> tls_relocs_;
  std::string glibc_verdef_;
};

/// Parses an NT_GNU_BUILD_ID out of a note area; "" when absent.
std::string build_id_from_notes(const uint8_t* p, size_t n);

}  // namespace heapwalk::target
