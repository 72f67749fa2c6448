// LSD radix sort of 64-bit keys, for the large address arrays the heap walk sorts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace heapwalk {

/// Sorts `v` ascending. Keys are taken relative to the smallest, and only as many 11-bit digits
/// as the span (largest - smallest) needs are sorted: 3 passes for keys within 8 GiB of each
/// other. Stable; uses one scratch array of the same size. Small inputs go to std::sort.
inline void radix_sort(std::vector<uint64_t>& v) {
  if (v.size() < 4096) {
    std::sort(v.begin(), v.end());
    return;
  }
  auto [lo_it, hi_it] = std::minmax_element(v.begin(), v.end());
  const uint64_t lo = *lo_it, span = *hi_it - lo;
  constexpr unsigned kBits = 11;
  constexpr size_t kBuckets = size_t{1} << kBits;
  std::vector<uint64_t> tmp(v.size());
  std::vector<size_t> count(kBuckets);
  for (unsigned shift = 0; shift < 64 && (span >> shift) != 0; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (uint64_t x : v) ++count[((x - lo) >> shift) & (kBuckets - 1)];
    size_t sum = 0;
    for (auto& c : count) {
      size_t n = c;
      c = sum;
      sum += n;
    }
    for (uint64_t x : v) tmp[count[((x - lo) >> shift) & (kBuckets - 1)]++] = x;
    v.swap(tmp);
  }
}

}  // namespace heapwalk
