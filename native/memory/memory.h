// Memory sources: one interface over a core file, a live process, a gdb callback and a buffer.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "util/errors.h"

namespace heapwalk::memory {

/// A mapped address range of the target, as the target saw it.
struct Region {
  uint64_t start = 0;
  uint64_t end = 0;  ///< exclusive
  bool read = false, write = false, exec = false;
  uint64_t file_offset = 0;
  std::string path;        ///< backing file ("" for anonymous memory)
  bool saved = true;       ///< false when a core did not save these bytes
  uint64_t saved_end = 0;  ///< bytes in [start, saved_end) are available (core truncation)
  bool contains(uint64_t a) const { return a >= start && a < end; }
};

/// Reads target memory. Implementations must be safe against any address.
class MemorySource {
 public:
  virtual ~MemorySource() = default;
  /// Copies up to `len` bytes at `addr` into `out`; returns how many leading bytes were
  /// readable (0 when `addr` is unreadable). Never throws for an unreadable address.
  virtual size_t read(uint64_t addr, void* out, size_t len) = 0;
  /// A pointer to `len` bytes at `addr` without copying (mmapped cores), or nullptr.
  virtual const uint8_t* direct(uint64_t /*addr*/, size_t /*len*/) { return nullptr; }
  /// The whole directly addressable span holding `addr`: [start, end) mapped at the returned
  /// pointer (which corresponds to `start`), or nullptr. Lets readers skip per-read lookups.
  virtual const uint8_t* direct_span(uint64_t /*addr*/, uint64_t& /*start*/, uint64_t& /*end*/) { return nullptr; }
  /// Hint that [addr, addr + len) is about to be read (a core prefaults its pages in bulk).
  virtual void prefetch(uint64_t /*addr*/, uint64_t /*len*/) {}
  /// The target's address space, sorted by start.
  virtual const std::vector<Region>& regions() const = 0;
  /// Largest contiguous readable span starting at addr (0 if unreadable); bounded by `max`.
  virtual uint64_t readable_span(uint64_t addr, uint64_t max) const;
};

/// In-memory segments: for unit tests and fuzzers.
class BufferSource : public MemorySource {
 public:
  void add(uint64_t start, std::vector<uint8_t> bytes, std::string path = "");
  size_t read(uint64_t addr, void* out, size_t len) override;
  const uint8_t* direct(uint64_t addr, size_t len) override;
  const std::vector<Region>& regions() const override { return regions_; }

 private:
  std::vector<Region> regions_;
  std::vector<std::vector<uint8_t>> data_;
};

/// Reads through a caller's function (gdb's memory API for targets heapwalk cannot open).
class CallbackSource : public MemorySource {
 public:
  using ReadFn = std::function<size_t(uint64_t, void*, size_t)>;
  explicit CallbackSource(ReadFn fn) : fn_(std::move(fn)) {}
  size_t read(uint64_t addr, void* out, size_t len) override { return fn_(addr, out, len); }
  const std::vector<Region>& regions() const override { return regions_; }
  uint64_t readable_span(uint64_t, uint64_t) const override { return 0; }

 private:
  ReadFn fn_;
  std::vector<Region> regions_;
};

/// A cursor over a source with a small block cache, so sequential walks over a live process
/// cost one bulk read per block instead of one syscall per chunk. Not thread-safe: one per walk.
class Reader {
 public:
  explicit Reader(MemorySource& src, size_t block = 1 << 20) : src_(src), block_(block) {}

  /// Pointer to `len` readable bytes at `addr`, valid until the next call; nullptr if any byte
  /// is unreadable. `len` must be small (<= block size / 2).
  const uint8_t* span(uint64_t addr, size_t len);

  bool try_u64(uint64_t addr, uint64_t& v) {
    const uint8_t* p = span(addr, 8);
    if (!p) return false;
    std::memcpy(&v, p, 8);
    return true;
  }
  bool try_u32(uint64_t addr, uint32_t& v) {
    const uint8_t* p = span(addr, 4);
    if (!p) return false;
    std::memcpy(&v, p, 4);
    return true;
  }
  bool try_u16(uint64_t addr, uint16_t& v) {
    const uint8_t* p = span(addr, 2);
    if (!p) return false;
    std::memcpy(&v, p, 2);
    return true;
  }
  /// Starts loading the cache line at `addr` when it lies in the current direct span (no-op
  /// otherwise): lets pointer chases overlap their cache misses.
  void prefetch(uint64_t addr) const {
    if (addr >= dstart_ && addr < dend_) __builtin_prefetch(dptr_ + (addr - dstart_));
  }
  /// Checked read: throws Fault naming `what` when unreadable.
  uint64_t u64(uint64_t addr, const char* what);
  /// Copies `len` bytes (any size) or throws Fault.
  void bytes(uint64_t addr, void* out, size_t len, const char* what);
  MemorySource& source() { return src_; }

 private:
  MemorySource& src_;
  size_t block_;
  const uint8_t* dptr_ = nullptr;  // last direct span
  uint64_t dstart_ = 0, dend_ = 0;
  uint64_t cache_start_ = 0;
  std::vector<uint8_t> cache_;
  size_t cache_len_ = 0;
  bool cache_valid_ = false;
};

}  // namespace heapwalk::memory
