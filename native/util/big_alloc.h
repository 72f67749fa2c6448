// An allocator for the few large arrays the engine builds (the arenas' free index, the free lists
// it is collected from, sort scratch).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <limits>
#include <memory>
#include <new>
#include <vector>

namespace heapwalk {

/// Blocks of 1 MiB and more are mapped and unmapped directly, so their memory goes back to the
/// system as soon as they are freed; smaller ones come from std::allocator. Through malloc,
/// glibc's dynamic mmap threshold (raised by the first large free, up to 32 MiB) would serve the
/// next large arrays from a heap and keep them there once freed: the retention heapwalk reports,
/// in heapwalk itself (a summary of a 50 M-chunk core peaked at 97 MB resident for 66 MB live).
template <class T>
struct BigAllocator {
  using value_type = T;
  static constexpr size_t kBig = size_t{1} << 20;

  BigAllocator() = default;
  template <class U>
  BigAllocator(const BigAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)

  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    const size_t bytes = n * sizeof(T);
    if (bytes < kBig) return std::allocator<T>().allocate(n);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept {
    const size_t bytes = n * sizeof(T);
    if (bytes < kBig) {
      std::allocator<T>().deallocate(p, n);
      return;
    }
    ::munmap(p, bytes);
  }
  template <class U>
  bool operator==(const BigAllocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const BigAllocator<U>&) const noexcept {
    return false;
  }
};

template <class T>
using BigVector = std::vector<T, BigAllocator<T>>;

}  // namespace heapwalk
