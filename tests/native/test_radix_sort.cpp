// radix_sort against std::sort: sizes around the std::sort cut-off, narrow and wide key spans,
// duplicates, keys near 2^64.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "util/radix_sort.h"

namespace {

void check(std::vector<uint64_t> v) {
  auto want = v;
  std::sort(want.begin(), want.end());
  heapwalk::radix_sort(v);
  EXPECT_EQ(v, want);
}

TEST(RadixSort, EqualsStdSort) {
  std::mt19937_64 rng(7);
  for (size_t n : {0, 1, 2, 4095, 4096, 4097, 100000}) {
    for (uint64_t span : {uint64_t{0}, uint64_t{15}, uint64_t{1} << 30, uint64_t{1} << 47, ~uint64_t{0}}) {
      std::vector<uint64_t> v(n);
      uint64_t base = span == ~uint64_t{0} ? 0 : 0x7f0000000000;
      for (auto& x : v) x = base + (span ? rng() % (span == ~uint64_t{0} ? span : span + 1) : 0);
      check(v);
    }
  }
}

TEST(RadixSort, HeapAddressesWithStateBits) {
  // The free index: 16-aligned chunk addresses with a state in the low bits, some twice.
  std::mt19937_64 rng(11);
  std::vector<uint64_t> v;
  for (int i = 0; i < 50000; ++i) {
    uint64_t a = 0x555555559000 + (rng() % (1u << 26)) * 16;
    v.push_back(a | (rng() % 6));
    if (i % 97 == 0) v.push_back(a | 2);
  }
  v.push_back(~uint64_t{0});
  check(v);
}

TEST(RadixSort, IgnoredLowBitsSortByAddressStably) {
  // Sorting by key >> 4: the order of equal addresses (different states) is the input order.
  std::mt19937_64 rng(13);
  for (size_t n : {100, 5000, 200000}) {
    for (uint64_t span : {uint64_t{1} << 22, uint64_t{1} << 26, uint64_t{1} << 40}) {
      std::vector<uint64_t> v;
      for (size_t i = 0; i < n; ++i) {
        uint64_t a = 0x7f0000000000 + (rng() % (span / 16)) * 16;
        v.push_back(a | (rng() % 6));
        if (i % 31 == 0) v.push_back(a | 5);
      }
      auto want = v;
      std::stable_sort(want.begin(), want.end(), [](uint64_t a, uint64_t b) { return (a >> 4) < (b >> 4); });
      heapwalk::radix_sort(v, 4);
      EXPECT_EQ(v, want);
    }
  }
}

}  // namespace
