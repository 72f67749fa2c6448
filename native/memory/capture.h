// Live capture: freeze a process only for a bulk copy of the memory heapwalk reads, release
// it, and analyse the copy as a core.
//
// The copy is an ELF core file (notes: NT_PRSTATUS per thread, NT_PRPSINFO, NT_AUXV, NT_FILE;
// one PT_LOAD per mapping of /proc/PID/maps) written into a sparse file: a temporary one
// (O_TMPFILE under $TMPDIR, gone when heapwalk exits or is killed) or, for `snapshot`, the
// user's file (written under a temporary name and renamed into place when complete).
//
// What is copied (the mappings a gcore saves, minus what heapwalk never reads):
//  - private anonymous mappings ([heap], thread stacks, glibc's heaps, mmapped chunks, the
//    JVM's own tables): only their resident or swapped pages (pagemap); untouched pages stay
//    holes and read as zeros, as they would in the process;
//  - shared anonymous mappings and file mappings with private (copy-on-write) pages: whole;
//  - other file mappings (text, read-only data): their first page (the ELF headers and
//    build-id note); the rest comes from the file on disk, as for a core;
//  - `exclude` ranges (the Java heap): nothing, unless asked.
//
// The freeze, pre-copied (as live migration does): the plan (maps + pagemap) is made, the
// process's soft-dirty bits are cleared (/proc/PID/clear_refs "4") and the plan is copied
// with process_vm_readv (many iovecs a call, two threads) while the process runs; then every
// thread is ptrace-stopped, the plan is made again and only pages written since (soft-dirty),
// new pages and new mappings are copied; the threads are released; pages gone meanwhile are
// zeroed in the copy. The frozen time is that second plan and the changed pages. Without
// soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY, or clear_refs not writable) the destination
// pages are only allocated beforehand (MADV_POPULATE_WRITE) and the whole plan is copied
// while frozen.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "memory/core_file.h"
#include "memory/memory.h"

namespace heapwalk::memory {

/// Where a temporary copy lives (a snapshot is always its file).
enum class CaptureStore {
  Auto,    ///< memory when it fits in half of what is available, else a file under `tmpdir`
  Memory,  ///< anonymous memory (transparent huge pages for the heaps)
  File,    ///< an unnamed sparse file under `tmpdir`
};

struct CaptureOptions {
  std::string out;                  ///< the snapshot's path; "" = a temporary file under `tmpdir`
  std::string tmpdir;               ///< "" = $TMPDIR, else /tmp
  bool freeze = true;               ///< false: the caller (gdb) already stopped the process
  std::vector<CoreThread> threads;  ///< when !freeze: the caller's threads (registers)
  /// Address ranges not copied (e.g. the Java heap), each with why.
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> exclude;
  uint64_t max_bytes = 0;  ///< refuse when the copy would exceed this (0: free space only)
  int copy_threads = 2;
  CaptureStore store = CaptureStore::Auto;
};

struct CaptureStats {
  double frozen_seconds = 0;    ///< first thread stopped .. last thread released
  double copy_seconds = 0;      ///< process_vm_readv of the plan (inside the freeze)
  double prefault_seconds = 0;  ///< allocating the destination pages (before the freeze)
  double total_seconds = 0;     ///< the whole capture, planning and file writing included
  uint64_t copied_bytes = 0;    ///< bytes read out of the process
  uint64_t unreadable_bytes = 0;
  uint64_t planned_bytes = 0;    ///< what the plan before the freeze expected to copy
  uint64_t late_bytes = 0;       ///< pages that appeared between the plan and the freeze
  bool precopy = false;          ///< soft-dirty pre-copy: the freeze copied only changes
  uint64_t precopied_bytes = 0;  ///< copied while the process ran (pre-copy)
  uint64_t recopied_bytes = 0;   ///< copied while it was stopped
  uint64_t stale_bytes = 0;      ///< pre-copied pages gone at the freeze (zeroed)
  uint64_t mappings = 0;         ///< mappings in /proc/PID/maps at the freeze
  uint64_t copied_mappings = 0;  ///< mappings with at least one page copied
  uint64_t excluded_bytes = 0;   ///< resident bytes of `exclude` ranges left out
  uint64_t file_bytes = 0;       ///< apparent size of the file
  uint64_t file_allocated = 0;   ///< its blocks on disk (sparse size)
  uint64_t gcore_bytes = 0;      ///< what gcore would write for these mappings (apparent)
  std::string path;              ///< the snapshot's path ("" for a temporary)
  std::string tmpdir;            ///< where a temporary copy lived (a file)
  std::string store;             ///< "memory" or "file"
  std::vector<std::string> notes;
};

/// A live process as captured: reads come from the copy (a core file), the mappings are the
/// process's own (with their names: [heap], [stack], ...), threads come from the freeze.
class CapturedProcess : public MemorySource {
 public:
  /// Captures `pid`; throws FormatError naming the pid (or file) with a one-line reason.
  static std::unique_ptr<CapturedProcess> capture(int pid, const CaptureOptions& opt);

  size_t read(uint64_t addr, void* out, size_t len) override { return core_->read(addr, out, len); }
  const uint8_t* direct(uint64_t addr, size_t len) override { return core_->direct(addr, len); }
  const uint8_t* direct_span(uint64_t addr, uint64_t& start, uint64_t& end) override {
    return core_->direct_span(addr, start, end);
  }
  void prefetch(uint64_t addr, uint64_t len) override { core_->prefetch(addr, len); }
  const std::vector<Region>& regions() const override { return regions_; }
  const std::vector<CoreThread>& threads() const { return core_->threads(); }
  const CaptureStats& stats() const { return stats_; }
  const CoreFile& core() const { return *core_; }

 private:
  CapturedProcess() = default;
  std::unique_ptr<CoreFile> core_;
  std::vector<Region> regions_;
  CaptureStats stats_;
};

}  // namespace heapwalk::memory
