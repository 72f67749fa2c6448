// Shared helpers for the libFuzzer targets (see fuzz/README.md).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "memory/memory.h"
#include "target/target.h"

namespace fuzz {

using namespace heapwalk;

/// The fuzzer's bytes as a file: one memfd per process, rewritten for every input, named by its
/// /proc/self/fd path so the engine opens it like any other file.
inline std::string as_file(const uint8_t* data, size_t size) {
  static int fd = ::memfd_create("heapwalk-fuzz", MFD_CLOEXEC);
  if (fd < 0) ::abort();
  if (::ftruncate(fd, 0) != 0) ::abort();
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) ::abort();
    done += static_cast<size_t>(n);
  }
  return "/proc/self/fd/" + std::to_string(fd);
}

/// A little-endian cursor over the fuzzer's bytes; reads past the end yield zeros.
struct Bytes {
  const uint8_t* p;
  size_t n, off = 0;
  template <typename T>
  T get() {
    T v{};
    size_t k = std::min(sizeof(T), n - std::min(off, n));
    if (k) std::memcpy(&v, p + off, k);
    off += sizeof(T);
    return v;
  }
  size_t left() const { return off < n ? n - off : 0; }
  const uint8_t* here() const { return p + std::min(off, n); }
};

/// The synthetic process image of the heap, finder and NMT targets:
///
///   u8 flags (bit 7: kNoDirect; the others per target), u8 hint, u8 nregions (1..6), u8 nthreads (0..3)
///   u64 main_arena, u64 mp_
///   nregions × {u64 address, u32 length (<= 256 KiB)}
///   nthreads × {u64 fs_base, u64 tcache (0: none), u64 thread_arena (0: none)}
///   the regions' bytes, one after the other (zero-filled when the input runs out)
///
/// fuzz/make_seeds.py writes this format from real cores and from synthetic heaps.
struct Image {
  uint8_t flags = 0;
  std::string hint;
  uint64_t main_arena = 0, mp = 0;
  std::unique_ptr<memory::BufferSource> mem = std::make_unique<memory::BufferSource>();
  std::vector<memory::Region> regions;
  std::vector<target::Thread> threads;
};

/// Flag bit 7 of an image: serve its memory through read() only (ReadOnlySource), as a live
/// process or a gdb callback does, so the Reader's cache (not a direct span) is fuzzed.
constexpr uint8_t kNoDirect = 0x80;

/// A BufferSource without direct() / direct_span(): every Reader span comes from its cache.
class ReadOnlySource : public memory::MemorySource {
 public:
  explicit ReadOnlySource(std::unique_ptr<memory::BufferSource> inner) : inner_(std::move(inner)) {}
  size_t read(uint64_t addr, void* out, size_t len) override { return inner_->read(addr, out, len); }
  const std::vector<memory::Region>& regions() const override { return inner_->regions(); }

 private:
  std::unique_ptr<memory::BufferSource> inner_;
};

inline const char* const kHints[] = {"2.36", "2.35", "2.31", "2.27", "2.23", "2.17",
                                     "2.26", "2.29", "2.41", "2.43", ""};

inline Image parse_image(const uint8_t* data, size_t size) {
  Image im;
  Bytes b{data, size};
  im.flags = b.get<uint8_t>();
  uint8_t hint = b.get<uint8_t>();
  im.hint = kHints[hint % (sizeof kHints / sizeof kHints[0])];
  unsigned nreg = 1 + b.get<uint8_t>() % 6;
  unsigned nth = b.get<uint8_t>() % 4;
  im.main_arena = b.get<uint64_t>();
  im.mp = b.get<uint64_t>();
  std::vector<std::pair<uint64_t, uint32_t>> regs;
  for (unsigned i = 0; i < nreg; ++i) {
    uint64_t a = b.get<uint64_t>();
    uint32_t len = b.get<uint32_t>() % (256 * 1024 + 1);
    if (a + len < a) len = 0;
    regs.emplace_back(a, len);
  }
  for (unsigned i = 0; i < nth; ++i) {
    target::Thread t;
    t.lwp = 100 + static_cast<int>(i);
    t.fs_base = b.get<uint64_t>();
    uint64_t tc = b.get<uint64_t>(), ar = b.get<uint64_t>();
    if (tc) t.tcache = tc;
    if (ar) t.arena = ar;
    im.threads.push_back(t);
  }
  for (auto& [a, len] : regs) {
    std::vector<uint8_t> bytes(len);
    size_t k = std::min<size_t>(len, b.left());
    if (k) std::memcpy(bytes.data(), b.here(), k);
    b.off += len;
    im.mem->add(a, std::move(bytes));
  }
  im.regions = im.mem->regions();
  return im;
}

/// The image's memory for a target: the buffers themselves, or with kNoDirect the same bytes
/// behind read() only.
inline std::unique_ptr<memory::MemorySource> take_source(Image& im) {
  if (im.flags & kNoDirect) return std::make_unique<ReadOnlySource>(std::move(im.mem));
  return std::move(im.mem);
}

}  // namespace fuzz
