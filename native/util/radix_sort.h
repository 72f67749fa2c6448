// LSD radix sort of 64-bit keys, for the large address arrays the heap walk sorts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace heapwalk {

/// Sorts `v` by `key >> ignore_low_bits`, ascending and stable (keys equal above those bits keep
/// their input order; with 0, a plain ascending sort). Keys are taken relative to the smallest,
/// and only the bits the span (largest - smallest) needs are sorted, in as few passes of at most
/// 12-bit digits as they allow: the free index (16-aligned chunk addresses tagged with a state in
/// the low 4 bits, ignored) of a 64 MiB heap takes 2 passes. Uses one scratch array of the same
/// size. Small inputs go to std::stable_sort.
inline void radix_sort(std::vector<uint64_t>& v, unsigned ignore_low_bits = 0) {
  const unsigned low = std::min(ignore_low_bits, 63u);
  if (v.size() < 4096) {
    std::stable_sort(v.begin(), v.end(), [low](uint64_t a, uint64_t b) { return (a >> low) < (b >> low); });
    return;
  }
  auto [lo_it, hi_it] =
      std::minmax_element(v.begin(), v.end(), [low](uint64_t a, uint64_t b) { return (a >> low) < (b >> low); });
  const uint64_t lo = *lo_it >> low, span = (*hi_it >> low) - lo;
  unsigned bits = 0;
  while (bits < 64 && (span >> bits) != 0) ++bits;
  if (bits == 0) return;
  constexpr unsigned kMaxDigit = 12;
  const unsigned passes = (bits + kMaxDigit - 1) / kMaxDigit;
  const unsigned digit = (bits + passes - 1) / passes;
  const uint64_t mask = (uint64_t{1} << digit) - 1;
  std::vector<uint64_t> tmp(v.size());
  std::vector<size_t> count(size_t{1} << digit);
  for (unsigned shift = 0; shift < bits; shift += digit) {
    std::fill(count.begin(), count.end(), 0);
    for (uint64_t x : v) ++count[(((x >> low) - lo) >> shift) & mask];
    size_t sum = 0;
    for (auto& c : count) {
      size_t n = c;
      c = sum;
      sum += n;
    }
    for (uint64_t x : v) tmp[count[(((x >> low) - lo) >> shift) & mask]++] = x;
    v.swap(tmp);
  }
}

}  // namespace heapwalk
