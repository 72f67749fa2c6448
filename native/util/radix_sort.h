// Radix sort of 64-bit keys for the large address arrays the heap walk sorts, in place but for a
// scratch buffer the size of one top-level bucket.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "util/big_alloc.h"

namespace heapwalk {

namespace radix_detail {

constexpr size_t kSmall = 4096;  ///< below this, std::sort
constexpr unsigned kTop = 11;    ///< bits of the in-place top level: 2048 buckets
constexpr unsigned kLow = 8;     ///< bits per LSD pass inside a bucket

/// Sorts [f, l), whose keys agree above bit `bits` of (key - lo), by LSD passes over those bits,
/// with `tmp` (at least l - f long) as the other buffer. Small ranges: insertion sort.
inline void lsd(uint64_t* f, uint64_t* l, uint64_t lo, unsigned bits, uint64_t* tmp) {
  const size_t n = static_cast<size_t>(l - f);
  if (n < 64) {
    for (uint64_t* i = f + 1; i < l; ++i) {
      uint64_t x = *i;
      uint64_t* j = i;
      for (; j > f && *(j - 1) > x; --j) *j = *(j - 1);
      *j = x;
    }
    return;
  }
  uint64_t *src = f, *dst = tmp;
  for (unsigned shift = 0; shift < bits; shift += kLow) {
    std::array<size_t, (size_t{1} << kLow)> count{};
    for (size_t i = 0; i < n; ++i) ++count[((src[i] - lo) >> shift) & ((1u << kLow) - 1)];
    size_t sum = 0;
    for (auto& c : count) {
      size_t k = c;
      c = sum;
      sum += k;
    }
    for (size_t i = 0; i < n; ++i) dst[count[((src[i] - lo) >> shift) & ((1u << kLow) - 1)]++] = src[i];
    std::swap(src, dst);
  }
  if (src != f) std::copy(src, src + n, f);
}

}  // namespace radix_detail

/// Sorts `v` ascending. Keys are taken relative to the smallest; the highest 11 of the bits their
/// span needs split them in place into 2048 buckets (American flag sort), and each bucket is
/// sorted by LSD passes over the rest with a scratch buffer as large as the largest bucket, not
/// as `v` (the free index of a 50 M-chunk core is tens of MB per arena, sorted by several
/// threads at once). Small inputs go to std::sort.
template <class Vec>  // std::vector<uint64_t> or BigVector<uint64_t>
void radix_sort(Vec& v) {
  using namespace radix_detail;
  if (v.size() < kSmall) {
    std::sort(v.begin(), v.end());
    return;
  }
  auto [lo_it, hi_it] = std::minmax_element(v.begin(), v.end());
  const uint64_t lo = *lo_it, span = *hi_it - lo;
  unsigned bits = 0;
  while (bits < 64 && (span >> bits) != 0) ++bits;
  const unsigned d = std::min(bits, kTop), shift = bits - d;
  const uint64_t mask = (uint64_t{1} << d) - 1;
  auto digit = [&](uint64_t x) { return static_cast<size_t>(((x - lo) >> shift) & mask); };
  uint64_t* f = v.data();
  const size_t n = v.size();
  std::vector<size_t> start((size_t{1} << kTop) + 1);
  for (size_t i = 0; i < n; ++i) ++start[digit(f[i]) + 1];
  for (size_t k = 1; k < start.size(); ++k) start[k] += start[k - 1];
  std::vector<size_t> next(start.begin(), start.end() - 1);
  for (size_t k = 0; k <= mask; ++k) {
    while (next[k] < start[k + 1]) {
      uint64_t x = f[next[k]];
      size_t b = digit(x);
      while (b != k) {
        std::swap(x, f[next[b]++]);
        b = digit(x);
      }
      f[next[k]++] = x;
    }
  }
  size_t largest = 0;
  for (size_t k = 0; k <= mask; ++k) largest = std::max(largest, start[k + 1] - start[k]);
  BigVector<uint64_t> tmp(shift ? largest : 0);
  if (shift)
    for (size_t k = 0; k <= mask; ++k) lsd(f + start[k], f + start[k + 1], lo, shift, tmp.data());
}

}  // namespace heapwalk
