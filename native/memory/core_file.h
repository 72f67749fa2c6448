// An ELF core file (gcore or kernel), mmapped once; reads are memcpy from the mapping.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "memory/memory.h"
#include "util/diagnostics.h"

namespace heapwalk::memory {

/// A thread as recorded in the core's NT_PRSTATUS note.
struct CoreThread {
  int lwp = 0;
  uint64_t fs_base = 0;
  uint64_t rsp = 0;
  uint64_t rip = 0;
  /// The 27 general registers (user_regs_struct order, sys/user.h) when known.
  std::array<uint64_t, 27> regs{};
  bool has_regs = false;
};

/// A file mapping from the core's NT_FILE note.
struct FileMapping {
  uint64_t start = 0, end = 0, file_offset = 0;
  std::string path;
};

class CoreFile : public MemorySource {
 public:
  /// Opens and validates `path`; throws FormatError with a one-line reason when it is not an
  /// x86-64 ELF core. Truncation is not fatal: missing bytes are recorded in diagnostics().
  explicit CoreFile(const std::string& path);
  /// A core already mapped at `map` (`size` bytes, readable; this object unmaps it), named
  /// `name` in messages: the capture hands over the mapping it wrote, page tables populated.
  CoreFile(std::string name, const uint8_t* map, uint64_t size);
  ~CoreFile() override;
  CoreFile(const CoreFile&) = delete;
  CoreFile& operator=(const CoreFile&) = delete;

  size_t read(uint64_t addr, void* out, size_t len) override;
  const uint8_t* direct(uint64_t addr, size_t len) override;
  const uint8_t* direct_span(uint64_t addr, uint64_t& start, uint64_t& end) override;
  void prefetch(uint64_t addr, uint64_t len) override;
  const std::vector<Region>& regions() const override { return regions_; }
  /// The bytes of [start, end) the core saved in pages that are not all zero (holes of the
  /// file skipped unread with SEEK_DATA / SEEK_HOLE). A kernel core and heapwalk's snapshot
  /// leave the pages that were not resident out (holes), gcore writes them as zeros: either
  /// way they do not count; a resident page of zeros does not count either.
  std::optional<uint64_t> held_bytes(uint64_t start, uint64_t end) override;
  bool nonzero_pages(uint64_t start, uint64_t end, std::vector<uint8_t>& out) override;
  std::pair<uint64_t, uint64_t> data_run(uint64_t addr, uint64_t end) override;

  const std::vector<CoreThread>& threads() const { return threads_; }
  const std::vector<FileMapping>& files() const { return files_; }
  int pid() const { return pid_; }
  const std::string& path() const { return path_; }
  const Diagnostics& diagnostics() const { return diags_; }
  uint64_t file_size() const { return size_; }

 private:
  struct Segment {
    uint64_t vaddr, memsz, offset, filesz;  // filesz already clipped to the file's size
  };
  const Segment* find(uint64_t addr) const;
  /// Calls f(address, bytes) for each non-zero piece of [start, end), at most a page each.
  template <typename F>
  bool for_nonzero(uint64_t start, uint64_t end, F&& f);
  void parse_notes(const uint8_t* p, size_t n);
  void parse();  // the headers and notes of map_ (unmaps it and closes fd_ when it throws)

  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  uint64_t size_ = 0;
  std::vector<Segment> segs_;
  std::vector<Region> regions_;
  std::vector<CoreThread> threads_;
  bool guarded_ = false;  ///< the mapping is under util::guard_mapping
  std::vector<FileMapping> files_;
  int pid_ = 0;
  Diagnostics diags_;
};

}  // namespace heapwalk::memory
