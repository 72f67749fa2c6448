// Memory sources: one interface over a core file, a live process, a gdb callback and a buffer.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
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

/// Whether [addr, addr + len) lies in `regions` (sorted by start; adjacent ones joined); true
/// when there are no regions (a gdb callback lists none).
bool mapped(const std::vector<Region>& regions, uint64_t addr, uint64_t len);

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
  /// How many bytes of [start, end) the source holds as data, when it can tell (a core file:
  /// its saved pages that are not all zero; nullopt otherwise).
  virtual std::optional<uint64_t> held_bytes(uint64_t /*start*/, uint64_t /*end*/) { return std::nullopt; }
  /// One flag per 4 KiB page of [start, end) (page aligned): the source holds the page and it
  /// is not all zero. False when the source cannot tell (then `out` is untouched).
  virtual bool nonzero_pages(uint64_t /*start*/, uint64_t /*end*/, std::vector<uint8_t>& /*out*/) { return false; }
  /// The first run of [addr, end) that may hold non-zero bytes: [first, run_end), page aligned
  /// where the source knows pages; first == end when the rest of the range reads as zeros.
  /// A core file answers from its holes (SEEK_DATA / SEEK_HOLE), so scans over a sparse saved
  /// range cost what the file holds, not its apparent size (issue 14, item 12). Sources that
  /// cannot tell answer [addr, end).
  virtual std::pair<uint64_t, uint64_t> data_run(uint64_t addr, uint64_t end) { return {addr, end}; }
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
  /// The most one call of the function is asked for: gdb allocates a buffer of the asked size
  /// (and its operator new aborts gdb when that fails), so a long read is made in pieces.
  static constexpr size_t kMaxPiece = 1 << 20;
  explicit CallbackSource(ReadFn fn) : fn_(std::move(fn)) {}
  /// Reads in pieces of at most kMaxPiece bytes, up to the first short one.
  size_t read(uint64_t addr, void* out, size_t len) override;
  const std::vector<Region>& regions() const override { return regions_; }
  uint64_t readable_span(uint64_t, uint64_t) const override { return 0; }

 private:
  ReadFn fn_;
  std::vector<Region> regions_;
};

/// A cursor over a source with a small block cache, so sequential walks over a live process
/// cost one bulk read per block instead of one syscall per chunk. Not thread-safe: one per walk.
///
/// How long a span lives: a pointer into a source's own memory (a core's mapping, a buffer)
/// lives as long as the source. A pointer into the cache (live processes, callbacks: sources
/// without direct spans) stays valid across exactly one further span() / try_u*() call on this
/// Reader and may be overwritten by the one after: the cache has two blocks, and a miss refills
/// the block that did not serve the latest call. Copy what must live longer into locals.
class Reader {
 public:
  explicit Reader(MemorySource& src, size_t block = 1 << 20) : src_(src), block_(block) {}

  /// Pointer to `len` readable bytes at `addr` (lifetime: see the class), or nullptr if any
  /// byte is unreadable or `len` > max_span(). A length read from the target is never an
  /// allocation size here: the cache blocks never grow past max_span() + 4 KiB.
  const uint8_t* span(uint64_t addr, size_t len);
  /// The longest span() served: the block size.
  size_t max_span() const { return block_; }

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
  /// Copies `len` bytes at `addr` (len <= max_span()) into `out` through the cache; false, and
  /// `out` unspecified, when a byte is unreadable. For records that outlive the next read.
  bool try_copy(uint64_t addr, void* out, size_t len) {
    const uint8_t* p = span(addr, len);
    if (!p) return false;
    std::memcpy(out, p, len);
    return true;
  }
  /// Starts loading the cache line at `addr` when it lies in the current direct span (no-op
  /// otherwise): lets pointer chases overlap their cache misses.
  void prefetch(uint64_t addr) const {
    if (addr >= dstart_ && addr < dend_) __builtin_prefetch(dptr_ + (addr - dstart_));
  }
  /// Checked read: throws Fault naming `what` when unreadable.
  uint64_t u64(uint64_t addr, const char* what);
  /// Copies `len` bytes (any size, into the caller's buffer) or throws Fault.
  void bytes(uint64_t addr, void* out, size_t len, const char* what);
  MemorySource& source() { return src_; }
  /// Frees the cache blocks (every cached span dies); the next miss allocates again.
  void release() {
    for (Block& b : blocks_) b = Block{};
  }

 private:
  /// One cache block: bytes [start, start + len) of the target, when valid.
  struct Block {
    std::vector<uint8_t> data;
    uint64_t start = 0;
    size_t len = 0;
    bool valid = false;
    bool holds(uint64_t addr, size_t n) const {
      return valid && addr >= start && addr - start <= len && n <= len - (addr - start);
    }
  };
  /// Fills `b` with at least [addr, addr + len); false when a byte of it is unreadable.
  bool fill(Block& b, uint64_t addr, size_t len, bool sequential);

  MemorySource& src_;
  size_t block_;
  const uint8_t* dptr_ = nullptr;  // last direct span
  uint64_t dstart_ = 0, dend_ = 0;
  Block blocks_[2];
  unsigned last_ = 0;  // the block that served the latest cached span: the next miss spares it
};

}  // namespace heapwalk::memory
